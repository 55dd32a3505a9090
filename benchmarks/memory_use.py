"""Memory held by buffered actions while the writer is stalled.

    .venv/bin/python benchmarks/memory_use.py --mode tracemalloc --actions 200000 --flow-size 10
    .venv/bin/python benchmarks/memory_use.py --mode rss --actions 1000000

The tracer's storage blocks in ``write_parts`` on an ``Event`` (and ``flush_interval`` is
an hour), so every ended flow stays in memory: in the buffer's queue, or in the batch the
writer holds. ``f(a, b)`` (the overhead benchmark's function) is called ``--actions``
times, in flows of ``--flow-size`` calls (each flow's root counts as a buffered action
too; the flows are sized so that exactly ``--actions`` actions are buffered, which for
1,000,000 is ``max_queue``'s default: nothing is dropped).

* ``tracemalloc``: Python heap growth while recording, divided by the actions: bytes per
  buffered action, exact for what Python allocates.
* ``rss``: the process's resident set (``VmRSS``/``VmHWM`` from ``/proc/self/status``, or
  psutil elsewhere) before and after: the peak, and the growth per action as the OS sees
  it (the allocator keeps some slack).

Each mode prints one JSON line; ``run_all.py`` runs each in a fresh process so that the
peak (``VmHWM``) belongs to that measurement alone.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (psutil when there is no /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    import psutil

    info = psutil.Process().memory_info()
    if field == "VmHWM":
        peak = getattr(info, "peak_wset", None)  # Windows; elsewhere the current RSS
        return (peak or info.rss) // 1024
    return int(info.rss) // 1024


def run(mode: str, actions: int, flow_size: int) -> dict[str, Any]:
    import actiontrace
    from actiontrace import flow
    from actiontrace._options import TRACER_OPTIONS
    from actiontrace.recording._record import FlowPart
    from actiontrace.storage import InMemoryTraceStorage

    sys.path.insert(0, str(HERE))
    from overhead import traced

    class Stalled(InMemoryTraceStorage):
        """A storage whose writes block until ``gate`` is set (then they do nothing)."""

        def __init__(self) -> None:
            super().__init__()
            self.gate = threading.Event()
            self.entered = threading.Event()

        def write_parts(self, parts: Sequence[FlowPart]) -> None:
            self.entered.set()
            self.gate.wait()

    calls = max(1, flow_size - 1)  # + the root = flow_size actions per flow
    flows = max(1, actions // flow_size)
    buffered = flows * (calls + 1)
    storage = Stalled()
    options: dict[str, Any] = {} if buffered <= 1_000_000 else {"max_queue": buffered}
    if "journal" in TRACER_OPTIONS:
        options["journal"] = False  # no overflow journal (the stalled writer never fails)
    tracer = actiontrace.configure(storage=storage, flush_interval=3600, **options)
    # Warm up (code paths, the writer thread, the first allocations) with writes let
    # through, then stall the writer.
    storage.gate.set()
    with flow("bench::Memory::warmup"):
        traced(0, "x")
    tracer.flush(30)
    storage.gate.clear()
    gc.collect()
    base_rss = _status_kib("VmRSS")
    if mode == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    for _ in range(flows):
        with flow("bench::Memory::loop"):
            for i in range(calls):
                traced(i, "x")
    elapsed = time.perf_counter() - t0
    gc.collect()
    result: dict[str, Any] = {"mode": mode, "buffered": buffered, "flow_size": calls + 1,
                              "seconds": elapsed}
    if mode == "tracemalloc":
        after, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["bytes_per_action"] = (after - before) / buffered
        result["peak_bytes_per_action"] = (peak - before) / buffered
    else:
        rss, hwm = _status_kib("VmRSS"), _status_kib("VmHWM")
        result.update(base_rss_mib=base_rss / 1024, rss_mib=rss / 1024, peak_rss_mib=hwm / 1024,
                      rss_bytes_per_action=(rss - base_rss) * 1024 / buffered)
    stats = tracer.stats()
    result["dropped"] = stats["dropped"]
    result["max_queue"] = tracer._writer.buffer.max_queue
    result["writer_stalled"] = storage.entered.is_set()
    storage.gate.set()  # let the writer finish (its writes now do nothing) and exit cleanly
    tracer.shutdown(30)
    actiontrace.configure()
    return result


def measure(mode: str, actions: int, flow_size: int, timeout: float = 600) -> dict[str, Any]:
    """Run one mode in a fresh interpreter; return its JSON result."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--mode", mode,
           "--actions", str(actions), "--flow-size", str(flow_size)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} failed: {res.stderr.strip()[-500:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["tracemalloc", "rss"], default="rss")
    ap.add_argument("--actions", type=int, default=1_000_000)
    ap.add_argument("--flow-size", type=int, default=1_000)
    args = ap.parse_args()
    print(json.dumps(run(args.mode, args.actions, args.flow_size)))


if __name__ == "__main__":
    main()
