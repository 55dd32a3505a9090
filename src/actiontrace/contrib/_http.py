"""What the HTTP integrations share: the request's inputs (docs/reference.md, Across services)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from actiontrace.contrib._pending import pending_action

__all__ = ["RequestRecorder", "query_inputs"]


def query_inputs(query: str) -> dict[str, Any]:
    """A query string as a dict (a repeated name gets a list), so redaction sees its keys."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out


class RequestRecorder:
    """What the ASGI and WSGI middleware share: the app, the concept, the request action.

    Args:
        app: the application.
        concept: the request action's concept URI (default ``"http::Server"``).
        query_string: also record the query string, as a dict under ``query``
            (redaction applies to its keys).
    """

    def __init__(self, app: Any, concept: str = "http::Server", *, query_string: bool = False):
        if not isinstance(concept, str) or not concept:
            raise TypeError("ActionTraceMiddleware needs a concept URI, e.g. 'shop::HTTP'")
        self.app = app
        self.concept = concept
        self.query_string = bool(query_string)
        self._params: tuple[str, ...] = (
            ("method", "path", "query") if query_string else ("method", "path"))
        self._action = pending_action(concept, "request", self._params)
