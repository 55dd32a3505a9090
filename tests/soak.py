"""Soak test (fault matrix row 8): mixed load while PostgreSQL restarts; exact counts after.

Threads and asyncio tasks record flows of 1 to 1,000 actions (some with synchronization
edges, some raising) for ``--duration`` seconds while the database is stopped and
started again every ``--restart-every`` seconds. Afterwards the stored actions, flows
and edges must equal what was recorded, exactly.

    python tests/soak.py --duration 600 --restart-every 120     # make soak
    python tests/soak.py --url postgresql+psycopg://...         # no restarts: any server

Without ``--url`` it starts a PostgreSQL cluster of its own (scripts/pg-test-server with a
private state file) so that it may stop and start it. ``tests/test_reliability_soak.py``
runs a 60-second version in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import actiontrace
from actiontrace import action, flow, synchronization
from reliability_support import PrivateCluster, count_rows, rss_kib


class Tally:
    """What the load recorded (thread-safe counters)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.actions = self.flows = self.edges = 0

    def add(self, actions: int, edges: int) -> None:
        with self.lock:
            self.actions += actions
            self.flows += 1
            self.edges += edges


@action(concept="soak::Work")
def work(i: int, payload: str) -> int:
    if i % 97 == 13:
        raise ValueError("unlucky")
    return i


@action(concept="soak::Work")
async def awork(i: int) -> int:
    await asyncio.sleep(0)
    return i


@synchronization("SoakGlue")
def glue(n: int) -> int:
    for i in range(n):
        work(i * 2, "g")  # even: never raises
    return n


def one_flow(rng: random.Random, tally: Tally) -> None:
    size = rng.choice([1, 2, 5, 10, 50, 200, 1000]) if rng.random() < 0.2 else rng.randint(1, 20)
    edges = 0
    with flow("soak::Web::req", inputs={"size": size}):
        done = 0
        while done < size - 1:
            if rng.random() < 0.1 and size - 1 - done >= 3:
                glue(3)
                edges += 3
                done += 3
                continue
            with contextlib.suppress(ValueError):
                work(done, "x" * rng.randint(0, 200))
            done += 1
    tally.add(1 + done, edges)


async def one_async_flow(k: int, tally: Tally) -> None:
    n = k % 30 + 1
    async with flow("soak::Web::task", inputs={"k": k}):
        for i in range(n):
            await awork(i)
    tally.add(n + 1, 0)


def run_soak(url: str, duration: float, restart_every: float, cluster: PrivateCluster | None,
             journal: Path, threads: int = 4, outage: float = 10.0) -> dict[str, Any]:
    """Run the load; return the figures (and whether the counts matched)."""
    tracer = actiontrace.configure(url=url, journal=journal)
    tally = Tally()
    stop = threading.Event()
    peak = [rss_kib()]

    def thread_body(seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            one_flow(rng, tally)
            time.sleep(rng.random() * 0.02)  # ~3,000 actions/s per thread, bursty

    def async_body() -> None:
        async def main() -> None:
            k = 0
            while not stop.is_set():
                await asyncio.gather(*(one_async_flow(k + j, tally) for j in range(100)))
                k += 100
                await asyncio.sleep(0.2)

        asyncio.run(main())

    workers = [threading.Thread(target=thread_body, args=(s,)) for s in range(threads)]
    workers.append(threading.Thread(target=async_body))
    for w in workers:
        w.start()
    t0 = time.monotonic()
    restarts = 0
    next_restart = t0 + restart_every
    try:
        while time.monotonic() - t0 < duration:
            time.sleep(0.5)
            peak[0] = max(peak[0], rss_kib())
            if cluster is not None and time.monotonic() >= next_restart and \
                    time.monotonic() - t0 + outage < duration:
                cluster.stop()
                time.sleep(outage)
                cluster.start()
                restarts += 1
                next_restart = time.monotonic() + restart_every
    finally:
        stop.set()
        for w in workers:
            w.join()
    t1 = time.monotonic()
    ok = tracer.flush(300)
    drain = time.monotonic() - t1
    stats = tracer.stats()
    stored = {
        "actions": count_rows(url, where="WHERE concept_uri LIKE 'soak::%'"),
        "flows": count_rows(url, "actiontrace_flows"),
        "edges": count_rows(url, "actiontrace_edges", "WHERE synchronization = 'SoakGlue'"),
    }
    sent = {"actions": tally.actions, "flows": tally.flows, "edges": tally.edges}
    tracer.shutdown()
    return {
        "duration_s": round(t1 - t0, 1), "restarts": restarts, "flush_ok": ok,
        "sent": sent, "stored": stored, "match": sent == stored,
        "drain_s": round(drain, 2), "peak_rss_mb": round(peak[0] / 1024, 1),
        "journaled": stats["journaled"], "replayed": stats["replayed"],
        "dropped": stats["dropped"], "retries": stats["retries"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--restart-every", type=float, default=120)
    p.add_argument("--outage", type=float, default=10, help="seconds the database stays down")
    p.add_argument("--threads", type=int, default=4)
    p.add_argument("--url", help="use this database (no restarts) instead of a private cluster")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        cluster = None
        url = args.url
        if url is None:
            cluster = PrivateCluster(Path(tmp), 55490)
            cluster.start_new()
            url = cluster.url
        try:
            result = run_soak(url, args.duration, args.restart_every, cluster,
                              Path(tmp) / "journal", args.threads, args.outage)
        finally:
            if cluster is not None:
                cluster.destroy()
    print(json.dumps(result, indent=2))
    return 0 if result["match"] and result["flush_ok"] and not result["dropped"] else 1


if __name__ == "__main__":
    sys.exit(main())
