"""Time-partitioned PostgreSQL tables, opt-in: retention drops partitions (docs/retention.md).

``SqlAlchemyTraceStorage.partition()`` (``actiontrace partition``) turns every table that
holds a flow's rows (flows, actions, edges, log events) into a table partitioned by RANGE
of ``flow_token``. A flow token made by actiontrace is a UUIDv7, whose first 48 bits are
the flow's start in ms since the epoch, and PostgreSQL compares UUIDs byte-wise: a range
of tokens is a range of start times. Every process writing a part of a flow knows its
token, so all rows of one flow land in the partitions of one period, and the four
partitions of a period (one per table, same suffix: a *span*) hold whole flows.

* ``{table}_p{YYYYMMDDHHMMSS}``: the flows started in one period, from that moment (UTC).
* ``{table}_before``: the rows the tables held when they were partitioned (the old
  table itself, attached as the range below that moment: nothing is copied).
* ``{table}_default``: every other token, chiefly those that are not UUIDv7 (a W3C trace
  id from another system, whose first bits are random), and any whose partition did not
  exist yet. Pruned row-wise, as an unpartitioned store is.

The partition key must be in every unique key, so on a partitioned store the primary key
of actions and log events is ``(id, flow_token)`` and of edges ``(from_action, to_action,
synchronization, flow_token)``; upserts name ``(id, flow_token)`` as their conflict target
(``conflict_sql``). An action id belongs to one flow, so nothing changes in what is
unique. The conversion copies each table's columns, indexes and constraints from the
catalog, so it follows whatever revision the schema is at.

Partitions ahead of the writers: before a batch, a writer whose newest token comes
within one period of the newest partition creates the next ones (``extend``), under an
advisory lock, each partition built detached and attached with ``ATTACH PARTITION``
(SHARE UPDATE EXCLUSIVE on the parent: writers and readers of the parent go on); rows
that reached the default partition meanwhile are moved into the new one. Creating is
idempotent, so several writer processes may race to it.

Dropping (``drop_span``): a span whose whole period ended before the cut goes at once,
with ``DROP TABLE``, when none of its flows has an action at or after the cut (API rule:
a flow goes when its newest action started before the cut); the check and the drop run
under an ACCESS EXCLUSIVE lock on the span's four partitions, so no writer adds to them
in between. A span that fails the check is pruned row-wise (``_retention``) and dropped
later. Lock waits are bounded by ``lock_timeout``: a waiting ACCESS EXCLUSIVE request
would queue every later writer behind it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from actiontrace._exceptions import StorageError
from actiontrace.recording._record import Part
from actiontrace.storage._schema import actions, edges, flows, log_events

__all__ = [
    "TABLES",
    "Layout",
    "Span",
    "WriterView",
    "boundary_after",
    "conflict_sql",
    "convert",
    "drop_span",
    "extend",
    "layout",
    "partition",
    "period_seconds",
    "spans",
    "token_bound",
]

#: The partitioned tables, in the order writers lock them (locks are always taken in it).
TABLES = tuple(t.name for t in (flows, actions, edges, log_events))
_FLOWS = TABLES[0]
_COMMENT = "actiontrace: partitioned by flow_token, {period} s per partition"
_COMMENT_RE = re.compile(r"actiontrace: partitioned by flow_token, (\d+) s per partition")
_BOUND_RE = re.compile(r"FROM \((MINVALUE|'[0-9a-f-]+')\) TO \((MAXVALUE|'[0-9a-f-]+')\)")
# Any constant: with the schema, the advisory lock creators of partitions take turns on.
_LOCK_KEY = 0x61637470  # "actp"
#: How long a writer's partition step or a drop waits for a lock before giving up
#: (and trying again later): a waiting ACCESS EXCLUSIVE request holds up everyone after it.
LOCK_TIMEOUT = "2s"


def _lock_creators(conn: sa.Connection) -> None:
    """Creators of partitions of this store take turns (a transaction's advisory lock,
    keyed by the schema of the tables: stores in other schemas of the server go on)."""
    conn.exec_driver_sql(
        f"SELECT pg_advisory_xact_lock({_LOCK_KEY}, (SELECT relnamespace::int FROM pg_class "
        f"WHERE oid = to_regclass('{_FLOWS}')))")


def token_bound(ms: int) -> uuid.UUID:
    """The lowest UUIDv7 of millisecond ``ms`` (a partition bound)."""
    return uuid.UUID(int=ms << 80)


def _ms_of(literal: str) -> int | None:
    if literal in ("MINVALUE", "MAXVALUE"):
        return None
    return uuid.UUID(literal.strip("'")).int >> 80


@dataclasses.dataclass(frozen=True)
class Span:
    """The partitions of one range of tokens, one per table (same suffix)."""

    suffix: str  # "p20261201120000", "before" or "default"
    lo_ms: int | None  # None: from the lowest token (MINVALUE)
    hi_ms: int | None  # None: the default partition

    @property
    def regular(self) -> bool:
        """A period's partition (not ``before``, not ``default``)."""
        return self.lo_ms is not None and self.hi_ms is not None

    def name(self, table: str) -> str:
        return f"{table}_{self.suffix}"


@dataclasses.dataclass
class Layout:
    """What a writer needs to know of a store's partitioning (``layout``)."""

    partitioned: bool
    period_s: int = 0
    top_ms: int = 0  # the end of the newest period partition
    seen: float = dataclasses.field(default_factory=time.monotonic)


log = logging.getLogger("actiontrace")
Connect = Callable[[], contextlib.AbstractContextManager[sa.Connection]]


class WriterView:
    """A writer's knowledge of the store's partitioning (the PostgreSQL dialect's), and
    the partitions it adds ahead of its batches."""

    # How often a writer looks again at the store's partitioning (another process may
    # partition it, or add partitions), and how long it waits after failing to add one.
    LAYOUT_EVERY = 60.0
    EXTEND_RETRY = 10.0

    def __init__(self) -> None:
        self.layout: Layout | None = None
        self._extend_after = 0.0

    @property
    def partitioned(self) -> bool:
        return self.layout is not None and self.layout.partitioned

    def before_write(self, connect: Connect, parts: Sequence[Part]) -> None:
        """Look at the layout when due, and add the partitions ``parts`` need; never raises."""
        try:
            lay = self.layout
            if lay is None or time.monotonic() - lay.seen > self.LAYOUT_EVERY:
                with connect() as conn:
                    lay = self.layout = layout(conn)
                    conn.rollback()
            if lay.partitioned:
                self._extend(connect, lay, parts)
        except Exception as exc:  # noqa: BLE001 - the write itself will report the database
            log.debug("actiontrace: partition check failed: %s", exc)
            if self.layout is None:
                # Not again before each retry of a database that is down: in a few
                # seconds. Meanwhile writes assume no partitions; if there are, the
                # upsert's conflict target fails and the dialect forgets this.
                self.layout = Layout(
                    False, seen=time.monotonic() - self.LAYOUT_EVERY + self.EXTEND_RETRY)

    def _extend(self, connect: Connect, lay: Layout, parts: Sequence[Part]) -> None:
        """Create the partitions the batch's newest flows need, and one period beyond:
        a few ns per part, a transaction only when the newest partition is near."""
        period_ms = lay.period_s * 1000
        now_ms = time.time_ns() // 1_000_000
        cap = now_ms + 2 * period_ms  # later "UUIDv7" times: not ours (random ids): default
        newest = 0
        for p in parts:
            t = p.token
            if (t >> 76) & 0xF == 7:
                ms = t >> 80
                if newest < ms <= cap:
                    newest = ms
        if not newest or newest + period_ms <= lay.top_ms:
            return
        if time.monotonic() < self._extend_after:
            return
        try:
            with connect() as conn:
                conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                extend(conn, newest + period_ms)
                self.layout = layout(conn)
                conn.commit()
        except Exception as exc:  # noqa: BLE001 - the rows go to the default partition
            self._extend_after = time.monotonic() + self.EXTEND_RETRY
            log.warning("actiontrace: could not add partitions (%s); their flows go to the "
                        "default partition until then", exc)


def layout(conn: sa.Connection) -> Layout:
    """Whether the store is partitioned, its period, and how far its partitions reach."""
    row = conn.exec_driver_sql(
        "SELECT c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c "
        f"WHERE c.oid = to_regclass('{_FLOWS}')"
    ).first()
    if row is None or row[0] != "p":
        return Layout(False)
    m = _COMMENT_RE.fullmatch(row[1] or "")
    period = int(m.group(1)) if m else 86400
    top = max((s.hi_ms for s in spans(conn) if s.hi_ms is not None and s.lo_ms is not None),
              default=0)
    return Layout(True, period, top)


def spans(conn: sa.Connection) -> list[Span]:
    """The store's spans, oldest first (the default partition last)."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        f"JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass('{_FLOWS}')"
    ).all()
    out = []
    for name, bound in rows:
        suffix = name.removeprefix(_FLOWS + "_")
        if bound is None:
            continue  # dropped by another process while this was read
        if bound == "DEFAULT":
            out.append(Span(suffix, None, None))
            continue
        m = _BOUND_RE.search(bound)
        if m is None:  # pragma: no cover - a partition someone attached by hand
            continue
        out.append(Span(suffix, _ms_of(m.group(1)), _ms_of(m.group(2))))
    out.sort(key=lambda s: (s.hi_ms is None, s.lo_ms or 0))
    return out


def _suffix(lo_ms: int) -> str:
    return "p" + dt.datetime.fromtimestamp(lo_ms / 1000, dt.UTC).strftime("%Y%m%d%H%M%S")


def boundary_after(ms: int, period_s: int) -> int:
    """The first period boundary (a multiple of the period since the epoch) after ``ms``."""
    p = period_s * 1000
    return (ms // p + 1) * p


def conflict_sql(text: str) -> str:
    """An insert's text for a partitioned store: conflicts on ``(id, flow_token)``."""
    return text.replace("ON CONFLICT (id)", "ON CONFLICT (id, flow_token)")


def _q(conn: sa.Connection, sql: str, **params: Any) -> Any:
    return conn.execute(sa.text(sql), params)


def _create_span(conn: sa.Connection, lo_ms: int, hi_ms: int, has_default: bool) -> None:
    """Create and attach one period's partitions, moving into them the rows of their range
    that the default partition holds (inside the caller's transaction)."""
    lo, hi = str(token_bound(lo_ms)), str(token_bound(hi_ms))
    suffix = _suffix(lo_ms)
    for table in TABLES:
        part = f"{table}_{suffix}"
        if conn.exec_driver_sql(f"SELECT to_regclass('{part}')").scalar() is not None:
            continue  # made by another process (it held the advisory lock before us)
        conn.exec_driver_sql(f"LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE")
        conn.exec_driver_sql(
            f"CREATE TABLE {part} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING GENERATED)")
        # Lets ATTACH skip the scan of the new partition.
        conn.exec_driver_sql(
            f"ALTER TABLE {part} ADD CONSTRAINT {part}_range "
            f"CHECK (flow_token >= '{lo}' AND flow_token < '{hi}')")
        if has_default:
            default = f"{table}_default"
            conn.exec_driver_sql(f"LOCK TABLE {default} IN ACCESS EXCLUSIVE MODE")
            conn.exec_driver_sql(
                f"WITH moved AS (DELETE FROM {default} WHERE flow_token >= '{lo}' "
                f"AND flow_token < '{hi}' RETURNING *) INSERT INTO {part} SELECT * FROM moved")
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ATTACH PARTITION {part} FOR VALUES FROM ('{lo}') TO ('{hi}')")
        conn.exec_driver_sql(f"ALTER TABLE {part} DROP CONSTRAINT {part}_range")


def extend(conn: sa.Connection, until_ms: int, *, period_s: int | None = None) -> int:
    """Create period partitions from the newest one's end until ``until_ms`` is covered;
    returns how many spans were made (inside the caller's transaction, which should be
    short: commit soon after)."""
    _lock_creators(conn)
    lay = layout(conn)
    if not lay.partitioned:
        return 0
    period = period_s or lay.period_s
    have = spans(conn)
    has_default = any(s.hi_ms is None for s in have)
    top = lay.top_ms
    if not top:
        top = max((s.hi_ms or 0) for s in have) or until_ms
    made = 0
    while top < until_ms:
        nxt = boundary_after(top, period)
        _create_span(conn, top, nxt, has_default)
        top = nxt
        made += 1
    return made


def _indexes(conn: sa.Connection, table: str) -> list[tuple[str, str, bool, str | None, str]]:
    """(name, definition, unique, constraint name, constraint type) of ``table``'s indexes."""
    return [tuple(r) for r in conn.exec_driver_sql(
        "SELECT ci.relname, pg_get_indexdef(i.indexrelid), i.indisunique, con.conname, "
        "con.contype FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid "
        "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid "
        f"AND con.conrelid = i.indrelid WHERE i.indrelid = to_regclass('{table}')"
    ).all()]


def _constraint_columns(conn: sa.Connection, table: str, name: str) -> list[str]:
    return [r[0] for r in conn.exec_driver_sql(
        "SELECT a.attname FROM pg_constraint c, unnest(c.conkey) WITH ORDINALITY k(n, o) "
        "JOIN pg_attribute a ON a.attnum = k.n "
        f"WHERE c.conname = '{name}' AND c.conrelid = to_regclass('{table}') "
        f"AND a.attrelid = c.conrelid ORDER BY k.o"
    ).all()]


def convert(conn: sa.Connection, period_s: int, ahead: int, now_ms: int) -> int:
    """Partition every table of ``TABLES`` by ``flow_token`` (inside the caller's
    transaction, under ACCESS EXCLUSIVE locks on them); returns the period spans made.

    Each old table becomes the partition ``{table}_before`` of the tokens below
    ``now_ms``, so no row is copied but those above (tokens that are not UUIDv7, moved to
    the default partition): attaching it scans it once and builds its new primary key.
    """
    _lock_creators(conn)
    conn.exec_driver_sql(f"LOCK TABLE {', '.join(TABLES)} IN ACCESS EXCLUSIVE MODE")
    cut = str(token_bound(now_ms))
    for table in TABLES:
        old = f"{table}_before"
        indexes = _indexes(conn, table)
        keys: list[tuple[str, str, list[str]]] = []
        conn.exec_driver_sql(f"ALTER TABLE {table} RENAME TO {old}")
        for name, _definition, unique, con_name, con_type in indexes:
            if con_name is not None and con_type in ("p", "u"):
                cols = _constraint_columns(conn, old, con_name)
                keys.append((con_name, "PRIMARY KEY" if con_type == "p" else "UNIQUE", cols))
                conn.exec_driver_sql(
                    f"ALTER TABLE {old} RENAME CONSTRAINT {con_name} TO {con_name[:55]}_before")
            elif unique:
                raise StorageError(f"cannot partition {table}: unique index {name} is not a "
                                   "constraint")
            else:
                conn.exec_driver_sql(f"ALTER INDEX {name} RENAME TO {name[:55]}_before")
        # The rows above the cut go to the default partition (moved below).
        conn.exec_driver_sql(
            f"CREATE TEMPORARY TABLE actiontrace_moved_{table} (LIKE {old}) ON COMMIT DROP")
        conn.exec_driver_sql(
            f"WITH moved AS (DELETE FROM {old} WHERE flow_token >= '{cut}' RETURNING *) "
            f"INSERT INTO actiontrace_moved_{table} SELECT * FROM moved")
        conn.exec_driver_sql(
            f"CREATE TABLE {table} (LIKE {old} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
            "INCLUDING STORAGE INCLUDING GENERATED INCLUDING COMMENTS) "
            "PARTITION BY RANGE (flow_token)")
        for con_name, kind, cols in keys:
            quoted = ", ".join(f'"{c}"' for c in (
                cols if "flow_token" in cols else [*cols, "flow_token"]))
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD CONSTRAINT {con_name} {kind} ({quoted})")
        for _name, definition, unique, _con, _t in indexes:
            if not unique:  # the same text: its table name is the new table's now
                conn.exec_driver_sql(definition)
        for con_name, _kind, cols in keys:
            if "flow_token" not in cols:  # an old key without flow_token: replaced
                conn.exec_driver_sql(f"ALTER TABLE {old} DROP CONSTRAINT {con_name[:55]}_before")
        # ATTACH matches the old indexes to the new ones (kept, not rebuilt), builds the
        # new key's index, and checks every row is below the cut.
        conn.exec_driver_sql(
            f"ALTER TABLE {table} ATTACH PARTITION {old} FOR VALUES FROM (MINVALUE) TO ('{cut}')")
        conn.exec_driver_sql(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
    made = 0
    lo = now_ms
    for _ in range(ahead + 1):
        hi = boundary_after(lo, period_s)
        _create_span(conn, lo, hi, has_default=True)
        lo = hi
        made += 1
    for table in TABLES:
        conn.exec_driver_sql(f"INSERT INTO {table} SELECT * FROM actiontrace_moved_{table}")
    conn.exec_driver_sql(
        f"COMMENT ON TABLE {_FLOWS} IS '{_COMMENT.format(period=period_s)}'")
    return made


def period_seconds(dialect: str, period: float | dt.timedelta, ahead: int) -> int:
    """The period of ``SqlAlchemyTraceStorage.partition``'s arguments, in seconds.

    Raises:
        StorageError: not PostgreSQL, or a bad period or ``ahead``.
    """
    if dialect != "postgresql":
        raise StorageError(f"partitioned tables are a PostgreSQL feature; this store is {dialect}")
    seconds = period.total_seconds() if isinstance(period, dt.timedelta) else period
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 1:
        raise StorageError(f"the partition period must be at least 1 second, got {period!r}")
    if isinstance(ahead, bool) or not isinstance(ahead, int) or ahead < 0:
        raise StorageError(f"ahead must be 0 or more, got {ahead!r}")
    return int(seconds)


def partition(conn: sa.Connection, period_s: int, ahead: int) -> int:
    """``SqlAlchemyTraceStorage.partition``: convert the store, or add partitions ahead
    (and set the period of those made from now on); commits."""
    now_ms = int(time.time() * 1000)
    conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
    if layout(conn).partitioned:
        conn.exec_driver_sql(f"COMMENT ON TABLE {_FLOWS} IS '{_COMMENT.format(period=period_s)}'")
        made = extend(conn, boundary_after(now_ms, period_s) + ahead * period_s * 1000)
    else:
        made = convert(conn, period_s, ahead, now_ms)
    conn.commit()
    return made


def drop_span(conn: sa.Connection, span: Span, before_us: int) -> tuple[int, int] | None:
    """Drop ``span``'s partitions when none of its flows has an action (or, without
    actions, was created) at or after ``before_us``; return (flows, actions) dropped, or
    None (it must be pruned row-wise). Commits or rolls back ``conn``'s transaction."""
    names = [span.name(t) for t in TABLES]
    f_part, a_part = names[0], names[1]
    # Counted before the lock, so that readers of the whole table (which must lock every
    # partition) wait for the check and the drop only, not for two counts (a scan of
    # each partition). A late part of one of these old flows that lands in between goes
    # with them, uncounted.
    n_flows = conn.exec_driver_sql(f"SELECT count(*) FROM {f_part}").scalar()
    n_actions = conn.exec_driver_sql(f"SELECT count(*) FROM {a_part}").scalar()
    conn.commit()
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    # Writers of this span (late parts of its flows) wait from here to the commit.
    conn.exec_driver_sql(f"LOCK TABLE {', '.join(names)} IN ACCESS EXCLUSIVE MODE")
    newer = _q(conn,
               f'SELECT EXISTS (SELECT 1 FROM {a_part} WHERE "timestamp" >= :cut) '
               f"OR EXISTS (SELECT 1 FROM {f_part} WHERE created_at >= :cut)",
               cut=before_us).scalar()
    if newer:
        conn.rollback()
        return None
    # Takes ACCESS EXCLUSIVE on the parents, for the few ms to the commit.
    conn.exec_driver_sql(f"DROP TABLE {', '.join(names)}")
    conn.commit()
    return int(n_flows or 0), int(n_actions or 0)
