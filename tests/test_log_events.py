"""Log events attached to actions (``attach_to_action``), stored with the trace, and the
storage queries the command line browses with (``list_flows``, ``resolve_prefix``)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
import structlog

import actiontrace
from actiontrace import LogEvent, TraceStorage, action, continue_flow, flow
from actiontrace.contrib.logging import FlowContextFilter
from actiontrace.contrib.structlog import add_flow_context, attach_to_action
from actiontrace.recording._ids import new_id
from actiontrace.recording._layout import new_record
from actiontrace.recording._record import FlowPart, Named, from_trace


def quiet(logger: Any, method_name: str, event_dict: Any) -> Any:
    raise structlog.DropEvent


log = structlog.wrap_logger(
    structlog.ReturnLogger(),
    processors=[structlog.processors.add_log_level, add_flow_context, attach_to_action, quiet],
    wrapper_class=structlog.BoundLogger, context_class=dict,
)


@action(concept="logs::Player")
def play(passage_id: int, password: str = "pw") -> int:
    log.info("playing", passage_id=passage_id, auth={"token": "secret-value"})
    return inner(passage_id)


@action(concept="logs::Player")
def inner(n: int) -> int:
    log.warning("inner", n=n)
    return n


@action(concept="logs::Player", redact=["pin"])
def with_pin() -> None:
    log.info("pin entered", pin=1234)


def by_event(trace: actiontrace.ActionTrace) -> dict[str, LogEvent]:
    return {e.event: e for e in trace.logs}


def ids_by_name(trace: actiontrace.ActionTrace) -> dict[str, uuid.UUID]:
    return {r.action: r.id for r in trace.actions.values()}


class TestAttachToAction:
    def test_plain_callable_outside_a_flow(self) -> None:
        """Outside a flow the event dict comes back unchanged and nothing is recorded."""
        assert attach_to_action(None, "info", {"event": "x", "b": 2}) == {"event": "x", "b": 2}

    def test_nested_actions(self) -> None:
        """Events attach to the innermost running action; root-level ones to the root."""
        tracer = actiontrace.configure()
        with flow("logs::Web::req") as token:
            log.info("at root")
            play(42)
        trace = tracer.get_trace(token)
        ids, ev = ids_by_name(trace), by_event(trace)
        assert ev["at root"].action_id == ids["req"] == trace.root_action_id
        assert ev["playing"].action_id == ids["play"]
        assert ev["inner"].action_id == ids["inner"]
        assert (ev["inner"].level, ev["inner"].fields) == ("warning", {"n": 42})
        assert {e.flow_token for e in trace.logs} == {token}
        assert [e.event for e in trace.logs] == ["at root", "playing", "inner"]

    def test_redacted_like_inputs(self) -> None:
        """Secret keys at any depth, and an action's own redact= names, are redacted."""
        tracer = actiontrace.configure()
        with flow("logs::Web::req") as token:
            play(1)
            with_pin()
            log.info("login", password="hunter2", user="ann")
        ev = by_event(tracer.get_trace(token))
        assert ev["playing"].fields == {"passage_id": 1, "auth": {"token": "[REDACTED]"}}
        assert ev["pin entered"].fields == {"pin": "[REDACTED]"}
        assert ev["login"].fields == {"password": "[REDACTED]", "user": "ann"}

    async def test_async_actions_do_not_mix(self) -> None:
        """Concurrent async actions each get their own events."""
        tracer = actiontrace.configure()

        @action(concept="logs::Async")
        async def fetch(n: int) -> int:
            await asyncio.sleep(0.01 * (3 - n))
            log.info("fetched", n=n)
            return n

        async with flow("logs::Web::req") as token:
            await asyncio.gather(fetch(1), fetch(2))
        trace = tracer.get_trace(token)
        by_id = {r.id: r for r in trace.actions.values()}
        fetched = [e for e in trace.logs if e.event == "fetched"]
        assert len(fetched) == 2
        for e in fetched:
            assert e.action_id is not None
            assert by_id[e.action_id].inputs == {"n": e.fields["n"]}

    async def test_action_with_a_flow_of_its_own(self) -> None:
        """An async action called outside any flow starts one; its events go with it."""
        tracer = actiontrace.configure()

        @action(concept="logs::Async")
        async def alone() -> None:
            log.info("alone")

        await alone()
        (rec,) = tracer.find_actions(actiontrace.ActionFilter(action="alone"))
        (event,) = tracer.get_trace(rec.flow_token).logs
        assert event.action_id == rec.id

    def test_continue_flow_without_action(self) -> None:
        """Directly inside continue_flow an event belongs to the flow, not to an action."""
        tracer = actiontrace.configure()
        token = uuid.uuid4()
        with continue_flow(token):
            log.info("joined")
            inner(3)
        trace = tracer.get_trace(token)
        ev = by_event(trace)
        assert ev["joined"].action_id is None
        assert ev["inner"].action_id == ids_by_name(trace)["inner"]
        assert "Log: [info] joined" in trace.to_ascii()

    def test_level_from_method_name(self) -> None:
        """Without add_log_level the logger method names the level."""
        tracer = actiontrace.configure()
        with flow("logs::Web::req") as token:
            attach_to_action(None, "error", {"event": "boom", "code": 7})
        (event,) = tracer.get_trace(token).logs
        assert (event.level, event.event, event.fields) == ("error", "boom", {"code": 7})

    def test_global_structlog_configuration(self) -> None:
        """Both processors in structlog.configure(): events printed with ids, and stored."""
        printed: list[dict[str, Any]] = []

        def keep(logger: Any, method: str, event_dict: dict[str, Any]) -> str:
            printed.append(dict(event_dict))
            return ""

        structlog.configure(processors=[add_flow_context, attach_to_action, keep],
                            cache_logger_on_first_use=False)
        try:
            tracer = actiontrace.configure()
            with flow("logs::Web::req") as token:
                structlog.get_logger().info("hello", x=1)
            structlog.get_logger().info("outside")
        finally:
            structlog.reset_defaults()
        assert printed[0]["flow_token"] == str(token) and "flow_token" not in printed[1]
        (event,) = tracer.get_trace(token).logs
        assert str(event.action_id) == printed[0]["action_id"]

    def test_ascii_tree_shows_logs_under_their_action(self) -> None:
        """to_ascii() prints each event under the action that logged it."""
        tracer = actiontrace.configure()
        with flow("logs::Web::req") as token:
            play(7)
        lines = tracer.get_trace(token).to_ascii().splitlines()
        at = next(i for i, line in enumerate(lines) if "[Player::inner]" in line)
        assert any("Log: [warning] inner n=7" in line for line in lines[at:])
        assert any('Log: [info] playing passage_id=7 auth={"token":"[REDACTED]"}' in line
                   for line in lines[:at])


class TestStdlibLogging:
    def test_nested_and_async(self) -> None:
        """FlowContextFilter names the innermost action, in nested and async actions."""
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        logger = logging.getLogger("actiontrace.test.log_events")
        handler = Keep()
        handler.addFilter(FlowContextFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

        @action(concept="logs::Std")
        def outer() -> None:
            logger.info("outer")
            nested()

        @action(concept="logs::Std")
        def nested() -> None:
            logger.info("nested")

        @action(concept="logs::Std")
        async def coro() -> None:
            await asyncio.sleep(0)
            logger.info("async")

        tracer = actiontrace.configure()
        try:
            with flow("logs::Web::req") as token:
                outer()
                asyncio.run(coro())
            logger.info("outside")
        finally:
            logger.removeHandler(handler)
        ids = ids_by_name(tracer.get_trace(token))
        got = {r.getMessage(): getattr(r, "action_id", None) for r in records}
        assert got == {"outer": str(ids["outer"]), "nested": str(ids["nested"]),
                       "async": str(ids["coro"]), "outside": None}


# -- storage: round trips and browsing, every backend ------------------------------------------


class TestStoredLogs:
    def test_round_trip(self, storage: Any) -> None:
        """Events written by the writer come back from get_trace, in order."""
        tracer = actiontrace.configure(storage=storage)
        with flow("logs::Web::req") as token:
            log.info("at root", nul="a\x00b", unicode="µ→")
            play(42)
        assert tracer.flush(10)
        trace = storage.get_trace(token)
        assert [e.event for e in trace.logs] == ["at root", "playing", "inner"]
        ids = ids_by_name(trace)
        assert [e.action_id for e in trace.logs] == [ids["req"], ids["play"], ids["inner"]]
        assert trace.logs[1].fields == {"passage_id": 42, "auth": {"token": "[REDACTED]"}}
        assert trace.logs[0].fields["unicode"] == "µ→"
        assert trace.logs[0].timestamp >= trace.created_at

    def test_idempotent_and_merged_parts(self, storage: Any) -> None:
        """A part written twice stores its events once; parts of one flow merge theirs."""
        tracer = actiontrace.configure()
        with flow("logs::Web::req") as token:
            log.info("first")
        with continue_flow(token):
            log.info("second")
        trace = tracer.get_trace(token)
        parts = [from_trace(trace)]
        storage.write_parts(parts)
        storage.write_parts(parts)
        assert [e.event for e in storage.get_trace(token).logs] == ["first", "second"]

    def test_save_trace_with_logs(self, storage: Any) -> None:
        """save_trace of a hand-built trace keeps its events."""
        token, root = uuid.UUID(int=new_id()), uuid.UUID(int=new_id())
        rec = actiontrace.ActionRecord(root, "c", "a", {}, None, 10, token, None, "ok", 1)
        event = LogEvent(uuid.UUID(int=new_id()), token, root, 11, "info", "hi", {"k": [1, 2]})
        storage.save_trace(actiontrace.ActionTrace(token, root, {root: rec}, [], 10, "m",
                                                   logs=[event]))
        assert storage.get_trace(token).logs == [event]


def part(created: int, n: int, errors: int = 0, root: bool = True) -> FlowPart:
    """A hand-made part with ``n`` actions, the first ``errors`` of them failed."""
    p = FlowPart(new_id(), None, created, "m")
    p.offset = 0
    for i in range(n):
        aid = new_id()
        if i == 0 and root:
            p.root_id = aid
        status = "error" if i < errors else "ok"
        p.records.append(new_record(Named("browse::Web", f"act{i}"), aid, None, created * 1000 + i,
                          5000, status, b"{}", b"null"))
    return p


class TestBrowsing:
    def test_list_flows(self, storage: Any) -> None:
        """Newest first, with root action, size, failures; limit and since."""
        a, b, c = part(1_000, 3), part(2_000, 2, errors=1), part(3_000, 1, root=False)
        storage.write_parts([a, b, c])
        found = storage.list_flows(limit=10)
        assert [f.flow_token.int for f in found] == [c.token, b.token, a.token]
        fb = found[1]
        assert (fb.actions, fb.errors, fb.concept_uri, fb.action, fb.status, fb.duration_us) == (
            2, 1, "browse::Web", "act0", "error", 5)
        assert fb.root_action_id is not None and fb.root_action_id.int == b.root_id
        assert (found[0].root_action_id, found[0].action, found[0].actions) == (None, None, 1)
        assert [f.flow_token.int for f in storage.list_flows(limit=2)] == [c.token, b.token]
        assert [f.flow_token.int for f in storage.list_flows(since=2_000)] == [c.token, b.token]
        assert storage.list_flows(limit=0) == []

    def test_list_flows_pages_by_keyset(self, storage: Any) -> None:
        """``before`` continues after the last flow of a page, ties by token, none twice."""
        made = [part(1_000 + (i // 3) * 10, 1) for i in range(10)]  # three flows a µs
        storage.write_parts(made)
        expected = [uuid.UUID(int=p.token) for p in
                    sorted(made, key=lambda p: (p.created_at, p.token), reverse=True)]
        seen: list[uuid.UUID] = []
        before = None
        while True:
            page = storage.list_flows(limit=4, before=before)
            if not page:
                break
            seen += [f.flow_token for f in page]
            before = (page[-1].created_at, page[-1].flow_token)
        assert seen == expected
        assert storage.list_flows(until=1_010) == storage.list_flows(limit=20)[-6:]
        assert [f.created_at for f in storage.list_flows(since=1_010, until=1_020)] == [1_020] * 3 + [1_010] * 3

    def test_list_flows_filters(self, storage: Any) -> None:
        """By the concept and action of any of a flow's actions, and by status."""
        failed, fine = part(1_000, 3, errors=1), part(2_000, 2)
        other = FlowPart(new_id(), None, 3_000, "m")
        other.offset = 0
        aid = new_id()
        other.root_id = aid
        other.records.append([Named("shop::Cart", "checkout"), aid, None, 3_000_000, None,
                              "running", b"{}", b"null"])
        storage.write_parts([failed, fine, other])
        tokens = lambda **kw: [f.flow_token.int for f in storage.list_flows(**kw)]
        assert tokens(concept_uri="browse") == [fine.token, failed.token]
        assert tokens(concept_uri="shop::Cart", action="checkout") == [other.token]
        assert tokens(action="act2") == [failed.token]
        assert tokens(concept_uri="shop", action="act0") == []
        assert tokens(status="error") == [failed.token]
        assert tokens(status="ok") == [fine.token]
        assert tokens(status="running") == [other.token]
        assert tokens(status="error", limit=1, before=(1_000, uuid.UUID(int=failed.token))) == []
        if hasattr(storage, "few_actions"):  # SQL: the same answers when a concept is common
            storage.few_actions = 1
            assert tokens(concept_uri="browse") == [fine.token, failed.token]
            assert tokens(concept_uri="shop::Cart", action="checkout") == [other.token]
            assert tokens(concept_uri="shop", action="act0") == []

    def test_synchronization_links(self, storage: Any) -> None:
        """Edges grouped by the trigger's and the produced action's concept::action."""
        tracer = actiontrace.configure(storage=storage, module="links")

        @action(concept="links::A")
        def start() -> None: ...

        @action(concept="links::B")
        def react() -> None: ...

        @actiontrace.synchronization("Go")
        def go() -> None:
            react()
            react()

        for _ in range(3):
            with flow("links::Web::request"):
                start()
                go()
        assert tracer.flush(10)
        assert storage.synchronization_links() == [("links::A::start", "Go", "links::B::react", 6)]
        assert storage.synchronization_links(newest=4) == [
            ("links::A::start", "Go", "links::B::react", 4)]

    def test_synchronization_links_newest_of_each(self, storage: Any) -> None:
        """``newest`` counts the newest edges of every synchronization (each name found
        once, whatever their number and order); an empty store has no links."""
        assert storage.synchronization_links(newest=2) == []
        tracer = actiontrace.configure(storage=storage, module="links")

        @action(concept="links::A")
        def start() -> None: ...

        @action(concept="links::B")
        def react() -> None: ...

        def named(name: str) -> Any:
            @actiontrace.synchronization(name)
            def sync() -> None:
                react()
            return sync

        syncs = {name: named(name) for name in ("Zeta", "Alpha", "Mid", "Alpha2")}
        for k in range(3):
            with flow("links::Web::request"):
                for name in list(syncs)[: k + 2]:  # Zeta, Alpha always; Mid twice; Alpha2 once
                    start()  # the trigger of the synchronization that follows
                    syncs[name]()
        assert tracer.flush(10)
        assert storage.synchronization_links(newest=2) == [
            ("links::A::start", "Alpha", "links::B::react", 2),
            ("links::A::start", "Mid", "links::B::react", 2),
            ("links::A::start", "Zeta", "links::B::react", 2),
            ("links::A::start", "Alpha2", "links::B::react", 1),
        ]

    def test_resolve_prefix(self, storage: Any) -> None:
        """Unique, ambiguous and unknown prefixes; dashes and case do not matter."""
        a, b = part(1_000, 2), part(1_000, 1)
        storage.write_parts([a, b])
        ta, tb = uuid.UUID(int=a.token), uuid.UUID(int=b.token)
        assert storage.resolve_prefix(str(ta), "flow") == [ta]
        assert storage.resolve_prefix(str(ta).upper(), "flow") == [ta]
        common = ta.hex[: next(i for i in range(32) if ta.hex[i] != tb.hex[i])]
        assert storage.resolve_prefix(ta.hex[: len(common) + 1], "flow") == [ta]
        assert storage.resolve_prefix(common, "flow", limit=5) == sorted([ta, tb])
        assert storage.resolve_prefix("f" * 8, "flow") == []
        act = uuid.UUID(int=a.records[1][1])
        assert storage.resolve_prefix(str(act)[:36], "action") == [act]
        assert storage.resolve_prefix(str(ta), "action") == []  # a token is not an action
        with pytest.raises(ValueError, match="malformed"):
            storage.resolve_prefix("xyz", "flow")


class TestCustomStorage:
    def test_defaults_keep_old_storages_working(self) -> None:
        """A storage written before list_flows/resolve_prefix: clear errors, whole ids work."""
        inner_store = actiontrace.InMemoryTraceStorage()

        class Old(TraceStorage):
            def save_trace(self, trace: actiontrace.ActionTrace) -> None:
                inner_store.save_trace(trace)

            def __getattr__(self, name: str) -> Any:
                return getattr(inner_store, name)

        for name in ("get_trace", "find_actions", "find_producing_sync", "get_causal_chain",
                     "find_by_sync", "top_synchronizations", "longest_chains",
                     "sync_performance"):
            setattr(Old, name, lambda self, *a, _n=name: getattr(inner_store, _n)(*a))
        Old.__abstractmethods__ = frozenset()
        old = Old()
        p = part(1_000, 2)
        old.write_parts([p])
        token = uuid.UUID(int=p.token)
        with pytest.raises(NotImplementedError, match="list_flows"):
            old.list_flows()
        assert old.resolve_prefix(str(token), "flow") == [token]
        assert old.resolve_prefix("f" * 32, "action") == []
        with pytest.raises(NotImplementedError, match="whole ids"):
            old.resolve_prefix(token.hex[:8], "flow")


def test_partial_trace_of_running_flow_keeps_logs() -> None:
    """get_trace inside a running flow includes the events attached so far."""
    import structlog

    from actiontrace.contrib.structlog import attach_to_action

    tracer = actiontrace.configure()
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(), processors=[attach_to_action, lambda _l, _m, ed: ed]
    )

    @actiontrace.action(concept="logs::Live")
    def step() -> None:
        logger.info("first step")

    with actiontrace.flow("logs::Web::req") as token:
        step()
        live = tracer.get_trace(token)
    assert [e.event for e in live.logs] == ["first step"]
    assert [e.event for e in tracer.get_trace(token).logs] == ["first step"]
