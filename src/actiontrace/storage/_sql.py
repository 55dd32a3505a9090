"""``SqlAlchemyTraceStorage``: SQLite and PostgreSQL through SQLAlchemy Core.

The storage says *what* to store and ask; its dialect object (``_dialects``) says how,
on SQLite or PostgreSQL; the SQL text is in ``_sqltext``, SQLite's input-value index in
``_sqlite_inputs``, engines in ``_engine``. Every public method runs inside
``_errors.map_driver_errors``: callers see ``StorageUnavailable`` or ``StorageError``,
never a driver's exception.

Filtering by input values: a GIN index on PostgreSQL; on SQLite, which cannot index JSON
members, a table of (key, value, action) that the writer fills in bulk
(``_sqlite_inputs.index_inputs``), the newest actions being scanned until then.

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

import contextlib
import datetime as dt
import threading
import uuid
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from actiontrace._exceptions import ActionNotFound, ConfigurationError, StorageError, TraceNotFound
from actiontrace._model import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    LogEvent,
    PerformanceMetrics,
    ProvenanceEdge,
)
from actiontrace._state import at_fork
from actiontrace.recording._capture import decode
from actiontrace.recording._record import Part
from actiontrace.storage import _errors, _partitions, _retention
from actiontrace.storage._base import Pruned, TraceStorage
from actiontrace.storage._browse import Browsing
from actiontrace.storage._dialects import LayoutChanged, for_engine
from actiontrace.storage._engine import DEFAULT_URL, make_engine, mask_url, sqlite_calls
from actiontrace.storage._migrate import check_schema, ensure_schema
from actiontrace.storage._schema import actions, concept_is, edges, flows, log_events
from actiontrace.storage._sqlite_inputs import unindexed
from actiontrace.storage._sqltext import COLUMNS

__all__ = ["SqlAlchemyTraceStorage", "make_engine", "mask_url"]

MAX_CHAIN = 10_000  # causal chains longer than this are cut (a guard, not a real limit)

_STORAGES: weakref.WeakSet[SqlAlchemyTraceStorage] = weakref.WeakSet()
_INHERITED: list[Any] = []  # pools inherited across fork; never used nor closed


def _after_fork_in_child() -> None:
    for storage in list(_STORAGES):
        storage._after_fork_in_child()


at_fork("storage", after_in_child=_after_fork_in_child)


class SqlAlchemyTraceStorage(Browsing, TraceStorage):
    """Traces in SQLite or PostgreSQL, through SQLAlchemy 2 Core.

    Args:
        url_or_engine: a URL (``sqlite:///actiontrace.db``,
            ``postgresql+psycopg://user:pw@host/db``) or an ``Engine``.
        read_only: only read (the command line's reading commands, the viewer): the
            database is never changed, not even its SQLite journal mode; a SQLite file
            that does not exist is not created, and a database without actiontrace
            tables is refused (``SchemaBehind`` naming ``actiontrace db upgrade``)
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
        if self.engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"unsupported database dialect {self.engine.dialect.name!r}")
        self._dialect = for_engine(self.engine)
        self.dialect = self._dialect.name
        # A fork waits for this storage's calls into SQLite (_engine.SqliteCalls).
        self._sqlite_calls = sqlite_calls if self.dialect == "sqlite" else None
        self._ready = False
        self._ready_lock = threading.Lock()
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
        with _errors.map_driver_errors(), self._ready_lock:
            if not self._ready:
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
        return _errors.is_transient(exc)

    def describe_error(self, exc: BaseException) -> str:
        """One short line for logs, with passwords masked."""
        return _errors.describe_error(exc)

    @contextlib.contextmanager
    def _connect(self, begin: bool = False) -> Iterator[sa.Connection]:
        """A connection to a database at head, driver errors mapped (``_errors``)."""
        gate = self._sqlite_calls
        if gate is not None:
            gate.enter()
        try:
            with _errors.map_driver_errors():
                self._ensure()
                with self.engine.begin() if begin else self.engine.connect() as conn:
                    yield conn
        finally:
            if gate is not None:
                gate.leave()

    # -- writes ------------------------------------------------------------------------------

    def write_parts(self, parts: Sequence[Part]) -> None:
        """Store a batch of parts in one transaction; idempotent, parts merge."""
        if self.read_only:
            raise StorageError("this storage was opened read_only: it cannot store traces")
        batch = self._dialect.batch(parts)
        for retry in (False, True):
            self._dialect.before_write(self._connect, parts)
            try:
                with self._connect(begin=True) as conn:
                    cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
                    try:
                        self._dialect.write(cur, batch, self.input_index_every)
                    finally:
                        cur.close()
                return
            except LayoutChanged:
                if retry:  # partitioned again meanwhile: the caller's retries take it
                    raise

    # SQLite: actions are added to actiontrace_input_values in bulk, once this many have
    # arrived since the last time: a B-tree keyed by value takes a page write per distinct
    # value per transaction, so indexing each 5,000-action batch made SQLite's work 2.8x
    # longer (docs/performance.md). Queries scan the (at most this many) newest actions.
    input_index_every = 20_000

    # -- retention ---------------------------------------------------------------------------

    def prune_flows(self, before_us: int, *, dry_run: bool = False, batch_size: int = 500,
                    max_batches: int | None = None, exact: bool = True) -> Pruned:
        """Remove whole flows whose newest action started before ``before_us``, in
        batches of ``batch_size`` flows, one transaction each (``_retention``).

        On a partitioned PostgreSQL store (``partition``), each partition whose period
        ended before the cut is dropped whole (one batch) when none of its flows has a
        newer action; the other old flows go row-wise. ``exact=False`` (the writer's
        ``retention``) leaves the flows of partitions whose period is not over at the cut
        for later, when the partition is dropped: they outlive the cut by up to one
        period. Elsewhere ``exact`` changes nothing.
        """
        return _retention.prune_flows(self, before_us, dry_run=dry_run,
                                      batch_size=batch_size, max_batches=max_batches,
                                      exact=exact)

    def partition(self, period: float | dt.timedelta = 86400, *, ahead: int = 2) -> int:
        """Partition a PostgreSQL store's tables by flow start time (docs/retention.md).

        Every table holding a flow's rows becomes partitioned by ``flow_token`` (a
        UUIDv7: its first bits are the flow's start), one partition per ``period``
        (seconds or a ``timedelta``, at least 1 s; a day suits most stores), so ``prune_flows`` drops whole
        partitions instead of deleting rows. The rows already stored stay where they
        are, as one partition pruned row-wise until it is old enough to drop. Writers
        add partitions ahead of time by themselves. On a store already partitioned, this
        only adds partitions up to ``ahead`` periods from now (the period given applies to
        those made from now on). Returns how many periods' partitions were made.

        Raises:
            StorageError: not PostgreSQL, or a bad period.
            StorageUnavailable: the tables stayed locked by others (retry).
        """
        period_s = _partitions.period_seconds(self.dialect, period, ahead)
        if self.read_only:
            raise StorageError("this storage was opened read_only: it cannot change the tables")
        with self._connect() as conn:
            made = _partitions.partition(conn, period_s, ahead)
        self._dialect.forget_layout()
        return made

    # -- reading helpers ---------------------------------------------------------------------

    def _columns(self) -> list[Any]:
        a = actions.c
        inputs, outputs = self._dialect.json_column(a.inputs), self._dialect.json_column(a.outputs)
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
        with self._connect() as conn:
            return list(conn.execute(stmt, params or {}))

    # -- queries -----------------------------------------------------------------------------

    def get_trace(self, flow_token: uuid.UUID) -> ActionTrace:
        """The flow's trace, every stored part merged; raises ``TraceNotFound``."""
        f, a, e = flows.c, actions.c, edges.c
        with self._connect() as conn:
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
        fields = self._dialect.json_column(g.fields)
        rows = conn.execute(
            sa.select(g.id, g.flow_token, g.action_id, g.timestamp, g.level, g.event, fields)
            .where(g.flow_token == flow_token).order_by(g.timestamp, g.id)
        ).all()
        return [LogEvent(r[0], r[1], r[2], r[3], r[4], r[5], decode(r[6])) for r in rows]

    def find_actions(self, filter: ActionFilter) -> list[ActionRecord]:
        """Actions matching ``filter``, oldest first (ties in recording order)."""
        if (filter.concept_uri is not None and filter.limit is not None and not filter.inputs
                and filter.flow_token is None):
            found = self._find_by_names(filter, filter.concept_uri, filter.limit)
            if found is not None:
                return found
        a = actions.c
        stmt = self._select_actions()
        concept, name = a.concept_uri, a.action
        by_value = self._dialect.candidates(filter)
        if by_value is not None:
            # The input-value index drives; the other filters are checked on its
            # candidates. Without statistics, SQLite's planner would rather walk the
            # concept index (75,000 actions of one concept/action at 1M), so those
            # columns are kept out of its reach with a unary +.
            concept, name = unindexed(concept), unindexed(name)
            stmt = stmt.where(by_value)
        if filter.concept_uri is not None:
            stmt = stmt.where(concept_is(concept, filter.concept_uri))
        if filter.action is not None:
            stmt = stmt.where(name == filter.action)
        if filter.flow_token is not None:
            stmt = stmt.where(a.flow_token == filter.flow_token)
        if filter.time_range is not None:
            stmt = stmt.where(a.timestamp.between(*filter.time_range))
        if filter.inputs:
            stmt = stmt.where(*self._dialect.inputs_clauses(filter.inputs))
        stmt = stmt.order_by(a.timestamp, a.id)
        if filter.limit is not None:
            stmt = stmt.limit(filter.limit)
        return [self._record(r) for r in self._fetch(stmt)]

    # At most this many (concept, action) names are read one by one (_find_by_names).
    NAMES_APART = 32

    def _find_by_names(self, filter: ActionFilter, concept: str,
                       limit: int) -> list[ActionRecord] | None:
        """The oldest ``limit`` actions of a concept (and its sub-concepts), read name by
        name from the (concept_uri, action, timestamp) index, merged here; None when more
        than NAMES_APART names match.

        The one query for a prefix ("wkmp-ap::Cooldown") ORs two ranges of the index and
        sorts every matching action by time to keep the first 100: 224 ms at 1M actions.
        Here each name is found with one index seek past the previous one, and its oldest
        actions are the start of its index range.
        """
        a = actions.c

        def first(conn: sa.Connection, col: Any, *where: Any) -> Any:
            row = conn.execute(sa.select(col).where(*where).order_by(col).limit(1)).first()
            return None if row is None else row[0]

        names: list[tuple[str, str]] = []
        with self._connect() as conn:
            # The concept itself, then each concept below it: one index seek each.
            concepts = [] if first(conn, a.concept_uri, a.concept_uri == concept) is None else [
                concept]
            below = [a.concept_uri >= concept + "::", a.concept_uri < concept + ":;"]
            c = first(conn, a.concept_uri, *below)
            while c is not None and len(concepts) <= self.NAMES_APART:
                concepts.append(c)
                c = first(conn, a.concept_uri, a.concept_uri > c, below[1])
            for c in concepts:
                if filter.action is not None:  # is there such an action: one seek
                    if first(conn, a.action, a.concept_uri == c, a.action == filter.action):
                        names.append((c, filter.action))
                    continue
                n = first(conn, a.action, a.concept_uri == c)
                while n is not None:  # the concept's actions: one seek each
                    names.append((c, n))
                    n = first(conn, a.action, a.concept_uri == c, a.action > n)
                    if len(names) > self.NAMES_APART:
                        return None
            if len(names) > self.NAMES_APART or len(concepts) > self.NAMES_APART:
                return None
            rows: list[Any] = []
            for c, n in names:
                stmt = self._select_actions().where(a.concept_uri == c, a.action == n)
                if filter.time_range is not None:
                    stmt = stmt.where(a.timestamp.between(*filter.time_range))
                rows += conn.execute(stmt.order_by(a.timestamp, a.id).limit(limit)).all()
        rows.sort(key=lambda r: (r[5], r[0]))
        return [self._record(r) for r in rows[:limit]]

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
        d = self._dialect
        sql = d.sql["chain"].format(cols=", ".join(d.chain_column(c) for c in COLUMNS))
        rows = self._fetch(sa.text(sql), {"id": d.id_param(action_id), "cap": MAX_CHAIN})
        if not rows:
            raise ActionNotFound(f"no action {action_id}")
        return [self._record(self._normalize(r)) for r in rows]

    def _normalize(self, row: Sequence[Any]) -> Sequence[Any]:
        ident = self._dialect.id_value
        return (ident(row[0]), ident(row[1]), None if row[2] is None else ident(row[2]),
                *row[3:])

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
        f = flows.c
        found: list[tuple[int, int, uuid.UUID]] = []
        with self._connect() as conn:
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
                sa.text(self._dialect.sql["depth"]), {"cap": MAX_CHAIN, "limit": limit}
            ).all()
        for raw_token, depth, created in stale:
            found.append((depth, created, self._dialect.id_value(raw_token)))
        found.sort(key=lambda t: (-t[0], t[1]))
        return [(token, depth) for depth, _, token in found[:limit]]

    def sync_performance(self, sync_name: str) -> PerformanceMetrics:
        """Duration statistics of the actions the synchronization produced."""
        with self._connect() as conn:
            return self._dialect.sync_performance(conn, sync_name)

    def sync_performances(self, sync_names: Sequence[str]) -> dict[str, PerformanceMetrics]:
        """``sync_performance`` of several synchronizations (``actiontrace stats``).

        Those whose every edge carries its target's duration are answered from the
        edges' index (``_dialects.Dialect.sync_performance``, a few index walks each,
        however many actions they produced); the others in one query that fetches the
        durations of the actions they produced and computes the figures here (it
        replaced four queries per synchronization, each finding the produced actions
        again: 10 synchronizations at 1M actions 0.22-0.36 s -> 0.06 s,
        docs/performance.md).
        """
        names = list(dict.fromkeys(sync_names))
        out: dict[str, PerformanceMetrics] = {}
        with self._connect() as conn:
            slow = [n for n in names if not self._dialect.durations_on_edges(conn, n)]
            for name in names:
                if name not in slow:
                    out[name] = self._dialect.sync_performance(conn, name)
            if slow:
                e, a = edges.c, actions.c
                produced = (
                    sa.select(e.synchronization.label("sync"), e.to_action.label("id"))
                    .where(e.synchronization.in_(slow)).distinct().subquery()
                )
                stmt = (
                    sa.select(produced.c.sync, a.duration_us)
                    .select_from(produced.join(actions, a.id == produced.c.id))
                    .where(a.duration_us.is_not(None))
                )
                found: dict[str, list[int]] = {name: [] for name in slow}
                for sync, duration in conn.execute(stmt):
                    found[sync].append(duration)
                out.update((n, PerformanceMetrics.from_durations(found[n])) for n in slow)
        return {name: out[name] for name in names}
