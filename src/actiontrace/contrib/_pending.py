"""An ``@action`` that stays running while its caller does the work (the integrations).

A middleware or an HTTP client wrapper has no function body to decorate: the request
action starts when the request arrives, ends when the response has been sent (perhaps
after the server iterated a streamed WSGI body), and its outputs are known only then.
So the action is an ordinary ``@action`` ``async def`` whose body pauses at once: the
integration drives the coroutine by hand, ``start`` runs the wrapper up to the pause
(the record is appended, the call is now the innermost action of this context, a
synchronization's edge is added), and ``finish``/``fail`` resume it with the outputs or
throw the error in, so the wrapper records duration, status and outputs (or the error)
exactly as for any call, and runs declared reactions. Only the public ``@action`` is
used, so the recording path has one implementation.

The coroutine must be resumed in the context it was started in (the wrapper resets a
``ContextVar`` token): the ASGI middleware does both in one task, the WSGI middleware
runs the request and every step of its body in one ``contextvars.Context``.

Outside any flow the request is the root of a flow of its own, as for any ``@action``
called there; ``start`` opens that flow itself (``_calls.open_auto_flow``) and the last
step ends it, instead of letting the wrapper run ``auto_flow_async``: that helper is one
more coroutine (and one more wrapper call) that every step of the request went through
(callgrind, the ASGI middleware without trace headers: 80,300 -> 77,300 instructions per
request). ``RequestAction`` goes further for requests without declared reactions.
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from actiontrace._propagation import Remote, end_tracestate, join, pass_tracestate
from actiontrace._state import _Runtime, current_recorder, recording_enabled
from actiontrace.recording import _ids
from actiontrace.recording._calls import end_auto_flow, open_auto_flow
from actiontrace.recording._capture import capture_error, capture_value, encode
from actiontrace.recording._context import NO_FLOW, frame_var, reset_or_set
from actiontrace.recording._decorators import SPEC_ATTR, ActionSpec, action
from actiontrace.recording._layout import DURATION, OUTPUTS, PART, SPEC, START, STATUS
from actiontrace.recording._record import FlowPart

__all__ = ["Pending", "Request", "RequestAction", "pending_action", "start_request"]

log = logging.getLogger("actiontrace")


class _Pause:
    """Awaited by the body: hands control back to ``Pending.start``; its result is the outputs."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, Any, Any]:
        outputs = yield self
        return outputs


_PAUSE = _Pause()


async def _request_mp(method: str, path: str) -> Any:
    return await _PAUSE


async def _request_mpq(method: str, path: str, query: Any) -> Any:
    return await _PAUSE


async def _request_mu(method: str, url: str) -> Any:
    return await _PAUSE


_BODIES: dict[tuple[str, ...], Callable[..., Coroutine[Any, Any, Any]]] = {
    ("method", "path"): _request_mp,
    ("method", "path", "query"): _request_mpq,
    ("method", "url"): _request_mu,
}


def pending_action(concept: str, name: str, params: tuple[str, ...]) -> Callable[..., Any]:
    """An ``@action`` (``concept``, ``name``) whose inputs are ``params``, for ``Pending``."""
    return action(name=name, concept=concept)(_BODIES[params])


class Pending:
    """One running call of a ``pending_action``; ``start`` returns None if it cannot run.

    Tracing never stops the request: if the call cannot be started, ``start`` returns
    None and the integration goes on without recording it.
    """

    __slots__ = ("_coro", "_part", "_token")

    def __init__(self, coro: Any, part: FlowPart | None = None, token: Any = None) -> None:
        self._coro = coro
        self._part = part  # the flow ``start`` opened for the request (no flow was active)
        self._token = token

    @classmethod
    def start(cls, fn: Callable[..., Any], *inputs: Any) -> Pending | None:
        part = token = None
        try:
            if _outside_flow() and recording_enabled():
                part, token = open_auto_flow()
            coro = fn(*inputs)
            yielded = coro.send(None)
        except BaseException:
            log.debug("actiontrace: could not start a request action", exc_info=True)
            if part is not None:
                _end_flow(part, token)
            return None
        if yielded is not _PAUSE:  # cannot happen with our bodies; never leave it running
            coro.close()
            if part is not None:
                _end_flow(part, token)
            return None
        return cls(coro, part, token)

    def finish(self, outputs: Any) -> None:
        """End the call with ``outputs`` (declared reactions run here, synchronously)."""
        coro = self._coro
        try:
            try:
                yielded = coro.send(outputs)
            except StopIteration:
                return
            # An async reaction awaited real I/O, which a synchronous caller cannot drive.
            coro.close()
            raise RuntimeError(f"an async reaction awaited {yielded!r} after a synchronous request")
        finally:
            self._end()

    async def finish_async(self, outputs: Any) -> None:
        """End the call with ``outputs``; async declared reactions are awaited."""
        try:
            await _resume(self._coro, outputs)
        finally:
            self._end()

    def fail(self, exc: BaseException) -> None:
        """End the call with ``exc`` as its error (the caller re-raises it)."""
        try:
            try:
                self._coro.throw(exc)
            except BaseException as raised:
                if raised is not exc:
                    raise
            else:  # the body cannot swallow the error; close it to be sure nothing dangles
                self._coro.close()
        finally:
            self._end()

    def _end(self) -> None:
        part = self._part
        if part is not None:
            self._part = None
            _end_flow(part, self._token)


def _end_flow(part: FlowPart, token: Any) -> None:
    """Leave and end the flow ``Pending.start`` opened (what ``auto_flow`` does after the call)."""
    try:
        reset_or_set(token, NO_FLOW)
        end_auto_flow(part)
    except Exception:
        log.debug("actiontrace: could not end a request's flow", exc_info=True)


class RequestAction:
    """A request recorded without driving its action's coroutine (no declared reactions).

    What ``Pending`` records for a request (inputs, outputs, status, duration, the
    innermost action while the application runs), built directly: outside any flow as
    the root of a new flow, the way ``flow()`` builds its root (``Recorder.open_root``);
    from a remote caller as the one action of a new part of the caller's flow, with the
    edge from the caller's trigger (``Recorder.open_joined``, what ``continue_flow``
    plus a call in it record) and the ``tracestate`` passed on. Only for an action
    without declared reactions (``start_request`` checks on every request): reactions
    run in the action's wrapper. Callgrind, the ASGI middleware per request: no trace
    headers 76,300 -> 60,300 instructions, our headers 102,300 -> 84,600.
    """

    __slots__ = ("_prev", "_rec", "_reset", "_state_reset")

    def __init__(self, spec: ActionSpec, inputs: dict[str, Any], remote: Remote | None) -> None:
        try:
            data = encode(inputs)
        except Exception:  # noqa: BLE001 - what the wrapper's capture_inputs would give
            data = capture_value(inputs, spec.redactor, inputs=True)
        recorder = _Runtime.recorder or current_recorder()
        self._state_reset = None
        if remote is None:
            rec = recorder.open_root(spec, data)
        else:
            token, trigger, sync, state = remote
            rec = recorder.open_joined(spec, data, token, trigger, sync or "remote")
            if state is not None:
                self._state_reset = pass_tracestate(token, state)
        self._rec = rec
        self._prev = frame_var.get()
        self._reset = frame_var.set(rec)  # a bare frame: nothing completed yet

    def finish(self, outputs: Any) -> None:
        """End the request with ``outputs``."""
        rec = self._rec
        rec[DURATION] = _ids.perf_ns() - rec[START]
        try:
            rec[OUTPUTS] = encode(outputs)
        except Exception:  # noqa: BLE001 - tracing never raises into the request
            rec[OUTPUTS] = capture_value(outputs, rec[SPEC].redactor)
        rec[STATUS] = "ok"
        self._close()

    async def finish_async(self, outputs: Any) -> None:
        """``finish`` (no reactions to await: ``start_request`` sees to that)."""
        self.finish(outputs)

    def fail(self, exc: BaseException) -> None:
        """End the request with ``exc`` as its error (the caller re-raises it)."""
        rec = self._rec
        rec[DURATION] = _ids.perf_ns() - rec[START]
        rec[OUTPUTS] = capture_error(exc, rec[SPEC].redactor)
        rec[STATUS] = "error"
        self._close()

    def _close(self) -> None:
        try:
            reset_or_set(self._reset, self._prev)
            if self._state_reset is not None:
                end_tracestate(self._state_reset)
            part = self._rec[PART]
            part.recorder.close_part(part)
        except Exception:
            log.debug("actiontrace: could not end a request action", exc_info=True)


class _Joined:
    """A ``Pending`` request (or none) inside ``join(remote)``, left when it ends."""

    __slots__ = ("_joined", "_pending")

    def __init__(self, pending: Pending | None, joined: join) -> None:
        self._pending, self._joined = pending, joined

    def finish(self, outputs: Any) -> None:
        try:
            if self._pending is not None:
                self._pending.finish(outputs)
        finally:
            self._joined.__exit__(None, None, None)

    async def finish_async(self, outputs: Any) -> None:
        try:
            if self._pending is not None:
                await self._pending.finish_async(outputs)
        finally:
            self._joined.__exit__(None, None, None)

    def fail(self, exc: BaseException) -> None:
        try:
            if self._pending is not None:
                self._pending.fail(exc)
        finally:
            self._joined.__exit__(type(exc), exc, None)


Request = Pending | RequestAction | _Joined


def _outside_flow() -> bool:
    """Whether no flow is active in this context (``frame_var`` holds NO_FLOW's shape)."""
    pair: Any = frame_var.get()  # NO_FLOW, or a frame, or (frame, last completed)
    if pair.__class__ is not tuple:
        return False
    frame, _ = pair
    return frame is None


def start_request(fn: Callable[..., Any], names: tuple[str, ...], remote: Remote | None,
                  *inputs: Any) -> Request | None:
    """Start the request action ``fn`` (a ``pending_action``), continuing ``remote``.

    ``names`` are the inputs' parameter names; ``remote`` is what the request's
    headers named (``_propagation.extract_asgi``/``extract_remote``), or None. Returns
    what ends the request (``finish``/``finish_async``/``fail``), or None when nothing
    is recorded (the application runs all the same).
    """
    spec: ActionSpec = getattr(fn, SPEC_ATTR)
    if not spec.reactions and _Runtime.enabled and (remote is not None or _outside_flow()):
        try:
            return RequestAction(spec, dict(zip(names, inputs, strict=True)), remote)
        except Exception:
            log.debug("actiontrace: could not start a request action", exc_info=True)
            return None
    if remote is None:
        return Pending.start(fn, *inputs)
    joined = join(remote)
    joined.enter()
    return _Joined(Pending.start(fn, *inputs), joined)


@types.coroutine
def _resume(coro: Any, value: Any) -> Generator[Any, Any, Any]:
    """``await`` of a coroutine that is already past its first step, resumed with ``value``."""
    try:
        yielded = coro.send(value)
    except StopIteration as stop:
        return stop.value
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 - delivered to the coroutine, as await does
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value
