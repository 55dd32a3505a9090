"""What the web integration tests share: an echo server, a foreign traceparent, an action.

``EchoServer`` is a real HTTP server on 127.0.0.1 (a port the OS chose) that answers
with the headers it got.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import actiontrace
from actiontrace import action

# A traceparent as another tracer writes it (no actiontrace header beside it).
FOREIGN_TP = "00-12345678901234567890123456789012-1234567890123456-01"


@action(concept="svc::Inner")
def inner(x: int) -> int:
    """An action for request handlers to call."""
    return x + 1


class _Echo(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        status = 404 if self.path.startswith("/missing") else 200
        body = json.dumps({k.lower(): v for k, v in self.headers.items()}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


class EchoServer:
    """Start with ``with EchoServer() as url:``; the url has no trailing slash."""

    def __enter__(self) -> str:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_actions(tracer: actiontrace.ActionTracer) -> list[actiontrace.ActionRecord]:
    """The http::Client::request actions recorded so far, oldest first."""
    return tracer.find_actions(concept_uri="http::Client", action="request")


def recorded(tracer: actiontrace.ActionTracer, n: int = 1, *, concept_uri: str = "svc::HTTP",
             action: str = "request") -> list[actiontrace.ActionRecord]:
    """The matching actions, once at least ``n`` are stored (deadline 10 s).

    A server ends the request's flow after the client has its response (the WSGI body
    is closed, the ASGI app returns, after the last byte went out), so a test reading
    right after the response may be early: it waits for the condition.
    """
    deadline = time.monotonic() + 10
    while True:
        found = tracer.find_actions(concept_uri=concept_uri, action=action)
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.02)
