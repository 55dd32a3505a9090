"""TraceAnalyzer: top synchronizations, longest chains, duration statistics."""

from __future__ import annotations

import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

import actiontrace
from actiontrace import PerformanceMetrics, TraceAnalyzer, action, flow, synchronization
from actiontrace._model import percentile


class TestPercentiles:
    def test_linear_interpolation(self) -> None:
        """Percentiles interpolate between closest ranks (numpy's default)."""
        assert percentile([1, 2, 3, 4], 0.5) == 2.5
        assert percentile([10], 0.99) == 10.0
        assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 0.95) == pytest.approx(9.55)

    def test_unsorted_input_and_empty(self) -> None:
        """from_durations sorts first, and is safe on no data (the seed's bugs)."""
        m = PerformanceMetrics.from_durations([5, 1, 4, 2, 3])
        assert (m.count, m.mean, m.median, m.p95, m.p99) == (5, 3.0, 3.0, 4.8, pytest.approx(4.96))
        assert PerformanceMetrics.from_durations([]) == PerformanceMetrics(0, None, None, None, None)

    @given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=200))
    def test_matches_statistics_module(self, values: list[int]) -> None:
        """Median equals statistics.median; p95/p99 lie within the data, ordered."""
        m = PerformanceMetrics.from_durations(values)
        assert m.median == pytest.approx(statistics.median(values))
        assert min(values) <= m.median <= m.p95 <= m.p99 <= max(values)  # type: ignore[operator]


class TestAnalyzer:
    def test_counts_chains_and_performance(self) -> None:
        """The analyzer answers from the tracer's storage (flushing first)."""
        tracer = actiontrace.configure()

        @action(concept="an::A")
        def step(n: int) -> int:
            return n

        @synchronization("Often")
        def often(n: int) -> None:
            step(n)

        @synchronization("Rare")
        def rare() -> None:
            step(-1)

        with flow("an::Web::short") as short:
            often(1)
        with flow("an::Web::long") as long:
            often(1)  # root -> step
            often(2)  # step -> step
            often(3)  # step -> step
            rare()    # step -> step
        analyzer = TraceAnalyzer(tracer)
        assert analyzer.top_synchronizations(5) == [("Often", 4), ("Rare", 1)]
        assert analyzer.top_synchronizations(1) == [("Often", 4)]
        assert analyzer.longest_chains(2) == [(long, 5), (short, 2)]
        perf = analyzer.sync_performance("Often")
        assert perf.count == 4 and perf.mean is not None and perf.mean >= 0
        assert analyzer.sync_performance("Never") == PerformanceMetrics(0, None, None, None, None)

    def test_over_a_storage(self) -> None:
        """TraceAnalyzer also takes a storage directly."""
        tracer = actiontrace.configure()
        with flow("an::Web::req"):
            tracer.record_action("an::A", "b", None, None)
        tracer.flush()
        assert TraceAnalyzer(tracer.storage).longest_chains(5)[0][1] == 2
