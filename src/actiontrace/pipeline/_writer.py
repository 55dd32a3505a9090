"""The background writer: batches of ended flow parts from the buffer to storage.

The buffer (``_buffer.Buffer``) holds the parts the application ended; a daemon thread
takes parts off in batches and hands each batch to the storage in one call (one
transaction for SQL storages). Nothing here ever raises into the application, and
nothing here does I/O on the application's thread.

Policies (docs/reliability.md and docs/deployment.md say the same):

* **Storage unavailable** (a *transient* error: the database is down, locked, full,
  read-only): the writer retries with exponential backoff (0.05 s doubling up to 5 s).
  Meanwhile, once the outage has lasted ``spill_after`` seconds (default 1) or the
  in-memory backlog exceeds ``spill_at`` actions (default ``max_queue // 2``), the
  batches it cannot write go to the overflow journal (``actiontrace.pipeline._journal``: a local
  append-only file, one fsync'd frame per batch), and the in-memory backlog stays small.
  When the storage answers again the writer replays the journal (its own file first,
  then any left behind by processes that died), interleaved with new batches.
* **Storage slower than the application** (it answers, but the backlog grows): once more
  than ``spill_at`` actions or ``max_queue_bytes // 2`` bytes wait, the writer sends
  batches to the journal as in an outage (``journaled_backlog`` counts them) until the
  backlog is back under both, and replays the journal once it is.
* **Full buffer** (``_buffer``): a flow that ends when the buffer is full (the writer
  cannot even keep up by spilling, or there is no journal) waits briefly for room, then
  is dropped and counted. A batch the journal cannot take either (disk full) is dropped
  and counted the same way.
* **Errors that retrying cannot fix** (bad data): after three attempts the batch is
  written part by part, and the parts that still fail are dropped and counted.
* **Exit**: an ``atexit`` hook flushes every live tracer (up to ``exit_timeout``
  seconds, default 10, ``ACTIONTRACE_EXIT_TIMEOUT``). When the storage is unavailable at
  exit, the backlog goes to the journal at once instead of waiting, and the next process
  to use the same journal directory stores it.
* **fork, exit of a child process**: ``_processes`` (the child starts with an empty
  buffer and no writer thread; docs/deployment.md#worker-processes).

``flush()`` is True only when everything recorded before it is in the *storage* (frames
this process journaled included, once replayed).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from actiontrace._options import MAX_QUEUE_BYTES
from actiontrace.pipeline._buffer import Buffer, Flush, RateLimitedWarning
from actiontrace.pipeline._journal import Journal, actions_in
from actiontrace.pipeline._processes import WRITERS, hook_child_exit, register_child_hooks
from actiontrace.pipeline._replay import Backlog
from actiontrace.recording._record import FlowPart, Part

__all__ = ["Writer", "WriterStats"]

log = logging.getLogger("actiontrace")


class WriterStats(dict[str, Any]):
    """Counters of a tracer's buffer and writer (a plain dict snapshot)."""


class Writer:
    """The thread that writes a buffer's parts, retries, spills and replays.

    Args:
        write: stores a batch of parts (one transaction); raises on failure.
        is_transient: whether a write error may go away by itself (retry, spill).
        max_queue, max_queue_bytes, full_wait: the buffer's bounds (``_buffer.Buffer``).
        batch_size: actions per write.
        flush_interval: seconds the writer sleeps when idle.
        recent: how many recently written flows to keep (the tracer's LRU).
        describe_error: one line for an error (passwords masked).
        journal: the overflow journal, or None to keep everything in memory.
        spill_at: backlog (actions) beyond which an unavailable storage's batches go
            to the journal at once (default ``max_queue // 2``).
        spill_after: seconds of outage after which every batch goes to the journal.
        maintenance: work the writer does between batches (retention: one prune batch
            per call); returns the flows it removed and whether more is waiting. Runs
            every ``maintenance_every`` seconds, and again at once, after any queued
            writes, while more is waiting.
    """

    def __init__(
        self,
        write: Callable[[Sequence[Part]], None],
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
        self.buffer = Buffer(self._start, max_queue=max_queue, max_queue_bytes=max_queue_bytes,
                             full_wait=full_wait)
        self._write = write
        self._is_transient = is_transient
        self._describe = describe_error
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.journal = journal
        # The journal's side of replay (writer thread only; reset with the state).
        self._backlog = None if journal is None else Backlog(journal, self._drained)
        self.spill_at = max_queue // 2 if spill_at is None else spill_at
        self.spill_after = spill_after
        self._maintenance = maintenance
        self.maintenance_every = maintenance_every
        self._recent_size = recent
        self._warn = RateLimitedWarning(10.0)
        self._warn_journal = RateLimitedWarning(10.0)
        self._warn_drop = RateLimitedWarning(10.0, logging.ERROR)
        self._init_state()
        WRITERS.add(self)

    def _init_state(self) -> None:
        self.buffer.reset()
        self.counters = self.buffer.counters  # one set of counters, both sides
        # Held around every storage call: a fork waits (briefly) for the write in flight,
        # so the child never inherits a half-done transaction (SQLite's per-process lock
        # table would then refuse the child every write to that file).
        self._io = threading.Lock()
        self._io_held_for_fork = False
        self._thread: threading.Thread | None = None
        self._stopping = False  # the writer exits once the queue is empty
        self._closing = False  # stop() is running: spill at once rather than wait
        self._held = 0  # actions of the batch the writer holds (still counted as queued)
        self._held_bytes = 0  # ... and its bytes
        self.recent: OrderedDict[int, list[Part]] = OrderedDict()
        self._maintain_at = 0.0  # monotonic time of the next maintenance step
        self.last_error: str | None = None
        # Storage health, shared by live batches and replays (writer thread only).
        self._down_since: float | None = None
        self._retry_at = 0.0
        self._delay = 0.05
        if self._backlog is not None:
            self._backlog.reset()
        self._waiting: list[Flush] = []  # flushes that wait for our journal to be replayed

    # -- what the tracer calls ----------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before the call is in storage.

        Returns True when it all is; False on timeout, or when something queued since
        the previous flush was dropped, could not be written, or (while closing) went
        to the journal only. Never raises.
        """
        try:
            marker = self.buffer.mark()
            if self._thread is None or not self._thread.is_alive():
                self._start()
            self.buffer.wake.set()
            if threading.current_thread() is self._thread:
                return False  # flush from inside a storage call: cannot wait for ourselves
            return marker.event.wait(timeout) and marker.ok
        except BaseException:  # noqa: BLE001 - flush never raises
            return False

    def stats(self) -> WriterStats:
        """Snapshot of the counters, the backlog, the journal and the last write error."""
        s = WriterStats(self.counters)
        s["queued"] = self.buffer.queued_actions
        s["queued_bytes"] = self.buffer.queued_bytes
        s["journal_pending"] = self._own_pending()
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
        self.buffer.wake.set()
        ok = self.flush(timeout)
        self._stopping = True
        self.buffer.wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0 if timeout is None else min(timeout, 1.0))
            if not thread.is_alive():
                self._thread = None  # a later put() or flush() starts a new writer
                self.buffer.started = False
                if self._backlog is not None:
                    self._backlog.release()
                if self.journal is not None:
                    # Unlock our file: another tracer or process may replay it now.
                    self.journal.close_current()
        self._closing = False
        return ok

    def busy(self) -> bool:
        """Whether anything is queued, held by the writer, or journaled and not replayed."""
        return bool(self.buffer.queue or self.buffer.queued_actions or self._own_pending())

    def _own_pending(self) -> int:
        return 0 if self._backlog is None else self._backlog.own_pending

    # -- the thread -----------------------------------------------------------------------

    def _start(self) -> None:
        with self.buffer.lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stopping = False  # (_closing stays: stop() may be what started us)
            self._thread = threading.Thread(
                target=self._run, name="actiontrace-writer", daemon=True
            )
            self.buffer.started = True
        self._thread.start()
        hook_child_exit()
        register_child_hooks()

    def _run(self) -> None:
        wake = self.buffer.wake
        while True:
            wake.wait(self.flush_interval)
            wake.clear()
            try:
                self._drain()
                self._maintain()
            except BaseException as exc:
                self.last_error = self._describe(exc)
                log.exception("actiontrace: writer error")
                time.sleep(0.05)  # never spin on a bug
            if self._stopping and not self.buffer.queue:
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
            while more and not self.buffer.queue \
                    and time.monotonic() - start < self.MAINTENANCE_SLICE:
                removed, more = self._maintenance()
                self.counters["pruned"] += removed
        except Exception as exc:  # noqa: BLE001 - retention must never stop the writer
            self.last_error = self._describe(exc)
            self._warn("actiontrace: retention failed (%s); trying again in %.0f s",
                       self.last_error, self.maintenance_every)
            more = False
        if more:
            self._maintain_at = 0.0
            self.buffer.wake.set()  # continue after the writes queued meanwhile
        else:
            self._maintain_at = time.monotonic() + self.maintenance_every

    def _drain(self) -> None:
        while True:
            progressed = False
            if self.buffer.queue:
                self._drain_batch()
                progressed = True
            if self._replay_ready():
                progressed = self._replay_step() or progressed
            if not progressed:
                return

    def _drain_batch(self) -> None:
        batch, marker, self._held, self._held_bytes = self.buffer.take(self.batch_size)
        lost = self._store(batch) if batch else 0
        self._release_held()
        if marker is None:
            return
        if lost or self.counters["dropped"] > marker.dropped_before:
            marker.ok = False
        if self._own_pending() and not (self._closing and self._down_since is not None):
            self._waiting.append(marker)  # set once our journal is replayed
        else:
            if self._own_pending():
                marker.ok = False  # durable in the journal, not in storage
            marker.event.set()

    def _release_held(self) -> None:
        # The batch the writer holds leaves the in-memory count: written, or encoded for
        # the journal (its frame is a fraction of its size, and its fsync may take 100 ms
        # on a busy disk: the application must not wait for that).
        size, self._held = self._held, 0
        nbytes, self._held_bytes = self._held_bytes, 0
        self.buffer.release(size, nbytes)

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
            if self._backlog is not None:
                self._backlog.rescan_soon()
        self._delay = 0.05
        self._retry_at = 0.0

    def _should_spill(self) -> bool:
        if self.journal is None or self._down_since is None:
            return False
        return (
            self._closing
            or self.buffer.queued_actions > self.spill_at
            or time.monotonic() - self._down_since >= self.spill_after
        )

    def _behind(self) -> bool:
        """Whether the backlog is past half its bound (the storage is slower than us)."""
        return self.journal is not None and not self._closing and (
            self.buffer.queued_actions > self.spill_at
            or self.buffer.queued_bytes > self.buffer.spill_at_bytes
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
            self.buffer.wake.wait(min(left, 0.02))
            self.buffer.wake.clear()

    def _spill(self, batch: list[FlowPart]) -> bool:
        assert self._backlog is not None
        held = self._held, self._held_bytes
        try:
            n = self._backlog.spill(batch, encoded=self._release_held)
        except Exception as exc:  # noqa: BLE001 - a failing journal must not stop the writer
            if held[0] and not self._held:
                # Still in hand (the caller may write it after all): counted again.
                self.buffer.hold_again(*held)
                self._held, self._held_bytes = held
            self.counters["journal_errors"] += 1
            self.last_error = f"journal: {type(exc).__name__}: {exc}"
            self._warn_journal("actiontrace: cannot write the overflow journal in %s (%s)",
                               self._backlog.journal.directory, self.last_error)
            return False
        self.counters["journaled"] += n
        return True

    def _write_one_by_one(self, batch: Sequence[Part]) -> int:
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

    def _give_up(self, parts: Sequence[Part]) -> int:
        n = actions_in(parts)
        self.buffer.drop(n)
        self.counters["failed_batches"] += 1
        self._warn_drop("actiontrace: could not write %d actions (%s); dropped", n,
                        self.last_error)
        return n

    def _written(self, batch: Sequence[Part]) -> None:
        self.counters["written"] += actions_in(batch)
        recent = self.recent
        for part in batch:
            recent.setdefault(part.token, []).append(part)
            recent.move_to_end(part.token)
        while len(recent) > self._recent_size:
            recent.popitem(last=False)

    # journal replay -------------------------------------------------------------------------

    def _replay_ready(self) -> bool:
        if self._backlog is None or (self._down_since is not None and time.monotonic() < self._retry_at):
            return False
        if self._behind():
            return False  # the live backlog first: replaying now would only add to it
        return self._backlog.ready(exiting=self._closing or self._stopping)

    def _replay_step(self) -> bool:
        """Store one journal frame (or finish a file). Returns whether it progressed."""
        assert self._backlog is not None
        taken = self._backlog.take()
        if taken is None:
            return False
        parts = taken.parts
        if parts is None:  # the end of a file (or a torn tail)
            if taken.torn_bytes:
                self.counters["torn_frames"] += 1
                log.warning("actiontrace: skipped a torn frame (%d bytes) at the end of %s",
                            taken.torn_bytes, taken.path)
            self._backlog.stored()  # counted: now the file goes (see Backlog.stored)
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
            self._backlog.stored()
            return True
        self._mark_up()
        self.counters["replayed"] += actions_in(parts)
        self._backlog.stored()
        return True

    def _drained(self) -> None:
        """Everything this buffer journaled is stored: release the flushes waiting."""
        self._release_waiting(ok=True)

    def _release_waiting(self, ok: bool) -> None:
        waiting, self._waiting = self._waiting, []
        for marker in waiting:
            marker.ok = marker.ok and ok
            marker.event.set()

    # -- fork (called by _processes, in _state's fork order) -------------------------------

    def before_fork(self, wait: float) -> None:
        """Hold the I/O lock across a fork, so no write is half done in the child."""
        if self._thread is not None and threading.current_thread() is not self._thread:
            self._io_held_for_fork = self._io.acquire(timeout=wait)

    def after_fork_in_parent(self) -> None:
        """Let the writer go on after a fork."""
        if self._io_held_for_fork:
            self._io_held_for_fork = False
            self._io.release()

    def after_fork_in_child(self) -> None:
        """Start empty: the parent's queue, thread and journal file are not the child's."""
        if self._backlog is not None:
            self._backlog.release()  # the parent's descriptor keeps its lock
        if self.journal is not None:
            self.journal.forget_after_fork()
        self._init_state()

    @property
    def running(self) -> bool:
        """Whether this buffer's writer thread was started."""
        return self._thread is not None
