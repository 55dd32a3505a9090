"""An index of flows by creation time, for list_flows (newest first, paged by keyset).

Without it every page of ``actiontrace flows`` and of the viewer's flow list sorted the
whole flows table (30 ms at 10,000 flows, growing linearly); with it a page reads its
rows in index order and stops (docs/viewer.md#paging).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_actiontrace_flows_created", "actiontrace_flows",
                    ["created_at", "flow_token"])


def downgrade() -> None:
    op.drop_index("ix_actiontrace_flows_created", table_name="actiontrace_flows")
