"""Record and propagate every request an ``httpx`` client sends (docs/reference.md, Across services).

``instrument()`` wraps ``httpx.Client.send`` and ``httpx.AsyncClient.send`` (every
request goes through them), now or when ``httpx`` is imported; inside a flow each
request becomes an ``http::Client::request`` action and carries the flow's headers.
Outside a flow requests go through untouched. ``instrument`` twice is a no-op;
``uninstrument()`` restores the clients.
"""

from __future__ import annotations

from typing import Any

from actiontrace._instrument import Patch
from actiontrace.contrib._client import send, send_async

__all__ = ["instrument", "uninstrument"]


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs["request"]


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    return send(wrapped, args, kwargs, request, request.method, str(request.url))


async def _send_async(wrapped: Any, instance: Any, args: tuple[Any, ...],
                      kwargs: dict[str, Any]) -> Any:
    request = _request_of(args, kwargs)
    return await send_async(wrapped, args, kwargs, request, request.method, str(request.url))


_PATCHES = (
    Patch("httpx", "Client.send", lambda owner, attr: _send),
    Patch("httpx", "AsyncClient.send", lambda owner, attr: _send_async),
)


def instrument() -> None:
    """Record and propagate every request httpx clients (sync and async) send in a flow."""
    for patch in _PATCHES:
        patch.apply()


def uninstrument() -> None:
    """Undo ``instrument()``."""
    for patch in _PATCHES:
        patch.remove()
