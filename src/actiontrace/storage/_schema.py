"""The SQL schema (SQLAlchemy Core): flows, actions, provenance edges and log events.

Every table is prefixed ``actiontrace_`` so it never clashes with a host application's
tables, and there are no foreign keys: parts of one flow arrive in any order, from any
process. The Alembic migrations in ``migrations/versions`` must create exactly this
(``tests/test_migrations.py`` fails when they drift apart). Revision 0001 created the
first three tables; 0002 added ``actiontrace_log_events``; 0003 ``flows.sampled``; 0004 the
index of input values (a GIN index on PostgreSQL, ``actiontrace_input_values`` on SQLite);
0005 the index of flows by creation time and of failed actions by flow; 0006
``edges.duration_us`` (sync_performance from an index) and dropped the log events' index
by action (no query used it); 0007 merged PostgreSQL's two indexes of edges by
synchronization into one.

Objects that exist on one dialect only say so in ``info["dialect"]`` (and ``ddl_if``);
``migrations/env.py``'s ``include_object`` leaves them out of the other's comparisons.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

__all__ = [
    "VERSION_TABLE",
    "actions",
    "concept_is",
    "edges",
    "flows",
    "for_dialect",
    "input_values",
    "input_values_state",
    "log_events",
    "metadata",
]

VERSION_TABLE = "actiontrace_alembic_version"

# Constraint names must be stable: SQLite batch migrations cannot drop unnamed ones.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)

# JSON documents: JSONB on PostgreSQL (containment queries). On SQLite the column is
# declared TEXT, not JSON: a column declared "JSON" gets NUMERIC affinity there, and
# SQLite would silently turn the text ``12345678901234567890123`` into a lossy REAL.
# The JSON functions (json_extract, json_type) work on TEXT all the same.
Json = sa.JSON().with_variant(JSONB(), "postgresql").with_variant(sa.Text(), "sqlite")

# Names are compared byte-wise (the ``::`` prefix filter is a range scan on the index);
# PostgreSQL's default collation would order them by locale rules instead.
Name = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

flows = sa.Table(
    "actiontrace_flows",
    metadata,
    sa.Column("flow_token", sa.Uuid(), primary_key=True),
    # NULL until the part holding the root arrives (a continue_flow part has none).
    sa.Column("root_action_id", sa.Uuid(), nullable=True),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    sa.Column("module", sa.Text(), nullable=False),
    # Actions on the flow's longest causal path, computed when a flow arrives whole in
    # one part; NULL when it must be recomputed at query time (see _sql.py, "depth").
    sa.Column("max_depth", sa.Integer(), nullable=True),
    # False when the flow was not sampled and is kept only because it holds an error.
    sa.Column("sampled", sa.Boolean(), nullable=False, server_default=sa.true()),
    sa.Index("ix_actiontrace_flows_depth", "max_depth", "created_at"),
    # list_flows: newest first, paged by (created_at, flow_token) (migration 0005).
    sa.Index("ix_actiontrace_flows_created", "created_at", "flow_token"),
)

actions = sa.Table(
    "actiontrace_actions",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("flow_token", sa.Uuid(), nullable=False),
    sa.Column("parent_id", sa.Uuid(), nullable=True),
    sa.Column("concept_uri", Name, nullable=False),
    sa.Column("action", Name, nullable=False),
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Column("duration_us", sa.BigInteger(), nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("inputs", Json, nullable=False),
    sa.Column("outputs", Json, nullable=False),
    sa.Index("ix_actiontrace_actions_flow", "flow_token", "timestamp"),
    sa.Index("ix_actiontrace_actions_concept", "concept_uri", "action", "timestamp"),
    sa.Index("ix_actiontrace_actions_timestamp", "timestamp"),
    # list_flows(status=...): which flows hold a failed action, without reading the
    # others' rows (partial: it costs nothing for actions that end ok; migration 0005).
    sa.Index(
        "ix_actiontrace_actions_failed", "flow_token",
        sqlite_where=sa.text("status = 'error'"), postgresql_where=sa.text("status = 'error'"),
    ),
    # find_actions(inputs=...) on PostgreSQL: `inputs @> '{"k": v}'` is a GIN probe.
    sa.Index(
        "ix_actiontrace_actions_inputs", "inputs", postgresql_using="gin",
        postgresql_ops={"inputs": "jsonb_path_ops"}, info={"dialect": "postgresql"},
    ).ddl_if(dialect="postgresql"),
)

# find_actions(inputs=...) on SQLite, which has no index over JSON members: one row per
# top-level scalar member of each action's inputs, with the action's concept and name,
# added by the writer in SQL, in bulk (_sqlite_inputs.py, INPUT_VALUES; input_values_state
# says how far it reaches). ``value`` is the member as SQLite reads it (strings cut
# to 64 characters, null as the text 'null'), in a NUMERIC column so 1 and 1.0 meet. It
# only narrows the candidates: the exact JSON comparison still runs on each of them.
input_values = sa.Table(
    "actiontrace_input_values",
    metadata,
    sa.Column("key", sa.Text(), primary_key=True),
    sa.Column("value", sa.Numeric(), primary_key=True),
    sa.Column("action_id", sa.Uuid(), primary_key=True),
    # The concept and action narrow a lookup before any action row is read: at 10M
    # actions a value shared by 9,000 actions of all concepts cost 434 ms without them.
    # Not in the key: the rows of one (key, value) stay together, so a bulk addition
    # touches a page per distinct value, not per value and action (in the key, a store
    # grew at 24,800 actions/s on its way to 10M instead of 37,400).
    sa.Column("concept_uri", sa.Text(), nullable=False),
    sa.Column("action", sa.Text(), nullable=False),
    sqlite_with_rowid=False,
    info={"dialect": "sqlite"},
)


# How far actiontrace_input_values reaches: the writer indexes actions in bulk, every
# MERGE_ROWS actions (_sqlite_inputs.py), so the newest are not in it yet; queries scan those (the
# actions above ``last_rowid``). ``last_id`` is the id of that action: if a VACUUM has
# renumbered the rowids, it no longer matches, and both sides start again from rowid 0.
input_values_state = sa.Table(
    "actiontrace_input_values_state",
    metadata,
    sa.Column("name", sa.Text(), primary_key=True),
    sa.Column("last_rowid", sa.BigInteger(), nullable=False),
    sa.Column("last_id", sa.Uuid(), nullable=True),
    info={"dialect": "sqlite"},
)


def concept_is(col: Any, concept: str) -> Any:
    """SQL for a ``Name`` column holding ``concept`` exactly, or a concept below it: a
    range scan over "concept::..." (":;" is the next string after "::")."""
    return sa.or_(col == concept, sa.and_(col >= concept + "::", col < concept + ":;"))


def for_dialect(obj: object, dialect: str) -> bool:
    """Whether schema object ``obj`` exists on ``dialect`` (see the module doc)."""
    info = getattr(obj, "info", None) or {}
    return bool(info.get("dialect", dialect) == dialect)

edges = sa.Table(
    "actiontrace_edges",
    metadata,
    # The primary key makes edges unique and doubles as the index by from_action.
    sa.Column("from_action", sa.Uuid(), primary_key=True),
    sa.Column("to_action", sa.Uuid(), primary_key=True),
    sa.Column("synchronization", Name, primary_key=True),
    sa.Column("flow_token", sa.Uuid(), nullable=False),
    sa.Column("created_at", sa.BigInteger(), nullable=False),
    # The duration of the action the edge leads to, when the writer had both in one part,
    # the action had finished, and no other edge of this synchronization led to it; else
    # NULL (look the action up). A synchronization whose edges all have one is answered
    # by ix_actiontrace_edges_durations alone (sync_performance, _sqltext.PERF_FROM_EDGES).
    sa.Column("duration_us", sa.BigInteger(), nullable=True),
    # (to_action, created_at): "the earliest incoming edge" is one index probe.
    sa.Index("ix_actiontrace_edges_to", "to_action", "created_at"),
    # SQLite: by synchronization, newest first, and its durations in order (percentiles).
    sa.Index("ix_actiontrace_edges_sync", "synchronization", "created_at",
             info={"dialect": "sqlite"}).ddl_if(dialect="sqlite"),
    sa.Index("ix_actiontrace_edges_durations", "synchronization", "duration_us",
             info={"dialect": "sqlite"}).ddl_if(dialect="sqlite"),
    # PostgreSQL: one index for both, the durations included (its percentile_cont sorts
    # them anyway; migration 0007: one index fewer per edge), and whether some edge of a
    # synchronization lacks its duration in one probe (partial: nothing for the edges
    # that carry one).
    sa.Index("ix_actiontrace_edges_sync_durations", "synchronization", "created_at",
             postgresql_include=["duration_us"],
             info={"dialect": "postgresql"}).ddl_if(dialect="postgresql"),
    sa.Index("ix_actiontrace_edges_no_duration", "synchronization",
             postgresql_where=sa.text("duration_us IS NULL"),
             info={"dialect": "postgresql"}).ddl_if(dialect="postgresql"),
    sa.Index("ix_actiontrace_edges_flow", "flow_token"),
)

log_events = sa.Table(
    "actiontrace_log_events",
    metadata,
    # A UUIDv7 given when the event is logged: a retried batch stores it once.
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("flow_token", sa.Uuid(), nullable=False),
    sa.Column("action_id", sa.Uuid(), nullable=True),  # NULL: logged outside any action
    sa.Column("timestamp", sa.BigInteger(), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("event", sa.Text(), nullable=False),
    sa.Column("fields", Json, nullable=False),
    sa.Index("ix_actiontrace_log_events_flow", "flow_token", "timestamp"),
)
