"""``SqlAlchemyTraceStorage``: SQLite and PostgreSQL through SQLAlchemy Core.

Writes bypass SQLAlchemy's statement layer: one transaction per batch, on the raw DBAPI
cursor with precomputed parameters: multi-row INSERTs on SQLite, COPY on PostgreSQL
(docs/performance.md: Core's executemany reached ~95k rows/s on
SQLite where the raw cursor reaches ~135k, and multi-row statements more). JSON
documents are inserted as the text the recorder already encoded, never re-encoded.

Filtering by input values: a GIN index on PostgreSQL; on SQLite, which cannot index JSON
members, a table of (key, value, action) that the writer fills in bulk
(``_sqlite_index_inputs``), the newest actions being scanned until then.

Queries are SQLAlchemy Core (or, for the recursive ones, dialect-specific SQL text) and
every analyzer call is an SQL aggregate: nothing loads all traces into Python.

Causal depth (``longest_chains``): when a flow arrives whole, in a single part whose
every cause (earliest incoming edge, else parent) lies inside the part, the writer
computes its longest causal path in Python (the part is in hand) and stores it in
``actiontrace_flows.max_depth``. Anything else -- a second part of a flow (e.g. a
``continue_flow`` from another process, which may arrive before or after the flow's
start), a cause outside the part, an edge into another part -- sets ``max_depth`` to NULL,
and ``longest_chains`` recomputes those flows with a recursive CTE at query time. So
parts may arrive in any order and the answer stays correct, while the common case (one
part per flow) costs one indexed scan.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import re
import sqlite3
import threading
import time
import urllib.parse
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from actiontrace._capture import decode
from actiontrace._exceptions import (
    ActionNotFound,
    ConfigurationError,
    SchemaOutdated,
    StorageError,
    TraceNotFound,
)
from actiontrace._ids import as_uuid
from actiontrace._model import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    FlowSummary,
    LogEvent,
    PerformanceMetrics,
    ProvenanceEdge,
    Status,
)
from actiontrace._options import DEFAULT_URL
from actiontrace._record import Part
from actiontrace._state import at_fork
from actiontrace.storage._base import IdKind, TraceStorage, prefix_bounds
from actiontrace.storage._schema import actions, edges, flows, input_values, log_events

__all__ = ["SqlAlchemyTraceStorage", "make_engine", "mask_url"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
MAX_CHAIN = 10_000  # causal chains longer than this are cut (a guard, not a real limit)

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
            text = str(exc).lower()
            if ("locked" not in text and "busy" not in text) or time.monotonic() >= deadline:
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


# -- PostgreSQL text sanitizing --------------------------------------------------------------

# JSONB rejects the \u0000 escape and TEXT rejects NUL bytes: NUL becomes U+FFFD there.
# The lookbehind keeps an escaped backslash followed by "u0000" (the text `\u0000`) intact.
_JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")


def _pg_json(data: bytes) -> str:
    if b"\\u0000" in data:
        data = _JSON_NUL.sub(rb"\1\\ufffd", data)
    return data.decode("utf-8")


def _pg_text(s: str) -> str:
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


# -- write-time depth ---------------------------------------------------------------------------


def _hexid(value: int) -> str:
    """A 128-bit id as 32 hex digits (3x faster than "{:032x}".format)."""
    return value.to_bytes(16).hex()


def _part_depth(rows: list[tuple[Any, ...]], part_edges: list[tuple[str, str, str, int]],
                ids: set[str]) -> int | None:
    """The longest causal path of a self-contained part (``ids``: its action ids), or
    None when it is not one."""
    if not rows:
        return None
    incoming: dict[str, tuple[int, str]] = {}
    for f, t, _sync, created in part_edges:
        if t not in ids:
            return None  # an edge into another part: recompute at query time
        got = incoming.get(t)
        if got is None or created < got[0]:
            incoming[t] = (created, f)
    depth: dict[str, int] = {}
    best = 0
    for row in rows:
        aid = row[0]
        edge = incoming.get(aid)
        cause = edge[1] if edge is not None else row[2]
        if cause is None:
            d = 1
        else:
            above = depth.get(cause)
            if above is None:
                return None  # cause outside the part, or recorded later (unusual)
            d = above + 1
        depth[aid] = d
        if d > best:
            best = d
    return best


# -- the storage --------------------------------------------------------------------------------

_STORAGES: weakref.WeakSet[SqlAlchemyTraceStorage] = weakref.WeakSet()
_INHERITED: list[Any] = []  # pools inherited across fork; never used nor closed


def _after_fork_in_child() -> None:
    for storage in list(_STORAGES):
        storage._after_fork_in_child()


at_fork("storage", after_in_child=_after_fork_in_child)



class SqlAlchemyTraceStorage(TraceStorage):
    """Traces in SQLite or PostgreSQL, through SQLAlchemy 2 Core.

    Args:
        url_or_engine: a URL (``sqlite:///actiontrace.db``,
            ``postgresql+psycopg://user:pw@host/db``) or an ``Engine``.
        read_only: only read (the command line's reading commands, the viewer): the
            database is never changed, not even its SQLite journal mode; a SQLite file
            that does not exist is not created, and a database without actiontrace
            tables is refused (``SchemaOutdated`` naming ``actiontrace db upgrade``)
            instead of being given them. Writes raise ``StorageError``.

    Nothing connects to a server here: the schema is checked (and, for a database with
    no actiontrace tables, created) on first use, so an unreachable server only delays
    writes, which the tracer's writer retries.

    Raises:
        ConfigurationError: the URL is unusable (see ``make_engine``).
    """

    def __init__(self, url_or_engine: str | sa.URL | sa.Engine = DEFAULT_URL, *,
                 read_only: bool = False) -> None:
        self.read_only = read_only
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
            self._owns_engine = False
        else:
            self.engine = make_engine(url_or_engine, read_only=read_only)
            self._owns_engine = True
        self.dialect = self.engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ConfigurationError(f"unsupported database dialect {self.dialect!r}")
        self._pg = self.dialect == "postgresql"
        self._ready = False
        self._ready_lock = threading.Lock()
        self._sql = _PG_SQL if self._pg else _SQLITE_SQL
        self._sqlite_vars: int | None = None
        _STORAGES.add(self)

    def _after_fork_in_child(self) -> None:
        # The parent's pooled connections (and any pool or schema lock its writer held
        # at the fork) must not be used here: a new pool, same engine. close=False leaves
        # the parent's connections alone (SQLAlchemy's documented recipe for fork).
        self._ready_lock = threading.Lock()
        # Keep the old pool referenced: collected, its connections would be closed from
        # here (for psycopg, a Terminate sent on the parent's socket).
        _INHERITED.append(self.engine.pool)
        self.engine.dispose(close=False)

    def __repr__(self) -> str:
        return f"<SqlAlchemyTraceStorage {self.engine.url.render_as_string(hide_password=True)}>"

    # -- lifecycle ---------------------------------------------------------------------------

    def _ensure(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                from actiontrace.storage._migrate import check_schema, ensure_schema

                if self.read_only:
                    check_schema(self.engine)
                else:
                    ensure_schema(self.engine)
                self._ready = True

    def close(self) -> None:
        """Dispose of the engine's connections (when this storage created the engine)."""
        if self._owns_engine:
            self.engine.dispose()

    def is_transient(self, exc: BaseException) -> bool:
        """Whether retrying the same write later may succeed (the database was away)."""
        if isinstance(exc, SchemaOutdated):
            # Behind head: someone is (or should be) running `actiontrace db upgrade`; keep
            # the backlog meanwhile. Ahead of us: this process will never catch up.
            return "upgrade actiontrace" not in str(exc)
        if isinstance(exc, sa_exc.DBAPIError):
            if exc.connection_invalidated:
                return True
            orig = exc.orig
            if self._pg:
                try:
                    import psycopg
                except ImportError:  # pragma: no cover
                    return isinstance(exc, sa_exc.OperationalError)
                return isinstance(orig, psycopg.OperationalError | psycopg.InterfaceError)
            msg = str(orig).lower()
            return isinstance(exc, sa_exc.OperationalError) and any(
                s in msg for s in ("locked", "busy", "unable to open", "disk i/o", "full",
                                   "readonly")  # read-only: until someone fixes the mode
            )
        if isinstance(exc, sa_exc.DisconnectionError | sa_exc.TimeoutError):
            return True
        # A raw DBAPI error: write_parts runs executemany on the driver's own cursor, so
        # "database is locked", "disk is full" or a server shutting down mid-batch arrive
        # unwrapped. Classify them as their SQLAlchemy wrapper (they used to be taken for
        # bad data, and dropped after three attempts).
        import sqlite3

        if isinstance(exc, sqlite3.Error):
            operational = isinstance(exc, sqlite3.OperationalError)
            cls = sa_exc.OperationalError if operational else sa_exc.DatabaseError
            return self.is_transient(cls(None, None, exc))
        if self._pg:
            try:
                import psycopg
            except ImportError:  # pragma: no cover
                pass
            else:
                if isinstance(exc, psycopg.Error):
                    return self.is_transient(sa_exc.DBAPIError(None, None, exc))
        return isinstance(exc, OSError | TimeoutError)

    def describe_error(self, exc: BaseException) -> str:
        """One short line for logs, with passwords masked."""
        inner = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
        lines = str(inner).strip().splitlines()
        text = lines[0] if lines else ""
        text = f"{type(inner).__name__}: {text}" if text else type(inner).__name__
        return mask_url(text)[:300]

    # -- writes ------------------------------------------------------------------------------

    def write_parts(self, parts: Sequence[Part]) -> None:
        """Store a batch of parts in one transaction; idempotent, parts merge."""
        if self.read_only:
            raise StorageError("this storage was opened read_only: it cannot store traces")
        self._ensure()
        pg = self._pg
        hexid = _hexid
        flow_rows = []
        action_rows: list[tuple[Any, ...]] = []
        edge_rows = []
        foreign: list[str] = []  # edges into actions of other parts: those flows go stale
        log_rows: list[tuple[Any, ...]] = []
        for part in parts:
            rows, hexes = part.sql_rows()
            token = hexid(part.token)
            module = _pg_text(part.module) if pg else part.module
            root = None if part.root_id is None else hexid(part.root_id)
            part_edges = [
                (hexes.get(f) or hexid(f), hexes.get(t) or hexid(t), sync, created)
                for f, t, sync, created in part.edges
            ]
            ids = {row[0] for row in rows}
            flow_rows.append((
                token, root, part.created_at, module, _part_depth(rows, part_edges, ids),
                part.sampled,
            ))
            if pg:
                action_rows.extend([
                    (a, t, p, _pg_text(c), _pg_text(n), ts, d, st, _pg_json(i), _pg_json(o))
                    for a, t, p, c, n, ts, d, st, i, o in rows
                ])
            else:
                # str, not the encoded bytes: sqlite3 binds str directly, while bytes (and
                # None) first go through its adapter lookup, whose failed attribute lookup
                # formats an AttributeError each time (~2,000 instructions).
                action_rows.extend([
                    (a, t, p, c, n, ts, d, st, i.decode(), o.decode())
                    for a, t, p, c, n, ts, d, st, i, o in rows
                ])
            for f, t, sync, created in part_edges:
                edge_rows.append((f, t, _pg_text(sync) if pg else sync, token, created))
                if t not in ids:
                    foreign.append(t)
            for lid, _tok, aid, ts, level, event, fields in part.log_rows():
                log_rows.append((
                    hexid(lid), token, None if aid is None else hexid(aid), ts,
                    _pg_text(level) if pg else level, _pg_text(event) if pg else event,
                    _pg_json(fields) if pg else fields.decode(),
                ))
        sql = self._sql
        with self.engine.begin() as conn:
            cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            try:
                if not pg:
                    limit = self._max_vars(conn)
                    _sqlite_insert(cur, "flow", flow_rows, limit)
                    _sqlite_insert(cur, "action", action_rows, limit)
                    self._sqlite_index_inputs(cur)
                    _sqlite_insert(cur, "edge", edge_rows, limit)
                    _sqlite_insert(cur, "log", log_rows, limit)
                else:
                    for table, kind, rows_ in (("flows", "flow", flow_rows),
                                               ("actions", "action", action_rows),
                                               ("edges", "edge", edge_rows),
                                               ("log_events", "log", log_rows)):
                        if len(rows_) >= _PG_COPY_MIN and table in _PG_COPY:
                            _pg_copy_upsert(cur, table, rows_)
                        elif rows_:
                            cur.executemany(sql[kind], rows_)
                if foreign:
                    cur.executemany(sql["stale"], [(t,) for t in foreign])
            finally:
                cur.close()

    # Actions are added to actiontrace_input_values in bulk, once this many have arrived
    # since the last time: a B-tree keyed by value takes a page write per distinct value
    # per transaction, so indexing each 5,000-action batch made SQLite's work 2.8x longer
    # (docs/performance.md). Queries scan the (at most this many) newest actions instead.
    input_index_every = 20_000

    def _sqlite_index_inputs(self, cur: Any) -> None:
        # Inside the write transaction (the inserts above took SQLite's write lock), so
        # no other process moves the state or adds actions until commit.
        top = cur.execute(_SQLITE_LAST_ROWID).fetchone()[0] or 0
        start = cur.execute(_SQLITE_INDEX_START).fetchone()[0]
        if top - start >= self.input_index_every:
            cur.execute(_SQLITE_INPUT_VALUES, (start, top))
            cur.execute(_SQLITE_SET_STATE, (top, top))

    def _max_vars(self, conn: sa.Connection) -> int:
        # Bound parameters one statement may hold: 32,766 since SQLite 3.32, 999 before.
        if self._sqlite_vars is None:
            raw: Any = conn.connection.driver_connection
            self._sqlite_vars = raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return self._sqlite_vars

    # -- reading helpers ---------------------------------------------------------------------

    def _columns(self) -> list[Any]:
        a = actions.c
        inputs: Any
        outputs: Any
        if self._pg:
            inputs, outputs = sa.cast(a.inputs, sa.Text), sa.cast(a.outputs, sa.Text)
        else:
            inputs, outputs = a.inputs, a.outputs
        return [a.id, a.flow_token, a.parent_id, a.concept_uri, a.action, a.timestamp,
                a.duration_us, a.status, inputs, outputs]

    @staticmethod
    def _record(row: Sequence[Any]) -> ActionRecord:
        return ActionRecord(
            id=row[0], flow_token=row[1], parent_id=row[2], concept_uri=row[3],
            action=row[4], timestamp=row[5], duration_us=row[6], status=row[7],
            inputs=decode(row[8]), outputs=decode(row[9]),
        )

    def _select_actions(self) -> sa.Select[Any]:
        return sa.select(*self._columns())

    def _fetch(self, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        self._ensure()
        with self.engine.connect() as conn:
            return list(conn.execute(stmt, params or {}))

    def _id_param(self, value: uuid.UUID) -> Any:
        return value if self._pg else value.hex

    # -- queries -----------------------------------------------------------------------------

    def get_trace(self, flow_token: uuid.UUID) -> ActionTrace:
        """The flow's trace, every stored part merged; raises ``TraceNotFound``."""
        self._ensure()
        f, a, e = flows.c, actions.c, edges.c
        with self.engine.connect() as conn:
            head = conn.execute(
                sa.select(f.root_action_id, f.created_at, f.module, f.sampled)
                .where(f.flow_token == flow_token)
            ).first()
            if head is None:
                raise TraceNotFound(f"no trace for flow {flow_token}")
            rows = conn.execute(
                self._select_actions().where(a.flow_token == flow_token)
                .order_by(a.timestamp, a.id)
            ).all()
            edge_rows = conn.execute(
                sa.select(e.from_action, e.to_action, e.synchronization, e.created_at)
                .where(e.flow_token == flow_token)
                .order_by(e.created_at, e.to_action, e.from_action)
            ).all()
            logs = self._logs(conn, flow_token)
        recs = [self._record(r) for r in rows]
        root = head[0] or flow_token  # the root's part has not arrived (see _base)
        return ActionTrace(
            flow_token=flow_token,
            root_action_id=root,
            actions={r.id: r for r in recs},
            provenance_edges=[ProvenanceEdge(*r) for r in edge_rows],
            created_at=head[1],
            module=head[2],
            logs=logs,
            sampled=bool(head[3]),
        )

    def _logs(self, conn: sa.Connection, flow_token: uuid.UUID) -> list[LogEvent]:
        g = log_events.c
        fields = sa.cast(g.fields, sa.Text) if self._pg else g.fields
        rows = conn.execute(
            sa.select(g.id, g.flow_token, g.action_id, g.timestamp, g.level, g.event, fields)
            .where(g.flow_token == flow_token).order_by(g.timestamp, g.id)
        ).all()
        return [LogEvent(r[0], r[1], r[2], r[3], r[4], r[5], decode(r[6])) for r in rows]

    # -- browsing ----------------------------------------------------------------------------

    def list_flows(
        self, limit: int = 20, since: int | None = None, *, until: int | None = None,
        before: tuple[int, uuid.UUID] | None = None, concept_uri: str | None = None,
        action: str | None = None, status: Status | None = None,
    ) -> list[FlowSummary]:
        """The most recent flows, newest first: one indexed scan, sizes counted per flow.

        Filters on the flow's actions are ``EXISTS`` probes through the (flow_token,
        timestamp) index, so a page stops as soon as it has ``limit`` flows.
        """
        f, a = flows.c, actions.c
        recent = sa.select(f.flow_token, f.root_action_id, f.created_at, f.module)
        if since is not None:
            recent = recent.where(f.created_at >= since)
        if until is not None:
            recent = recent.where(f.created_at <= until)
        if before is not None:
            at, token = before
            # The first bound is redundant, but lets the planner start the index range
            # scan at the cursor instead of filtering from the newest flow down.
            recent = recent.where(f.created_at <= at, sa.or_(
                f.created_at < at, sa.and_(f.created_at == at, f.flow_token < token)
            ))
        if concept_uri is not None or action is not None:
            match = []
            if concept_uri is not None:
                match.append(_concept_is(a.concept_uri, concept_uri))
            if action is not None:
                match.append(a.action == action)
            if concept_uri is not None and self._few(match):
                # Rare: the flows of the few matching actions (the concept index finds
                # them), instead of probing every flow for one (1.4 s at 1M actions for
                # a concept no flow holds; now a few ms).
                recent = recent.where(f.flow_token.in_(sa.select(a.flow_token).where(*match)))
            else:
                # Common: probing the newest flows finds a page of them quickly.
                recent = recent.where(
                    sa.select(sa.literal(1)).where(a.flow_token == f.flow_token, *match).exists()
                )
        if status is not None:
            # A literal, not a parameter: only then may SQLite use the partial index of
            # failed actions (a flow with none costs one index probe).
            failed = sa.select(sa.literal(1)).where(
                a.flow_token == f.flow_token, a.status == sa.literal_column("'error'")
            ).exists()
            root_ended = sa.select(sa.literal(1)).where(
                a.id == f.root_action_id, a.status == ("ok" if status == "ok" else "running")
            ).exists()
            if status == "error":
                recent = recent.where(failed)
            elif status == "ok":
                recent = recent.where(~failed, root_ended)
            else:
                recent = recent.where(root_ended)
        sub = recent.order_by(f.created_at.desc(), f.flow_token.desc()).limit(max(limit, 0)).subquery()
        root = actions.alias("root")
        n = sa.select(sa.func.count()).where(a.flow_token == sub.c.flow_token).scalar_subquery()
        errors = (
            sa.select(sa.func.count()).where(a.flow_token == sub.c.flow_token, a.status == "error")
            .scalar_subquery()
        )
        stmt = (
            sa.select(sub.c.flow_token, sub.c.created_at, sub.c.module, n, errors,
                      sub.c.root_action_id, root.c.concept_uri, root.c.action, root.c.status,
                      root.c.duration_us)
            .select_from(sub.outerjoin(root, root.c.id == sub.c.root_action_id))
            .order_by(sub.c.created_at.desc(), sub.c.flow_token.desc())
        )
        return [FlowSummary(*r) for r in self._fetch(stmt)]

    # list_flows(concept_uri=...): below this many matching actions, start from them.
    few_actions = 5_000

    def _few(self, match: list[Any]) -> bool:
        """Whether fewer than ``few_actions`` actions satisfy ``match`` (a bounded count)."""
        bound = self.few_actions
        some = sa.select(actions.c.id).where(*match).limit(bound).subquery()
        return bool(self._fetch(sa.select(sa.func.count()).select_from(some))[0][0] < bound)

    def resolve_prefix(self, prefix: str, kind: IdKind, limit: int = 2) -> list[uuid.UUID]:
        """Ids starting with ``prefix``: a range scan on the primary key."""
        _, low, high = prefix_bounds(prefix)
        col = flows.c.flow_token if kind == "flow" else actions.c.id
        stmt = sa.select(col).where(col.between(low, high)).order_by(col).limit(limit)
        return [r[0] for r in self._fetch(stmt)]

    def synchronization_links(self, newest: int | None = None) -> list[tuple[str, str, str, int]]:
        """Edges grouped by (trigger's action, synchronization, produced action).

        Each edge counted costs two primary-key lookups (2.5 s for 300,000 edges on
        SQLite). With ``newest``, one indexed query per synchronization reads only its
        newest edges (0.2-0.8 s for 300 synchronizations there, on a loaded machine; one
        window-function query over every edge took 0.75 s before any lookup).
        """
        e = edges.c
        src, dst = actions.alias("src"), actions.alias("dst")

        def ends(source: Any) -> Any:
            c = source.c
            return (
                sa.select(src.c.concept_uri, src.c.action, c.synchronization,
                          dst.c.concept_uri, dst.c.action)
                .select_from(source.outerjoin(src, src.c.id == c.from_action)
                             .outerjoin(dst, dst.c.id == c.to_action))
            )

        self._ensure()
        counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        with self.engine.connect() as conn:
            if newest is None:
                stmt = ends(edges)
                rows = conn.execute(
                    stmt.add_columns(sa.func.count()).group_by(*stmt.selected_columns)
                ).all()
                for r in rows:
                    counts[(_key(r[0], r[1]), r[2], _key(r[3], r[4]))] += r[5]
            else:
                names = conn.execute(sa.select(e.synchronization).distinct()).scalars().all()
                recent = ends(
                    sa.select(e.from_action, e.to_action, e.synchronization)
                    .where(e.synchronization == sa.bindparam("name"))
                    .order_by(e.created_at.desc()).limit(sa.bindparam("n")).subquery()
                )
                for name in names:
                    for r in conn.execute(recent, {"name": name, "n": newest}):
                        counts[(_key(r[0], r[1]), r[2], _key(r[3], r[4]))] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(f, s, t, n) for (f, s, t), n in ranked]

    def _hex_of(self, col: Any) -> Any:
        # SQLite stores a UUID as its 32 hex digits; PostgreSQL's text form has dashes.
        if self._pg:
            return sa.func.replace(sa.cast(col, sa.Text), "-", "")
        return sa.type_coerce(col, sa.Text)

    def resolve_suffix(self, suffix: str, kind: IdKind, limit: int = 2) -> list[uuid.UUID]:
        """Ids ending with ``suffix`` (hex digits): a scan of the primary key.

        UUIDv7 ids share their leading (time) digits, so their ends tell them apart.
        """
        digits, _, _ = prefix_bounds(suffix)
        col = flows.c.flow_token if kind == "flow" else actions.c.id
        stmt = (sa.select(col).where(self._hex_of(col).like("%" + digits)).order_by(col)
                .limit(limit))
        return [r[0] for r in self._fetch(stmt)]

    def short_ids(self, ids: Sequence[uuid.UUID], kind: IdKind,
                  min_digits: int = 8) -> dict[uuid.UUID, str]:
        """For each id, its shortest ending (``min_digits`` or more hex digits, in steps
        of 4) that names it alone in the store, read as a prefix or as a suffix.

        One scan of the ids per length tried (almost always one: 8 random digits).
        """
        col = flows.c.flow_token if kind == "flow" else actions.c.id
        out: dict[uuid.UUID, str] = {}
        pending = list(dict.fromkeys(ids))
        n = min_digits
        while pending and n < 32:
            want = {i: i.hex[-n:] for i in pending}
            tail = sa.func.substr(self._hex_of(col), 33 - n)
            stmt = (sa.select(tail).where(tail.in_(sorted(set(want.values()))))
                    .group_by(tail).having(sa.func.count() > 1))
            shared = {r[0] for r in self._fetch(stmt)}
            still = []
            for i, s in want.items():
                if s in shared or self.resolve_prefix(s, kind, limit=2) not in ([], [i]):
                    still.append(i)
                else:
                    out[i] = s
            pending, n = still, n + 4
        out.update((i, i.hex) for i in pending)
        return out

    def find_actions(self, filter: ActionFilter) -> list[ActionRecord]:
        """Actions matching ``filter``, oldest first (ties in recording order)."""
        a = actions.c
        stmt = self._select_actions()
        concept, name = a.concept_uri, a.action
        by_value = None
        if filter.inputs and not self._pg and filter.flow_token is None:
            by_value = _sqlite_by_value(filter.inputs, filter.concept_uri, filter.action)
            if by_value is not None:
                # The input-value index drives; the other filters are checked on its
                # candidates. Without statistics, SQLite's planner would rather walk the
                # concept index (75,000 actions of one concept/action at 1M), so those
                # columns are kept out of its reach with a unary +.
                concept, name = _unindexed(concept), _unindexed(name)
                stmt = stmt.where(by_value)
        if filter.concept_uri is not None:
            stmt = stmt.where(_concept_is(concept, filter.concept_uri))
        if filter.action is not None:
            stmt = stmt.where(name == filter.action)
        if filter.flow_token is not None:
            stmt = stmt.where(a.flow_token == filter.flow_token)
        if filter.time_range is not None:
            stmt = stmt.where(a.timestamp.between(*filter.time_range))
        if filter.inputs:
            stmt = stmt.where(*self._inputs_clauses(filter.inputs))
        stmt = stmt.order_by(a.timestamp, a.id)
        if filter.limit is not None:
            stmt = stmt.limit(filter.limit)
        return [self._record(r) for r in self._fetch(stmt)]

    def _inputs_clauses(self, wanted: dict[str, Any]) -> list[Any]:
        col = actions.c.inputs
        if self._pg:
            # Containment finds candidates; it is looser than equality for nested values
            # ({"a": {"x": 1, "y": 2}} contains {"a": {"x": 1}}), so those compare exactly.
            def contains(doc: Any) -> Any:
                text = sa.literal(msgspec.json.encode(doc).decode(), sa.Text)
                return col.op("@>", is_comparison=True)(sa.cast(text, col.type))

            plain = {k: v for k, v in wanted.items() if _float_twin(v) is None}
            clauses = [contains(plain)] if plain else []
            for k, v in wanted.items():
                twin = _float_twin(v)
                if twin is not None:
                    # jsonb compares numbers as exact decimals, Python as binary floats:
                    # 2**60 recorded as a float is stored 1.152921504606847e18.
                    clauses.append(sa.or_(contains({k: v}), contains({k: twin})))
                if isinstance(v, dict | list):
                    clauses.append(
                        col.op("->")(sa.literal(k, sa.Text))
                        == sa.cast(sa.literal(msgspec.json.encode(v).decode(), sa.Text), col.type)
                    )
            return clauses
        # A cheap necessary condition first: inputs are stored exactly as msgspec encodes
        # them (compact, deterministic escaping), so a record holding k == v contains the
        # text '"k":<v>' (for a number, at least '"k":'). instr() rules out most
        # rows before the JSON functions, which re-parse the document on every call,
        # run at all (docs/performance.md: 112 -> see there, at 1M actions).
        needles = [sa.func.instr(col, _needle(k, v)) > 0 for k, v in wanted.items()]
        return [sa.and_(
            *needles, sa.func.json_type(col) == "object", _sqlite_match(col, wanted, True),
        )]

    def find_producing_sync(self, action_id: uuid.UUID) -> str | None:
        """The synchronization of the action's earliest incoming edge, or None."""
        e = edges.c
        rows = self._fetch(
            sa.select(e.synchronization).where(e.to_action == action_id)
            .order_by(e.created_at, e.from_action).limit(1)
        )
        return rows[0][0] if rows else None

    def get_causal_chain(self, action_id: uuid.UUID) -> list[ActionRecord]:
        """Root first, the action last, in one recursive query; raises ``ActionNotFound``."""
        cols = ", ".join(
            f"CAST(a.{c} AS TEXT)" if self._pg and c in ("inputs", "outputs") else f"a.{c}"
            for c in _COLS
        )
        sql = self._sql["chain"].format(cols=cols)
        rows = self._fetch(sa.text(sql), {"id": self._id_param(action_id), "cap": MAX_CHAIN})
        if not rows:
            raise ActionNotFound(f"no action {action_id}")
        return [self._record(self._normalize(r)) for r in rows]

    def _normalize(self, row: Sequence[Any]) -> Sequence[Any]:
        if self._pg:
            return row
        # Text queries get SQLite's raw CHAR(32) hex ids back.
        h = row
        return (
            as_uuid(int(h[0], 16)), as_uuid(int(h[1], 16)),
            None if h[2] is None else as_uuid(int(h[2], 16)), *h[3:],
        )

    def find_by_sync(self, sync_name: str) -> list[ActionRecord]:
        """The actions a synchronization produced, oldest first."""
        a, e = actions.c, edges.c
        produced = sa.select(e.to_action).where(e.synchronization == sync_name)
        stmt = self._select_actions().where(a.id.in_(produced)).order_by(a.timestamp, a.id)
        return [self._record(r) for r in self._fetch(stmt)]

    # -- analysis ----------------------------------------------------------------------------

    def top_synchronizations(self, limit: int) -> list[tuple[str, int]]:
        """``(synchronization, edge count)``, most frequent first, ties by name."""
        e = edges.c
        n = sa.func.count().label("n")
        stmt = (
            sa.select(e.synchronization, n).group_by(e.synchronization)
            .order_by(n.desc(), e.synchronization).limit(limit)
        )
        return [(r[0], r[1]) for r in self._fetch(stmt)]

    def longest_chains(self, limit: int) -> list[tuple[uuid.UUID, int]]:
        """``(flow_token, depth)``, deepest first, ties oldest first."""
        if limit <= 0:
            return []
        self._ensure()
        f = flows.c
        found: list[tuple[int, int, uuid.UUID]] = []
        with self.engine.connect() as conn:
            # Flows whose depth was computed at write time: walk the (max_depth,
            # created_at) index one depth level at a time, deepest first.
            level = conn.execute(sa.select(sa.func.max(f.max_depth))).scalar()
            while level is not None and len(found) < limit:
                rows = conn.execute(
                    sa.select(f.flow_token, f.created_at).where(f.max_depth == level)
                    .order_by(f.created_at).limit(limit - len(found))
                ).all()
                found.extend((level, created, token) for token, created in rows)
                level = conn.execute(
                    sa.select(sa.func.max(f.max_depth)).where(f.max_depth < level)
                ).scalar()
            # Flows that arrived in several parts (or with outside causes): recompute.
            stale = conn.execute(
                sa.text(self._sql["depth"]), {"cap": MAX_CHAIN, "limit": limit}
            ).all()
        for raw_token, depth, created in stale:
            token = raw_token if self._pg else as_uuid(int(raw_token, 16))
            found.append((depth, created, token))
        found.sort(key=lambda t: (-t[0], t[1]))
        return [(token, depth) for depth, _, token in found[:limit]]

    def sync_performances(self, sync_names: Sequence[str]) -> dict[str, PerformanceMetrics]:
        """``sync_performance`` of several synchronizations in one query: the durations
        of the actions they produced, fetched sorted, the figures computed here.

        ``actiontrace stats`` used to ask four queries per synchronization (count and
        mean, then one per percentile), each finding the produced actions again: 10
        synchronizations took ~0.4 s at 1M actions, one query ~0.05 s
        (docs/performance.md).
        """
        names = list(dict.fromkeys(sync_names))
        if not names:
            return {}
        e, a = edges.c, actions.c
        produced = (
            sa.select(e.synchronization.label("sync"), e.to_action.label("id"))
            .where(e.synchronization.in_(names)).distinct().subquery()
        )
        stmt = (
            sa.select(produced.c.sync, a.duration_us)
            .select_from(produced.join(actions, a.id == produced.c.id))
            .where(a.duration_us.is_not(None))
        )
        found: dict[str, list[int]] = {name: [] for name in names}
        for sync, duration in self._fetch(stmt):
            found[sync].append(duration)
        return {name: PerformanceMetrics.from_durations(found[name]) for name in names}

    def sync_performance(self, sync_name: str) -> PerformanceMetrics:
        """Duration statistics of the actions the synchronization produced."""
        self._ensure()
        params = {"sync": sync_name}
        with self.engine.connect() as conn:
            if self._pg:
                row = conn.execute(sa.text(_PG_PERF), params).one()
                count = row[0]
                if not count:
                    return PerformanceMetrics(0, None, None, None, None)
                return PerformanceMetrics(
                    count, float(row[1]), float(row[2]), float(row[3]), float(row[4])
                )
            count, mean = conn.execute(sa.text(_SQLITE_PERF.format(tail="count(*), avg(v)")),
                                       params).one()
            if not count:
                return PerformanceMetrics(0, None, None, None, None)
            figures = []
            for q in (0.5, 0.95, 0.99):
                # Linear interpolation between the closest ranks (as _model.percentile).
                pos = q * (count - 1)
                lo = int(pos)
                vals = [r[0] for r in conn.execute(
                    sa.text(_SQLITE_PERF.format(tail="v") + " ORDER BY v LIMIT 2 OFFSET :lo"),
                    {**params, "lo": lo},
                )]
                hi = vals[1] if len(vals) > 1 else vals[0]
                figures.append(float(vals[0] + (hi - vals[0]) * (pos - lo)))
        return PerformanceMetrics(count, float(mean), *figures)


# -- SQLite JSON containment ------------------------------------------------------------------


def _key(concept_uri: str | None, action: str | None) -> str:
    """``concept_uri::action``, or ``"?"`` for an action no flow holds."""
    return "?" if concept_uri is None else f"{concept_uri}::{action}"


def _needle(key: str, value: Any) -> str:
    """Text every stored inputs document with ``key == value`` at the top level contains."""
    head = msgspec.json.encode(key).decode() + ":"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return head + msgspec.json.encode(value).decode()
    return head  # numbers (2 may be stored as 2.0, 1e16 or -0.0) and containers: the key


def _concept_is(col: Any, concept: str) -> Any:
    """``concept`` exactly, or a concept below it: a range scan over "concept::..."
    (":;" is the next string after "::")."""
    return sa.or_(col == concept, sa.and_(col >= concept + "::", col < concept + ":;"))


def _unindexed(col: Any) -> Any:
    return sa.literal_column(f"+{col.table.name}.{col.name}", col.type)


def _sqlite_by_value(wanted: dict[str, Any], concept: str | None, name: str | None) -> Any:
    """The candidates for ``wanted`` from the input-value index, or None when no wanted
    member can be looked up there: the actions it holds with one of the members (and the
    concept and action asked for), and the newest actions, which it does not hold yet (a
    rowid range). The exact comparison (``_inputs_clauses``) still decides."""
    for k, v in wanted.items():
        probe = _indexed_value(v)
        if probe is not None:
            iv = input_values.c
            lookup = sa.select(iv.action_id).where(
                iv.key == sa.literal(k, sa.Text), iv.value == probe)
            if concept is not None:
                lookup = lookup.where(_concept_is(iv.concept_uri, concept))
            if name is not None:
                lookup = lookup.where(iv.action == name)
            other = actions.alias("cand")
            rowid: Any = sa.literal_column("cand.rowid")
            indexed = sa.select(rowid).select_from(other).where(other.c.id.in_(lookup))
            newest = sa.select(rowid).select_from(other).where(
                rowid > sa.text(f"({_SQLITE_INDEX_START_EXPR})")
            )
            return sa.literal_column("actiontrace_actions.rowid").in_(
                sa.union_all(indexed, newest)
            )
    return None


def _float_twin(v: Any) -> Any:
    """For a whole number beyond 2**53 that a float holds exactly, its other form."""
    if isinstance(v, bool) or not isinstance(v, int | float) or abs(v) < 2**53:
        return None
    if isinstance(v, float):
        return int(v) if v.is_integer() else None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if f == v else None


def _indexed_value(v: Any) -> Any:
    """SQL for ``v`` as ``actiontrace_input_values.value`` holds it, or None when members
    equal to ``v`` are not all in that index (containers, inexact numbers)."""
    if v is None:
        return sa.literal("null", sa.Text)
    if isinstance(v, bool):
        return sa.literal(int(v), sa.Integer)  # json_each reads true as 1
    if isinstance(v, float):
        # SQLite may round a decimal text differently from Python in the last place;
        # whole numbers are exact either way.
        if not (v.is_integer() and abs(v) < 2**53):
            return None
        v = int(v)
    if isinstance(v, int):
        return sa.literal(v, sa.Integer) if -(2**63) <= v < 2**63 else None
    if isinstance(v, str):
        return sa.func.substr(sa.literal(v, sa.Text), 1, 64)
    return None


def _sqlite_path(key: str) -> str | None:
    # SQLite's JSON path syntax has no escape for '"' inside a quoted label, and reads a
    # backslash there as one (a key holding either never matched): scan those instead.
    return None if '"' in key or "\\" in key else f'$."{key}"'


_NUMERIC = ("integer", "real")


def _sqlite_value(typ: Any, val: Any, raw: Any, v: Any, top: bool) -> Any:
    """``typ``/``val``/``raw``: json_type, json_extract and JSON text of the member;
    ``v``: what is wanted."""
    if v is None:
        return typ == "null"
    if isinstance(v, bool):
        if top:  # True must not match 1 (the reference semantics only check the top level)
            return typ == ("true" if v else "false")
        return sa.and_(typ.in_((*_NUMERIC, "true", "false")), val == int(v))
    if isinstance(v, int) and not -(2**63) <= v < 2**63:
        # SQLite reads such numbers as lossy REALs: compare their JSON text instead.
        return sa.and_(typ == "integer", raw == str(v))
    if isinstance(v, int | float):
        kinds = _NUMERIC if top else (*_NUMERIC, "true", "false")
        return sa.and_(typ.in_(kinds), val == v)
    if isinstance(v, str):
        return sa.and_(typ == "text", val == v)
    return None  # dict / list: handled by the caller


def _sqlite_match(doc: Any, wanted: dict[str, Any], top: bool) -> Any:
    """SQL that is true when JSON object ``doc`` has ``wanted``'s members, equal."""
    clauses = []
    for k, v in wanted.items():
        path = _sqlite_path(k)
        if path is None:
            # Fall back to scanning the members (slower, but any key works).
            je = sa.func.json_each(doc).table_valued("key", "value", "type", "atom").alias()
            member = je.c.value
            cond = _sqlite_member(member, je.c.type, member, member, v, top)
            clauses.append(sa.exists().select_from(je).where(je.c.key == k, cond))
            continue
        p = sa.literal(path, sa.Text)
        typ, val = sa.func.json_type(doc, p), sa.func.json_extract(doc, p)
        raw = doc.op("->")(p)  # the member's JSON text, exactly as stored
        clauses.append(_sqlite_member(val, typ, val, raw, v, top))
    return sa.and_(sa.true(), *clauses)


def _sqlite_member(sub: Any, typ: Any, val: Any, raw: Any, v: Any, top: bool) -> Any:
    scalar = _sqlite_value(typ, val, raw, v, top)
    if scalar is not None:
        return scalar
    if isinstance(v, dict):
        # Equal dicts: every wanted member matches and there are no others.
        n = sa.select(sa.func.count()).select_from(
            sa.func.json_each(sub).table_valued("key").alias()
        ).scalar_subquery()
        return sa.and_(typ == "object", n == len(v), _sqlite_match(sub, v, False))
    if isinstance(v, list):
        conds = [typ == "array", sa.func.json_array_length(sub) == len(v)]
        for i, item in enumerate(v):
            p = sa.literal(f"$[{i}]", sa.Text)
            item_val = sa.func.json_extract(sub, p)
            conds.append(_sqlite_member(
                item_val, sa.func.json_type(sub, p), item_val, sub.op("->")(p), item, False,
            ))
        return sa.and_(*conds)
    # Anything else cannot come out of JSON: compare its encoded form.
    return val == msgspec.json.encode(v).decode()


# -- dialect SQL --------------------------------------------------------------------------------

_COLS = ("id", "flow_token", "parent_id", "concept_uri", "action", "timestamp",
         "duration_us", "status", "inputs", "outputs")
# PostgreSQL bulk path: COPY a batch into a temporary table, then one INSERT .. SELECT
# with the same conflict rules. psycopg's pipelined executemany reached ~30,000 actions/s
# here; COPY removes the per-row statement round trips (docs/performance.md).
# A flow's module is the one of the part holding its root (the process that started the
# flow), whichever part arrives first; SET expressions read the row as it was.
_MODULE_MERGE = (
    "CASE WHEN actiontrace_flows.root_action_id IS NULL AND excluded.root_action_id IS NOT NULL "
    "THEN excluded.module ELSE actiontrace_flows.module END"
)
_PG_COPY_MIN = 64  # below this, executemany is as fast and needs no temp table
_PG_COPY = {
    "actions": (
        "id, flow_token, parent_id, concept_uri, action, \"timestamp\", duration_us, status, "
        "inputs, outputs",
        # DISTINCT ON: the same id twice in one batch would make ON CONFLICT DO UPDATE fail.
        "INSERT INTO actiontrace_actions ({cols}) SELECT DISTINCT ON (id) {cols} FROM {tmp} "
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
        "duration_us = excluded.duration_us, outputs = excluded.outputs "
        "WHERE actiontrace_actions.status = 'running'",
    ),
    "flows": (
        "flow_token, root_action_id, created_at, module, max_depth, sampled",
        # Parts of one flow in the same batch merge here as they do across batches.
        "INSERT INTO actiontrace_flows ({cols}) SELECT flow_token, "
        "(array_agg(root_action_id) FILTER (WHERE root_action_id IS NOT NULL))[1], "
        "min(created_at), "
        "COALESCE((array_agg(module) FILTER (WHERE root_action_id IS NOT NULL))[1], "
        "min(module)), "
        "CASE WHEN count(*) = 1 THEN max(max_depth) END, bool_and(sampled) "
        "FROM {tmp} GROUP BY flow_token "
        "ON CONFLICT (flow_token) DO UPDATE SET "
        "sampled = actiontrace_flows.sampled AND excluded.sampled, "
        f"module = {_MODULE_MERGE}, "
        "root_action_id = COALESCE(excluded.root_action_id, actiontrace_flows.root_action_id), "
        "created_at = LEAST(actiontrace_flows.created_at, excluded.created_at), "
        "max_depth = NULL",
    ),
    "edges": (
        "from_action, to_action, synchronization, flow_token, created_at",
        "INSERT INTO actiontrace_edges ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT DO NOTHING",
    ),
}


# Tables whose rows, new, can be COPYed straight in: a batch seen before (a retry after
# a lost commit acknowledgement) or an action stored running (update merges) conflicts,
# and then the savepoint is rolled back and the batch upserted through the temporary
# table. Straight in, each row is written once instead of twice, and no sort runs for
# DISTINCT ON: the writer's wait on the server went down by ~30% (docs/performance.md).
_PG_DIRECT = ("actions", "edges")


def _pg_copy_upsert(cur: Any, table: str, rows: list[tuple[Any, ...]]) -> None:
    cols, upsert = _PG_COPY[table]
    if table in _PG_DIRECT:
        import psycopg

        cur.execute("SAVEPOINT actiontrace_copy")
        try:
            with cur.copy(f"COPY actiontrace_{table} ({cols}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
        except psycopg.errors.UniqueViolation:
            cur.execute("ROLLBACK TO SAVEPOINT actiontrace_copy")
        else:
            cur.execute("RELEASE SAVEPOINT actiontrace_copy")
            return
    tmp = f"actiontrace_copy_{table}"
    # A temporary table lives as long as the connection (the pool keeps it) and its rows
    # as long as the transaction.
    cur.execute(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {tmp} "
        f"(LIKE actiontrace_{table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    with cur.copy(f"COPY {tmp} ({cols}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
    cur.execute(upsert.format(cols=cols, tmp=tmp))


def _marks(n: int) -> str:
    return "(" + ", ".join("?" * n) + ")"


# SQLite: rows go in multi-row INSERTs of up to _SQLITE_ROWS rows. Python's sqlite3 lets
# go of the GIL around each statement step; with executemany that is once per row, and
# each time the writer must win the GIL back from the application thread (which holds it
# for up to sys.getswitchinterval()), so the writer crawled while the application was
# busy. One step per 200 rows does the same SQL work with 200 times fewer hand-overs, and
# SQLite parses and plans the statement once per chunk (docs/performance.md).
_SQLITE_ROWS = 200


@functools.lru_cache(maxsize=32)
def _sqlite_multi(kind: str, width: int, n_rows: int) -> str:
    row = _SQLITE_ROW[kind]
    assert row.count("?") == width, (kind, width)
    return _SQLITE_STATEMENT[kind](", ".join([row] * n_rows))


def _sqlite_insert(cur: Any, kind: str, rows: list[tuple[Any, ...]], max_vars: int) -> None:
    """Insert ``rows`` with ``kind``'s statement, in multi-row chunks."""
    if not rows:
        return
    width = len(rows[0])
    k = max(1, min(_SQLITE_ROWS, max_vars // width))
    full = len(rows) - len(rows) % k
    if k > 1 and full:
        sql = _sqlite_multi(kind, width, k)
        flat = [v for row in rows[:full] for v in row]
        step = k * width
        for i in range(0, len(flat), step):
            cur.execute(sql, flat[i:i + step])
    if full < len(rows):
        cur.executemany(_SQLITE_SQL[kind], rows[full:])


_SQLITE_LAST_ROWID = "SELECT max(rowid) FROM actiontrace_actions"
# The input-value index (_schema.input_values) covers the actions up to this rowid; the
# ones above it are scanned by queries. 0 when the state row is missing, or names an
# action that is not at its rowid any more (a VACUUM renumbered them): everything over.
_SQLITE_INDEX_START_EXPR = (
    "coalesce((SELECT CASE WHEN s.last_id = (SELECT a.id FROM actiontrace_actions a "
    "WHERE a.rowid = s.last_rowid) THEN s.last_rowid ELSE 0 END "
    "FROM actiontrace_input_values_state s WHERE s.name = 'inputs'), 0)"
)
_SQLITE_INDEX_START = "SELECT " + _SQLITE_INDEX_START_EXPR
# Index the actions in a rowid range, in one statement sorted by the index's key (one
# pass over its pages; SQLite walks the JSON without the GIL). Migration 0004 holds the
# same SQL for the actions stored before it.
_SQLITE_INPUT_VALUES = (
    "INSERT OR IGNORE INTO actiontrace_input_values (key, value, action_id, concept_uri, "
    "action) SELECT j.key, CASE j.type WHEN 'text' THEN substr(j.atom, 1, 64) "
    "WHEN 'null' THEN 'null' ELSE j.atom END, a.id, a.concept_uri, a.action "
    "FROM actiontrace_actions a, json_each(a.inputs) j "
    "WHERE a.rowid > ? AND a.rowid <= ? AND json_type(a.inputs) = 'object' "
    "AND j.type NOT IN ('object', 'array') ORDER BY 1, 2, 3"
)
_SQLITE_SET_STATE = (
    "INSERT INTO actiontrace_input_values_state (name, last_rowid, last_id) "
    "VALUES ('inputs', ?, (SELECT id FROM actiontrace_actions WHERE rowid = ?)) "
    "ON CONFLICT (name) DO UPDATE SET last_rowid = excluded.last_rowid, "
    "last_id = excluded.last_id"
)

_ACTION_INSERT = (
    "INSERT INTO actiontrace_actions (id, flow_token, parent_id, concept_uri, action, "
    '"timestamp", duration_us, status, inputs, outputs) VALUES {values} '
    "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
    "duration_us = excluded.duration_us, outputs = excluded.outputs "
    "WHERE actiontrace_actions.status = 'running'"
)
_FLOW_INSERT = (
    "INSERT INTO actiontrace_flows (flow_token, root_action_id, created_at, module, max_depth, "
    "sampled) VALUES {values} ON CONFLICT (flow_token) DO UPDATE SET "
    "sampled = actiontrace_flows.sampled AND excluded.sampled, "
    f"module = {_MODULE_MERGE}, "
    "root_action_id = COALESCE(excluded.root_action_id, actiontrace_flows.root_action_id), "
    "created_at = {least}(actiontrace_flows.created_at, excluded.created_at), "
    "max_depth = NULL"  # a second part: recompute the depth at query time
)
_EDGE_INSERT = (
    "INSERT INTO actiontrace_edges (from_action, to_action, synchronization, flow_token, "
    "created_at) VALUES {values} ON CONFLICT DO NOTHING"
)
_LOG_INSERT = (
    "INSERT INTO actiontrace_log_events (id, flow_token, action_id, \"timestamp\", level, "
    "event, fields) VALUES {values} ON CONFLICT (id) DO NOTHING"
)
_STALE = (
    "UPDATE actiontrace_flows SET max_depth = NULL WHERE flow_token = "
    "(SELECT flow_token FROM actiontrace_actions WHERE id = {p})"
)

# The cause of action a: its earliest incoming edge's source, else its parent.
_CAUSE = (
    "COALESCE((SELECT e.from_action FROM actiontrace_edges e WHERE e.to_action = {a}.id "
    "ORDER BY e.created_at, e.from_action LIMIT 1), {a}.parent_id)"
)

_SQLITE_CHAIN = f"""
WITH RECURSIVE chain(id, cause, n, path) AS (
    SELECT a.id, {_CAUSE.format(a="a")}, 0, a.id
    FROM actiontrace_actions a WHERE a.id = :id
    UNION ALL
    SELECT a.id, {_CAUSE.format(a="a")}, c.n + 1, c.path || ',' || a.id
    FROM chain c JOIN actiontrace_actions a ON a.id = c.cause
    WHERE c.n < :cap AND instr(c.path, a.id) = 0
)
SELECT {{cols}} FROM chain c JOIN actiontrace_actions a ON a.id = c.id ORDER BY c.n DESC
"""
_PG_CHAIN = f"""
WITH RECURSIVE chain(id, cause, n, path) AS (
    SELECT a.id, {_CAUSE.format(a="a")}, 0, ARRAY[a.id]
    FROM actiontrace_actions a WHERE a.id = :id
    UNION ALL
    SELECT a.id, {_CAUSE.format(a="a")}, c.n + 1, c.path || a.id
    FROM chain c JOIN actiontrace_actions a ON a.id = c.cause
    WHERE c.n < :cap AND a.id <> ALL(c.path)
)
SELECT {{cols}} FROM chain c JOIN actiontrace_actions a ON a.id = c.id ORDER BY c.n DESC
"""

# Depth of every action of the flows whose max_depth is NULL: walk up from each action
# through its causes (wherever they are stored), counting; a flow's depth is its maximum.
_DEPTH = """
WITH RECURSIVE walk(flow, cur, n, path) AS (
    SELECT a.flow_token, {cause_a}, 1, {path0}
    FROM actiontrace_flows f JOIN actiontrace_actions a ON a.flow_token = f.flow_token
    WHERE f.max_depth IS NULL
    UNION ALL
    SELECT w.flow, {cause_b}, w.n + 1, {path1}
    FROM walk w JOIN actiontrace_actions b ON b.id = w.cur
    WHERE w.n < :cap AND {guard}
)
SELECT w.flow, max(w.n) AS depth, min(f.created_at) AS created
FROM walk w JOIN actiontrace_flows f ON f.flow_token = w.flow
GROUP BY w.flow ORDER BY depth DESC, created LIMIT :limit
"""
_SQLITE_DEPTH = _DEPTH.format(
    cause_a=_CAUSE.format(a="a"), cause_b=_CAUSE.format(a="b"),
    path0="a.id", path1="w.path || ',' || b.id", guard="instr(w.path, b.id) = 0",
)
_PG_DEPTH = _DEPTH.format(
    cause_a=_CAUSE.format(a="a"), cause_b=_CAUSE.format(a="b"),
    path0="ARRAY[a.id]", path1="w.path || b.id", guard="b.id <> ALL(w.path)",
)

_PRODUCED = (
    "SELECT a.duration_us AS v FROM actiontrace_actions a WHERE a.id IN "
    "(SELECT e.to_action FROM actiontrace_edges e WHERE e.synchronization = :sync) "
    "AND a.duration_us IS NOT NULL"
)
_SQLITE_PERF = "SELECT {tail} FROM (" + _PRODUCED + ")"
_PG_PERF = (
    "SELECT count(*), avg(v), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY v), "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY v), "
    "percentile_cont(0.99) WITHIN GROUP (ORDER BY v) FROM (" + _PRODUCED + ") d"
)

# One row's VALUES of each SQLite insert, and the statement around any number of them.
_SQLITE_ROW = {
    "action": _marks(10),
    "flow": _marks(6),
    "edge": _marks(5),
    "log": _marks(7),
}
_SQLITE_STATEMENT: dict[str, Callable[[str], str]] = {
    "action": lambda values: _ACTION_INSERT.format(values=values),
    "flow": lambda values: _FLOW_INSERT.format(values=values, least="min"),
    "edge": lambda values: _EDGE_INSERT.format(values=values),
    "log": lambda values: _LOG_INSERT.format(values=values),
}
_SQLITE_SQL = {
    **{kind: make(_SQLITE_ROW[kind]) for kind, make in _SQLITE_STATEMENT.items()},
    "stale": _STALE.format(p="?"),
    "chain": _SQLITE_CHAIN,
    "depth": _SQLITE_DEPTH,
}
_PG_SQL = {
    "action": _ACTION_INSERT.format(
        values="(%s::uuid, %s::uuid, %s::uuid, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
    ),
    "flow": _FLOW_INSERT.format(values="(%s::uuid, %s::uuid, %s, %s, %s, %s)", least="LEAST"),
    "edge": _EDGE_INSERT.format(values="(%s::uuid, %s::uuid, %s, %s::uuid, %s)"),
    "stale": _STALE.format(p="%s::uuid"),
    "log": _LOG_INSERT.format(values="(%s::uuid, %s::uuid, %s::uuid, %s, %s, %s, %s::jsonb)"),
    "chain": _PG_CHAIN,
    "depth": _PG_DEPTH,
}
