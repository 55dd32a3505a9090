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
  ``atexit``, so the exit flush is also a multiprocessing finalizer there (see
  ``_processes`` and docs/deployment.md#worker-processes). SIGTERM (``Pool.terminate()``)
  runs no finalizer: what a terminated worker had not written is lost.

``flush()`` is True only when everything recorded before it is in the *storage* (frames
this process journaled included, once replayed).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from actiontrace._journal import Journal, actions_in
from actiontrace._options import MAX_QUEUE_BYTES
from actiontrace._processes import BUFFERS, hook_child_exit, register_child_hooks
from actiontrace._record import FlowPart, Part
from actiontrace._replay import Backlog

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
        # The journal's side of replay (writer thread only; reset with the state).
        self._backlog = None if journal is None else Backlog(journal, self._drained)
        self.spill_at = max_queue // 2 if spill_at is None else spill_at
        self.spill_after = spill_after
        self._maintenance = maintenance
        self.maintenance_every = maintenance_every
        self._recent_size = recent
        self._warn = _RateLimitedWarning(10.0)
        self._warn_journal = _RateLimitedWarning(10.0)
        self._warn_drop = _RateLimitedWarning(10.0, logging.ERROR)
        self._init_state()
        BUFFERS.add(self)

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
        self.recent: OrderedDict[int, list[Part]] = OrderedDict()
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
        if self._backlog is not None:
            self._backlog.reset()
        self._waiting: list[_Flush] = []  # flushes that wait for our journal to be replayed

    # -- application side ---------------------------------------------------------------

    def skip(self, part: FlowPart) -> None:
        """Count an ended part that sampling leaves out (it is not written)."""
        with self._lock:
            self.counters["recorded"] += len(part.records)
            self.counters["unsampled"] += len(part.records)

    def count(self, name: str) -> None:
        """Add one to the counter ``name`` (shown by ``stats()``)."""
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + 1

    def put(self, part: FlowPart) -> None:
        """Queue an ended part for writing. Never raises, never blocks for long."""
        recorded = len(part.records)
        n = recorded or 1
        part.nbytes = size = part.held_bytes()
        with self._lock:
            self.counters["recorded"] += recorded
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
        self._wake.set()
        ok = self.flush(timeout)
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0 if timeout is None else min(timeout, 1.0))
            if not thread.is_alive():
                self._thread = None  # a later put() or flush() starts a new writer
                if self._backlog is not None:
                    self._backlog.release()
                if self.journal is not None:
                    # Unlock our file: another tracer or process may replay it now.
                    self.journal.close_current()
        self._closing = False
        return ok

    def busy(self) -> bool:
        """Whether anything is queued, held by the writer, or journaled and not replayed."""
        return bool(self._queue or self._queued_actions or self._own_pending())

    def _own_pending(self) -> int:
        return 0 if self._backlog is None else self._backlog.own_pending

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
        hook_child_exit()
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
            if self._backlog is not None:
                self._backlog.rescan_soon()
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
        assert self._backlog is not None
        held = self._held, self._held_bytes
        try:
            n = self._backlog.spill(batch, encoded=self._release_held)
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
        # put() bumps "dropped" on the application's threads under the same lock: without
        # it, this read-modify-write could lose one of the two increments.
        with self._lock:
            self.counters["dropped"] += n
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
