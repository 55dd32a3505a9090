"""Log events attached to actions (the unified view of logs and traces).

Revision ID: 0002
Revises: 0001
Create Date: 2024-06-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A frozen copy of the JSON column type of this revision (see 0001 for why).
Json = sa.JSON().with_variant(JSONB(), "postgresql").with_variant(sa.Text(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "actiontrace_log_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flow_token", sa.Uuid(), nullable=False),
        sa.Column("action_id", sa.Uuid(), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("fields", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_actiontrace_log_events"),
    )
    op.create_index(
        "ix_actiontrace_log_events_action", "actiontrace_log_events", ["action_id", "timestamp"]
    )
    op.create_index(
        "ix_actiontrace_log_events_flow", "actiontrace_log_events", ["flow_token", "timestamp"]
    )


def downgrade() -> None:
    op.drop_table("actiontrace_log_events")
