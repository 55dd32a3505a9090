"""Generator actions: one action over the whole iteration.

A generator's body runs at each next()/send(), wherever the consumer is, so the wrapper
drives the generator itself: before each resume it makes the action the current frame
(with the action's own "last completed"), after it puts the consumer's context back.
The action starts at the first next() (the body's first line runs then) and ends when
the generator is exhausted (ok, outputs: its return value), closed early (ok, null),
or raises (error). Not on the hot path: generic *args wrappers are enough here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actiontrace._state import current_recorder, recording_enabled
from actiontrace.recording import _ids
from actiontrace.recording._calls import capture_inputs, end_auto_flow
from actiontrace.recording._capture import capture_error, capture_value
from actiontrace.recording._context import current_frame, frame_var, state
from actiontrace.recording._layout import (
    DEPTH,
    DURATION,
    ID,
    OUTPUTS,
    OWNER,
    PART,
    RUNNING,
    START,
    STATUS,
    SYNC,
    TRIGGER,
    base_frame,
    new_record,
)
from actiontrace.recording._reactions import react, react_async

if TYPE_CHECKING:
    from actiontrace.recording._decorators import ActionSpec

__all__ = ["Iteration", "async_generator_wrapper", "generator_wrapper"]


class Iteration:
    """The record of one generator action and the frame it was called in."""

    __slots__ = ("auto", "closing", "cur", "inner_last", "owner", "part", "pending", "rec",
                 "sent")

    def __init__(self, spec: ActionSpec, args: Any, kwargs: Any) -> None:
        cur = current_frame()
        self.auto = cur is None
        if cur is None:  # no flow: the iteration is a flow of its own
            cur = base_frame(current_recorder().open_part(_ids.new_id(), None, _ids.now_us()))
        part = self.part = cur[PART]
        owner = self.owner = cur[OWNER] or cur
        self.cur = cur
        self.inner_last: int | None = None
        self.sent: Any = None  # what the consumer sent in, for the next resume
        self.pending: BaseException | None = None  # what it threw in, for the next resume
        self.closing = False  # the consumer closed the generator
        aid = _ids.local_counter.__next__()
        inputs = capture_inputs(spec, args, kwargs)
        t0 = _ids.perf_ns()
        self.rec = new_record(spec, aid, owner[ID], t0, None, RUNNING, inputs, None, part, None,
                              None, None, cur[DEPTH])
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
        rec[DURATION] = _ids.perf_ns() - rec[START]
        if exc is not None:
            rec[OUTPUTS], rec[STATUS] = capture_error(exc, spec.redactor), "error"
        else:
            rec[OUTPUTS], rec[STATUS] = capture_value(result, spec.redactor), "ok"
        if not self.auto and current_frame() is self.cur:
            frame_var.set((self.cur, rec[ID]))  # completed here, in the consumer's context

    def _exhausted(self, spec: ActionSpec, result: Any) -> Any:
        """Record ``result``; in a flow of its own, set the flow's frame for the reactions."""
        self.finish(spec, result, None)
        return frame_var.set((self.cur, self.rec[ID])) if self.auto else None

    def succeeded(self, spec: ActionSpec, result: Any) -> None:
        """Exhausted: record ``result``, run the declared reactions, end an own flow."""
        token = self._exhausted(spec, result)
        try:
            if spec.reactions:
                react(spec, self.rec, self.part, self.owner, self.cur[DEPTH])
        finally:
            self.end(token)

    async def succeeded_async(self, spec: ActionSpec) -> None:
        """``succeeded`` for an async generator, whose reactions may be async."""
        token = self._exhausted(spec, None)
        try:
            if spec.reactions:
                await react_async(spec, self.rec, self.part, self.owner, self.cur[DEPTH])
        finally:
            self.end(token)

    def end(self, token: Any) -> None:
        """End the flow the iteration started for itself, if it did."""
        if self.auto:
            if token is not None:
                frame_var.reset(token)
            end_auto_flow(self.part)

    def step(self, resume: Callable[..., Any], arg: Any) -> Any:
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


def generator_wrapper(spec: ActionSpec) -> Callable[..., Any]:
    func = spec.func

    def generator_action(*args: Any, **kwargs: Any) -> Any:
        if not recording_enabled():
            return (yield from func(*args, **kwargs))
        try:
            it = Iteration(spec, args, kwargs)
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


def async_generator_wrapper(spec: ActionSpec) -> Callable[..., Any]:
    func = spec.func

    async def async_generator_action(*args: Any, **kwargs: Any) -> Any:
        it = None
        if recording_enabled():
            try:
                it = Iteration(spec, args, kwargs)
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
