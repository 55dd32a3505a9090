"""The public surface is exactly what API.md names (plus documented extras)."""

from __future__ import annotations

import importlib

import actiontrace

CONTRACT = {
    "action", "synchronization", "concept", "flow", "get_tracer", "configure", "continue_flow",
    "wrap_context", "ActionTracer", "ActionRecord", "ProvenanceEdge", "ActionTrace",
    "ActionFilter", "InMemoryTraceStorage", "SqlAlchemyTraceStorage", "TraceAnalyzer",
    "PerformanceMetrics", "TraceNotFound", "ActionNotFound", "ReactionLimitError",
    "current_action_id",
}
EXTRAS = {
    "ConfigurationError", "LogEvent", "SchemaAhead", "SchemaBehind", "SchemaOutdated",
    "StorageError", "StorageUnavailable", "TraceStorage",
    "__version__", "remove_reaction",
}


def test_all_is_contract_plus_extras() -> None:
    """__all__ is sorted and holds the contract's names and the documented extras only."""
    assert set(actiontrace.__all__) == CONTRACT | EXTRAS
    assert actiontrace.__all__ == sorted(actiontrace.__all__)


def test_every_name_resolves() -> None:
    """Every exported name is importable."""
    for name in actiontrace.__all__:
        assert getattr(actiontrace, name) is not None


def test_contrib_modules() -> None:
    """The logging integrations export their processors and filter."""
    assert importlib.import_module("actiontrace.contrib.structlog").__all__ == [
        "add_flow_context", "attach_to_action",
    ]
    assert importlib.import_module("actiontrace.contrib.logging").__all__ == ["FlowContextFilter"]
