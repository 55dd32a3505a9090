"""What ``configure(span_exporters=[...])`` costs per exported action.

    .venv/bin/python benchmarks/span_export.py [--actions 20000] [--runs 5]

Rows, medians of ``--runs`` interleaved rounds:

* ``FlowPart -> spans``: the export thread's conversion alone, one thread, in µs per
  action: the CPU each exporter's thread spends before its exporter sees a span; next
  to ``to_spans(to_trace(part))``, the same spans through the public model.
* ``end to end``: decorated actions recorded in flows of 10 into an in-memory storage,
  then ``shutdown()``, which returns once everything is stored *and* exported; in µs per
  action, with no exporter (the reference), an exporter that does nothing, the SDK's
  ``InMemorySpanExporter``, and the real ``OTLPSpanExporter`` posting protobuf over HTTP to
  a receiver on 127.0.0.1 that reads and discards the body. "above" is the cost of
  ``span_exporters`` per exported action.
* ``hot path``: the decorated call with an exporter configured, ns per call, flows of
  1,000 (the writer and the export thread run meanwhile on this 2-core machine, so any
  difference is theirs competing for the CPU, not work on the call).
"""

from __future__ import annotations

import argparse
import http.server
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from _suite import Row, interleaved, row_from
from sql_throughput import FLOW_SIZE, Collect, player, record

import actiontrace
from actiontrace import flow
from actiontrace.contrib.otel import _part_spans, to_spans
from actiontrace.recording._record import FlowPart, to_trace
from actiontrace.storage import InMemoryTraceStorage


class NullExporter:
    """Accepts every batch and does nothing (our side of the cost alone)."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


@contextmanager
def sink() -> Iterator[str]:
    """An HTTP endpoint on 127.0.0.1 that reads each POST and answers 200 (an OTLP sink)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


def conversion(parts: list[FlowPart], public: bool) -> float:
    n = sum(len(p.records) for p in parts)
    t0 = time.perf_counter()
    for part in parts:
        if public:
            to_spans(to_trace(part))
        else:
            _part_spans(part)
    return (time.perf_counter() - t0) / n * 1e6


def end_to_end(n: int, make: Callable[[], list[Any]]) -> float:
    exporters = make()
    tracer = actiontrace.configure(storage=InMemoryTraceStorage(), span_exporters=exporters)
    t0 = time.perf_counter()
    record(n)
    assert tracer.shutdown(timeout=600), tracer.stats()
    elapsed = time.perf_counter() - t0
    stats = tracer.stats()
    assert stats["written"] == n and not stats["dropped"], stats
    if exporters:
        assert stats["spans_exported"] == n * len(exporters), stats
    actiontrace.configure()
    return elapsed / n * 1e6


def hot_path(n: int, make: Callable[[], list[Any]]) -> float:
    tracer = actiontrace.configure(storage=InMemoryTraceStorage(), span_exporters=make())
    per_flow = 1_000
    t0 = time.perf_counter()
    for _ in range(n // per_flow):
        with flow("bench::Web::batch"):
            for j in range(per_flow):
                player.play(j)
    elapsed = time.perf_counter() - t0
    tracer.shutdown(timeout=600)
    actiontrace.configure()
    return elapsed / n * 1e9


def measure(n: int, repeat: int) -> list[Row]:
    """The suite's rows (benchmarks/run_all.py)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    store = Collect()
    tracer = actiontrace.configure(storage=store)
    record(n)
    assert tracer.flush(600)
    parts = list(store.parts)
    actiontrace.configure()
    conv = interleaved({"export": lambda: conversion(parts, False),
                        "public": lambda: conversion(parts, True)}, repeat)
    rows = [
        row_from("span export", "FlowPart -> spans (the export thread's path)", conv["export"],
                 "µs/action", note=f"one thread, {n:,} actions in flows of {FLOW_SIZE}"),
        row_from("span export", "to_spans(to_trace(part)) (the public model)", conv["public"],
                 "µs/action", note="the same spans, through ActionTrace"),
    ]
    with sink() as endpoint:
        contenders: dict[str, Callable[[], list[Any]]] = {
            "no exporter": list,
            "exporter doing nothing": lambda: [NullExporter()],
            "InMemorySpanExporter": lambda: [InMemorySpanExporter()],
            "OTLPSpanExporter (HTTP, 127.0.0.1)": lambda: [OTLPSpanExporter(endpoint=endpoint)],
        }
        results = interleaved({k: (lambda m=m: end_to_end(n, m)) for k, m in contenders.items()},
                              repeat)
        hot = interleaved({
            "no exporter": lambda: hot_path(n, list),
            "InMemorySpanExporter": lambda: hot_path(n, lambda: [InMemorySpanExporter()]),
        }, repeat)
    base = results["no exporter"]
    base_med = None if isinstance(base, str) else sorted(base)[len(base) // 2]
    for name, result in results.items():
        row = row_from("span export", f"end to end, {name}", result, "µs/action",
                       note=f"recorded, stored in memory, exported: shutdown(); {n:,} actions")
        if row.value is not None and base_med is not None and name != "no exporter":
            row.above = row.value - base_med
        rows.append(row)
    for name, result in hot.items():
        rows.append(row_from("span export", f"hot path, {name}", result, "ns/call",
                             note="decorated call in flows of 1,000, memory storage"))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actions", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    for row in measure(args.actions, args.runs):
        above = "" if row.above is None else f"  (+{row.above:.2f})"
        print(f"{row.case:<55} {row.value or 0:>10.2f} {row.unit}{above}")


if __name__ == "__main__":
    main()
