"""SQLite's index of input values, and the SQL that compares JSON members exactly.

SQLite cannot index JSON members, so ``find_actions(inputs=...)`` there has two parts:

* ``actiontrace_input_values`` (``_schema.input_values``): one row per top-level scalar
  member of each action's inputs, added by the writer in bulk (``index_inputs``) every
  ``every`` actions; ``by_value`` turns a filter into candidates from it, plus the newest
  actions it does not hold yet.
* ``inputs_clauses``: the exact comparison (JSON types and values, nested documents)
  that decides on each candidate, compiled to ``json_type``/``json_extract`` SQL.
"""

from __future__ import annotations

from typing import Any

import msgspec
import sqlalchemy as sa

from actiontrace.storage._schema import actions, concept_is, input_values

__all__ = ["DELETE_INPUT_VALUES", "INPUT_VALUES", "by_value", "index_inputs", "inputs_clauses",
           "unindexed"]

# -- the index ---------------------------------------------------------------------------------

_LAST_ROWID = "SELECT max(rowid) FROM actiontrace_actions"
# The input-value index (_schema.input_values) covers the actions up to this rowid; the
# ones above it are scanned by queries. 0 when the state row is missing, or names an
# action that is not at its rowid any more (a VACUUM renumbered them): everything over.
_INDEX_START_EXPR = (
    "coalesce((SELECT CASE WHEN s.last_id = (SELECT a.id FROM actiontrace_actions a "
    "WHERE a.rowid = s.last_rowid) THEN s.last_rowid ELSE 0 END "
    "FROM actiontrace_input_values_state s WHERE s.name = 'inputs'), 0)"
)
_INDEX_START = "SELECT " + _INDEX_START_EXPR
# Index the actions in a rowid range, in one statement sorted by the index's key (one
# pass over its pages; SQLite walks the JSON without the GIL). Migration 0004 holds the
# same SQL for the actions stored before it.
_VALUE = "CASE j.type WHEN 'text' THEN substr(j.atom, 1, 64) WHEN 'null' THEN 'null' ELSE j.atom END"
INPUT_VALUES = (
    "INSERT OR IGNORE INTO actiontrace_input_values (key, value, action_id, concept_uri, "
    f"action) SELECT j.key, {_VALUE}, a.id, a.concept_uri, a.action "
    "FROM actiontrace_actions a, json_each(a.inputs) j "
    "WHERE a.rowid > ? AND a.rowid <= ? AND json_type(a.inputs) = 'object' "
    "AND j.type NOT IN ('object', 'array') ORDER BY 1, 2, 3"
)
# The index rows of the actions of some flows (retention), found the way INPUT_VALUES made
# them: each is a primary-key probe. Rows of actions not indexed yet are simply absent.
DELETE_INPUT_VALUES = sa.text(
    "DELETE FROM actiontrace_input_values WHERE (key, value, action_id) IN ("
    f"SELECT j.key, {_VALUE}, a.id FROM actiontrace_actions a, json_each(a.inputs) j "
    "WHERE a.flow_token IN :tokens AND json_type(a.inputs) = 'object' "
    "AND j.type NOT IN ('object', 'array'))"
).bindparams(sa.bindparam("tokens", expanding=True))
_SET_STATE = (
    "INSERT INTO actiontrace_input_values_state (name, last_rowid, last_id) "
    "VALUES ('inputs', ?, (SELECT id FROM actiontrace_actions WHERE rowid = ?)) "
    "ON CONFLICT (name) DO UPDATE SET last_rowid = excluded.last_rowid, "
    "last_id = excluded.last_id"
)


def index_inputs(cur: Any, every: int) -> None:
    """Add the actions stored since the index last grew, once ``every`` have arrived.

    Runs inside the write transaction (the inserts before it took SQLite's write lock),
    so no other process moves the state or adds actions until commit.
    """
    top = cur.execute(_LAST_ROWID).fetchone()[0] or 0
    start = cur.execute(_INDEX_START).fetchone()[0]
    if top - start >= every:
        cur.execute(INPUT_VALUES, (start, top))
        cur.execute(_SET_STATE, (top, top))


# -- exact comparison --------------------------------------------------------------------------


def inputs_clauses(wanted: dict[str, Any]) -> list[Any]:
    """SQL true for the actions whose inputs hold ``wanted``'s members, equal."""
    col = actions.c.inputs
    # A cheap necessary condition first: inputs are stored exactly as msgspec encodes
    # them (compact, deterministic escaping), so a record holding k == v contains the
    # text '"k":<v>' (for a whole number, its digits; else at least '"k":'). At 1M
    # seed-shaped actions the ~11,000 newest, not yet in the index, are checked this
    # way: the key alone let every action with the key through to the JSON functions.
    # instr() rules out most
    # rows before the JSON functions, which re-parse the document on every call,
    # run at all (docs/performance.md: 112 -> see there, at 1M actions).
    needles = [sa.or_(*(sa.func.instr(col, n) > 0 for n in _needles(k, v)))
               for k, v in wanted.items()]
    return [sa.and_(
        *needles, sa.func.json_type(col) == "object", _sqlite_match(col, wanted, True),
    )]


def _needles(key: str, value: Any) -> list[str]:
    """Texts one of which every stored inputs document with ``key == value`` at the top
    level contains (msgspec's encoding: compact, deterministic)."""
    head = msgspec.json.encode(key).decode() + ":"
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return [head + msgspec.json.encode(value).decode()]
    if isinstance(value, int | float) and value == value and abs(value) < 1e16 and (
            isinstance(value, int) or value.is_integer()):
        # A whole number is stored as its digits, as an int (2) or a float (2.0); zero may
        # be -0.0 too. Larger floats take an exponent (1e16): those get the key only.
        digits = head + str(int(value))
        return [digits, head + "-0"] if value == 0 else [digits]
    return [head]  # other numbers and containers: the key


def unindexed(col: Any) -> Any:
    return sa.literal_column(f"+{col.table.name}.{col.name}", col.type)


def by_value(wanted: dict[str, Any], concept: str | None, name: str | None) -> Any:
    """The candidates for ``wanted`` from the input-value index, or None when no wanted
    member can be looked up there: the actions it holds with one of the members (and the
    concept and action asked for), and the newest actions, which it does not hold yet (a
    rowid range). The exact comparison (``inputs_clauses``) still decides."""
    for k, v in wanted.items():
        probe = _indexed_value(v)
        if probe is not None:
            iv = input_values.c
            lookup = sa.select(iv.action_id).where(
                iv.key == sa.literal(k, sa.Text), iv.value == probe)
            if concept is not None:
                lookup = lookup.where(concept_is(iv.concept_uri, concept))
            if name is not None:
                lookup = lookup.where(iv.action == name)
            other = actions.alias("cand")
            rowid: Any = sa.literal_column("cand.rowid")
            indexed = sa.select(rowid).select_from(other).where(other.c.id.in_(lookup))
            newest = sa.select(rowid).select_from(other).where(
                rowid > sa.text(f"({_INDEX_START_EXPR})")
            )
            return sa.literal_column("actiontrace_actions.rowid").in_(
                sa.union_all(indexed, newest)
            )
    return None


def _indexed_value(v: Any) -> Any:
    """SQL for ``v`` as ``actiontrace_input_values.value`` holds it, or None when members
    equal to ``v`` are not all in that index (containers, inexact numbers)."""
    if v is None:
        return sa.literal("null", sa.Text)
    if isinstance(v, bool):
        return sa.literal(int(v), sa.Integer)  # json_each reads true as 1
    if isinstance(v, float):
        # SQLite may round a decimal text differently from Python in the last place;
        # whole numbers are exact either way.
        if not (v.is_integer() and abs(v) < 2**53):
            return None
        v = int(v)
    if isinstance(v, int):
        return sa.literal(v, sa.Integer) if -(2**63) <= v < 2**63 else None
    if isinstance(v, str):
        return sa.func.substr(sa.literal(v, sa.Text), 1, 64)
    return None


def _sqlite_path(key: str) -> str | None:
    # SQLite's JSON path syntax has no escape for '"' inside a quoted label, and reads a
    # backslash there as one (a key holding either never matched): scan those instead.
    return None if '"' in key or "\\" in key else f'$."{key}"'


_NUMERIC = ("integer", "real")


def _sqlite_value(typ: Any, val: Any, raw: Any, v: Any, top: bool) -> Any:
    """``typ``/``val``/``raw``: json_type, json_extract and JSON text of the member;
    ``v``: what is wanted."""
    if v is None:
        return typ == "null"
    if isinstance(v, bool):
        if top:  # True must not match 1 (the reference semantics only check the top level)
            return typ == ("true" if v else "false")
        return sa.and_(typ.in_((*_NUMERIC, "true", "false")), val == int(v))
    if isinstance(v, int) and not -(2**63) <= v < 2**63:
        # SQLite reads such numbers as lossy REALs: compare their JSON text instead.
        return sa.and_(typ == "integer", raw == str(v))
    if isinstance(v, int | float):
        kinds = _NUMERIC if top else (*_NUMERIC, "true", "false")
        return sa.and_(typ.in_(kinds), val == v)
    if isinstance(v, str):
        return sa.and_(typ == "text", val == v)
    return None  # dict / list: handled by the caller


def _sqlite_match(doc: Any, wanted: dict[str, Any], top: bool) -> Any:
    """SQL that is true when JSON object ``doc`` has ``wanted``'s members, equal."""
    clauses = []
    for k, v in wanted.items():
        path = _sqlite_path(k)
        if path is None:
            # Fall back to scanning the members (slower, but any key works).
            je = sa.func.json_each(doc).table_valued("key", "value", "type", "atom").alias()
            member = je.c.value
            cond = _sqlite_member(member, je.c.type, member, member, v, top)
            clauses.append(sa.exists().select_from(je).where(je.c.key == k, cond))
            continue
        p = sa.literal(path, sa.Text)
        typ, val = sa.func.json_type(doc, p), sa.func.json_extract(doc, p)
        raw = doc.op("->")(p)  # the member's JSON text, exactly as stored
        clauses.append(_sqlite_member(val, typ, val, raw, v, top))
    return sa.and_(sa.true(), *clauses)


def _sqlite_member(sub: Any, typ: Any, val: Any, raw: Any, v: Any, top: bool) -> Any:
    scalar = _sqlite_value(typ, val, raw, v, top)
    if scalar is not None:
        return scalar
    if isinstance(v, dict):
        # Equal dicts: every wanted member matches and there are no others.
        n = sa.select(sa.func.count()).select_from(
            sa.func.json_each(sub).table_valued("key").alias()
        ).scalar_subquery()
        return sa.and_(typ == "object", n == len(v), _sqlite_match(sub, v, False))
    if isinstance(v, list):
        conds = [typ == "array", sa.func.json_array_length(sub) == len(v)]
        for i, item in enumerate(v):
            p = sa.literal(f"$[{i}]", sa.Text)
            item_val = sa.func.json_extract(sub, p)
            conds.append(_sqlite_member(
                item_val, sa.func.json_type(sub, p), item_val, sub.op("->")(p), item, False,
            ))
        return sa.and_(*conds)
    # Anything else cannot come out of JSON: compare its encoded form.
    return val == msgspec.json.encode(v).decode()
