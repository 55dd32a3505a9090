"""How fast ``actiontrace serve`` answers on a large store: pages of flows, search, a flow.

    .venv/bin/python benchmarks/viewer_paging.py [--size 1000000] [--repeat 20] [--store PATH]

Builds a SQLite store of ``--size`` actions (the flows of benchmarks/query_latency.py:
10 actions each, 3 of them produced by synchronizations, inputs ``{"passage_id": n %
1000}``; one flow in 100 has a failed action), or reuses ``--store PATH`` when it exists,
then starts the real viewer (``actiontrace serve --port 0``, uvicorn on 127.0.0.1) and
prints the median wall-clock time of each request, HTTP and JSON included, measured
from this process. The goal is ≤100 ms per page at 1M actions (docs/viewer.md).
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

from query_latency import StoreBuilder, fill

from actiontrace import ActionFilter, SqlAlchemyTraceStorage
from actiontrace._record import FlowPart
from viewer_support import Server

STATUS = 5  # the status slot of a raw record (the layout of _record.py)


def with_failures(parts: Iterator[FlowPart], every: int = 100) -> Iterator[FlowPart]:
    """The builder's flows, one in ``every`` with its last action failed."""
    for n, part in enumerate(parts):
        if n % every == every - 1:
            part.records[-1][STATUS] = "error"
        yield part


def build(path: Path, size: int) -> None:
    store = SqlAlchemyTraceStorage(f"sqlite:///{path}")
    store.find_actions(ActionFilter(limit=1))  # the schema first
    t0 = time.perf_counter()
    fill(store, with_failures(StoreBuilder().parts(size // 10)))
    store.close()
    print(f"built {size:,} actions in {time.perf_counter() - t0:.0f} s: {path}")


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
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="at-bench-viewer-") as tmp:
        path = args.store or Path(tmp) / "viewer.db"
        if not path.exists():
            build(path, args.size)
        url = f"sqlite:///{path}"
        store = SqlAlchemyTraceStorage(url)
        total = len(store.list_flows(limit=10**9))
        middle = store.list_flows(limit=total // 2)[-1]
        newest = store.list_flows(limit=1)[0]
        leaf = store.find_actions(ActionFilter(flow_token=newest.flow_token))[-1]
        store.close()
        server = Server(url)
        try:
            deep = f"{middle.created_at}_{middle.flow_token.hex}"
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
            print(f"viewer on {total:,} flows ({args.size:,} actions), {os.cpu_count()} cpus; "
                  f"median of {args.repeat}")
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
