"""Edges carry their target's duration; one log index fewer.

* ``actiontrace_edges.duration_us``: the duration of the action the edge leads to, when
  the writer stored both in one part and the action had finished (else NULL: look it
  up). ``ix_actiontrace_edges_durations`` (synchronization, duration_us) lets
  ``sync_performance`` read a synchronization's durations from the index alone, in
  order, instead of joining every produced action (13.2 s -> 91 ms at 1M seed-shaped
  actions under load, docs/performance.md). Filled here from the stored actions.
* ``ix_actiontrace_log_events_action`` is dropped: no query reads log events by action
  (``get_trace`` reads them by flow), and every event paid for it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An edge's duration is its target's when that is final (not running) and the edge is
# the only one into it with this synchronization: the same rule as the writer's
# (storage/_dialects.py, Dialect.batch), so the index alone answers sync_performance.
_FILL = (
    "UPDATE actiontrace_edges SET duration_us = (SELECT a.duration_us "
    "FROM actiontrace_actions a WHERE a.id = actiontrace_edges.to_action "
    "AND a.status <> 'running') "
    "WHERE NOT EXISTS (SELECT 1 FROM actiontrace_edges o "
    "WHERE o.to_action = actiontrace_edges.to_action "
    "AND o.synchronization = actiontrace_edges.synchronization "
    "AND o.from_action <> actiontrace_edges.from_action)"
)


def upgrade() -> None:
    op.add_column("actiontrace_edges", sa.Column("duration_us", sa.BigInteger(), nullable=True))
    op.execute(_FILL)
    op.create_index("ix_actiontrace_edges_durations", "actiontrace_edges",
                    ["synchronization", "duration_us"])
    op.drop_index("ix_actiontrace_log_events_action", table_name="actiontrace_log_events")


def downgrade() -> None:
    op.create_index("ix_actiontrace_log_events_action", "actiontrace_log_events",
                    ["action_id", "timestamp"])
    op.drop_index("ix_actiontrace_edges_durations", table_name="actiontrace_edges")
    with op.batch_alter_table("actiontrace_edges") as batch:
        batch.drop_column("duration_us")
