"""Cost per action as flows grow: 1, 10, 100, 1,000, 10,000 decorated calls per flow.

Each round makes ``n`` decorated calls of ``f(a, b)`` (the overhead benchmark's
function) inside ``flow()`` blocks of the given size (each flow also records its root),
on the hot path (the calling thread's time; the storage keeps nothing, because with
small flows the writer wakes up during the round, every 256 flows, and an in-memory
storage's work would be counted) and into a fresh SQLite file (until ``flush()``
returns). The figure is ns per decorated call, so small flows carry the cost of opening
and closing a flow (and, in SQLite, a flows row) on few calls.
"""

from __future__ import annotations

from collections.abc import Callable

from _suite import Row, interleaved, row_from
from overhead import SqliteFiles, durable_round, loop_traced, run_memory

import actiontrace

GROUP = "flow size"
UNIT = "ns/call"


def _calls(n: int, size: int) -> int:
    return max(size, n - n % size)


def measure(sizes: list[int], n: int, durable_n: int, repeat: int) -> list[Row]:
    rows: list[Row] = []
    files = SqliteFiles("scaling")
    try:
        for size in sizes:
            mn, dn = _calls(n, size), _calls(durable_n, size)
            contenders: dict[str, Callable[[], float]] = {
                "memory": lambda mn=mn, size=size: run_memory(mn, size, flushed=False,
                                                               discard=True),
                "sqlite": lambda dn=dn, size=size: durable_round(
                    files(), lambda: loop_traced(dn, size), dn),
            }
            results = interleaved(contenders, repeat)
            label = {"memory": "actiontrace (hot path)",
                     "sqlite": "actiontrace (SQLite, flushed)"}
            for kind, res in results.items():
                count = mn if kind == "memory" else dn
                rows.append(row_from(
                    GROUP, f"{label[kind]}, flows of {size:,}", res, UNIT,
                    key=f"flow:{kind}:{size}", note=f"{count:,} calls/round"))
    finally:
        files.close()
        actiontrace.configure()
    for kind in ("memory", "sqlite"):
        ref = next((r for r in rows if r.key == f"flow:{kind}:1000"), None)
        for r in rows:
            if r.key.startswith(f"flow:{kind}:") and ref and ref.value and r.value:
                r.ratio = r.value / ref.value
    return rows
