"""PostgreSQL: one index of edges by synchronization instead of two.

``ix_actiontrace_edges_sync`` (synchronization, created_at) gains ``duration_us`` as an
INCLUDE column, and ``ix_actiontrace_edges_durations`` (synchronization, duration_us) is
dropped there: PostgreSQL's ``percentile_cont`` sorts its input whatever the index
order, so ``sync_performance`` reads the durations from either index alone, and every
edge written paid for both (0.6-1.0 µs of server CPU per seed-shaped action,
docs/performance.md). ``ix_actiontrace_edges_no_duration`` (synchronization) WHERE
duration_us IS NULL, partial, so it costs nothing for the edges that carry a duration,
answers "does every edge of this synchronization carry one" with one probe. SQLite
keeps both: its percentiles read the durations in index order (``ORDER BY v LIMIT 2
OFFSET k``), and it has no INCLUDE.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_actiontrace_edges_sync", table_name="actiontrace_edges")
    op.create_index("ix_actiontrace_edges_sync", "actiontrace_edges",
                    ["synchronization", "created_at"], postgresql_include=["duration_us"])
    op.drop_index("ix_actiontrace_edges_durations", table_name="actiontrace_edges")
    op.create_index("ix_actiontrace_edges_no_duration", "actiontrace_edges",
                    ["synchronization"], postgresql_where="duration_us IS NULL")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.drop_index("ix_actiontrace_edges_no_duration", table_name="actiontrace_edges")
    op.create_index("ix_actiontrace_edges_durations", "actiontrace_edges",
                    ["synchronization", "duration_us"])
    op.drop_index("ix_actiontrace_edges_sync", table_name="actiontrace_edges")
    op.create_index("ix_actiontrace_edges_sync", "actiontrace_edges",
                    ["synchronization", "created_at"])
