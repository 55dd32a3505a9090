"""Cross-service costs: ``instrument()`` per call, the ASGI/WSGI middleware per request.

Run: ``.venv/bin/python benchmarks/services.py`` (``--quick`` for fewer iterations), or
as part of the suite, ``benchmarks/run_all.py`` (section ``services``).

* instrument: a 2-argument function ``f(a, b)`` called in flows of 1,000 calls, bare,
  decorated with ``@action``, and recorded by ``actiontrace.instrument()`` (wrapt's
  ``FunctionWrapper`` around the same ``@action`` wrapper); ns per call, recording only
  (the writer waits), rounds interleaved.
* middleware: a minimal ASGI app (and a WSGI app) answering 200 with a 2-byte body,
  called directly (no server, no socket: the figure is the middleware's own cost) with
  a ready-made request, bare, behind ``ActionTraceMiddleware`` (no trace headers: each
  request a new flow), and behind it with our ``traceparent``/``actiontrace`` headers
  (each request joins a flow); µs per request. Stored as a service stores them, in a
  SQLite file, with the writer running: *request path* rows time the requests alone
  (what a request's latency pays; the writer's work overlaps or competes for the GIL as
  it does in a service), *end to end* rows also wait for ``flush()`` (the whole cost of
  a request: recording, writing, flushing). An in-memory store is not used here: its
  rows stay in the process, and the collector's passes over them (not the middleware)
  would dominate a long round.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from _suite import Row, interleaved, progress, row_from

import actiontrace
from actiontrace import action, flow, inject, instrument, uninstrument
from actiontrace.contrib.asgi import ActionTraceMiddleware as AsgiMiddleware
from actiontrace.contrib.wsgi import ActionTraceMiddleware as WsgiMiddleware

INSTRUMENT, MIDDLEWARE = "instrument", "middleware"

# The module instrument() patches: a stand-in for code the user does not own.
_sdk = types.ModuleType("bench_sdk")
exec("def f(a, b):\n    return {'a': a, 'b': b}\n", _sdk.__dict__)
sys.modules["bench_sdk"] = _sdk


def _bare(a: int, b: str) -> dict[str, object]:
    return {"a": a, "b": b}


@action(concept="bench::Overhead")
def _decorated(a: int, b: str) -> dict[str, object]:
    return {"a": a, "b": b}


@dataclass
class Config:
    calls: int = 200_000  # per round, instrument rows
    requests: int = 20_000  # per round, middleware rows
    repeat: int = 7
    flow_size: int = 1_000


def _calls(f: Callable[[int, str], object], n: int, flow_size: int, record: bool) -> float:
    tracer = actiontrace.configure(flush_interval=3600) if record else None
    t0 = time.perf_counter_ns()
    for _ in range(max(1, n // flow_size)):
        if record:
            with flow("bench::Overhead::loop"):
                for i in range(flow_size):
                    f(i, "x")
        else:
            for i in range(flow_size):
                f(i, "x")
    elapsed = time.perf_counter_ns() - t0
    if tracer is not None:
        tracer.shutdown(0)
    return elapsed / n


def instrument_rows(cfg: Config) -> list[Row]:
    """bare, @action and instrument() per call."""
    instrument("bench_sdk:f", concept="bench::Sdk")
    patched = _sdk.f
    n, fs = cfg.calls, cfg.flow_size
    try:
        results = interleaved({
            "bare call": lambda: _calls(_bare, n, fs, record=False),
            "@action (memory, hot path)": lambda: _calls(_decorated, n, fs, record=True),
            "instrument() (memory, hot path)": lambda: _calls(patched, n, fs, record=True),
        }, cfg.repeat)
    finally:
        uninstrument("bench_sdk:f")
        actiontrace.configure()
    rows = [row_from(INSTRUMENT, name, res, "ns/call") for name, res in results.items()]
    bare = rows[0].value or 0.0
    ref = rows[1].value
    for r in rows:
        r.note = f"{n:,} calls/round, flows of {fs:,}"
        if r.value is not None and r is not rows[0]:
            r.above = r.value - bare
            if ref is not None and ref > bare:
                r.ratio = r.above / (ref - bare)
    return rows


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def remote_headers() -> dict[str, str]:
    actiontrace.configure()
    with flow("bench::Client::run"):
        return inject({})


def asgi_request(headers: dict[str, str] | None) -> tuple[dict[str, Any], Any, Any]:
    """A ready-made GET request: its scope (with ``headers``), ``receive`` and ``send``."""
    raw = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {"type": "http", "method": "GET", "path": "/ping", "query_string": b"",
             "headers": [(b"host", b"bench"), (b"accept", b"*/*"), *raw]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    return scope, receive, send


def wsgi_environ(headers: dict[str, str] | None) -> dict[str, Any]:
    """A ready-made GET request's WSGI environ, with ``headers``."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/ping", "SCRIPT_NAME": "",
               "QUERY_STRING": "", "HTTP_HOST": "bench"}
    for k, v in (headers or {}).items():
        environ["HTTP_" + k.upper()] = v
    return environ


def _service_tracer() -> actiontrace.ActionTracer:
    """A tracer as a service has one: a SQLite file, the writer running."""
    return actiontrace.configure(url=f"sqlite:///{tempfile.mkdtemp()}/service.db",
                                 flush_interval=3600)


def _asgi_round(app: Any, n: int, headers: dict[str, str] | None, flush: bool = False) -> float:
    scope, receive, send = asgi_request(headers)
    tracer = _service_tracer()

    async def run() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            await app(scope, receive, send)
        if flush:
            tracer.flush()
        return (time.perf_counter_ns() - t0) / n / 1000

    try:
        return asyncio.run(run())
    finally:
        tracer.shutdown(10)


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
    return None


def serve_wsgi(app: Any, environ: dict[str, Any], n: int) -> None:
    """``n`` requests to ``app`` as a server makes them: call, iterate the body, close it."""
    for _ in range(n):
        body = app(environ, _start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()


def _wsgi_round(app: Any, n: int, headers: dict[str, str] | None, flush: bool = False) -> float:
    environ = wsgi_environ(headers)
    tracer = _service_tracer()
    t0 = time.perf_counter_ns()
    serve_wsgi(app, environ, n)
    if flush:
        tracer.flush()
    elapsed = (time.perf_counter_ns() - t0) / n / 1000
    tracer.shutdown(10)
    return elapsed


def middleware_rows(cfg: Config) -> list[Row]:
    """µs per request: bare app, behind the middleware, and joining a flow."""
    headers = remote_headers()
    asgi, wsgi = AsgiMiddleware(asgi_app), WsgiMiddleware(wsgi_app)
    n = cfg.requests
    contenders = {
        "ASGI app alone": lambda: _asgi_round(asgi_app, n, None),
        "ASGI + middleware, new flow": lambda: _asgi_round(asgi, n, None),
        "ASGI + middleware, continued flow": lambda: _asgi_round(asgi, n, headers),
        "ASGI + middleware, new flow, end to end": lambda: _asgi_round(asgi, n, None, True),
        "ASGI + middleware, continued flow, end to end":
            lambda: _asgi_round(asgi, n, headers, True),
        "WSGI app alone": lambda: _wsgi_round(wsgi_app, n, None),
        "WSGI + middleware, new flow": lambda: _wsgi_round(wsgi, n, None),
        "WSGI + middleware, continued flow": lambda: _wsgi_round(wsgi, n, headers),
        "WSGI + middleware, new flow, end to end": lambda: _wsgi_round(wsgi, n, None, True),
        "WSGI + middleware, continued flow, end to end":
            lambda: _wsgi_round(wsgi, n, headers, True),
    }
    try:
        results = interleaved(contenders, cfg.repeat)
    finally:
        actiontrace.configure()
    rows = [row_from(MIDDLEWARE, name, res, "µs/request") for name, res in results.items()]
    base: float | None = None
    for r in rows:
        if r.case.endswith("end to end"):
            r.note = f"{n:,} requests/round, SQLite file, until flush() returns"
        else:
            r.note = (f"{n:,} requests/round, SQLite file, request path; "
                      "target ≤ 15 µs above the app")
        if r.case.endswith("alone"):
            base = r.value
            r.note = f"{n:,} requests/round, called directly"
        elif r.value is not None and base is not None:
            r.above = r.value - base
    return rows


def measure(cfg: Config) -> list[Row]:
    progress(f"[bench]   instrument: 3 contenders x {cfg.repeat} rounds")
    rows = instrument_rows(cfg)
    progress(f"[bench]   middleware: 6 contenders x {cfg.repeat} rounds")
    return rows + middleware_rows(cfg)


def main() -> None:
    from report import format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=200_000)
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="few calls, 3 rounds")
    args = ap.parse_args()
    cfg = Config(args.calls, args.requests, args.repeat)
    if args.quick:
        cfg = Config(20_000, 2_000, 3)
    print(format_table(measure(cfg)))


if __name__ == "__main__":
    main()
