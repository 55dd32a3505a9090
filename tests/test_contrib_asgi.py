"""The ASGI middleware (docs/reference.md, Across services) on real Starlette and FastAPI apps, and uvicorn."""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import actiontrace
from actiontrace import flow, inject
from actiontrace.contrib.asgi import ActionTraceMiddleware
from web_support import FOREIGN_TP, inner, recorded


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


async def hello(request: Request) -> Response:
    return JSONResponse({"v": inner(1)})


async def boom(request: Request) -> Response:
    raise RuntimeError("handler failed")


async def teapot(request: Request) -> Response:
    return PlainTextResponse("no", status_code=418)


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(3):
            await asyncio.sleep(0.01)
            yield f"{i}".encode()
            inner(i)

    return StreamingResponse(chunks())


async def outgoing(request: Request) -> Response:
    return JSONResponse(inject({}))


async def echo_ws(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(await ws.receive_text())
    await ws.close()


def make_app(**options: Any) -> Any:
    routes = [Route("/hello", hello), Route("/boom", boom), Route("/teapot", teapot),
              Route("/stream", stream), Route("/outgoing", outgoing),
              WebSocketRoute("/ws", echo_ws)]
    return ActionTraceMiddleware(Starlette(routes=routes), concept="svc::HTTP", **options)


async def get(app: Any, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        return await client.get(path, headers=headers)


def requests_of(tracer: actiontrace.ActionTracer) -> list[actiontrace.ActionRecord]:
    return tracer.find_actions(concept_uri="svc::HTTP", action="request")


class TestNewFlow:
    async def test_request_is_the_root(self, tracer: actiontrace.ActionTracer) -> None:
        """Without trace headers the request action is the flow's root, with its status."""
        res = await get(make_app(), "/hello?secret=1")
        assert res.json() == {"v": 2}
        (req,) = requests_of(tracer)
        assert (req.inputs, req.outputs, req.status) == (
            {"method": "GET", "path": "/hello"}, {"status": 200}, "ok")
        trace = tracer.get_trace(req.flow_token)
        assert trace.root_action_id == req.id
        (child,) = [r for r in trace.actions.values() if r.action == "inner"]
        assert child.parent_id == req.id

    async def test_status_of_a_response_that_is_not_200(self, tracer: actiontrace.ActionTracer) -> None:
        """outputs carry the status the app answered with."""
        await get(make_app(), "/teapot")
        assert requests_of(tracer)[0].outputs == {"status": 418}

    async def test_error_when_the_app_raises(self, tracer: actiontrace.ActionTracer) -> None:
        """An exception from the app marks the request error, and still reaches the server."""
        res = await get(make_app(), "/boom")
        assert res.status_code == 500
        (req,) = requests_of(tracer)
        assert req.status == "error"
        assert req.outputs == {"error": "handler failed", "error_type": "RuntimeError"}

    async def test_streamed_response_lasts_until_its_end(self, tracer: actiontrace.ActionTracer) -> None:
        """A streamed body: status at start, duration until the last chunk, chunks inside."""
        res = await get(make_app(), "/stream")
        assert res.text == "012"
        (req,) = requests_of(tracer)
        assert req.outputs == {"status": 200}
        assert req.duration_us is not None and req.duration_us >= 30_000  # three 10 ms sleeps
        chunks = [r for r in tracer.get_trace(req.flow_token).actions.values()
                  if r.action == "inner"]
        assert [c.parent_id for c in chunks] == [req.id] * 3

    async def test_query_string_only_when_asked(self, tracer: actiontrace.ActionTracer) -> None:
        """query_string=True records the query as a dict, with secret keys redacted."""
        await get(make_app(query_string=True), "/hello?page=2&token=abc&tag=a&tag=b")
        (req,) = requests_of(tracer)
        assert req.inputs == {"method": "GET", "path": "/hello",
                              "query": {"page": "2", "token": "[REDACTED]", "tag": ["a", "b"]}}

    async def test_headers_and_body_are_never_recorded(self, tracer: actiontrace.ActionTracer) -> None:
        """Request headers (cookies, auth) never reach the record."""
        await get(make_app(), "/hello", headers={"authorization": "Bearer s3cr3t", "x-a": "b"})
        stored = tracer.get_trace(requests_of(tracer)[0].flow_token).to_json()
        assert "s3cr3t" not in stored and "x-a" not in stored


class TestContinuedFlow:
    async def test_request_joins_the_callers_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """With our headers the request is a direct action of the caller's flow."""
        with flow("client::Main::run") as token:
            headers = inject({})
        await get(make_app(), "/hello", headers=headers)
        (req,) = requests_of(tracer)
        trace = tracer.get_trace(token)
        assert req.flow_token == token and req.parent_id is None
        assert [(e.from_action, e.synchronization) for e in trace.provenance_edges] == [
            (trace.root_action_id, "remote")]

    async def test_foreign_traceparent(self, tracer: actiontrace.ActionTracer) -> None:
        """A traceparent from another tracer joins its trace id's flow, with no edge."""
        await get(make_app(), "/hello", headers={"traceparent": FOREIGN_TP})
        (req,) = requests_of(tracer)
        assert req.flow_token == uuid.UUID(FOREIGN_TP[3:35])
        assert tracer.get_trace(req.flow_token).provenance_edges == []

    async def test_malformed_headers_start_a_new_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """A hostile traceparent is ignored (a new flow) and counted."""
        await get(make_app(), "/hello", headers={"traceparent": "00-" + "z" * 600})
        (req,) = requests_of(tracer)
        assert tracer.get_trace(req.flow_token).root_action_id == req.id
        assert tracer.stats()["rejected_trace_headers"] == 1


    async def test_tracestate_is_passed_on(self, tracer: actiontrace.ActionTracer) -> None:
        """A tracestate that came with our headers goes out again from inside the request."""
        with flow("client::Main::run") as token:
            headers = inject({})
        headers["tracestate"] = "vendor=abc,other=1"
        res = await get(make_app(), "/outgoing", headers=headers)
        out = res.json()
        assert out["tracestate"] == "vendor=abc,other=1"
        assert out["traceparent"].split("-")[1] == token.hex
        (req,) = requests_of(tracer)
        assert out["actiontrace"].startswith(f"trigger={req.id};")


class TestDeclaredReactions:
    """A reaction declared on the request action runs, in new and continued flows."""

    @pytest.fixture
    def reacting(self) -> Iterator[list[actiontrace.ActionRecord]]:
        seen: list[actiontrace.ActionRecord] = []

        @actiontrace.synchronization("OnRequest", when="svc::HTTP::request")
        def on_request(record: actiontrace.ActionRecord) -> None:
            seen.append(record)
            inner(5)

        yield seen
        actiontrace.remove_reaction(on_request)

    async def test_reaction_to_a_new_flow_request(
        self, tracer: actiontrace.ActionTracer, reacting: list[actiontrace.ActionRecord]
    ) -> None:
        """The reaction sees the finished request and its action gets the edge from it."""
        await get(make_app(), "/teapot")
        (req,) = requests_of(tracer)
        assert [(r.id, r.outputs, r.status) for r in reacting] == [(req.id, {"status": 418}, "ok")]
        trace = tracer.get_trace(req.flow_token)
        assert trace.root_action_id == req.id
        (reacted,) = [r for r in trace.actions.values() if r.inputs == {"x": 5}]
        assert [(e.from_action, e.synchronization) for e in trace.provenance_edges
                if e.to_action == reacted.id] == [(req.id, "OnRequest")]

    async def test_reaction_to_a_continued_request(
        self, tracer: actiontrace.ActionTracer, reacting: list[actiontrace.ActionRecord]
    ) -> None:
        """In the caller's flow: the edge from the caller, then the reaction's from the request."""
        with flow("client::Main::run") as token:
            headers = inject({})
        await get(make_app(), "/hello", headers=headers)
        (req,) = requests_of(tracer)
        assert [r.id for r in reacting] == [req.id] and req.flow_token == token
        trace = tracer.get_trace(token)
        syncs = sorted((e.synchronization, e.from_action == req.id) for e in trace.provenance_edges)
        assert syncs == [("OnRequest", True), ("remote", False)]

    async def test_recording_disabled(self, reacting: list[actiontrace.ActionRecord]) -> None:
        """configure(enabled=False): the app answers, nothing is recorded or reacted to."""
        tracer = actiontrace.configure(enabled=False)
        try:
            res = await get(make_app(), "/hello")
            assert res.json() == {"v": 2}
            assert reacting == [] and requests_of(tracer) == []
        finally:
            actiontrace.configure()


class TestPassThrough:
    async def test_websocket_and_lifespan_untouched(self, tracer: actiontrace.ActionTracer) -> None:
        """Websocket and lifespan scopes reach the app as they are, recording nothing."""
        seen: list[tuple[Any, Any, Any]] = []

        async def raw_app(scope: Any, receive: Any, send: Any) -> None:
            seen.append((scope, receive, send))

        async def receive() -> dict[str, Any]:
            return {"type": "lifespan.startup"}

        async def send(message: dict[str, Any]) -> None:
            pass

        app = ActionTraceMiddleware(raw_app)
        for scope in ({"type": "lifespan", "asgi": {"version": "3.0"}},
                      {"type": "websocket", "path": "/ws", "headers": [(b"traceparent", FOREIGN_TP.encode())]}):
            await app(scope, receive, send)
            assert seen[-1] == (scope, receive, send)
            assert seen[-1][0] is scope and seen[-1][2] is send
        assert tracer.find_actions() == []

    def test_bad_concept_rejected(self) -> None:
        """The concept must be a non-empty string."""
        with pytest.raises(TypeError):
            ActionTraceMiddleware(hello, concept="")


class TestFastAPI:
    async def test_fastapi_app(self, tracer: actiontrace.ActionTracer) -> None:
        """FastAPI (add_middleware) records requests the same way."""
        from fastapi import FastAPI

        api = FastAPI()
        api.add_middleware(ActionTraceMiddleware, concept="svc::HTTP")

        @api.get("/items/{item_id}")
        async def item(item_id: int) -> dict[str, int]:
            return {"item": inner(item_id)}

        res = await get(api, "/items/4")
        assert res.json() == {"item": 5}
        (req,) = requests_of(tracer)
        assert req.inputs == {"method": "GET", "path": "/items/4"}


@pytest.fixture
def uvicorn_server() -> Iterator[str]:
    """make_app() served by uvicorn on a port the OS chose."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(make_app(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = 200
    while not server.started and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    yield url
    server.should_exit = True
    thread.join(10)
    sock.close()


class TestUvicorn:
    def test_real_server(self, tracer: actiontrace.ActionTracer, uvicorn_server: str) -> None:
        """Over a real socket, concurrent requests each get their own flow."""
        with httpx.Client() as client:
            for _ in range(3):
                assert client.get(f"{uvicorn_server}/hello").status_code == 200
        reqs = recorded(tracer, 3)  # the server ends each flow after its response went out
        assert len(reqs) == 3 and len({r.flow_token for r in reqs}) == 3
