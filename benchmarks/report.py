"""The suite's output: one table (text and Markdown), the scaling plot, the docs section."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from _suite import Row

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

COLUMNS = ("benchmark", "case", "median", "unit", "±", "above base", "ratio", "note")

LEGEND = """\
median: of the rounds (interleaved with the other cases of the same benchmark).
±: interquartile range of the rounds / median: how noisy the machine was.
above base: minus the benchmark's first row (bare call, app alone, bare undecorated).
ratio: overhead: overhead above bare / actiontrace's (memory, flushed) overhead above bare;
       flow size: / the same store at flows of 1,000; store size: / the smallest store;
       instrument: overhead above bare / @action's overhead above bare.
middleware: "above base" is above the app alone (ASGI rows: the ASGI app; WSGI rows: the WSGI app)."""


def fmt_value(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    a = abs(v)
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:,.0f}×" if abs(v) >= 100 else f"{v:.1f}×" if abs(v) >= 10 else f"{v:.2f}×"


def cells(r: Row) -> list[str]:
    return [
        r.group,
        r.case,
        fmt_value(r.value),
        r.unit,
        "" if r.spread is None else f"{r.spread * 100:.0f}%",
        "" if r.above is None else ("+" if r.above >= 0 else "") + fmt_value(r.above),
        fmt_ratio(r.ratio),
        r.note,
    ]


def format_table(rows: Sequence[Row]) -> str:
    """The one plain-text table, every benchmark's rows side by side."""
    table = [list(COLUMNS)] + [cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS) - 1)]
    right = {2, 4, 5, 6}
    out = []
    prev_group = None
    for n, line in enumerate(table):
        if n > 1 and line[0] != prev_group:
            out.append("")
        prev_group = line[0] if n else None
        parts = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(line, widths, strict=False))]
        out.append("  ".join([*parts, line[-1]]).rstrip())
        if n == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Row]) -> str:
    head = "| " + " | ".join(COLUMNS) + " |"
    align = "|" + "|".join(["---", "---", "---:", "---", "---:", "---:", "---:", "---"]) + "|"
    lines = [head, align]
    for r in rows:
        lines.append("| " + " | ".join(_md_escape(c) for c in cells(r)) + " |")
    return "\n".join(lines)


def plot(rows: Sequence[Row], path: Path) -> bool:
    """Cost against flow size and query latency against store size; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 5.2))
    labels = {"memory": "hot path (calling thread)", "sqlite": "SQLite, flushed"}
    for kind, label in labels.items():
        pts = sorted((int(r.key.split(":")[2]), r.value) for r in rows
                     if r.key.startswith(f"flow:{kind}:") and r.value is not None)
        if pts:
            left.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    bare = next((r.value for r in rows if r.case == "bare call" and r.value), None)
    if bare:
        left.axhline(bare, color="grey", linestyle="--", linewidth=1, label="bare call")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("decorated calls per flow")
    left.set_ylabel("ns per decorated call (median)")
    left.set_title("Cost per action against flow size")
    left.grid(True, which="both", alpha=0.3)
    left.legend()
    queries: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r.key.startswith("store:") and r.value is not None:
            _, name, size = r.key.split(":", 2)
            queries.setdefault(name, []).append((int(size), r.value))
    for name, pts in queries.items():
        pts.sort()
        right.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("actions in the store (SQLite)")
    right.set_ylabel("ms per query (median)")
    right.set_title("Query latency against store size")
    right.grid(True, which="both", alpha=0.3)
    if queries:
        right.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 1 else f"{v:g}")
    # Minor ticks: label the 2s and 5s only.
    some = FuncFormatter(lambda v, _pos: plain(v) if f"{v:e}"[0] in "25" else "")
    for ax in (left, right):
        for axis, (lo, hi) in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            axis.set_major_formatter(plain)
            # Minor labels only where a short range would otherwise have too few.
            axis.set_minor_formatter(some if hi / lo < 100 else NullFormatter())
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def docs_section(rows: Sequence[Row], machine: dict[str, str], command: str,
                 timings: dict[str, float], image: str | None, when: str) -> str:
    lines = [
        BEGIN,
        "<!-- Generated by benchmarks/run_all.py: edits between these markers are replaced. -->",
        "",
        "## The benchmark suite (`make bench`)",
        "",
        "Every benchmark in one table: medians of repeated rounds, the cases of each",
        "benchmark interleaved round by round in one process (the memory figures each in",
        "a fresh process). What each benchmark does is in its module's docstring under",
        "`benchmarks/`. `make bench` runs it against a throwaway PostgreSQL (scripts/with-pg;",
        "`ACTIONTRACE_TEST_PG_URL`'s server if set). Reproduce with:",
        "",
        "```console",
        f"$ {command}",
        "```",
        "",
        f"Taken {when} on:",
        "",
        *[f"* {k}: {v}" for k, v in machine.items()],
        "",
        markdown_table(rows),
        "",
        "```text",
        LEGEND,
        "```",
        "",
    ]
    if image:
        lines += [f"![Cost per action against flow size, and query latency against store "
                  f"size]({image})", ""]
    total = sum(timings.values())
    lines += ["Time per part of the run: "
              + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
              + f" (total {total:.0f} s).", "", END]
    return "\n".join(lines)


def write_docs(path: Path, section: str) -> None:
    """Replace the text between the markers (or append a section with them)."""
    text = path.read_text() if path.exists() else "# Performance\n"
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
