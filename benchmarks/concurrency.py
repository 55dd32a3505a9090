"""Concurrent flows: asyncio tasks and threads, in ns per recorded action (wall time).

* async: ``--tasks`` (200) concurrent tasks, each running a flow of ``k`` awaited
  actions; every action awaits ``asyncio.sleep(0)``, so the tasks really interleave.
* threads: ``--threads`` (8) threads, each running flows of ``k`` actions.

The figure is the wall time from the start (all tasks created / all threads released)
until the last one finishes (and, for the durable cases, ``flush()`` returns), divided
by the number of actions. Cases, rounds interleaved: bare (undecorated), actiontrace
(hot path: a storage that keeps nothing), actiontrace into SQLite (flushed).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from _suite import Row, interleaved, row_from
from overhead import DiscardStorage, SqliteFiles, durable_round

import actiontrace
from actiontrace import action, flow

UNIT = "ns/action"


async def step_bare(i: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"i": i}


@action(concept="bench::Async")
async def step(i: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"i": i}


async def _task_bare(k: int) -> None:
    for i in range(k):
        await step_bare(i)


async def _task_traced(k: int) -> None:
    async with flow("bench::Async::task"):
        for i in range(k):
            await step(i)


def run_async(tasks: int, k: int, traced: bool) -> int:
    """Run the tasks; return the elapsed ns (tasks created to all done)."""
    body = _task_traced if traced else _task_bare

    async def main() -> int:
        t0 = time.perf_counter_ns()
        await asyncio.gather(*(body(k) for _ in range(tasks)))
        return time.perf_counter_ns() - t0

    return asyncio.run(main())


def _bare(i: int) -> dict[str, int]:
    return {"i": i}


@action(concept="bench::Threads")
def work(i: int) -> dict[str, int]:
    return {"i": i}


def run_threads(threads: int, flows: int, k: int, traced: bool) -> int:
    """Run the threads; return the elapsed ns (all released to all joined)."""
    start = threading.Barrier(threads + 1)

    def body() -> None:
        start.wait()
        if traced:
            for _ in range(flows):
                with flow("bench::Threads::loop"):
                    for i in range(k):
                        work(i)
        else:
            for _ in range(flows):
                for i in range(k):
                    _bare(i)

    pool = [threading.Thread(target=body) for _ in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter_ns()
    for t in pool:
        t.join()
    return time.perf_counter_ns() - t0


def _hot_path(run: Callable[[], int]) -> int:
    tracer = actiontrace.configure(storage=DiscardStorage(), flush_interval=3600)
    try:
        return run()
    finally:
        tracer.shutdown()
        actiontrace.configure()


def measure(tasks: int, async_k: int, threads: int, thread_flows: int, thread_k: int,
            repeat: int) -> list[Row]:
    rows: list[Row] = []
    files = SqliteFiles("concurrency")
    n_async = tasks * async_k
    n_threads = threads * thread_flows * thread_k
    cases: dict[str, tuple[str, dict[str, Callable[[], float]]]] = {
        "async": (f"{tasks} tasks x flows of {async_k} awaited actions", {
            "bare (undecorated)": lambda: run_async(tasks, async_k, False) / n_async,
            "actiontrace (hot path)":
                lambda: _hot_path(lambda: run_async(tasks, async_k, True)) / n_async,
            "actiontrace (SQLite, flushed)": lambda: durable_round(
                files(), lambda: run_async(tasks, async_k, True), n_async),
        }),
        "threads": (f"{threads} threads x {thread_flows} flows of {thread_k} actions", {
            "bare (undecorated)":
                lambda: run_threads(threads, thread_flows, thread_k, False) / n_threads,
            "actiontrace (hot path)": lambda: _hot_path(
                lambda: run_threads(threads, thread_flows, thread_k, True)) / n_threads,
            "actiontrace (SQLite, flushed)": lambda: durable_round(
                files(), lambda: run_threads(threads, thread_flows, thread_k, True), n_threads),
        }),
    }
    try:
        for group, (shape, contenders) in cases.items():
            results = interleaved(contenders, repeat)
            group_rows = [row_from(group, name, res, UNIT, note=shape)
                          for name, res in results.items()]
            base = group_rows[0].value
            for r in group_rows[1:]:
                if r.value is not None and base is not None:
                    r.above = r.value - base
            rows += group_rows
    finally:
        files.close()
        actiontrace.configure()
    return rows
