"""PostgreSQL: one index of edges by synchronization instead of two.

``ix_actiontrace_edges_sync_durations`` (synchronization, created_at) INCLUDE
(duration_us) replaces ``ix_actiontrace_edges_sync`` (synchronization, created_at) and
``ix_actiontrace_edges_durations`` (synchronization, duration_us) there: PostgreSQL's
``percentile_cont`` sorts its input whatever the index order, so ``sync_performance``
reads the durations from the included column alone, and every edge written paid for
both (0.6-1.0 µs of server CPU per seed-shaped action, docs/performance.md).
``ix_actiontrace_edges_no_duration`` (synchronization) WHERE duration_us IS NULL,
partial, so it costs nothing for the edges that carry a duration, answers "does every
edge of this synchronization carry one" with one probe. SQLite keeps its two: its
percentiles read the durations in index order (``ORDER BY v LIMIT 2 OFFSET k``).

The new indexes are built only if they do not exist: on a large store they can be built
beforehand with CREATE INDEX CONCURRENTLY (docs/storage.md), which a migration's
transaction cannot do; otherwise their build blocks writes while it runs.

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
    op.create_index("ix_actiontrace_edges_sync_durations", "actiontrace_edges",
                    ["synchronization", "created_at"], postgresql_include=["duration_us"],
                    if_not_exists=True)
    op.create_index("ix_actiontrace_edges_no_duration", "actiontrace_edges",
                    ["synchronization"], postgresql_where="duration_us IS NULL",
                    if_not_exists=True)
    op.drop_index("ix_actiontrace_edges_sync", table_name="actiontrace_edges")
    op.drop_index("ix_actiontrace_edges_durations", table_name="actiontrace_edges")


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        return
    op.create_index("ix_actiontrace_edges_sync", "actiontrace_edges",
                    ["synchronization", "created_at"])
    op.create_index("ix_actiontrace_edges_durations", "actiontrace_edges",
                    ["synchronization", "duration_us"])
    op.drop_index("ix_actiontrace_edges_no_duration", table_name="actiontrace_edges")
    op.drop_index("ix_actiontrace_edges_sync_durations", table_name="actiontrace_edges")
