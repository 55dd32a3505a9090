"""Sustained write throughput of SqlAlchemyTraceStorage, next to the raw sqlite3 ceiling.

    .venv/bin/python benchmarks/sql_throughput.py [--actions 200000] [--runs 3]

Three figures per backend, medians of ``--runs`` runs, in actions per second:

* ``end-to-end``: decorated actions recorded in flows of 10 (a root plus 9 actions) with
  the background writer running, then ``flush()``: the wall time of both.
* ``writer``: ``write_parts`` alone on the same parts, in the writer's batches (5,000
  actions, one transaction each) -- what the background thread sustains.
* ``raw sqlite3 executemany`` / ``raw sqlite3 multi-row``: the same action rows inserted
  with plain ``sqlite3`` into the same schema and indexes (WAL, synchronous=NORMAL), one
  transaction per 5,000, by ``executemany`` or by the writer's 200-row INSERTs: the
  ceiling for SQLite on this machine (actions only: no flows, edges or input index).

PostgreSQL is measured when ``ACTIONTRACE_TEST_PG_URL`` is set (in a throwaway schema).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from _suite import Row, pg_schema_url, row_from

import actiontrace
from actiontrace import action, concept, flow
from actiontrace.recording._record import FlowPart
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


def raw_sqlite(path: str, parts: list[FlowPart], multi: bool = False) -> float:
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
    k = 200
    many = sql.replace("VALUES (" + ",".join("?" * 10) + ")",
                       "VALUES " + ", ".join(["(" + ",".join("?" * 10) + ")"] * k))
    t0 = time.perf_counter()
    for i in range(0, len(rows), BATCH):
        conn.execute("BEGIN")
        batch = rows[i:i + BATCH]
        if multi:
            full = len(batch) - len(batch) % k
            flat = [v for row in batch[:full] for v in row]
            for j in range(0, len(flat), 10 * k):
                conn.execute(many, flat[j:j + 10 * k])
            batch = batch[full:]
        conn.executemany(sql, batch)
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return len(rows) / elapsed


def measure(n: int, runs: int) -> list[Row]:
    """The suite's rows (benchmarks/run_all.py): medians of ``runs`` runs of ``n`` actions."""
    parts = collect_parts(n)
    results: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        count = iter(range(10**9))

        def fresh(tag: str) -> str:
            return os.path.join(tmp, f"{tag}{next(count)}.db")

        def sqlite_store() -> SqlAlchemyTraceStorage:
            return SqlAlchemyTraceStorage(f"sqlite:///{fresh('w')}")

        for _ in range(runs):  # interleaved, one run of each per round
            for key, fn in (
                (("SQLite", "end to end"), lambda: end_to_end(f"sqlite:///{fresh('e')}", n)),
                (("SQLite", "writer"), lambda: writer_only(sqlite_store, parts)),
                (("raw sqlite3", "executemany"), lambda: raw_sqlite(fresh("r"), parts)),
                (("raw sqlite3", "multi-row"), lambda: raw_sqlite(fresh("m"), parts, True)),
            ):
                results.setdefault(key, []).append(fn())
    base = os.environ.get("ACTIONTRACE_TEST_PG_URL")
    if base:
        for _ in range(runs):
            for key, fn in (
                (("PostgreSQL", "end to end"), lambda u: end_to_end(u, n)),
                (("PostgreSQL", "writer"),
                 lambda u: writer_only(lambda: SqlAlchemyTraceStorage(u), parts)),
            ):
                url, drop = pg_schema_url(base)
                try:
                    results.setdefault(key, []).append(fn(url))
                finally:
                    drop()
    rows = []
    for (backend, measure_), samples in results.items():
        what = {"end to end": "recorded in flows of 10, then flush()",
                "writer": "write_parts alone, batches of 5,000",
                "executemany": "actions only, no actiontrace code",
                "multi-row": "actions only, 200-row INSERTs"}[measure_]
        rows.append(row_from("throughput", f"{backend}, {measure_}", samples, "actions/s",
                             note=f"{what}; {n:,} actions per run"))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    print(f"actiontrace SQL write throughput: {args.actions:,} actions per run, median of "
          f"{args.runs} runs, flows of {FLOW_SIZE}, python {sys.version.split()[0]}, sqlite "
          f"{sqlite3.sqlite_version}, {os.cpu_count()} cpus")
    print(f"{'measure':<36} {'actions/s':>12}")
    for row in measure(args.actions, args.runs):
        print(f"{row.case:<36} {row.value or 0:>12,.0f}")


if __name__ == "__main__":
    main()
