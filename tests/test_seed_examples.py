"""The design document's four example queries, on the bundled music player."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

import actiontrace
from actiontrace import ActionFilter
from actiontrace.demo import DEMO_REQUESTS, MusicPlayer


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    t = actiontrace.configure()
    MusicPlayer().serve(DEMO_REQUESTS)
    return t


def _names(chain: list[actiontrace.ActionRecord]) -> list[str]:
    return [f"{r.concept_uri.rpartition('::')[2]}::{r.action}" for r in chain]


class TestSeedQueries:
    def test_why_did_passage_42_play(self, tracer: actiontrace.ActionTracer) -> None:
        """Query 1: find play_passage(42) and walk its causal chain back to the request."""
        plays = tracer.find_actions(
            ActionFilter(concept_uri="wkmp-ap::AudioPlayer", action="play_passage")
        )
        play = next(a for a in plays if a.inputs["passage_id"] == 42)
        chain = tracer.get_causal_chain(play.id)
        assert _names(chain) == [
            "Web::handle_request",
            "Authentication::validate_token",
            "AudioPlayer::play_passage",
        ]
        assert chain[-1] == play
        assert [tracer.find_producing_sync(r.id) for r in chain] == [
            None, "OnWebRequest", "OnAuthSuccess",
        ]

    def test_which_synchronization_produced_this(self, tracer: actiontrace.ActionTracer) -> None:
        """Query 2: the queue refill was produced by AutoSelectWhenQueueLow."""
        enqueued = tracer.find_actions(ActionFilter(action="enqueue", inputs={"passage_id": 42}))
        assert len(enqueued) == 1
        assert tracer.find_producing_sync(enqueued[0].id) == "AutoSelectWhenQueueLow"
        cooldown = tracer.find_actions(ActionFilter(concept_uri="wkmp-ap::Cooldown"))
        assert {tracer.find_producing_sync(a.id) for a in cooldown} == {"RecordPlaybackForCooldown"}

    def test_what_did_auto_select_trigger_today(self, tracer: actiontrace.ActionTracer) -> None:
        """Query 3: everything AutoSelectWhenQueueLow produced since midnight UTC."""
        midnight = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start_of_day = int(midnight.timestamp() * 1_000_000)
        actions = [a for a in tracer.find_by_sync("AutoSelectWhenQueueLow") if a.timestamp >= start_of_day]
        # Three dequeues left fewer than two passages: each selected one and queued it.
        assert [a.action for a in actions] == ["select_next", "enqueue"] * 3
        assert [a.inputs["passage_id"] for a in actions if a.action == "enqueue"] == [42, 5, 8]

    def test_execution_path_as_dot(self, tracer: actiontrace.ActionTracer) -> None:
        """Query 4: the flow that played 42, rendered as DOT and accepted by Graphviz."""
        play = tracer.find_actions(ActionFilter(action="play_passage", inputs={"passage_id": 42}))[0]
        trace = tracer.get_trace(play.flow_token)
        dot = trace.to_dot()
        node_lines = [line for line in dot.splitlines() if line.startswith('    "') and " -> " not in line]
        assert sorted(line.split('"')[1] for line in node_lines) == sorted(str(a) for a in trace.actions)
        assert dot.count(" -> ") == len(trace.provenance_edges) == 6
        svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True)
        assert b"<svg" in svg.stdout

    def test_failed_login_is_recorded_as_error(self, tracer: actiontrace.ActionTracer) -> None:
        """The rejected token's validation is an error record, and its flow root too."""
        failed = tracer.find_actions(ActionFilter(action="validate_token"))
        errors = [a for a in failed if a.status == "error"]
        assert len(errors) == 1
        assert errors[0].outputs == {
            "error": "unknown token", "error_type": "actiontrace.demo.AuthError",
        }
        assert errors[0].inputs == {"token": "[REDACTED]"}
        root = tracer.get_trace(errors[0].flow_token)
        assert root.actions[root.root_action_id].status == "error"
