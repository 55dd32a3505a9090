"""Seed-shaped requests from 1, 2 and 4 writer processes into one PostgreSQL server.

    .venv/bin/python benchmarks/pg_writers.py [--requests 5000] [--procs 1,2,4]

Each process records ``--requests`` seed-shaped requests (headline.serve: 4 actions, 3
synchronizations, 2 log events, one flow each) into the same schema and flushes; the
figure is the actions all of them stored per second, from the first start to the last
flush (processes start together, after their imports and the schema check). The writer
sends batches of more than 64 rows with COPY (storage/_dialects.py). Needs
``ACTIONTRACE_TEST_PG_URL``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
import time

from _suite import Row, machine, pg_base_url, pg_schema_url, summarize

CHILD = """
    import sys, time
    sys.path.insert(0, sys.argv[3])
    import actiontrace
    from headline import serve

    tracer = actiontrace.configure(url=sys.argv[1])
    tracer.storage.find_actions(actiontrace.ActionFilter(limit=1))  # schema, off the clock
    serve(50)
    assert tracer.flush(120)
    print("ready", flush=True)
    sys.stdin.readline()  # the go
    t0 = time.time()
    serve(int(sys.argv[2]))
    assert tracer.flush(600), tracer.stats()
    print(t0, time.time(), tracer.stats()["written"], flush=True)
"""


def run(url: str, procs: int, requests: int) -> float:
    """Actions/s stored by ``procs`` processes together."""
    here = os.path.dirname(os.path.abspath(__file__))
    children = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(CHILD), url,
                                  str(requests), here], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    for c in children:
        assert c.stdout is not None and c.stdout.readline().strip() == "ready"
    for c in children:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    spans = []
    for c in children:
        out, _ = c.communicate(timeout=1200)
        start, end, _written = out.split()
        spans.append((float(start), float(end)))
        assert c.returncode == 0
    elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
    return procs * requests * 4 / elapsed


def measure(requests: int, procs: list[int], repeat: int,
            group: str = "postgres writers") -> list[Row]:
    base = pg_base_url()
    if base is None:
        return [Row(group, _case(n), None, "actions/s",
                    note="skipped: ACTIONTRACE_TEST_PG_URL is not set") for n in procs]
    rows = []
    for n in procs:
        samples = []
        for _ in range(repeat):
            url, drop = pg_schema_url(base)
            try:
                samples.append(run(url, n, requests))
            finally:
                drop()
        med, spread = summarize(samples)
        rows.append(Row(group, _case(n), med, "actions/s", spread=spread, rounds=samples,
                        note=_note(n, med, requests)))
    return rows


def _case(procs: int) -> str:
    return (f"PostgreSQL, {procs} writer process{'es' if procs > 1 else ''} into one server, "
            "seed-shaped flows")


def _note(procs: int, rate: float, requests: int) -> str:
    """The goal beside a row: ≥60,000 actions/s into one server, from several processes
    (one process is bound by its GIL: docs/performance.md)."""
    each = f"{requests:,} requests per process"
    if procs == 1:
        return f"{each}; one process: its recording and writer share a GIL"
    return f"goal ≥60,000: {'met' if rate >= 60_000 else 'not met'}; {each}"


def main() -> None:
    from report import format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5_000)
    ap.add_argument("--procs", default="1,2,4")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print("; ".join(f"{k}: {v}" for k, v in machine().items()))
    rows = measure(args.requests, [int(p) for p in args.procs.split(",")], args.repeat)
    print(format_table(rows))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
