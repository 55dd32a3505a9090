"""Query latency of SqlAlchemyTraceStorage on a large store.

    .venv/bin/python benchmarks/query_latency.py [--size 1000000] [--repeat 30]

Builds a store of ``--size`` actions (flows of 10: a root, 6 children, 3 of them
produced by synchronizations; 4 concepts x 3 actions; inputs ``{"passage_id": n % 1000}``)
by calling ``write_parts`` directly, then prints the median latency of each query.
SQLite always (a file in a temp dir); PostgreSQL too when ``ACTIONTRACE_TEST_PG_URL`` is
set (in a throwaway schema).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

from actiontrace import ActionFilter, TraceAnalyzer
from actiontrace._ids import as_uuid, new_id
from actiontrace._record import FlowPart, Named
from actiontrace.storage import SqlAlchemyTraceStorage

CONCEPTS = [f"app::Concept{i}" for i in range(4)]
ACTIONS = ["play", "stop", "seek"]
SPECS = [Named(c, a) for c in CONCEPTS for a in ACTIONS]
SYNCS = [f"Sync{i}" for i in range(300)]  # ~1,000 hits each at 1M actions
BATCH = 5_000


def build_parts(n_actions: int, seed: int = 1) -> list[FlowPart]:
    rnd = random.Random(seed)
    parts = []
    t = 1_700_000_000_000_000  # µs
    for _ in range(n_actions // 10):
        token, root = new_id(), new_id()
        part = FlowPart(token, root, t, "bench")
        part.offset = 0  # raw times below are ns since the epoch
        recs = part.records
        recs.append([Named("app::Web", "request"), root, None, t * 1000, 900_000, "ok",
                     b'{"path":"/play"}', b"null"])
        prev = root
        for j in range(9):
            aid = new_id()
            spec = SPECS[rnd.randrange(len(SPECS))]
            n = rnd.randrange(1_000_000)
            recs.append([spec, aid, root, (t + j + 1) * 1000, rnd.randrange(1, 5000) * 1000,
                         "ok", b'{"passage_id":%d}' % (n % 1000), b'{"started_at":%d}' % n])
            if j % 3 == 2:  # a synchronization reacting to the previous action
                part.edge_log.append((prev, aid, SYNCS[rnd.randrange(len(SYNCS))],
                                      (t + j + 1) * 1000))
            prev = aid
        parts.append(part)
        t += 20
    return parts


def fill(store: SqlAlchemyTraceStorage, parts: list[FlowPart]) -> float:
    t0 = time.perf_counter()
    cur: list[FlowPart] = []
    for p in parts:
        cur.append(p)
        if len(cur) * 10 >= BATCH:
            store.write_parts(cur)
            cur = []
    if cur:
        store.write_parts(cur)
    return time.perf_counter() - t0


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def measure(name: str, store: SqlAlchemyTraceStorage, parts: list[FlowPart],
            repeat: int) -> None:
    size = sum(len(p.records) for p in parts)
    secs = fill(store, parts)
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:  # fresh planner statistics, as autovacuum would
            conn.exec_driver_sql("ANALYZE")
    print(f"\n{name}: {size:,} actions written in {secs:.1f} s ({size / secs:,.0f}/s)")
    rnd = random.Random(2)
    leaves = [as_uuid(p.records[-1][1]) for p in rnd.sample(parts, 50)]
    analyzer = TraceAnalyzer(store)
    checks = {
        "get_causal_chain (10-action flow)":
            lambda: store.get_causal_chain(leaves[rnd.randrange(50)]),
        "find_actions concept+action+input, limit 100":
            lambda: store.find_actions(ActionFilter(
                concept_uri="app::Concept1", action="play",
                inputs={"passage_id": rnd.randrange(1000)}, limit=100)),
        "find_by_sync (~1,000 hits at 1M)": lambda: store.find_by_sync(SYNCS[7]),
        "find_producing_sync": lambda: store.find_producing_sync(leaves[rnd.randrange(50)]),
        "get_trace (10 actions)":
            lambda: store.get_trace(as_uuid(parts[rnd.randrange(len(parts))].token)),
        "top_synchronizations(10)": lambda: analyzer.top_synchronizations(10),
        "longest_chains(10)": lambda: analyzer.longest_chains(10),
        "sync_performance": lambda: analyzer.sync_performance(SYNCS[7]),
    }
    hits = len(store.find_by_sync(SYNCS[7]))
    print(f"{'query':<48} {'median ms':>10}")
    for label, fn in checks.items():
        print(f"{label:<48} {median_ms(fn, repeat):>10.2f}")
    print(f"(find_by_sync returned {hits:,} actions)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    print(f"building {args.size:,} actions ({os.cpu_count()} cpus)")
    parts = build_parts(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp}/q.db")
        measure("SQLite", store, parts, args.repeat)
        store.close()
    base = os.environ.get("ACTIONTRACE_TEST_PG_URL")
    if base:
        import sqlalchemy as sa

        schema = f"at_bench_{uuid.uuid4().hex[:10]}"
        admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
        with admin.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        try:
            url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
            store = SqlAlchemyTraceStorage(url.render_as_string(hide_password=False))
            measure("PostgreSQL", store, parts, args.repeat)
            store.close()
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()


if __name__ == "__main__":
    main()
