"""Sustained write throughput of SqlAlchemyTraceStorage, next to the raw sqlite3 ceiling.

    .venv/bin/python benchmarks/sql_throughput.py [--actions 200000] [--runs 3]

Three figures per backend, medians of ``--runs`` runs, in actions per second:

* ``end-to-end``: decorated actions recorded in flows of 10 (a root plus 9 actions) with
  the background writer running, then ``flush()``: the wall time of both.
* ``writer``: ``write_parts`` alone on the same parts, in the writer's batches (5,000
  actions, one transaction each) -- what the background thread sustains.
* ``raw sqlite3``: the same action rows inserted with ``sqlite3`` ``executemany`` into
  the same schema and indexes (WAL, synchronous=NORMAL), one transaction per 5,000: the
  ceiling for SQLite on this machine.

PostgreSQL is measured when ``ACTIONTRACE_TEST_PG_URL`` is set (in a throwaway schema).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from _suite import pg_schema_url

import actiontrace
from actiontrace import action, concept, flow
from actiontrace._record import FlowPart
from actiontrace.storage import InMemoryTraceStorage, SqlAlchemyTraceStorage
from actiontrace.storage._migrate import upgrade

FLOW_SIZE = 10
BATCH = 5_000


@concept("bench::Player")
class Player:
    @action
    def play(self, passage_id: int) -> dict[str, int]:
        return {"started_at": passage_id}


player = Player()


def record(n_actions: int) -> None:
    for i in range(n_actions // FLOW_SIZE):
        with flow("bench::Web::request", inputs={"path": "/play"}):
            for j in range(FLOW_SIZE - 1):
                player.play(i * FLOW_SIZE + j)


class Collect(InMemoryTraceStorage):
    """Keeps the parts the writer hands over, to replay them into other storages."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[FlowPart] = []

    def write_parts(self, parts: Sequence[FlowPart]) -> None:
        self.parts.extend(parts)


def collect_parts(n_actions: int) -> list[FlowPart]:
    store = Collect()
    tracer = actiontrace.configure(storage=store)
    record(n_actions)
    assert tracer.flush(600)
    return store.parts


def batches(parts: list[FlowPart]) -> list[list[FlowPart]]:
    out, cur, size = [], [], 0
    for p in parts:
        cur.append(p)
        size += len(p.records)
        if size >= BATCH:
            out.append(cur)
            cur, size = [], 0
    if cur:
        out.append(cur)
    return out


def end_to_end(url: str, n_actions: int) -> float:
    tracer = actiontrace.configure(url=url)
    tracer.storage.find_actions(actiontrace.ActionFilter(limit=1))  # schema check first
    t0 = time.perf_counter()
    record(n_actions)
    assert tracer.flush(600), tracer.stats()
    elapsed = time.perf_counter() - t0
    stats = tracer.stats()
    assert stats["written"] >= n_actions and not stats["dropped"], stats
    actiontrace.configure()
    return n_actions / elapsed


def writer_only(make: Callable[[], SqlAlchemyTraceStorage], parts: list[FlowPart]) -> float:
    store = make()
    store.find_actions(actiontrace.ActionFilter(limit=1))
    todo = batches(parts)
    n = sum(len(p.records) for p in parts)
    t0 = time.perf_counter()
    for b in todo:
        store.write_parts(b)
    elapsed = time.perf_counter() - t0
    store.close()
    return n / elapsed


def raw_sqlite(path: str, parts: list[FlowPart]) -> float:
    upgrade(f"sqlite:///{path}")
    rows = [
        (f"{r.id:032x}", f"{r.flow_token:032x}",
         None if r.parent_id is None else f"{r.parent_id:032x}", r.concept_uri, r.action,
         r.timestamp, r.duration_us, r.status, r.inputs.decode(), r.outputs.decode())
        for p in parts for r in p.rows()
    ]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    sql = ("INSERT INTO actiontrace_actions (id, flow_token, parent_id, concept_uri, action, "
           '"timestamp", duration_us, status, inputs, outputs) VALUES (?,?,?,?,?,?,?,?,?,?)')
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        conn.executemany(sql, rows[i:i + BATCH])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(rows) / elapsed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    n, runs = args.actions, args.runs
    print(f"actiontrace SQL write throughput: {n:,} actions per run, median of {runs} runs, "
          f"flows of {FLOW_SIZE}, python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus")
    parts = collect_parts(n)
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        def fresh(tag: str) -> str:
            fresh.i += 1  # type: ignore[attr-defined]
            return os.path.join(tmp, f"{tag}{fresh.i}.db")  # type: ignore[attr-defined]
        fresh.i = 0  # type: ignore[attr-defined]
        results["sqlite"] = {
            "end-to-end": statistics.median(
                end_to_end(f"sqlite:///{fresh('e')}", n) for _ in range(runs)),
            "writer": statistics.median(
                writer_only(lambda: SqlAlchemyTraceStorage(f"sqlite:///{fresh('w')}"), parts)
                for _ in range(runs)),
            "raw sqlite3": statistics.median(raw_sqlite(fresh("r"), parts) for _ in range(runs)),
        }
    base = os.environ.get("ACTIONTRACE_TEST_PG_URL")
    if base:
        pg: dict[str, Any] = {}
        e2e, wr = [], []
        for _ in range(runs):
            url, drop = pg_schema_url(base)
            try:
                e2e.append(end_to_end(url, n))
            finally:
                drop()
            url, drop = pg_schema_url(base)
            try:
                wr.append(writer_only(lambda u=url: SqlAlchemyTraceStorage(u), parts))
            finally:
                drop()
        pg["end-to-end"], pg["writer"] = statistics.median(e2e), statistics.median(wr)
        results["postgresql"] = pg
    print(f"{'backend':<12} {'measure':<12} {'actions/s':>12}")
    for backend, figures in results.items():
        for measure, value in figures.items():
            print(f"{backend:<12} {measure:<12} {value:>12,.0f}")


if __name__ == "__main__":
    main()
