"""Engines for SQLite and PostgreSQL, and masking passwords in what we print.

Nothing here connects: ``make_engine`` checks the URL, the driver and (for a SQLite
file) the directory, and installs the per-connection set-up (busy timeout, WAL, a file
created ``0600``). Both the storage (``_sql``) and the migrations (``_migrate``) build
their engines here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from actiontrace._exceptions import ConfigurationError
from actiontrace._options import DEFAULT_URL
from actiontrace._state import at_fork

__all__ = ["DEFAULT_URL", "SQLITE_BUSY_TIMEOUT_MS", "SqliteCalls", "make_engine", "mask_url",
           "sqlite_calls", "switch_to_wal"]

log = logging.getLogger("actiontrace")

SQLITE_BUSY_TIMEOUT_MS = 30_000

_URL_PASSWORD = re.compile(r"(\b[\w.+-]+://[^:/@\s]*:)[^@\s]*@")
_CONNINFO_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE)


def mask_url(text: str) -> str:
    """Replace any password in URLs (``scheme://user:pw@``) or conninfo text with ``***``."""
    return _CONNINFO_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", text))


# -- engines ---------------------------------------------------------------------------------


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # busy_timeout first: switching to WAL needs a lock another process may hold.
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    switch_to_wal(cur)
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


# SQLITE_BUSY and SQLITE_LOCKED (primary result codes, https://www.sqlite.org/rescode.html).
_LOCKED_CODES = frozenset({5, 6})


def switch_to_wal(cur: Any, timeout: float = SQLITE_BUSY_TIMEOUT_MS / 1000) -> None:
    """Run ``PRAGMA journal_mode = WAL``, waiting (bounded) while another connection locks.

    Switching a file to WAL needs an exclusive lock, and when another process holds one
    (a pool of workers opening a fresh store together) SQLite fails at once with
    "database is locked": its busy handler does not cover this pragma. That lost a batch
    to the overflow journal about 1 run in 40 (issue 10). So retry here as the busy
    handler would, with backoff, for up to the busy timeout.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            cur.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code is None or code & 0xFF not in _LOCKED_CODES or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _sqlite_reader_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # A reader sets nothing that is stored in the file (journal_mode is: switching it to
    # WAL rewrites the header), and refuses to write even by accident.
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA query_only = ON")
    cur.close()


def _pg_reader_session(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    cur.close()
    dbapi_conn.commit()


def _owner_only(path: str) -> Any:
    """A ``do_connect`` hook that creates the SQLite file ``0600`` before SQLite does.

    Traces hold application data: the file (and its ``-wal``/``-shm``, which SQLite
    creates with the database file's mode) must not be readable by other users.
    """

    def create(*_args: Any) -> None:
        # If it exists, its mode stays (the owner chose it); any other error SQLite reports.
        with contextlib.suppress(OSError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))

    return create


def make_engine(url: str | sa.URL, read_only: bool = False) -> sa.Engine:
    """Create an engine for ``url`` without connecting (for PostgreSQL).

    ``read_only``: connections that cannot change the database (SQLite opened with
    ``mode=ro``, journal mode left as it is; PostgreSQL sessions in read-only
    transactions).

    Raises:
        ConfigurationError: a malformed URL, a dialect other than SQLite and PostgreSQL,
            a driver that is not installed, or a SQLite file whose directory is missing
            or not writable.
    """
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError) as exc:
        raise ConfigurationError(f"malformed database URL {mask_url(str(url))!r}: {exc}") from None
    shown = parsed.render_as_string(hide_password=True)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"unsupported database {shown!r}: actiontrace stores traces in SQLite "
            "(sqlite:///file.db) or PostgreSQL (postgresql+psycopg://...)"
        )
    try:
        parsed.get_dialect()
    except (sa_exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigurationError(f"unknown database driver in {shown!r}: {exc}") from None
    kwargs: dict[str, Any] = {}
    private_file = ""
    if backend == "sqlite":
        path = parsed.database
        if path and path != ":memory:" and not path.startswith("file:"):
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder):
                raise ConfigurationError(
                    f"cannot create SQLite database {path!r}: directory {folder!r} does not exist"
                )
            if not os.path.exists(path) and not os.access(folder, os.W_OK):
                raise ConfigurationError(
                    f"cannot create SQLite database {path!r}: directory {folder!r} is not writable"
                )
            kwargs["connect_args"] = {"check_same_thread": False}
            private_file = os.path.abspath(path)
            if read_only:
                # Never create the file (mode=rw fails on a missing one); PRAGMA
                # query_only refuses every write. Not mode=ro where the file is writable:
                # on a WAL database a read-only connection leaves the -wal and -shm files
                # behind, where the last read-write one removes them on close.
                mode = "rw" if os.access(private_file, os.W_OK) else "ro"
                quoted = urllib.parse.quote(private_file)
                parsed = parsed.set(database=f"file:{quoted}", query={"mode": mode, "uri": "true"})
                private_file = ""
        else:
            # One shared connection, or every thread would see its own empty database.
            kwargs["poolclass"] = sa.pool.StaticPool
            kwargs["connect_args"] = {"check_same_thread": False}
    else:
        kwargs["pool_pre_ping"] = True  # a restarted server must not fail the next write
        if parsed.get_driver_name() == "psycopg":
            kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = sa.create_engine(parsed, **kwargs)
    except ImportError as exc:
        raise ConfigurationError(f"database driver for {shown!r} is not installed: {exc}") from None
    except (sa_exc.ArgumentError, TypeError, ValueError) as exc:
        raise ConfigurationError(f"unusable database URL {shown!r}: {exc}") from None
    if read_only:
        listener = _sqlite_reader_pragmas if backend == "sqlite" else _pg_reader_session
        sa.event.listen(engine, "connect", listener)
    elif backend == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        if private_file:
            sa.event.listen(engine, "do_connect", _owner_only(private_file))
    return engine


class SqliteCalls:
    """The SQLite calls this process's threads are in, which a fork waits for.

    SQLite's own locks are not fork-safe: a child forked while another thread was inside
    SQLite (a query, the viewer's page) was seen to hang in its first connection to the
    file. So a fork closes the gate (new calls wait), waits up to ``FORK_WAIT`` for the
    calls in flight to end, and opens it again after; the child starts with none. Calls
    do not wait for each other, only for a fork; the forking thread's own calls do not
    count. PostgreSQL storages never enter.
    """

    FORK_WAIT = 5.0  # seconds, as the writer's wait for its write in flight

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._in: dict[int, int] = {}  # thread ident -> calls it is in
        self._forking = False

    def enter(self) -> None:
        me = threading.get_ident()
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._in[me] = self._in.get(me, 0) + 1

    def leave(self) -> None:
        me = threading.get_ident()
        with self._cond:
            n = self._in.pop(me) - 1
            if n:
                self._in[me] = n
            else:
                self._cond.notify_all()

    def before_fork(self) -> None:
        me = threading.get_ident()
        deadline = time.monotonic() + self.FORK_WAIT
        with self._cond:
            self._forking = True
            while any(t != me for t in self._in):
                left = deadline - time.monotonic()
                if left <= 0:
                    log.warning("actiontrace: forking while another thread is inside "
                                "SQLite (waited %.0f s): the child may hang", self.FORK_WAIT)
                    return
                self._cond.wait(left)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()

    def after_fork_in_child(self) -> None:
        self.__init__()  # type: ignore[misc]  # the other threads are not here


sqlite_calls = SqliteCalls()
at_fork("sqlite", before=sqlite_calls.before_fork,
        after_in_parent=sqlite_calls.after_fork_in_parent,
        after_in_child=sqlite_calls.after_fork_in_child)
