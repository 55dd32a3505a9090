"""actiontrace.testing: assert_caused, assert_not_caused and flow_shape."""

from __future__ import annotations

import re
import uuid

import pytest

import actiontrace
from actiontrace import action, concept, continue_flow, flow, synchronization
from actiontrace.demo import DEMO_REQUESTS, MusicPlayer
from actiontrace.testing import assert_caused, assert_not_caused, flow_shape


@concept("tst::Auth")
class Auth:
    @action
    def login(self, user: str) -> bool:
        return True


@concept("tst::Player")
class Player:
    @action
    def play_passage(self, passage_id: int) -> int:
        return passage_id

    @action
    def stop(self) -> None:
        pass


auth, player = Auth(), Player()


@synchronization("OnAuthSuccess")
def on_auth_success(passage_id: int) -> None:
    player.play_passage(passage_id)


@synchronization("OnStop")
def on_stop() -> None:
    player.stop()


def request(passage_id: int) -> uuid.UUID:
    with flow("tst::Web::handle_request") as token:
        auth.login("bob")
        on_auth_success(passage_id)
    return token


def normalized(text: str) -> str:
    """Failure text with ids and durations replaced, so it can be compared exactly."""
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    return re.sub(r"\(\d+ µs\)", "(N µs)", text)


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


class TestAssertCaused:
    def test_passes_on_the_chain(self, tracer: actiontrace.ActionTracer) -> None:
        """The cause on the effect's causal chain passes, by short or full pattern; returns the effect."""
        request(42)
        effect = assert_caused(tracer, "Auth::login", "Player::play_passage")
        assert (effect.action, effect.inputs) == ("play_passage", {"passage_id": 42})
        assert_caused(tracer, "tst::Auth::login", "tst::Player::play_passage", via="OnAuthSuccess")
        assert_caused(tracer, "Web::handle_request", "Player::play_passage")  # further up

    def test_an_action_is_not_its_own_cause(self, tracer: actiontrace.ActionTracer) -> None:
        """assert_caused(X, X) fails when nothing else matching X caused it."""
        request(1)
        with pytest.raises(AssertionError, match="is not on the causal chain"):
            assert_caused(tracer, "Player::play_passage", "Player::play_passage")

    def test_not_on_the_chain_shows_the_chain_as_a_tree(self, tracer: actiontrace.ActionTracer) -> None:
        """The failure shows the effect's causal chain as the tree view."""
        request(42)
        player.stop()
        with pytest.raises(AssertionError) as info:
            assert_caused(tracer, "Player::stop", "Player::play_passage")
        assert normalized(str(info.value)) == (
            "assert_caused: 'Player::stop' is not on the causal chain of 'Player::play_passage'\n"
            "causal chain of Player::play_passage (action <id>):\n"
            "[Web::handle_request] (N µs) flow_token=<id>\n"
            "│   └─ Input: {}\n"
            "└──> [Auth::login] (N µs)\n"
            '       └─ Input: {"user":"bob"}\n'
            "       └─ Output: true\n"
            "    └──(OnAuthSuccess)──> [Player::play_passage] (N µs)\n"
            '                            └─ Input: {"passage_id":42}\n'
            "                            └─ Output: 42"
        )

    def test_wrong_via_names_the_producing_sync(self, tracer: actiontrace.ActionTracer) -> None:
        """With via, a cause on the chain but another synchronization fails and says which."""
        request(42)
        with pytest.raises(AssertionError) as info:
            assert_caused(tracer, "Auth::login", "Player::play_passage", via="OnLogin")
        first = str(info.value).splitlines()[0]
        assert first == (
            "assert_caused: 'Auth::login' is on the causal chain of 'Player::play_passage', "
            "but 'Player::play_passage' was produced by 'OnAuthSuccess', not 'OnLogin'"
        )
        with pytest.raises(AssertionError, match="produced by no synchronization"):
            assert_caused(tracer, "Web::handle_request", "Auth::login", via="OnLogin")

    def test_typo_in_effect_lists_actions_and_suggests(self, tracer: actiontrace.ActionTracer) -> None:
        """No action matches: the recorded actions, and the nearest name suggested."""
        request(1)
        request(2)
        with pytest.raises(AssertionError) as info:
            assert_caused(tracer, "Auth::login", "Player::play_pasage")
        assert str(info.value) == (
            "assert_caused: no recorded action matches the effect 'Player::play_pasage'; "
            "did you mean 'Player::play_passage'?\n"
            "recorded actions (3 distinct, 6 in all):\n"
            "  tst::Web::handle_request  x2\n"
            "  tst::Auth::login  x2\n"
            "  tst::Player::play_passage  x2"
        )

    def test_typo_in_cause_in_full_form(self, tracer: actiontrace.ActionTracer) -> None:
        """A full-form pattern gets full-form suggestions."""
        request(1)
        with pytest.raises(AssertionError) as info:
            assert_caused(tracer, "tst::Auth::logn", "Player::play_passage")
        assert str(info.value).splitlines()[0] == (
            "assert_caused: no recorded action matches the cause 'tst::Auth::logn'; "
            "did you mean 'tst::Auth::login'?"
        )

    def test_nothing_recorded(self, tracer: actiontrace.ActionTracer) -> None:
        """With no actions at all, the message says so."""
        with pytest.raises(AssertionError) as info:
            assert_caused(tracer, "Auth::login", "Player::play_passage")
        assert str(info.value) == (
            "assert_caused: no recorded action matches the effect 'Player::play_passage': no "
            "actions were recorded (did the code under test run, and is it decorated with @action?)"
        )

    def test_pattern_must_have_a_concept(self, tracer: actiontrace.ActionTracer) -> None:
        """A bare action name is a usage error, not a failed assertion."""
        with pytest.raises(ValueError, match="'Concept::action'"):
            assert_caused(tracer, "login", "Player::play_passage")

    def test_any_matching_effect_will_do(self, tracer: actiontrace.ActionTracer) -> None:
        """One effect caused by the cause is enough, whatever the others did."""
        player.play_passage(7)  # a flow of its own: no login on its chain
        request(42)
        player.play_passage(8)
        assert_caused(tracer, "Auth::login", "Player::play_passage", via="OnAuthSuccess")

    def test_remote_cause_across_parts(self, tracer: actiontrace.ActionTracer) -> None:
        """A chain through continue_flow (another part of the flow) counts."""
        with flow("tst::Web::handle_request") as token:
            auth.login("bob")
        login_rec = tracer.find_actions(action="login")[-1]
        with continue_flow(token, trigger=login_rec.id, synchronization="OnAuthSuccess"):
            player.play_passage(3)
        assert_caused(tracer, "Auth::login", "Player::play_passage", via="OnAuthSuccess")

    def test_works_on_a_storage(self, tracer: actiontrace.ActionTracer) -> None:
        """A storage answers the same queries as a tracer."""
        request(5)
        tracer.flush()
        assert_caused(tracer.storage, "Auth::login", "Player::play_passage")


class TestAssertNotCaused:
    def test_passes_when_not_on_the_chain(self, tracer: actiontrace.ActionTracer) -> None:
        """Unrelated actions pass, and so does a via that did not produce the effect."""
        request(1)
        on_stop()  # outside a flow: its own flow, no edge
        with flow("tst::Web::handle_request"):
            player.play_passage(2)
            on_stop()  # OnStop produces a stop here, after a play and no login
        assert_not_caused(tracer, "Auth::login", "Player::stop")
        assert_not_caused(tracer, "Auth::login", "Player::play_passage", via="OnStop")

    def test_effect_never_recorded_fails(self, tracer: actiontrace.ActionTracer) -> None:
        """An effect that never happened fails as in assert_caused (a typo must not pass)."""
        request(1)
        with pytest.raises(AssertionError) as info:
            assert_not_caused(tracer, "Auth::login", "Player::play_pasage")
        assert str(info.value) == (
            "assert_not_caused: no recorded action matches the effect 'Player::play_pasage'; "
            "did you mean 'Player::play_passage'?\n"
            "(if it may not have happened at all, pass missing_ok=True)\n"
            "recorded actions (3 distinct, 3 in all):\n"
            "  tst::Web::handle_request  x1\n"
            "  tst::Auth::login  x1\n"
            "  tst::Player::play_passage  x1"
        )

    def test_cause_never_recorded_fails(self, tracer: actiontrace.ActionTracer) -> None:
        """A cause that never happened fails too, in the form the pattern was written in."""
        request(1)
        with pytest.raises(AssertionError) as info:
            assert_not_caused(tracer, "tst::Auth::logn", "Player::play_passage")
        assert str(info.value).splitlines()[:2] == [
            "assert_not_caused: no recorded action matches the cause 'tst::Auth::logn'; "
            "did you mean 'tst::Auth::login'?",
            "(if it may not have happened at all, pass missing_ok=True)",
        ]

    def test_nothing_recorded_fails(self, tracer: actiontrace.ActionTracer) -> None:
        """With no actions at all, the message says so."""
        with pytest.raises(AssertionError, match="no actions were recorded"):
            assert_not_caused(tracer, "Auth::login", "Player::play_passage")

    def test_via_that_never_fired_fails(self, tracer: actiontrace.ActionTracer) -> None:
        """A via that produced nothing recorded fails, naming the ones that did."""
        request(1)
        with flow("tst::Web::handle_request"):
            player.play_passage(2)
            on_stop()
        with pytest.raises(AssertionError) as info:
            assert_not_caused(tracer, "Auth::login", "Player::play_passage", via="OnAuthSucess")
        assert str(info.value) == (
            "assert_not_caused: no recorded action was produced by the synchronization "
            "'OnAuthSucess'; did you mean 'OnAuthSuccess'?\n"
            "(if it may not have happened at all, pass missing_ok=True)\n"
            "synchronizations that produced actions: 'OnAuthSuccess', 'OnStop'"
        )
        plain = actiontrace.configure()
        with flow("tst::Web::handle_request"):
            auth.login("bob")
            player.stop()  # called, not produced by a synchronization
        with pytest.raises(AssertionError, match="no synchronization produced any"):
            assert_not_caused(plain, "Auth::login", "Player::stop", via="OnStop")

    def test_missing_ok_allows_what_never_happened(self, tracer: actiontrace.ActionTracer) -> None:
        """missing_ok=True: an effect, cause or via absent from the record passes."""
        assert_not_caused(tracer, "Auth::login", "Player::play_passage", missing_ok=True)
        request(1)
        assert_not_caused(tracer, "Auth::login", "Player::never_recorded", missing_ok=True)
        assert_not_caused(tracer, "Auth::never", "Player::play_passage", missing_ok=True)
        assert_not_caused(tracer, "Auth::login", "Player::play_passage", via="OnNever",
                          missing_ok=True)
        with pytest.raises(AssertionError, match="caused 'Player::play_passage'"):
            assert_not_caused(tracer, "Auth::login", "Player::play_passage", missing_ok=True)

    def test_fails_with_the_chain(self, tracer: actiontrace.ActionTracer) -> None:
        """A cause on the chain fails, naming the synchronization and showing the chain."""
        request(42)
        with pytest.raises(AssertionError) as info:
            assert_not_caused(tracer, "Auth::login", "Player::play_passage")
        lines = normalized(str(info.value)).splitlines()
        assert lines[:3] == [
            "assert_not_caused: 'Auth::login' caused 'Player::play_passage' (via 'OnAuthSuccess')",
            "causal chain of Player::play_passage (action <id>):",
            "[Web::handle_request] (N µs) flow_token=<id>",
        ]
        assert "    └──(OnAuthSuccess)──> [Player::play_passage] (N µs)" in lines


class TestFlowShape:
    def test_shape_of_a_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """One line per action, two spaces a level, the producing synchronization marked."""
        token = request(42)
        assert flow_shape(tracer.get_trace(token)) == (
            "Web::handle_request\n"
            "  Auth::login\n"
            "    Player::play_passage  <-OnAuthSuccess-"
        )

    def test_identical_across_runs(self, tracer: actiontrace.ActionTracer) -> None:
        """Two runs of the same code give the same text (no ids, no times)."""
        assert flow_shape(tracer.get_trace(request(1))) == flow_shape(tracer.get_trace(request(2)))

    def test_children_in_recording_order(self, tracer: actiontrace.ActionTracer) -> None:
        """Siblings appear in the order they were recorded."""
        with flow("tst::Web::batch") as token:
            player.stop()
            player.play_passage(1)
            player.stop()
        assert flow_shape(tracer.get_trace(token)).splitlines() == [
            "Web::batch", "  Player::stop", "  Player::play_passage", "  Player::stop",
        ]

    def test_remote_trigger_still_marked(self, tracer: actiontrace.ActionTracer) -> None:
        """A part continued from another process marks the synchronization of its direct actions."""
        token = uuid.uuid4()
        with continue_flow(token, trigger=uuid.uuid4(), synchronization="OnRemote"):
            player.play_passage(1)
        assert flow_shape(tracer.get_trace(token)) == "Player::play_passage  <-OnRemote-"

    def test_why_did_42_play(self, tracer: actiontrace.ActionTracer) -> None:
        """The bundled demo: the flow that played 42 has the expected wiring."""
        MusicPlayer().serve(DEMO_REQUESTS)
        play = tracer.find_actions(action="play_passage", inputs={"passage_id": 42})[-1]
        assert flow_shape(tracer.get_trace(play.flow_token)) == (
            "Web::handle_request\n"
            "  Authentication::validate_token  <-OnWebRequest-\n"
            "    Queue::dequeue  <-OnAuthSuccess-\n"
            "      Selector::select_next  <-AutoSelectWhenQueueLow-\n"
            "      Queue::enqueue  <-AutoSelectWhenQueueLow-\n"
            "    AudioPlayer::play_passage  <-OnAuthSuccess-\n"
            "      Cooldown::record_play  <-RecordPlaybackForCooldown-"
        )
        assert_caused(tracer, "Authentication::validate_token", "AudioPlayer::play_passage",
                      via="OnAuthSuccess")
        assert_caused(tracer, "AudioPlayer::play_passage", "Cooldown::record_play",
                      via="RecordPlaybackForCooldown")
