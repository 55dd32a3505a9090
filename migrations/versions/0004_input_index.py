"""An index over input values, for find_actions(inputs=...).

PostgreSQL: a GIN index (jsonb_path_ops) on ``actiontrace_actions.inputs``, which
``inputs @> '{"k": v}'`` probes. SQLite has no index over JSON members, so it gets
``actiontrace_input_values``: one row per top-level scalar member of an action's inputs
(see ``storage/_schema.py``), filled here for the actions already stored, and
``actiontrace_input_values_state``, how far it reaches (the writer adds actions to it in
bulk).

On a large PostgreSQL store the index build holds a lock that blocks writes while it
runs; the writer keeps its backlog meanwhile (docs/storage.md says how to avoid it).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The writer's statement (storage/_sql.py, _SQLITE_INPUT_VALUES) over every stored action.
_BACKFILL = (
    "INSERT OR IGNORE INTO actiontrace_input_values (key, value, action_id, concept_uri, "
    "action) SELECT j.key, CASE j.type WHEN 'text' THEN substr(j.atom, 1, 64) "
    "WHEN 'null' THEN 'null' ELSE j.atom END, a.id, a.concept_uri, a.action "
    "FROM actiontrace_actions a, json_each(a.inputs) j "
    "WHERE json_type(a.inputs) = 'object' AND j.type NOT IN ('object', 'array') "
    "ORDER BY 1, 2, 3"
)
_STATE = (
    "INSERT INTO actiontrace_input_values_state (name, last_rowid, last_id) "
    "SELECT 'inputs', a.rowid, a.id FROM actiontrace_actions a "
    "WHERE a.rowid = (SELECT max(rowid) FROM actiontrace_actions)"
)


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        # IF NOT EXISTS: on a large store it can be built beforehand, CONCURRENTLY
        # (docs/storage.md), which a migration's transaction cannot do.
        op.create_index(
            "ix_actiontrace_actions_inputs", "actiontrace_actions", ["inputs"],
            postgresql_using="gin", postgresql_ops={"inputs": "jsonb_path_ops"},
            if_not_exists=True,
        )
        return
    op.create_table(
        "actiontrace_input_values",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Numeric(), nullable=False),
        sa.Column("action_id", sa.Uuid(), nullable=False),
        sa.Column("concept_uri", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", "value", "action_id", name="pk_actiontrace_input_values"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "actiontrace_input_values_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("last_rowid", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.Uuid(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_actiontrace_input_values_state"),
    )
    op.execute(_BACKFILL)
    op.execute(_STATE)


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_actiontrace_actions_inputs", table_name="actiontrace_actions")
        return
    op.drop_table("actiontrace_input_values_state")
    op.drop_table("actiontrace_input_values")
