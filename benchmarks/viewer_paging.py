"""How fast ``actiontrace serve`` answers on a large store: pages of flows, search, a flow.

    .venv/bin/python benchmarks/viewer_paging.py [--size 1000000] [--repeat 20] [--store PATH]
    .venv/bin/python benchmarks/viewer_paging.py --postgres [--size 1000000]

Builds a SQLite store of ``--size`` actions (the flows of benchmarks/query_latency.py:
10 actions each, 3 of them produced by synchronizations, inputs ``{"passage_id": n %
1000}``; one flow in 100 has a failed action), or reuses ``--store PATH`` when it exists,
then starts the real viewer (``actiontrace serve --port 0``, uvicorn on 127.0.0.1) and
prints the median wall-clock time of each request, HTTP and JSON included, measured
from this process. ``--postgres`` builds the store in a throwaway schema of the server
named by ``$ACTIONTRACE_TEST_PG_URL`` instead (dropped at the end). The goal is ≤100 ms
per page at 1M actions (docs/viewer.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import sqlalchemy as sa
from _suite import pg_base_url, pg_schema_url
from query_latency import StoreBuilder, fill

from actiontrace import ActionFilter, SqlAlchemyTraceStorage
from actiontrace.recording._record import FlowPart
from actiontrace.storage._schema import actions, flows
from viewer_support import Server

STATUS = 5  # the status slot of a raw record (the layout of _record.py)


def with_failures(parts: Iterator[FlowPart], every: int = 100) -> Iterator[FlowPart]:
    """The builder's flows, one in ``every`` with its last action failed."""
    for n, part in enumerate(parts):
        if n % every == every - 1:
            part.records[-1][STATUS] = "error"
        yield part


def build(url: str, size: int) -> None:
    store = SqlAlchemyTraceStorage(url)
    store.find_actions(ActionFilter(limit=1))  # the schema first
    t0 = time.perf_counter()
    fill(store, with_failures(StoreBuilder().parts(size // 10)))
    if store.dialect == "postgresql":
        with store.engine.begin() as conn:  # fresh planner statistics, as autovacuum would
            conn.exec_driver_sql("ANALYZE")
    store.close()
    print(f"built {size:,} actions in {time.perf_counter() - t0:.0f} s")


def median_ms(server: Server, path: str, repeat: int) -> tuple[float, int]:
    resp = server.get(path)  # warm up (and check it answers)
    assert resp.status == 200, (path, resp.status, resp.text[:200])
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        server.get(path)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), len(resp.body)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--store", type=Path, help="reuse (or build and keep) this SQLite file")
    ap.add_argument("--postgres", action="store_true",
                    help="build the store in a throwaway schema of $ACTIONTRACE_TEST_PG_URL")
    args = ap.parse_args(argv)
    if args.postgres:
        base = pg_base_url()
        if base is None:
            ap.error("--postgres needs $ACTIONTRACE_TEST_PG_URL")
        url, drop = pg_schema_url(base)
        try:
            build(url, args.size)
            measure(url, args)
        finally:
            drop()
        return
    with tempfile.TemporaryDirectory(prefix="at-bench-viewer-") as tmp:
        path = args.store or Path(tmp) / "viewer.db"
        url = f"sqlite:///{path}"
        if not path.exists():
            build(url, args.size)
        measure(url, args)


def measure(url: str, args: argparse.Namespace) -> None:
    """Start the viewer over the store at ``url`` and time its requests."""
    store = SqlAlchemyTraceStorage(url)
    f = flows.c
    with store.engine.connect() as conn:  # the set-up may use OFFSET; the viewer never does
        total = conn.execute(sa.select(sa.func.count()).select_from(flows)).scalar_one()
        n_actions = conn.execute(sa.select(sa.func.count()).select_from(actions)).scalar_one()
        at, token = conn.execute(
            sa.select(f.created_at, f.flow_token).order_by(f.created_at.desc(), f.flow_token.desc())
            .offset(total // 2).limit(1)
        ).one()
    newest = store.list_flows(limit=1)[0]
    leaf = store.find_actions(ActionFilter(flow_token=newest.flow_token))[-1]
    store.close()
    server = Server(url)
    try:
        deep = f"{at}_{token.hex}"
        checks = {
            "flows, first page (limit 50)": "/api/flows?limit=50",
            "flows, a page half-way down (keyset)": f"/api/flows?limit=50&before={deep}",
            "flows, status=error (1 flow in 100)": "/api/flows?limit=50&status=error",
            "flows, holding app::Concept1::play": "/api/flows?limit=50&concept=app::Concept1&action=play",
            "flows, a concept no flow holds": "/api/flows?limit=50&concept=nope",
            "flows, since 1 s before the newest": f"/api/flows?limit=50&since={newest.created_at - 1_000_000}",
            "search input passage_id=42 (input index)": "/api/actions?limit=50&input=passage_id%3D42",
            "search passage_id=42, second page": None,
            "one flow (10 actions)": f"/api/flows/{newest.flow_token}",
            "causal chain of a leaf": f"/api/actions/{leaf.id}/chain",
            "action detail (record, sync, logs)": f"/api/actions/{leaf.id}",
        }
        first = server.get(checks["search input passage_id=42 (input index)"] or "")
        link = first.headers.get("link", "")
        checks["search passage_id=42, second page"] = link[1:link.index(">")] if link else None
        print(f"viewer on {store.dialect}, {total:,} flows ({n_actions:,} actions), "
              f"{os.cpu_count()} cpus; median of {args.repeat}")
        print(f"{'request':<46} {'median ms':>10} {'bytes':>8}")
        for label, p in checks.items():
            if p is None:
                continue
            ms, size = median_ms(server, p, args.repeat)
            print(f"{label:<46} {ms:>10.1f} {size:>8,}")
        # Whole-store answers, computed once and kept for 10 s (first request shown).
        for label, p in (("synchronizations graph (uncached)", "/api/synchronizations"),
                         ("stats (uncached)", "/api/stats")):
            t0 = time.perf_counter()
            resp = server.get(p)
            ms = (time.perf_counter() - t0) * 1000
            print(f"{label:<46} {ms:>10.1f} {len(resp.body):>8,}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
