"""Fault matrix row 6: hostile values and re-entrancy never break the application.

tests/test_capture.py covers a raising repr, a huge repr, nesting past the recursion
limit and a value mutated by another thread; these extend it (slow reprs, arbitrary
repr behaviour, actions called from inside capture or logging, runaway reactions).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import ActionFilter, ReactionLimitError, action, flow, synchronization


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


@action(concept="hos::Echo")
def echo(value: Any) -> Any:
    return value


@action(concept="hos::Inner")
def inner(tag: str) -> str:
    return tag


class Slow:
    calls = 0

    def __repr__(self) -> str:
        Slow.calls += 1
        time.sleep(0.2)
        return "Slow()"


class Reentrant:
    """An argument whose repr calls an @action: capture re-enters the recorder."""

    def __repr__(self) -> str:
        return f"Reentrant({inner('from-repr')})"


class Weird:
    def __init__(self, behaviour: Any) -> None:
        self.behaviour = behaviour

    def __repr__(self) -> str:
        b = self.behaviour
        if isinstance(b, type) and issubclass(b, Exception):
            raise b("repr failed")
        return str(b)


class TestHostileValues:
    def test_slow_repr(self, tracer: actiontrace.ActionTracer) -> None:
        """A slow repr is called once per stored value (no retries), and the value is stored."""
        value = Slow()
        before = Slow.calls
        assert echo(value) is value
        # Its time is paid once per place it is stored (inputs, outputs), never more.
        assert Slow.calls - before == 2
        (rec,) = tracer.find_actions(ActionFilter(concept_uri="hos::Echo"))
        assert "Slow()" in str(rec.inputs)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
              HealthCheck.function_scoped_fixture])
    @given(st.one_of(
        st.sampled_from([ValueError, RuntimeError, RecursionError, MemoryError, TypeError,
                         UnicodeError, AttributeError]),
        st.text(max_size=200),
        st.integers(1, 3_000_000).map(lambda n: "ab\x00\ud7ff" * (n // 4)),
    ))
    def test_any_repr_behaviour(self, tracer: actiontrace.ActionTracer, behaviour: Any) -> None:
        """Whatever repr does (raise anything, return anything), the call goes through."""
        value = Weird(behaviour)
        assert echo({"v": value, "l": [value]}) == {"v": value, "l": [value]}
        assert tracer.flush(5)
        assert tracer.stats()["dropped"] == 0

    def test_action_called_from_a_repr(self, tracer: actiontrace.ActionTracer) -> None:
        """An argument whose repr calls an @action: both are recorded, nothing recurses."""
        with flow("hos::Web::req") as token:
            assert isinstance(echo(Reentrant()), Reentrant)
        trace = tracer.get_trace(token)
        names = sorted(r.action for r in trace.actions.values())
        assert names.count("echo") == 1 and names.count("req") == 1
        assert 1 <= names.count("inner") <= 2  # repr may run at capture and again in storage
        assert all(r.status == "ok" for r in trace.actions.values())

    def test_action_called_from_a_log_filter(self, tracer: actiontrace.ActionTracer) -> None:
        """A logging filter that calls an @action, triggered from inside an action."""

        class Auditing(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                inner(record.getMessage())
                return True

        logger = logging.getLogger("hos.test")
        flt = Auditing()
        logger.addFilter(flt)
        try:
            @action(concept="hos::Logs")
            def work() -> int:
                logger.warning("inside")
                return 1

            with flow("hos::Web::req") as token:
                assert work() == 1
                logger.warning("in flow")
            logger.warning("outside")
        finally:
            logger.removeFilter(flt)
        trace = tracer.get_trace(token)
        tags = sorted(r.inputs["tag"] for r in trace.actions.values() if r.action == "inner")
        assert tags == ["in flow", "inside"]
        (outside,) = [r for r in tracer.find_actions(ActionFilter(action="inner"))
                      if r.inputs["tag"] == "outside"]
        assert outside.flow_token != token

    def test_action_called_from_a_structlog_processor(self, tracer: actiontrace.ActionTracer) -> None:
        """A structlog processor (next to add_flow_context) that calls an @action."""
        import structlog

        from actiontrace.contrib.structlog import add_flow_context

        seen: list[dict[str, Any]] = []

        def calls_action(_logger: Any, _name: str, event: dict[str, Any]) -> dict[str, Any]:
            inner(str(event.get("event")))
            seen.append(dict(event))
            raise structlog.DropEvent

        log = structlog.wrap_logger(None, processors=[add_flow_context, calls_action])
        with flow("hos::Web::req") as token:
            log.info("hello")
        assert seen and str(seen[0]["flow_token"]) == str(token)
        trace = tracer.get_trace(token)
        assert [r.inputs["tag"] for r in trace.actions.values() if r.action == "inner"] == ["hello"]


@action(concept="hos::Ping")
def ping(n: int) -> int:
    return n


@synchronization(when=ping)
def ping_again(rec: actiontrace.ActionRecord) -> None:
    ping(rec.inputs["n"] + 1)


class TestRunawayReactions:
    def test_cascade_stops_with_reaction_limit_error(self) -> None:
        """A reaction that re-triggers itself stops at max_reaction_depth, not RecursionError."""
        tracer = actiontrace.configure(max_reaction_depth=50)
        with pytest.raises(ReactionLimitError), flow("hos::Web::req") as token:
            ping(0)
        trace = tracer.get_trace(token)
        root = trace.actions[trace.root_action_id]
        # Visible: the flow's root ends in error, naming the limit.
        assert root.status == "error"
        assert root.outputs["error_type"].endswith("ReactionLimitError")
        assert len([r for r in trace.actions.values() if r.action == "ping"]) == 51

    def test_deep_limit_is_not_a_recursion_error(self) -> None:
        """Even a limit above what the interpreter's stack allows ends cleanly."""
        import sys

        tracer = actiontrace.configure(max_reaction_depth=sys.getrecursionlimit() * 2)
        with pytest.raises(ReactionLimitError, match="interpreter's stack"), \
                flow("hos::Web::req") as token:
            ping(0)
        assert tracer.flush(5)
        cut = [r for r in tracer.get_trace(token).actions.values()
               if r.action == "reaction_limit"]
        assert len(cut) == 1 and cut[0].status == "error"

    def test_limit_visible_without_explicit_flow(self) -> None:
        """A runaway cascade started outside any flow leaves an error record behind."""
        tracer = actiontrace.configure(max_reaction_depth=20)
        with pytest.raises(ReactionLimitError):
            ping(0)
        errors = [r for r in tracer.find_actions(ActionFilter()) if r.status == "error"]
        assert len(errors) == 1
        assert errors[0].outputs["error_type"].endswith("ReactionLimitError")
        pings = tracer.find_actions(ActionFilter(concept_uri="hos::Ping"))
        assert errors[0].flow_token == pings[0].flow_token and len(pings) == 21
