"""``@concept``, ``@action`` and ``@synchronization``: capture calls and their causes.

The per-call work of ``@action`` is one generated wrapper per decorated function. The
same template is rendered twice, once plain and once ``async def`` with ``await``, so
an async action's timing, error capture and context reset wrap the awaited body, not
the creation of the coroutine.

Why not ``wrapt`` (which the contract names): a ``wrapt.FunctionWrapper`` costs ~550 ns per
call on our machines before the wrapper does anything, against ~120 ns for a plain
function wrapper, i.e. more than a third of the 1.5 µs budget for the whole recording
(docs/performance.md). Plain wrappers keep what wrapt would give us: they bind as
methods, ``functools.update_wrapper`` keeps the name, docstring, ``__wrapped__`` and so
``inspect.signature``, and an async wrapper is still a coroutine function.
``classmethod`` and ``staticmethod`` objects are unwrapped and wrapped again.
"""

from __future__ import annotations

import functools
import inspect
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

import msgspec

from actiontrace import _ids
from actiontrace._capture import (
    capture_error,
    capture_fallback,
    capture_value,
    encode,
    make_binder,
    settings,
    signature_parts,
)
from actiontrace._context import (
    DEPTH,
    ID,
    OWNER,
    PART,
    SYNC,
    TRIGGER,
    base_frame,
    current_frame,
    current_recorder,
    frame_var,
    on_change,
    recording_enabled,
    state,
    sync_frame,
)
from actiontrace._exceptions import ReactionLimitError
from actiontrace._model import ActionRecord
from actiontrace._record import RUNNING, Named, record_from_row

__all__ = ["ActionSpec", "action", "concept", "synchronization"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
SPEC_ATTR = "__actiontrace_spec__"


class Reaction:
    """A declared reaction: ``func(record)`` runs after a matching action succeeds."""

    __slots__ = ("func", "is_async", "name", "where")

    def __init__(self, name: str, func: Callable[..., Any], where: Callable[..., Any] | None):
        self.name = name
        self.func = func
        self.where = where
        self.is_async = inspect.iscoroutinefunction(func)


def _kind(func: Callable[..., Any]) -> str:
    """``"sync"``, ``"async"``, ``"generator"`` or ``"asyncgen"``: how a call runs."""
    probe = func
    if not (inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func)
            or isinstance(func, functools.partial)):
        probe = type(func).__call__  # a callable object: what its calls run
    if inspect.isasyncgenfunction(probe):
        return "asyncgen"
    if inspect.isgeneratorfunction(probe):
        return "generator"
    if inspect.iscoroutinefunction(probe):
        return "async"
    return "sync"


_SPECS: weakref.WeakSet[ActionSpec] = weakref.WeakSet()


def refresh_all_redaction() -> None:
    """Apply a changed ``configure(redact=...)`` to every action decorated so far."""
    for spec in list(_SPECS):
        spec.refresh_redaction()


# Reactions by "concept_uri::action"; an ActionSpec holds the list for its own key, so a
# reaction declared after the action is seen by it without any per-call lookup.
_REACTIONS: dict[str, list[Reaction]] = {}


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
    for reactions in list(_REACTIONS.values()):
        kept = [r for r in reactions if r.func is not func and r.func is not sync]
        if len(kept) != len(reactions):
            reactions[:] = kept  # in place: ActionSpecs hold these very lists
            removed = True
    return removed


def reactions_snapshot() -> dict[str, list[Reaction]]:
    """A copy of the whole reaction registry, for ``restore_reactions`` (test isolation)."""
    return {key: list(reactions) for key, reactions in _REACTIONS.items()}


def restore_reactions(snapshot: dict[str, list[Reaction]]) -> None:
    """Put the registry back as ``reactions_snapshot`` saw it: later declarations go."""
    for key, reactions in list(_REACTIONS.items()):
        reactions[:] = snapshot.get(key, [])
    for key, reactions in snapshot.items():
        _REACTIONS.setdefault(key, []).extend(r for r in reactions if r not in _REACTIONS[key])


class ActionSpec:
    """What a decorated action is: its names, redaction and reactions."""

    __slots__ = (
        "__weakref__",
        "bind",
        "concept_uri",
        "drop_first",
        "explicit_concept",
        "extra_redact",
        "func",
        "is_async",
        "kind",
        "name",
        "reactions",
        "redactor",
        "wrapper",
    )

    def __init__(
        self, func: Callable[..., Any], concept_uri: str, name: str, explicit: bool,
        drop_first: bool, extra_redact: tuple[str, ...],
    ) -> None:
        self.func = func
        self.concept_uri = concept_uri
        self.name = name
        self.explicit_concept = explicit
        self.kind = _kind(func)
        self.is_async = self.kind in ("async", "asyncgen")  # reactions may be async
        self.drop_first = drop_first
        self.extra_redact = extra_redact
        self.reactions = _REACTIONS.setdefault(self.key, [])
        self.wrapper: Callable[..., Any] | None = None
        self.refresh_redaction()
        _SPECS.add(self)

    def refresh_redaction(self) -> None:
        """(Re)build the redactor, binder and wrapper code from the global settings.

        Secret parameter names are compiled into the wrapper, so a later
        ``configure(redact=...)`` recompiles it and swaps its ``__code__``: the
        decorated object that classes and modules already hold stays the same.
        """
        base = settings.redactor
        self.redactor = base.extended(self.extra_redact) if self.extra_redact else base
        self.bind = make_binder(self.func, self.drop_first, self.redactor)  # slow paths
        if self.wrapper is not None and self.kind in ("sync", "async"):
            fresh = _build_wrapper(self)
            self.wrapper.__code__ = fresh.__code__

    @property
    def key(self) -> str:
        return f"{self.concept_uri}::{self.name}"

    def rename_concept(self, concept_uri: str) -> None:
        """Move to a new concept URI, keeping the reactions already declared."""
        old = self.reactions
        self.concept_uri = concept_uri
        self.reactions = _REACTIONS.setdefault(self.key, [])
        self.reactions.extend(r for r in old if r not in self.reactions)


# --- the hot path -----------------------------------------------------------------------

# Shared globals of every generated wrapper; refreshed after fork (the id generator is
# reseeded there). Globals of one dict are cheaper to read than module attributes.
_HOT: dict[str, Any] = {}


def _refresh_hot() -> None:
    _HOT.update(
        _at_disabled=not recording_enabled(),
        _at_get=frame_var.get,
        _at_set=frame_var.set,
        _at_tuple=tuple,
        _at_perf=_ids.perf_ns,
        _at_next=_ids.local_counter.__next__,
        _at_encode=encode,
        _at_capture_value=capture_value,
        _at_capture_error=capture_error,
        _at_capture_inputs=_capture_inputs,
        _at_react=_react,
        _at_react_async=_react_async,
    )


# The wrapper is generated per action with the action's own signature, so Python binds
# the arguments (defaults, keywords, *args, **kwargs) in the call itself and the inputs
# dict is built from locals: no *args/**kwargs packing, no separate binder call. Per
# call it does two encodes, one list, one append and a context switch; ids are a local
# sequence number and times raw perf_counter_ns, converted later by FlowPart.rows(),
# which also redacts nested secret keys and cuts oversized values off this thread.
# Callgrind counts (docs/performance.md) drove each choice: `b"{" in data` raised and
# swallowed a TypeError per call (~1,800 instructions), `bytes.find` parses its
# arguments the slow way (~700), and building a UUIDv7 int here cost ~750.
# Concurrency (docs/concepts.md): the call ends by *setting* (enclosing frame, own id),
# the context-local "most recently completed", where it used to reset the context and
# write the id into the enclosing frame, a slot that sibling asyncio tasks shared. The
# set costs a Token (and a lookup of the old value) and the pair a small tuple; the
# frame is set bare at the start, a tuple there cost ~100 more. Callgrind, per call
# recorded in flows of 1,000, writer parked: 11,050-11,170 -> ~11,600 instructions
# (~+500, ~70 ns at this machine's ~7 instructions/ns; docs/performance.md).
# Names are prefixed _at_ so they cannot collide with the action's parameters.
#
# {SIG} the action's parameters; {INPUTS} the inputs dict; {CALL} the arguments passed
# on; {ARGS}/{KWARGS} the same packed for the auto-flow path.
_TEMPLATE = """
def _at_make(_at_spec, _at_func, _at_auto, _at_In):
    {ASYNC}def _at_wrapper({SIG}):
        if _at_disabled:
            return {AWAIT}_at_func({CALL})
        _at_cur = _at_get()
        if _at_cur.__class__ is _at_tuple:  # (frame, last completed) - see _context
            _at_cur = _at_cur[0]
        if _at_cur is None:
            return {AWAIT}_at_auto(_at_wrapper, _at_func, {ARGS}, {KWARGS})
        _at_part = _at_cur[8]
        _at_owner = _at_cur[9] or _at_cur
        _at_id = _at_next()
        try:
            _at_in = _at_encode({INPUTS})
        except BaseException:  # noqa: BLE001 - tracing never raises into the app
            _at_in = _at_capture_inputs(_at_spec, {ARGS}, {KWARGS})
        _at_t0 = _at_perf()
        # The record, which is also this call's frame (see _context for the layout).
        _at_rec = [_at_spec, _at_id, _at_owner[1], _at_t0, None, "running", _at_in, None,
                   _at_part, None, None, None, _at_cur[12]]
        _at_part.records.append(_at_rec)
        if _at_cur[10] is not None:
            _at_part.edge_log.append((_at_cur[11], _at_id, _at_cur[10], _at_t0))
        _at_set(_at_rec)
        try:
            _at_result = {AWAIT}_at_func({CALL})
        except BaseException as _at_exc:  # noqa: BLE001 - tracing never raises into the app
            _at_rec[4] = _at_perf() - _at_t0
            _at_rec[7] = _at_capture_error(_at_exc, _at_spec.redactor)
            _at_rec[5] = "error"
            raise
        finally:
            _at_set((_at_cur, _at_id))
        _at_rec[4] = _at_perf() - _at_t0
        try:
            _at_rec[7] = _at_encode(_at_result)
        except BaseException:  # noqa: BLE001 - tracing never raises into the app
            _at_rec[7] = _at_capture_value(_at_result, _at_spec.redactor)
        _at_rec[5] = "ok"
        if _at_spec.reactions:
            {AWAIT}_at_react{SUFFIX}(_at_spec, _at_rec, _at_part, _at_owner, _at_cur[12])
        return _at_result
    return _at_wrapper
"""

_GENERIC = {"SIG": "*args, **kwargs", "INPUTS": "_at_spec.bind(*args, **kwargs)",
            "CALL": "*args, **kwargs", "ARGS": "args", "KWARGS": "kwargs"}


def _signature_parts(spec: ActionSpec) -> dict[str, Any] | None:
    """The template's fragments for ``spec.func``'s signature, or None to use *args."""
    parts = signature_parts(spec.func, spec.drop_first, spec.redactor)
    if parts is None or any(f.startswith("_at_") for f in (*parts.fields, *parts.positional)):
        return None
    if any(k.startswith(("_at_", "**_at_", "*_at_")) for k in parts.keyword):
        return None
    names = [k.split("=")[0] for k in parts.keyword if not k.startswith("**")]
    packed = [f"{n!r}: {n}" for n in names] + [k for k in parts.keyword if k.startswith("**")]
    return {
        "SIG": parts.params,
        "FIELDS": parts.fields,
        "VALUES": parts.values,
        "DEFAULTS": parts.defaults,
        "CALL": ", ".join(parts.positional + parts.keyword),
        "ARGS": "(" + "".join(f"{a}, " for a in parts.positional) + ")",
        "KWARGS": "{" + ", ".join(packed) + "}",
    }


_BUILD_LOCK = threading.Lock()


def _build_wrapper(spec: ActionSpec) -> Callable[..., Any]:
    parts = _signature_parts(spec)
    inputs_type = None
    if parts is None:
        parts = _GENERIC
    else:
        # The inputs are built as a msgspec Struct whose fields are the parameters: built
        # in C and encoded with precomputed field names, ~90 ns against ~140 ns for a dict.
        try:
            inputs_type = msgspec.defstruct("Inputs", parts["FIELDS"], gc=False)
            inputs = "_at_In(" + ", ".join(parts["VALUES"]) + ")"
        except (TypeError, ValueError):  # a name msgspec refuses: build a dict instead
            pairs = zip(parts["FIELDS"], parts["VALUES"], strict=True)
            inputs = "{" + ", ".join(f"{f!r}: {v}" for f, v in pairs) + "}"
        parts = {**parts, "INPUTS": inputs}
    source = _TEMPLATE.format(
        ASYNC="async " if spec.is_async else "",
        AWAIT="await " if spec.is_async else "",
        SUFFIX="_async" if spec.is_async else "",
        **parts,
    )
    defaults = parts.get("DEFAULTS", {})
    # Every wrapper shares _HOT as its globals, so a flag set there (enabled/disabled)
    # is seen by all of them at once. Defaults are bound when the def executes, so
    # their names can be reused and removed right after.
    auto = _auto_flow_async if spec.is_async else _auto_flow
    with _BUILD_LOCK:
        _HOT.update(defaults)
        try:
            exec(source, _HOT)  # built from our template and checked identifiers
            make = _HOT.pop("_at_make")
            wrapper: Callable[..., Any] = make(spec, spec.func, auto, inputs_type)
        finally:
            for name in defaults:
                _HOT.pop(name, None)
    return wrapper


def _capture_inputs(spec: ActionSpec, args: Any, kwargs: Any) -> bytes:
    try:
        return capture_value(spec.bind(*args, **kwargs), spec.redactor, inputs=True)
    except BaseException:  # noqa: BLE001 - the call does not match the signature (it will raise itself)
        return capture_fallback(args, kwargs, spec.redactor)


def _auto_flow(wrapper: Callable[..., Any], func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run a root action (no flow active) in a flow of its own."""
    try:
        part = current_recorder()._open(_ids.new_id(), None, _ids.now_us())
        token = frame_var.set((base_frame(part), None))
    except BaseException:  # noqa: BLE001 - tracing must not stop the call
        return func(*args, **kwargs)
    try:
        return wrapper(*args, **kwargs)
    finally:
        frame_var.reset(token)
        _end_auto_flow(part)


async def _auto_flow_async(
    wrapper: Callable[..., Any], func: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    try:
        part = current_recorder()._open(_ids.new_id(), None, _ids.now_us())
        token = frame_var.set((base_frame(part), None))
    except BaseException:  # noqa: BLE001 - tracing never raises into the app
        return await func(*args, **kwargs)
    try:
        return await wrapper(*args, **kwargs)
    finally:
        frame_var.reset(token)
        _end_auto_flow(part)


def _end_auto_flow(part: Any) -> None:
    if part.records:
        root = part.records[0]
        part.root_id = part.full_id(root)
        part.created_at = (root[3] + part.offset) // 1000
    part.sink._close(part)


def _record_of(rec: list[Any], part: Any, owner: list[Any]) -> ActionRecord:
    """The public (redacted) record of a raw record, for reactions.

    ``owner`` is the frame the action was called in: its parent.
    """
    return record_from_row(part.row_of(rec, owner))


def _reactions_to_run(  # type: ignore[no-untyped-def]
    spec: ActionSpec, record: ActionRecord, depth: int, part: Any, rec: list[Any]
):
    limit = part.sink.max_reaction_depth
    for reaction in list(spec.reactions):
        if reaction.where is not None and not reaction.where(record):
            continue
        if depth >= limit or _stack_nearly_full():
            why = (f"max_reaction_depth={limit}" if depth >= limit else
                   f"the interpreter's stack (sys.getrecursionlimit()={sys.getrecursionlimit()})")
            error = ReactionLimitError(
                f"declared reactions nested deeper than {why} "
                f"(at {reaction.name!r} reacting to {spec.key!r}, depth {depth})"
            )
            _record_cut(part, rec, reaction.name, error)
            raise error
        yield reaction


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


def _record_cut(part: Any, rec: list[Any], sync_name: str, error: BaseException) -> None:
    """Leave an error record where a runaway cascade was stopped, caused by its trigger.

    The triggering action's own record stays ``ok`` (docs/reference.md, Decorators), so without this a
    cascade cut short in a flow an action started for itself would leave no trace.
    """
    now = _ids.perf_ns()
    aid = _ids.local_counter.__next__()
    limit = part.sink.max_reaction_depth
    inputs = capture_value({"synchronization": sync_name, "limit": limit}, settings.redactor)
    part.records.append([
        _LIMIT_SPEC, aid, rec[2], now, 0, "error", inputs,
        capture_error(error, settings.redactor),
    ])
    part.edge_log.append((rec[1], aid, sync_name, now))


def _enter_reaction(
    part: Any, owner: list[Any], name: str, rec: list[Any], depth: int
) -> list[Any] | None:
    """Enter a reaction's frame; return the frame to go back to (``_leave_frame``)."""
    cur, last = state()
    frame_var.set((sync_frame(part, owner, name, rec[1], depth + 1), last))
    return cur


def _leave_frame(cur: list[Any] | None) -> None:
    """Back to ``cur`` after a synchronization frame, keeping what completed inside.

    Synchronization frames are transparent: an action completed inside counts as
    completed in the enclosing action, so the context's "last completed" is kept.
    """
    frame_var.set((cur, state()[1]))


def _react(spec: ActionSpec, rec: list[Any], part: Any, owner: list[Any], depth: int) -> None:
    """Run the declared reactions to a sync action that just succeeded."""
    record = _record_of(rec, part, owner)
    for reaction in _reactions_to_run(spec, record, depth, part, rec):
        back = _enter_reaction(part, owner, reaction.name, rec, depth)
        try:
            result = reaction.func(record)
        finally:
            _leave_frame(back)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"reaction {reaction.name!r} is async but {spec.key!r} is a sync action: "
                "reactions to a sync action must be sync functions"
            )


async def _react_async(
    spec: ActionSpec, rec: list[Any], part: Any, owner: list[Any], depth: int
) -> None:
    """Run the declared reactions to an async action; they may be sync or async."""
    record = _record_of(rec, part, owner)
    for reaction in _reactions_to_run(spec, record, depth, part, rec):
        back = _enter_reaction(part, owner, reaction.name, rec, depth)
        try:
            result = reaction.func(record)
            if inspect.isawaitable(result):
                await result
        finally:
            _leave_frame(back)


# --- generators: one action over the whole iteration ---------------------------------------
#
# A generator's body runs at each next()/send(), wherever the consumer is, so the wrapper
# drives the generator itself: before each resume it makes the action the current frame
# (with the action's own "last completed"), after it puts the consumer's context back.
# The action starts at the first next() (the body's first line runs then) and ends when
# the generator is exhausted (ok, outputs: its return value), closed early (ok, null),
# or raises (error). Not on the hot path: generic *args wrappers are enough here.


class _Iteration:
    """The record of one generator action and the frame it was called in."""

    __slots__ = ("auto", "closing", "cur", "inner_last", "owner", "part", "pending", "rec",
                 "sent")

    def __init__(self, spec: ActionSpec, args: Any, kwargs: Any) -> None:
        cur = current_frame()
        self.auto = cur is None
        if cur is None:  # no flow: the iteration is a flow of its own
            cur = base_frame(current_recorder()._open(_ids.new_id(), None, _ids.now_us()))
        part = self.part = cur[PART]
        owner = self.owner = cur[OWNER] or cur
        self.cur = cur
        self.inner_last: int | None = None
        self.sent: Any = None  # what the consumer sent in, for the next resume
        self.pending: BaseException | None = None  # what it threw in, for the next resume
        self.closing = False  # the consumer closed the generator
        aid = _ids.local_counter.__next__()
        inputs = _capture_inputs(spec, args, kwargs)
        t0 = _ids.perf_ns()
        self.rec = [spec, aid, owner[ID], t0, None, RUNNING, inputs, None, part, None, None,
                    None, cur[DEPTH]]
        part.records.append(self.rec)
        if cur[SYNC] is not None:
            part.edge_log.append((cur[TRIGGER], aid, cur[SYNC], t0))

    def enter(self) -> Any:
        """Make the action the current frame for one resume of the body."""
        return frame_var.set((self.rec, self.inner_last))

    def leave(self, token: Any) -> None:
        """Back to the consumer's context, keeping what completed inside the body."""
        self.inner_last = state()[1]
        try:
            frame_var.reset(token)
        except ValueError:  # pragma: no cover - the body switched contexts under us
            frame_var.set((self.cur, None))

    def finish(self, spec: ActionSpec, result: Any, exc: BaseException | None) -> None:
        rec = self.rec
        rec[4] = _ids.perf_ns() - rec[3]
        if exc is not None:
            rec[7], rec[5] = capture_error(exc, spec.redactor), "error"
        else:
            rec[7], rec[5] = capture_value(result, spec.redactor), "ok"
        if not self.auto and current_frame() is self.cur:
            frame_var.set((self.cur, rec[1]))  # completed here, in the consumer's context

    def _exhausted(self, spec: ActionSpec, result: Any) -> Any:
        """Record ``result``; in a flow of its own, set the flow's frame for the reactions."""
        self.finish(spec, result, None)
        return frame_var.set((self.cur, self.rec[1])) if self.auto else None

    def succeeded(self, spec: ActionSpec, result: Any) -> None:
        """Exhausted: record ``result``, run the declared reactions, end an own flow."""
        token = self._exhausted(spec, result)
        try:
            if spec.reactions:
                _react(spec, self.rec, self.part, self.owner, self.cur[DEPTH])
        finally:
            self.end(token)

    async def succeeded_async(self, spec: ActionSpec) -> None:
        """``succeeded`` for an async generator, whose reactions may be async."""
        token = self._exhausted(spec, None)
        try:
            if spec.reactions:
                await _react_async(spec, self.rec, self.part, self.owner, self.cur[DEPTH])
        finally:
            self.end(token)

    def end(self, token: Any) -> None:
        """End the flow the iteration started for itself, if it did."""
        if self.auto:
            if token is not None:
                frame_var.reset(token)
            _end_auto_flow(self.part)

    def step(self, resume: Callable[[Any], Any], arg: Any) -> Any:
        """Resume the body (``gen.send``, ``gen.throw``, ``gen.close``) as the action."""
        token = self.enter()
        try:
            return resume(arg) if arg is not _NOTHING else resume()
        finally:
            self.leave(token)

    def failed(self, spec: ActionSpec, exc: BaseException) -> None:
        """The iteration ended by an exception: the action's error, or closed early.

        Closed early (GeneratorExit from close()/aclose()): ok, and no reactions, since
        it did not return. Anything else raised while iterating is the action's error.
        """
        closed = self.closing and isinstance(exc, GeneratorExit)
        self.finish(spec, None, None if closed else exc)
        self.end(None)


_NOTHING = object()


def _generator_wrapper(spec: ActionSpec) -> Callable[..., Any]:
    func = spec.func

    def generator_action(*args: Any, **kwargs: Any) -> Any:
        if not recording_enabled():
            return (yield from func(*args, **kwargs))
        try:
            it = _Iteration(spec, args, kwargs)
        except BaseException:  # noqa: BLE001 - tracing never raises into the app
            return (yield from func(*args, **kwargs))
        try:
            gen = it.step(lambda _: func(*args, **kwargs), None)
            while True:
                try:
                    if it.pending is None:
                        value = it.step(gen.send, it.sent)
                    else:
                        value, it.pending = it.step(gen.throw, it.pending), None
                except StopIteration as stop:
                    result = stop.value
                    break
                try:
                    it.sent = yield value
                except GeneratorExit:
                    it.closing = True
                    it.step(gen.close, _NOTHING)
                    raise
                except BaseException as exc:  # noqa: BLE001 - thrown in: passed on to the body
                    it.pending = exc
        except BaseException as exc:
            it.failed(spec, exc)
            raise
        it.succeeded(spec, result)
        return result

    return generator_action


def _async_generator_wrapper(spec: ActionSpec) -> Callable[..., Any]:
    func = spec.func

    async def async_generator_action(*args: Any, **kwargs: Any) -> Any:
        it = None
        if recording_enabled():
            try:
                it = _Iteration(spec, args, kwargs)
            except BaseException:  # noqa: BLE001 - tracing never raises into the app
                it = None
        if it is None:
            async for item in func(*args, **kwargs):
                yield item
            return
        try:
            gen = it.step(lambda _: func(*args, **kwargs), None)
            while True:
                # The awaitable is awaited as the action: each resume is one set/reset.
                token = it.enter()
                try:
                    thrown = it.pending
                    value = await (gen.asend(it.sent) if thrown is None else gen.athrow(thrown))
                except StopAsyncIteration:
                    break
                finally:
                    it.pending = None
                    it.leave(token)
                try:
                    it.sent = yield value
                except BaseException as exc:  # thrown in: passed on to the body
                    if not isinstance(exc, GeneratorExit):
                        it.pending = exc
                        continue
                    it.closing = True  # aclose(): close the body too, as the action
                    token = it.enter()
                    try:
                        await gen.aclose()
                    finally:
                        it.leave(token)
                    raise
        except BaseException as exc:
            it.failed(spec, exc)
            raise
        await it.succeeded_async(spec)

    return async_generator_action


_refresh_hot()
os.register_at_fork(after_in_child=_refresh_hot)
on_change(_refresh_hot)
on_change(refresh_all_redaction)


# --- @action --------------------------------------------------------------------------


def _default_concept(func: Callable[..., Any]) -> tuple[str, bool]:
    """``"{module}::{ClassQualname}"`` for a method, ``"{module}"`` for a function."""
    module = getattr(func, "__module__", None) or "__main__"
    qualname = getattr(func, "__qualname__", "")
    owner, _, _ = qualname.rpartition(".")
    if owner and not owner.endswith("<locals>"):
        return f"{module}::{owner}", True
    return module, False


def _wrap_function(
    func: Callable[..., Any],
    name: str | None,
    concept_uri: str | None,
    redact: Iterable[str],
    bound_kind: str | None,
) -> Callable[..., Any]:
    default_uri, in_class = _default_concept(func)
    try:
        first = next(iter(inspect.signature(func).parameters.values()), None)
    except (TypeError, ValueError):
        first = None
    drop_first = (
        first is not None
        and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
        and (bound_kind == "classmethod" or (in_class and first.name in ("self", "cls")))
    )
    plain = inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func)
    default_name = getattr(func, "__name__", None)  # a callable object: its class's name
    spec = ActionSpec(
        func, concept_uri or default_uri, name or default_name or type(func).__name__,
        concept_uri is not None, drop_first, tuple(redact),
    )
    if spec.kind == "generator":
        wrapper: Callable[..., Any] = _generator_wrapper(spec)
    elif spec.kind == "asyncgen":
        wrapper = _async_generator_wrapper(spec)
    else:
        wrapper = _build_wrapper(spec)
    spec.wrapper = wrapper
    if plain:
        functools.update_wrapper(wrapper, func)
    else:  # a callable object: its class's name and doc, not a copy of its attributes
        functools.update_wrapper(wrapper, func, updated=())
        wrapper.__name__ = wrapper.__qualname__ = spec.name
    setattr(wrapper, SPEC_ATTR, spec)
    return wrapper


@overload
def action(func: F, /) -> F: ...
@overload
def action(
    name: str | None = None, /, *, concept: str | None = None, redact: Iterable[str] = ()
) -> Callable[[F], F]: ...
@overload
def action(
    *, name: str | None = None, concept: str | None = None, redact: Iterable[str] = ()
) -> Callable[[F], F]: ...


def action(  # type: ignore[misc]
    func_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    concept: str | None = None,
    redact: Iterable[str] = (),
) -> Any:
    """Record every call of the decorated function or method as an action.

    Usable bare (``@action``) or with options: ``@action("name")``,
    ``@action(name=..., concept=..., redact=[...])``. Works on functions, methods,
    ``classmethod``/``staticmethod`` objects, ``async def`` functions, generator and
    async generator functions (one action over the whole iteration) and callable
    objects (``action(obj)``; the name defaults to the object's class name). A class
    is refused with a ``TypeError``: decorate its methods instead.

    Args:
        name: the action's name (default: the function's ``__name__``).
        concept: the concept URI (default: the class's ``@concept`` URI, else
            ``"{module}::{ClassQualname}"`` for methods and ``"{module}"`` for functions).
        redact: more parameter and key names to store as ``"[REDACTED]"``.
    """
    if isinstance(func_or_name, str):
        if name is not None:
            raise TypeError("give the action's name once: @action('x') or @action(name='x')")
        name, func_or_name = func_or_name, None
    redact = (redact,) if isinstance(redact, str) else tuple(redact)

    def decorate(target: Any) -> Any:
        if isinstance(target, classmethod | staticmethod):
            kind = "classmethod" if isinstance(target, classmethod) else "staticmethod"
            inner = _wrap_function(target.__func__, name, concept, redact, kind)
            return type(target)(inner)
        if inspect.isclass(target):
            raise TypeError(
                f"@action decorates functions and methods, not the class {target.__name__}:"
                " decorate its methods (and name its concept with @concept)"
            )
        if not callable(target):
            raise TypeError(f"@action decorates functions and methods, not {target!r}")
        return _wrap_function(target, name, concept, redact, None)

    if func_or_name is None:
        return decorate
    return decorate(func_or_name)


def _spec_of(obj: Any) -> ActionSpec | None:
    if isinstance(obj, classmethod | staticmethod):
        obj = obj.__func__
    spec = getattr(obj, SPEC_ATTR, None)
    return spec if isinstance(spec, ActionSpec) else None


def concept(uri: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: the concept URI of the actions the class defines.

    Only the methods defined in the class body itself are named; an ``@action(concept=)``
    keeps its own URI, and a subclass's ``@concept`` does not rename inherited methods.
    """
    if not isinstance(uri, str) or not uri:
        raise TypeError("@concept needs a URI string, e.g. @concept('app::AudioPlayer')")

    def decorate(cls: type[T]) -> type[T]:
        for value in vars(cls).values():
            spec = _spec_of(value)
            if spec is not None and not spec.explicit_concept:
                spec.rename_concept(uri)
        cls.__concept_uri__ = uri  # type: ignore[attr-defined]
        return cls

    return decorate


# --- @synchronization ---------------------------------------------------------------------


def _direct_sync_frame(cur: list[Any], last: int | None, name: str) -> list[Any]:
    """The frame of a synchronization called directly inside ``cur`` (docs/reference.md,
    Decorators).

    ``last`` is the action most recently completed in ``cur``'s owner, in this context.
    """
    owner = cur[OWNER] or cur
    trigger = last
    if trigger is None:
        trigger = owner[ID]
    if trigger is None:  # a base frame: continue_flow's trigger, else the flow root
        trigger = cur[TRIGGER] if cur[TRIGGER] is not None else cur[PART].root_id
    return sync_frame(cur[PART], owner, name if trigger is not None else None, trigger, cur[DEPTH])


def _target_key(when: Any) -> tuple[str, ActionSpec | None]:
    if isinstance(when, str):
        if "::" not in when:
            raise ValueError(f"when={when!r}: expected 'concept_uri::action'")
        return when, None
    spec = _spec_of(when) or _spec_of(getattr(when, "__func__", None))
    if spec is None:
        raise TypeError(f"when={when!r} is not an @action (or a 'concept_uri::action' string)")
    return spec.key, spec


def synchronization(
    name_or_func: Any = None,
    /,
    *,
    name: str | None = None,
    when: Any = None,
    where: Callable[[ActionRecord], bool] | None = None,
) -> Any:
    """Mark a function (sync or async) as a synchronization between concepts.

    Every ``@action`` it calls directly gets a provenance edge from the synchronization's
    trigger (docs/reference.md, Decorators). With ``when=Concept.action`` (or ``"concept_uri::action"``) it
    is also a declared reaction: it is called with the triggering ``ActionRecord`` right
    after each successful matching action, when ``where(record)`` is true.

    Usable as ``@synchronization``, ``@synchronization("Name")`` or with keywords.
    """
    if isinstance(name_or_func, str):
        name, name_or_func = name_or_func, None

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@synchronization decorates functions, not {func!r}")
        sync_name = name or func.__name__
        if inspect.iscoroutinefunction(func):

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                cur, last = state()
                if cur is None:
                    return await func(*args, **kwargs)
                frame_var.set((_direct_sync_frame(cur, last, sync_name), last))
                try:
                    return await func(*args, **kwargs)
                finally:
                    _leave_frame(cur)

            wrapper: Callable[..., Any] = run_async
        else:

            def run(*args: Any, **kwargs: Any) -> Any:
                cur, last = state()
                if cur is None:
                    return func(*args, **kwargs)
                frame_var.set((_direct_sync_frame(cur, last, sync_name), last))
                try:
                    return func(*args, **kwargs)
                finally:
                    _leave_frame(cur)

            wrapper = run
        functools.update_wrapper(wrapper, func)
        wrapper.__synchronization__ = sync_name  # type: ignore[attr-defined]
        if when is not None:
            key, spec = _target_key(when)
            reaction = Reaction(sync_name, func, where)
            if spec is not None and not spec.is_async and reaction.is_async:
                raise TypeError(
                    f"reaction {sync_name!r} is async but {key!r} is a sync action: "
                    "reactions to a sync action must be sync functions"
                )
            (spec.reactions if spec is not None else _REACTIONS.setdefault(key, [])).append(
                reaction
            )
        return wrapper  # type: ignore[return-value]

    if name_or_func is not None:
        return decorate(name_or_func)
    return decorate
