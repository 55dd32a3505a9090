"""What differs between SQLite and PostgreSQL, as one object per dialect.

``SqlAlchemyTraceStorage`` holds a ``Sqlite`` or a ``Postgres`` and asks it, instead of
testing the dialect: how a batch of parts becomes rows and reaches the database, how ids
and JSON come back from text queries, how inputs are matched, and how percentiles are
computed.

Writes bypass SQLAlchemy's statement layer: one transaction per batch, on the raw DBAPI
cursor with precomputed parameters: multi-row INSERTs on SQLite, COPY on PostgreSQL
(docs/performance.md: Core's executemany reached ~95k rows/s on SQLite where the raw
cursor reaches ~135k, and multi-row statements more). JSON documents are inserted as the
text the recorder already encoded, never re-encoded.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import re
import sqlite3
import uuid
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import msgspec
import sqlalchemy as sa

from actiontrace._exceptions import StorageUnavailable
from actiontrace._model import ActionFilter, PerformanceMetrics
from actiontrace.recording._ids import as_uuid
from actiontrace.recording._record import Part, sql_rows_of
from actiontrace.storage import _partitions, _sqlite_inputs, _sqltext
from actiontrace.storage._schema import actions

__all__ = ["Dialect", "Postgres", "Sqlite", "for_engine"]

Row = tuple[Any, ...]
Connect = Callable[[], contextlib.AbstractContextManager[sa.Connection]]


def _shared_targets(part_edges: list[tuple[str, str, str, int]]) -> set[tuple[str, str]]:
    """(target, synchronization) pairs that more than one edge of the part leads to."""
    if len(part_edges) < 2:
        return set()
    seen: set[tuple[str, str]] = set()
    shared = set()
    for _f, t, sync, _c in part_edges:
        if (t, sync) in seen:
            shared.add((t, sync))
        seen.add((t, sync))
    return shared


def _part_depth(rows: list[Row], part_edges: list[tuple[str, str, str, int]],
                ids: dict[str, Row]) -> int | None:
    """The longest causal path of a self-contained part (``ids``: its action ids), or
    None when it is not one (see ``_sql``'s module doc, "Causal depth")."""
    if not rows:
        return None
    incoming: dict[str, tuple[int, str]] = {}
    for f, t, _sync, created in part_edges:
        if t not in ids:
            return None  # an edge into another part: recompute at query time
        got = incoming.get(t)
        if got is None or created < got[0]:
            incoming[t] = (created, f)
    return _depth(rows, {t: f for t, (_created, f) in incoming.items()})


def _depth(rows: list[Row], causes: dict[str, str]) -> int | None:
    """The longest causal path of a part's rows, or None (as ``_part_depth``): a row's
    cause is its entry in ``causes`` (the source of the edge into it), else its parent."""
    if not rows:
        return None
    depth: dict[str, int] = {}
    best = 0
    cause_of = causes.get
    for row in rows:
        aid = row[0]
        cause = cause_of(aid) or row[2]
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


class Batch:
    """A batch of parts as the rows of each table, in the dialect's parameter types."""

    __slots__ = ("actions", "edges", "flows", "foreign", "logs")

    def __init__(self) -> None:
        self.flows: list[Row] = []
        self.actions: list[Row] = []
        self.edges: list[Row] = []
        self.foreign: list[str] = []  # edges into actions of other parts: those flows go stale
        self.logs: list[Row] = []


class Dialect:
    """The behaviour one database needs; a subclass per dialect."""

    name: ClassVar[str]
    sql: ClassVar[dict[str, str]]
    #: Text as the database accepts it (PostgreSQL rejects NUL).
    text: Callable[[str], str]
    #: A JSON document, from the encoded bytes the recorder made, as a parameter.
    json: Callable[[bytes], str]
    #: A boolean as a parameter.
    flag: Callable[[bool], Any] = staticmethod(bool)

    def batch(self, parts: Sequence[Part]) -> Batch:
        """The rows of ``parts``, ids as 32 hex digits.

        The writer pays for every step here while the application waits for the GIL:
        the common part (each edge the only one into its target, every target in the
        part) takes one loop over its edges and one over its rows; the general one
        (``_part_depth``, ``_shared_targets``) gives the same rows for it
        (tests/test_sql_storage.py compares them). Callgrind, a batch of 1,250
        seed-shaped parts: 125.4M -> 117.7M instructions (-1,530 per action).
        """
        text, json, flag = self.text, self.json, self.flag
        out = Batch()
        add_flow, add_edge, add_log = out.flows.append, out.edges.append, out.logs.append
        add_actions = out.actions.extend
        for part, (rows, hexes) in zip(parts, sql_rows_of(parts), strict=True):
            token = rows[0][1] if rows else part.token.to_bytes(16).hex()
            rid = part.root_id
            root = None if rid is None else hexes.get(rid) or rid.to_bytes(16).hex()
            part_edges = part.sql_edges(hexes)
            if not part_edges:
                depth = _depth(rows, {})
            else:
                by_id = {row[0]: row for row in rows}
                causes = {e[1]: e[0] for e in part_edges}
                if len(causes) == len(part_edges) and causes.keys() <= by_id.keys():
                    depth = _depth(rows, causes)
                    for f, t, sync, created in part_edges:
                        target = by_id[t]
                        add_edge((f, t, text(sync), token, created,
                                  None if target[7] == "running" else target[6]))
                else:
                    depth = _part_depth(rows, part_edges, by_id)
                    self._edges(out, part_edges, by_id, token)
            add_flow((token, root, part.created_at, text(part.module), depth,
                      flag(part.sampled)))
            add_actions(self.action_rows(rows))
            for lid, aid, ts, level, event, fields in part.log_events:
                add_log((
                    lid.to_bytes(16).hex(), token,
                    None if aid is None else hexes.get(aid) or aid.to_bytes(16).hex(),
                    ts, text(level), text(event), json(fields),
                ))
        return out

    def _edges(self, out: Batch, part_edges: list[tuple[str, str, str, int]],
               by_id: dict[str, Row], token: str) -> None:
        """Add a part's edges to ``out``, in general: some into the same target, or
        into other parts (whose flows go stale)."""
        text = self.text
        shared = _shared_targets(part_edges)
        for f, t, sync, created in part_edges:
            target = by_id.get(t)
            if target is None:
                out.foreign.append(t)
                duration = None
            elif target[7] == "running" or (shared and (t, sync) in shared):
                duration = None  # not final, or not this edge's alone: looked up
            else:
                duration = target[6]
            out.edges.append((f, t, text(sync), token, created, duration))

    def action_rows(self, rows: list[Row]) -> list[Row]:
        """``FlowPart.sql_rows`` rows as insert parameters."""
        raise NotImplementedError

    def write(self, cur: Any, batch: Batch, index_every: int) -> None:
        """Insert ``batch`` on the driver's cursor (inside the caller's transaction)."""
        raise NotImplementedError

    def before_write(self, connect: Connect, parts: Sequence[Part]) -> None:
        """Prepare the database for ``parts`` before their transaction (PostgreSQL: the
        partitions they need); never raises."""

    def forget_layout(self) -> None:
        """Look at the tables' partitioning again before the next write."""

    def json_column(self, col: Any) -> Any:
        """A JSON column as the encoded text ``_capture.decode`` reads."""
        return col

    def begin_write(self, conn: sa.Connection) -> None:
        """Start ``conn``'s transaction so that what it reads stays true until commit."""

    def delete_index_rows(self, conn: sa.Connection, flow_tokens: list[uuid.UUID]) -> None:
        """Remove the index rows of these flows' actions the database does not remove
        by itself (before the actions)."""

    def chain_column(self, name: str) -> str:
        """Column ``name`` of alias ``a`` in the text of the causal-chain query."""
        return f"a.{name}"

    def hex_of(self, col: Any) -> Any:
        """An id column as its 32 hex digits (SQLite stores exactly that)."""
        return sa.type_coerce(col, sa.Text)

    def id_param(self, value: uuid.UUID) -> Any:
        """An id as a parameter of a text query."""
        return value

    def id_value(self, raw: Any) -> uuid.UUID:
        """An id as a text query returns it."""
        return raw  # type: ignore[no-any-return]

    def candidates(self, filter: ActionFilter) -> Any:
        """A clause that narrows ``filter``'s inputs lookup through an index the planner
        would not pick by itself, or None."""
        return None

    def inputs_clauses(self, wanted: dict[str, Any]) -> list[Any]:
        """SQL true for actions whose inputs hold ``wanted``'s members, equal."""
        raise NotImplementedError

    def sync_performance(self, conn: sa.Connection, sync_name: str) -> PerformanceMetrics:
        """Duration statistics of the actions ``sync_name`` produced."""
        raise NotImplementedError

    @staticmethod
    def durations_on_edges(conn: sa.Connection, sync_name: str) -> bool:
        """Whether ``sync_name``'s durations can be read from its edges' index alone."""
        return _durations_on_edges(conn, sync_name)


class Sqlite(Dialect):
    name = "sqlite"
    sql = _sqltext.SQLITE
    text = staticmethod(str)
    # str, not the encoded bytes: sqlite3 binds str directly, while bytes (and None)
    # first go through its adapter lookup, whose failed attribute lookup formats an
    # AttributeError each time (~2,000 instructions).
    json = staticmethod(bytes.decode)
    # int, not bool: a bool (not exactly an int) goes through the same adapter lookup.
    flag = staticmethod(int)

    def __init__(self) -> None:
        self._max_vars: int | None = None
        # Replaceable (a test writes with an older schema that has no input index).
        self.index_inputs: Callable[[Any, int], None] = _sqlite_inputs.index_inputs

    def action_rows(self, rows: list[Row]) -> list[Row]:
        return rows  # sql_rows gives what sqlite3 binds

    def write(self, cur: Any, batch: Batch, index_every: int) -> None:
        if self._max_vars is None:
            # Bound parameters one statement may hold: 32,766 since SQLite 3.32, 999 before.
            self._max_vars = cur.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        limit = self._max_vars
        _sqlite_insert(cur, "flow", batch.flows, limit)
        _sqlite_insert(cur, "action", batch.actions, limit)
        self.index_inputs(cur, index_every)
        _sqlite_insert(cur, "edge", batch.edges, limit)
        _sqlite_insert(cur, "log", batch.logs, limit)
        if batch.foreign:
            cur.executemany(self.sql["stale"], [(t,) for t in batch.foreign])

    def id_param(self, value: uuid.UUID) -> Any:
        return value.hex

    def begin_write(self, conn: sa.Connection) -> None:
        # The write lock now (waiting up to busy_timeout), not at the first write: the
        # rows read before it could change meanwhile.
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    def delete_index_rows(self, conn: sa.Connection, flow_tokens: list[uuid.UUID]) -> None:
        conn.execute(_sqlite_inputs.DELETE_INPUT_VALUES,
                     {"tokens": [t.hex for t in flow_tokens]})

    def id_value(self, raw: Any) -> uuid.UUID:
        # Text queries get SQLite's raw CHAR(32) hex ids back.
        return as_uuid(int(raw, 16))

    def candidates(self, filter: ActionFilter) -> Any:
        if not filter.inputs or filter.flow_token is not None:
            return None
        return _sqlite_inputs.by_value(filter.inputs, filter.concept_uri, filter.action)

    def inputs_clauses(self, wanted: dict[str, Any]) -> list[Any]:
        return _sqlite_inputs.inputs_clauses(wanted)

    def sync_performance(self, conn: sa.Connection, sync_name: str) -> PerformanceMetrics:
        params = {"sync": sync_name}
        perf = _sqltext.SQLITE_PERF.replace("{produced}", _produced(conn, sync_name))
        count, mean = conn.execute(sa.text(perf.format(tail="count(*), avg(v)")), params).one()
        if not count:
            return PerformanceMetrics(0, None, None, None, None)
        figures = []
        for q in (0.5, 0.95, 0.99):
            # Linear interpolation between the closest ranks (as _model.percentile).
            pos = q * (count - 1)
            lo = int(pos)
            vals = [r[0] for r in conn.execute(
                sa.text(perf.format(tail="v") + " ORDER BY v LIMIT 2 OFFSET :lo"),
                {**params, "lo": lo},
            )]
            hi = vals[1] if len(vals) > 1 else vals[0]
            figures.append(float(vals[0] + (hi - vals[0]) * (pos - lo)))
        return PerformanceMetrics(count, float(mean), *figures)


def _durations_on_edges(conn: sa.Connection, sync_name: str) -> bool:
    """Whether every edge of ``sync_name`` carries its target's duration (one probe)."""
    missing = conn.execute(sa.text(_sqltext.EDGE_DURATIONS_MISSING), {"sync": sync_name})
    return missing.scalar() == 0


def _produced(conn: sa.Connection, sync_name: str) -> str:
    """The query of the durations ``sync_name`` produced: from its edges' index when every
    edge carries its target's duration, else by the actions."""
    return _sqltext.PERF_FROM_EDGES if _durations_on_edges(conn, sync_name) else _sqltext.PRODUCED


@functools.lru_cache(maxsize=64)  # 4 kinds x (SQLITE_ROWS and the 10 powers of two below)
def _sqlite_multi(kind: str, width: int, n_rows: int) -> str:
    row = _sqltext.SQLITE_ROW[kind]
    assert row.count("?") == width, (kind, width)
    return _sqltext.SQLITE_STATEMENT[kind](", ".join([row] * n_rows))


def _sqlite_insert(cur: Any, kind: str, rows: list[Row], max_vars: int) -> None:
    """Insert ``rows`` with ``kind``'s statement, in multi-row chunks (_sqltext.SQLITE_ROWS)."""
    if not rows:
        return
    width = len(rows[0])
    k = 1 << (max(1, min(_sqltext.SQLITE_ROWS, max_vars // width)).bit_length() - 1)
    flatten = itertools.chain.from_iterable
    n = len(rows)
    full = n - n % k
    if full:
        sql = _sqlite_multi(kind, width, k)
        for i in range(0, full, k):
            cur.execute(sql, list(flatten(rows[i:i + k])))
    # The rest in chunks of 2**j rows: a statement per set bit of its count, of a few
    # fixed texts that stay prepared, where executemany stepped once per row. Each step
    # lets go of the GIL, and while the application runs the writer waits up to the
    # switch interval (5 ms) to win it back: the rests of a 5,000-action batch of
    # seed-shaped requests were ~300 single-row steps (docs/performance.md).
    i = full
    while i < n:
        size = 1 << ((n - i).bit_length() - 1)
        cur.execute(_sqlite_multi(kind, width, size), list(flatten(rows[i:i + size])))
        i += size


# JSONB rejects the \u0000 escape and TEXT rejects NUL bytes: NUL becomes U+FFFD there.
# The lookbehind keeps an escaped backslash followed by "u0000" (the text `\u0000`) intact.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _pg_json(data: str) -> str:
    if "\\u0000" in data:
        data = _JSON_NUL.sub(r"\1\\ufffd", data)
    return data


def _pg_json_bytes(data: bytes) -> str:
    return _pg_json(data.decode())


def _pg_text(s: str) -> str:
    return s.replace("\x00", "\ufffd") if "\x00" in s else s


class LayoutChanged(StorageUnavailable):
    """The tables were partitioned (or put back) since the writer last looked: the batch
    can be written again at once, after a new look (``write_parts`` does, once)."""


class Postgres(Dialect):
    name = "postgresql"
    sql = _sqltext.POSTGRESQL
    text = staticmethod(_pg_text)
    json = staticmethod(_pg_json_bytes)

    def __init__(self) -> None:
        self._tables = _partitions.WriterView()

    def forget_layout(self) -> None:
        self._tables.layout = None

    @property
    def partitioned(self) -> bool:
        """Whether the last look found the tables partitioned (``_partitions``)."""
        return self._tables.partitioned

    def before_write(self, connect: Connect, parts: Sequence[Part]) -> None:
        self._tables.before_write(connect, parts)

    def action_rows(self, rows: list[Row]) -> list[Row]:
        # NUL is rare: one test per name and document, the replacing calls and a copy of
        # the list only for a row that holds one (4 calls per action cost ~1,000
        # instructions, docs/performance.md).
        out = rows
        for k, (a, t, p, c, n, ts, d, st, i, o) in enumerate(rows):
            if "\\u0000" in i or "\\u0000" in o or "\x00" in c or "\x00" in n:
                if out is rows:
                    out = list(rows)
                out[k] = (a, t, p, _pg_text(c), _pg_text(n), ts, d, st, _pg_json(i), _pg_json(o))
        return out

    def write(self, cur: Any, batch: Batch, index_every: int) -> None:
        import psycopg

        sql = _PG_PARTITIONED if self.partitioned else self.sql
        tables = (("flows", "flow", batch.flows), ("actions", "action", batch.actions),
                  ("edges", "edge", batch.edges), ("log_events", "log", batch.logs))
        try:
            # New rows are COPYed straight into their tables, all four under one
            # savepoint: each row written once, no sort for DISTINCT ON (the writer's
            # wait on the server went down by ~30%), and 5 statements per batch instead
            # of 12 with a savepoint per table (each a round trip, after which the writer
            # waits for the GIL). A batch seen before (a retry after a lost commit
            # acknowledgement), an action stored running or a flow's second part (in this
            # batch or stored) conflicts: then the batch goes through the temporary
            # tables' upserts instead (docs/performance.md).
            def put(bulk: Callable[[str, list[Row]], None]) -> None:
                for table, kind, rows in tables:
                    if len(rows) >= _sqltext.PG_COPY_MIN:
                        bulk(table, rows)
                    elif rows:
                        cur.executemany(sql[kind], rows)

            cur.execute("SAVEPOINT actiontrace_copy")
            try:
                put(lambda table, rows: _pg_copy(cur, table, rows))
            except psycopg.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT actiontrace_copy")
                put(lambda table, rows: _pg_copy_upsert(cur, table, rows, self.partitioned))
        except psycopg.errors.InvalidColumnReference as exc:
            # "no unique constraint matching the ON CONFLICT specification": the tables
            # were partitioned (or put back) since the last look. Look again, retry.
            self.forget_layout()
            raise LayoutChanged(
                "the tables' partitioning changed during the write; retrying") from exc
        if batch.foreign:
            cur.executemany(sql["stale"], [(t,) for t in batch.foreign])

    def json_column(self, col: Any) -> Any:
        return sa.cast(col, sa.Text)

    def chain_column(self, name: str) -> str:
        return f"CAST(a.{name} AS TEXT)" if name in ("inputs", "outputs") else f"a.{name}"

    def hex_of(self, col: Any) -> Any:
        # PostgreSQL's text form of a UUID has dashes.
        return sa.func.replace(sa.cast(col, sa.Text), "-", "")

    def inputs_clauses(self, wanted: dict[str, Any]) -> list[Any]:
        col = actions.c.inputs

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

    def sync_performance(self, conn: sa.Connection, sync_name: str) -> PerformanceMetrics:
        perf = _sqltext.PG_PERF.format(produced=_produced(conn, sync_name))
        row = conn.execute(sa.text(perf), {"sync": sync_name}).one()
        count = row[0]
        if not count:
            return PerformanceMetrics(0, None, None, None, None)
        return PerformanceMetrics(count, float(row[1]), float(row[2]), float(row[3]),
                                  float(row[4]))


# The statements naming a conflict target, for partitioned tables (_partitions).
_PG_PARTITIONED = {k: _partitions.conflict_sql(v) for k, v in _sqltext.POSTGRESQL.items()}


def _pg_copy(cur: Any, table: str, rows: list[Row]) -> None:
    with cur.copy(f"COPY actiontrace_{table} ({_sqltext.PG_COPY[table][0]}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _pg_copy_upsert(cur: Any, table: str, rows: list[Row], partitioned: bool = False) -> None:
    cols, upsert = _sqltext.PG_COPY[table]
    if partitioned:
        upsert = _partitions.conflict_sql(upsert)
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


def for_engine(engine: sa.Engine) -> Dialect:
    """The dialect object for ``engine`` (None of the others is supported)."""
    return {"sqlite": Sqlite, "postgresql": Postgres}[engine.dialect.name]()
