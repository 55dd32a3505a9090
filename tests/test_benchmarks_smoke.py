"""The benchmark suite still runs: ``benchmarks/run_all.py --quick --no-write`` prints its table,
and the callgrind harness of the writer (``benchmarks/writer_instructions.py``) still
drives the step it counts.

A smoke test, not a measurement: tiny sizes, no figure is checked, only that every
benchmark ran and produced a row (so the suite cannot rot while the library changes).
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# One row each section must print (case names, as the table shows them).
EXPECTED_ROWS = [
    ("headline", "seed-shaped flows, durable in SQLite, end to end"),
    ("headline", "total cost per action, actiontrace (SQLite) / OpenTelemetry"),
    ("headline", "PostgreSQL, 2 writer processes into one server, seed-shaped flows"),
    ("headline", "actions in one flow, in memory, incl. flush"),
    ("headline", "sync_performance(RecordPlaybackForCooldown) at 4,000"),
    ("headline", "actiontrace stats at 4,000"),
    ("overhead", "bare call"),
    ("overhead", "actiontrace (memory, hot path)"),
    ("overhead", "actiontrace (memory, flushed)"),
    ("overhead", "actiontrace (disabled)"),
    ("overhead", "actiontrace (SQLite, flushed)"),
    ("overhead", "actiontrace (PostgreSQL, flushed)"),
    ("overhead", "eliot log_call"),
    ("requests", "actiontrace (SQLite, durable)"),
    ("async", "actiontrace (hot path)"),
    ("threads", "actiontrace (SQLite, flushed)"),
    ("flow size", "actiontrace (SQLite, flushed), flows of 1,000"),
    ("throughput", "SQLite, end to end"),
    ("throughput", "SQLite, writer"),
    ("throughput", "raw sqlite3, multi-row"),
    ("store size", "get_causal_chain (10-action flow) @ 5,000 actions"),
    ("store size", "sync_performance @ 5,000 actions"),
    ("span export", "FlowPart -> spans (the export thread's path)"),
    ("span export", "end to end, InMemorySpanExporter"),
    ("span export", "end to end, OTLPSpanExporter (HTTP, 127.0.0.1)"),
    ("instrument", "@action (memory, hot path)"),
    ("instrument", "instrument() (memory, hot path)"),
    ("middleware", "ASGI + middleware, new flow"),
    ("middleware", "WSGI + middleware, continued flow"),
    ("memory", "bytes per buffered action, flows of 10"),
    ("memory", "peak RSS, 100,000 actions waiting for a stalled writer"),
]


def test_quick_suite_prints_the_table(tmp_path: Path) -> None:
    docs_before = (REPO / "docs" / "performance.md").read_bytes()
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--no-write",
         "--plot", str(tmp_path / "scaling.png"), "--docs", str(tmp_path / "performance.md")],
        cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert re.search(r"^benchmark\s+case\s+median\s+unit", out, re.MULTILINE), out
    for group, case in EXPECTED_ROWS:
        line = next((ln for ln in out.splitlines()
                     if ln.startswith(group) and f" {case} " in ln), None)
        assert line is not None, f"no row {group!r} / {case!r} in:\n{out}"
        if "PostgreSQL" in case and "skipped" in line:
            continue  # ACTIONTRACE_TEST_PG_URL unset: the row says so
        assert re.search(r"\s\d[\d,.]*\s", line), f"no figure in: {line}"
    assert "failed:" not in out, out
    # --no-write: nothing written, neither in docs/ nor where --docs/--plot point.
    assert (REPO / "docs" / "performance.md").read_bytes() == docs_before
    assert not (tmp_path / "performance.md").exists()
    assert not (tmp_path / "scaling.png").exists()


class TestWriterInstructions:
    def test_write_mode_stores_every_request(self, tmp_path: Path) -> None:
        """The step callgrind counts in write mode stores each seed-shaped request whole."""
        db = tmp_path / "writer.db"
        res = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "writer_instructions.py"), "run",
             "write", "30", "--db", str(db)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        con = sqlite3.connect(db)
        try:
            counts = [con.execute(f"SELECT count(*) FROM actiontrace_{t}").fetchone()[0]
                      for t in ("flows", "actions", "edges", "log_events")]
        finally:
            con.close()
        assert counts == [30, 120, 90, 60]
