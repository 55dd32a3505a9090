"""``TraceAnalyzer``: which synchronizations fire, how deep chains go, how long they take."""

from __future__ import annotations

import uuid
from typing import Any

from actiontrace._model import PerformanceMetrics
from actiontrace.storage._base import TraceStorage

__all__ = ["TraceAnalyzer"]


class TraceAnalyzer:
    """Statistics over everything a storage holds, computed by the storage itself.

    Each call is answered by the backend (SQL aggregates for SQL storages), never by
    loading every trace into Python. Pass a storage, or a tracer (its storage is used
    after a flush).
    """

    def __init__(self, storage: Any) -> None:
        self._tracer = storage if hasattr(storage, "storage") and hasattr(storage, "flush") else None
        self._storage: TraceStorage = self._tracer.storage if self._tracer else storage

    def _sync(self) -> None:
        if self._tracer is not None:
            self._tracer.flush(self._tracer.query_flush_timeout)

    def top_synchronizations(self, limit: int = 10) -> list[tuple[str, int]]:
        """``(synchronization, number of actions it produced)``, most first."""
        self._sync()
        return self._storage.top_synchronizations(limit)

    def longest_chains(self, limit: int = 10) -> list[tuple[uuid.UUID, int]]:
        """``(flow_token, depth)``, deepest first; depth counts the actions on the
        longest causal path (provenance edges, else parent) of the flow."""
        self._sync()
        return self._storage.longest_chains(limit)

    def sync_performance(self, sync_name: str) -> PerformanceMetrics:
        """``count, mean, median, p95, p99`` of ``duration_us`` of the actions the
        synchronization produced, in µs. Percentiles interpolate linearly between the
        closest ranks (numpy's default, PostgreSQL's ``percentile_cont``). With no
        actions, ``count`` is 0 and the figures are None."""
        self._sync()
        return self._storage.sync_performance(sync_name)
