"""The bounded buffer between the application and its background writer.

An ended flow part is appended to a deque (the only thing the application thread does
at a flow's end: a lock, two counters, an append); the writer (``_writer.Writer``) takes
parts off in batches. At most ``max_queue`` actions and ``max_queue_bytes`` bytes (default
256 MiB: inputs and outputs as encoded, plus ``_record.RECORD_BYTES`` per action) wait in
memory. A flow that ends when the buffer is full wakes the writer and waits up to
``full_wait`` seconds (default 0.05) for room; if there is still none, the part is
dropped and counted in ``dropped`` and a warning is logged (at most one every 10 s).
Nothing here raises into the application (docs/reliability.md).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from actiontrace._options import MAX_QUEUE_BYTES
from actiontrace.recording._record import FlowPart

__all__ = ["Buffer", "Flush", "RateLimitedWarning"]

log = logging.getLogger("actiontrace")


class Flush:
    """A marker in the queue: set once everything queued before it is stored."""

    __slots__ = ("dropped_before", "event", "ok")

    def __init__(self, dropped_before: int) -> None:
        self.event = threading.Event()
        self.dropped_before = dropped_before
        self.ok = True


class RateLimitedWarning:
    """Log ``msg`` at most once every ``every`` seconds, counting what it suppressed."""

    def __init__(self, every: float, level: int = logging.WARNING) -> None:
        self.every = every
        self.level = level
        self.last = -every
        self.suppressed = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            if self.suppressed:
                msg += f" ({self.suppressed} similar warnings suppressed)"
            log.log(self.level, msg, *args)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


class Buffer:
    """Bounded queue of ended flow parts, and the counters ``stats()`` shows.

    Args:
        start_writer: starts the writer thread (called by the first ``put`` and by a
            ``flush`` that finds no writer running).
        max_queue: actions that may wait in memory before ``put`` waits, then drops.
        max_queue_bytes: the same bound in bytes (see ``FlowPart.held_bytes``).
        full_wait: seconds ``put`` waits for room when the queue is full.
    """

    def __init__(
        self,
        start_writer: Callable[[], None],
        *,
        max_queue: int = 1_000_000,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        full_wait: float = 0.05,
    ) -> None:
        self._start_writer = start_writer
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.spill_at_bytes = max_queue_bytes // 2
        self.full_wait = full_wait
        self._warn = RateLimitedWarning(10.0)
        self.reset()

    def reset(self) -> None:
        """Start empty (a new buffer, or the child after ``fork``)."""
        self.queue: collections.deque[FlowPart | Flush] = collections.deque()
        self.wake = threading.Event()  # the writer sleeps on it
        self._room = threading.Condition(threading.Lock())
        self.lock = threading.Lock()
        self.started = False  # whether a writer thread was started for this buffer
        self.queued_actions = 0  # waiting in the queue or held by the writer; under lock
        self.queued_bytes = 0  # the same in bytes (FlowPart.held_bytes); under lock
        self.counters = {
            "recorded": 0, "written": 0, "dropped": 0, "retries": 0, "failed_batches": 0,
            "unsampled": 0,  # actions of flows configure(sample_rate=...) left out
            "journaled": 0, "journaled_backlog": 0, "replayed": 0, "journal_errors": 0,
            "torn_frames": 0,
            "rejected_trace_headers": 0,  # malformed or hostile propagation headers (extract)
            "pruned": 0,  # flows removed by configure(retention=...)
        }

    # -- the application's side (the Recorder's sink) -----------------------------------

    def skip(self, part: FlowPart) -> None:
        """Count an ended part that sampling leaves out (it is not written)."""
        with self.lock:
            self.counters["recorded"] += len(part.records)
            self.counters["unsampled"] += len(part.records)

    def count(self, name: str) -> None:
        """Add one to the counter ``name`` (shown by ``stats()``)."""
        with self.lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def put(self, part: FlowPart) -> None:
        """Queue an ended part for writing. Never raises, never blocks for long."""
        n = len(part.records) or 1
        part.nbytes = size = part.held_bytes()
        with self.lock:
            self.counters["recorded"] += len(part.records)
            # The byte test inline: calling _over_bytes on every flow cost a method call.
            if (self.queued_actions + n > self.max_queue
                    or (self.queued_bytes + size > self.max_queue_bytes and self.queued_bytes)) \
                    and not self._make_room(n, size):
                self.counters["dropped"] += len(part.records)
                self._warn("actiontrace: buffer full (%d actions, %d bytes waiting); "
                           "dropping a flow", self.queued_actions, self.queued_bytes)
                return
            self.queued_actions += n
            self.queued_bytes += size
            self.queue.append(part)
        if not self.started:
            self._start_writer()
        elif (len(self.queue) >= 256 or self.queued_bytes > self.spill_at_bytes) \
                and not self.wake.is_set():
            # Event.set() takes a lock and notifies even when already set: with a busy
            # writer that was ~1 µs on every flow's end.
            self.wake.set()

    def _over_bytes(self, size: int) -> bool:
        # A part bigger than the whole bound still goes into an empty queue: it is in
        # memory already, and refusing it would lose every such flow.
        return self.queued_bytes + size > self.max_queue_bytes and self.queued_bytes > 0

    def _make_room(self, n: int, size: int) -> bool:
        # Called with self.lock held: release it while waiting for the writer.
        self.wake.set()
        deadline = time.monotonic() + self.full_wait
        self.lock.release()
        try:
            with self._room:
                while time.monotonic() < deadline:
                    if self.queued_actions + n <= self.max_queue and not self._over_bytes(size):
                        break
                    self._room.wait(deadline - time.monotonic())
        finally:
            self.lock.acquire()
        return self.queued_actions + n <= self.max_queue and not self._over_bytes(size)

    def mark(self) -> Flush:
        """Queue a flush marker behind everything queued so far."""
        marker = Flush(self.counters["dropped"])
        with self.lock:
            self.queue.append(marker)
        return marker

    def drop(self, n: int) -> None:
        """Count ``n`` actions the writer could not keep (under the lock ``put`` takes)."""
        # put() bumps "dropped" on the application's threads under the same lock: without
        # it, this read-modify-write could lose one of the two increments.
        with self.lock:
            self.counters["dropped"] += n

    # -- the writer's side --------------------------------------------------------------

    def take(self, batch_size: int) -> tuple[list[FlowPart], Flush | None, int, int]:
        """Up to ``batch_size`` actions of parts, stopping at a flush marker.

        Returns the parts, the marker (or None), and their actions and bytes, which stay
        counted as queued until ``release``.
        """
        batch: list[FlowPart] = []
        size = nbytes = 0
        marker: Flush | None = None
        queue = self.queue
        with self.lock:
            while queue and size < batch_size:
                item = queue.popleft()
                if isinstance(item, Flush):
                    marker = item
                    break
                batch.append(item)
                size += len(item.records) or 1
                nbytes += item.nbytes
        return batch, marker, size, nbytes

    def release(self, size: int, nbytes: int) -> None:
        """Stop counting ``size`` actions and ``nbytes`` bytes the writer took (room)."""
        if size:
            with self.lock:
                self.queued_actions -= size
                self.queued_bytes -= nbytes
            with self._room:
                self._room.notify_all()

    def hold_again(self, size: int, nbytes: int) -> None:
        """Count released actions as queued again (the writer still has them)."""
        with self.lock:
            self.queued_actions += size
            self.queued_bytes += nbytes
