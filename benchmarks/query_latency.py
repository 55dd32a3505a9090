"""Query latency of SqlAlchemyTraceStorage on a large store, and as the store grows.

    .venv/bin/python benchmarks/query_latency.py [--size 1000000] [--repeat 30]
    .venv/bin/python benchmarks/query_latency.py --sizes 10000,100000,1000000

Builds a store of ``--size`` actions (flows of 10: a root, 9 children, 3 of them
produced by synchronizations; 4 concepts x 3 actions; inputs ``{"passage_id": n % 1000}``)
by calling ``write_parts`` directly, then prints the median latency of each query.
SQLite always (a file in a temp dir); PostgreSQL too when ``ACTIONTRACE_TEST_PG_URL`` is
set (in a throwaway schema). With ``--sizes``, one SQLite store is grown from size to
size and measured at each (the suite's store-size scaling, ``run_all.py``).

The flows are generated as they are written, so a 10,000,000-action store needs no more
memory than a 10,000-action one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from actiontrace import ActionFilter, TraceAnalyzer
from actiontrace.recording._ids import as_uuid, new_id
from actiontrace.recording._record import FlowPart, Named
from actiontrace.storage import SqlAlchemyTraceStorage

CONCEPTS = [f"app::Concept{i}" for i in range(4)]
ACTIONS = ["play", "stop", "seek"]
SPECS = [Named(c, a) for c in CONCEPTS for a in ACTIONS]
SYNCS = [f"Sync{i}" for i in range(300)]  # ~1,000 hits each at 1M actions
BATCH = 5_000
SAMPLE = 200  # flows kept (reservoir) to aim the point queries at


class StoreBuilder:
    """Generates the flows of the store, deterministically, and samples some of them."""

    def __init__(self, seed: int = 1) -> None:
        self.rnd = random.Random(seed)
        self.pick = random.Random(seed + 1)  # sampling must not change the data
        self.t = 1_700_000_000_000_000  # µs
        self.flows = 0
        self.sample: list[tuple[int, int]] = []  # (flow token, leaf action id)

    def parts(self, n_flows: int) -> Iterator[FlowPart]:
        rnd = self.rnd
        for _ in range(n_flows):
            t = self.t
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
            self.flows += 1
            entry = (token, prev)
            if len(self.sample) < SAMPLE:
                self.sample.append(entry)
            else:
                k = self.pick.randrange(self.flows)
                if k < SAMPLE:
                    self.sample[k] = entry
            self.t += 20
            yield part


def build_parts(n_actions: int, seed: int = 1) -> list[FlowPart]:
    """All the parts of an ``n_actions`` store, in memory (small stores only)."""
    return list(StoreBuilder(seed).parts(n_actions // 10))


def fill(store: SqlAlchemyTraceStorage, parts: Iterable[FlowPart]) -> float:
    """Write the parts in the writer's batches; return the seconds it took."""
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
    return statistics.median(samples_ms(fn, repeat))


def samples_ms(fn: Callable[[], Any], repeat: int) -> list[float]:
    fn()  # warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return times


def queries(store: SqlAlchemyTraceStorage, sample: list[tuple[int, int]]
            ) -> dict[str, Callable[[], Any]]:
    """The queries of docs/reference.md, Queries, and the analyzer, aimed at random sampled flows."""
    rnd = random.Random(2)
    leaves = [as_uuid(leaf) for _, leaf in sample]
    tokens = [as_uuid(token) for token, _ in sample]
    analyzer = TraceAnalyzer(store)
    return {
        "get_causal_chain (10-action flow)":
            lambda: store.get_causal_chain(leaves[rnd.randrange(len(leaves))]),
        "find_actions concept+action+input, limit 100":
            lambda: store.find_actions(ActionFilter(
                concept_uri="app::Concept1", action="play",
                inputs={"passage_id": rnd.randrange(1000)}, limit=100)),
        "find_actions flow_token":
            lambda: store.find_actions(ActionFilter(flow_token=tokens[rnd.randrange(len(tokens))])),
        "find_by_sync": lambda: store.find_by_sync(SYNCS[7]),
        "find_producing_sync":
            lambda: store.find_producing_sync(leaves[rnd.randrange(len(leaves))]),
        "get_trace (10 actions)":
            lambda: store.get_trace(tokens[rnd.randrange(len(tokens))]),
        "top_synchronizations(10)": lambda: analyzer.top_synchronizations(10),
        "longest_chains(10)": lambda: analyzer.longest_chains(10),
        "sync_performance": lambda: analyzer.sync_performance(SYNCS[7]),
    }


def grow(sizes: list[int], repeat: int, url: str | None = None
         ) -> Iterator[tuple[int, float, dict[str, list[float]], int]]:
    """Grow one SQLite store through ``sizes`` (actions); measure every query at each.

    Yields ``(size, actions written per second, {query: samples in ms}, find_by_sync hits)``.
    """
    builder = StoreBuilder()
    with tempfile.TemporaryDirectory(prefix="at-bench-store-") as tmp:
        store = SqlAlchemyTraceStorage(url or f"sqlite:///{tmp}/q.db")
        store.find_actions(ActionFilter(limit=1))  # schema first
        try:
            for size in sorted(sizes):
                todo = size // 10 - builder.flows
                secs = fill(store, builder.parts(todo)) if todo > 0 else 0.0
                rate = todo * 10 / secs if secs else 0.0
                checks = queries(store, builder.sample)
                results = {label: samples_ms(fn, repeat) for label, fn in checks.items()}
                yield size, rate, results, len(store.find_by_sync(SYNCS[7]))
        finally:
            store.close()


def measure(name: str, store: SqlAlchemyTraceStorage, parts: list[FlowPart],
            repeat: int, sample: list[tuple[int, int]]) -> None:
    size = sum(len(p.records) for p in parts)
    secs = fill(store, parts)
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:  # fresh planner statistics, as autovacuum would
            conn.exec_driver_sql("ANALYZE")
    print(f"\n{name}: {size:,} actions written in {secs:.1f} s ({size / secs:,.0f}/s)")
    hits = len(store.find_by_sync(SYNCS[7]))
    print(f"{'query':<48} {'median ms':>10}")
    for label, fn in queries(store, sample).items():
        print(f"{label:<48} {median_ms(fn, repeat):>10.2f}")
    print(f"(find_by_sync returned {hits:,} actions)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--sizes", help="comma-separated: grow one SQLite store through them")
    ap.add_argument("--repeat", type=int, default=30)
    args = ap.parse_args(argv)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
        for size, rate, results, hits in grow(sizes, args.repeat):
            print(f"\nSQLite at {size:,} actions (grown at {rate:,.0f} actions/s; "
                  f"find_by_sync hits {hits:,})")
            for label, samples in results.items():
                print(f"{label:<48} {statistics.median(samples):>10.2f} ms")
        return
    print(f"building {args.size:,} actions ({os.cpu_count()} cpus)")
    builder = StoreBuilder()
    parts = list(builder.parts(args.size // 10))
    with tempfile.TemporaryDirectory() as tmp:
        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp}/q.db")
        measure("SQLite", store, parts, args.repeat, builder.sample)
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
            measure("PostgreSQL", store, parts, args.repeat, builder.sample)
            store.close()
        finally:
            with admin.begin() as conn:
                conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
            admin.dispose()


if __name__ == "__main__":
    main()
