"""Record and propagate every request ``requests`` sends (docs/reference.md, Across services).

``instrument()`` wraps ``requests.Session.send`` (``requests.get`` and friends go
through a session too), now or when ``requests`` is imported; inside a flow each
request (each hop of a redirect) becomes an ``http::Client::request`` action and
carries the flow's headers. ``instrument`` twice is a no-op; ``uninstrument()``
restores ``requests``.
"""

from __future__ import annotations

from typing import Any

from actiontrace._instrument import Patch
from actiontrace.contrib._client import send

__all__ = ["instrument", "uninstrument"]


def _send(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    request = args[0] if args else kwargs["request"]
    return send(wrapped, args, kwargs, request, request.method, request.url)


_PATCH = Patch("requests.sessions", "Session.send", lambda owner, attr: _send)


def instrument() -> None:
    """Record and propagate every request ``requests`` sends inside a flow."""
    _PATCH.apply()


def uninstrument() -> None:
    """Undo ``instrument()``."""
    _PATCH.remove()
