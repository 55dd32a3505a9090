"""OpenTelemetry: flows as spans, exported through any ``SpanExporter``.

Contract: docs/reference.md, OpenTelemetry; guide: docs/otel.md.

``to_spans(trace)`` turns an ``ActionTrace`` into OpenTelemetry SDK ``ReadableSpan``\\ s:
one span per action, the flow token as trace id, the low 64 bits of the action id as span
id, call nesting as parent/child, and every provenance edge as a ``Link`` from the
caused action's span to its trigger's, labelled ``actiontrace.synchronization``.

``configure(span_exporters=[...])`` sends every flow part that storage received through
each exporter as well (see ``SpanExport`` below; docs/otel.md). Needs the ``otel`` extra
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

import atexit
import collections
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from actiontrace._model import ActionTrace
from actiontrace.pipeline._writer import _RateLimitedWarning

if TYPE_CHECKING:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

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


# -- configure(span_exporters=[...]) -----------------------------------------------------------

BATCH_SPANS = 512  # spans per export() call (the SDK's BatchSpanProcessor default)
STALLED_AFTER = 10.0  # seconds in one export() call after which stats() says "stalled"

_SENDERS: weakref.WeakSet[_Sender] = weakref.WeakSet()


class _Sender:
    """One exporter, its bounded queue of stored parts, and the thread that exports them.

    Each exporter has a thread of its own, so one that hangs holds up only its own queue;
    the writer only appends to the queue. When the queue holds more than ``max_queue``
    actions, the oldest parts are dropped (and counted): a backend that comes back gets
    the most recent flows.
    """

    def __init__(self, exporter: SpanExporter, max_queue: int, batch: int) -> None:
        self.exporter = exporter
        self.name = type(exporter).__name__
        self.max_queue = max_queue
        self.batch = batch
        self.counters = {"exported": 0, "failed": 0, "dropped": 0, "errors": 0}
        self.last_error: str | None = None
        self._init_state()
        _SENDERS.add(self)

    def _init_state(self) -> None:
        self._queue: collections.deque[Part] = collections.deque()
        self._queued = 0  # actions in _queue; under _lock
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._busy_since: float | None = None  # monotonic start of the export() running
        self.closed = False  # the exporter's shutdown() has returned

    # the writer's side (never raises, never waits on the exporter)

    def offer(self, parts: Sequence[Part]) -> None:
        with self._lock:
            if self._stopping:
                self.counters["dropped"] += sum(p.n_actions for p in parts)
                return
            for part in parts:
                self._queue.append(part)
                self._queued += part.n_actions
            while self._queued > self.max_queue and self._queue:
                old = self._queue.popleft()
                self._queued -= old.n_actions
                self.counters["dropped"] += old.n_actions
        if self._thread is None:
            self._start()
        self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._run, name=f"actiontrace-span-export-{self.name}", daemon=True
            )
        self._thread.start()

    # the export thread

    def _take(self) -> list[Part]:
        taken: list[Part] = []
        n = 0
        with self._lock:
            while self._queue and (not taken or n + self._queue[0].n_actions <= self.batch):
                part = self._queue.popleft()
                self._queued -= part.n_actions
                n += part.n_actions
                taken.append(part)
        return taken

    def _run(self) -> None:
        while True:
            self._wake.wait()  # set by every offer() and by stop(): no wake-up is lost
            self._wake.clear()
            while parts := self._take():
                spans: list[ReadableSpan] = []
                try:
                    for part in parts:
                        spans.extend(_part_spans(part))
                except Exception as exc:  # noqa: BLE001 - a bug here must not stop exporting
                    self._failed(sum(p.n_actions for p in parts), exc)
                    continue
                for i in range(0, len(spans), self.batch):
                    self._export(spans[i : i + self.batch])
            if self._stopping and not self._queue:
                break
        self._shutdown_exporter()

    def _export(self, spans: list[ReadableSpan]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self._busy_since = time.monotonic()
        try:
            result = self.exporter.export(spans)
        except Exception as exc:  # noqa: BLE001 - an exporter's failure stays here
            self._failed(len(spans), exc)
        else:
            if result == SpanExportResult.SUCCESS:
                self.counters["exported"] += len(spans)
            else:
                self._failed(len(spans), None)
        finally:
            self._busy_since = None

    def _failed(self, n: int, exc: BaseException | None) -> None:
        self.counters["failed"] += n
        self.counters["errors"] += 1
        self.last_error = (f"{self.name}: export returned FAILURE" if exc is None
                           else f"{self.name}: {type(exc).__name__}: {exc}")
        _warn("actiontrace: span export failed (%s); %d spans lost", self.last_error, n)

    def _shutdown_exporter(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception as exc:  # noqa: BLE001 - counted, never raised
            self.counters["errors"] += 1
            self.last_error = f"{self.name}: shutdown: {type(exc).__name__}: {exc}"
            log.warning("actiontrace: span exporter %s raised in shutdown (%s)", self.name, exc)
        finally:
            self.closed = True

    # the tracer's side

    def stop(self) -> None:
        """Let the thread export what is queued, then shut the exporter down."""
        with self._lock:
            self._stopping = True
        if self._thread is None:
            self._start()
        self._wake.set()

    def join(self, timeout: float) -> bool:
        thread = self._thread
        if thread is not None:
            thread.join(max(timeout, 0.0))
        return self.closed

    def stats(self) -> dict[str, Any]:
        busy = self._busy_since
        busy_s = None if busy is None else round(time.monotonic() - busy, 3)
        return {
            "exporter": self.name, **self.counters, "queued": self._queued,
            "busy_s": busy_s, "stalled": busy_s is not None and busy_s >= STALLED_AFTER,
            "last_error": self.last_error,
        }


class SpanExport:
    """What ``configure(span_exporters=[...])`` adds to a tracer (docs/otel.md).

    ``wrap(write)`` returns the writer's storage call followed, once it returned (the
    parts are stored), by a hand-off of the same parts to each exporter's queue: a lock
    and a deque append per exporter on the writer thread, nothing more. Turning parts
    into spans and calling the exporters happens on one thread per exporter.

    Args:
        exporters: OpenTelemetry ``SpanExporter`` objects.
        max_queue: actions that may wait for one exporter; beyond it the oldest parts
            are dropped and counted (``span_export_dropped``).
        batch: spans per ``export()`` call.
    """

    def __init__(self, exporters: Iterable[SpanExporter], max_queue: int = 100_000,
                 batch: int = BATCH_SPANS) -> None:
        _Otel.get()  # fail now (ImportError) if the SDK is missing, not on the writer thread
        self.senders = [_Sender(e, max_queue, batch) for e in exporters]
        self.buffer: Any = None  # the tracer's Buffer: flushed first at exit
        _EXPORTS.add(self)

    def wrap(self, write: Callable[[Sequence[Part]], None]) -> Callable[[Sequence[Part]], None]:
        senders = self.senders

        def write_and_export(parts: Sequence[Part]) -> None:
            write(parts)
            for sender in senders:
                try:
                    sender.offer(parts)
                except Exception:  # never turn a stored batch into a failed write
                    log.exception("actiontrace: span export hand-off failed")

        return write_and_export

    def shutdown(self, timeout: float | None) -> bool:
        """Export what is queued and shut the exporters down, waiting at most ``timeout``.

        Returns whether every exporter finished in time. One that is still busy (a hung
        ``export()``) is left to its daemon thread and reported in ``stats()``.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for sender in self.senders:
            sender.stop()
        ok = True
        for sender in self.senders:
            left = 3600.0 if deadline is None else deadline - time.monotonic()
            if not sender.join(left):
                ok = False
                log.warning("actiontrace: span exporter %s did not finish within the shutdown "
                            "timeout; %d actions not exported", sender.name, sender._queued)
        return ok

    def stats(self) -> dict[str, Any]:
        """Totals over the exporters (``span_export_*``) and one dict per exporter."""
        per = [s.stats() for s in self.senders]
        return {
            "spans_exported": sum(s["exported"] for s in per),
            "span_export_failed": sum(s["failed"] for s in per),
            "span_export_dropped": sum(s["dropped"] for s in per),
            "span_export_queued": sum(s["queued"] for s in per),
            "span_export_errors": sum(s["errors"] for s in per),
            "span_exporters": per,
        }


_warn = _RateLimitedWarning(10.0)
_EXPORTS: weakref.WeakSet[SpanExport] = weakref.WeakSet()


def _export_all_at_exit() -> None:
    # Registered when this module is first imported, so after the writer's own exit hook,
    # and atexit runs hooks last-in first-out: this one runs first. It stores what is
    # still queued (the writer's hook then finds nothing to do) and then exports it, so a
    # program that just exits has its last flows exported too, within the same budget.
    timeout = float(os.environ.get("ACTIONTRACE_EXIT_TIMEOUT", "10"))
    deadline = time.monotonic() + timeout
    for export in list(_EXPORTS):
        buffer = export.buffer
        if buffer is not None and buffer.busy():
            buffer.stop(max(deadline - time.monotonic(), 0.1))
        export.shutdown(max(deadline - time.monotonic(), 0.1))


def _after_fork_in_child() -> None:
    # The parent's export threads do not exist in the child: start afresh, empty.
    for sender in list(_SENDERS):
        sender._init_state()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_export_all_at_exit)
