"""WSGI middleware: one flow per HTTP request, continued from its headers (docs/reference.md, Across services).

Works with any WSGI application (Flask, Django's ``WSGIHandler``, ...)::

    app.wsgi_app = ActionTraceMiddleware(app.wsgi_app, concept="shop::HTTP")   # Flask
    application = ActionTraceMiddleware(get_wsgi_application())               # Django

Each request is recorded as ``<concept>::request`` exactly as by the ASGI middleware:
inputs ``method`` and ``path`` (``query`` when asked), outputs ``{"status": <code>}``
from ``start_response``, status ``error`` when the application raised, while it was
called or while the server iterated its body. The action lasts until the server closes
the body, so a streamed response is timed to its end.

The request and every step of its body run in one ``contextvars.Context`` of their
own, so the flow is the same whichever thread the server iterates the body in.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator
from typing import Any

from actiontrace._propagation import extract_remote
from actiontrace.contrib._http import RequestRecorder, query_inputs
from actiontrace.contrib._pending import Request, start_request

__all__ = ["ActionTraceMiddleware"]

_HEADERS = (("traceparent", "HTTP_TRACEPARENT"), ("tracestate", "HTTP_TRACESTATE"),
            ("actiontrace", "HTTP_ACTIONTRACE"))


def _carrier(environ: dict[str, Any]) -> list[tuple[str, Any]]:
    return [(name, environ[key]) for name, key in _HEADERS if key in environ]


class ActionTraceMiddleware(RequestRecorder):
    """Record every request of a WSGI application as ``<concept>::request``.

    Args:
        app: the WSGI application.
        concept: the request action's concept URI (default ``"http::Server"``).
        query_string: also record the query string, as a dict under ``query``.
    """

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        context = contextvars.copy_context()
        return context.run(self._call, context, environ, start_response)

    def _call(self, context: contextvars.Context, environ: dict[str, Any],
              start_response: Any) -> Iterable[bytes]:
        inputs = [environ.get("REQUEST_METHOD", "GET"),
                  environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")]
        if self.query_string:
            inputs.append(query_inputs(environ.get("QUERY_STRING", "")))
        pending = start_request(self._action, self._params,
                                extract_remote(_carrier(environ)), *inputs)
        status: list[int] = []

        def start(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            try:
                code = int(str(status_line)[:3])
            except ValueError:
                code = 0
            status[:] = [code]
            if exc_info is None:
                return start_response(status_line, headers)
            return start_response(status_line, headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException as exc:
            _end(pending, status, exc)
            raise
        return _Body(body, context, pending, status)


def _end(pending: Request | None, status: list[int], exc: BaseException | None) -> None:
    if pending is not None:
        if exc is None:
            pending.finish({"status": status[0] if status else None})
        else:
            pending.fail(exc)


class _Body:
    """The application's body, iterated and closed in the request's context."""

    __slots__ = ("_body", "_context", "_done", "_it", "_pending", "_status")

    def __init__(self, body: Iterable[bytes], context: contextvars.Context,
                 pending: Request | None, status: list[int]) -> None:
        self._body, self._context = body, context
        self._pending, self._status = pending, status
        self._it: Iterator[bytes] | None = None
        self._done = False

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        try:
            if self._it is None:
                self._it = self._context.run(iter, self._body)
            chunk: bytes = self._context.run(next, self._it)
            return chunk
        except StopIteration:
            raise
        except BaseException as exc:
            self._finish(exc)
            raise

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                self._context.run(close)
        except BaseException as exc:
            self._finish(exc)
            raise
        self._finish(None)

    def __del__(self) -> None:
        # A server must close() the body (PEP 3333); one that does not would leave the
        # request running and its flow open for ever: end it when the body goes away.
        if not self._done:
            with contextlib.suppress(Exception):
                self._finish(None)

    def _finish(self, exc: BaseException | None) -> None:
        if not self._done:
            self._done = True
            self._context.run(_end, self._pending, self._status, exc)
