"""Retention on SQL stores: removing old flows whole, in batches (docs/retention.md).

A flow goes when its newest action started before the cut (a flow without actions: when
its ``created_at`` is), with its actions, edges, log events and index rows, in batches
of flows, one transaction each. Safe while other processes write: on SQLite each batch
holds the write lock from choosing its flows to commit; on PostgreSQL the chosen flows'
rows are locked (``FOR UPDATE SKIP LOCKED``: a flow a writer is adding to right now
waits for the next batch), so no action is added to a flow between the check and the
delete.

On a partitioned PostgreSQL store (``_partitions``), the spans whose whole period ended
before the cut are dropped first, each as one batch, when none of their flows is still
receiving actions; what remains old goes row-wise. ``exact=False`` (the writer's
background retention) leaves the flows of spans that end after the cut to be dropped
with their span, once its period is old enough, so no row-wise delete follows the
writers around.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from actiontrace._exceptions import StorageUnavailable
from actiontrace.storage import _partitions
from actiontrace.storage._base import Pruned
from actiontrace.storage._schema import actions, edges, flows, log_events

if TYPE_CHECKING:
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

__all__ = ["prunable", "prune_flows"]


def prunable(before_us: int, exclude: list[tuple[int, int]] | None = None) -> sa.Select[Any]:
    """The flows with no action started at or after ``before_us``: their ``created_at``
    (the root's start) is earlier (ix_actiontrace_flows_created), and their newest
    action too (one probe of ix_actiontrace_actions_flow each); none whose token lies in
    one of the ``exclude`` ranges of token times (ms, end excluded)."""
    f, a = flows.c, actions.c
    newer = sa.select(a.id).where(a.flow_token == f.flow_token, a.timestamp >= before_us)
    stmt = sa.select(f.flow_token).where(f.created_at < before_us, ~sa.exists(newer))
    for lo, hi in exclude or ():
        stmt = stmt.where(~sa.and_(f.flow_token >= _partitions.token_bound(lo),
                                   f.flow_token < _partitions.token_bound(hi)))
    return stmt


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def _drop_spans(storage: SqlAlchemyTraceStorage, before_us: int, exact: bool,
                max_batches: int | None) -> tuple[int, int, int, list[tuple[int, int]], bool]:
    """Drop the old spans of a partitioned store: (flows, actions, batches, token ranges
    the row-wise pass leaves alone, whether it stopped at ``max_batches``)."""
    with storage._connect() as conn:
        lay = _partitions.layout(conn)
        found = _partitions.spans(conn) if lay.partitioned else []
        conn.rollback()
    n_flows = n_actions = batches = 0
    exclude: list[tuple[int, int]] = []
    for span in found:
        if span.hi_ms is None:
            continue  # the default partition: row-wise
        if span.hi_ms * 1000 > before_us:  # the period is not over at the cut
            if span.regular and not exact:
                exclude.append((span.lo_ms or 0, span.hi_ms))
            continue
        if max_batches is not None and batches >= max_batches:
            return n_flows, n_actions, batches, exclude, True
        batches += 1
        try:
            with storage._connect() as conn:
                dropped = _partitions.drop_span(conn, span, before_us)
        except StorageUnavailable:
            # A lock not granted in time (a long reader, a writer of the span): the
            # background step tries again next time, an exact prune goes row-wise.
            if not exact:
                exclude.append((span.lo_ms or 0, span.hi_ms))
            continue
        if dropped is not None:
            n_flows += dropped[0]
            n_actions += dropped[1]
    return n_flows, n_actions, batches, _merged(exclude), False


def prune_flows(storage: SqlAlchemyTraceStorage, before_us: int, *, dry_run: bool,
                batch_size: int, max_batches: int | None, exact: bool = True) -> Pruned:
    """``SqlAlchemyTraceStorage.prune_flows``."""
    if dry_run:
        old = prunable(before_us)
        sub = old.subquery()
        counted = sa.select(
            sa.select(sa.func.count()).select_from(sub).scalar_subquery(),
            sa.select(sa.func.count()).where(actions.c.flow_token.in_(
                sa.select(sub.c.flow_token))).scalar_subquery(),
        )
        with storage._connect() as conn:
            n_flows, n_actions = conn.execute(counted).one()
        return Pruned(int(n_flows), int(n_actions), True)
    n_flows = n_actions = batches = 0
    exclude: list[tuple[int, int]] = []
    if storage._dialect.name == "postgresql":
        n_flows, n_actions, batches, exclude, stopped = _drop_spans(
            storage, before_us, exact, max_batches)
        if stopped:
            return Pruned(n_flows, n_actions, False)
    old = prunable(before_us, exclude)
    pick = (old.order_by(flows.c.created_at, flows.c.flow_token).limit(max(1, batch_size))
            .with_for_update(skip_locked=True, of=flows))
    dialect = storage._dialect
    while max_batches is None or batches < max_batches:
        batches += 1
        with storage._connect() as conn:
            dialect.begin_write(conn)
            tokens = [r[0] for r in conn.execute(pick)]
            if not tokens:
                conn.rollback()
                return Pruned(n_flows, n_actions, True)
            dialect.delete_index_rows(conn, tokens)
            for table in (log_events, edges):
                conn.execute(table.delete().where(table.c.flow_token.in_(tokens)))
            n_actions += conn.execute(
                actions.delete().where(actions.c.flow_token.in_(tokens))).rowcount
            n_flows += conn.execute(flows.delete().where(flows.c.flow_token.in_(tokens))).rowcount
            conn.commit()
    return Pruned(n_flows, n_actions, False)
