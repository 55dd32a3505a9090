"""The SQL text of each dialect: bulk inserts, recursive queries, aggregates.

``SQLITE`` and ``POSTGRESQL`` map a statement's name to its text (``?`` parameters on
SQLite, ``%s`` with casts on PostgreSQL, where they run on the driver's cursor; ``:name``
where they run through ``sa.text``). The dialect objects (``_dialects``) choose among them.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["COLUMNS", "EDGE_DURATIONS_MISSING", "PERF_FROM_EDGES", "PG_COPY", "PG_COPY_MIN",
           "PG_PERF", "POSTGRESQL", "PRODUCED", "SQLITE", "SQLITE_PERF", "SQLITE_ROW",
           "SQLITE_ROWS", "SQLITE_STATEMENT", "SYNC_NAMES"]

COLUMNS = ("id", "flow_token", "parent_id", "concept_uri", "action", "timestamp",
         "duration_us", "status", "inputs", "outputs")
# PostgreSQL bulk path: COPY a batch into a temporary table, then one INSERT .. SELECT
# with the same conflict rules. psycopg's pipelined executemany reached ~30,000 actions/s
# here; COPY removes the per-row statement round trips (docs/performance.md).
# A flow's module is the one of the part holding its root (the process that started the
# flow), whichever part arrives first; SET expressions read the row as it was.
_MODULE_MERGE = (
    "CASE WHEN actiontrace_flows.root_action_id IS NULL AND excluded.root_action_id IS NOT NULL "
    "THEN excluded.module ELSE actiontrace_flows.module END"
)
PG_COPY_MIN = 64  # below this, executemany is as fast and needs no temp table
PG_COPY = {
    "actions": (
        "id, flow_token, parent_id, concept_uri, action, \"timestamp\", duration_us, status, "
        "inputs, outputs",
        # DISTINCT ON: the same id twice in one batch would make ON CONFLICT DO UPDATE fail.
        "INSERT INTO actiontrace_actions ({cols}) SELECT DISTINCT ON (id) {cols} FROM {tmp} "
        "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
        "duration_us = excluded.duration_us, outputs = excluded.outputs "
        "WHERE actiontrace_actions.status = 'running'",
    ),
    "flows": (
        "flow_token, root_action_id, created_at, module, max_depth, sampled",
        # Parts of one flow in the same batch merge here as they do across batches.
        "INSERT INTO actiontrace_flows ({cols}) SELECT flow_token, "
        "(array_agg(root_action_id) FILTER (WHERE root_action_id IS NOT NULL))[1], "
        "min(created_at), "
        "COALESCE((array_agg(module) FILTER (WHERE root_action_id IS NOT NULL))[1], "
        "min(module)), "
        "CASE WHEN count(*) = 1 THEN max(max_depth) END, bool_and(sampled) "
        "FROM {tmp} GROUP BY flow_token "
        "ON CONFLICT (flow_token) DO UPDATE SET "
        "sampled = actiontrace_flows.sampled AND excluded.sampled, "
        f"module = {_MODULE_MERGE}, "
        "root_action_id = COALESCE(excluded.root_action_id, actiontrace_flows.root_action_id), "
        "created_at = LEAST(actiontrace_flows.created_at, excluded.created_at), "
        "max_depth = NULL",
    ),
    "edges": (
        "from_action, to_action, synchronization, flow_token, created_at, duration_us",
        "INSERT INTO actiontrace_edges ({cols}) SELECT {cols} FROM {tmp} ON CONFLICT DO NOTHING",
    ),
    # Log events by COPY too: two per seed-shaped request, executemany took a fifth of
    # the writer's time on the server (docs/performance.md).
    "log_events": (
        'id, flow_token, action_id, "timestamp", level, event, fields',
        "INSERT INTO actiontrace_log_events ({cols}) SELECT {cols} FROM {tmp} "
        "ON CONFLICT DO NOTHING",
    ),
}


def _marks(n: int) -> str:
    return "(" + ", ".join("?" * n) + ")"


# SQLite: rows go in multi-row INSERTs of up to SQLITE_ROWS rows (a power of two: the
# rest of a batch goes in chunks of the powers of two below it, _dialects._sqlite_insert).
# Python's sqlite3 lets go of the GIL around each statement step; with executemany that
# is once per row, and each time the writer must win the GIL back from the application
# thread (which holds it for up to sys.getswitchinterval()), so the writer crawled while
# the application was busy. One step per chunk does the same SQL work with that many
# times fewer hand-overs, and SQLite parses and plans each chunk's statement once. 1,024
# rather than 200: a 5,000-action batch of seed-shaped requests takes 31 steps instead of
# ~360 (200-row chunks, the rest row by row); with both changes the writer drained a
# backlog of seed-shaped requests in 9.2-9.8 instead of 10.4-12.0 µs per action, and
# end to end went up 1-3% (docs/performance.md).
SQLITE_ROWS = 1024


_ACTION_INSERT = (
    "INSERT INTO actiontrace_actions (id, flow_token, parent_id, concept_uri, action, "
    '"timestamp", duration_us, status, inputs, outputs) VALUES {values} '
    "ON CONFLICT (id) DO UPDATE SET status = excluded.status, "
    "duration_us = excluded.duration_us, outputs = excluded.outputs "
    "WHERE actiontrace_actions.status = 'running'"
)
_FLOW_INSERT = (
    "INSERT INTO actiontrace_flows (flow_token, root_action_id, created_at, module, max_depth, "
    "sampled) VALUES {values} ON CONFLICT (flow_token) DO UPDATE SET "
    "sampled = actiontrace_flows.sampled AND excluded.sampled, "
    f"module = {_MODULE_MERGE}, "
    "root_action_id = COALESCE(excluded.root_action_id, actiontrace_flows.root_action_id), "
    "created_at = {least}(actiontrace_flows.created_at, excluded.created_at), "
    "max_depth = NULL"  # a second part: recompute the depth at query time
)
_EDGE_INSERT = (
    "INSERT INTO actiontrace_edges (from_action, to_action, synchronization, flow_token, "
    "created_at, duration_us) VALUES {values} ON CONFLICT DO NOTHING"
)
_LOG_INSERT = (
    "INSERT INTO actiontrace_log_events (id, flow_token, action_id, \"timestamp\", level, "
    "event, fields) VALUES {values} ON CONFLICT (id) DO NOTHING"
)
_STALE = (
    "UPDATE actiontrace_flows SET max_depth = NULL WHERE flow_token = "
    "(SELECT flow_token FROM actiontrace_actions WHERE id = {p})"
)

# The cause of action a: its earliest incoming edge's source, else its parent.
_CAUSE = (
    "COALESCE((SELECT e.from_action FROM actiontrace_edges e WHERE e.to_action = {a}.id "
    "ORDER BY e.created_at, e.from_action LIMIT 1), {a}.parent_id)"
)

_SQLITE_CHAIN = f"""
WITH RECURSIVE chain(id, cause, n, path) AS (
    SELECT a.id, {_CAUSE.format(a="a")}, 0, a.id
    FROM actiontrace_actions a WHERE a.id = :id
    UNION ALL
    SELECT a.id, {_CAUSE.format(a="a")}, c.n + 1, c.path || ',' || a.id
    FROM chain c JOIN actiontrace_actions a ON a.id = c.cause
    WHERE c.n < :cap AND instr(c.path, a.id) = 0
)
SELECT {{cols}} FROM chain c JOIN actiontrace_actions a ON a.id = c.id ORDER BY c.n DESC
"""
_PG_CHAIN = f"""
WITH RECURSIVE chain(id, cause, n, path) AS (
    SELECT a.id, {_CAUSE.format(a="a")}, 0, ARRAY[a.id]
    FROM actiontrace_actions a WHERE a.id = :id
    UNION ALL
    SELECT a.id, {_CAUSE.format(a="a")}, c.n + 1, c.path || a.id
    FROM chain c JOIN actiontrace_actions a ON a.id = c.cause
    WHERE c.n < :cap AND a.id <> ALL(c.path)
)
SELECT {{cols}} FROM chain c JOIN actiontrace_actions a ON a.id = c.id ORDER BY c.n DESC
"""

# Depth of every action of the flows whose max_depth is NULL: walk up from each action
# through its causes (wherever they are stored), counting; a flow's depth is its maximum.
_DEPTH = """
WITH RECURSIVE walk(flow, cur, n, path) AS (
    SELECT a.flow_token, {cause_a}, 1, {path0}
    FROM actiontrace_flows f JOIN actiontrace_actions a ON a.flow_token = f.flow_token
    WHERE f.max_depth IS NULL
    UNION ALL
    SELECT w.flow, {cause_b}, w.n + 1, {path1}
    FROM walk w JOIN actiontrace_actions b ON b.id = w.cur
    WHERE w.n < :cap AND {guard}
)
SELECT w.flow, max(w.n) AS depth, min(f.created_at) AS created
FROM walk w JOIN actiontrace_flows f ON f.flow_token = w.flow
GROUP BY w.flow ORDER BY depth DESC, created LIMIT :limit
"""
_SQLITE_DEPTH = _DEPTH.format(
    cause_a=_CAUSE.format(a="a"), cause_b=_CAUSE.format(a="b"),
    path0="a.id", path1="w.path || ',' || b.id", guard="instr(w.path, b.id) = 0",
)
_PG_DEPTH = _DEPTH.format(
    cause_a=_CAUSE.format(a="a"), cause_b=_CAUSE.format(a="b"),
    path0="ARRAY[a.id]", path1="w.path || b.id", guard="b.id <> ALL(w.path)",
)

_PRODUCED = (
    "SELECT a.duration_us AS v FROM actiontrace_actions a WHERE a.id IN "
    "(SELECT e.to_action FROM actiontrace_edges e WHERE e.synchronization = :sync) "
    "AND a.duration_us IS NOT NULL"
)
# When every edge of the synchronization carries its target's duration (_schema.edges),
# the index (synchronization, duration_us) alone holds the durations, in order.
EDGE_DURATIONS_MISSING = (
    "SELECT count(*) FROM actiontrace_edges e WHERE e.synchronization = :sync "
    "AND e.duration_us IS NULL"
)
PERF_FROM_EDGES = (
    "SELECT e.duration_us AS v FROM actiontrace_edges e WHERE e.synchronization = :sync"
)
PRODUCED = _PRODUCED
# The distinct synchronization names, one index probe each (a "loose index scan": neither
# SQLite nor PostgreSQL 15 skips through an index for DISTINCT; at 1M seed-shaped actions
# on PostgreSQL, SELECT DISTINCT read all 750,000 index entries: 82 ms -> 0.4 ms).
SYNC_NAMES = (
    "WITH RECURSIVE s(name) AS (SELECT min(synchronization) FROM actiontrace_edges "
    "UNION ALL SELECT (SELECT min(e.synchronization) FROM actiontrace_edges e "
    "WHERE e.synchronization > s.name) FROM s WHERE s.name IS NOT NULL) "
    "SELECT name FROM s WHERE name IS NOT NULL"
)
SQLITE_PERF = "SELECT {tail} FROM ({produced})"
PG_PERF = (
    "SELECT count(*), avg(v), "
    "percentile_cont(0.5) WITHIN GROUP (ORDER BY v), "
    "percentile_cont(0.95) WITHIN GROUP (ORDER BY v), "
    "percentile_cont(0.99) WITHIN GROUP (ORDER BY v) FROM ({produced}) d"
)

# One row's VALUES of each SQLite insert, and the statement around any number of them.
SQLITE_ROW = {
    "action": _marks(10),
    "flow": _marks(6),
    "edge": _marks(6),
    "log": _marks(7),
}
SQLITE_STATEMENT: dict[str, Callable[[str], str]] = {
    "action": lambda values: _ACTION_INSERT.format(values=values),
    "flow": lambda values: _FLOW_INSERT.format(values=values, least="min"),
    "edge": lambda values: _EDGE_INSERT.format(values=values),
    "log": lambda values: _LOG_INSERT.format(values=values),
}
SQLITE = {
    **{kind: make(SQLITE_ROW[kind]) for kind, make in SQLITE_STATEMENT.items()},
    "stale": _STALE.format(p="?"),
    "chain": _SQLITE_CHAIN,
    "depth": _SQLITE_DEPTH,
}
POSTGRESQL = {
    "action": _ACTION_INSERT.format(
        values="(%s::uuid, %s::uuid, %s::uuid, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
    ),
    "flow": _FLOW_INSERT.format(values="(%s::uuid, %s::uuid, %s, %s, %s, %s)", least="LEAST"),
    "edge": _EDGE_INSERT.format(values="(%s::uuid, %s::uuid, %s, %s::uuid, %s, %s)"),
    "stale": _STALE.format(p="%s::uuid"),
    "log": _LOG_INSERT.format(values="(%s::uuid, %s::uuid, %s::uuid, %s, %s, %s, %s::jsonb)"),
    "chain": _PG_CHAIN,
    "depth": _PG_DEPTH,
}
