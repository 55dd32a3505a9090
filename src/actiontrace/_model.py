"""The public data model: what a trace is made of, as msgspec Structs (docs/reference.md, Model)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

import msgspec

__all__ = [
    "ActionFilter",
    "ActionRecord",
    "ActionTrace",
    "FlowSummary",
    "LogEvent",
    "PerformanceMetrics",
    "ProvenanceEdge",
    "Status",
]

Status = Literal["running", "ok", "error"]


class ActionRecord(msgspec.Struct, frozen=True, gc=False):
    """One call of an action: what went in, what came out, when, and where it sits."""

    id: uuid.UUID
    concept_uri: str
    action: str
    inputs: Any
    outputs: Any
    timestamp: int  # start, microseconds since the Unix epoch (UTC)
    flow_token: uuid.UUID
    parent_id: uuid.UUID | None = None
    status: Status = "ok"
    duration_us: int | None = None


class ProvenanceEdge(msgspec.Struct, frozen=True, gc=False):
    """``to_action`` happened because ``synchronization`` reacted to ``from_action``."""

    from_action: uuid.UUID
    to_action: uuid.UUID
    synchronization: str
    created_at: int  # microseconds since the Unix epoch


class LogEvent(msgspec.Struct, frozen=True, gc=False):
    """One log event emitted inside a flow, attached to the action that was running.

    Recorded by ``actiontrace.contrib.structlog.attach_to_action``; ``fields`` holds the
    event's other key/values, encoded and redacted like an action's inputs.
    """

    id: uuid.UUID
    flow_token: uuid.UUID
    action_id: uuid.UUID | None  # None directly inside continue_flow (no action running)
    timestamp: int  # microseconds since the Unix epoch
    level: str
    event: str
    fields: Any = None


class ActionTrace(msgspec.Struct):
    """Every action and provenance edge recorded for one flow (and its log events)."""

    flow_token: uuid.UUID
    root_action_id: uuid.UUID
    actions: dict[uuid.UUID, ActionRecord]
    provenance_edges: list[ProvenanceEdge]
    created_at: int
    module: str
    logs: list[LogEvent] = []  # oldest first; empty unless a log processor attached some
    # False when configure(sample_rate=...) did not sample the flow and it was kept only
    # because it holds an error.
    sampled: bool = True

    def to_ascii(self) -> str:
        """Render the flow as an indented tree (see docs/views.md)."""
        from actiontrace import _views

        return _views.to_ascii(self)

    def to_dot(self, *, calls: bool = False) -> str:
        """Render the flow as a Graphviz ``digraph``: one node per action, one edge per
        provenance edge; with ``calls``, also a dashed edge from each action's caller to
        it (the call nesting)."""
        from actiontrace import _views

        return _views.to_dot(self, calls=calls)

    def to_mermaid(self) -> str:
        """Render the flow as a Mermaid ``flowchart``."""
        from actiontrace import _views

        return _views.to_mermaid(self)

    def to_json(self) -> str:
        """Return the whole trace as JSON text."""
        from actiontrace import _views

        return _views.to_json(self)


class ActionFilter(msgspec.Struct, kw_only=False):
    """What ``find_actions`` looks for; every field given must match (docs/reference.md, Queries).

    Args:
        concept_uri: exact, or a ``::``-bounded prefix (``"app"`` matches ``"app::Player"``).
        action: the action name, exactly.
        time_range: ``(start_us, end_us)``, inclusive, on the record's start timestamp.
        flow_token: only actions of this flow.
        inputs: key/value pairs the record's inputs must contain.
        limit: at most this many records (the oldest first).
    """

    concept_uri: str | None = None
    action: str | None = None
    time_range: tuple[int, int] | None = None
    flow_token: uuid.UUID | None = None
    inputs: dict[str, Any] | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.flow_token, str):
            self.flow_token = uuid.UUID(self.flow_token)
        if self.time_range is not None:
            start, end = self.time_range
            if not isinstance(start, int) or not isinstance(end, int):
                raise TypeError("time_range must be two ints (microseconds)")
            self.time_range = (start, end)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 0):
            raise ValueError("limit must be a non-negative int")
        if self.inputs is not None and not isinstance(self.inputs, dict):
            raise TypeError("inputs must be a dict of key/value pairs")


class FlowSummary(msgspec.Struct, frozen=True, gc=False):
    """One line of ``list_flows``: a flow, its root action and its size."""

    flow_token: uuid.UUID
    created_at: int  # microseconds since the Unix epoch
    module: str
    actions: int  # stored actions of the flow, every part counted
    errors: int  # of which ended with status "error"
    root_action_id: uuid.UUID | None = None  # None until the part holding the root arrives
    concept_uri: str | None = None  # the root action's
    action: str | None = None
    status: Status | None = None
    duration_us: int | None = None


class PerformanceMetrics(msgspec.Struct, frozen=True):
    """Duration statistics, in microseconds; figures are None when ``count`` is 0."""

    count: int
    mean: float | None
    median: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def from_durations(cls, durations: list[int]) -> PerformanceMetrics:
        """Compute the figures from raw durations (any order; empty is fine)."""
        values = sorted(durations)
        if not values:
            return cls(0, None, None, None, None)
        return cls(
            count=len(values),
            mean=sum(values) / len(values),
            median=percentile(values, 0.5),
            p95=percentile(values, 0.95),
            p99=percentile(values, 0.99),
        )


def percentile(sorted_values: list[int] | list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, by linear interpolation.

    This is the definition numpy uses by default and PostgreSQL's ``percentile_cont``:
    the value at rank ``q * (n - 1)``, interpolated between its two neighbours. So the
    median of ``[1, 2, 3, 4]`` is 2.5, and p99 of a single value is that value.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo))
