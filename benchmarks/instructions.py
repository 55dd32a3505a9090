"""Instructions per recorded call or per written action, counted by callgrind.

Wall-clock figures on a shared machine move with its load; instruction counts do not.
This script runs itself under ``valgrind --tool=callgrind`` twice, at two sizes, and
prints the difference divided by the difference in work, so start-up cancels out:

    .venv/bin/python benchmarks/instructions.py calls    # @action calls in one flow, memory
    .venv/bin/python benchmarks/instructions.py sqlite   # 10-action flows into a SQLite file

Every thread is counted (the writer's too). ``PYTHONPATH=<tree>/src`` measures another
checkout with the same interpreter (a before/after comparison).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile

SIZES = {"calls": (2_000, 12_000), "sqlite": (5_000, 25_000)}


def _workload(kind: str, n: int) -> None:
    import actiontrace
    from actiontrace import action, concept, flow

    if kind == "calls":
        actiontrace.configure(storage=actiontrace.InMemoryTraceStorage())
    else:
        tracer = actiontrace.configure(url=f"sqlite:///{tempfile.mkdtemp()}/t.db")

    @concept("bench::C")
    class C:
        @action
        def add(self, a: int, b: int) -> int:
            return a + b

    c = C()
    if kind == "calls":
        for _ in range(200):
            with flow("bench::Web::warm"):
                c.add(1, 2)
        with flow("bench::Web::req"):
            for i in range(n):
                c.add(i, 2)
    else:
        for j in range(n // 10):
            with flow("bench::Web::req"):
                for i in range(10):
                    c.add(i, j)
        tracer.flush()


def _count(kind: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as out:
        run = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}/cg",
             sys.executable, __file__, "--run", kind, str(n)],
            capture_output=True, text=True, check=True, env=os.environ,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise SystemExit(f"no instruction count from callgrind:\n{run.stderr[-2000:]}")
    return int(found.group(1))


def main(argv: list[str]) -> None:
    if argv[:1] == ["--run"]:
        _workload(argv[1], int(argv[2]))
        return
    kinds = argv or list(SIZES)
    for kind in kinds:
        small, large = SIZES[kind]
        per = (_count(kind, large) - _count(kind, small)) / (large - small)
        unit = "call" if kind == "calls" else "action written"
        print(f"{kind}: {per:,.0f} instructions per {unit}")


if __name__ == "__main__":
    main(sys.argv[1:])
