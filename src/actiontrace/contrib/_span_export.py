"""``configure(span_exporters=[...])``: every stored flow part also goes to exporters.

``SpanExport`` wraps the writer's storage call; each OpenTelemetry ``SpanExporter`` gets a
bounded queue and a thread of its own, so a slow or hanging backend holds up only itself
(docs/otel.md). Spans are made by ``otel._part_spans``, as ``to_spans`` makes them.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from actiontrace.contrib.otel import _Otel, _part_spans
from actiontrace.pipeline._buffer import RateLimitedWarning

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

    from actiontrace.recording._record import Part

__all__ = ["BATCH_SPANS", "STALLED_AFTER", "SpanExport"]

log = logging.getLogger("actiontrace")


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
        self.writer: Any = None  # the tracer's Writer: flushed first at exit
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


_warn = RateLimitedWarning(10.0)
_EXPORTS: weakref.WeakSet[SpanExport] = weakref.WeakSet()


def _export_all_at_exit() -> None:
    # Registered when this module is first imported, so after the writer's own exit hook,
    # and atexit runs hooks last-in first-out: this one runs first. It stores what is
    # still queued (the writer's hook then finds nothing to do) and then exports it, so a
    # program that just exits has its last flows exported too, within the same budget.
    timeout = float(os.environ.get("ACTIONTRACE_EXIT_TIMEOUT", "10"))
    deadline = time.monotonic() + timeout
    for export in list(_EXPORTS):
        writer = export.writer
        if writer is not None and writer.busy():
            writer.stop(max(deadline - time.monotonic(), 0.1))
        export.shutdown(max(deadline - time.monotonic(), 0.1))


def _after_fork_in_child() -> None:
    # The parent's export threads do not exist in the child: start afresh, empty.
    for sender in list(_SENDERS):
        sender._init_state()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_export_all_at_exit)
