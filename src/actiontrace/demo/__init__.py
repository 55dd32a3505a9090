"""The bundled example: a small music player in the shape of the design document.

Concepts: Web, Authentication, AudioPlayer, Cooldown, Queue and Selector. The glue:

* ``OnWebRequest``: a request validates its token.
* ``OnAuthSuccess``: a valid token plays the requested passage (or the next queued one).
* ``RecordPlaybackForCooldown`` (declared, ``when=AudioPlayer.play_passage``): every
  successful play is recorded for the cooldown.
* ``AutoSelectWhenQueueLow`` (declared, ``when=Queue.dequeue`` where fewer than two
  passages remain): the selector picks a passage and queues it.

``MusicPlayer().serve(requests)`` handles requests, one flow each. Run it with
``actiontrace demo`` (or ``python -m actiontrace.demo``) to fill a database and see why
passage 42 played; ``run(url)`` does the same from Python.

The concepts log through structlog with ``attach_to_action``, so their log events are
stored with the actions that emitted them (``actiontrace show`` lists them in the tree).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import structlog

from actiontrace._model import ActionRecord
from actiontrace._options import DEFAULT_URL
from actiontrace.contrib.structlog import attach_to_action
from actiontrace.recording._context import flow
from actiontrace.recording._decorators import action, concept, synchronization

__all__ = ["DEFAULT_URL", "DEMO_REQUESTS", "DemoResult", "MusicPlayer", "run"]


def _quiet(logger: Any, method_name: str, event_dict: Any) -> Any:
    raise structlog.DropEvent  # stored with the trace by attach_to_action, printed nowhere


# A logger of the demo's own (not structlog's global configuration, which belongs to the
# application that imports this module): events are attached to the running action and
# then dropped. An application would put attach_to_action in structlog.configure().
log = structlog.wrap_logger(
    structlog.ReturnLogger(), processors=[attach_to_action, _quiet],
    wrapper_class=structlog.BoundLogger, context_class=dict,
)


class AuthError(Exception):
    """The token is not known."""


@concept("wkmp-ap::Authentication")
class Authentication:
    def __init__(self, tokens: dict[str, int]) -> None:
        self._tokens = tokens

    @action
    def validate_token(self, token: str) -> dict[str, Any]:
        user = self._tokens.get(token)
        if user is None:
            log.warning("token rejected", token=token)  # stored as "[REDACTED]"
            raise AuthError("unknown token")
        log.info("token accepted", user_id=user)
        return {"valid": True, "user_id": user}


@concept("wkmp-ap::Queue")
class Queue:
    def __init__(self, passages: Iterable[int]) -> None:
        self.passages = list(passages)

    @action
    def dequeue(self) -> dict[str, Any]:
        passage = self.passages.pop(0) if self.passages else None
        return {"passage_id": passage, "remaining": len(self.passages)}

    @action
    def enqueue(self, passage_id: int) -> dict[str, Any]:
        self.passages.append(passage_id)
        return {"length": len(self.passages)}


@concept("wkmp-ap::Selector")
class Selector:
    def __init__(self, library: Iterable[int]) -> None:
        self.library = list(library)
        self.position = 0

    @action
    def select_next(self, exclude: list[int]) -> dict[str, Any]:
        for _ in range(len(self.library)):
            candidate = self.library[self.position % len(self.library)]
            self.position += 1
            if candidate not in exclude:
                log.info("selected", passage_id=candidate, recently_played=exclude)
                return {"passage_id": candidate}
        return {"passage_id": None}


@concept("wkmp-ap::AudioPlayer")
class AudioPlayer:
    def __init__(self) -> None:
        self.clock = 1_699_564_800
        self.history: list[int] = []

    @action
    def play_passage(self, passage_id: int) -> dict[str, Any]:
        self.clock += 180
        self.history.append(passage_id)
        log.info("playing", passage_id=passage_id)
        return {"started_at": self.clock}


@concept("wkmp-ap::Cooldown")
class Cooldown:
    def __init__(self) -> None:
        self.last_played: dict[int, int] = {}

    @action
    def record_play(self, song_id: int, timestamp: int) -> None:
        self.last_played[song_id] = timestamp


class MusicPlayer:
    """The concepts wired together by synchronizations."""

    current: MusicPlayer | None = None

    def __init__(self) -> None:
        self.auth = Authentication({"tok-alice": 1, "tok-bob": 2})
        self.queue = Queue([7, 13, 21])
        self.selector = Selector([42, 5, 8, 99])
        self.player = AudioPlayer()
        self.cooldown = Cooldown()
        # Declared reactions are global, like the classes they react to: they act on the
        # app built last.
        MusicPlayer.current = self

    def serve(self, requests: Iterable[dict[str, Any]]) -> list[str]:
        """Handle each request in a flow of its own; return what each one did."""
        return [self.handle(**req) for req in requests]

    def handle(self, path: str, token: str, passage_id: int | None = None) -> str:
        """One web request: ``POST /play`` with a token and maybe a passage."""
        inputs = {"path": path, "token": token, "passage_id": passage_id}
        try:
            with flow("wkmp-ap::Web::handle_request", inputs=inputs):
                self.on_web_request(token)
                return self.on_auth_success(passage_id)
        except AuthError:
            return "401 unauthorized"

    @synchronization("OnWebRequest")
    def on_web_request(self, token: str) -> None:
        self.auth.validate_token(token)

    @synchronization("OnAuthSuccess")
    def on_auth_success(self, passage_id: int | None) -> str:
        if passage_id is None:
            passage_id = self.queue.dequeue()["passage_id"]
            if passage_id is None:
                return "204 nothing to play"
        self.player.play_passage(passage_id)
        return f"200 playing {passage_id}"


@synchronization("RecordPlaybackForCooldown", when=AudioPlayer.play_passage)
def record_playback(record: ActionRecord) -> None:
    """Every successful play is recorded for the cooldown."""
    app = MusicPlayer.current
    if app is not None:
        app.cooldown.record_play(
            song_id=record.inputs["passage_id"], timestamp=record.outputs["started_at"]
        )


@synchronization(
    "AutoSelectWhenQueueLow",
    when=Queue.dequeue,
    where=lambda record: record.outputs["remaining"] < 2,
)
def auto_select(record: ActionRecord) -> None:
    """When fewer than two passages are queued, the selector queues one more."""
    app = MusicPlayer.current
    if app is None:
        return
    choice = app.selector.select_next(exclude=list(app.player.history[-3:]))
    if choice["passage_id"] is not None:
        app.queue.enqueue(choice["passage_id"])


# A failed login, explicit plays, and a queue running low (which makes the selector
# queue passage 42, played by the last request).
DEMO_REQUESTS: list[dict[str, Any]] = [
    {"path": "/play", "token": "tok-alice", "passage_id": 7},
    {"path": "/play", "token": "tok-mallory", "passage_id": 13},
    {"path": "/play", "token": "tok-bob"},
    {"path": "/play", "token": "tok-alice"},
    {"path": "/play", "token": "tok-bob"},
    {"path": "/play", "token": "tok-alice"},
]


class DemoResult(NamedTuple):
    """What ``run`` recorded: the play of passage 42, and the enqueue that queued it."""

    play: ActionRecord
    queued: ActionRecord | None


def run(url: str = DEFAULT_URL) -> DemoResult:
    """Serve ``DEMO_REQUESTS`` into the database at ``url``; return the play of passage 42.

    The global tracer is replaced (``configure(url=url, module="wkmp-ap")``) and left
    flushed. Running it again into the same database adds new flows.

    Raises:
        ConfigurationError: the URL is unusable.
        SchemaBehind: the database is behind this version of actiontrace.
        StorageError: the traces could not be written.
    """
    from actiontrace._exceptions import StorageError
    from actiontrace._model import ActionFilter
    from actiontrace._tracer import configure
    from actiontrace.recording._ids import now_us
    from actiontrace.storage._sql import SqlAlchemyTraceStorage, mask_url

    storage = SqlAlchemyTraceStorage(url)
    storage._ensure()  # fail now, clearly, if the database is unreachable or outdated
    tracer = configure(storage=storage, module="wkmp-ap")
    started = now_us()
    MusicPlayer().serve(DEMO_REQUESTS)
    if not tracer.flush(30):
        error = tracer.stats().get("last_error") or "timed out"
        raise StorageError(f"could not write the demo's traces to {mask_url(url)}: {error}")
    since = (started, 2**63 - 1)  # only this run's actions (the database may hold others)
    plays = tracer.find_actions(ActionFilter(
        concept_uri="wkmp-ap::AudioPlayer", action="play_passage",
        inputs={"passage_id": 42}, time_range=since,
    ))
    if not plays:  # pragma: no cover - the requests above always play 42
        raise StorageError("the demo did not play passage 42")
    queued = tracer.find_actions(ActionFilter(
        concept_uri="wkmp-ap::Queue", action="enqueue", inputs={"passage_id": 42},
        time_range=since,
    ))
    return DemoResult(plays[-1], queued[-1] if queued else None)
