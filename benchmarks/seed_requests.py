"""Seed-shaped requests: the bundled music player's ``handle`` as separate flows.

Each request is ``MusicPlayer().handle("/play", "tok-alice", passage_id=7)``: a flow root
plus three actions (``validate_token``, ``play_passage`` and the declared reaction's
``record_play``) linked by three synchronizations, and the two structlog events the demo
attaches to its actions. Cases, rounds interleaved:

* app alone: ``configure(enabled=False)`` (what the application costs without tracing);
* actiontrace (hot path): recording only (the storage keeps nothing, so the writer,
  which wakes every 256 flows, does next to no work);
* actiontrace (SQLite, durable): recording into a fresh SQLite file, then ``flush()``.
* actiontrace (PostgreSQL, durable): the same, when ``ACTIONTRACE_TEST_PG_URL`` is set.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from _suite import Row, interleaved, row_from
from overhead import DiscardStorage, SqliteFiles, durable_round, lazy_pg

import actiontrace
from actiontrace.demo import MusicPlayer

GROUP = "requests"
UNIT = "µs/request"
REQUEST = {"path": "/play", "token": "tok-alice", "passage_id": 7}


def serve(n: int) -> None:
    app = MusicPlayer()
    handle = app.handle
    for _ in range(n):
        handle(**REQUEST)


def shape() -> str:
    """What one request records, checked (not assumed)."""
    tracer = actiontrace.configure()
    serve(1)
    tracer.flush(10)
    token = tracer.storage.list_flows(limit=1)[0].flow_token
    trace = tracer.get_trace(token)
    actiontrace.configure()
    syncs = sorted({e.synchronization for e in trace.provenance_edges})
    return (f"{len(trace.actions)} actions, {len(trace.provenance_edges)} edges "
            f"({', '.join(syncs)}), {len(trace.logs)} log events")


def run_disabled(n: int) -> float:
    actiontrace.configure(enabled=False)
    t0 = time.perf_counter_ns()
    serve(n)
    elapsed = time.perf_counter_ns() - t0
    actiontrace.configure()
    return elapsed / n / 1000


def run_hot(n: int) -> float:
    tracer = actiontrace.configure(storage=DiscardStorage(), flush_interval=3600)
    t0 = time.perf_counter_ns()
    serve(n)
    elapsed = time.perf_counter_ns() - t0
    tracer.shutdown()
    actiontrace.configure()
    return elapsed / n / 1000


def measure(n: int, repeat: int) -> list[Row]:
    what = shape()
    files = SqliteFiles("requests")
    pg_url, pg_close = lazy_pg()
    contenders: dict[str, Callable[[], float]] = {
        "app alone (actiontrace disabled)": lambda: run_disabled(n),
        "actiontrace (hot path)": lambda: run_hot(n),
        "actiontrace (SQLite, durable)": lambda: durable_round(files(), lambda: serve(n), n) / 1000,
        "actiontrace (PostgreSQL, durable)":
            lambda: durable_round(pg_url(), lambda: serve(n), n) / 1000,
    }
    try:
        results = interleaved(contenders, repeat)
    finally:
        files.close()
        pg_close()
        actiontrace.configure()
    rows = [row_from(GROUP, name, res, UNIT) for name, res in results.items()]
    base = rows[0].value
    for r in rows:
        if r.value is None:
            continue
        r.note = f"{1e6 / r.value:,.0f} requests/s; {n:,} requests/round"
        if r is rows[0]:
            r.note += f"; each: {what}"
        elif base is not None:
            r.above = r.value - base
    return rows
