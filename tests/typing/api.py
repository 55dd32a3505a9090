"""The public API as a user types it: mypy --strict checks this file (make check).

Never run, only type-checked (as structlog's tests/typing/api.py). Each line is a use a
user relies on; ``reveal_type`` is avoided so the file stays quiet when it is right.
"""

from __future__ import annotations

import uuid
from typing import Any

import actiontrace
from actiontrace import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    ActionTracer,
    TraceStorage,
    action,
    concept,
    configure,
    continue_flow,
    current_action_id,
    flow,
    get_tracer,
    synchronization,
    wrap_context,
)


@action
def add(a: int, b: int = 2) -> int:
    return a + b


@action("named", concept="app::Math", redact=["pin"])
def login(user: str, pin: str) -> bool:
    return bool(user and pin)


@action
async def fetch(url: str) -> bytes:
    return url.encode()


@concept("app::Player")
class Player:
    @action
    def play(self, passage: int) -> str:
        return str(passage)

    @action
    @classmethod
    def make(cls) -> Player:
        return cls()


@synchronization
def glue(record: ActionRecord) -> None:
    return None


@synchronization("OnPlay", when=Player.play, where=lambda r: r.status == "ok")
def on_play(record: ActionRecord) -> None:
    return None


@synchronization(name="Async")
async def async_glue() -> int:
    return 1


def typed_results() -> None:
    total: int = add(1) + add(1, b=3)
    ok: bool = login("ann", "1234")
    played: str = Player().play(42) + Player.make().play(1)
    tracer: ActionTracer = configure(url="sqlite:///:memory:", max_queue=10, sample_rate=0.5,
                                     redact=["card"], enabled=True, journal=False)
    tracer = configure(storage=actiontrace.InMemoryTraceStorage(), flush_interval=3600)
    same: ActionTracer = get_tracer()
    storage: TraceStorage = same.storage
    with flow("app::Web::handle", {"path": "/"}) as token:
        here: uuid.UUID | None = current_action_id()
        run = wrap_context(add)
        total += run(1, 2)
    with continue_flow(token, trigger=here):
        glue(tracer.find_actions(ActionFilter(action="add"))[0])
    trace: ActionTrace = tracer.get_trace(token)
    text: str = trace.to_ascii() + trace.to_dot() + trace.to_mermaid()
    stats: Any = tracer.stats()
    done: bool = tracer.flush(1.0) and tracer.shutdown()
    print(total, ok, played, storage, text, stats, done, on_play, async_glue)


def refused() -> None:
    """What mypy must refuse (warn_unused_ignores turns a missed error into one)."""
    wrong: str = add(1)  # type: ignore[assignment]
    configure(max_queu=10)  # type: ignore[call-arg]
    configure(sample_rate="all")  # type: ignore[arg-type]
    login("ann")  # type: ignore[call-arg]
    print(wrong)
