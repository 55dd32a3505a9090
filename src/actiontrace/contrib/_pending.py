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
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from actiontrace.recording._decorators import action

__all__ = ["Pending", "pending_action"]

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

    __slots__ = ("_coro",)

    def __init__(self, coro: Any) -> None:
        self._coro = coro

    @classmethod
    def start(cls, fn: Callable[..., Any], *inputs: Any) -> Pending | None:
        try:
            coro = fn(*inputs)
            yielded = coro.send(None)
        except BaseException:
            log.debug("actiontrace: could not start a request action", exc_info=True)
            return None
        if yielded is not _PAUSE:  # cannot happen with our bodies; never leave it running
            coro.close()
            return None
        return cls(coro)

    def finish(self, outputs: Any) -> None:
        """End the call with ``outputs`` (declared reactions run here, synchronously)."""
        coro = self._coro
        try:
            yielded = coro.send(outputs)
        except StopIteration:
            return
        # An async reaction awaited real I/O, which a synchronous caller cannot drive.
        coro.close()
        raise RuntimeError(f"an async reaction awaited {yielded!r} after a synchronous request")

    async def finish_async(self, outputs: Any) -> None:
        """End the call with ``outputs``; async declared reactions are awaited."""
        await _resume(self._coro, outputs)

    def fail(self, exc: BaseException) -> None:
        """End the call with ``exc`` as its error (the caller re-raises it)."""
        try:
            self._coro.throw(exc)
        except BaseException as raised:
            if raised is not exc:
                raise
        else:  # the body cannot swallow the error; close it to be sure nothing dangles
            self._coro.close()


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
