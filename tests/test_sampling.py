"""configure(sample_rate=...): per-flow decisions, error flows always kept, visible."""

from __future__ import annotations

import contextlib
import uuid
from typing import Any

import pytest

import actiontrace
from actiontrace import ActionFilter, ConfigurationError, action, continue_flow, flow
from actiontrace.recording._context import sampled


@action(concept="smp::Work")
def work(n: int) -> int:
    if n < 0:
        raise ValueError("negative")
    return n


def run_flows(count: int, fail_every: int = 0) -> list[uuid.UUID]:
    tokens = []
    for i in range(count):
        with flow("smp::Web::req") as token:
            work(i)
            if fail_every and i % fail_every == 0:
                with contextlib.suppress(ValueError):
                    work(-1)
        tokens.append(token)
    return tokens


class TestSampling:
    def test_rate_zero_keeps_only_flows_with_errors(self) -> None:
        """At 0, only flows holding an error are stored, marked sampled=False."""
        tracer = actiontrace.configure(sample_rate=0.0)
        tokens = run_flows(50, fail_every=10)
        kept = {r.flow_token for r in tracer.find_actions(ActionFilter(concept_uri="smp::Work"))}
        assert kept == {tokens[i] for i in range(0, 50, 10)}
        for token in kept:
            assert tracer.get_trace(token).sampled is False
        stats = tracer.stats()
        assert stats["unsampled"] == 45 * 2  # root + one action in each left-out flow
        assert stats["recorded"] == stats["written"] + stats["unsampled"]

    def test_rate_one_keeps_everything(self) -> None:
        """The default keeps every flow, marked sampled=True."""
        tracer = actiontrace.configure()
        tokens = run_flows(20)
        assert all(tracer.get_trace(t).sampled for t in tokens)
        assert tracer.stats()["unsampled"] == 0

    def test_rate_half_keeps_about_half(self) -> None:
        """A fractional rate keeps about that share of flows, decided per flow."""
        tracer = actiontrace.configure(sample_rate=0.5)
        tokens = run_flows(1000)
        kept = {r.flow_token for r in tracer.find_actions(ActionFilter(action="work"))}
        assert 400 <= len(kept) <= 600
        assert kept == {t for t in tokens if sampled(t.int, 0.5)}

    def test_share_does_not_depend_on_how_ids_were_spaced(self) -> None:
        """Tokens that are every k-th id of a process (flows of k actions) are kept at the
        rate asked, whatever k: the decision hashes the token, it does not scale it."""
        from actiontrace.recording._context import sampled
        from actiontrace.recording._ids import new_id

        for stride in range(1, 8):
            ids = [new_id() for _ in range(1000 * stride)][::stride]
            assert 400 <= sum(sampled(t, 0.5) for t in ids) <= 600, stride

    def test_auto_flows_are_sampled_too(self) -> None:
        """A root action's own flow follows the same rule; a failing one is kept."""
        tracer = actiontrace.configure(sample_rate=0.0)
        work(1)
        with pytest.raises(ValueError):
            work(-2)
        (rec,) = tracer.find_actions(ActionFilter(action="work"))
        assert rec.status == "error" and tracer.get_trace(rec.flow_token).sampled is False

    def test_decision_is_the_same_in_every_process(self) -> None:
        """The decision depends on the token only: continue_flow parts agree."""
        token = uuid.uuid4()
        for rate in (0.1, 0.5, 0.9):
            tracer = actiontrace.configure(sample_rate=rate)
            with continue_flow(token):
                work(3)
            stored = tracer.find_actions(ActionFilter(flow_token=token))
            assert bool(stored) == sampled(token.int, rate)

    def test_bad_rate_rejected(self) -> None:
        """A rate outside 0..1 is a ConfigurationError."""
        with pytest.raises(ConfigurationError):
            actiontrace.configure(sample_rate=1.5)


def test_sampled_flag_round_trips(storage: Any) -> None:
    """sampled=False survives storage on every backend, and merges across parts."""
    tracer = actiontrace.ActionTracer(storage, sample_rate=0.0)
    actiontrace._state.install(tracer)
    with flow("smp::Web::req") as token, pytest.raises(ValueError):
        work(-1)
    assert tracer.flush(10)
    assert storage.get_trace(token).sampled is False
    full = actiontrace.ActionTracer(storage)
    actiontrace._state.install(full)
    with flow("smp::Web::req") as kept:
        work(1)
    assert full.flush(10)
    assert storage.get_trace(kept).sampled is True
    tracer.shutdown()
    full.shutdown()
