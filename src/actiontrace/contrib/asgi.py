"""ASGI middleware: one flow per HTTP request, continued from its headers (docs/reference.md, Across services).

Works with any ASGI 3 application (Starlette, FastAPI, ...)::

    app = ActionTraceMiddleware(app, concept="shop::HTTP")

Each HTTP request is recorded as the action ``<concept>::request`` with inputs
``method`` and ``path`` (and ``query``, a dict, when ``query_string=True``; never headers
or body) and outputs ``{"status": <code>}``, taken when the response starts; the action
lasts until the response's last byte is sent, and is an error when the application
raised. When the request carries no (valid) trace headers it is the root of a new flow;
otherwise it is a direct action of the caller's flow, with the edge from the caller's
trigger. Lifespan and websocket scopes pass through untouched.
"""

from __future__ import annotations

from typing import Any

from actiontrace._propagation import extract_asgi
from actiontrace.contrib._http import RequestRecorder, query_inputs
from actiontrace.contrib._pending import RequestAction, start_request

__all__ = ["ActionTraceMiddleware"]


class ActionTraceMiddleware(RequestRecorder):
    """Record every HTTP request of an ASGI application as ``<concept>::request``.

    Args:
        app: the ASGI application.
        concept: the request action's concept URI (default ``"http::Server"``).
        query_string: also record the query string, as a dict under ``query``
            (redaction applies to its keys).
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        inputs = [scope.get("method", "GET"), scope.get("path", "")]
        if self.query_string:
            raw = scope.get("query_string") or b""
            inputs.append(query_inputs(raw.decode("latin-1")))
        request = start_request(self._action, self._params,
                                extract_asgi(scope.get("headers") or ()), *inputs)
        if request is None:
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def send_status(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start" and not status:
                status.append(message.get("status", 0))
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except BaseException as exc:
            request.fail(exc)
            raise
        outputs = {"status": status[0] if status else None}
        if request.__class__ is RequestAction:  # nothing to await: spare a coroutine
            request.finish(outputs)
        else:
            await request.finish_async(outputs)
