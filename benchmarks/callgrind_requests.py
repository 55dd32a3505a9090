"""Instruction counts of short flows on the application's thread, with callgrind.

Run: ``.venv/bin/python benchmarks/callgrind_requests.py [CASE ...]`` (default: every
case). For each case it runs this file under ``valgrind --tool=callgrind
--separate-threads=yes`` twice, with ``--small`` and ``--large`` units of work, and
prints the difference of the main thread's instruction counts divided by the
difference in units: the cost of one unit, start-up and the writer thread excluded.
The writer is parked (``flush_interval=3600``; it wakes every 256 parts, on its own
thread) and the process ends with ``os._exit`` so the exit flush is not counted.

Cases (a unit is one request, one flow or one call):

* ``asgi-bare``, ``asgi-new``, ``asgi-continued``: a minimal ASGI app called directly,
  alone, behind the middleware without trace headers, and with our headers
  (``benchmarks/services.py`` times the same);
* ``wsgi-bare``, ``wsgi-new``, ``wsgi-continued``: the same for WSGI;
* ``flow``: one empty ``with flow(...)`` opened and closed;
* ``seed-disabled``, ``seed``: one seed-shaped request (``MusicPlayer().handle``, 4
  actions, 3 synchronizations, 2 log events), recording off and on (parts dropped by
  the storage), per request (divide by 4 for per action);
* ``call``: one decorated 2-argument call in flows of 1,000.

``--unit N`` runs N units of CASE in this process (what valgrind runs); ``--no-gc``
runs them with the garbage collector off (what collections cost is the difference).
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CASES = ("asgi-bare", "asgi-new", "asgi-continued", "wsgi-bare", "wsgi-new",
         "wsgi-continued", "flow", "seed-disabled", "seed", "call")


def _runner(case: str) -> Callable[[int], None]:
    """A function running ``n`` units of ``case`` (set up outside the measured part)."""
    import actiontrace
    sys.path.insert(0, str(HERE))
    import services
    from overhead import DiscardStorage

    kind, _, variant = case.partition("-")
    headers = services.remote_headers() if variant == "continued" else {}
    if kind == "asgi":
        from actiontrace.contrib.asgi import ActionTraceMiddleware

        app: Any = services.asgi_app
        if variant != "bare":
            app = ActionTraceMiddleware(app)
        scope, receive, send = services.asgi_request(headers)

        async def many(n: int) -> None:
            for _ in range(n):
                await app(scope, receive, send)

        actiontrace.configure(storage=DiscardStorage(), flush_interval=3600)
        return lambda n: asyncio.run(many(n))
    if kind == "wsgi":
        from actiontrace.contrib.wsgi import ActionTraceMiddleware as Wsgi

        wapp: Any = services.wsgi_app if variant == "bare" else Wsgi(services.wsgi_app)
        environ = services.wsgi_environ(headers)

        def wsgi_many(n: int) -> None:
            services.serve_wsgi(wapp, environ, n)

        actiontrace.configure(storage=DiscardStorage(), flush_interval=3600)
        return wsgi_many
    if case == "flow":
        flow = actiontrace.flow

        def flows(n: int) -> None:
            for _ in range(n):
                with flow("bench::Client::run"):
                    pass

        actiontrace.configure(storage=DiscardStorage(), flush_interval=3600)
        return flows
    if kind == "seed":
        from actiontrace.demo import MusicPlayer

        actiontrace.configure(storage=DiscardStorage(), flush_interval=3600,
                              enabled=variant != "disabled")
        handle = MusicPlayer().handle

        def seed(n: int) -> None:
            for i in range(n):
                handle("/play", "tok-alice", passage_id=i % 1000)
        return seed
    if case == "call":
        @actiontrace.action(concept="bench::Overhead")
        def f(a: int, b: str) -> dict[str, object]:
            return {"a": a, "b": b}

        def calls(n: int) -> None:
            for _ in range(max(1, n // 1000)):
                with actiontrace.flow("bench::Overhead::loop"):
                    for i in range(1000):
                        f(i, "x")

        actiontrace.configure(storage=DiscardStorage(), flush_interval=3600)
        return calls
    raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")


def _main_thread_instructions(prefix: str) -> int:
    """Ir of the main thread (``-01`` file) among callgrind's per-thread outputs."""
    files = sorted(glob.glob(prefix + "*-01"))
    if not files:
        raise RuntimeError(f"no callgrind output for {prefix}")
    text = Path(files[0]).read_text()
    m = re.search(r"^summary:\s+(\d+)", text, re.M) or re.search(r"^totals:\s+(\d+)", text, re.M)
    if m is None:
        raise RuntimeError(f"no summary in {files[0]}")
    return int(m.group(1))


def measure(case: str, small: int, large: int, keep: str | None = None,
            no_gc: bool = False) -> float:
    counts = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (small, large):
            prefix = os.path.join(tmp, f"cg.{case}.{n}")
            subprocess.run(
                ["valgrind", "--tool=callgrind", "--separate-threads=yes",
                 f"--callgrind-out-file={prefix}.%p", sys.executable, __file__,
                 "--unit", str(n), *(["--no-gc"] if no_gc else []), case],
                check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            counts.append(_main_thread_instructions(prefix))
            if keep and n == large:
                for f in glob.glob(prefix + "*-01"):
                    Path(keep).write_bytes(Path(f).read_bytes())
    return (counts[1] - counts[0]) / (large - small)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--unit", type=int, help="run N units of the one case (under valgrind)")
    ap.add_argument("--small", type=int, default=300)
    ap.add_argument("--large", type=int, default=1_300)
    ap.add_argument("--keep", help="copy the large run's main-thread profile here")
    ap.add_argument("--no-gc", action="store_true", help="garbage collector off")
    args = ap.parse_args()
    if args.unit is not None:
        run = _runner(args.cases[0])
        if args.no_gc:
            import gc
            gc.disable()
        run(args.unit)
        sys.stdout.flush()
        os._exit(0)
    for case in args.cases:
        small, large = args.small, args.large
        if case == "call":
            small, large = small * 10, large * 10
        keep = args.keep if len(args.cases) == 1 else None
        print(f"{case:16} {measure(case, small, large, keep, args.no_gc):>10,.0f} instructions per unit",
              flush=True)


if __name__ == "__main__":
    main()
