"""Shared pieces of the benchmark suite: rows, medians of interleaved rounds, the machine.

Every figure the suite reports is the median of ``repeat`` rounds. Where several
contenders are compared, their rounds are *interleaved* (round 1 of each, then round 2 of
each, ...), so a burst of load from another process on a shared machine hits all of them
alike and the ratios stay meaningful even when the absolute figures move.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PG_ENV = "ACTIONTRACE_TEST_PG_URL"


@dataclass
class Row:
    """One line of the suite's table."""

    group: str  # the section: overhead, requests, async, ...
    case: str  # what was measured
    value: float | None  # the median of the rounds (None: not measured, see note)
    unit: str
    spread: float | None = None  # interquartile range / median of the rounds
    above: float | None = None  # value minus the group's baseline (bare call, app alone)
    ratio: float | None = None  # against the group's reference (see the legend)
    note: str = ""
    key: str = ""  # machine-readable tag for plots: "flow:memory:100", "store:get_trace:1e4"
    rounds: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarize(samples: list[float]) -> tuple[float, float]:
    """(median, interquartile range / median) of the samples (spread 0 for one sample)."""
    med = statistics.median(samples)
    if len(samples) < 2 or not med:
        return med, 0.0
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return med, (q3 - q1) / med


class Unavailable(Exception):
    """A contender that cannot run here (not installed, not configured); the row says why."""


def interleaved(
    contenders: dict[str, Callable[[], float]], repeat: int, warmup: bool = True
) -> dict[str, list[float] | str]:
    """Run each contender once to warm up, then ``repeat`` interleaved rounds.

    Returns each contender's samples, or the reason it could not run (a string).
    """
    out: dict[str, list[float] | str] = {name: [] for name in contenders}  # in their order
    live = dict(contenders)
    if warmup:
        for name, fn in list(live.items()):
            try:
                fn()
            except Unavailable as exc:
                out[name] = str(exc)
                del live[name]
            except Exception as exc:
                out[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
                del live[name]
    for _ in range(repeat):
        for name, fn in list(live.items()):
            gc.collect()
            try:
                out[name].append(fn())  # type: ignore[union-attr]
            except Exception as exc:
                out[name] = f"failed: {type(exc).__name__}: {exc}"[:200]
                del live[name]
    return out


def row_from(group: str, case: str, result: list[float] | str, unit: str, **kw: Any) -> Row:
    """A row from ``interleaved``'s result for one contender."""
    if isinstance(result, str):
        return Row(group, case, None, unit, note=result, key=kw.get("key", ""))
    med, spread = summarize(result)
    return Row(group, case, med, unit, spread=spread, rounds=list(result), **kw)


def progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@contextlib.contextmanager
def timed(label: str, timings: dict[str, float]) -> Iterator[None]:
    progress(f"[bench] {label} ...")
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[label] = time.perf_counter() - t0
        progress(f"[bench] {label}: {timings[label]:.1f} s")


# -- PostgreSQL -------------------------------------------------------------------------------


def pg_base_url() -> str | None:
    return os.environ.get(PG_ENV) or None


def pg_schema_url(base: str) -> tuple[str, Callable[[], None]]:
    """A throwaway schema on the server at ``base``: its URL and a function that drops it."""
    import sqlalchemy as sa

    name = f"at_bench_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base, poolclass=sa.pool.NullPool)
    with admin.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={name}"})

    def drop() -> None:
        with admin.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def pg_server_version(base: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(base, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


# -- the machine ------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    m = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def _version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                              capture_output=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO, text=True, capture_output=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def machine() -> dict[str, str]:
    """What the figures were taken on."""
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
        loadavg = " ".join(load)
    except OSError:
        loadavg = "unknown"
    base = pg_base_url()
    if base:
        try:
            pg = f"PostgreSQL {pg_server_version(base)} (server), psycopg {_version('psycopg')}"
        except Exception as exc:
            pg = f"unreachable ({type(exc).__name__})"
    else:
        pg = f"not measured ({PG_ENV} unset)"
    return {
        "cores": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": f"SQLite {sqlite3.sqlite_version}, SQLAlchemy {_version('sqlalchemy')}",
        "postgresql": pg,
        "peers": ", ".join(f"{d} {_version(d)}" for d in ("opentelemetry-sdk", "eliot", "logfire")),
        "actiontrace": f"{_version('actiontrace')}, commit {_git()}",
        "load average at start": loadavg,
    }
