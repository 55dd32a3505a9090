"""The benchmark suite: every figure of docs/performance.md, in one table.

    make bench          # .venv/bin/python benchmarks/run_all.py
    make bench-full     # ... --store-sizes 10000,1000000,10000000
    .venv/bin/python benchmarks/run_all.py --quick --no-write    # smoke run, < 1 minute

Sections (``--sections`` picks some), each in this one process unless said otherwise:

* headline: issue 16's table -- seed-shaped requests durable in SQLite (actions/s) next
  to OpenTelemetry with a null exporter, 20,000 actions in one flow, and the queries and
  ``actiontrace stats`` on a 1,000,000-action seed-shaped store (built once, cached in
  ``benchmarks/.cache/``), each with its goal beside.
* overhead: per-call cost in flows of 1,000 calls -- bare, actiontrace (memory: hot
  path and flushed; disabled; SQLite flushed; PostgreSQL flushed when
  ``ACTIONTRACE_TEST_PG_URL`` is set), OpenTelemetry SDK, eliot, Logfire (offline).
* requests: the bundled music player's requests (4 actions, 3 synchronizations) as
  separate flows, durable in SQLite: µs per request and requests/s.
* async / threads: 200 concurrent tasks, 8 threads, in ns per action.
* flow size: ns per call as flows grow, in memory and in SQLite.
* throughput: actions/s into SQLite (and PostgreSQL), end to end (recorded, then
  flushed) and through the writer alone, next to plain sqlite3 inserting the same rows.
* store size: the queries of docs/reference.md (Queries) and the analyzer as one SQLite store grows.
* span export: what ``configure(span_exporters=...)`` costs per exported action (the
  conversion alone, end to end with no exporter / a no-op / the SDK's in-memory / the
  real OTLP/HTTP exporter to 127.0.0.1, and the hot path with an exporter configured).
* services: ``instrument()`` per call next to ``@action``'s, and the ASGI/WSGI
  middleware per request above the bare app (docs/services.md).
* memory: bytes per buffered action and the peak RSS with 1,000,000 actions waiting for
  a stalled writer (each in a fresh process, so the peak is its own).

Prints the table on stdout (progress on stderr), and, unless ``--no-write`` (implied by
``--quick``), writes it between the ``bench`` markers of docs/performance.md with the plot
docs/img/scaling.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import concurrency
import flow_scaling
import headline
import memory_use
import overhead
import query_latency
import report
import seed_requests
import services
import span_export
import sql_throughput
from _suite import REPO, Row, machine, progress, summarize, timed

SECTIONS = ("headline", "overhead", "requests", "concurrency", "flows", "throughput", "store",
            "spans", "services", "memory")
FULL_STORE = "10000,1000000,10000000"


@dataclass
class Plan:
    repeat: int = 7
    headline_requests: int = 5_000
    headline_store: int = headline.STORE_SIZE
    overhead: overhead.Config = field(default_factory=overhead.Config)
    requests: int = 2_000
    tasks: int = 200
    async_k: int = 50
    threads: int = 8
    thread_flows: int = 10
    thread_k: int = 500
    flow_sizes: tuple[int, ...] = (1, 10, 100, 1_000, 10_000)
    flow_n: int = 100_000
    flow_durable_n: int = 30_000
    throughput_n: int = 100_000
    store_sizes: tuple[int, ...] = (10_000, 100_000)
    store_repeat: int = 20
    span_n: int = 20_000
    mem_actions: int = 100_000
    rss_actions: int = 1_000_000
    mem_repeat: int = 3
    services: services.Config = field(default_factory=services.Config)


QUICK = Plan(
    repeat=3,
    overhead=overhead.Config(n=10_000, durable_n=2_000, peer_n=1_000, logfire_n=1_000,
                             repeat=3, peers=True, logfire=False),
    headline_requests=300, headline_store=4_000,
    requests=200, tasks=20, async_k=10, threads=4, thread_flows=2, thread_k=100,
    flow_sizes=(1, 10, 100, 1_000), flow_n=5_000, flow_durable_n=2_000, throughput_n=5_000,
    store_sizes=(1_000, 5_000), store_repeat=5, span_n=2_000,
    mem_actions=20_000, rss_actions=100_000, mem_repeat=1,
    services=services.Config(calls=10_000, requests=1_000, repeat=3),
)


def store_rows(sizes: tuple[int, ...], repeat: int) -> list[Row]:
    by_query: dict[str, list[Row]] = {}
    fills: list[Row] = []
    for size, rate, results, hits in query_latency.grow(list(sizes), repeat):
        progress(f"[bench]   store of {size:,} actions measured")
        fills.append(Row("store size", f"write_parts while growing to {size:,}", rate,
                         "actions/s", note="one SQLite file, flows of 10 actions"))
        for label, samples in results.items():
            med, spread = summarize(samples)
            note = f"{repeat} calls"
            if label == "find_by_sync":
                note += f", {hits:,} hits"
            by_query.setdefault(label, []).append(Row(
                "store size", f"{label} @ {size:,} actions", med, "ms", spread=spread,
                note=note, key=f"store:{label}:{size}", rounds=samples))
    rows = fills
    for qrows in by_query.values():
        first = qrows[0].value
        for r in qrows:
            r.ratio = r.value / first if first and r.value is not None else None
        rows += qrows
    return rows


def memory_rows(plan: Plan) -> list[Row]:
    rows: list[Row] = []
    for flow_size in (10, 1_000):
        runs = [memory_use.measure("tracemalloc", plan.mem_actions, flow_size)
                for _ in range(plan.mem_repeat)]
        med, spread = summarize([r["bytes_per_action"] for r in runs])
        rows.append(Row("memory", f"bytes per buffered action, flows of {flow_size:,}", med,
                        "bytes", spread=spread,
                        note=f"tracemalloc, {runs[0]['buffered']:,} actions waiting, "
                             f"dropped {runs[0]['dropped']}"))
    runs = [memory_use.measure("rss", plan.rss_actions, 1_000) for _ in range(plan.mem_repeat)]
    peak, spread = summarize([r["peak_rss_mib"] for r in runs])
    per = statistics.median(r["rss_bytes_per_action"] for r in runs)
    base = statistics.median(r["base_rss_mib"] for r in runs)
    r0 = runs[0]
    rows.append(Row(
        "memory", f"peak RSS, {r0['buffered']:,} actions waiting for a stalled writer", peak,
        "MiB", spread=spread, above=peak - base,
        note=f"VmHWM; {per:,.0f} bytes/action of RSS growth; max_queue "
             f"{r0['max_queue']:,}; dropped {r0['dropped']}"))
    return rows


def command_line(argv: list[str]) -> str:
    python = ".venv/bin/python benchmarks/run_all.py"
    if not argv:
        return f"make bench   # = scripts/with-pg {python}"
    if argv == ["--store-sizes", FULL_STORE]:
        return f"make bench-full   # = scripts/with-pg {python} --store-sizes {FULL_STORE}"
    return f"{python} {shlex.join(argv)}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: tiny sizes, 3 rounds, no Logfire; implies --no-write")
    ap.add_argument("--no-write", action="store_true",
                    help="print the table only (do not touch docs/)")
    ap.add_argument("--write", action="store_true", help="write docs/ even with --quick")
    ap.add_argument("--store-sizes", help="actions, comma-separated (default 10000,100000; "
                                          f"make bench-full: {FULL_STORE})")
    ap.add_argument("--repeat", type=int, help="rounds per figure (default 7; quick 3)")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--docs", type=Path, default=REPO / "docs" / "performance.md")
    ap.add_argument("--plot", type=Path, default=REPO / "docs" / "img" / "scaling.png")
    ap.add_argument("--json", type=Path, help="also dump every row (with its rounds) here")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.store_sizes:
        plan = replace(plan, store_sizes=tuple(int(s) for s in args.store_sizes.split(",")))
    if args.repeat:
        plan = replace(plan, repeat=args.repeat,
                       overhead=replace(plan.overhead, repeat=args.repeat))
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    write = (args.write or not args.quick) and not args.no_write

    started = time.strftime("%Y-%m-%d %H:%M %Z")
    info = machine()
    progress("[bench] " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    rows: list[Row] = []
    timings: dict[str, float] = {}
    if "headline" in sections:
        with timed("headline", timings):
            rows += headline.measure(plan.headline_requests, plan.repeat,
                                     one_flow=20_000 if not args.quick else 2_000,
                                     store_size=plan.headline_store,
                                     store_repeat=20 if not args.quick else 3,
                                     pg_requests=10_000 if not args.quick else 200,
                                     pg_repeat=3 if not args.quick else 1)
    if "overhead" in sections:
        with timed("overhead", timings):
            rows += overhead.measure(plan.overhead)
    if "requests" in sections:
        with timed("requests", timings):
            rows += seed_requests.measure(plan.requests, plan.repeat)
    if "concurrency" in sections:
        with timed("async and threads", timings):
            rows += concurrency.measure(plan.tasks, plan.async_k, plan.threads,
                                        plan.thread_flows, plan.thread_k, plan.repeat)
    if "flows" in sections:
        with timed("flow size", timings):
            rows += flow_scaling.measure(list(plan.flow_sizes), plan.flow_n,
                                         plan.flow_durable_n, max(3, plan.repeat - 2))
    if "throughput" in sections:
        with timed("throughput", timings):
            rows += sql_throughput.measure(plan.throughput_n, max(3, plan.repeat - 2))
    if "store" in sections:
        with timed("store size", timings):
            rows += store_rows(plan.store_sizes, plan.store_repeat)
    if "spans" in sections:
        with timed("span export", timings):
            rows += span_export.measure(plan.span_n, plan.repeat)
    if "services" in sections:
        with timed("services", timings):
            rows += services.measure(replace(plan.services, repeat=plan.repeat))
    if "memory" in sections:
        with timed("memory", timings):
            rows += memory_rows(plan)

    print(f"actiontrace benchmark suite ({'quick' if args.quick else 'full'} run; "
          f"median of {plan.repeat} interleaved rounds unless noted)")
    print(report.format_table(rows))
    print()
    print(report.LEGEND)
    print("machine: " + "; ".join(f"{k}: {v}" for k, v in info.items()))
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
          + f" (total {sum(timings.values()):.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "timings": timings,
                                         "rows": [r.as_dict() for r in rows]}, indent=1))
    if write:
        image = None
        if report.plot(rows, args.plot):
            try:
                image = str(args.plot.relative_to(args.docs.parent))
            except ValueError:
                image = str(args.plot)
            progress(f"[bench] wrote {args.plot}")
        section = report.docs_section(rows, info, command_line(argv), timings, image, started)
        report.write_docs(args.docs, section)
        progress(f"[bench] wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
