"""``ActionTracer``: flows, the writer and storage, and the queries (docs/reference.md: Flows and the tracer, Queries)."""

from __future__ import annotations

import contextlib
import datetime as dt
import inspect
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Unpack

from actiontrace import _state
from actiontrace._exceptions import ActionNotFound, ConfigurationError, TraceNotFound
from actiontrace._model import ActionFilter, ActionRecord, ActionTrace
from actiontrace._options import (
    TRACER_OPTIONS,
    ConfigureOptions,
    TracerOptions,
    check,
)
from actiontrace._state import current_recorder, settings
from actiontrace.pipeline._journal import open_journal
from actiontrace.pipeline._writer import Writer, WriterStats
from actiontrace.recording import _ids
from actiontrace.recording._capture import EMPTY, NULL, capture_value
from actiontrace.recording._context import (
    NO_FLOW,
    Recorder,
    current_frame,
    frame_var,
    parse_id,
)
from actiontrace.recording._ids import as_uuid, new_id, now_us
from actiontrace.recording._layout import (
    DURATION,
    ID,
    OUTPUTS,
    OWNER,
    PARENT,
    PART,
    START,
    STATUS,
    SYNC,
    TRIGGER,
    new_record,
)
from actiontrace.recording._record import FlowPart, Named, Part, to_trace
from actiontrace.recording._redact import DEFAULT_REDACT, Redactor
from actiontrace.storage._base import TraceStorage
from actiontrace.storage._memory import InMemoryTraceStorage

if TYPE_CHECKING:
    from actiontrace.contrib._span_export import SpanExport

__all__ = ["ActionTracer", "configure", "get_tracer"]

def _uuid(value: uuid.UUID | str, what: str = "id") -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else as_uuid(parse_id(value, what))


def _retention(storage: TraceStorage, keep: Any) -> Callable[[], tuple[int, bool]] | None:
    """The writer's retention step for ``configure(retention=keep)``, or None."""
    if keep is None:
        return None
    if isinstance(keep, dt.timedelta):
        keep = keep.total_seconds()
    if isinstance(keep, bool) or not isinstance(keep, int | float) or not keep > 0:
        raise ConfigurationError(
            f"retention must be a positive number of seconds or a timedelta, got {keep!r}")
    if type(storage).prune_flows is TraceStorage.prune_flows:
        raise ConfigurationError(f"{type(storage).__name__} does not support retention (prune)")
    keep_us = int(keep * 1_000_000)
    # A partitioned PostgreSQL store drops whole partitions once their period is past the
    # retention, instead of deleting rows behind the writers (docs/retention.md).
    coarse: dict[str, Any] = (
        {"exact": False} if "exact" in inspect.signature(storage.prune_flows).parameters else {})

    def step() -> tuple[int, bool]:
        done = storage.prune_flows(now_us() - keep_us, max_batches=1, **coarse)
        return done.flows, not done.done

    return step


class ActionTracer(Recorder):
    """Records flows into a storage through a bounded buffer and a background writer.

    Args:
        storage: where traces go (default: a new ``InMemoryTraceStorage``).
        module: the trace's ``module`` (default: the running program's name).
        max_reaction_depth: how deep declared reactions may cascade.
        max_queue: actions that may wait for the writer before flows are dropped.
        max_queue_bytes: the same bound in bytes (default 256 MiB): encoded inputs and
            outputs plus ~400 bytes per action. Past half of either bound, while the
            storage answers but slower than the application, batches go to the journal.
        batch_size: actions per write (one transaction).
        flush_interval: seconds the writer sleeps between batches when idle.
        full_wait: seconds a flow waits for room when the buffer is full.
        recent_traces: how many recently written flows to keep in memory (the LRU).
        query_flush_timeout: how long a query waits for the writer before it reads.
        sample_rate: the share of flows kept (0..1), decided per flow at its start from
            its token; a flow not sampled is still recorded, and kept (marked
            ``sampled=False``) if any of its actions ended in error.
        journal: where batches go while the storage is unavailable (a directory;
            default next to a SQLite file, else the per-user state directory; False: none).
        retention: how long flows are kept (seconds, or a ``timedelta``): the writer
            removes older ones in the background, whole (``TraceStorage.prune``), every
            minute and between batches; None (the default) keeps everything.
    """

    def __init__(
        self,
        storage: TraceStorage | None = None,
        *,
        module: str | None = None,
        **options: Unpack[TracerOptions],
    ) -> None:
        check(options, TracerOptions, "tracer")
        opts: dict[str, Any] = {**TRACER_OPTIONS, **options}
        self.storage: TraceStorage = storage if storage is not None else InMemoryTraceStorage()
        write = getattr(self.storage, "write_parts", None)
        if write is None:  # a duck-typed storage with only save_trace
            save = self.storage.save_trace

            def write(parts: Any) -> None:
                for part in parts:
                    save(to_trace(part))

        self._span_export = _span_export(opts["span_exporters"], opts["span_export_queue"])
        if self._span_export is not None:
            write = self._span_export.wrap(write)
        describe = getattr(self.storage, "describe_error", None)
        maintenance = _retention(self.storage, opts["retention"])
        self._writer = Writer(
            write,
            is_transient=getattr(self.storage, "is_transient", lambda exc: True),
            max_queue=opts["max_queue"],
            max_queue_bytes=opts["max_queue_bytes"],
            batch_size=opts["batch_size"],
            flush_interval=opts["flush_interval"],
            full_wait=opts["full_wait"],
            recent=opts["recent_traces"],
            journal=open_journal(self.storage, opts["journal"]),
            maintenance=maintenance,
            **({"describe_error": describe} if describe else {}),
        )
        if self._span_export is not None:
            self._span_export.writer = self._writer
        self.query_flush_timeout: float = opts["query_flush_timeout"]
        self._started: list[tuple[Any, Any, list[Any], FlowPart]] = []
        self._started_lock = threading.Lock()
        for name in ("max_queue", "max_queue_bytes"):
            if not isinstance(opts[name], int) or isinstance(opts[name], bool) or opts[name] < 1:
                raise ConfigurationError(f"{name} must be a positive int, got {opts[name]!r}")
        rate = opts["sample_rate"]
        if not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
            raise ConfigurationError(f"sample_rate must be a number from 0 to 1, got {rate!r}")
        super().__init__(self._writer.buffer, module, opts["max_reaction_depth"], float(rate))

    def __repr__(self) -> str:
        return f"<ActionTracer module={self.module!r} storage={type(self.storage).__name__}>"

    # -- the seed's imperative API -----------------------------------------------------

    def start_flow(self, root_action: str) -> uuid.UUID:
        """Start a flow in the current context and return its token; see ``end_flow``.

        Prefer ``with flow(...)``, which cannot forget to end the flow.
        """
        rec = self._open_root(root_action, b"{}")
        part = rec[PART]
        reset = frame_var.set((rec, None))
        with self._started_lock:
            self._started.append((reset, rec, rec, part))
        return as_uuid(part.token)

    def end_flow(self) -> None:
        """End the flow the last ``start_flow`` in this context started, and store it."""
        frame = current_frame()
        with self._started_lock:
            for i in range(len(self._started) - 1, -1, -1):
                reset, started_frame, rec, part = self._started[i]
                if started_frame is frame:
                    del self._started[i]
                    break
            else:
                raise RuntimeError("end_flow(): no flow started by start_flow() is current")
        try:
            frame_var.reset(reset)
        except ValueError:
            frame_var.set(NO_FLOW)
        rec[DURATION] = _ids.perf_ns() - rec[START]
        rec[STATUS], rec[OUTPUTS] = "ok", NULL
        self.close_part(part)

    def current_flow_token(self) -> uuid.UUID | None:
        """The token of the flow active in this context, or None."""
        frame = current_frame()
        return None if frame is None else as_uuid(frame[PART].token)

    def record_action(
        self, concept_uri: str, action: str, inputs: Any = None, outputs: Any = None
    ) -> uuid.UUID:
        """Record a completed action by hand in the current flow (or a flow of its own)."""
        frame = current_frame()
        t0 = _ids.perf_ns()
        ts = (t0 + _ids.EPOCH_OFFSET_NS) // 1000
        aid = new_id(ts)
        redactor = settings.redactor
        rec = new_record(
            Named(concept_uri, action), aid, None, t0, 0, "ok",
            EMPTY if inputs is None else capture_value(inputs, redactor, inputs=True),
            capture_value(outputs, redactor),
        )
        if frame is None:
            part = self.open_part(new_id(ts), aid, ts)
            part.records.append(rec)
            self.close_part(part)
            return as_uuid(aid)
        owner = frame[OWNER] or frame
        rec[PARENT] = owner[ID]
        frame[PART].records.append(rec)
        if frame[SYNC] is not None:
            frame[PART].edge_log.append((frame[TRIGGER], aid, frame[SYNC], t0))
        frame_var.set((frame, aid))  # completed here: the next synchronization's trigger
        return as_uuid(aid)

    def record_provenance(
        self, from_action: uuid.UUID | str, to_action: uuid.UUID | str, synchronization: str
    ) -> None:
        """Record that ``synchronization`` caused ``to_action`` from ``from_action``."""
        frame = current_frame()
        if frame is None:
            raise RuntimeError("record_provenance() needs an active flow")
        f, t = _uuid(from_action, "from_action"), _uuid(to_action, "to_action")
        frame[PART].edge_log.append((f.int, t.int, str(synchronization), _ids.perf_ns()))

    def update_action_output(self, action_id: uuid.UUID | str, outputs: Any) -> None:
        """Replace the outputs of an action still held by this process."""
        aid = _uuid(action_id, "action_id").int
        frame = current_frame()
        parts = ([frame[PART]] if frame is not None else []) + list(self._active.values())
        for part in parts:
            for rec in reversed(part.records):
                if part.full_id(rec) == aid:
                    rec[OUTPUTS] = capture_value(outputs, settings.redactor)
                    return
        raise ActionNotFound(f"action {action_id} is not in a running flow of this process")

    # -- durability ----------------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything recorded before the call is durable in storage.

        Returns False on timeout or if something could not be written; never raises.
        """
        return self._writer.flush(timeout)

    def shutdown(self, timeout: float | None = 10.0) -> bool:
        """Flush, stop the writer and close the storage. Returns whether all was written.

        With ``span_exporters``, it then waits for their pending exports; the whole call
        takes at most about ``timeout`` seconds, whatever an exporter does.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        ok = self._writer.stop(timeout)
        with contextlib.suppress(Exception):  # shutting down must not raise
            self.storage.close()
        if self._span_export is not None:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            ok = self._span_export.shutdown(left) and ok
        return ok

    def stats(self) -> WriterStats:
        """Counters: recorded, written, dropped, retries, queued, last_error...

        With ``span_exporters`` also ``spans_exported``, ``span_export_failed``,
        ``span_export_dropped``, ``span_export_queued``, ``span_export_errors`` and
        ``span_exporters`` (the same per exporter, with ``stalled``).
        """
        s = self._writer.stats()
        if self._span_export is not None:
            s.update(self._span_export.stats())
        return s

    # -- queries (they flush first) ------------------------------------------------------

    def _sync(self) -> None:
        self._writer.flush(self.query_flush_timeout)

    def get_trace(self, flow_token: uuid.UUID | str) -> ActionTrace:
        """The flow's trace: stored parts merged with what is still running here."""
        token = _uuid(flow_token, "flow_token")
        self._sync()
        live: list[Part] = list(self.active_parts(token.int))
        try:
            stored: ActionTrace | None = self.storage.get_trace(token)
        except TraceNotFound:
            stored = None
        except Exception:  # noqa: BLE001 - the storage is down: fall back to what this process holds
            stored = None
            live = [*self._writer.recent.get(token.int, []), *live]
        if not live:
            if stored is None:
                raise TraceNotFound(f"no trace for flow {token}")
            return stored
        return _merge(stored, [to_trace(p) for p in live])

    def find_actions(self, filter: ActionFilter | None = None, **fields: Any) -> list[ActionRecord]:
        """Stored actions matching the filter (or the same fields as keywords)."""
        if filter is None:
            filter = ActionFilter(**fields)
        self._sync()
        return self.storage.find_actions(filter)

    def find_producing_sync(self, action_id: uuid.UUID | str) -> str | None:
        """The synchronization that produced the action, or None."""
        self._sync()
        return self.storage.find_producing_sync(_uuid(action_id, "action_id"))

    def get_causal_chain(self, action_id: uuid.UUID | str) -> list[ActionRecord]:
        """Root first, the action last; raises ``ActionNotFound``."""
        self._sync()
        return self.storage.get_causal_chain(_uuid(action_id, "action_id"))

    def find_by_sync(self, sync_name: str) -> list[ActionRecord]:
        """The actions a synchronization produced, oldest first."""
        self._sync()
        return self.storage.find_by_sync(sync_name)


def _span_export(exporters: Any, max_queue: Any) -> SpanExport | None:
    """The span export of ``configure(span_exporters=...)``, or None without exporters."""
    if not exporters:
        return None
    exporters = list(exporters)
    for exp in exporters:
        if not callable(getattr(exp, "export", None)) or not callable(getattr(exp, "shutdown", None)):
            raise ConfigurationError(
                f"span_exporters takes OpenTelemetry SpanExporter objects, got {exp!r}")
    if not isinstance(max_queue, int) or max_queue < 1:
        raise ConfigurationError(f"span_export_queue must be a positive int, got {max_queue!r}")
    try:
        from actiontrace.contrib._span_export import SpanExport

        return SpanExport(exporters, max_queue=max_queue)
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from exc


def _merge(stored: ActionTrace | None, parts: list[ActionTrace]) -> ActionTrace:
    base = stored or parts[0]
    actions = dict(base.actions)
    edges = list(base.provenance_edges)
    seen = {(e.from_action, e.to_action, e.synchronization) for e in edges}
    root = stored.root_action_id if stored is not None and stored.root_action_id in stored.actions else None
    created = base.created_at
    sampled = all(t.sampled for t in ([stored] if stored is not None else []) + parts)
    for p in parts:
        actions.update(p.actions)
        for e in p.provenance_edges:
            if (e.from_action, e.to_action, e.synchronization) not in seen:
                seen.add((e.from_action, e.to_action, e.synchronization))
                edges.append(e)
        created = min(created, p.created_at)
        if root is None and p.root_action_id in p.actions and p.actions[p.root_action_id].parent_id is None:
            root = p.root_action_id
    ordered = {a.id: a for a in sorted(actions.values(), key=lambda a: (a.timestamp, a.id.int))}
    logs = {e.id: e for t in ([stored] if stored is not None else []) + parts for e in t.logs}
    return ActionTrace(
        flow_token=base.flow_token,
        root_action_id=root or base.root_action_id,
        actions=ordered,
        provenance_edges=edges,
        created_at=created,
        module=base.module,
        logs=sorted(logs.values(), key=lambda e: (e.timestamp, e.id.int)),
        sampled=sampled,
    )


# -- the global tracer -----------------------------------------------------------------------

def get_tracer() -> ActionTracer:
    """The global tracer (in memory until ``configure`` says otherwise)."""
    rec = current_recorder()
    assert isinstance(rec, ActionTracer)
    return rec


def _storage_for(url: str) -> TraceStorage:
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

    return SqlAlchemyTraceStorage(url)


def configure(
    url: str | None = None,
    storage: TraceStorage | None = None,
    module: str | None = None,
    **options: Unpack[ConfigureOptions],
) -> ActionTracer:
    """Replace the global tracer (flushing the old one) and return the new one.

    Args:
        url: a SQLAlchemy URL (``sqlite:///actiontrace.db``,
            ``postgresql+psycopg://...``) for a ``SqlAlchemyTraceStorage``.
        storage: a storage object instead of ``url``.
        module: the ``module`` recorded on traces.
        **options: tracer options (see ``ActionTracer``), capture options:
            ``redact`` (more secret names, for every action), ``max_value_bytes``
            (largest stored value before truncation), and ``enabled`` (default True;
            False makes every decorated call go straight through, recording nothing).

    Raises:
        ConfigurationError: a malformed URL, an unknown dialect or option, or a SQLite
            file that cannot be created. An unreachable database server is not an
            error: writes wait in the buffer and are retried.
    """
    if url is not None and storage is not None:
        raise ConfigurationError("configure() takes url or storage, not both")
    check(options, ConfigureOptions, "tracer")
    rest: dict[str, Any] = dict(options)
    enabled = rest.pop("enabled", True)
    capture = {k: rest.pop(k) for k in ("redact", "max_value_bytes") if k in rest}
    with _state.config_lock:
        new_storage = _storage_for(url) if url is not None else storage
        tracer = ActionTracer(new_storage, module=module, **rest)
        if "max_value_bytes" in capture:
            limit = capture["max_value_bytes"]
            if not isinstance(limit, int) or limit < 64:
                raise ConfigurationError("max_value_bytes must be an int >= 64")
            settings.max_value_bytes = limit
        if "redact" in capture:
            extra = capture["redact"]
            names = (extra,) if isinstance(extra, str) else tuple(extra)
            settings.redactor = Redactor((*DEFAULT_REDACT, *names))
        old = _state.install(tracer)
        _state.set_enabled(enabled, notify=False)
        _state.settings_changed()  # the decorators recompile what depends on settings
    if isinstance(old, ActionTracer):
        old.shutdown()
    return tracer


def _leave_inherited_flow() -> None:
    # A forked multiprocessing child (a Pool worker, say) starts in the context of the
    # thread that forked, maybe inside a flow: its actions would go into the parent's copy
    # of that flow's part, which no one ever ends here, and were lost (issue 10). Start it
    # outside any flow instead, as spawned and forkserver children start: its actions make
    # flows of their own (or join one through continue_flow), and are stored.
    frame_var.set(NO_FLOW)


_state.at_fork("context", in_multiprocessing_child=_leave_inherited_flow)
_state.set_factory(ActionTracer)

