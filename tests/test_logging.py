"""The logging integrations carry the flow token and the running action's id."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import structlog

import actiontrace
from actiontrace import action, continue_flow, flow
from actiontrace.contrib.logging import FlowContextFilter
from actiontrace.contrib.structlog import add_flow_context


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


@pytest.fixture
def events() -> Any:
    """structlog configured with our processor, capturing event dicts."""
    captured: list[dict[str, Any]] = []

    def capture(logger: Any, method: str, event_dict: dict[str, Any]) -> str:
        captured.append(dict(event_dict))
        return ""

    structlog.configure(processors=[add_flow_context, capture], cache_logger_on_first_use=False)
    yield captured
    structlog.reset_defaults()


log = structlog.get_logger()


@action(concept="log::Player")
def play(passage_id: int) -> int:
    log.info("playing", passage_id=passage_id)
    return inner()


@action(concept="log::Player")
def inner() -> int:
    log.info("inner")
    return 1


class TestStructlog:
    def test_processor_is_a_plain_callable(self) -> None:
        """Outside a flow the event dict comes back unchanged."""
        assert add_flow_context(None, "info", {"b": 2}) == {"b": 2}

    def test_inside_and_outside(self, tracer: actiontrace.ActionTracer, events: list[dict[str, Any]]) -> None:
        """Events inside a flow carry flow_token and the innermost action's id."""
        log.info("before")
        with flow("log::Web::req") as token:
            log.info("in root")
            play(42)
        log.info("after")
        by_event = {e["event"]: e for e in events}
        assert "flow_token" not in by_event["before"] and "flow_token" not in by_event["after"]
        trace = tracer.get_trace(token)
        ids = {r.action: str(r.id) for r in trace.actions.values()}
        assert by_event["in root"]["action_id"] == ids["req"]
        assert by_event["playing"]["action_id"] == ids["play"]
        assert by_event["inner"]["action_id"] == ids["inner"]
        assert {by_event[k]["flow_token"] for k in ("in root", "playing", "inner")} == {str(token)}

    def test_async_and_auto_flow(self, tracer: actiontrace.ActionTracer, events: list[dict[str, Any]]) -> None:
        """Async actions and actions with a flow of their own are covered too."""

        @action(concept="log::Async")
        async def fetch() -> None:
            await asyncio.sleep(0)
            log.info("fetching")

        asyncio.run(fetch())
        (rec,) = tracer.find_actions(actiontrace.ActionFilter(action="fetch"))
        assert events[-1]["action_id"] == str(rec.id)
        assert events[-1]["flow_token"] == str(rec.flow_token)

    def test_continue_flow_without_action(self, events: list[dict[str, Any]]) -> None:
        """Directly inside continue_flow there is a flow but no action."""
        import uuid

        token = uuid.uuid4()
        with continue_flow(token):
            log.info("joined")
        assert events[-1]["flow_token"] == str(token) and events[-1]["action_id"] is None


class TestStdlibLogging:
    def test_filter_sets_attributes(self, tracer: actiontrace.ActionTracer) -> None:
        """FlowContextFilter adds flow_token/action_id inside flows, nothing outside."""
        records: list[logging.LogRecord] = []

        class Keep(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                records.append(record)

        logger = logging.getLogger("actiontrace.test.stdlib")
        handler = Keep()
        handler.addFilter(FlowContextFilter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            logger.info("outside")

            @action(concept="log::Std")
            def work() -> None:
                logger.info("inside")

            with flow("log::Web::req") as token:
                work()
        finally:
            logger.removeHandler(handler)
        outside, inside = records
        assert not hasattr(outside, "flow_token")
        (rec,) = tracer.find_actions(actiontrace.ActionFilter(action="work"))
        assert inside.flow_token == str(token) and inside.action_id == str(rec.id)  # type: ignore[attr-defined]
        fmt = logging.Formatter("%(flow_token)s %(message)s", defaults={"flow_token": "-"})
        assert fmt.format(outside) == "- outside"
