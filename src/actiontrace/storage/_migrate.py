"""Run the bundled Alembic migrations, and check a database's revision on first use.

The migrations ship inside the wheel as ``actiontrace/migrations`` (pyproject's
force-include); in an editable install they are the checkout's top-level
``migrations/``. Alembic is imported only here, and only when needed: it takes
~100 ms to import.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from actiontrace._exceptions import SchemaAhead, SchemaBehind, StorageError
from actiontrace._state import at_fork
from actiontrace.storage._engine import SQLITE_BUSY_TIMEOUT_MS, make_engine
from actiontrace.storage._schema import VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

__all__ = [
    "check_schema",
    "current",
    "downgrade",
    "ensure_schema",
    "head",
    "migrations_dir",
    "upgrade",
]

UPGRADE_HINT = "run `actiontrace db upgrade`"

# The newest revision in migrations/versions (tests/test_migrations.py checks it against
# Alembic's own answer). A database already there is recognised without importing
# Alembic, which cost every command-line call ~0.45 s.
HEAD = "0007"
# Any constant: serializes concurrent first-use upgrades of one PostgreSQL database.
_PG_LOCK_KEY = 0x61637472  # "actr"

# -- fork during first use ----------------------------------------------------------------
# Held while this process checks or creates its schema on first use (any thread: the
# writer's first write, or a query). A fork waits for it: a child forked in the middle
# inherited a half-imported Alembic (its writes then failed with "cannot import name ...
# from partially initialized module", and were dropped), or SQLite's in-process lock
# table with the parent's write lock in it (every write of the child to that file was
# refused as "database is locked"). It is never held while waiting for another process's
# lock (``_lock_for_upgrade``), so a fork waits for an import and a few DDL statements.
_guard = threading.Lock()
FORK_WAIT = 30.0  # seconds a fork waits for that before going ahead (a one-time cost)
_held_for_fork = False


def _before_fork() -> None:
    global _held_for_fork
    _held_for_fork = _guard.acquire(timeout=FORK_WAIT)


def _after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _guard.release()


def _after_fork_in_child() -> None:
    global _guard, _held_for_fork
    _guard, _held_for_fork = threading.Lock(), False  # whoever held it is not here


at_fork("schema", before=_before_fork, after_in_parent=_after_fork_in_parent,
        after_in_child=_after_fork_in_child)


def migrations_dir() -> Path:
    """The directory holding ``env.py`` and ``versions/``."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "migrations", package.parents[1] / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StorageError(f"actiontrace's migrations are missing (looked in {package})")


def _config(connection: sa.Connection | None = None, location: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", location or str(migrations_dir()))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def _script(location: str | None = None) -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config(location=location))


def head(location: str | None = None) -> str:
    """The newest revision id of the bundled migrations (or those in ``location``)."""
    rev = _script(location).get_current_head()
    assert rev is not None
    return rev


def _engine(url_or_engine: str | sa.Engine) -> tuple[sa.Engine, bool]:
    if isinstance(url_or_engine, sa.Engine):
        return url_or_engine, False
    return make_engine(url_or_engine), True


def _run(url_or_engine: str | sa.Engine, fn: Any) -> Any:
    engine, owned = _engine(url_or_engine)
    try:
        with engine.connect() as conn:
            result = fn(conn)
            conn.commit()
            return result
    finally:
        if owned:
            engine.dispose()


def _read_revision(conn: sa.Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    rows = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    if len(rows) > 1:
        raise StorageError(f"{VERSION_TABLE} holds several revisions: {[r[0] for r in rows]}")
    return str(rows[0][0]) if rows else None


def current(url_or_engine: str | sa.Engine) -> str | None:
    """The database's actiontrace revision, or None when it has none."""
    revision: str | None = _run(url_or_engine, _read_revision)
    return revision


def upgrade(url_or_engine: str | sa.Engine, rev: str = "head") -> None:
    """Bring the database up to ``rev`` (default: the newest revision)."""
    from alembic import command

    _run(url_or_engine, lambda conn: command.upgrade(_config(conn), rev))


def downgrade(url_or_engine: str | sa.Engine, rev: str) -> None:
    """Take the database down to ``rev`` (``base`` removes every actiontrace table)."""
    from alembic import command

    _run(url_or_engine, lambda conn: command.downgrade(_config(conn), rev))


def _has_our_tables(conn: sa.Connection) -> bool:
    names = sa.inspect(conn).get_table_names()
    return any(n.startswith("actiontrace_") and n != VERSION_TABLE for n in names)


def _check(conn: sa.Connection, location: str | None) -> str | None:
    """Return None when the schema is at head, else "empty"; raise when it is unusable."""
    rev = _read_revision(conn)
    if location is None and rev == HEAD:
        return None
    want = head(location)
    if rev == want:
        return None
    if rev is None:
        if _has_our_tables(conn):
            raise SchemaBehind(
                "the database has actiontrace tables but no revision in "
                f"{VERSION_TABLE}; {UPGRADE_HINT} (or `alembic stamp`) to repair it"
            )
        return "empty"
    script = _script(location)
    try:
        known = script.get_revision(rev) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for unknown ids
        known = False
    if known:
        raise SchemaBehind(
            f"the database's actiontrace schema is at revision {rev}, this version "
            f"needs {want}: {UPGRADE_HINT}"
        )
    raise SchemaAhead(
        f"the database's actiontrace schema is at revision {rev}, which this version "
        f"of actiontrace does not know (it needs {want}); upgrade actiontrace"
    )


def check_schema(engine: sa.Engine, location: str | None = None) -> None:
    """Check, changing nothing, that the database holds actiontrace's schema at head.

    Raises:
        SchemaBehind: no actiontrace tables, or an older revision (the message names
            ``actiontrace db upgrade``).
        SchemaAhead: a revision this version does not know.
    """
    with _guard, engine.connect() as conn:  # (a fork waits: the check may import Alembic)
        if _check(conn, location) == "empty":
            raise SchemaBehind(
                f"{describe(engine)} has no actiontrace tables: {UPGRADE_HINT} to create "
                "them (or record something into it first, e.g. `actiontrace demo`)"
            )
        conn.rollback()


def describe(engine: sa.Engine) -> str:
    """``the SQLite database 'x.db'`` or ``the PostgreSQL database 'db'``, for messages."""
    url = engine.url
    if engine.dialect.name == "sqlite":
        path = url.database or ""
        from urllib.parse import unquote

        return f"the SQLite database {unquote(path.removeprefix('file:'))!r}"
    return f"the PostgreSQL database {url.database!r} on {url.host or 'localhost'}"


def ensure_schema(engine: sa.Engine, location: str | None = None) -> None:
    """Check the database is at head; create the schema if it holds none of ours.

    Raises ``SchemaBehind`` / ``SchemaAhead`` for a database at another revision. Two
    processes that start on one new database both succeed: the upgrade runs under a lock
    (SQLite's write lock, a PostgreSQL advisory lock), and the loser finds the schema at
    head.
    ``location`` is another migrations directory (for tests).
    """
    # _guard is held over all of it but the waits (connecting, another process's lock),
    # up to the connection's close: a fork may not land inside a SQLite call either.
    conn = engine.connect()
    _guard.acquire()
    held = True
    try:
        try:
            if _check(conn, location) is None:
                return  # the common case: one cheap look, no lock
        except (SchemaBehind, SchemaAhead):
            # Maybe only half-seen: the reads above are separate statements, and another
            # process may have committed the schema between them. Decide under the lock.
            pass
        conn.rollback()
        _guard.release()
        held = False
        _lock_for_upgrade(conn)  # holds _guard again from here
        held = True
        if _check(conn, location) is None:  # someone else created it meanwhile
            conn.commit()
            return
        from alembic import command

        command.upgrade(_config(conn, location), "head")
        conn.commit()
    finally:
        if not held:
            _guard.acquire()
        try:
            conn.close()
        finally:
            _guard.release()


def _lock_for_upgrade(conn: sa.Connection) -> None:
    """Take the upgrade lock (SQLite's write lock, a PostgreSQL advisory lock) and
    ``_guard`` with it; wait for another process's lock without holding ``_guard``.

    Each try takes the lock without waiting (busy_timeout 0, ``pg_try_advisory_xact_lock``)
    inside ``_guard``; between tries a fork may go ahead. SQLite gives up after its busy
    timeout, as one waiting ``BEGIN IMMEDIATE`` did; PostgreSQL waits as long as it must.
    """
    sqlite = conn.dialect.name == "sqlite"
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        _guard.acquire()
        try:
            if sqlite:
                conn.exec_driver_sql("PRAGMA busy_timeout = 0")
                try:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                    return
                except sa.exc.OperationalError as exc:
                    orig = exc.orig
                    code = getattr(orig, "sqlite_errorcode", None)
                    locked = isinstance(orig, sqlite3.OperationalError) and code is not None \
                        and code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED
                    if not locked or time.monotonic() >= deadline:
                        raise
                finally:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            elif conn.dialect.name == "postgresql":
                if conn.exec_driver_sql(
                        f"SELECT pg_try_advisory_xact_lock({_PG_LOCK_KEY})").scalar():
                    return
            else:
                return
            conn.rollback()
        except BaseException:
            _guard.release()
            raise
        _guard.release()
        time.sleep(delay)
        delay = min(delay * 2, 0.05)
