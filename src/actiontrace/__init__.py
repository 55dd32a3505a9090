"""actiontrace: record what an application did and why.

Decorate concept methods with ``@action`` and the glue between concepts with
``@synchronization``; every call becomes an ``ActionRecord`` in a flow, and every action
a synchronization calls gets a ``ProvenanceEdge`` from the action that triggered it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actiontrace._analysis import TraceAnalyzer
from actiontrace._exceptions import (
    ActionNotFound,
    ConfigurationError,
    ReactionLimitError,
    SchemaAhead,
    SchemaBehind,
    SchemaOutdated,
    StorageError,
    StorageUnavailable,
    TraceNotFound,
)
from actiontrace._instrument import instrument, uninstrument
from actiontrace._model import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    LogEvent,
    PerformanceMetrics,
    ProvenanceEdge,
)
from actiontrace._propagation import RemoteContext, continue_flow_from, extract, inject
from actiontrace._tracer import ActionTracer, configure, get_tracer
from actiontrace._version import __version__
from actiontrace.recording._context import continue_flow, current_action_id, flow, wrap_context
from actiontrace.recording._decorators import action, concept, synchronization
from actiontrace.recording._reactions import remove_reaction
from actiontrace.storage import InMemoryTraceStorage, TraceStorage

if TYPE_CHECKING:
    from actiontrace.storage._sql import SqlAlchemyTraceStorage


def __getattr__(name: str) -> Any:
    # SQLAlchemy is imported only when SQL storage is asked for.
    if name == "SqlAlchemyTraceStorage":
        from actiontrace.storage._sql import SqlAlchemyTraceStorage

        return SqlAlchemyTraceStorage
    raise AttributeError(f"module 'actiontrace' has no attribute {name!r}")

__all__ = [
    "ActionFilter",
    "ActionNotFound",
    "ActionRecord",
    "ActionTrace",
    "ActionTracer",
    "ConfigurationError",
    "InMemoryTraceStorage",
    "LogEvent",
    "PerformanceMetrics",
    "ProvenanceEdge",
    "ReactionLimitError",
    "RemoteContext",
    "SchemaAhead",
    "SchemaBehind",
    "SchemaOutdated",
    "SqlAlchemyTraceStorage",
    "StorageError",
    "StorageUnavailable",
    "TraceAnalyzer",
    "TraceNotFound",
    "TraceStorage",
    "__version__",
    "action",
    "concept",
    "configure",
    "continue_flow",
    "continue_flow_from",
    "current_action_id",
    "extract",
    "flow",
    "get_tracer",
    "inject",
    "instrument",
    "remove_reaction",
    "synchronization",
    "uninstrument",
    "wrap_context",
]
