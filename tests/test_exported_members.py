"""The public surface is exactly what docs/reference.md names (the contract plus documented extras)."""

from __future__ import annotations

import importlib

import actiontrace

CONTRACT = {
    "action", "synchronization", "concept", "flow", "get_tracer", "configure", "continue_flow",
    "wrap_context", "ActionTracer", "ActionRecord", "ProvenanceEdge", "ActionTrace",
    "ActionFilter", "InMemoryTraceStorage", "SqlAlchemyTraceStorage", "TraceAnalyzer",
    "PerformanceMetrics", "TraceNotFound", "ActionNotFound", "ReactionLimitError",
    "inject", "extract", "continue_flow_from", "RemoteContext", "instrument", "uninstrument",
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
    assert importlib.import_module("actiontrace.contrib.alembic").__all__ == [
        "TABLE_PREFIX", "include_name", "include_object", "is_actiontrace_table",
    ]


def test_reference_documents_every_name() -> None:
    """docs/reference.md names every exported name, contrib name and command."""
    from pathlib import Path

    from actiontrace.cli import cli

    text = (Path(__file__).parents[1] / "docs" / "reference.md").read_text()
    names = [n for n in actiontrace.__all__ if n != "__version__"]
    for module in ("structlog", "logging", "alembic", "otel", "asgi", "wsgi", "httpx", "requests"):
        names += importlib.import_module(f"actiontrace.contrib.{module}").__all__
    names += importlib.import_module("actiontrace.testing").__all__
    names += [f"`{c}" for c in cli.commands if c != "db"]
    names += [f"db {c}" for c in cli.commands["db"].commands]  # type: ignore[attr-defined]
    missing = [n for n in names if n not in text]
    assert missing == []


def test_otel_and_testing_modules() -> None:
    """The OpenTelemetry bridge and the test helpers export what docs/reference.md names."""
    assert importlib.import_module("actiontrace.contrib.otel").__all__ == ["span_id_of", "to_spans"]
    assert importlib.import_module("actiontrace.testing").__all__ == [
        "assert_caused", "assert_not_caused", "flow_shape",
    ]


def test_service_integrations() -> None:
    """The cross-service integrations export their middleware and instrument functions."""
    for name in ("asgi", "wsgi"):
        assert importlib.import_module(f"actiontrace.contrib.{name}").__all__ == [
            "ActionTraceMiddleware"]
    for name in ("httpx", "requests"):
        assert importlib.import_module(f"actiontrace.contrib.{name}").__all__ == [
            "instrument", "uninstrument"]


def test_sql_storage_retention_methods() -> None:
    """SqlAlchemyTraceStorage.partition and prune_flows keep the parameters docs/reference.md
    gives them."""
    import inspect

    def params(fn: object) -> list[tuple[str, object, object]]:
        sig = inspect.signature(fn)  # type: ignore[arg-type]
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    kw, pos = inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    empty = inspect.Parameter.empty
    storage = actiontrace.SqlAlchemyTraceStorage
    assert params(storage.partition) == [
        ("self", pos, empty), ("period", pos, 86400), ("ahead", kw, 2)]
    assert params(storage.prune_flows) == [
        ("self", pos, empty), ("before_us", pos, empty), ("dry_run", kw, False),
        ("batch_size", kw, 500), ("max_batches", kw, None), ("exact", kw, True)]
