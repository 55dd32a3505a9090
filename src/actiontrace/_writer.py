"""The bounded buffer between the application and storage, and its background writer.

An ended flow part is appended to a deque (the only thing the application thread does,
~40 ns); a daemon thread takes parts off in batches and hands each batch to the storage
in one call (one transaction for SQL storages). Nothing here ever raises into the
application.

Policies (docs/deployment.md says the same):

* **Full buffer**: at most ``max_queue`` actions wait. A flow that ends when the buffer
  is full wakes the writer and waits up to ``full_wait`` seconds (default 0.05) for
  room; if there is still none, the part is dropped and counted in ``dropped`` and a
  warning is logged (at most one every 10 s).
* **Failing storage**: a batch that fails is retried with exponential backoff (0.05 s
  doubling up to 5 s) for as long as the error is transient (the database is down or
  locked); the backlog meanwhile grows up to ``max_queue``. A batch that keeps failing
  for a reason that is not transient is written part by part, and the parts that
  still fail are dropped and counted.
* **Exit**: an ``atexit`` hook flushes every live tracer (up to ``exit_timeout``
  seconds, default 10), so a process that records and simply exits loses nothing.
* **fork**: the child starts with an empty buffer and no writer thread (one is
  started on its first flow); it never writes what its parent had queued.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from actiontrace._record import FlowPart

__all__ = ["Buffer", "WriterStats"]

log = logging.getLogger("actiontrace")


class _Flush:
    __slots__ = ("dropped_before", "event", "ok")

    def __init__(self, dropped_before: int) -> None:
        self.event = threading.Event()
        self.dropped_before = dropped_before
        self.ok = True


class WriterStats(dict[str, Any]):
    """Counters of a tracer's buffer and writer (a plain dict snapshot)."""


class _RateLimitedWarning:
    def __init__(self, every: float) -> None:
        self.every = every
        self.last = 0.0
        self.suppressed = 0

    def __call__(self, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            if self.suppressed:
                msg += f" ({self.suppressed} similar warnings suppressed)"
            log.warning(msg, *args)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


_BUFFERS: weakref.WeakSet[Buffer] = weakref.WeakSet()


class Buffer:
    """Bounded queue of ended flow parts plus the thread that writes them."""

    def __init__(
        self,
        write: Callable[[Sequence[FlowPart]], None],
        *,
        is_transient: Callable[[BaseException], bool] = lambda exc: True,
        max_queue: int = 1_000_000,
        batch_size: int = 5_000,
        flush_interval: float = 0.2,
        full_wait: float = 0.05,
        recent: int = 1_000,
        describe_error: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}",
    ) -> None:
        self._write = write
        self._is_transient = is_transient
        self._describe = describe_error
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.full_wait = full_wait
        self._recent_size = recent
        self._warn = _RateLimitedWarning(10.0)
        self._init_state()
        _BUFFERS.add(self)

    def _init_state(self) -> None:
        self._queue: collections.deque[FlowPart | _Flush] = collections.deque()
        self._wake = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._queued_actions = 0  # waiting in the queue; guarded by _lock
        self.recent: OrderedDict[int, list[FlowPart]] = OrderedDict()
        self.counters = {
            "recorded": 0, "written": 0, "dropped": 0, "retries": 0, "failed_batches": 0,
        }
        self.last_error: str | None = None

    # -- application side ---------------------------------------------------------------

    def put(self, part: FlowPart) -> None:
        """Queue an ended part for writing. Never raises, never blocks for long."""
        n = len(part.records) or 1
        with self._lock:
            self.counters["recorded"] += len(part.records)
            if self._queued_actions + n > self.max_queue and not self._make_room(n):
                self.counters["dropped"] += len(part.records)
                self._warn("actiontrace: buffer full (%d actions waiting); dropping a flow",
                           self._queued_actions)
                return
            self._queued_actions += n
            self._queue.append(part)
        if self._thread is None:
            self._start()
        elif len(self._queue) >= 256:
            self._wake.set()

    def _make_room(self, n: int) -> bool:
        # Called with self._lock held: release it while waiting for the writer.
        self._wake.set()
        deadline = time.monotonic() + self.full_wait
        self._lock.release()
        try:
            with self._room:
                while time.monotonic() < deadline:
                    if self._queued_actions + n <= self.max_queue:
                        break
                    self._room.wait(deadline - time.monotonic())
        finally:
            self._lock.acquire()
        return self._queued_actions + n <= self.max_queue

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is written.

        Returns True when it all is; False on timeout, or when something queued since
        the previous flush was dropped or could not be written. Never raises.
        """
        try:
            marker = _Flush(self.counters["dropped"])
            with self._lock:
                self._queue.append(marker)
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self._wake.set()
            if threading.current_thread() is self._thread:
                return False  # flush from inside a storage call: cannot wait for ourselves
            return marker.event.wait(timeout) and marker.ok
        except BaseException:  # noqa: BLE001 - flush never raises
            return False

    def stats(self) -> WriterStats:
        """Snapshot of the counters, the backlog and the last write error."""
        s = WriterStats(self.counters)
        s["queued"] = self._queued_actions
        s["last_error"] = self.last_error
        s["writer_alive"] = self._thread is not None and self._thread.is_alive()
        return s

    def stop(self, timeout: float | None = None) -> bool:
        """Flush, then stop the writer thread. Returns whether all was written."""
        ok = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0 if timeout is None else min(timeout, 1.0))
            if not thread.is_alive():
                self._thread = None  # a later put() or flush() starts a new writer
        return ok

    # -- writer side ----------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name="actiontrace-writer", daemon=True
            )
        self._thread.start()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
            except BaseException as exc:
                self.last_error = self._describe(exc)
                log.exception("actiontrace: writer error")
            if self._stopping and not self._queue:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[FlowPart] = []
            size = 0
            marker: _Flush | None = None
            with self._lock:
                while queue and size < self.batch_size:
                    item = queue.popleft()
                    if isinstance(item, _Flush):
                        marker = item
                        break
                    batch.append(item)
                    size += len(item.records) or 1
            lost = self._write_batch(batch) if batch else 0
            with self._lock:
                self._queued_actions -= size
            with self._room:
                self._room.notify_all()
            if lost and marker is not None:
                marker.ok = False
            if marker is not None:
                if self.counters["dropped"] > marker.dropped_before:
                    marker.ok = False
                marker.event.set()

    def _write_batch(self, batch: list[FlowPart]) -> int:
        """Write a batch, retrying; returns how many actions were lost."""
        delay = 0.05
        attempts = 0
        while True:
            try:
                self._write(batch)
            except BaseException as exc:  # noqa: BLE001
                attempts += 1
                self.counters["retries"] += 1
                self.last_error = self._describe(exc)
                self._warn("actiontrace: writing %d flows failed (%s); retrying",
                           len(batch), self.last_error)
                if self._stopping and attempts >= 3:
                    return self._give_up(batch)
                if not self._is_transient(exc) and attempts >= 3:
                    return self._write_one_by_one(batch)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._written(batch)
            return 0

    def _write_one_by_one(self, batch: list[FlowPart]) -> int:
        lost = 0
        for part in batch:
            try:
                self._write([part])
            except BaseException as exc:  # noqa: BLE001
                self.last_error = self._describe(exc)
                lost += self._give_up([part])
            else:
                self._written([part])
        return lost

    def _give_up(self, parts: list[FlowPart]) -> int:
        n = sum(len(p.records) for p in parts)
        self.counters["dropped"] += n
        self.counters["failed_batches"] += 1
        log.error("actiontrace: could not write %d actions (%s); dropped", n, self.last_error)
        return n

    def _written(self, batch: list[FlowPart]) -> None:
        self.counters["written"] += sum(len(p.records) for p in batch)
        recent = self.recent
        for part in batch:
            recent.setdefault(part.token, []).append(part)
            recent.move_to_end(part.token)
        while len(recent) > self._recent_size:
            recent.popitem(last=False)


def _after_fork_in_child() -> None:
    for buf in list(_BUFFERS):
        buf._init_state()


def _flush_all_at_exit() -> None:
    timeout = float(os.environ.get("ACTIONTRACE_EXIT_TIMEOUT", "10"))
    deadline = time.monotonic() + timeout
    for buf in list(_BUFFERS):
        if buf._queue:
            buf.stop(max(deadline - time.monotonic(), 0.1))


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_flush_all_at_exit)
