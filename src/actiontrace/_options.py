"""The options of ``ActionTracer`` and ``configure``, typed and declared once.

``ActionTracer(**options)`` and ``configure(**options)`` take these as keyword
arguments typed by ``TypedDict`` (PEP 692): mypy and editors check each name and type,
and a misspelled name is a ``ConfigurationError`` naming the known ones at run time
(docs/reference.md, "Flows and the tracer").
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

from actiontrace._exceptions import ConfigurationError

__all__ = [
    "DEFAULT_URL", "MAX_QUEUE_BYTES", "TRACER_OPTIONS", "CaptureOptions", "ConfigureOptions", "TracerOptions", "check",
]

# The database the CLI, the demo and a SqlAlchemyTraceStorage without a URL use.
DEFAULT_URL = "sqlite:///actiontrace.db"
# The buffer's default bound in bytes (configure(max_queue_bytes=...)).
MAX_QUEUE_BYTES = 256 * 1024 * 1024


class TracerOptions(TypedDict, total=False):
    """What an ``ActionTracer`` is built with (see its docstring for each)."""

    max_reaction_depth: int
    max_queue: int
    max_queue_bytes: int
    batch_size: int
    flush_interval: float
    full_wait: float
    recent_traces: int
    query_flush_timeout: float
    sample_rate: float
    journal: str | os.PathLike[str] | bool | None
    span_exporters: Sequence[Any]  # OpenTelemetry SpanExporter objects (contrib.otel)
    span_export_queue: int
    retention: float | datetime.timedelta | None  # keep flows this long (docs/retention.md)


class CaptureOptions(TypedDict, total=False):
    """Process-wide capture settings ``configure`` changes (absent: unchanged)."""

    enabled: bool
    redact: str | Iterable[str]
    max_value_bytes: int


class ConfigureOptions(TracerOptions, CaptureOptions, total=False):
    """Everything ``configure`` takes besides ``url``, ``storage`` and ``module``."""


# The tracer's defaults.
TRACER_OPTIONS: TracerOptions = {
    "max_reaction_depth": 100,
    "max_queue": 1_000_000,
    "max_queue_bytes": MAX_QUEUE_BYTES,
    "batch_size": 5_000,
    "flush_interval": 0.2,
    "full_wait": 0.05,
    "recent_traces": 1_000,
    "query_flush_timeout": 5.0,
    "sample_rate": 1.0,
    "journal": None,  # overflow journal directory: None = default place, False = none
    "span_exporters": (),  # OpenTelemetry SpanExporters fed every stored part (contrib.otel)
    "span_export_queue": 100_000,  # actions that may wait for one exporter
    "retention": None,  # keep flows this long (seconds or a timedelta), pruning in the writer
}


def check(options: Mapping[str, Any], known: type[Any], what: str) -> None:
    """Refuse names ``known`` (a TypedDict) does not declare, naming the known ones."""
    names: frozenset[str] = known.__optional_keys__ | known.__required_keys__
    unknown = set(options) - names
    if unknown:
        raise ConfigurationError(
            f"unknown {what} option(s): {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(names))}"
        )
