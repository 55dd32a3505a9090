"""Indexes for list_flows: flows by creation time, and failed actions by flow.

Without the first, every page of ``actiontrace flows`` and of the viewer's flow list
sorted the whole flows table (29 ms at 10,000 flows, growing linearly); with it a page
reads its rows in index order and stops (2.3 ms; docs/viewer.md#paging). The second,
partial (only actions with status 'error'), answers "does this flow hold a failed
action?" without reading the flow's other rows.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_FAILED = sa.text("status = 'error'")


def upgrade() -> None:
    op.create_index("ix_actiontrace_flows_created", "actiontrace_flows",
                    ["created_at", "flow_token"])
    op.create_index("ix_actiontrace_actions_failed", "actiontrace_actions", ["flow_token"],
                    sqlite_where=_FAILED, postgresql_where=_FAILED)


def downgrade() -> None:
    op.drop_index("ix_actiontrace_actions_failed", table_name="actiontrace_actions")
    op.drop_index("ix_actiontrace_flows_created", table_name="actiontrace_flows")
