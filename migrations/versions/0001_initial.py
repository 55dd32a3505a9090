"""Initial schema: flows, actions and provenance edges.

Revision ID: 0001
Revises:
Create Date: 2024-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types of this revision (never import the live models in a
# migration: they move on, this file must not). See actiontrace/storage/_schema.py.
Json = sa.JSON().with_variant(JSONB(), "postgresql").with_variant(sa.Text(), "sqlite")
Name = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "actiontrace_flows",
        sa.Column("flow_token", sa.Uuid(), nullable=False),
        sa.Column("root_action_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("module", sa.Text(), nullable=False),
        sa.Column("max_depth", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("flow_token", name="pk_actiontrace_flows"),
    )
    op.create_index("ix_actiontrace_flows_depth", "actiontrace_flows", ["max_depth", "created_at"])

    op.create_table(
        "actiontrace_actions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("flow_token", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("concept_uri", Name, nullable=False),
        sa.Column("action", Name, nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("duration_us", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("inputs", Json, nullable=False),
        sa.Column("outputs", Json, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_actiontrace_actions"),
    )
    op.create_index("ix_actiontrace_actions_flow", "actiontrace_actions", ["flow_token", "timestamp"])
    op.create_index(
        "ix_actiontrace_actions_concept", "actiontrace_actions",
        ["concept_uri", "action", "timestamp"],
    )
    op.create_index("ix_actiontrace_actions_timestamp", "actiontrace_actions", ["timestamp"])

    op.create_table(
        "actiontrace_edges",
        sa.Column("from_action", sa.Uuid(), nullable=False),
        sa.Column("to_action", sa.Uuid(), nullable=False),
        sa.Column("synchronization", Name, nullable=False),
        sa.Column("flow_token", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "from_action", "to_action", "synchronization", name="pk_actiontrace_edges"
        ),
    )
    op.create_index("ix_actiontrace_edges_to", "actiontrace_edges", ["to_action", "created_at"])
    op.create_index(
        "ix_actiontrace_edges_sync", "actiontrace_edges", ["synchronization", "created_at"]
    )
    op.create_index("ix_actiontrace_edges_flow", "actiontrace_edges", ["flow_token"])


def downgrade() -> None:
    op.drop_table("actiontrace_edges")
    op.drop_table("actiontrace_actions")
    op.drop_table("actiontrace_flows")
