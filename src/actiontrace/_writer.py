"""The bounded buffer between the application and storage, and its background writer.

An ended flow part is appended to a deque (the only thing the application thread does,
~40 ns); a daemon thread takes parts off in batches and hands each batch to the storage
in one call (one transaction for SQL storages). Nothing here ever raises into the
application, and nothing here does I/O on the application's thread.

Policies (docs/reliability.md and docs/deployment.md say the same):

* **Storage unavailable** (a *transient* error: the database is down, locked, full,
  read-only): the writer retries with exponential backoff (0.05 s doubling up to 5 s).
  Meanwhile, once the outage has lasted ``spill_after`` seconds (default 1) or the
  in-memory backlog exceeds ``spill_at`` actions (default ``max_queue // 2``), the
  batches it cannot write go to the overflow journal (``actiontrace._journal``: a local
  append-only file, one fsync'd frame per batch), and the in-memory backlog stays small.
  When the storage answers again the writer replays the journal (its own file first,
  then any left behind by processes that died), interleaved with new batches.
* **Storage slower than the application** (it answers, but the backlog grows): once more
  than ``spill_at`` actions or ``max_queue_bytes // 2`` bytes wait, the writer sends
  batches to the journal as in an outage (``journaled_backlog`` counts them) until the
  backlog is back under both, and replays the journal once it is.
* **Full buffer**: at most ``max_queue`` actions and ``max_queue_bytes`` bytes (default
  256 MiB: inputs and outputs as encoded, plus ``_record.RECORD_BYTES`` per action) wait in
  memory. A flow that ends when the buffer is full (the writer cannot even keep up by
  spilling, or there is no journal) wakes the writer and waits up to ``full_wait``
  seconds (default 0.05) for room; if there is still none, the part is dropped and
  counted in ``dropped`` and a warning is logged (at most one every 10 s). A batch the
  journal cannot take either (disk full) is dropped and counted the same way.
* **Errors that retrying cannot fix** (bad data): after three attempts the batch is
  written part by part, and the parts that still fail are dropped and counted.
* **Exit**: an ``atexit`` hook flushes every live tracer (up to ``exit_timeout``
  seconds, default 10, ``ACTIONTRACE_EXIT_TIMEOUT``). When the storage is unavailable at
  exit, the backlog goes to the journal at once instead of waiting, and the next process
  to use the same journal directory stores it.
* **fork**: the child starts with an empty buffer and no writer thread (one is started
  on its first flow); it never writes what its parent had queued or journaled.
* **Child processes** (multiprocessing, concurrent.futures): a forked child never runs
  ``atexit``, so the exit flush is also a multiprocessing finalizer there (see the end of
  this module and docs/deployment.md#worker-processes). SIGTERM (``Pool.terminate()``)
  runs no finalizer: what a terminated worker had not written is lost.

``flush()`` is True only when everything recorded before it is in the *storage* (frames
this process journaled included, once replayed).
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from actiontrace._journal import Journal, ReplayCursor, actions_in
from actiontrace._record import FlowPart

__all__ = ["CHILD_HOOKS", "Buffer", "WriterStats"]

log = logging.getLogger("actiontrace")

MAX_QUEUE_BYTES = 256 * 1024 * 1024

RESCAN_EVERY = 60.0  # seconds between looks for journals that other processes left behind
LOCKED_RESCAN = 2.0  # ... when one was locked by another process at the last look


class _Flush:
    __slots__ = ("dropped_before", "event", "ok")

    def __init__(self, dropped_before: int) -> None:
        self.event = threading.Event()
        self.dropped_before = dropped_before
        self.ok = True


class WriterStats(dict[str, Any]):
    """Counters of a tracer's buffer and writer (a plain dict snapshot)."""


class _RateLimitedWarning:
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


_BUFFERS: weakref.WeakSet[Buffer] = weakref.WeakSet()


class Buffer:
    """Bounded queue of ended flow parts plus the thread that writes them.

    Args:
        write: stores a batch of parts (one transaction); raises on failure.
        is_transient: whether a write error may go away by itself (retry, spill).
        max_queue: actions that may wait in memory before ``put`` waits, then drops.
        max_queue_bytes: the same bound in bytes (see ``FlowPart.held_bytes``).
        batch_size: actions per write.
        flush_interval: seconds the writer sleeps when idle.
        full_wait: seconds ``put`` waits for room when the queue is full.
        recent: how many recently written flows to keep (the tracer's LRU).
        describe_error: one line for an error (passwords masked).
        journal: the overflow journal, or None to keep everything in memory.
        spill_at: backlog (actions) beyond which an unavailable storage's batches go
            to the journal at once (default ``max_queue // 2``).
        spill_after: seconds of outage after which every batch goes to the journal.
        maintenance: work the writer does between batches (retention: one prune batch
            per call); returns the flows it removed and whether more is waiting. Runs every ``maintenance_every``
            seconds, and again at once, after any queued writes, while more is waiting.
    """

    def __init__(
        self,
        write: Callable[[Sequence[FlowPart]], None],
        *,
        is_transient: Callable[[BaseException], bool] = lambda exc: True,
        max_queue: int = 1_000_000,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
        batch_size: int = 5_000,
        flush_interval: float = 0.2,
        full_wait: float = 0.05,
        recent: int = 1_000,
        describe_error: Callable[[BaseException], str] = lambda exc: f"{type(exc).__name__}: {exc}",
        journal: Journal | None = None,
        spill_at: int | None = None,
        spill_after: float = 1.0,
        maintenance: Callable[[], tuple[int, bool]] | None = None,
        maintenance_every: float = 60.0,
    ) -> None:
        self._write = write
        self._is_transient = is_transient
        self._describe = describe_error
        self.max_queue = max_queue
        self.max_queue_bytes = max_queue_bytes
        self.spill_at_bytes = max_queue_bytes // 2
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.full_wait = full_wait
        self.journal = journal
        self.spill_at = max_queue // 2 if spill_at is None else spill_at
        self.spill_after = spill_after
        self._maintenance = maintenance
        self.maintenance_every = maintenance_every
        self._recent_size = recent
        self._warn = _RateLimitedWarning(10.0)
        self._warn_journal = _RateLimitedWarning(10.0)
        self._warn_drop = _RateLimitedWarning(10.0, logging.ERROR)
        self._init_state()
        _BUFFERS.add(self)

    def _init_state(self) -> None:
        self._queue: collections.deque[FlowPart | _Flush] = collections.deque()
        self._wake = threading.Event()
        self._room = threading.Condition(threading.Lock())
        self._lock = threading.Lock()
        # Held around every storage call: a fork waits (briefly) for the write in flight,
        # so the child never inherits a half-done transaction (SQLite's per-process lock
        # table would then refuse the child every write to that file).
        self._io = threading.Lock()
        self._io_held_for_fork = False
        self._thread: threading.Thread | None = None
        self._stopping = False  # the writer exits once the queue is empty
        self._closing = False  # stop() is running: spill at once rather than wait
        self._queued_actions = 0  # waiting in the queue or held by the writer; under _lock
        self._queued_bytes = 0  # the same in bytes (FlowPart.held_bytes); under _lock
        self._held = 0  # actions of the batch the writer holds (counted in _queued_actions)
        self._held_bytes = 0  # ... and its bytes
        self.recent: OrderedDict[int, list[FlowPart]] = OrderedDict()
        self.counters = {
            "recorded": 0, "written": 0, "dropped": 0, "retries": 0, "failed_batches": 0,
            "unsampled": 0,  # actions of flows configure(sample_rate=...) left out
            "journaled": 0, "journaled_backlog": 0, "replayed": 0, "journal_errors": 0,
            "torn_frames": 0,
            "rejected_trace_headers": 0,  # malformed or hostile propagation headers (extract)
            "pruned": 0,  # flows removed by configure(retention=...)
        }
        self._maintain_at = 0.0  # monotonic time of the next maintenance step
        self.last_error: str | None = None
        # Storage health, shared by live batches and replays (writer thread only).
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._delay = 0.05
        # Journal replay state (writer thread only).
        self._own_files: dict[Path, int] = {}  # files this buffer spilled -> actions in them
        self._own_pending = 0  # actions journaled by this buffer and not yet replayed
        self._cursor: ReplayCursor | None = None
        self._orphans: list[Path] = []
        self._next_scan = 0.0  # 0: scan for other processes' journals at the next chance
        self._waiting: list[_Flush] = []  # flushes that wait for our journal to be replayed

    # -- application side ---------------------------------------------------------------

    def skip(self, part: FlowPart) -> None:
        """Count an ended part that sampling leaves out (it is not written)."""
        with self._lock:
            self.counters["recorded"] += len(part.records)
            self.counters["unsampled"] += len(part.records)

    def put(self, part: FlowPart) -> None:
        """Queue an ended part for writing. Never raises, never blocks for long."""
        n = len(part.records) or 1
        part.nbytes = size = part.held_bytes()
        with self._lock:
            self.counters["recorded"] += len(part.records)
            # The byte test inline: calling _over_bytes on every flow cost a method call.
            if (self._queued_actions + n > self.max_queue
                    or (self._queued_bytes + size > self.max_queue_bytes and self._queued_bytes)) \
                    and not self._make_room(n, size):
                self.counters["dropped"] += len(part.records)
                self._warn("actiontrace: buffer full (%d actions, %d bytes waiting); "
                           "dropping a flow", self._queued_actions, self._queued_bytes)
                return
            self._queued_actions += n
            self._queued_bytes += size
            self._queue.append(part)
        if self._thread is None:
            self._start()
        elif (len(self._queue) >= 256 or self._queued_bytes > self.spill_at_bytes) \
                and not self._wake.is_set():
            # Event.set() takes a lock and notifies even when already set: with a busy
            # writer that was ~1 µs on every flow's end.
            self._wake.set()

    def _over_bytes(self, size: int) -> bool:
        # A part bigger than the whole bound still goes into an empty queue: it is in
        # memory already, and refusing it would lose every such flow.
        return self._queued_bytes + size > self.max_queue_bytes and self._queued_bytes > 0

    def _make_room(self, n: int, size: int) -> bool:
        # Called with self._lock held: release it while waiting for the writer.
        self._wake.set()
        deadline = time.monotonic() + self.full_wait
        self._lock.release()
        try:
            with self._room:
                while time.monotonic() < deadline:
                    if self._queued_actions + n <= self.max_queue and not self._over_bytes(size):
                        break
                    self._room.wait(deadline - time.monotonic())
        finally:
            self._lock.acquire()
        return self._queued_actions + n <= self.max_queue and not self._over_bytes(size)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is in storage.

        Returns True when it all is; False on timeout, or when something queued since
        the previous flush was dropped, could not be written, or (while closing) went
        to the journal only. Never raises.
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
        """Snapshot of the counters, the backlog, the journal and the last write error."""
        s = WriterStats(self.counters)
        s["queued"] = self._queued_actions
        s["queued_bytes"] = self._queued_bytes
        s["journal_pending"] = self._own_pending
        s["storage_down"] = self._down_since is not None
        s["last_error"] = self.last_error
        s["writer_alive"] = self._thread is not None and self._thread.is_alive()
        s["journal_dir"] = None if self.journal is None else str(self.journal.directory)
        return s

    def stop(self, timeout: float | None = None) -> bool:
        """Flush, then stop the writer thread. Returns whether all was written.

        If the storage is unavailable, what is queued goes to the journal (when there is
        one) instead of waiting for it; the result is then False.
        """
        self._closing = True
        self._wake.set()
        ok = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0 if timeout is None else min(timeout, 1.0))
            if not thread.is_alive():
                self._thread = None  # a later put() or flush() starts a new writer
                self._release_cursor()
                if self.journal is not None:
                    # Unlock our file: another tracer or process may replay it now.
                    self.journal.close_current()
        self._closing = False
        return ok

    def busy(self) -> bool:
        """Whether anything is queued, held by the writer, or journaled and not replayed."""
        return bool(self._queue or self._queued_actions or self._own_pending)

    # -- writer side ----------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False  # (_closing stays: stop() may be what started us)
            self._thread = threading.Thread(
                target=self._run, name="actiontrace-writer", daemon=True
            )
        self._thread.start()
        _hook_child_exit()
        register_child_hooks()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            try:
                self._drain()
                self._maintain()
            except BaseException as exc:
                self.last_error = self._describe(exc)
                log.exception("actiontrace: writer error")
                time.sleep(0.05)  # never spin on a bug
            if self._stopping and not self._queue:
                return

    # Each maintenance step runs for at most this long before queued writes go first.
    MAINTENANCE_SLICE = 0.1

    def _maintain(self) -> None:
        """Run the maintenance work (retention) when due, never while the storage is down
        and never ahead of queued writes."""
        if self._maintenance is None or self._down_since is not None or self._stopping:
            return
        start = time.monotonic()
        if start < self._maintain_at:
            return
        more = True
        try:
            while more and not self._queue and time.monotonic() - start < self.MAINTENANCE_SLICE:
                removed, more = self._maintenance()
                self.counters["pruned"] += removed
        except Exception as exc:  # noqa: BLE001 - retention must never stop the writer
            self.last_error = self._describe(exc)
            self._warn("actiontrace: retention failed (%s); trying again in %.0f s",
                       self.last_error, self.maintenance_every)
            more = False
        if more:
            self._maintain_at = 0.0
            self._wake.set()  # continue after the writes queued meanwhile
        else:
            self._maintain_at = time.monotonic() + self.maintenance_every

    def _drain(self) -> None:
        while True:
            progressed = False
            if self._queue:
                self._drain_batch()
                progressed = True
            if self._replay_ready():
                progressed = self._replay_step() or progressed
            if not progressed:
                return

    def _drain_batch(self) -> None:
        batch: list[FlowPart] = []
        size = nbytes = 0
        marker: _Flush | None = None
        queue = self._queue
        with self._lock:
            while queue and size < self.batch_size:
                item = queue.popleft()
                if isinstance(item, _Flush):
                    marker = item
                    break
                batch.append(item)
                size += len(item.records) or 1
                nbytes += item.nbytes
        self._held, self._held_bytes = size, nbytes
        lost = self._store(batch) if batch else 0
        self._release_held()
        if marker is None:
            return
        if lost or self.counters["dropped"] > marker.dropped_before:
            marker.ok = False
        if self._own_pending and not (self._closing and self._down_since is not None):
            self._waiting.append(marker)  # set once our journal is replayed
        else:
            if self._own_pending:
                marker.ok = False  # durable in the journal, not in storage
            marker.event.set()

    def _release_held(self) -> None:
        # The batch the writer holds leaves the in-memory count: written, or encoded for
        # the journal (its frame is a fraction of its size, and its fsync may take 100 ms
        # on a busy disk: the application must not wait for that).
        size, self._held = self._held, 0
        nbytes, self._held_bytes = self._held_bytes, 0
        if size:
            with self._lock:
                self._queued_actions -= size
                self._queued_bytes -= nbytes
            with self._room:
                self._room.notify_all()

    # storage health ----------------------------------------------------------------------

    def _mark_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = now
        self._retry_at = now + self._delay
        self._delay = min(self._delay * 2, 5.0)
        self.counters["retries"] += 1
        self.last_error = self._describe(exc)
        if self._closing:
            self._release_waiting(ok=False)  # exiting: our journal waits for the next run

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.info("actiontrace: storage available again after %.1f s",
                     time.monotonic() - self._down_since)
            self._down_since = None
            self._next_scan = 0.0
        self._delay = 0.05
        self._retry_at = 0.0

    def _should_spill(self) -> bool:
        if self.journal is None or self._down_since is None:
            return False
        return (
            self._closing
            or self._queued_actions > self.spill_at
            or time.monotonic() - self._down_since >= self.spill_after
        )

    def _behind(self) -> bool:
        """Whether the backlog is past half its bound (the storage is slower than us)."""
        return self.journal is not None and not self._closing and (
            self._queued_actions > self.spill_at or self._queued_bytes > self.spill_at_bytes
        )

    def _store(self, batch: list[FlowPart]) -> int:
        """Write a batch (or journal it); returns how many actions were lost."""
        if self._behind() and self._spill(batch):
            # Up but slower than the application: a journal frame takes ~1 ms where the
            # write takes the storage's time, so the backlog (and memory) shrinks at once.
            self.counters["journaled_backlog"] += actions_in(batch)
            return 0
        attempts = 0  # failures that are not transient
        outages = 0  # transient failures of this batch
        delay = 0.05
        while True:
            if time.monotonic() >= self._retry_at:
                try:
                    with self._io:
                        self._write(batch)
                except BaseException as exc:  # noqa: BLE001 - nothing reaches the app
                    if self._is_transient(exc):
                        outages += 1
                        self._mark_down(exc)
                        self._warn("actiontrace: writing %d flows failed (%s); retrying",
                                   len(batch), self.last_error)
                    else:
                        attempts += 1
                        self.counters["retries"] += 1
                        self.last_error = self._describe(exc)
                        self._warn("actiontrace: writing %d flows failed (%s); retrying",
                                   len(batch), self.last_error)
                        if attempts >= 3:
                            return self._write_one_by_one(batch)
                        time.sleep(delay)
                        delay *= 2
                        continue
                else:
                    self._mark_up()
                    self._written(batch)
                    return 0
            # The storage is unavailable.
            if self._should_spill():
                if self._spill(batch):
                    return 0
                return self._give_up(batch)  # the journal failed too
            if self._stopping and outages >= 3:
                return self._give_up(batch)  # exiting, nowhere to keep it
            self._wait_retry()

    def _wait_retry(self) -> None:
        # Sleep until the next attempt, but look often: the backlog may cross spill_at,
        # or stop() may begin, and either means spilling now.
        while True:
            left = self._retry_at - time.monotonic()
            if left <= 0 or self._should_spill() or self._stopping:
                return
            self._wake.wait(min(left, 0.02))
            self._wake.clear()

    def _spill(self, batch: list[FlowPart]) -> bool:
        assert self.journal is not None
        n = actions_in(batch)
        held = self._held, self._held_bytes
        try:
            data = self.journal.encode(batch)
            self._release_held()
            path, _size = self.journal.append_frame(data)
        except Exception as exc:  # noqa: BLE001 - a failing journal must not stop the writer
            if held[0] and not self._held:
                # Still in hand (the caller may write it after all): counted again.
                with self._lock:
                    self._queued_actions += held[0]
                    self._queued_bytes += held[1]
                self._held, self._held_bytes = held
            self.counters["journal_errors"] += 1
            self.last_error = f"journal: {type(exc).__name__}: {exc}"
            self._warn_journal("actiontrace: cannot write the overflow journal in %s (%s)",
                               self.journal.directory, self.last_error)
            return False
        self.counters["journaled"] += n
        self._own_files[path] = self._own_files.get(path, 0) + n
        self._own_pending += n
        return True

    def _write_one_by_one(self, batch: list[FlowPart]) -> int:
        lost = 0
        for part in batch:
            try:
                with self._io:
                    self._write([part])
            except BaseException as exc:  # noqa: BLE001
                self.last_error = self._describe(exc)
                lost += self._give_up([part])
            else:
                self._written([part])
        return lost

    def _give_up(self, parts: Sequence[FlowPart]) -> int:
        n = actions_in(parts)
        # put() bumps "dropped" on the application's threads under the same lock: without
        # it, this read-modify-write could lose one of the two increments.
        with self._lock:
            self.counters["dropped"] += n
        self.counters["failed_batches"] += 1
        self._warn_drop("actiontrace: could not write %d actions (%s); dropped", n,
                        self.last_error)
        return n

    def _written(self, batch: list[FlowPart]) -> None:
        self.counters["written"] += actions_in(batch)
        recent = self.recent
        for part in batch:
            recent.setdefault(part.token, []).append(part)
            recent.move_to_end(part.token)
        while len(recent) > self._recent_size:
            recent.popitem(last=False)

    # journal replay -------------------------------------------------------------------------

    def _replay_ready(self) -> bool:
        if self.journal is None or (self._down_since is not None and time.monotonic() < self._retry_at):
            return False
        if self._behind():
            return False  # the live backlog first: replaying now would only add to it
        if self._cursor is not None or self._own_files or self._orphans:
            return True
        if self._closing or self._stopping:
            return False  # do not start on other processes' journals while exiting
        if time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + RESCAN_EVERY
            self._orphans = self.journal.files()
            return bool(self._orphans)
        return False

    def _replay_step(self) -> bool:
        """Store one journal frame (or open/close a file). Returns whether it progressed."""
        journal = self.journal
        assert journal is not None
        if self._cursor is None:
            self._cursor = self._next_cursor()
            if self._cursor is None:
                return False
        cursor = self._cursor
        parts = cursor.next_frame()
        if parts is None:  # end of the file (or a torn tail)
            if cursor.torn_bytes:
                self.counters["torn_frames"] += 1
                log.warning("actiontrace: skipped a torn frame (%d bytes) at the end of %s",
                            cursor.torn_bytes, cursor.path)
            cursor.finish()
            self._cursor = None
            self._file_done(cursor.path)
            return True
        try:
            with self._io:
                self._write(parts)
        except BaseException as exc:  # noqa: BLE001 - nothing reaches the app
            if self._is_transient(exc):
                self._mark_down(exc)
                return False
            self.last_error = self._describe(exc)
            lost = self._write_one_by_one(parts)  # counts what fails as dropped
            self.counters["written"] -= actions_in(parts) - lost
            self.counters["replayed"] += actions_in(parts) - lost
            cursor.stored()
            return True
        self._mark_up()
        self.counters["replayed"] += actions_in(parts)
        cursor.stored()
        return True

    def _next_cursor(self) -> ReplayCursor | None:
        journal = self.journal
        assert journal is not None
        if journal.current is not None:
            # The storage answers again: close our append file and replay it first.
            own = journal.release_current()
            if own is not None:
                return own
        while self._own_files:
            path = next(iter(self._own_files))
            cursor = journal.open_replay(path)
            if cursor is not None:
                cursor.own = True
                return cursor
            if not path.exists():
                self._file_done(path)  # another process replayed it for us
            else:
                return None  # another process is replaying it: wait for it
        while self._orphans:
            path = self._orphans.pop(0)
            cursor = journal.open_replay(path)
            if cursor is not None:
                return cursor
            if path.exists():
                # Held by another process: appending (alive) or replaying it. Look again
                # soon, in case that process is about to exit or give up.
                self._next_scan = min(self._next_scan, time.monotonic() + LOCKED_RESCAN)
        return None

    def _file_done(self, path: Path) -> None:
        n = self._own_files.pop(path, 0)
        self._own_pending -= n
        if not self._own_files:
            self._own_pending = 0
            self._release_waiting(ok=True)

    def _release_waiting(self, ok: bool) -> None:
        waiting, self._waiting = self._waiting, []
        for marker in waiting:
            marker.ok = marker.ok and ok
            marker.event.set()

    def _release_cursor(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None


FORK_WAIT = 5.0  # seconds a fork waits for a write in flight before going ahead


def _before_fork() -> None:
    register_child_hooks()  # multiprocessing is imported by now if it is forking
    for buf in list(_BUFFERS):
        if buf._thread is not None and threading.current_thread() is not buf._thread:
            buf._io_held_for_fork = buf._io.acquire(timeout=FORK_WAIT)


def _after_fork_in_parent() -> None:
    for buf in list(_BUFFERS):
        if buf._io_held_for_fork:
            buf._io_held_for_fork = False
            buf._io.release()


def _after_fork_in_child() -> None:
    for buf in list(_BUFFERS):
        if buf._cursor is not None:
            buf._cursor.close()  # the parent's descriptor keeps its lock
        if buf.journal is not None:
            buf.journal.forget_after_fork()
        buf._init_state()


def _flush_all_at_exit() -> None:
    timeout = float(os.environ.get("ACTIONTRACE_EXIT_TIMEOUT", "10"))
    deadline = time.monotonic() + timeout
    for buf in list(_BUFFERS):
        if buf.busy():
            buf.stop(max(deadline - time.monotonic(), 0.1))


# -- exit of a process started by multiprocessing ---------------------------------------------
#
# Such a process never runs `atexit` hooks when it was forked (fork, forkserver, and every
# Pool or ProcessPoolExecutor worker so started): BaseProcess._bootstrap runs the target,
# then multiprocessing.util._exit_function() (its own finalizers), then the process ends
# with os._exit(). So the exit flush is registered there too, as a finalizer of
# `multiprocessing.util`. _bootstrap clears the finalizers inherited from the parent
# before it calls the target, so the hook is (re)registered in the child: when its first
# writer starts (always inside the target, after that clearing), and from multiprocessing's
# own after-fork hooks for a child that starts one earlier (a spawned child importing a
# main module that records at import time).

_child_exit: Any = None  # this process's multiprocessing.util.Finalize, if any
# Runs after any finalizer of default priority (0) and after the children of this process
# were joined: whatever they record first is flushed too.
CHILD_EXIT_PRIORITY = -100


def _hook_child_exit() -> None:
    global _child_exit
    process = sys.modules.get("multiprocessing.process")
    if process is None or process.parent_process() is None:
        return  # not started by multiprocessing: atexit does it
    if _child_exit is not None and _child_exit.still_active():
        return
    from multiprocessing import util

    _child_exit = util.Finalize(None, _flush_all_at_exit, exitpriority=CHILD_EXIT_PRIORITY)


class _AfterForkToken:
    """A weak-referenceable object multiprocessing's after-fork registry holds."""


_AFTER_FORK = _AfterForkToken()


# Callbacks of the layers above, run in every multiprocessing child (see _mp_after_fork).
CHILD_HOOKS: list[Callable[[], None]] = []
_registered_in: int | None = None  # the pid whose multiprocessing registry has our hook


def _mp_after_fork(_token: object) -> None:
    for hook in CHILD_HOOKS:
        try:
            hook()
        except Exception:  # a child must start whatever happens here
            log.exception("actiontrace: child process hook failed")
    if any(buf._thread is not None for buf in list(_BUFFERS)):
        _hook_child_exit()


def register_child_hooks() -> None:
    """Have multiprocessing run ``_mp_after_fork`` in the children of this process.

    Called at import, whenever a writer starts, and before every fork (by then a
    program that imports multiprocessing after actiontrace has imported it).
    """
    global _registered_in
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _registered_in != os.getpid():
        _registered_in = os.getpid()
        util.register_after_fork(_AFTER_FORK, _mp_after_fork)


register_child_hooks()

os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_flush_all_at_exit)
