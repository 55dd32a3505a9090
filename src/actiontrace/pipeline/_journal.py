"""The overflow journal: batches the writer could not store, kept on local disk until it can.

While the database is unavailable the writer appends the batches it cannot write to a
journal file of its own (one frame per batch, fsync'd), and replays them when the
database is back. A process that died with frames in its journal leaves the file
behind; the next process that uses the same journal directory replays it. Replays are
idempotent (storages insert by action id), so a frame replayed twice is stored once.

Layout: a directory (created ``0700``, refused if another user owns it or others may
write to it) holding one ``<pid>-<random>.atj`` file (``0600``) per process that spilled.
A file is locked (``flock``, exclusive) by whoever holds it: the process appending to
it, or one replaying it. A replayer takes the lock without waiting, so several processes
may sweep one directory at once and each file is replayed by one of them; the replayer
deletes the file once every frame is stored.

Frame: ``b"ATJ1"``, payload length (u32 LE), CRC-32 of the payload (u32 LE), payload.
The payload is msgpack: a list of parts in *storage form* (what ``Part.rows()``,
``Part.edges`` and ``Part.log_rows()`` give, already redacted and cut to size,
so no secret reaches the disk)::

    [token, root_id | nil, created_at, module,
     [[id, parent_id | nil, concept_uri, action, timestamp, duration_us | nil, status,
       inputs_json, outputs_json], ...],
     [[from_id, to_id, synchronization, created_at], ...],
     [[log_id, action_id | nil, timestamp, level, event, fields_json], ...],
     {"sampled": bool, ...}]

with every 128-bit id as 16 big-endian bytes. Frames only ever end torn (a process
killed in the middle of a write): a reader stops at the first frame whose header,
length or checksum is wrong, and reports the bytes it skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import stat
import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec

from actiontrace.recording._record import ActionRow, Edge, LogRow, Part

__all__ = [
    "Journal", "JournalError", "JournalPart", "ReplayCursor", "default_directory", "open_journal",
]

MAGIC = b"ATJ1"
HEADER = struct.Struct("<4sII")  # magic, payload length, crc32(payload)
SUFFIX = ".atj"
# Plain part attributes that travel in a frame's trailing dict (absent ones are skipped,
# unknown ones ignored: frames stay readable across versions).
EXTRA_FIELDS = ("sampled",)
MAX_FRAME = 1 << 30  # a length beyond this is a torn or foreign header, not a frame

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class JournalError(OSError):
    """The journal directory or a journal file cannot be used."""


def _b(i: int) -> bytes:
    return i.to_bytes(16, "big")


def _ob(i: int | None) -> bytes | None:
    return None if i is None else i.to_bytes(16, "big")


def _i(b: bytes) -> int:
    return int.from_bytes(b, "big")


def _oi(b: bytes | None) -> int | None:
    return None if b is None else int.from_bytes(b, "big")


class JournalPart:
    """A flow part rebuilt from a journal frame: already in storage form (a ``Part``).

    It holds the stored ``ActionRow``s, edges and log rows as they were journaled, and
    gives them back as a ``FlowPart`` gives its own (``write_parts``, ``to_trace``).
    """

    __slots__ = ("action_rows", "created_at", "edge_rows", "log_events", "module", "root_id",
                 "sampled", "token")

    def __init__(self, token: int, root_id: int | None, created_at: int, module: str) -> None:
        self.token = token
        self.root_id = root_id
        self.created_at = created_at
        self.module = module
        self.sampled = True
        self.action_rows: list[ActionRow] = []
        self.edge_rows: list[Edge] = []
        self.log_events: list[tuple[int, int | None, int, str, str, bytes]] = []

    @property
    def n_actions(self) -> int:
        """How many actions the part holds."""
        return len(self.action_rows)

    def rows(self) -> Iterator[ActionRow]:
        """The stored rows, as they were when the part was journaled."""
        return iter(self.action_rows)

    def sql_rows(self) -> tuple[list[tuple[Any, ...]], dict[int, str]]:
        """The stored rows with hex ids (see ``FlowPart.sql_rows``)."""
        hexes = {r.id: r.id.to_bytes(16).hex() for r in self.action_rows}
        token = self.token.to_bytes(16).hex()
        rows = [
            (hexes[r.id], token, None if r.parent_id is None else r.parent_id.to_bytes(16).hex(),
             r.concept_uri, r.action, r.timestamp, r.duration_us, r.status, r.inputs.decode(),
             r.outputs.decode())
            for r in self.action_rows
        ]
        return rows, hexes

    def sql_edges(self, hexes: dict[int, str]) -> list[tuple[str, str, str, int]]:
        """The stored edges with hex ids (see ``FlowPart.sql_edges``)."""
        return [(hexes.get(f) or f.to_bytes(16).hex(), hexes.get(t) or t.to_bytes(16).hex(),
                 sync, created) for f, t, sync, created in self.edge_rows]

    @property
    def edges(self) -> list[Edge]:
        """The stored edges ``(from_id, to_id, synchronization, created_us)``."""
        return self.edge_rows

    def log_rows(self) -> list[LogRow]:
        """The stored log events in storage form."""
        return [LogRow(lid, self.token, aid, ts, level, event, fields)
                for lid, aid, ts, level, event, fields in self.log_events]


def encode_parts(parts: Sequence[Part]) -> bytes:
    """The msgpack payload of one frame: ``parts`` in storage form."""
    out = []
    for part in parts:
        rows = [
            (_b(r.id), _ob(r.parent_id), r.concept_uri, r.action, r.timestamp, r.duration_us,
             r.status, r.inputs, r.outputs)
            for r in part.rows()
        ]
        edges = [(_b(f), _b(t), s, c) for f, t, s, c in part.edges]
        logs = [
            (_b(r.id), _ob(r.action_id), r.timestamp, r.level, r.event, r.fields)
            for r in part.log_rows()
        ]
        extra = {k: getattr(part, k) for k in EXTRA_FIELDS if hasattr(part, k)}
        out.append((_b(part.token), _ob(part.root_id), part.created_at, part.module, rows,
                    edges, logs, extra))
    return _encoder.encode(out)


def decode_parts(payload: bytes) -> list[JournalPart]:
    """Rebuild the parts of one frame's payload."""
    parts = []
    for token_b, root_b, created_at, module, rows, edges, logs, *rest in _decoder.decode(payload):
        token = _i(token_b)
        part = JournalPart(token, _oi(root_b), created_at, module)
        part.action_rows = [
            ActionRow(_i(aid), token, _oi(parent), concept, name, ts, dur, status, inp, out)
            for aid, parent, concept, name, ts, dur, status, inp, out in rows
        ]
        part.edge_rows = [(_i(f), _i(t), s, c) for f, t, s, c in edges]
        part.log_events = [
            (_i(lid), _oi(aid), ts, level, event, fields)
            for lid, aid, ts, level, event, fields in logs
        ]
        extra: dict[str, Any] = rest[0] if rest else {}
        for key, value in extra.items():
            if key in EXTRA_FIELDS:
                setattr(part, key, value)
        parts.append(part)
    return parts


def frame(payload: bytes) -> bytes:
    """One frame: header, then ``payload``."""
    return HEADER.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def actions_in(parts: Sequence[Part]) -> int:
    """How many actions ``parts`` hold."""
    return sum(p.n_actions for p in parts)


# -- where the journal lives ---------------------------------------------------------------


def state_dir() -> Path:
    """The per-user state directory (``$XDG_STATE_HOME``, else ``~/.local/state``)."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local",
                                                              "state")
    return Path(base) / "actiontrace"


def default_directory(storage: Any) -> Path | None:
    """The default journal directory for ``storage``, or None when it needs none.

    A SQLite file's journal lives next to it (``app.db`` -> ``app.db-journal.d/``); a
    server database's in the per-user state directory, under a name derived from its
    URL without the password (host, port, database, user, options such as the schema).
    In-memory databases and storages that are not SQL storages get none.
    """
    engine = getattr(storage, "engine", None)
    url = getattr(engine, "url", None)
    if url is None:
        return None
    backend = url.get_backend_name()
    if backend == "sqlite":
        path = url.database
        if not path or path == ":memory:" or path.startswith("file:"):
            return None
        return Path(os.path.abspath(path + "-journal.d"))
    shown = url.render_as_string(hide_password=True)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    return state_dir() / "journal" / f"{backend}-{digest}"


# -- the journal ------------------------------------------------------------------------------


class ReplayCursor:
    """An open, locked journal file being read frame by frame."""

    def __init__(self, path: Path, fd: int, own: bool) -> None:
        self.path = path
        self.fd = fd
        self.own = own  # written by this process (flushes wait for it)
        self.offset = 0
        self.pending: list[JournalPart] | None = None  # a frame read but not yet stored
        self.pending_end = 0
        self.torn_bytes = 0

    def next_frame(self) -> list[JournalPart] | None:
        """The next frame's parts (the same again until ``stored()``), None at the end."""
        if self.pending is not None:
            return self.pending
        head = os.pread(self.fd, HEADER.size, self.offset)
        if not head:
            return None
        if len(head) == HEADER.size:
            magic, length, crc = HEADER.unpack(head)
            if magic == MAGIC and length <= MAX_FRAME:
                payload = os.pread(self.fd, length, self.offset + HEADER.size)
                if len(payload) == length and zlib.crc32(payload) == crc:
                    try:
                        self.pending = decode_parts(payload)
                    except (msgspec.DecodeError, ValueError, TypeError):
                        pass  # a valid checksum over a foreign payload: treat as torn
                    else:
                        self.pending_end = self.offset + HEADER.size + length
                        return self.pending
        # A torn (or foreign) tail: skip the rest of the file.
        self.torn_bytes = os.fstat(self.fd).st_size - self.offset
        return None

    def stored(self) -> None:
        """The pending frame is in storage: move past it."""
        self.pending = None
        self.offset = self.pending_end

    def finish(self) -> None:
        """Every frame is stored: delete the file and release it."""
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        self.close()

    def close(self) -> None:
        """Release the file (and its lock) without deleting it."""
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


class Journal:
    """A journal directory: this process's append file, and replay of any file in it.

    Not thread-safe: the tracer's writer thread is its only user.
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._fd = -1
        self._path: Path | None = None
        self._size = 0
        self._checked = False

    def __repr__(self) -> str:
        return f"<Journal {self.directory}>"

    def _ensure_dir(self) -> None:
        if self._checked:
            return
        d = self.directory
        if not d.exists():
            old = os.umask(0o077)
            try:
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
            finally:
                os.umask(old)
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            raise JournalError(f"journal path {str(d)!r} is not a directory")
        if st.st_uid != os.geteuid():
            raise JournalError(f"journal directory {str(d)!r} belongs to another user")
        if st.st_mode & 0o077:
            # Ours, but readable or writable by others: tighten it (we created it with
            # 0700; someone loosened it, or it predates us).
            os.chmod(d, 0o700)
        self._checked = True

    # -- appending (this process's file) ------------------------------------------------------

    @staticmethod
    def encode(parts: Sequence[Part]) -> bytes:
        """The frame holding ``parts`` (for ``append_frame``)."""
        return frame(encode_parts(parts))

    def append(self, parts: Sequence[Part]) -> tuple[Path, int]:
        """Append one frame holding ``parts`` and fsync it; return (file, bytes written)."""
        return self.append_frame(self.encode(parts))

    def append_frame(self, data: bytes) -> tuple[Path, int]:
        """Append a frame made by ``encode`` and fsync it; return (file, bytes written).

        Raises ``OSError`` when the frame could not be made durable; the file is cut
        back to its previous end first, so no half frame stays behind.
        """
        if self._fd < 0:
            self._open_new()
        assert self._path is not None
        start = self._size
        try:
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
                os.fsync(self._fd)
            self._size = start
            raise
        self._size = start + len(data)
        return self._path, len(data)

    def _open_new(self) -> None:
        self._ensure_dir()
        name = f"{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
        path = self.directory / name
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(path, flags | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.fchmod(fd, 0o600)  # whatever the umask
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        self._fd, self._path, self._size = fd, path, 0
        _fsync_dir(self.directory)

    @property
    def current(self) -> Path | None:
        """The file this process appends to, if one is open."""
        return self._path

    def release_current(self) -> ReplayCursor | None:
        """Stop appending to the current file and hand it over for replay, still locked."""
        if self._fd < 0 or self._path is None:
            return None
        flags = os.O_RDONLY | os.O_CLOEXEC
        try:
            fd = os.open(self._path, flags)
        except OSError:
            fd = -1
        if fd >= 0:
            # Move the lock to the reading descriptor before closing the writing one
            # (a flock belongs to its open file; a second one in this process would wait).
            os.close(self._fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # another process took it between: it replays the file
                fd = -1
        else:
            os.close(self._fd)
        path = self._path
        self._fd, self._path, self._size = -1, None, 0
        return None if fd < 0 else ReplayCursor(path, fd, own=True)

    def close_current(self) -> None:
        """Stop appending to the current file and unlock it (it stays for replay)."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd, self._path, self._size = -1, None, 0

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's file without touching it."""
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # the parent's descriptor keeps the lock
        self._fd, self._path, self._size = -1, None, 0

    # -- replaying (any file) -------------------------------------------------------------------

    def files(self) -> list[Path]:
        """Journal files in the directory other than the one this process appends to."""
        try:
            names = sorted(os.listdir(self.directory))
        except OSError:
            return []
        return [
            self.directory / n for n in names
            if n.endswith(SUFFIX) and self.directory / n != self._path
        ]

    def open_replay(self, path: Path) -> ReplayCursor | None:
        """Lock ``path`` for replay; None if another process holds it or it is gone."""
        try:
            self._ensure_dir()
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            st = os.fstat(fd)
            if st.st_nlink == 0 or not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise JournalError("replayed or foreign")  # someone finished it meanwhile
        except OSError:
            os.close(fd)
            return None
        return ReplayCursor(path, fd, own=False)

    def size(self) -> int:
        """Bytes held in the directory's journal files."""
        total = 0
        for p in [*self.files(), *([self._path] if self._path else [])]:
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total


def _fsync_dir(directory: Path) -> None:
    # A new file's name is durable only once its directory is synced.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def open_journal(storage: Any, option: Any) -> Journal | None:
    """The journal a tracer uses: ``option`` None (the default place), False (none), or a path."""
    if option is False:
        return None
    if option is None or option is True:
        directory = default_directory(storage)
        return None if directory is None else Journal(directory)
    return Journal(os.fspath(option))
