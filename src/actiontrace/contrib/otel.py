"""OpenTelemetry: flows as spans, exported through any ``SpanExporter``.

Contract: docs/reference.md, OpenTelemetry; guide: docs/otel.md.

``to_spans(trace)`` turns an ``ActionTrace`` into OpenTelemetry SDK ``ReadableSpan``\\ s:
one span per action, the flow token as trace id, the low 64 bits of the action id as span
id, call nesting as parent/child, and every provenance edge as a ``Link`` from the
caused action's span to its trigger's, labelled ``actiontrace.synchronization``.

``configure(span_exporters=[...])`` sends every flow part that storage received through
each exporter as well (``contrib/_span_export.py``; docs/otel.md). Needs the ``otel`` extra
(``pip install 'actiontrace[otel]'``: ``opentelemetry-sdk``).

Span ids and their collision bound: a span id is the low 64 bits of the action's UUIDv7,
which hold the variant bits, 22 random bits drawn once per process, and a 40-bit
per-process counter (``actiontrace.recording._ids``). So one process never gives two actions the
same span id (until it has recorded 2**40 actions), and the same action always has the
same span id, whichever process exports it. Two processes that write parts of one flow
share their 22 random bits with probability 2**-22 (about 1 in 4 million), and only then
can two of that flow's spans collide; for k processes writing into one flow the bound is
k(k-1)/2 * 2**-22. Ids from elsewhere (``uuid4`` from the seed's API) have 62 random
low bits: n spans in one trace collide with probability below n**2 / 2**63. Backends key
spans by (trace id, span id), so spans of different flows never collide. The full action
id is on every span as ``actiontrace.action_id``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from actiontrace._model import ActionTrace

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan

    from actiontrace.recording._record import Part

__all__ = ["span_id_of", "to_spans"]

log = logging.getLogger("actiontrace")

_LOW64 = (1 << 64) - 1
_json = msgspec.json.Encoder()


def span_id_of(action_id: uuid.UUID) -> int:
    """The span id of an action: the low 64 bits of its id (never 0 for an RFC 9562 UUID).

    It is also the parent-id that ``actiontrace.inject`` puts in ``traceparent`` for that
    action, so spans exported by two services join up.
    """
    return action_id.int & _LOW64


class _Otel:
    """The OpenTelemetry names ``to_spans`` needs, imported on first use."""

    _loaded: _Otel | None = None

    def __init__(self) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.sdk import trace as sdk_trace
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "actiontrace.contrib.otel needs the OpenTelemetry SDK: "
                "pip install 'actiontrace[otel]'"
            ) from exc
        from actiontrace._version import __version__

        self.ReadableSpan = sdk_trace.ReadableSpan
        self.Event = sdk_trace.Event
        self.SpanContext = trace.SpanContext
        self.Link = trace.Link
        self.Status = trace.Status
        self.StatusCode = trace.StatusCode
        self.SpanKind = trace.SpanKind
        self.Resource = Resource
        self.flags = trace.TraceFlags(trace.TraceFlags.SAMPLED)
        self.scope = InstrumentationScope("actiontrace", __version__)
        self.ok = trace.Status(trace.StatusCode.OK)
        self.unset = trace.Status(trace.StatusCode.UNSET)
        self.resources: dict[str, Resource] = {}

    @classmethod
    def get(cls) -> _Otel:
        if cls._loaded is None:
            cls._loaded = cls()
        return cls._loaded

    def resource(self, module: str) -> Resource:
        res = self.resources.get(module)
        if res is None:
            res = self.resources[module] = self.Resource({"service.name": module})
        return res


def _text(value: Any) -> str:
    # The JSON as stored: records hold the decoded stored document, and msgspec encodes
    # it back to the same text (key order and the truncation marker included).
    try:
        return _json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):  # a hand-built trace holding a non-JSON value
        return repr(value)


def to_spans(trace: ActionTrace, resource: Resource | None = None) -> list[ReadableSpan]:
    """Return one OpenTelemetry span per action of ``trace``, in the trace's order.

    Args:
        trace: a flow's trace, or one part of it (what ``configure(span_exporters=...)``
            exports).
        resource: the spans' resource (default: ``service.name`` = ``trace.module``).

    Returns:
        ``ReadableSpan`` objects ready for any ``SpanExporter``: trace id = flow token,
        span id = the low 64 bits of the action id, parent = the span of ``parent_id``
        (for an action without one that a provenance edge caused, such as a direct
        action of ``continue_flow``: its trigger's span), links to the trigger of each
        provenance edge (the first edge's synchronization also as the span attribute
        ``actiontrace.synchronization``), status ERROR with the error text for error
        actions, OK for completed ones, UNSET for an action still running (it has no end
        yet: its span ends where it starts, with ``actiontrace.running`` set).
    """
    rows = [
        (a.id.int, None if a.parent_id is None else a.parent_id.int, a.concept_uri, a.action,
         a.timestamp, a.duration_us, a.status, _text(a.inputs), _text(a.outputs))
        for a in trace.actions.values()
    ]
    edges = [(e.from_action.int, e.to_action.int, e.synchronization, e.created_at)
             for e in trace.provenance_edges]
    logs = [(None if ev.action_id is None else ev.action_id.int, ev.timestamp, ev.level,
             ev.event, _text(ev.fields)) for ev in trace.logs]
    return _spans(trace.flow_token.int, trace.module, rows, edges, logs, resource)


def _part_spans(part: Part) -> list[ReadableSpan]:
    """``to_spans(to_trace(part))``, without building the public model in between.

    The export thread's fast path: the rows already hold the JSON as stored, so nothing
    is decoded and encoded again (half the cost of ``to_trace`` and ``to_spans``).
    """
    rows = [(r.id, r.parent_id, r.concept_uri, r.action, r.timestamp, r.duration_us, r.status,
             r.inputs.decode(), r.outputs.decode()) for r in part.rows()]
    logs = [(r.action_id, r.timestamp, r.level, r.event, r.fields.decode())
            for r in part.log_rows()]
    return _spans(part.token, part.module, rows, part.edges, logs, None)


def _uuid_text(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _spans(
    trace_id: int,
    module: str,
    rows: Sequence[tuple[int, int | None, str, str, int, int | None, str, str, str]],
    edges: list[tuple[int, int, str, int]],
    logs: list[tuple[int | None, int, str, str, str]],
    resource: Resource | None,
) -> list[ReadableSpan]:
    """The spans of one trace or part, from plain rows (ids as ints, JSON as text).

    ``rows``: ``(id, parent_id, concept_uri, action, timestamp_us, duration_us, status,
    inputs_json, outputs_json)``; ``edges``: ``(from, to, synchronization, created_us)``;
    ``logs``: ``(action_id, timestamp_us, level, event, fields_json)``.
    """
    ot = _Otel.get()
    res = resource if resource is not None else ot.resource(module)
    flags = ot.flags
    ours = {row[0] for row in rows}
    contexts: dict[int, Any] = {}

    def context(aid: int) -> Any:
        ctx = contexts.get(aid)
        if ctx is None:
            ctx = contexts[aid] = ot.SpanContext(
                trace_id, aid & _LOW64, is_remote=aid not in ours, trace_flags=flags
            )
        return ctx

    incoming: dict[int, list[tuple[int, int, str, int]]] = {}
    for edge in sorted(edges, key=lambda e: e[3]):
        incoming.setdefault(edge[1], []).append(edge)
    events: dict[int, list[Any]] = {}
    for action_id, ts, level, event, fields in logs:
        if action_id is not None:
            events.setdefault(action_id, []).append(ot.Event(
                event, {"actiontrace.level": level, "actiontrace.fields": fields}, ts * 1000))

    spans = []
    for aid, parent_id, concept_uri, name, ts, duration, status, inputs, outputs in rows:
        into = incoming.get(aid, ())
        if parent_id is not None:
            parent = context(parent_id)
        elif into:  # a direct action of continue_flow (or a top-level reaction)
            parent = context(into[0][0])
        else:
            parent = None
        start = ts * 1000
        attributes: dict[str, Any] = {
            "actiontrace.concept": concept_uri,
            "actiontrace.action": name,
            "actiontrace.action_id": _uuid_text(aid),
            "actiontrace.inputs": inputs,
            "actiontrace.outputs": outputs,
        }
        if into:  # also as a span attribute: Jaeger's model drops link attributes
            attributes["actiontrace.synchronization"] = into[0][2]
        span_events = events.get(aid, [])
        if status == "error":
            span_status, end, error = _error(ot, outputs, start + (duration or 0) * 1000)
            span_events = [*span_events, error]
        elif status == "running" or duration is None:
            span_status, end = ot.unset, start
            attributes["actiontrace.running"] = True
        else:
            span_status, end = ot.ok, start + duration * 1000
        spans.append(ot.ReadableSpan(
            name=f"{concept_uri}::{name}",
            context=context(aid),
            parent=parent,
            resource=res,
            attributes=attributes,
            events=span_events,
            links=[ot.Link(context(e[0]), {"actiontrace.synchronization": e[2]}) for e in into],
            kind=ot.SpanKind.INTERNAL,
            status=span_status,
            start_time=start,
            end_time=end,
            instrumentation_scope=ot.scope,
        ))
    return spans


def _error(ot: _Otel, outputs: str, end: int) -> tuple[Any, int, Any]:
    """ERROR status with the error text, and the ``exception`` event, of an error action."""
    try:
        value = msgspec.json.decode(outputs)
    except msgspec.DecodeError:
        value = outputs
    out = value if isinstance(value, dict) else {}
    message = str(out.get("error", value))
    event = ot.Event("exception", {
        "exception.type": str(out.get("error_type", "")), "exception.message": message,
    }, end)
    return ot.Status(ot.StatusCode.ERROR, message), end, event
