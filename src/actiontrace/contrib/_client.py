"""What the HTTP client integrations share: the ``http::Client::request`` action.

A request sent inside a flow is recorded as ``http::Client::request`` (inputs ``method``
and ``url`` without query, fragment or credentials; outputs ``{"status": code}``; an
error when the transport fails) and ``inject``'s headers are set from inside that
action: its id is the ``traceparent`` parent-id and the remote side's trigger, and the
name sent is the synchronization that produced the client action, else ``"remote"``.
"""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from actiontrace._propagation import inject
from actiontrace.contrib._pending import Pending, pending_action
from actiontrace.recording._context import remote_view

__all__ = ["CLIENT_CONCEPT", "clean_url", "send", "send_async", "start_request"]

CLIENT_CONCEPT = "http::Client"
_ACTION = pending_action(CLIENT_CONCEPT, "request", ("method", "url"))


def clean_url(url: str) -> str:
    """``url`` without its query string, fragment and user:password."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    except ValueError:
        return url.split("?", 1)[0].split("#", 1)[0]


def start_request(method: str, url: str, headers: Any) -> Pending | None:
    """Inside a flow: start the client action and inject its headers; else None."""
    view = remote_view()
    if view is None:
        return None
    pending = Pending.start(_ACTION, str(method), clean_url(str(url)))
    if pending is not None:
        # Headers that refuse ours: the request is sent all the same.
        with contextlib.suppress(Exception):
            inject(headers, synchronization=view[2] or "remote")
    return pending


def send(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any], request: Any,
         method: str, url: str) -> Any:
    """Call ``wrapped(*args, **kwargs)`` (a client's send) as the client action, if in a flow."""
    pending = start_request(method, url, request.headers)
    if pending is None:
        return wrapped(*args, **kwargs)
    try:
        response = wrapped(*args, **kwargs)
    except BaseException as exc:
        pending.fail(exc)
        raise
    pending.finish({"status": response.status_code})
    return response


async def send_async(wrapped: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     request: Any, method: str, url: str) -> Any:
    """``send`` for an async client."""
    pending = start_request(method, url, request.headers)
    if pending is None:
        return await wrapped(*args, **kwargs)
    try:
        response = await wrapped(*args, **kwargs)
    except BaseException as exc:
        pending.fail(exc)
        raise
    await pending.finish_async({"status": response.status_code})
    return response
