"""Storage backends: in memory, and SQL through SQLAlchemy (imported on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from actiontrace.storage._base import TraceStorage
from actiontrace.storage._memory import InMemoryTraceStorage

if TYPE_CHECKING:
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

__all__ = ["InMemoryTraceStorage", "SqlAlchemyTraceStorage", "TraceStorage"]


def __getattr__(name: str) -> Any:
    # SQLAlchemy takes ~100 ms to import: only pay for it when SQL storage is used.
    if name == "SqlAlchemyTraceStorage":
        from actiontrace.storage._sql import SqlAlchemyTraceStorage

        return SqlAlchemyTraceStorage
    raise AttributeError(name)
