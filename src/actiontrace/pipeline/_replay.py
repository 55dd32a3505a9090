"""The journal as the writer uses it: batches go in, frames come back, one way each.

The writer hands a batch it cannot store to ``Backlog.spill`` and asks ``Backlog.take``
for the next frame to store; everything about *which* file comes next lives here: this
buffer's own append file first (closed and replayed once the storage answers), then the
files it spilled earlier, then files other processes left behind (found by a scan every
``RESCAN_EVERY`` seconds, sooner when one was locked). ``own_pending`` counts what this
buffer journaled and has not seen stored yet; ``on_drained`` runs when it reaches zero
(the flushes waiting for it are released then).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

from actiontrace.pipeline._journal import Journal, JournalPart, ReplayCursor, actions_in
from actiontrace.recording._record import Part

__all__ = ["Backlog", "Taken"]

RESCAN_EVERY = 60.0  # seconds between looks for journals that other processes left behind
LOCKED_RESCAN = 2.0  # ... when one was locked by another process at the last look


class Taken(NamedTuple):
    """What ``Backlog.take`` gives: a frame's parts, or a file's end (``parts`` None)."""

    path: Path
    parts: list[JournalPart] | None
    torn_bytes: int  # at a file's end: the bytes of a torn last frame, skipped


class Backlog:
    """This buffer's side of the journal (writer thread only)."""

    def __init__(self, journal: Journal, on_drained: Callable[[], None]) -> None:
        self.journal = journal
        self._on_drained = on_drained
        self.reset()

    def reset(self) -> None:
        """Forget every file (a new buffer, or a forked child)."""
        self._own_files: dict[Path, int] = {}  # files this buffer spilled -> actions in them
        self.own_pending = 0  # actions journaled by this buffer and not yet replayed
        self._cursor: ReplayCursor | None = None
        self._orphans: list[Path] = []
        self._next_scan = 0.0  # 0: scan for other processes' journals at the next chance

    # -- in ----------------------------------------------------------------------------

    def spill(self, batch: Sequence[Part], encoded: Callable[[], None]) -> int:
        """Append ``batch`` as one fsync'd frame; return its actions. Raises on failure.

        ``encoded`` runs between encoding and writing: from then on the batch is no
        longer held in memory (its frame is a fraction of its size).
        """
        data = self.journal.encode(batch)
        encoded()
        path, _size = self.journal.append_frame(data)
        n = actions_in(batch)
        self._own_files[path] = self._own_files.get(path, 0) + n
        self.own_pending += n
        return n

    # -- out ---------------------------------------------------------------------------

    def ready(self, exiting: bool) -> bool:
        """Whether there is something to replay (scanning for other processes' files when
        due, unless ``exiting``)."""
        if self._cursor is not None or self._own_files or self._orphans:
            return True
        if exiting:
            return False  # do not start on other processes' journals while exiting
        if time.monotonic() >= self._next_scan:
            self._next_scan = time.monotonic() + RESCAN_EVERY
            self._orphans = self.journal.files()
            return bool(self._orphans)
        return False

    def rescan_soon(self) -> None:
        """Look for other processes' files at the next chance (the storage is back)."""
        self._next_scan = 0.0

    def take(self) -> Taken | None:
        """The next frame to store, a file's end, or None (nothing can be replayed now).

        After storing a frame's parts, or counting a file's end, call ``stored``; the
        next ``take`` gives what comes next (the same again until then).
        """
        if self._cursor is None:
            self._cursor = self._next_cursor()
            if self._cursor is None:
                return None
        cursor = self._cursor
        parts = cursor.next_frame()
        return Taken(cursor.path, parts, 0 if parts is not None else cursor.torn_bytes)

    def stored(self) -> None:
        """What ``take`` gave is stored (a frame) or counted (a file's end): move past it.

        A file is deleted, and the flushes waiting for it are released, only here: after
        the writer counted its torn tail. Whoever sees the file gone (another thread
        polling the directory, a flush that returned) sees the count too; deleting it in
        ``take`` let a reader see it gone with ``torn_frames`` still 0.
        """
        cursor = self._cursor
        assert cursor is not None
        if cursor.pending is not None:
            cursor.stored()
            return
        cursor.finish()  # the end of the file (or a torn tail): it is deleted
        self._cursor = None
        self._file_done(cursor.path)

    def release(self) -> None:
        """Let go of the file being replayed (stop, fork): another may replay it."""
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

    def _next_cursor(self) -> ReplayCursor | None:
        journal = self.journal
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
        self.own_pending -= n
        if not self._own_files:
            self.own_pending = 0
            self._on_drained()
