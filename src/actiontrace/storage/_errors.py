"""Driver errors become actiontrace's own, at one boundary (``map_driver_errors``).

SQLAlchemy, sqlite3 and psycopg each raise their own exception types, and the writer
reads its driver's cursor directly (so some arrive unwrapped). Every storage operation
runs inside ``map_driver_errors``, which raises instead (``from`` the original):

* ``StorageUnavailable``: retrying the same operation later may succeed: the server is
  down or restarting, the file is locked, busy, full, read-only or cannot be opened.
* ``StorageError``: anything else the database refused (a bad statement, bad data).

``SchemaBehind`` and ``SchemaAhead`` come from the schema check (``_migrate``). The
writer retries what ``is_transient`` says (``StorageUnavailable``, ``SchemaBehind``):
types, never message text, decide (as httpx's ``map_httpcore_exceptions`` does).
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Iterator

from sqlalchemy import exc as sa_exc

from actiontrace._exceptions import SchemaBehind, StorageError, StorageUnavailable
from actiontrace.storage._engine import mask_url

__all__ = ["describe_error", "is_transient", "map_driver_errors", "translate"]

# SQLite's primary result codes that a later retry may not meet again: SQLITE_BUSY,
# SQLITE_LOCKED, SQLITE_READONLY (until someone fixes the file's mode), SQLITE_IOERR,
# SQLITE_FULL, SQLITE_CANTOPEN (https://www.sqlite.org/rescode.html).
_SQLITE_TRANSIENT = frozenset({5, 6, 8, 10, 13, 14})


def _psycopg(exc: BaseException, *names: str) -> bool:
    """Whether ``exc`` is one of psycopg's ``names`` (only looked at when psycopg is
    loaded: a SQLite user need not have it installed)."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, tuple(getattr(psycopg, n) for n in names))


def _driver_transient(orig: BaseException) -> bool:
    """Whether a DBAPI driver's own error may go away by itself."""
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)  # set on every error SQLite reports
        return code is not None and code & 0xFF in _SQLITE_TRANSIENT
    return _psycopg(orig, "OperationalError", "InterfaceError")


def _is_driver_error(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.SQLAlchemyError | sqlite3.Error) or _psycopg(exc, "Error")


def _transient_driver_error(exc: BaseException) -> bool:
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return exc.orig is not None and _driver_transient(exc.orig)
    if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
        return True
    return _driver_transient(exc)


def _operational(exc: BaseException) -> bool:
    return isinstance(exc, sa_exc.OperationalError | sqlite3.OperationalError) or _psycopg(
        exc, "OperationalError")


def _inner(exc: BaseException) -> BaseException:
    """The driver's own error under ``exc`` (our type, and SQLAlchemy's wrapper)."""
    if isinstance(exc, StorageError) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def describe_error(exc: BaseException) -> str:
    """One short line for logs (``Type: first line``), with passwords masked."""
    inner = _inner(exc)
    lines = str(inner).strip().splitlines()
    text = lines[0] if lines else ""
    text = f"{type(inner).__name__}: {text}" if text else type(inner).__name__
    return mask_url(text)[:300]


def translate(exc: BaseException) -> StorageError | None:
    """Our exception for a driver's (or SQLAlchemy's) ``exc``; None when it is neither."""
    if isinstance(exc, StorageError) or not _is_driver_error(exc):
        return None
    line = describe_error(exc)
    detail = line.partition(": ")[2] or line
    if _transient_driver_error(exc):
        return StorageUnavailable(f"cannot use the database: {detail}")
    if _operational(exc):  # e.g. a table missing: the database, not the data
        return StorageError(f"cannot use the database: {detail}")
    return StorageError(line)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying the same write later may succeed (the database was away)."""
    if isinstance(exc, StorageUnavailable | SchemaBehind):
        return True
    if isinstance(exc, StorageError):
        return False  # SchemaAhead: this process will never catch up; bad data
    mapped = translate(exc)
    if mapped is not None:
        return isinstance(mapped, StorageUnavailable)
    return isinstance(exc, OSError | TimeoutError)


@contextlib.contextmanager
def map_driver_errors() -> Iterator[None]:
    """Raise ``StorageUnavailable`` / ``StorageError`` for driver errors inside the block."""
    try:
        yield
    except Exception as exc:
        mapped = translate(exc)
        if mapped is None:
            raise
        raise mapped from exc
