"""Per-call overhead of recording a 2-argument call: actiontrace against its peers.

Run: ``.venv/bin/python benchmarks/overhead.py`` (``--quick`` for fewer iterations), or
as part of the suite, ``benchmarks/run_all.py``.

Every contender runs the same workload in one process: a function ``f(a, b)``
returning a small dict, called N times in enclosing flows (spans, eliot actions) of
``--flow-size`` calls each (default 1,000), so the per-call figure is the cost of one
*nested* recorded call plus its share of opening and closing the flow. The contenders'
rounds are interleaved and the median round is reported, in ns per call, with the
overhead above the bare call and the ratio to actiontrace's (memory, flushed) overhead.

* bare: the undecorated function.
* actiontrace (memory, hot path): recording only, the writer not yet run.
* actiontrace (memory, flushed): the same plus the flush that stores every record in
  an ``InMemoryTraceStorage`` (the writer thread's work counted too).
* actiontrace (disabled): ``configure(enabled=False)``, the same decorated function.
* actiontrace (SQLite, flushed): ``configure(url="sqlite:///<tmp>/b.db")`` (a fresh file
  per round, its schema created before the clock starts), record, ``flush()``.
* actiontrace (PostgreSQL, flushed): the same on ``$ACTIONTRACE_TEST_PG_URL`` (a
  throwaway schema); skipped when the variable is unset.
* OpenTelemetry SDK: ``start_as_current_span`` with a ``BatchSpanProcessor`` and an
  exporter that does nothing, the two arguments and the result set as attributes.
* eliot: ``@log_call`` with a destination that drops messages.
* Logfire (offline): ``logfire.configure(send_to_logfire=False, console=False)``, the
  same do-nothing exporter behind a ``BatchSpanProcessor``, ``@logfire.instrument`` with
  the arguments and the return value recorded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from _suite import Row, Unavailable, interleaved, pg_base_url, pg_schema_url, progress, row_from

import actiontrace
from actiontrace import ActionFilter, action, flow
from actiontrace.recording._record import FlowPart
from actiontrace.storage import InMemoryTraceStorage

GROUP = "overhead"
UNIT = "ns/call"


def _bare(a: int, b: str) -> dict[str, object]:
    return {"a": a, "b": b}


@action(concept="bench::Overhead")
def traced(a: int, b: str) -> dict[str, object]:
    return {"a": a, "b": b}


@dataclass
class Config:
    n: int = 200_000  # calls per round: bare and actiontrace in memory
    durable_n: int = 50_000  # calls per round: actiontrace into SQL
    peer_n: int = 20_000  # calls per round: OpenTelemetry, eliot
    logfire_n: int = 5_000  # calls per round: Logfire
    repeat: int = 7
    flow_size: int = 1_000
    peers: bool = True
    logfire: bool = True


def loop_traced(n: int, flow_size: int, f: Callable[[int, str], object] = traced) -> None:
    """``n`` decorated calls in flows of ``flow_size``."""
    for _ in range(max(1, n // flow_size)):
        with flow("bench::Overhead::loop"):
            for i in range(flow_size):
                f(i, "x")


def run_bare(n: int, flow_size: int) -> float:
    f = _bare
    t0 = time.perf_counter_ns()
    for _ in range(max(1, n // flow_size)):
        for i in range(flow_size):
            f(i, "x")
    return (time.perf_counter_ns() - t0) / n


class DiscardStorage(InMemoryTraceStorage):
    """Takes the writer's batches and keeps nothing: the writer thread's work is minimal."""

    def write_parts(self, parts: Sequence[FlowPart]) -> None:
        pass


def run_memory(n: int, flow_size: int, flushed: bool, discard: bool = False) -> float:
    """ns per call recorded in memory (``discard``: into a storage that keeps nothing)."""
    storage = DiscardStorage() if discard else None
    tracer = actiontrace.configure(storage=storage, flush_interval=3600)  # writer waits
    t0 = time.perf_counter_ns()
    loop_traced(n, flow_size)
    elapsed = time.perf_counter_ns() - t0
    if flushed:
        t1 = time.perf_counter_ns()
        if not tracer.flush(120):
            raise RuntimeError(f"flush failed: {tracer.stats()}")
        elapsed += time.perf_counter_ns() - t1
    tracer.shutdown()
    return elapsed / n


def run_disabled(n: int, flow_size: int) -> float:
    actiontrace.configure(enabled=False)
    t0 = time.perf_counter_ns()
    loop_traced(n, flow_size)
    elapsed = time.perf_counter_ns() - t0
    actiontrace.configure()
    return elapsed / n


def durable_round(url: str, work: Callable[[], None], count: int) -> float:
    """ns per unit of ``work`` recorded into ``url`` until ``flush()`` returns.

    The schema is created (or checked) before the clock starts; every action must be
    written and none dropped.
    """
    tracer = actiontrace.configure(url=url)
    tracer.storage.find_actions(ActionFilter(limit=1))  # schema first, off the clock
    before = tracer.stats()["written"]
    t0 = time.perf_counter_ns()
    work()
    ok = tracer.flush(300)
    elapsed = time.perf_counter_ns() - t0
    stats = tracer.stats()
    tracer.shutdown()
    actiontrace.configure()
    if not ok or stats["dropped"] or stats["written"] - before < stats["recorded"]:
        raise RuntimeError(f"not everything was written: {stats}")
    return elapsed / count


class SqliteFiles:
    """A fresh SQLite file per round, in one temporary directory."""

    def __init__(self, tag: str) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"at-bench-{tag}-")
        self._i = 0

    def __call__(self) -> str:
        self._i += 1
        return f"sqlite:///{os.path.join(self._tmp.name, f'b{self._i}.db')}"

    def close(self) -> None:
        self._tmp.cleanup()


class PgSchema:
    """One throwaway schema for all rounds (its tables are created once)."""

    def __init__(self) -> None:
        base = pg_base_url()
        if base is None:
            raise Unavailable("skipped: ACTIONTRACE_TEST_PG_URL is not set "
                              "(eval \"$(scripts/pg-test-server start)\")")
        try:
            self.url, self._drop = pg_schema_url(base)
        except Exception as exc:
            raise Unavailable(f"skipped: PostgreSQL unreachable ({type(exc).__name__})") from exc

    def __call__(self) -> str:
        return self.url

    def close(self) -> None:
        self._drop()


def lazy_pg() -> tuple[Callable[[], str], Callable[[], None]]:
    """A URL factory for a schema created on first use (so a skip is a row, not a crash)."""
    holder: list[PgSchema] = []

    def url() -> str:
        if not holder:
            holder.append(PgSchema())
        return holder[0]()

    def close() -> None:
        for h in holder:
            h.close()

    return url, close


# -- peers -----------------------------------------------------------------------------------


def _null_exporter():  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    return NullExporter()


def otel_null():  # type: ignore[no-untyped-def]
    """An OpenTelemetry SDK provider whose batches go to a null exporter, and its tracer."""
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise Unavailable(f"not installed: {exc.name}") from None

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_null_exporter()))
    return provider, provider.get_tracer("bench")


def make_otel(flow_size: int) -> Callable[[int], float]:
    provider, tracer = otel_null()

    def f(a: int, b: str) -> dict[str, object]:
        with tracer.start_as_current_span("f") as span:
            span.set_attribute("a", a)
            span.set_attribute("b", b)
            result = {"a": a, "b": b}
            span.set_attribute("result", str(result))
            return result

    def run(n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(max(1, n // flow_size)):
            with tracer.start_as_current_span("loop"):
                for i in range(flow_size):
                    f(i, "x")
        elapsed = time.perf_counter_ns() - t0
        provider.force_flush()
        return elapsed / n

    return run


def make_eliot(flow_size: int) -> Callable[[int], float]:
    try:
        import eliot
    except ImportError as exc:
        raise Unavailable(f"not installed: {exc.name}") from None

    eliot.add_destinations(lambda message: None)

    @eliot.log_call(action_type="bench:f")
    def f(a: int, b: str) -> dict[str, object]:
        return {"a": a, "b": b}

    def run(n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(max(1, n // flow_size)):
            with eliot.start_action(action_type="bench:loop"):
                for i in range(flow_size):
                    f(i, "x")
        return (time.perf_counter_ns() - t0) / n

    return run


def make_logfire(flow_size: int) -> Callable[[int], float]:
    try:
        import logfire
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise Unavailable(f"not installed: {exc.name} (pip install logfire)") from None
    try:
        logfire.configure(
            send_to_logfire=False, console=False, service_name="actiontrace-bench",
            inspect_arguments=False,
            additional_span_processors=[BatchSpanProcessor(_null_exporter())],
        )
    except Exception as exc:
        raise Unavailable(f"cannot configure offline: {type(exc).__name__}: {exc}") from None

    @logfire.instrument("f", extract_args=True, record_return=True)
    def f(a: int, b: str) -> dict[str, object]:
        return {"a": a, "b": b}

    def run(n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(max(1, n // flow_size)):
            with logfire.span("loop"):
                for i in range(flow_size):
                    f(i, "x")
        elapsed = time.perf_counter_ns() - t0
        logfire.force_flush()
        return elapsed / n

    return run


def _lazy(make: Callable[[int], Callable[[int], float]], flow_size: int, n: int
          ) -> Callable[[], float]:
    """Build the peer on its first (warm-up) round, so a failure becomes its row's note."""
    runner: list[Callable[[int], float]] = []

    def run() -> float:
        if not runner:
            runner.append(make(flow_size))
        return runner[0](n)

    return run


def measure(cfg: Config) -> list[Row]:
    """The overhead rows: every contender, rounds interleaved."""
    fs = cfg.flow_size
    n, dn = max(cfg.n, fs), max(cfg.durable_n, fs)
    sqlite_files = SqliteFiles("overhead")
    pg_url, pg_close = lazy_pg()
    contenders: dict[str, Callable[[], float]] = {
        "bare call": lambda: run_bare(n, fs),
        "actiontrace (memory, hot path)": lambda: run_memory(n, fs, flushed=False),
        "actiontrace (memory, flushed)": lambda: run_memory(n, fs, flushed=True),
        "actiontrace (disabled)": lambda: run_disabled(n, fs),
        "actiontrace (SQLite, flushed)":
            lambda: durable_round(sqlite_files(), lambda: loop_traced(dn, fs), dn),
        "actiontrace (PostgreSQL, flushed)":
            lambda: durable_round(pg_url(), lambda: loop_traced(dn, fs), dn),
    }
    peer_n = max(cfg.peer_n, fs)
    skipped: dict[str, str] = {}
    peers = {"OpenTelemetry SDK span (+args, result)": (make_otel, peer_n),
             "eliot log_call": (make_eliot, peer_n),
             "Logfire offline (instrument)": (make_logfire, max(cfg.logfire_n, fs))}
    for name, (make, count) in peers.items():
        if not cfg.peers or (name.startswith("Logfire") and not cfg.logfire):
            skipped[name] = "skipped (--quick)"
        else:
            contenders[name] = _lazy(make, fs, count)
    progress(f"[bench]   {len(contenders)} contenders x {cfg.repeat} rounds, flows of {fs:,}")
    try:
        results = interleaved(contenders, cfg.repeat)
    finally:
        sqlite_files.close()
        pg_close()
        actiontrace.configure()
    rows = [row_from(GROUP, name, res, UNIT) for name, res in results.items()]
    rows += [Row(GROUP, name, None, UNIT, note=why) for name, why in skipped.items()]
    bare = rows[0].value or 0.0
    ref = next(r for r in rows if r.case == "actiontrace (memory, flushed)").value
    counts = {"bare call": n, "actiontrace (SQLite, flushed)": dn,
              "actiontrace (PostgreSQL, flushed)": dn,
              "OpenTelemetry SDK span (+args, result)": peer_n, "eliot log_call": peer_n,
              "Logfire offline (instrument)": max(cfg.logfire_n, fs)}
    for r in rows:
        if r.value is None:
            continue
        r.note = r.note or f"{counts.get(r.case, n):,} calls/round"
        if r.case != "bare call":
            r.above = r.value - bare
            if ref is not None and ref > bare:
                r.ratio = r.above / (ref - bare)
    return rows


def main() -> None:
    from report import format_table

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000, help="calls per round (memory, bare)")
    ap.add_argument("--durable-n", type=int, default=50_000, help="calls per round (SQL)")
    ap.add_argument("--peer-n", type=int, default=20_000, help="calls per round (peers)")
    ap.add_argument("--logfire-n", type=int, default=5_000, help="calls per round (Logfire)")
    ap.add_argument("--repeat", type=int, default=7, help="rounds; the median is reported")
    ap.add_argument("--flow-size", type=int, default=1_000, help="calls per flow/span")
    ap.add_argument("--quick", action="store_true", help="few calls, 3 rounds")
    args = ap.parse_args()
    cfg = Config(args.n, args.durable_n, args.peer_n, args.logfire_n, args.repeat,
                 args.flow_size)
    if args.quick:
        cfg = Config(20_000, 5_000, 2_000, 1_000, 3, args.flow_size)
    print(format_table(measure(cfg)))


if __name__ == "__main__":
    main()
