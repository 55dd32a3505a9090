"""The tracer: the seed's imperative API, flushing, partial traces, configuration."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

import actiontrace
from actiontrace import (
    ActionFilter,
    ActionNotFound,
    ConfigurationError,
    InMemoryTraceStorage,
    TraceNotFound,
    action,
    flow,
)


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


class TestImperativeApi:
    def test_start_record_end(self, tracer: actiontrace.ActionTracer) -> None:
        """start_flow / record_action / record_provenance / update_action_output / end_flow."""
        token = tracer.start_flow("app::Web::request")
        assert tracer.current_flow_token() == token
        first = tracer.record_action("app::Auth", "validate", {"password": "x", "u": 1}, {"ok": True})
        second = tracer.record_action("app::Player", "play", {"passage_id": 42}, None)
        tracer.record_provenance(first, second, "OnAuthSuccess")
        tracer.update_action_output(second, {"started_at": 5})
        tracer.end_flow()
        assert tracer.current_flow_token() is None
        trace = tracer.get_trace(token)
        root = trace.actions[trace.root_action_id]
        assert (root.concept_uri, root.action) == ("app::Web", "request")
        assert trace.actions[first].inputs == {"password": "[REDACTED]", "u": 1}
        assert trace.actions[first].parent_id == trace.root_action_id
        assert trace.actions[second].outputs == {"started_at": 5}
        assert tracer.find_producing_sync(second) == "OnAuthSuccess"
        assert [r.id for r in tracer.get_causal_chain(second)] == [trace.root_action_id, first, second]

    def test_record_action_outside_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """record_action with no flow makes a one-action flow."""
        aid = tracer.record_action("app::X", "y", {"a": 1}, 2)
        (rec,) = tracer.find_actions(ActionFilter(action="y"))
        assert rec.id == aid and tracer.get_trace(rec.flow_token).root_action_id == aid

    def test_misuse_is_reported(self, tracer: actiontrace.ActionTracer) -> None:
        """Ending a flow that was not started, or unknown ids, raise clear errors."""
        with pytest.raises(RuntimeError, match="start_flow"):
            tracer.end_flow()
        with pytest.raises(RuntimeError, match="active flow"):
            tracer.record_provenance(uuid.uuid4(), uuid.uuid4(), "S")
        with pytest.raises(ActionNotFound):
            tracer.update_action_output(uuid.uuid4(), 1)
        with pytest.raises(ValueError, match="UUID"):
            tracer.get_causal_chain("nope")


class TestQueries:
    def test_not_found_errors(self, tracer: actiontrace.ActionTracer) -> None:
        """Unknown flows and actions raise LookupError subclasses."""
        with pytest.raises(TraceNotFound):
            tracer.get_trace(uuid.uuid4())
        with pytest.raises(ActionNotFound):
            tracer.get_causal_chain(uuid.uuid4())
        assert issubclass(TraceNotFound, LookupError) and issubclass(ActionNotFound, LookupError)
        assert tracer.find_producing_sync(uuid.uuid4()) is None
        assert tracer.find_by_sync("nothing") == []

    def test_partial_trace_of_running_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """get_trace inside a running flow shows what has happened so far."""

        @action(concept="app::Live")
        def look() -> dict[str, str]:
            trace = tracer.get_trace(tracer.current_flow_token())  # type: ignore[arg-type]
            return {r.action: r.status for r in trace.actions.values()}

        @action(concept="app::Live")
        def earlier() -> int:
            return 1

        with flow("app::Web::req") as token:
            earlier()
            seen = look()
        assert seen == {"req": "running", "earlier": "ok", "look": "running"}
        assert {r.status for r in tracer.get_trace(token).actions.values()} == {"ok"}

    def test_filter_semantics(self, tracer: actiontrace.ActionTracer) -> None:
        """::-bounded prefix, input containment, inclusive time range, order, limit."""
        with flow("app::Web::req") as token:
            for concept_uri in ("app", "app::Player", "app::Player::Sub", "apple::Player"):
                tracer.record_action(concept_uri, "act", {"n": 1, "flag": True}, None)
            tracer.record_action("app::Player", "other", {"n": 2, "flag": 1}, None)
        find = tracer.find_actions
        assert [r.concept_uri for r in find(concept_uri="app", action="act")] == [
            "app", "app::Player", "app::Player::Sub",
        ]
        assert len(find(concept_uri="app::Player")) == 3
        assert [r.action for r in find(inputs={"flag": True})] == ["act"] * 4
        assert [r.action for r in find(inputs={"flag": 1})] == ["other"]
        assert find(inputs={"n": 2, "flag": 1})[0].action == "other"
        assert find(inputs={"missing": None}) == []
        every = find(flow_token=token)
        assert every == sorted(every, key=lambda r: (r.timestamp, r.id.int))
        ts = [r.timestamp for r in every]
        assert find(time_range=(ts[1], ts[2]), flow_token=token) == [
            r for r in every if ts[1] <= r.timestamp <= ts[2]
        ]
        assert len(find(limit=2)) == 2 and find(limit=0) == []
        with pytest.raises(ValueError):
            ActionFilter(limit=-1)


class TestConfigure:
    def test_configure_returns_and_installs(self) -> None:
        """configure() replaces the global tracer and returns it."""
        storage = InMemoryTraceStorage()
        tracer = actiontrace.configure(storage=storage, module="svc")
        assert actiontrace.get_tracer() is tracer and tracer.storage is storage
        with flow("svc::Web::req") as token:
            pass
        assert tracer.get_trace(token).module == "svc"

    def test_configure_flushes_the_old_tracer(self) -> None:
        """Records of the replaced tracer reach its storage."""
        old = actiontrace.configure(flush_interval=3600)
        with flow("svc::Web::req") as token:
            pass
        actiontrace.configure()
        assert old.storage.get_trace(token).flow_token == token

    def test_unknown_option_rejected(self) -> None:
        """A misspelled option is a ConfigurationError naming the known ones."""
        with pytest.raises(ConfigurationError, match="max_reaction_depth"):
            actiontrace.configure(max_reaction_dept=3)

    def test_default_module_is_program_name(self) -> None:
        """With no module given, traces carry the running program's name."""
        assert actiontrace.configure().module  # e.g. "pytest"


class TestFlush:
    def test_flush_and_stats(self, tracer: actiontrace.ActionTracer) -> None:
        """flush() returns True once everything is written; counters add up."""
        for _ in range(50):
            with flow("svc::Web::req"):
                tracer.record_action("svc::A", "b", None, None)
        assert tracer.flush(5) is True
        stats = tracer.stats()
        assert stats["recorded"] == stats["written"] == 100
        assert stats["dropped"] == 0 and stats["queued"] == 0

    def test_flush_false_when_storage_fails(self) -> None:
        """A storage that keeps failing makes flush() return False, never raise."""

        class Broken(InMemoryTraceStorage):
            def write_parts(self, parts):  # type: ignore[no-untyped-def]
                raise OSError("disk on fire")

        tracer = actiontrace.configure(storage=Broken())
        with flow("svc::Web::req"):
            pass
        assert tracer.flush(0.3) is False
        assert "disk on fire" in (tracer.stats()["last_error"] or "")
        assert tracer.stats()["retries"] >= 1
        assert tracer.shutdown(timeout=0.5) is False

    def test_shutdown_twice_and_record_after(self) -> None:
        """A second shutdown returns at once; recording after one still gets written."""
        tracer = actiontrace.configure()
        assert tracer.shutdown() is True
        # Nothing to wait for: even with no time at all, the second one succeeds.
        assert tracer.shutdown(timeout=0) is True and tracer.flush(5) is True
        tracer.record_action("svc::Late", "x", None, None)
        assert tracer.flush(5) is True
        assert len(tracer.storage.find_actions(ActionFilter(concept_uri="svc::Late"))) == 1

    def test_full_buffer_drops_and_counts(self) -> None:
        """Past max_queue, flows are dropped and counted; the application goes on."""

        class Slow(InMemoryTraceStorage):
            def write_parts(self, parts):  # type: ignore[no-untyped-def]
                import time

                time.sleep(0.2)
                super().write_parts(parts)

        tracer = actiontrace.configure(storage=Slow(), max_queue=10, full_wait=0.01)
        for _ in range(50):
            with flow("svc::Web::req"):
                pass
        tracer.flush(5)
        stats = tracer.stats()
        assert stats["dropped"] > 0
        assert stats["written"] + stats["dropped"] == stats["recorded"] == 50

    def test_custom_storage_with_only_save_trace(self) -> None:
        """A duck-typed storage with only save_trace receives whole ActionTraces."""
        got: list[actiontrace.ActionTrace] = []

        class Mine:
            def save_trace(self, trace: actiontrace.ActionTrace) -> None:
                got.append(trace)

        tracer = actiontrace.ActionTracer(Mine())  # type: ignore[arg-type]
        actiontrace._state.install(tracer)
        with flow("svc::Web::req") as token:
            tracer.record_action("svc::A", "b", None, None)
        assert tracer.flush(5)
        assert [t.flow_token for t in got] == [token] and len(got[0].actions) == 2


class TestDisabled:
    def test_disabled_records_nothing_and_calls_go_through(self) -> None:
        """configure(enabled=False): calls behave as undecorated; nothing is stored."""
        tracer = actiontrace.configure(enabled=False)

        @action(concept="svc::Off")
        def add(a: int, b: int) -> int:
            return a + b

        @action(concept="svc::Off")
        async def aadd(a: int) -> int:
            return a

        import asyncio

        @actiontrace.synchronization("Glue")
        def glue() -> int:
            return add(1, 2)

        with flow("svc::Web::req") as token:
            assert isinstance(token, uuid.UUID)
            assert tracer.current_flow_token() is None
            assert glue() == 3
        assert asyncio.run(aadd(5)) == 5
        with pytest.raises(TypeError):
            add(1)  # type: ignore[call-arg]
        assert tracer.find_actions(ActionFilter()) == []
        assert tracer.stats()["recorded"] == 0

    def test_enabling_again(self) -> None:
        """configure() after enabled=False records again, in already-decorated actions."""

        @action(concept="svc::Off")
        def ping() -> int:
            return 1

        actiontrace.configure(enabled=False)
        ping()
        tracer = actiontrace.configure()
        ping()
        assert len(tracer.find_actions(ActionFilter(concept_uri="svc::Off"))) == 1


class TestRetention:
    def test_writer_prunes_old_flows(self, tmp_path: Any) -> None:
        """configure(retention=...) removes flows older than it, in the background."""
        import datetime as dt
        import time

        from actiontrace import SqlAlchemyTraceStorage
        from actiontrace.recording._ids import new_id
        from actiontrace.recording._record import FlowPart, Named

        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/r.db")
        old = new_id()
        part = FlowPart(old, None, 1_000, "old")
        part.offset = 0
        part.records.append([Named("old::C", "act"), new_id(), None, 1_000_000, 5, "ok",
                             b"{}", b"null"])
        store.write_parts([part])
        tracer = actiontrace.configure(storage=store, retention=dt.timedelta(days=7))
        with actiontrace.flow("new::Web::get") as token:
            pass
        assert tracer.flush(10)
        deadline = time.monotonic() + 60
        while tracer.stats()["pruned"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tracer.stats()["pruned"] == 1
        with pytest.raises(TraceNotFound):
            store.get_trace(uuid.UUID(int=old))
        assert store.get_trace(token).module
        tracer.shutdown()

    @pytest.mark.parametrize("bad", [0, -5, "7d", True])
    def test_bad_retention_is_refused(self, bad: Any) -> None:
        """retention must be a positive number of seconds or a timedelta."""
        with pytest.raises(ConfigurationError, match="retention"):
            actiontrace.configure(retention=bad)

    def test_storage_without_prune_is_refused(self) -> None:
        """A custom storage that cannot prune is refused when retention is asked for."""

        class Minimal(actiontrace.InMemoryTraceStorage):
            prune_flows = actiontrace.TraceStorage.prune_flows

        with pytest.raises(ConfigurationError, match="does not support retention"):
            actiontrace.configure(storage=Minimal(), retention=60)
