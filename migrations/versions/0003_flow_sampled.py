"""Whether a flow was sampled (configure(sample_rate=...)): the decision, visible.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Flows stored before sampling existed were all kept: true.
    op.add_column(
        "actiontrace_flows",
        sa.Column("sampled", sa.Boolean(), nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    with op.batch_alter_table("actiontrace_flows") as batch:
        batch.drop_column("sampled")
