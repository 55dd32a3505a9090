"""Per-call overhead of recording a 2-argument call: actiontrace against its peers.

Run: ``.venv/bin/python benchmarks/overhead.py`` (``--quick`` for fewer iterations).

Every contender runs the same workload in one process: a function ``f(a, b)``
returning a small dict, called N times in enclosing flows (spans, eliot actions) of
``--flow-size`` calls each (default 1,000), so the per-call figure is the cost of one
*nested* recorded call plus its share of opening and closing the flow. Each contender
is timed in ``--repeat`` rounds and the median round is reported, in ns per call, with
the overhead above the bare call and the ratio to actiontrace's.

* bare: the undecorated function.
* actiontrace (memory, hot path): recording only, the writer not yet run.
* actiontrace (memory, flushed): the same plus the flush that stores every record in
  an ``InMemoryTraceStorage`` (the writer thread's work counted too).
* actiontrace (disabled): ``configure(enabled=False)``, the same decorated function.
* OpenTelemetry SDK: ``start_as_current_span`` with a ``BatchSpanProcessor`` and an
  exporter that does nothing, the two arguments and the result set as attributes.
* eliot: ``@log_call`` with a destination that drops messages.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable

import actiontrace
from actiontrace import action, flow


def _bare(a: int, b: str) -> dict[str, object]:
    return {"a": a, "b": b}


@action(concept="bench::Overhead")
def traced(a: int, b: str) -> dict[str, object]:
    return {"a": a, "b": b}


FLOW_SIZE = 1_000


def run_bare(n: int) -> float:
    f = _bare
    t0 = time.perf_counter_ns()
    for _ in range(n // FLOW_SIZE):
        for i in range(FLOW_SIZE):
            f(i, "x")
    return (time.perf_counter_ns() - t0) / n


def run_actiontrace(n: int, flushed: bool) -> float:
    tracer = actiontrace.configure(flush_interval=3600)  # the writer waits for flush()
    f = traced
    t0 = time.perf_counter_ns()
    for _ in range(n // FLOW_SIZE):
        with flow("bench::Overhead::loop"):
            for i in range(FLOW_SIZE):
                f(i, "x")
    elapsed = time.perf_counter_ns() - t0
    if flushed:
        t1 = time.perf_counter_ns()
        assert tracer.flush(60)
        elapsed += time.perf_counter_ns() - t1
    tracer.shutdown()
    return elapsed / n


def run_disabled(n: int) -> float:
    actiontrace.configure(enabled=False)
    f = traced
    t0 = time.perf_counter_ns()
    for _ in range(n // FLOW_SIZE):
        with flow("bench::Overhead::loop"):
            for i in range(FLOW_SIZE):
                f(i, "x")
    elapsed = time.perf_counter_ns() - t0
    actiontrace.configure()
    return elapsed / n


def make_otel() -> Callable[[int], float]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class NullExporter(SpanExporter):
        def export(self, spans):  # type: ignore[no-untyped-def]
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(NullExporter()))
    tracer = provider.get_tracer("bench")

    def f(a: int, b: str) -> dict[str, object]:
        with tracer.start_as_current_span("f") as span:
            span.set_attribute("a", a)
            span.set_attribute("b", b)
            result = {"a": a, "b": b}
            span.set_attribute("result", str(result))
            return result

    def run(n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n // FLOW_SIZE):
            with tracer.start_as_current_span("loop"):
                for i in range(FLOW_SIZE):
                    f(i, "x")
        elapsed = time.perf_counter_ns() - t0
        provider.force_flush()
        return elapsed / n

    return run


def make_eliot() -> Callable[[int], float]:
    import eliot

    eliot.add_destinations(lambda message: None)

    @eliot.log_call(action_type="bench:f")
    def f(a: int, b: str) -> dict[str, object]:
        return {"a": a, "b": b}

    def run(n: int) -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n // FLOW_SIZE):
            with eliot.start_action(action_type="bench:loop"):
                for i in range(FLOW_SIZE):
                    f(i, "x")
        return (time.perf_counter_ns() - t0) / n

    return run


def median_of(fn: Callable[[int], float], n: int, repeat: int) -> float:
    fn(max(n // 10, FLOW_SIZE))  # warm up
    rounds = []
    for _ in range(repeat):
        gc.collect()
        rounds.append(fn(n))
    return statistics.median(rounds)


def measure(n: int, peer_n: int, repeat: int) -> list[tuple[str, float]]:
    """Return ``(name, ns per call)`` for every contender."""
    rows = [
        ("bare call", median_of(run_bare, n, repeat)),
        ("actiontrace (memory, hot path)", median_of(lambda k: run_actiontrace(k, False), n, repeat)),
        ("actiontrace (memory, flushed)", median_of(lambda k: run_actiontrace(k, True), n, repeat)),
        ("actiontrace (disabled)", median_of(run_disabled, n, repeat)),
    ]
    for name, make in (("OpenTelemetry SDK span", make_otel), ("eliot log_call", make_eliot)):
        try:
            rows.append((name, median_of(make(), peer_n, repeat)))
        except ImportError as exc:
            rows.append((f"{name} (not installed: {exc.name})", float("nan")))
    return rows


def table(rows: list[tuple[str, float]]) -> str:
    bare = rows[0][1]
    ours = rows[2][1] - bare  # the flushed figure: all the work, both threads
    lines = [
        f"{'contender':40} {'ns/call':>9} {'above bare':>11} {'× actiontrace':>14}",
        "-" * 77,
    ]
    for name, ns in rows:
        above = ns - bare
        ratio = above / ours if ours > 0 and name != "bare call" else float("nan")
        lines.append(f"{name:40} {ns:9.0f} {above:11.0f} {ratio:14.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="calls per round (actiontrace, bare)")
    parser.add_argument("--peer-n", type=int, default=20_000, help="calls per round (peers)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds; the median is reported")
    parser.add_argument("--flow-size", type=int, default=1_000, help="calls per flow/span")
    parser.add_argument("--quick", action="store_true", help="n=20000, peer-n=2000, repeat=3")
    args = parser.parse_args()
    if args.quick:
        args.n, args.peer_n, args.repeat = 20_000, 2_000, 3
    global FLOW_SIZE
    FLOW_SIZE = max(1, min(args.flow_size, args.peer_n))
    print(f"{args.n:,} calls per round ({args.peer_n:,} for the peers) in flows of "
          f"{FLOW_SIZE:,}; median of {args.repeat} rounds")
    print(table(measure(args.n, args.peer_n, args.repeat)))
    print("'× actiontrace' = overhead above bare / actiontrace's flushed overhead above bare")


if __name__ == "__main__":
    main()
