"""Instructions per seed-shaped action on the SQLite writer's side, counted by callgrind.

Wall-clock figures on a shared machine move with its load; instruction counts do not.
This records 3,000 seed-shaped requests (4 actions each) with the parts kept, then runs
``valgrind --tool=callgrind`` counting only inside ``functools.reduce``, which drives
the measured step over the writer's batches (5,000 actions each), in two modes:

* ``batch``: the dialect's rows of every batch (``Part.sql_rows``/``sql_edges`` and
  ``Dialect.batch``): the writer's Python before any SQL;
* ``write``: ``write_parts`` of every batch into a fresh SQLite file.

``write - batch`` is what writing the rows costs, of which the ``sqlite3`` module's
``execute`` (binding, stepping, SQLite itself) is given apart. Recording is not
counted at all: how the writer thread interleaved with it varied from run to run by
up to 5,000 instructions per action. 12,000 actions do not fill the input-value index
(every 20,000); ``--index-every`` fills it more often, to count it too.

``--flow N`` counts the other headline shape instead: one flow of ``N`` actions (the
overhead benchmark's decorated call, which returns a small dict), written as the writer
gets it, one part in one batch (so ``N`` >= 20,000 fills the input index once).

    .venv/bin/python benchmarks/writer_instructions.py            # ~6 minutes
    .venv/bin/python benchmarks/writer_instructions.py --flow 20000
    .venv/bin/python benchmarks/writer_instructions.py run write 50   # one mode, no valgrind
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("batch", "write")
REQUESTS = 3_000
ACTIONS_PER_REQUEST = 4
# The sqlite3 module's statement calls: their inclusive cost is binding + SQLite.
SQLITE_CALLS = re.compile(r"\s*([\d,]+) .*:(pysqlite_cursor_execute|pysqlite_cursor_executemany)\b")


def flow_parts(n: int) -> list[Any]:
    """The part of one flow of ``n`` decorated calls, as the writer receives it."""
    from headline import kept_parts
    from overhead import loop_traced

    return kept_parts(lambda: loop_traced(n, n))


def run(mode: str, n: int, index_every: int | None, db: str | None = None,
        flow: bool = False) -> None:
    """One mode at ``n`` requests (``flow``: one flow of ``n`` actions), what callgrind
    watches; ``db``: the SQLite file to write (a temporary one otherwise)."""
    sys.path.insert(0, str(HERE))
    from headline import recorded_parts

    from actiontrace import ActionFilter
    from actiontrace.storage import SqlAlchemyTraceStorage

    with tempfile.TemporaryDirectory() as d:
        store = SqlAlchemyTraceStorage(f"sqlite:///{db or os.path.join(d, 'writer.db')}")
        store.find_actions(ActionFilter(limit=1))  # the schema, in every mode alike
        if index_every:
            store.input_index_every = index_every
        if flow:
            batches = [flow_parts(n)]
        else:
            parts = recorded_parts(n)
            step = 5_000 // ACTIONS_PER_REQUEST
            batches = [parts[i:i + step] for i in range(0, len(parts), step)]
        do = store._dialect.batch if mode == "batch" else store.write_parts
        # callgrind counts inside reduce only (--toggle-collect): the batches, nothing else.
        functools.reduce(lambda _, batch: do(batch), batches, None)
        store.close()


def _callgrind(out_dir: str, mode: str, n: int, index_every: int | None,
               flow: bool = False) -> tuple[int, int]:
    """(total instructions, inclusive instructions of the sqlite3 statement calls)."""
    out = os.path.join(out_dir, f"{mode}.{n}.out")
    cmd = ["valgrind", "--tool=callgrind", "--toggle-collect=functools_reduce",
           f"--callgrind-out-file={out}", sys.executable,
           __file__, "run", mode, str(n)]
    if index_every:
        cmd += ["--index-every", str(index_every)]
    if flow:
        cmd += ["--flow"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONHASHSEED": "0"})
    total = int(re.search(r"Collected : (\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", out],
                               capture_output=True, text=True, check=True).stdout
    calls = [int(m.group(1).replace(",", "")) for m in map(SQLITE_CALLS.match,
                                                           annotated.splitlines()) if m]
    return total, max(calls, default=0)


def measure(index_every: int | None, flow: int | None = None) -> None:
    n = flow or REQUESTS
    with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(len(MODES)) as pool:
        jobs = {m: pool.submit(_callgrind, d, m, n, index_every, bool(flow)) for m in MODES}
        got = {k: f.result() for k, f in jobs.items()}
    per = flow or REQUESTS * ACTIONS_PER_REQUEST
    batch, write = got["batch"][0] / per, got["write"][0] / per
    if flow:
        print(f"instructions per action (one flow of {flow:,} actions, one batch)")
    else:
        print(f"instructions per action ({REQUESTS:,} seed-shaped requests, "
              f"{per:,} actions, in batches of 5,000)")
    print(f"  writer's Python, rows (batch)       {batch:>9,.0f}")
    print(f"  writing them (write - batch)        {write - batch:>9,.0f}")
    print(f"    of which sqlite3 execute (incl.)  {got['write'][1] / per:>9,.0f}")
    print(f"  the writer in all (write)           {write:>9,.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--index-every", type=int, default=None,
                    help="fill the input-value index every this many actions")
    ap.add_argument("--flow", type=int, default=None,
                    help="one flow of this many actions instead of seed-shaped requests")
    sub = ap.add_subparsers(dest="cmd")
    one = sub.add_parser("run", help="one mode, without valgrind")
    one.add_argument("mode", choices=MODES)
    one.add_argument("requests", type=int)
    one.add_argument("--index-every", type=int, default=None)
    one.add_argument("--db", default=None, help="the SQLite file to write")
    one.add_argument("--flow", action="store_true", help="one flow of that many actions")
    args = ap.parse_args()
    if args.cmd == "run":
        run(args.mode, args.requests, args.index_every, args.db, args.flow)
    else:
        measure(args.index_every, args.flow)


if __name__ == "__main__":
    main()
