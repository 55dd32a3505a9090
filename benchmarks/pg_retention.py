"""Retention on PostgreSQL: dropping a day's partition vs deleting its rows, while a writer runs.

    .venv/bin/python benchmarks/pg_retention.py                     # 400,000 actions, ~1 min
    .venv/bin/python benchmarks/pg_retention.py --actions 10000000  # issue 16's size

Builds two stores of ``--actions`` seed-shaped actions (a flow per request: 4 actions, 3
edges, 2 log events, one flow per request, the demo's names and inputs), spread evenly over
``--days`` days ending tomorrow (UTC midnights), server-side with ``generate_series`` in the real schema (indexes
built after the rows, as a bulk load would), one unpartitioned and one partitioned by
day (``SqlAlchemyTraceStorage.partition``'s layout, as if partitioned before the first
row). Then, in each, ``prune_flows`` removes the oldest day (1/``--days`` of the flows)
while another process records seed-shaped requests into the same store through the
tracer; the figures are the prune's time and the writer's durable actions/s before and
during the prune (for the drop, during the second after it starts, and the longest gap
between two of the writer's commits around it). Needs ``ACTIONTRACE_TEST_PG_URL``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

from _suite import machine, pg_base_url, pg_schema_url

HERE = os.path.dirname(os.path.abspath(__file__))

# One row per (flow i, step k). A UUIDv7 from a time in ms and a seed: the time in the
# first 48 bits, then the version, the variant, and md5 bits.
_V7 = ("(lpad(to_hex({ms}), 12, '0') || '7' || substr(md5({seed}), 1, 3) || '8' "
       "|| substr(md5({seed}), 4, 15))::uuid")
_FLOW_MS = "({start_ms}::bigint + (i::bigint * {span_ms}) / {flows})"
_SERIES = "FROM generate_series(0, {flows} - 1) i"
_STEPS = [
    ("wkmp-ap::Web", "handle_request",
     """jsonb_build_object('path', '/play', 'token', '[REDACTED]', 'passage_id', mod(i, 1000))""",
     "'null'::jsonb", 173),
    ("wkmp-ap::Authentication", "validate_token", """'{"token": "[REDACTED]"}'::jsonb""",
     """'{"valid": true, "user_id": 1}'::jsonb""", 38),
    ("wkmp-ap::AudioPlayer", "play_passage", "jsonb_build_object('passage_id', mod(i, 1000))",
     """'{"started_at": 1699564980}'::jsonb""", 12),
    ("wkmp-ap::Cooldown", "record_play",
     "jsonb_build_object('song_id', mod(i, 1000), 'timestamp', 1699564980)", "'null'::jsonb", 1),
]
_SYNCS = ["OnWebRequest", "OnAuthSuccess", "RecordPlaybackForCooldown"]


def _aid(k: int) -> str:
    return _V7.format(ms=_FLOW_MS, seed=f"i::text || 'a{k}'")


def fill_sql(flows: int, start_ms: int, span_ms: int) -> list[str]:
    """INSERT .. SELECT statements that fill the four tables."""
    token = _V7.format(ms=_FLOW_MS, seed="i::text")
    fmt = {"flows": flows, "start_ms": start_ms, "span_ms": span_ms}

    def f(s: str) -> str:  # placeholders by replace: the JSON literals hold braces
        s = s.replace("{token}", token)
        for k, v in fmt.items():
            s = s.replace("{" + k + "}", str(v))
        return s

    out = [f(
        "INSERT INTO actiontrace_flows (flow_token, root_action_id, created_at, module, "
        "max_depth, sampled) SELECT {token}, " + _aid(0) + ", " + _FLOW_MS + " * 1000, "
        "'python', 4, true " + _SERIES)]
    for k, (concept, name, inputs, outputs, dur) in enumerate(_STEPS):
        parent = "NULL::uuid" if k == 0 else _aid(0)
        out.append(f(
            'INSERT INTO actiontrace_actions (id, flow_token, parent_id, concept_uri, action, '
            '"timestamp", duration_us, status, inputs, outputs) SELECT ' + _aid(k) + ", {token}, "
            + parent + f", '{concept}', '{name}', " + _FLOW_MS + f" * 1000 + {k * 40}, {dur}, "
            f"'ok', {inputs}, {outputs} " + _SERIES))
    for k, sync in enumerate(_SYNCS):
        out.append(f(
            "INSERT INTO actiontrace_edges (from_action, to_action, synchronization, flow_token, "
            "created_at, duration_us) SELECT " + _aid(k) + ", " + _aid(k + 1) + f", '{sync}', "
            "{token}, " + _FLOW_MS + f" * 1000 + {(k + 1) * 40}, {_STEPS[k + 1][4]} " + _SERIES))
    for j, (event, fields) in enumerate([("token accepted", """'{"user_id": 1}'"""),
                                         ("playing", "jsonb_build_object('passage_id', mod(i, 1000))")]):
        out.append(f(
            'INSERT INTO actiontrace_log_events (id, flow_token, action_id, "timestamp", level, '
            "event, fields) SELECT " + _V7.format(ms=_FLOW_MS, seed=f"i::text || 'l{j}'")
            + ", {token}, " + _aid(j + 1) + ", " + _FLOW_MS + f" * 1000 + {j * 40 + 50}, 'info', "
            f"'{event}', {fields} " + _SERIES))
    return out


DAY_MS = 86_400_000


def first_day(days: int) -> int:
    """The start (UTC midnight, ms) of the oldest day of data: the days end tomorrow."""
    return (int(time.time() * 1000) // DAY_MS) * DAY_MS - (days - 1) * DAY_MS


def build(url: str, flows: int, days: int, partitioned: bool) -> float:
    """Fill a new store; returns the seconds it took."""
    import sqlalchemy as sa

    from actiontrace import SqlAlchemyTraceStorage
    from actiontrace.storage import _partitions

    t0 = time.perf_counter()
    start_ms = first_day(days)
    store = SqlAlchemyTraceStorage(url)
    store.find_actions(__import__("actiontrace").ActionFilter(limit=1))  # the schema
    with store.engine.begin() as conn:
        if partitioned:  # partitioned before the first row: one partition per day since
            _partitions.convert(conn, 86400, days + 1, start_ms - 1000)
        indexes = [(n, d) for t in _partitions.TABLES
                   for n, d, unique, _c, _t in _partitions._indexes(conn, t) if not unique]
        for name, _def in indexes:
            conn.exec_driver_sql(f"DROP INDEX {name}")
        for sql in fill_sql(flows, start_ms, days * 86_400_000):
            conn.exec_driver_sql(sql)
    with store.engine.begin() as conn:
        for _name, definition in indexes:
            conn.exec_driver_sql(definition)
    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f"VACUUM ANALYZE {', '.join(_partitions.TABLES)}")
    store.close()
    del sa
    return time.perf_counter() - t0


WRITER = """
    import sys, time
    sys.path.insert(0, sys.argv[2])
    import actiontrace
    from headline import serve

    tracer = actiontrace.configure(url=sys.argv[1])
    tracer.storage.find_actions(actiontrace.ActionFilter(limit=1))
    serve(50)
    tracer.flush(120)
    print("ready", flush=True)
    while True:
        serve(25)
        assert tracer.flush(600), tracer.stats()
        print(time.time(), flush=True)  # 100 more actions durable
"""


def measure(url: str, days: int, settle: float) -> dict[str, Any]:
    """Prune the oldest day while a writer records; the prune's figures and the writer's."""
    from actiontrace import SqlAlchemyTraceStorage

    stamps: list[float] = []
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), url, HERE],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            stamps.append(float(line))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    store = SqlAlchemyTraceStorage(url)
    try:
        time.sleep(settle)
        cut_us = (first_day(days) + DAY_MS) * 1000  # the end of the oldest day
        t0 = time.time()
        done = store.prune_flows(cut_us)
        t1 = time.time()
        time.sleep(max(1.0, settle / 2))
    finally:
        child.kill()
        child.wait()
        store.close()

    def rate(a: float, b: float) -> float:
        return 100 * sum(1 for s in stamps if a <= s < b) / (b - a)

    window = max(t1 - t0, 1.0)
    around = [s for s in stamps if t0 - 1 <= s <= t0 + window + 1]
    before = [b - a for a, b in itertools.pairwise(stamps) if b < t0]
    return {
        "prune_s": t1 - t0, "flows": done.flows, "actions": done.actions,
        "before": rate(t0 - settle + 1, t0), "during": rate(t0, t0 + window),
        "max_gap": max((b - a for a, b in itertools.pairwise(around)), default=float("nan")),
        "median_gap": statistics.median(before) if before else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=400_000)
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--settle", type=float, default=8.0,
                    help="seconds the writer runs before the prune (its rate 'before')")
    ap.add_argument("--stores", default="rows,partitioned",
                    help="which stores to build and prune (rows, partitioned)")
    args = ap.parse_args()
    base = pg_base_url()
    if base is None:
        sys.exit("ACTIONTRACE_TEST_PG_URL is not set")
    print("; ".join(f"{k}: {v}" for k, v in machine().items()))
    flows = args.actions // 4
    kinds = [k.strip() for k in args.stores.split(",")]
    for partitioned in [k == "partitioned" for k in kinds]:
        url, drop = pg_schema_url(base)
        try:
            kind = "partitioned by day, drop" if partitioned else "unpartitioned, row-wise"
            built = build(url, flows, args.days, partitioned)
            print(f"{kind}: built {flows * 4:,} actions in {built:.0f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
            r = measure(url, args.days, args.settle)
            print(f"{kind}: pruned {r['flows']:,} flows ({r['actions']:,} actions) in "
                  f"{r['prune_s']:.2f} s; writer {r['before']:,.0f} actions/s before, "
                  f"{r['during']:,.0f} during; longest gap between its commits around the "
                  f"prune {r['max_gap']:.2f} s (median before {r['median_gap']:.3f} s); "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            drop()


if __name__ == "__main__":
    main()
