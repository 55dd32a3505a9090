"""Context frames: which flow, which enclosing action, which trigger (docs/reference.md: Decorators, Flows and the tracer).

One ``ContextVar`` holds the innermost *frame* and the most recently completed action
there, as a pair ``(frame, last_completed)``. asyncio tasks copy the context when they
are created, so they inherit both; threads start with an empty context, so flows in
different threads never mix (``wrap_context`` carries one into a pool).

"Most recently completed" lives in the context, not in the frame, so that it is counted
per thread and per asyncio task (docs/concepts.md, "Concurrency"): a completed action
*sets* the pair ``(enclosing frame, its id)`` where a frame slot would have been
overwritten by sibling tasks sharing the frame (a bare frame stands for
``(frame, None)``). A task (a ``wrap_context`` call) sees
what completed before it was started, plus its own completions; its starter never sees
them. The set replaces the reset a call did anyway, so it costs one ``Token`` and one
small tuple per call (measured in docs/performance.md).

A frame is the plain list ``_layout`` declares: the frame of a running action *is* its
record, one list per decorated call (see ``_layout`` for the slots and the kinds of
frame). Synchronization frames are transparent: an action that completes inside counts
as completed in the frame's owner (the pair's ``last_completed`` is always the owner's).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import os
import sys
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from actiontrace._state import _Runtime, current_recorder, settings
from actiontrace.recording import _ids
from actiontrace.recording._capture import EMPTY, NULL, capture_error, capture_value
from actiontrace.recording._ids import as_uuid, now_us
from actiontrace.recording._layout import (
    DURATION,
    ID,
    OUTPUTS,
    OWNER,
    PART,
    START,
    STATUS,
    SYNC,
    TRIGGER,
    base_frame,
    root_frame,
    sync_frame,
)
from actiontrace.recording._record import LOCAL_LIMIT, FlowPart, split_root

__all__ = [
    "Recorder",
    "continue_flow",
    "current_action_id",
    "current_frame",
    "current_ids",
    "flow",
    "frame_var",
    "parse_id",
    "remote_view",
    "reset_or_set",
    "state",
    "wrap_context",
]

# (frame, id of the most recently completed action in the frame's owner) - see above.
# A bare frame means (frame, None): a decorated call sets its own frame so, sparing a
# tuple per call (~100 instructions); ``state()`` reads either shape.
State = tuple[list[Any] | None, int | None]
NO_FLOW: State = (None, None)
frame_var: contextvars.ContextVar[State | list[Any]] = contextvars.ContextVar(
    "actiontrace_frame", default=NO_FLOW
)


def state() -> State:
    """``(innermost frame or None, most recently completed action there or None)``."""
    value = frame_var.get()
    return value if value.__class__ is tuple else (value, None)  # type: ignore[return-value]


def current_frame() -> list[Any] | None:
    """The innermost frame in this context, or None outside a flow."""
    return state()[0]

T = TypeVar("T")


class PartBuffer(Protocol):
    """Where ended flow parts go: the buffer in front of the background writer."""

    def put(self, part: FlowPart) -> None: ...

    def skip(self, part: FlowPart) -> None: ...

    def count(self, name: str) -> None: ...


_M64 = (1 << 64) - 1


def sampled(token: int, rate: float) -> bool:
    """The sampling decision for a flow: a hash of its token against ``rate``.

    It depends only on the token, so every process that records a part of the flow
    (``continue_flow``) decides the same way without talking to the others.
    """
    # splitmix64's finalizer over both halves. Fibonacci hashing (bits 64-95 of
    # token * 0x9E3779B97F4A7C15) kept 60 of 1,000 flows at rate 0.5 when tokens were
    # every third id of a process (UUIDv7 low bits are a counter): it must mix, not
    # scale. Once per flow, ~0.3 µs.
    x = (token ^ (token >> 64)) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return ((x ^ (x >> 31)) >> 32) < rate * 0x100000000


def default_module() -> str:
    """The running program's name: ``python -m pkg`` -> ``pkg``, ``app.py`` -> ``app``."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        name: str = spec.name
        return name.removesuffix(".__main__")
    if sys.argv and sys.argv[0] not in ("", "-c", "-m"):
        stem, _ = os.path.splitext(os.path.basename(sys.argv[0]))
        return stem or "python"
    return "python"


class Recorder:
    """The part of the tracer the recording path talks to: opening and closing flows.

    ``ActionTracer`` extends it with the writer, storage and queries, which sit below
    the buffer and are never touched by a decorated call.
    """

    def __init__(
        self, buffer: PartBuffer, module: str | None, max_reaction_depth: int,
        sample_rate: float = 1.0,
    ) -> None:
        self._parts_out = buffer
        self.module = module or default_module()
        self.max_reaction_depth = max_reaction_depth
        self.sample_rate = sample_rate
        # The parts still running, as keys (a part hashes by identity).
        self._active: dict[FlowPart, None] = {}

    def open_part(self, token: int, root_id: int | None, ts: int) -> FlowPart:
        """Start recording a part of flow ``token`` in this process."""
        part = FlowPart(token, root_id, ts, self.module, self)
        if self.sample_rate < 1.0:
            part.sampled = sampled(token, self.sample_rate)
        self._active[part] = None
        return part

    def _open_root(self, root: str, inputs: bytes) -> list[Any]:
        """Open a new flow and record its root action, running; return the root record."""
        return self.open_root(split_root(root), inputs)

    def open_root(self, spec: Any, inputs: bytes) -> list[Any]:
        """Open a new flow whose root action is ``spec``'s, running; return its record.

        ``spec`` names the action (``concept_uri``, ``name``) and gives the writer its
        ``redactor``. The root record is also the flow's top frame (see the layout
        above). Every flow pays this, so the two ids come from one ``_ids.flow_ids`` call
        (callgrind, one empty flow: ~700 instructions more than building them inline,
        34,500 -> 35,200, the price of UUIDv7's layout living in ``_ids`` alone).
        """
        t0 = _ids.perf_ns()
        ts, root_id, token = _ids.flow_ids(t0)
        # open_part, inline (callgrind, one empty flow: ~940 instructions fewer).
        part = FlowPart(token, root_id, ts, self.module, self)
        if self.sample_rate < 1.0:
            part.sampled = sampled(token, self.sample_rate)
        self._active[part] = None
        rec = root_frame(spec, root_id, t0, inputs, part)
        part.records.append(rec)
        return rec

    def open_joined(self, spec: Any, inputs: bytes, token: int, trigger: int | None,
                    sync: str) -> list[Any]:
        """Join flow ``token`` with one running action, ``spec``'s; return its record.

        What ``continue_flow(token, trigger, sync)`` and an action called directly in it
        record (no parent; the edge from ``trigger`` labelled ``sync``, if any), without
        the block's frames: for a request continuing a remote flow.
        """
        t0 = _ids.perf_ns()
        part = self.open_part(token, None, (t0 + _ids.EPOCH_OFFSET_NS) // 1000)
        aid = _ids.local_counter.__next__()
        rec = root_frame(spec, aid, t0, inputs, part)
        part.records.append(rec)
        if trigger is not None:
            part.edge_log.append((trigger, aid, sync, t0))
        return rec

    def close_part(self, part: FlowPart) -> None:
        """Hand an ended part to the buffer (or drop it, unsampled and without errors)."""
        self._active.pop(part, None)
        # Only reactions, while the flow runs, read it; queued, it would be one more object
        # per flow for the garbage collector to visit (8 per seed-shaped flow without it).
        part.token_uuid = None
        # An unsampled flow was recorded all the same, so that one that holds an error
        # can still be kept (with sampled=False); the others are dropped here.
        if part.sampled or any(r[STATUS] == "error" for r in part.records):
            self._parts_out.put(part)
        else:
            self._parts_out.skip(part)

    def count_event(self, name: str) -> None:
        """Add one to ``stats()[name]`` (events of the recording side, e.g. propagation)."""
        self._parts_out.count(name)

    def active_parts(self, token: int) -> list[FlowPart]:
        """Snapshots of the parts of flow ``token`` still running in this process."""
        return [p.snapshot() for p in list(self._active) if p.token == token]


def current_ids() -> tuple[uuid.UUID, uuid.UUID | None] | None:
    """``(flow_token, innermost running action id)`` here, or None outside a flow."""
    frame = state()[0]
    if frame is None:
        return None
    part = frame[PART]
    owner = frame[OWNER] or frame
    action_id = None if owner[ID] is None else as_uuid(part.full_id(owner))
    return as_uuid(part.token), action_id


def remote_view() -> tuple[int, int | None, str | None, bool] | None:
    """What propagation needs of this context: ``(token, trigger, sync_name, sampled)``.

    The one place ``_propagation`` (and the contrib integrations built on it) reads the
    frame layout (docs/reference.md, Across services): in a synchronization's frame (a running
    ``@synchronization``, a declared reaction, or a ``continue_flow`` block with a
    trigger) the trigger and name its direct actions get edges from; elsewhere the
    innermost running action (or the flow's root) and None. ``trigger`` is a full
    UUIDv7 int, or None when there is no action to point at. None outside a flow.
    """
    frame = current_frame()
    if frame is None:
        return None
    part = frame[PART]
    if frame[SYNC] is not None:
        raw, name = frame[TRIGGER], frame[SYNC]
    else:
        owner = frame[OWNER] or frame
        raw, name = owner[ID], None
        if raw is None:  # a base frame: continue_flow without trigger, or an auto flow
            raw = part.root_id
    if raw is not None and raw < LOCAL_LIMIT:  # a local id: find its record, newest first
        rec = next((r for r in reversed(part.records) if r[ID] == raw), None)
        raw = None if rec is None else part.full_id(rec)
    return part.token, raw, name, bool(part.sampled)


def count_event(name: str) -> None:
    """Add one to the global tracer's ``stats()[name]`` counter; never raises."""
    with contextlib.suppress(Exception):  # counting must never reach the application
        current_recorder().count_event(name)


def current_action_id() -> uuid.UUID | None:
    """The id of the innermost running action (or the flow's root) in this context.

    None outside a flow, and directly inside ``continue_flow`` (no action of this
    process is running there). Pass it as ``continue_flow(token, trigger=...)`` in
    another process to make what runs there caused by this action.
    """
    ids = current_ids()
    if ids is None:
        return None
    _, action_id = ids
    return action_id


def reset_or_set(token: contextvars.Token[Any], fallback: State | list[Any]) -> None:
    """Reset ``frame_var`` to before ``token``; in another context, set ``fallback``."""
    try:
        frame_var.reset(token)
    except ValueError:  # exited in another context (e.g. a generator finalized elsewhere)
        frame_var.set(fallback)


class flow:
    """Start a new flow for the duration of a ``with`` (or ``async with``) block.

    The block's value is the flow token (a ``uuid.UUID``). The flow's root action is
    recorded as ``root`` split at its last ``::`` (concept, action), with ``inputs``;
    it ends with status ``error`` when the block raises. When the block exits the flow
    is handed to storage. An enclosing flow, if any, resumes afterwards.

    A ``flow`` object is one block: build a new one for each ``with``.
    """

    __slots__ = ("_inputs", "_part", "_prev", "_rec", "_reset", "_root")

    def __init__(self, root: str, inputs: dict[str, Any] | None = None) -> None:
        if not isinstance(root, str) or not root:
            raise TypeError("flow() needs the root action's name, e.g. 'app::Web::handle'")
        self._root = root
        self._inputs = inputs

    def __enter__(self) -> uuid.UUID:
        # Every flow pays this and __exit__ (a web request is a flow): the recorder and
        # the flag are read without their accessor functions (callgrind, one empty
        # flow opened and closed: 41,500 -> 35,300 instructions with open_root's ids,
        # the literal frame and the cheaper as_uuid; open_root called directly, not
        # through _open_root, with open_part inline: ~1,700 fewer, 38,550 -> 36,810 in
        # flows of a 20,000-flow run).
        if not _Runtime.enabled:
            self._part = None
            return uuid.uuid4()
        inputs = EMPTY if self._inputs is None else capture_value(self._inputs, settings.redactor, inputs=True)
        recorder = _Runtime.recorder or current_recorder()
        rec = self._rec = recorder.open_root(split_root(self._root), inputs)
        part = self._part = rec[PART]
        self._prev = frame_var.get()
        self._reset = frame_var.set(rec)  # a bare frame: (rec, nothing completed yet)
        token = part.token_uuid = as_uuid(part.token)  # kept: a reaction's record has it
        return token

    def __exit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        part = self._part
        if part is None:  # recording was disabled when the block started
            return
        try:
            frame_var.reset(self._reset)
        except ValueError:  # exited in another context (e.g. a generator finalized elsewhere)
            frame_var.set(self._prev)
        rec = self._rec
        rec[DURATION] = _ids.perf_ns() - rec[START]
        if exc is not None:
            rec[OUTPUTS] = capture_error(exc, settings.redactor)
            rec[STATUS] = "error"
        else:
            rec[OUTPUTS] = NULL
            rec[STATUS] = "ok"
        part.recorder.close_part(part)

    async def __aenter__(self) -> uuid.UUID:
        return self.__enter__()

    async def __aexit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(et, exc, tb)


def parse_id(value: uuid.UUID | str | int, what: str) -> int:
    if isinstance(value, uuid.UUID):
        return value.int
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 128:
        return value
    if isinstance(value, str):
        try:
            return uuid.UUID(value).int
        except ValueError:
            pass
    raise ValueError(f"{what} must be a UUID, got {value!r}")


class continue_flow:
    """Join an existing flow (e.g. one started in another process) for a block.

    Actions called directly in the block have no parent and, when ``trigger`` is given,
    a provenance edge from it labelled ``synchronization``. What the block records is
    stored as another part of the same flow; the flow's root stays the one recorded by
    the process that started it.
    """

    __slots__ = ("_part", "_prev", "_reset", "_sync", "_token", "_trigger")

    def __init__(
        self,
        flow_token: uuid.UUID | str | int,
        trigger: uuid.UUID | str | int | None = None,
        synchronization: str | None = None,
    ) -> None:
        self._token = parse_id(flow_token, "flow_token")
        self._trigger = None if trigger is None else parse_id(trigger, "trigger")
        self._sync = synchronization or "continue_flow"

    @classmethod
    def of_ints(cls, flow_token: int, trigger: int | None, synchronization: str) -> continue_flow:
        """The same from ids already parsed (``_propagation.join``: no ``parse_id``)."""
        self = cls.__new__(cls)
        self._token, self._trigger, self._sync = flow_token, trigger, synchronization
        return self

    def __enter__(self) -> uuid.UUID:
        self.enter()
        return as_uuid(self._token)

    def enter(self) -> None:
        """``__enter__`` without building the token's ``uuid.UUID``."""
        if not _Runtime.enabled:
            self._part = None
            return
        part = (_Runtime.recorder or current_recorder()).open_part(self._token, None, now_us())
        self._part = part
        base = base_frame(part)
        if self._trigger is not None:
            base = sync_frame(part, base, self._sync, self._trigger, 0)
        self._prev = frame_var.get()
        self._reset = frame_var.set(base)  # a bare frame: nothing completed yet

    def __exit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        if self._part is None:
            return
        reset_or_set(self._reset, self._prev)
        self._part.recorder.close_part(self._part)

    async def __aenter__(self) -> uuid.UUID:
        return self.__enter__()

    async def __aexit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(et, exc, tb)


def wrap_context(fn: Callable[..., T]) -> Callable[..., T]:
    """Return ``fn`` bound to the current flow, to run in another thread (a pool).

    Actions it calls join the flow as if called where ``wrap_context`` was called; the
    flow must still be running when they complete, or they are not stored with it.
    Each call sees the actions completed before ``wrap_context`` was called plus its
    own, never those of another call running beside it (docs/concepts.md).
    """
    carried = frame_var.get()

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            reset = frame_var.set(carried)
            try:
                return await fn(*args, **kwargs)
            finally:
                frame_var.reset(reset)

        return run_async  # type: ignore[return-value]

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> T:
        reset = frame_var.set(carried)
        try:
            return fn(*args, **kwargs)
        finally:
            frame_var.reset(reset)

    return run
