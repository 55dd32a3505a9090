"""Retention on SQL stores: removing old flows whole, in batches (docs/retention.md).

A flow goes when its newest action started before the cut (a flow without actions: when
its ``created_at`` is), with its actions, edges, log events and index rows, in batches
of flows, one transaction each. Safe while other processes write: on SQLite each batch
holds the write lock from choosing its flows to commit; on PostgreSQL the chosen flows'
rows are locked (``FOR UPDATE SKIP LOCKED``: a flow a writer is adding to right now
waits for the next batch), so no action is added to a flow between the check and the
delete.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from actiontrace.storage._base import Pruned
from actiontrace.storage._schema import actions, edges, flows, log_events

if TYPE_CHECKING:
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

__all__ = ["prunable", "prune_flows"]


def prunable(before_us: int) -> sa.Select[Any]:
    """The flows with no action started at or after ``before_us``: their ``created_at``
    (the root's start) is earlier (ix_actiontrace_flows_created), and their newest
    action too (one probe of ix_actiontrace_actions_flow each)."""
    f, a = flows.c, actions.c
    newer = sa.select(a.id).where(a.flow_token == f.flow_token, a.timestamp >= before_us)
    return sa.select(f.flow_token).where(f.created_at < before_us, ~sa.exists(newer))


def prune_flows(storage: SqlAlchemyTraceStorage, before_us: int, *, dry_run: bool,
                batch_size: int, max_batches: int | None) -> Pruned:
    """``SqlAlchemyTraceStorage.prune_flows``."""
    old = prunable(before_us)
    if dry_run:
        sub = old.subquery()
        counted = sa.select(
            sa.select(sa.func.count()).select_from(sub).scalar_subquery(),
            sa.select(sa.func.count()).where(actions.c.flow_token.in_(
                sa.select(sub.c.flow_token))).scalar_subquery(),
        )
        with storage._connect() as conn:
            n_flows, n_actions = conn.execute(counted).one()
        return Pruned(int(n_flows), int(n_actions), True)
    pick = (old.order_by(flows.c.created_at, flows.c.flow_token).limit(max(1, batch_size))
            .with_for_update(skip_locked=True, of=flows))
    dialect = storage._dialect
    n_flows = n_actions = batches = 0
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
