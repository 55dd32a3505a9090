"""The headline: the seed's shape end to end, next to OpenTelemetry, with the goals beside.

Issue 16's table, measured in one run (``make bench`` prints it first):

* seed-shaped requests (``MusicPlayer().handle("/play", "tok-alice", passage_id=n)``: a
  flow root and three actions linked by three synchronizations, two log events), each
  its own flow, durable in a fresh SQLite file and flushed: actions/s end to end;
* the same requests with actiontrace disabled and each of the four actions wrapped in an
  OpenTelemetry SDK span (inputs and result as attributes) with a null exporter, which
  stores nothing: the total cost per action of each, above the app alone, as a ratio;
* the same requests from 1, 2 and 4 processes into one PostgreSQL server (COPY), when
  ``ACTIONTRACE_TEST_PG_URL`` names one (``make bench`` starts a throwaway server);
* 20,000 actions in one flow into the in-memory store and into SQLite, incl. flush;
* the queries of issue 16 and ``actiontrace stats`` on a seed-shaped store of 1,000,000
  actions (250,000 requests recorded through the tracer), built once and kept in
  ``benchmarks/.cache/`` (keyed by the schema revision) for the next run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from _suite import REPO, Row, interleaved, progress, row_from, summarize
from overhead import SqliteFiles, durable_round, loop_traced, otel_null, run_memory
from query_latency import samples_ms
from seed_requests import run_disabled

import actiontrace
from actiontrace import ActionFilter
from actiontrace.demo import AudioPlayer, Authentication, Cooldown, MusicPlayer

GROUP = "headline"
ACTIONS_PER_REQUEST = 4
CACHE = REPO / "benchmarks" / ".cache"
STORE_SIZE = 1_000_000


def serve(n: int, offset: int = 0) -> None:
    """``n`` seed-shaped requests, the passage varying over 1,000 values."""
    handle = MusicPlayer().handle
    for i in range(offset, offset + n):
        handle("/play", "tok-alice", passage_id=i % 1000)


@contextmanager
def otel_instrumented() -> Iterator[Callable[[], None]]:
    """The demo's four actions wrapped in OpenTelemetry spans (actiontrace disabled);
    yields the provider's ``force_flush``."""
    provider, tracer = otel_null()

    def spanned(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(name) as span:
                for k, v in kwargs.items():
                    span.set_attribute(k, v if v is not None else "")
                for i, v in enumerate(args[1:]):
                    span.set_attribute(f"arg{i}", v)
                result = fn(*args, **kwargs)
                span.set_attribute("result", str(result))
                return result
        return wrapper

    targets = [(MusicPlayer, "handle"), (Authentication, "validate_token"),
               (AudioPlayer, "play_passage"), (Cooldown, "record_play")]
    saved = [(cls, name, cls.__dict__[name]) for cls, name in targets]
    actiontrace.configure(enabled=False)
    try:
        for cls, name, fn in saved:
            setattr(cls, name, spanned(f"{cls.__name__}.{name}", fn))
        yield provider.force_flush
    finally:
        for cls, name, fn in saved:
            setattr(cls, name, fn)
        provider.shutdown()
        actiontrace.configure()


def run_otel(n: int) -> float:
    with otel_instrumented() as flush:
        t0 = time.perf_counter_ns()
        serve(n)
        flush()
        return (time.perf_counter_ns() - t0) / n


def recorded_parts(n: int) -> list[Any]:
    """The parts of ``n`` seed-shaped requests, as the writer receives them."""
    return kept_parts(lambda: serve(n))


def kept_parts(work: Callable[[], None]) -> list[Any]:
    """The parts ``work`` records, as the writer receives them."""
    from actiontrace.storage import InMemoryTraceStorage

    class Keep(InMemoryTraceStorage):
        def write_parts(self, parts: Any) -> None:
            kept.extend(parts)

    kept: list[Any] = []
    tracer = actiontrace.configure(storage=Keep(), flush_interval=3600)
    work()
    tracer.flush(120)
    actiontrace.configure()
    return kept


def run_writer(url: str, parts: list[Any]) -> float:
    """ns per request for ``write_parts`` alone, in the writer's batches (5,000 actions)."""
    from actiontrace.storage import SqlAlchemyTraceStorage

    store = SqlAlchemyTraceStorage(url)
    store.find_actions(ActionFilter(limit=1))  # the schema, off the clock
    step = 5_000 // ACTIONS_PER_REQUEST
    t0 = time.perf_counter_ns()
    for i in range(0, len(parts), step):
        store.write_parts(parts[i:i + step])
    elapsed = time.perf_counter_ns() - t0
    store.close()
    return elapsed / len(parts)


def _goal(row: Row, text: str, met: bool | None) -> Row:
    verdict = "" if met is None else (": met" if met else ": not met")
    row.note = f"goal {text}{verdict}" + (f"; {row.note}" if row.note else "")
    return row


def request_rows(n: int, repeat: int) -> list[Row]:
    files = SqliteFiles("headline")
    parts = recorded_parts(n)
    contenders: dict[str, Callable[[], float]] = {
        "app alone": lambda: run_disabled(n) * 1000,  # (the same work, µs -> ns)
        "actiontrace": lambda: durable_round(files(), lambda: serve(n), n),
        "otel": lambda: run_otel(n),
        "writer": lambda: run_writer(files(), parts),
    }
    try:
        res = interleaved(contenders, repeat)
    finally:
        files.close()
        actiontrace.configure()
    app, at, otel = (res[k] for k in ("app alone", "actiontrace", "otel"))
    rows: list[Row] = []
    per = ACTIONS_PER_REQUEST
    if isinstance(at, list):
        rates = [per * 1e9 / v for v in at]
        med, spread = summarize(rates)
        rows.append(_goal(Row(GROUP, "seed-shaped flows, durable in SQLite, end to end", med,
                              "actions/s", spread=spread, rounds=rates,
                              note=f"{n:,} requests/round"), "≥100,000", med >= 100_000))
    else:
        rows.append(row_from(GROUP, "seed-shaped flows, durable in SQLite, end to end", at,
                             "actions/s"))
    writer = res["writer"]
    if isinstance(writer, list):
        rates = [per * 1e9 / v for v in writer]
        med, spread = summarize(rates)
        rows.append(Row(GROUP, "the same parts through SQLite's write_parts alone", med,
                        "actions/s", spread=spread, rounds=rates,
                        note="the storage's own rate: no recording, no GIL contention"))
    if isinstance(otel, list):
        rates = [per * 1e9 / v for v in otel]
        med, spread = summarize(rates)
        rows.append(Row(GROUP, "the same, OpenTelemetry SDK + null exporter (stores nothing)",
                        med, "actions/s", spread=spread, rounds=rates,
                        note="4 spans/request, inputs and result as attributes"))
    else:
        rows.append(row_from(GROUP, "the same, OpenTelemetry SDK + null exporter", otel,
                             "actions/s"))
    if isinstance(app, list) and isinstance(at, list) and isinstance(otel, list):
        ratios = [(a - b) / (o - b) for a, o, b in zip(at, otel, app, strict=True)]
        med, spread = summarize(ratios)
        base = summarize(app)[0]
        rows.append(_goal(Row(
            GROUP, "total cost per action, actiontrace (SQLite) / OpenTelemetry", med, "×",
            spread=spread, rounds=ratios,
            note=f"above the app alone ({base / per / 1000:.1f} µs/action): actiontrace "
                 f"{(summarize(at)[0] - base) / per / 1000:.1f} µs, OpenTelemetry "
                 f"{(summarize(otel)[0] - base) / per / 1000:.1f} µs"), "≤0.3×", med <= 0.3))
    return rows


def one_flow_rows(n: int, repeat: int) -> list[Row]:
    files = SqliteFiles("headline-flow")
    contenders: dict[str, Callable[[], float]] = {
        "memory": lambda: run_memory(n, n, flushed=True),
        "sqlite": lambda: durable_round(files(), lambda: loop_traced(n, n), n),
    }
    try:
        res = interleaved(contenders, repeat)
    finally:
        files.close()
        actiontrace.configure()
    rows = []
    for kind, case, goal in (("memory", "in memory", 2.5), ("sqlite", "into SQLite", 8.0)):
        r = res[kind]
        samples = [v / 1000 for v in r] if isinstance(r, list) else r
        row = row_from(GROUP, f"{n:,} actions in one flow, {case}, incl. flush", samples,
                       "µs/action")
        rows.append(_goal(row, f"≤{goal:g} µs", None if row.value is None
                          else row.value <= goal))
    return rows


# -- the 1M store ----------------------------------------------------------------------------


CACHED_FROM = 100_000  # smaller stores (the quick run's) are built afresh, in a temp dir


def store_path(size: int) -> str:
    from actiontrace.storage._migrate import HEAD

    if size < CACHED_FROM:
        return os.path.join(tempfile.mkdtemp(prefix="at-bench-seed-"), "seed.db")
    return str(CACHE / f"seed-{size}-rev{HEAD}.db")


def build_store(size: int) -> str:
    """A seed-shaped SQLite store of ``size`` actions (recorded through the tracer), cached."""
    path = store_path(size)
    if os.path.exists(path):
        return path
    CACHE.mkdir(exist_ok=True)
    older = sorted(CACHE.glob(f"seed-{size}-rev*.db")) if size >= CACHED_FROM else []
    if older:  # an earlier schema's store: migrate a copy (timed: the migration at size)
        from actiontrace.storage import _migrate

        shutil.copy(older[-1], path + ".migrating")
        t0 = time.perf_counter()
        _migrate.upgrade(f"sqlite:///{path}.migrating")
        progress(f"[bench]   {older[-1].name} migrated to head in {time.perf_counter() - t0:.0f} s")
        shutil.move(path + ".migrating", path)
        return path
    tmp = path + ".building"
    for leftover in (tmp, tmp + "-wal", tmp + "-shm"):
        if os.path.exists(leftover):
            os.remove(leftover)
    progress(f"[bench]   building a seed-shaped store of {size:,} actions in {path} (once)")
    t0 = time.perf_counter()
    tracer = actiontrace.configure(url=f"sqlite:///{tmp}")
    step = 10_000
    for start in range(0, size // ACTIONS_PER_REQUEST, step):
        serve(min(step, size // ACTIONS_PER_REQUEST - start), offset=start)
        if not tracer.flush(600):
            raise RuntimeError(f"flush failed: {tracer.stats()}")
    tracer.shutdown()
    actiontrace.configure()
    import sqlite3

    conn = sqlite3.connect(tmp)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    shutil.move(tmp, path)
    progress(f"[bench]   built in {time.perf_counter() - t0:.0f} s")
    return path


def store_rows(size: int, repeat: int) -> list[Row]:
    from actiontrace.storage import SqlAlchemyTraceStorage

    path = build_store(size)
    store = SqlAlchemyTraceStorage(f"sqlite:///{path}")
    label = f"{size / 1e6:g}M" if size >= 1_000_000 else f"{size:,}"
    queries: list[tuple[str, Callable[[], Any], float]] = [
        ("sync_performance(RecordPlaybackForCooldown)",
         lambda: store.sync_performance("RecordPlaybackForCooldown"), 200),
        ('find_actions(concept_uri="wkmp-ap::Cooldown", limit=100) (a prefix)',
         lambda: store.find_actions(ActionFilter(concept_uri="wkmp-ap::Cooldown", limit=100)),
         10),
        ("find_actions concept + action + input, limit 100",
         lambda: store.find_actions(ActionFilter(
             concept_uri="wkmp-ap::AudioPlayer", action="play_passage",
             inputs={"passage_id": 421}, limit=100)), 10),
    ]
    rows = []
    try:
        for case, fn, goal in queries:
            samples = samples_ms(fn, repeat)
            med, spread = summarize(samples)
            rows.append(_goal(Row(GROUP, f"{case} at {label}", med, "ms", spread=spread,
                                  rounds=samples, note=f"{repeat} calls"),
                              f"≤{goal:g} ms", med <= goal))
    finally:
        store.close()
    cmd = [sys.executable, "-m", "actiontrace.cli", "--url", f"sqlite:///{path}", "stats"]
    times = []
    for _ in range(max(3, repeat // 5)):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    med, spread = summarize(times)
    rows.append(_goal(Row(GROUP, f"actiontrace stats at {label}", med, "s", spread=spread,
                          rounds=times, note=f"{len(times)} runs, a fresh process each"),
                      "≤1 s", med <= 1))
    return rows


def pg_rows(requests: int, repeat: int) -> list[Row]:
    """Seed-shaped requests from 1, 2 and 4 processes into one PostgreSQL server
    (``pg_writers.py``; skipped rows without ``ACTIONTRACE_TEST_PG_URL``)."""
    import pg_writers

    return pg_writers.measure(requests, [1, 2, 4], repeat, group=GROUP)


def measure(requests: int, repeat: int, one_flow: int = 20_000,
            store_size: int = STORE_SIZE, store_repeat: int = 20,
            pg_requests: int = 10_000, pg_repeat: int = 3) -> list[Row]:
    rows = request_rows(requests, repeat)
    if pg_requests:
        rows += pg_rows(pg_requests, pg_repeat)
    rows += one_flow_rows(one_flow, max(3, repeat - 2))
    if store_size:
        rows += store_rows(store_size, store_repeat)
    return rows


if __name__ == "__main__":
    import argparse

    from report import format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=5_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--store-size", type=int, default=STORE_SIZE, help="0: no store rows")
    ap.add_argument("--sections", default="requests,pg,flow,store")
    args = ap.parse_args()
    want = args.sections.split(",")
    out: list[Row] = []
    if "requests" in want:
        out += request_rows(args.requests, args.repeat)
    if "pg" in want:
        out += pg_rows(2 * args.requests, 3)
    if "flow" in want:
        out += one_flow_rows(20_000, max(3, args.repeat - 2))
    if "store" in want and args.store_size:
        out += store_rows(args.store_size, 20)
    print(format_table(out))
