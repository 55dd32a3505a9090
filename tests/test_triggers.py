"""The provenance rules of docs/reference.md, Decorators: which edge every action gets, and from what."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import ActionRecord, ReactionLimitError, action, concept, flow, synchronization
from actiontrace._state import MAX_VALUE_BYTES


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


@concept("t::A")
class A:
    @action
    def one(self, x: int = 0) -> int:
        return x

    @action
    def two(self, x: int = 0) -> int:
        return x

    @action
    def calls_two(self) -> int:
        return self.two(5)

    @action
    def fails(self) -> None:
        raise ValueError("nope")


a = A()


def by_action(trace: actiontrace.ActionTrace) -> dict[str, list[ActionRecord]]:
    out: dict[str, list[ActionRecord]] = {}
    for rec in trace.actions.values():
        out.setdefault(rec.action, []).append(rec)
    return out


def edges(trace: actiontrace.ActionTrace) -> set[tuple[str, str, str]]:
    """Edges as (from action name, to action name, synchronization)."""
    acts = trace.actions
    return {
        (acts[e.from_action].action, acts[e.to_action].action, e.synchronization)
        for e in trace.provenance_edges
    }


class TestDirectSynchronizations:
    def test_trigger_is_most_recently_completed_action(self, tracer: actiontrace.ActionTracer) -> None:
        """A sync's trigger is the last action that completed in the enclosing action."""

        @synchronization("S")
        def sync() -> None:
            a.two()

        with flow("t::Web::req") as token:
            a.one()
            sync()
        trace = tracer.get_trace(token)
        assert edges(trace) == {("one", "two", "S")}

    def test_error_completion_counts(self, tracer: actiontrace.ActionTracer) -> None:
        """An action that raised still counts as the most recently completed one."""

        @synchronization("S")
        def sync() -> None:
            a.two()

        with flow("t::Web::req") as token:
            with pytest.raises(ValueError):
                a.fails()
            sync()
        assert edges(tracer.get_trace(token)) == {("fails", "two", "S")}

    def test_trigger_is_enclosing_action_when_none_completed(self, tracer: actiontrace.ActionTracer) -> None:
        """With nothing completed yet inside an action, the trigger is the action itself."""

        @synchronization("S")
        def sync() -> None:
            a.two()

        @action(concept="t::Outer")
        def outer() -> None:
            sync()

        with flow("t::Web::req") as token:
            a.one()  # completed in the flow root, not inside outer
            outer()
        assert edges(tracer.get_trace(token)) == {("outer", "two", "S")}

    def test_trigger_is_flow_root_when_nothing_ran(self, tracer: actiontrace.ActionTracer) -> None:
        """At the top of a flow with nothing completed, the trigger is the flow's root."""

        @synchronization("S")
        def sync() -> None:
            a.two()

        with flow("t::Web::req") as token:
            sync()
        trace = tracer.get_trace(token)
        (edge,) = trace.provenance_edges
        assert edge.from_action == trace.root_action_id
        assert trace.actions[edge.from_action].action == "req"
        assert trace.actions[edge.from_action].concept_uri == "t::Web"

    def test_trigger_fixed_at_entry(self, tracer: actiontrace.ActionTracer) -> None:
        """All actions a sync calls share the trigger fixed when it was entered."""

        @synchronization("S")
        def sync() -> None:
            a.two(1)
            a.two(2)
            a.two(3)

        with flow("t::Web::req") as token:
            a.one()
            sync()
        trace = tracer.get_trace(token)
        one = by_action(trace)["one"][0]
        assert len(trace.provenance_edges) == 3
        assert {e.from_action for e in trace.provenance_edges} == {one.id}

    def test_actions_nested_in_called_action_get_no_edge(self, tracer: actiontrace.ActionTracer) -> None:
        """Only actions called directly in the sync get an edge, not what they call."""

        @synchronization("S")
        def sync() -> None:
            a.calls_two()

        with flow("t::Web::req") as token:
            sync()
        trace = tracer.get_trace(token)
        assert edges(trace) == {("req", "calls_two", "S")}
        two = by_action(trace)["two"][0]
        assert two.parent_id == by_action(trace)["calls_two"][0].id

    def test_sync_is_transparent_for_completion(self, tracer: actiontrace.ActionTracer) -> None:
        """An action completed inside a sync counts as completed in the enclosing action."""

        @synchronization("First")
        def first() -> None:
            a.one()

        @synchronization("Second")
        def second() -> None:
            a.two()

        with flow("t::Web::req") as token:
            first()
            second()
        assert edges(tracer.get_trace(token)) == {("req", "one", "First"), ("one", "two", "Second")}

    def test_nested_synchronizations_use_innermost(self, tracer: actiontrace.ActionTracer) -> None:
        """A sync inside a sync: its actions get edges from the inner sync's trigger."""

        @synchronization("Inner")
        def inner() -> None:
            a.two()

        @synchronization("Outer")
        def outer() -> None:
            a.one()
            inner()
            a.one(9)

        with flow("t::Web::req") as token:
            outer()
        trace = tracer.get_trace(token)
        assert edges(trace) == {("req", "one", "Outer"), ("one", "two", "Inner")}
        ones = by_action(trace)["one"]
        # The outer sync's trigger stays the root for its later actions.
        assert sum(1 for e in trace.provenance_edges if e.synchronization == "Outer") == 2
        inner_edge = next(e for e in trace.provenance_edges if e.synchronization == "Inner")
        assert inner_edge.from_action == ones[0].id

    def test_every_action_in_sync_gets_exactly_one_edge(self, tracer: actiontrace.ActionTracer) -> None:
        """No duplicates: one edge per action called directly in a sync."""

        @synchronization("S")
        def sync() -> None:
            for i in range(5):
                a.one(i)

        with flow("t::Web::req") as token:
            sync()
        trace = tracer.get_trace(token)
        targets = [e.to_action for e in trace.provenance_edges]
        assert len(targets) == len(set(targets)) == 5

    def test_sync_outside_flow_records_no_edges(self, tracer: actiontrace.ActionTracer) -> None:
        """Outside any flow, each action a sync calls starts a flow of its own."""

        @synchronization("S")
        def sync() -> None:
            a.one(1)
            a.two(2)

        sync()
        recs = tracer.find_actions(actiontrace.ActionFilter(concept_uri="t::A"))
        assert len(recs) == 2
        assert recs[0].flow_token != recs[1].flow_token
        for rec in recs:
            trace = tracer.get_trace(rec.flow_token)
            assert trace.provenance_edges == []
            assert trace.root_action_id == rec.id
            assert rec.parent_id is None

    def test_bare_synchronization_uses_function_name(self, tracer: actiontrace.ActionTracer) -> None:
        """``@synchronization`` without a name labels edges with ``__name__``."""

        @synchronization
        def glue_things() -> None:
            a.one()

        with flow("t::Web::req") as token:
            glue_things()
        assert edges(tracer.get_trace(token)) == {("req", "one", "glue_things")}

    async def test_async_synchronization(self, tracer: actiontrace.ActionTracer) -> None:
        """An async sync gives edges to the async actions it awaits."""

        @action(concept="t::Async")
        async def fetch(x: int) -> int:
            await asyncio.sleep(0)
            return x

        @synchronization("AsyncSync")
        async def sync() -> None:
            await fetch(1)

        async with flow("t::Web::req") as token:
            a.one()
            await sync()
        assert edges(tracer.get_trace(token)) == {("one", "fetch", "AsyncSync")}


class TestParents:
    def test_parent_is_call_nesting(self, tracer: actiontrace.ActionTracer) -> None:
        """parent_id is the enclosing action, the flow root at top level."""
        with flow("t::Web::req") as token:
            a.calls_two()
        trace = tracer.get_trace(token)
        acts = by_action(trace)
        assert acts["calls_two"][0].parent_id == trace.root_action_id
        assert acts["two"][0].parent_id == acts["calls_two"][0].id
        assert trace.actions[trace.root_action_id].parent_id is None

    def test_parent_through_sync_is_enclosing_action(self, tracer: actiontrace.ActionTracer) -> None:
        """A sync frame is not a parent: actions in it have the enclosing action as parent."""

        @synchronization("S")
        def sync() -> None:
            a.two()

        @action(concept="t::Outer")
        def outer() -> None:
            sync()

        with flow("t::Web::req") as token:
            outer()
        acts = by_action(tracer.get_trace(token))
        assert acts["two"][0].parent_id == acts["outer"][0].id


class TestDeclaredReactions:
    def test_reaction_runs_after_success_with_record(self, tracer: actiontrace.ActionTracer) -> None:
        """A reaction gets the triggering record; its actions get edges from it."""
        seen: list[ActionRecord] = []

        @concept("t::R1")
        class R:
            @action
            def source(self, n: int, password: str = "pw") -> dict[str, int]:
                return {"n": n}

            @action
            def sink(self, n: int) -> int:
                return n

        r = R()

        @synchronization("React", when=R.source)
        def react(record: ActionRecord) -> None:
            seen.append(record)
            r.sink(record.outputs["n"])

        with flow("t::Web::req") as token:
            r.source(3)
        (record,) = seen
        assert record.inputs == {"n": 3, "password": "[REDACTED]"}
        assert record.status == "ok" and record.outputs == {"n": 3}
        trace = tracer.get_trace(token)
        assert edges(trace) == {("source", "sink", "React")}
        assert trace.actions[record.id] == record
        sink = by_action(trace)["sink"][0]
        # The sink's parent is what was running when source was called: the flow root.
        assert sink.parent_id == trace.root_action_id

    def test_reaction_parent_is_caller_of_trigger(self, tracer: actiontrace.ActionTracer) -> None:
        """Inside an action, a reaction's actions have that action as parent."""

        @concept("t::R2")
        class R:
            @action
            def source(self) -> int:
                return 1

            @action
            def sink(self) -> int:
                return 2

            @action
            def caller(self) -> int:
                return self.source()

        r = R()

        @synchronization("React", when="t::R2::source")
        def react(record: ActionRecord) -> None:
            r.sink()

        with flow("t::Web::req") as token:
            r.caller()
        acts = by_action(tracer.get_trace(token))
        assert acts["sink"][0].parent_id == acts["caller"][0].id
        assert acts["source"][0].parent_id == acts["caller"][0].id

    def test_reaction_runs_before_caller_resumes(self, tracer: actiontrace.ActionTracer) -> None:
        """The reaction runs right after the action returns, before its caller goes on."""
        order: list[str] = []

        @action(concept="t::R3")
        def source() -> None:
            order.append("source")

        @synchronization("React", when=source)
        def react(record: ActionRecord) -> None:
            order.append("react")

        with flow("t::Web::req"):
            source()
            order.append("caller")
        assert order == ["source", "react", "caller"]

    def test_order_depth_first_and_where(self, tracer: actiontrace.ActionTracer) -> None:
        """Reactions run in declaration order, depth-first; ``where`` filters them."""
        order: list[str] = []

        @concept("t::R4")
        class R:
            @action
            def start(self, n: int) -> int:
                return n

            @action
            def middle(self) -> None:
                order.append("middle")

            @action
            def other(self) -> None:
                order.append("other")

        r = R()

        @synchronization("First", when=R.start)
        def first(record: ActionRecord) -> None:
            order.append("first")
            r.middle()

        @synchronization("Deep", when=R.middle)
        def deep(record: ActionRecord) -> None:
            order.append("deep")

        @synchronization("Second", when=R.start, where=lambda rec: rec.inputs["n"] > 1)
        def second(record: ActionRecord) -> None:
            order.append("second")
            r.other()

        with flow("t::Web::req"):
            r.start(1)
        assert order == ["first", "middle", "deep"]
        order.clear()
        with flow("t::Web::req") as token:
            r.start(2)
        assert order == ["first", "middle", "deep", "second", "other"]
        assert edges(tracer.get_trace(token)) == {
            ("start", "middle", "First"), ("start", "other", "Second"),
        }

    def test_no_reaction_after_error_or_outside_match(self, tracer: actiontrace.ActionTracer) -> None:
        """A failing action triggers nothing."""
        calls: list[ActionRecord] = []

        @action(concept="t::R5")
        def source(fail: bool) -> None:
            if fail:
                raise KeyError("x")

        @synchronization("React", when=source)
        def react(record: ActionRecord) -> None:
            calls.append(record)

        with flow("t::Web::req"), pytest.raises(KeyError):
            source(True)
        assert calls == []

    def test_reaction_exception_propagates_record_stays_ok(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception from a reaction reaches the caller; the trigger stays ok."""

        @action(concept="t::R6")
        def source() -> int:
            return 1

        @synchronization("Boom", when=source)
        def boom(record: ActionRecord) -> None:
            raise RuntimeError("reaction failed")

        with pytest.raises(RuntimeError, match="reaction failed"), flow("t::Web::req") as token:
            source()
        (rec,) = tracer.find_actions(actiontrace.ActionFilter(concept_uri="t::R6"))
        assert rec.status == "ok"
        assert tracer.get_trace(token).actions[rec.id].outputs == 1

    def test_where_exception_propagates(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception from ``where`` reaches the caller of the triggering action."""

        @action(concept="t::R7")
        def source() -> int:
            return 1

        @synchronization("Bad", when=source, where=lambda rec: 1 / 0)
        def bad(record: ActionRecord) -> None:
            raise AssertionError("not reached")

        with flow("t::Web::req"), pytest.raises(ZeroDivisionError):
            source()

    def test_root_action_reactions_run_in_its_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """An action with no flow starts one; its reactions run in it before it ends."""

        @concept("t::R8")
        class R:
            @action
            def source(self) -> int:
                return 1

            @action
            def sink(self) -> int:
                return 2

        r = R()

        @synchronization("React", when=R.source)
        def react(record: ActionRecord) -> None:
            r.sink()

        r.source()
        (src,) = tracer.find_actions(actiontrace.ActionFilter(concept_uri="t::R8", action="source"))
        trace = tracer.get_trace(src.flow_token)
        assert trace.root_action_id == src.id
        sink = by_action(trace)["sink"][0]
        assert sink.parent_id is None
        assert edges(trace) == {("source", "sink", "React")}

    def test_cascade_limit(self) -> None:
        """A reaction that triggers itself forever stops with ReactionLimitError."""
        tracer = actiontrace.configure(max_reaction_depth=5)

        @action(concept="t::R9")
        def ping(n: int) -> int:
            return n

        @synchronization("Loop", when=ping)
        def loop(record: ActionRecord) -> None:
            ping(record.inputs["n"] + 1)

        with pytest.raises(ReactionLimitError, match="max_reaction_depth=5"), flow("t::Web::req"):
            ping(0)
        assert not isinstance(ReactionLimitError("x"), RecursionError)
        recs = tracer.find_actions(actiontrace.ActionFilter(concept_uri="t::R9"))
        assert [r.inputs["n"] for r in recs] == [0, 1, 2, 3, 4, 5]

    def test_async_action_sync_and_async_reactions(self, tracer: actiontrace.ActionTracer) -> None:
        """Reactions to an async action may be sync or async, both awaited in order."""
        order: list[str] = []

        @action(concept="t::R10")
        async def source() -> int:
            await asyncio.sleep(0)
            return 1

        @action(concept="t::R10")
        async def sink(tag: str) -> str:
            order.append(tag)
            return tag

        @synchronization("SyncReact", when=source)
        def sync_react(record: ActionRecord) -> None:
            order.append("sync")

        @synchronization("AsyncReact", when=source)
        async def async_react(record: ActionRecord) -> None:
            await sink("async")

        async def main() -> uuid.UUID:
            async with flow("t::Web::req") as token:
                await source()
                order.append("caller")
            return token

        token = asyncio.run(main())
        assert order == ["sync", "async", "caller"]
        assert edges(tracer.get_trace(token)) == {("source", "sink", "AsyncReact")}

    def test_async_reaction_to_sync_action_rejected(self) -> None:
        """Declaring an async reaction to a sync action is a TypeError."""

        @action(concept="t::R11")
        def source() -> int:
            return 1

        with pytest.raises(TypeError, match="must be sync"):

            @synchronization("Bad", when=source)
            async def bad(record: ActionRecord) -> None:
                pass

    def test_when_must_be_an_action(self) -> None:
        """``when=`` takes an @action or a 'concept::action' string."""
        with pytest.raises(TypeError):
            synchronization("X", when=print)(lambda r: None)
        with pytest.raises(ValueError):
            synchronization("X", when="no-separator")(lambda r: None)


_KEYS = st.sampled_from(["n", "token", "X-Api-Key", "user", "password_hint"]) | st.text(max_size=6)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=90),  # some longer than the 64-byte limit the tests set
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_KEYS, children, max_size=4),
    max_leaves=10,
)


@concept("t::Rec")
class Recorded:
    @action
    def source(self, value: object, extra: object = None) -> object:
        return value

    @action
    def caller(self, value: object, extra: object) -> object:
        return self.source(value, extra)


class TestReactionRecords:
    """The record a reaction receives (built in one step on the app's thread) is the one
    stored, whatever the values: redacted, cut to size, same ids and types."""

    @given(value=_VALUES, extra=_VALUES)
    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    def test_equals_the_stored_record(self, value: object, extra: object) -> None:
        """Called in a flow, in an action, in continue_flow and in a flow of its own."""
        tracer = actiontrace.configure(max_value_bytes=64)
        seen: list[ActionRecord] = []

        @synchronization("Seen", when=Recorded.source)
        def saw(record: ActionRecord) -> None:
            seen.append(record)

        rec = Recorded()
        try:
            with flow("t::Web::req") as token:
                rec.source(value, extra)
                rec.caller(value, extra)
            with actiontrace.continue_flow(token, trigger=None):
                rec.source(value, extra)
            rec.source(value, extra)  # no flow: the action is the root of its own
            assert tracer.flush(5)
            assert len(seen) == 4
            for record in seen:
                stored = tracer.get_trace(record.flow_token).actions[record.id]
                assert record == stored
                for u in (record.id, record.flow_token, record.parent_id):
                    assert u is None or (type(u) is uuid.UUID and u == uuid.UUID(str(u)))
            trace = tracer.get_trace(token)
            caller = next(r for r in trace.actions.values() if r.action == "caller")
            assert [r.parent_id for r in seen] == [trace.root_action_id, caller.id, None, None]
        finally:
            actiontrace.remove_reaction(saw)
            actiontrace.configure(max_value_bytes=MAX_VALUE_BYTES)  # it outlives the tracer

    def test_secret_keys_in_outputs_are_redacted(self) -> None:
        """A dict result with a secret key reaches the reaction redacted, as it is stored."""
        actiontrace.configure()
        seen: list[ActionRecord] = []

        @synchronization("Seen", when=Recorded.source)
        def saw(record: ActionRecord) -> None:
            seen.append(record)

        try:
            with flow("t::Web::req"):
                Recorded().source({"user": "ann", "api_key": "k"}, {"token": "t", "n": 1})
        finally:
            actiontrace.remove_reaction(saw)
        (record,) = seen
        assert record.outputs == {"user": "ann", "api_key": "[REDACTED]"}
        assert record.inputs == {"value": {"user": "ann", "api_key": "[REDACTED]"},
                                 "extra": {"token": "[REDACTED]", "n": 1}}


class TestContinueFlow:
    def test_joins_flow_with_trigger(self, tracer: actiontrace.ActionTracer) -> None:
        """continue_flow adds a part: direct actions have no parent and get edges."""
        with flow("t::Web::req") as token:
            a.one()
        trigger = tracer.find_actions(actiontrace.ActionFilter(action="one"))[0]
        with actiontrace.continue_flow(token, trigger=trigger.id, synchronization="Remote") as joined:
            assert joined == token
            assert tracer.current_flow_token() == token
            a.calls_two()
        trace = tracer.get_trace(token)
        acts = by_action(trace)
        assert trace.root_action_id == acts["req"][0].id
        assert acts["calls_two"][0].parent_id is None
        assert acts["two"][0].parent_id == acts["calls_two"][0].id
        assert edges(trace) == {("one", "calls_two", "Remote")}
        chain = tracer.get_causal_chain(acts["two"][0].id)
        assert [r.action for r in chain] == ["req", "one", "calls_two", "two"]

    def test_without_trigger_no_edges(self, tracer: actiontrace.ActionTracer) -> None:
        """Without a trigger, actions join the flow with no edge."""
        token = uuid.uuid4()
        with actiontrace.continue_flow(str(token)):
            a.one()
        trace = tracer.get_trace(token)
        assert trace.provenance_edges == []
        (rec,) = trace.actions.values()
        assert rec.flow_token == token and rec.parent_id is None

    def test_bad_token_is_rejected(self) -> None:
        """A flow token that is not a UUID is a ValueError."""
        with pytest.raises(ValueError, match="UUID"):
            actiontrace.continue_flow("not-a-uuid")


class TestCurrentActionId:
    def test_innermost_running_action(self, tracer: actiontrace.ActionTracer) -> None:
        """current_action_id() is the running action, the flow root, or None outside."""
        seen: list[uuid.UUID | None] = []

        @action
        def inner() -> None:
            seen.append(actiontrace.current_action_id())

        assert actiontrace.current_action_id() is None
        with flow("t::Web::req") as token:
            seen.append(actiontrace.current_action_id())
            inner()
        trace = tracer.get_trace(token)
        assert seen == [trace.root_action_id, by_action(trace)["inner"][0].id]

    def test_usable_as_continue_flow_trigger(self, tracer: actiontrace.ActionTracer) -> None:
        """The id passed to continue_flow(trigger=...) makes the joined actions its effects."""
        with flow("t::Web::req") as token:
            trigger = actiontrace.current_action_id()
        with actiontrace.continue_flow(token, trigger=trigger, synchronization="Remote"):
            assert actiontrace.current_action_id() is None  # no action of ours runs here
            a.one()
        assert edges(tracer.get_trace(token)) == {("req", "one", "Remote")}


class TestRemoveReaction:
    def test_removed_reaction_no_longer_runs(self, tracer: actiontrace.ActionTracer) -> None:
        """remove_reaction(sync) stops the reaction; the function still works directly."""
        calls: list[str] = []

        @synchronization("Echo", when=A.one)
        def echo(record: ActionRecord) -> None:
            calls.append(record.action)

        with flow("t::Web::req"):
            a.one()
        assert actiontrace.remove_reaction(echo) is True
        assert actiontrace.remove_reaction(echo) is False
        with flow("t::Web::req"):
            a.one()
        assert calls == ["one"]

    def test_snapshot_and_restore_registry(self, tracer: actiontrace.ActionTracer) -> None:
        """restore_reactions drops reactions declared after the snapshot, keeps earlier ones."""
        from actiontrace.recording._reactions import reactions_snapshot, restore_reactions

        calls: list[str] = []

        @synchronization("Early", when="t::A::two")
        def early(record: ActionRecord) -> None:
            calls.append("early")

        saved = reactions_snapshot()

        @synchronization("Late", when=A.two)
        def late(record: ActionRecord) -> None:
            calls.append("late")

        restore_reactions(saved)
        with flow("t::Web::req"):
            a.two()
        assert calls == ["early"]
        actiontrace.remove_reaction(early)


def test_cut_cascade_leaves_an_error_record() -> None:
    """Where a runaway cascade is stopped, an error record says so, even with no flow."""
    tracer = actiontrace.configure(max_reaction_depth=3)

    @action(concept="t::Loop")
    def tick(n: int) -> int:
        return n

    @synchronization("Again", when=tick)
    def again(record: ActionRecord) -> None:
        tick(record.inputs["n"] + 1)

    with pytest.raises(ReactionLimitError):
        tick(0)  # no flow: the action starts its own
    (cut,) = tracer.find_actions(actiontrace.ActionFilter(concept_uri="actiontrace", action="reaction_limit"))
    assert cut.status == "error" and cut.outputs["error_type"] == "actiontrace.ReactionLimitError"
    assert cut.inputs == {"synchronization": "Again", "limit": 3}
    assert tracer.find_producing_sync(cut.id) == "Again"
    chain = tracer.get_causal_chain(cut.id)
    assert [r.inputs.get("n") for r in chain[:-1]] == [0, 1, 2, 3]
