"""The WSGI middleware (docs/reference.md, Across services): Flask and Django apps on a real WSGI server."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import flask
import pytest
import requests

import actiontrace
from actiontrace import flow, inject
from actiontrace.contrib.wsgi import ActionTraceMiddleware
from web_support import FOREIGN_TP, inner, recorded


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


def flask_app() -> flask.Flask:
    app = flask.Flask("wsgi-test")

    @app.get("/hello")
    def hello() -> Any:
        return {"v": inner(1)}

    @app.get("/boom")
    def boom() -> Any:
        raise RuntimeError("handler failed")

    @app.get("/stream")
    def stream() -> Any:
        def chunks() -> Iterator[str]:
            for i in range(3):
                time.sleep(0.01)
                inner(i)
                yield str(i)

        return flask.Response(chunks())

    return app


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(app: Any) -> tuple[WSGIServer, str]:
    server = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def flask_url() -> Iterator[str]:
    app = flask_app()
    app.wsgi_app = ActionTraceMiddleware(app.wsgi_app, concept="svc::HTTP")  # type: ignore[method-assign]
    server, url = serve(app)
    yield url
    server.shutdown()
    server.server_close()


def requests_of(tracer: actiontrace.ActionTracer) -> list[actiontrace.ActionRecord]:
    return recorded(tracer)  # over a real socket: waits for the server to end the flow


class TestFlask:
    def test_request_is_the_root(self, tracer: actiontrace.ActionTracer, flask_url: str) -> None:
        """Without trace headers the request is the root; inputs method and path only."""
        assert requests.get(f"{flask_url}/hello?password=x", timeout=10).json() == {"v": 2}
        (req,) = requests_of(tracer)
        assert (req.inputs, req.outputs, req.status) == (
            {"method": "GET", "path": "/hello"}, {"status": 200}, "ok")
        trace = tracer.get_trace(req.flow_token)
        assert trace.root_action_id == req.id
        assert [r.parent_id for r in trace.actions.values() if r.action == "inner"] == [req.id]

    def test_continues_the_callers_flow(self, tracer: actiontrace.ActionTracer, flask_url: str) -> None:
        """Our headers join the caller's flow, with the edge from its trigger."""
        with flow("client::Main::run") as token:
            headers = inject({})
        requests.get(f"{flask_url}/hello", headers=headers, timeout=10)
        (req,) = requests_of(tracer)
        trace = tracer.get_trace(token)
        assert req.flow_token == token and req.parent_id is None
        assert [(e.from_action, e.to_action, e.synchronization) for e in trace.provenance_edges] \
            == [(trace.root_action_id, req.id, "remote")]

    def test_foreign_traceparent(self, tracer: actiontrace.ActionTracer, flask_url: str) -> None:
        """A traceparent from another tracer joins its trace id's flow."""
        requests.get(f"{flask_url}/hello", headers={"traceparent": FOREIGN_TP}, timeout=10)
        assert requests_of(tracer)[0].flow_token == uuid.UUID(FOREIGN_TP[3:35])

    def test_error_status(self, tracer: actiontrace.ActionTracer, flask_url: str) -> None:
        """A handler error that Flask turns into a 500 is recorded with that status."""
        assert requests.get(f"{flask_url}/boom", timeout=10).status_code == 500
        assert requests_of(tracer)[0].outputs == {"status": 500}

    def test_streamed_body(self, tracer: actiontrace.ActionTracer, flask_url: str) -> None:
        """A streamed body is timed to its end; work done while streaming is inside."""
        assert requests.get(f"{flask_url}/stream", timeout=10).text == "012"
        (req,) = requests_of(tracer)
        assert req.outputs == {"status": 200}
        assert req.duration_us is not None and req.duration_us >= 30_000  # three 10 ms sleeps
        inners = [r for r in tracer.find_actions(flow_token=req.flow_token) if r.action == "inner"]
        assert [r.parent_id for r in inners] == [req.id] * 3


class _Reaction:
    """A reaction declared on the request action, until ``stop()``."""

    def __init__(self) -> None:
        self.seen: list[actiontrace.ActionRecord] = []

        @actiontrace.synchronization("OnRequest", when="http::Server::request")
        def on_request(record: actiontrace.ActionRecord) -> None:
            self.seen.append(record)

        self._func = on_request

    def stop(self) -> None:
        actiontrace.remove_reaction(self._func)


def _serve(app: Any, environ: dict[str, Any]) -> bytes:
    """Call a WSGI app as a server would: iterate the body, then close it."""
    body = app(environ, lambda *a: None)
    try:
        return b"".join(body)
    finally:
        body.close()


class TestRequestPaths:
    """Requests with and without a declared reaction, new and continued, record alike."""

    @pytest.fixture
    def reacting(self) -> Iterator[_Reaction]:
        reaction = _Reaction()
        yield reaction
        reaction.stop()

    @staticmethod
    def app(environ: Any, start_response: Any) -> Any:
        start_response("201 Created", [])
        inner(1)
        return [inject({}).get("tracestate", "-").encode()]

    def shape(self, tracer: actiontrace.ActionTracer, environ: dict[str, Any]) -> Any:
        out = _serve(ActionTraceMiddleware(self.app), environ)
        (req,) = tracer.find_actions(concept_uri="http::Server")
        trace = tracer.get_trace(req.flow_token)
        children = [r.parent_id == req.id for r in trace.actions.values() if r.action == "inner"]
        edges = sorted((e.synchronization, e.to_action == req.id) for e in trace.provenance_edges)
        return (out, req.inputs, req.outputs, req.status, req.parent_id, children, edges,
                trace.root_action_id == req.id)

    def test_new_flow_with_and_without_reaction(
        self, tracer: actiontrace.ActionTracer, reacting: _Reaction
    ) -> None:
        """The reaction runs once; the request is the root of its flow either way."""
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/r"}
        with_reaction = self.shape(tracer, environ)
        assert [r.outputs for r in reacting.seen] == [{"status": 201}]
        expected = (b"-", {"method": "GET", "path": "/r"}, {"status": 201}, "ok", None,
                    [True], [], True)
        assert with_reaction == expected
        reacting.stop()
        tracer = actiontrace.configure()
        assert self.shape(tracer, environ) == expected

    def test_continued_flow_with_and_without_reaction(
        self, tracer: actiontrace.ActionTracer, reacting: _Reaction
    ) -> None:
        """The edge from the caller and the tracestate passed on, either way."""
        with flow("client::Main::run"):
            headers = inject({})
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/r",
                   "HTTP_TRACEPARENT": headers["traceparent"],
                   "HTTP_ACTIONTRACE": headers["actiontrace"], "HTTP_TRACESTATE": "v=1"}
        with_reaction = self.shape(tracer, environ)
        assert len(reacting.seen) == 1
        expected = (b"v=1", {"method": "GET", "path": "/r"}, {"status": 201}, "ok", None,
                    [True], [("remote", True)], False)
        assert with_reaction == expected
        reacting.stop()
        tracer = actiontrace.configure()
        assert self.shape(tracer, environ) == expected


class TestRawWsgi:
    def test_app_that_raises(self, tracer: actiontrace.ActionTracer) -> None:
        """An app that raises: the request is an error and the exception propagates."""

        def app(environ: Any, start_response: Any) -> Any:
            raise ValueError("bad")

        with pytest.raises(ValueError):
            ActionTraceMiddleware(app)({"REQUEST_METHOD": "POST", "PATH_INFO": "/x"},
                                       lambda *a: None)
        (req,) = tracer.find_actions(concept_uri="http::Server")
        assert req.status == "error" and req.inputs == {"method": "POST", "path": "/x"}

    def test_body_that_raises_while_iterated(self, tracer: actiontrace.ActionTracer) -> None:
        """An error raised by the body while the server iterates it is the request's."""

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            yield b"a"
            raise OSError("disk")

        body = ActionTraceMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
                                          lambda *a: None)
        it = iter(body)
        assert next(it) == b"a"
        with pytest.raises(OSError):
            next(it)
        body.close()  # type: ignore[attr-defined]
        (req,) = tracer.find_actions(concept_uri="http::Server")
        assert req.status == "error" and req.outputs["error_type"] == "OSError"

    def test_closed_in_another_thread(self, tracer: actiontrace.ActionTracer) -> None:
        """A body iterated and closed in another thread still ends the request."""

        def app(environ: Any, start_response: Any) -> Any:
            start_response("201 Created", [])
            return [b"x"]

        body = ActionTraceMiddleware(app, query_string=True)(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/q", "QUERY_STRING": "a=1&api_key=k"},
            lambda *a: None)
        worker = threading.Thread(target=lambda: (list(body), body.close()))  # type: ignore[attr-defined]
        worker.start()
        worker.join(10)
        (req,) = tracer.find_actions(concept_uri="http::Server")
        assert req.outputs == {"status": 201}
        assert req.inputs == {"method": "GET", "path": "/q",
                              "query": {"a": "1", "api_key": "[REDACTED]"}}


    def test_body_never_closed_ends_when_dropped(self, tracer: actiontrace.ActionTracer) -> None:
        """A server that never calls close(): the request ends when its body is dropped."""
        import gc

        def app(environ: Any, start_response: Any) -> Any:
            start_response("200 OK", [])
            return [b"x"]

        body = ActionTraceMiddleware(app)({"REQUEST_METHOD": "GET", "PATH_INFO": "/"},
                                          lambda *a: None)
        assert list(body) == [b"x"]
        del body
        gc.collect()
        (req,) = tracer.find_actions(concept_uri="http::Server")
        assert (req.status, req.outputs) == ("ok", {"status": 200})


class TestDjango:
    def test_django_wsgi_handler(self, tracer: actiontrace.ActionTracer) -> None:
        """Django's WSGIHandler, wrapped, on a real WSGI server."""
        import django
        from django.conf import settings

        if not settings.configured:
            settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__,
                               SECRET_KEY="test-only", MIDDLEWARE=[], INSTALLED_APPS=[])
            django.setup()
        from django.core.wsgi import get_wsgi_application

        server, url = serve(ActionTraceMiddleware(get_wsgi_application(), concept="svc::HTTP"))
        try:
            res = requests.get(f"{url}/django/7", timeout=10)
        finally:
            server.shutdown()
            server.server_close()
        assert res.text == "8"
        (req,) = requests_of(tracer)
        assert (req.inputs, req.outputs) == ({"method": "GET", "path": "/django/7"},
                                             {"status": 200})
        assert [r.parent_id for r in tracer.find_actions(flow_token=req.flow_token)
                if r.action == "inner"] == [req.id]


def _django_view(request: Any, n: str) -> Any:
    from django.http import HttpResponse

    return HttpResponse(str(inner(int(n))))


def __getattr__(name: str) -> Any:
    # ROOT_URLCONF=__name__: Django reads urlpatterns from this module, lazily.
    if name == "urlpatterns":
        from django.urls import path

        return [path("django/<n>", _django_view)]
    raise AttributeError(name)
