"""Declared reactions: the registry ``@synchronization(when=...)`` fills, and running them.

A reaction runs right after the action it reacts to succeeds, in a synchronization frame
whose trigger is that action (docs/concepts.md). Cascades are cut at
``max_reaction_depth`` (or before the interpreter's stack runs out) with a
``ReactionLimitError``, leaving an error record where they were cut.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actiontrace._exceptions import ReactionLimitError
from actiontrace._model import ActionRecord
from actiontrace._state import settings
from actiontrace.recording import _ids
from actiontrace.recording._capture import capture_error, capture_value
from actiontrace.recording._context import frame_var, state
from actiontrace.recording._layout import ID, PARENT, Frame, Record, new_record, sync_frame
from actiontrace.recording._record import FlowPart, Named

if TYPE_CHECKING:
    from actiontrace.recording._decorators import ActionSpec

__all__ = [
    "REACTIONS", "Reaction", "leave_frame", "react", "react_async", "reactions_snapshot",
    "remove_reaction", "restore_reactions",
]


class Reaction:
    """A declared reaction: ``func(record)`` runs after a matching action succeeds."""

    __slots__ = ("func", "is_async", "name", "where")

    def __init__(self, name: str, func: Callable[..., Any], where: Callable[..., Any] | None):
        self.name = name
        self.func = func
        self.where = where
        self.is_async = inspect.iscoroutinefunction(func)


# Reactions by "concept_uri::action"; an ActionSpec holds the list for its own key, so a
# reaction declared after the action is seen by it without any per-call lookup.
REACTIONS: dict[str, list[Reaction]] = {}


def remove_reaction(sync: Callable[..., Any]) -> bool:
    """Remove the declared reaction that ``@synchronization(when=...)`` made of ``sync``.

    ``sync`` is the decorated function (or the function it decorated). Afterwards the
    action no longer calls it; calling ``sync`` directly still works as a plain
    synchronization. Meant for tests that declare reactions and must not leak them into
    the next test.

    Returns:
        True if a reaction was removed, False if ``sync`` was not (or no longer) one.
    """
    func = getattr(sync, "__wrapped__", sync)
    removed = False
    for reactions in list(REACTIONS.values()):
        kept = [r for r in reactions if r.func is not func and r.func is not sync]
        if len(kept) != len(reactions):
            reactions[:] = kept  # in place: ActionSpecs hold these very lists
            removed = True
    return removed


def reactions_snapshot() -> dict[str, list[Reaction]]:
    """A copy of the whole reaction registry, for ``restore_reactions`` (test isolation)."""
    return {key: list(reactions) for key, reactions in REACTIONS.items()}


def restore_reactions(snapshot: dict[str, list[Reaction]]) -> None:
    """Put the registry back as ``reactions_snapshot`` saw it: later declarations go."""
    for key, reactions in list(REACTIONS.items()):
        reactions[:] = snapshot.get(key, [])
    for key, reactions in snapshot.items():
        REACTIONS.setdefault(key, []).extend(r for r in reactions if r not in REACTIONS[key])


def _admitted(
    spec: ActionSpec, reaction: Reaction, record: ActionRecord, depth: int, part: FlowPart,
    rec: Record,
) -> bool:
    """Whether ``reaction`` runs (its ``where`` holds); past the depth limit or near the
    stack's end, the cascade is cut instead (``ReactionLimitError``)."""
    if reaction.where is not None and not reaction.where(record):
        return False
    limit = part.recorder.max_reaction_depth
    if depth >= limit or _stack_nearly_full():
        raise _cut_cascade(spec, reaction, depth, limit, part, rec)
    return True


def _cut_cascade(
    spec: ActionSpec, reaction: Reaction, depth: int, limit: int, part: FlowPart, rec: Record
) -> ReactionLimitError:
    """The error that stops a cascade at ``reaction``, its cut recorded (``_record_cut``)."""
    why = (f"max_reaction_depth={limit}" if depth >= limit else
           f"the interpreter's stack (sys.getrecursionlimit()={sys.getrecursionlimit()})")
    error = ReactionLimitError(
        f"declared reactions nested deeper than {why} "
        f"(at {reaction.name!r} reacting to {spec.key!r}, depth {depth})"
    )
    _record_cut(part, rec, reaction.name, error)
    return error


_STACK_MARGIN = 150  # frames kept free for recording the cut and unwinding


def _stack_nearly_full() -> bool:
    """Whether the stack is within _STACK_MARGIN frames of the recursion limit.

    A max_reaction_depth above what the stack holds must still end in ReactionLimitError,
    not RecursionError. Walking to that frame is O(depth), paid once per reaction.
    """
    try:
        sys._getframe(max(0, sys.getrecursionlimit() - _STACK_MARGIN))
    except ValueError:
        return False
    return True


_LIMIT_SPEC = Named("actiontrace", "reaction_limit")


def _record_cut(part: FlowPart, rec: Record, sync_name: str, error: BaseException) -> None:
    """Leave an error record where a runaway cascade was stopped, caused by its trigger.

    The triggering action's own record stays ``ok`` (docs/reference.md, Decorators), so without this a
    cascade cut short in a flow an action started for itself would leave no trace.
    """
    now = _ids.perf_ns()
    aid = _ids.local_counter.__next__()
    limit = part.recorder.max_reaction_depth
    inputs = capture_value({"synchronization": sync_name, "limit": limit}, settings.redactor)
    part.records.append(new_record(
        _LIMIT_SPEC, aid, rec[PARENT], now, 0, "error", inputs,
        capture_error(error, settings.redactor),
    ))
    part.edge_log.append((rec[ID], aid, sync_name, now))


def _enter_reaction(
    part: FlowPart, owner: Frame, name: str, rec: Record, depth: int
) -> Frame | None:
    """Enter a reaction's frame; return the frame to go back to (``_leave_frame``)."""
    cur, last = state()
    frame_var.set((sync_frame(part, owner, name, rec[ID], depth + 1), last))
    return cur


def leave_frame(cur: Frame | None) -> None:
    """Back to ``cur`` after a synchronization frame, keeping what completed inside.

    Synchronization frames are transparent: an action completed inside counts as
    completed in the enclosing action, so the context's "last completed" is kept.
    """
    frame_var.set((cur, state()[1]))


def react(spec: ActionSpec, rec: Record, part: FlowPart, owner: Frame, depth: int) -> None:
    """Run the declared reactions to a sync action that just succeeded."""
    # What _admitted, _enter_reaction and leave_frame do (react_async calls them), inline:
    # three calls fewer (callgrind, per reaction run: ~2,100 instructions fewer with a
    # generator in _admitted's place; a seed-shaped request runs one).
    record = part.record_of(rec, owner)  # owner: the frame it was called in
    limit = part.recorder.max_reaction_depth
    for reaction in list(spec.reactions):
        if reaction.where is not None and not reaction.where(record):
            continue
        if depth >= limit or _stack_nearly_full():
            raise _cut_cascade(spec, reaction, depth, limit, part, rec)
        cur: Any = frame_var.get()
        if cur.__class__ is tuple:
            cur, last = cur
        else:
            last = None
        frame_var.set((sync_frame(part, owner, reaction.name, rec[ID], depth + 1), last))
        try:
            result = reaction.func(record)
        finally:  # back to cur, keeping what completed inside
            done: Any = frame_var.get()
            if done.__class__ is tuple:
                _, last = done
                frame_var.set((cur, last))
            else:
                frame_var.set((cur, None))
        # Most reactions return None: inspect.isawaitable(None) cost ~3,800 instructions.
        if result is not None and inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"reaction {reaction.name!r} is async but {spec.key!r} is a sync action: "
                "reactions to a sync action must be sync functions"
            )


async def react_async(
    spec: ActionSpec, rec: Record, part: FlowPart, owner: Frame, depth: int
) -> None:
    """Run the declared reactions to an async action; they may be sync or async."""
    record = part.record_of(rec, owner)  # owner: the frame it was called in
    for reaction in list(spec.reactions):
        if not _admitted(spec, reaction, record, depth, part, rec):
            continue
        back = _enter_reaction(part, owner, reaction.name, rec, depth)
        try:
            result = reaction.func(record)
            if result is not None and inspect.isawaitable(result):
                await result
        finally:
            leave_frame(back)
