"""Small real services for the cross-service tests (run as separate processes).

``python tests/services_support.py KIND URL [NEXT]`` serves on 127.0.0.1 on a port the
OS chooses and prints ``PORT <n>`` once it listens:

* ``w3c``: the W3C Trace Context test service (POST a JSON list of ``{"url",
  "arguments"}``; it POSTs ``arguments`` to each ``url`` through instrumented httpx);
* ``asgi-a``: uvicorn + Starlette + our middleware; ``GET /order`` runs the
  synchronization ``OrderPlaced``, which calls ``NEXT`` through instrumented httpx;
* ``asgi-b``: uvicorn + Starlette + our middleware; ``GET /play`` runs the action
  ``player::Player::play``;
* ``wsgi-a`` / ``wsgi-b``: the same two with Flask on wsgiref's WSGI server.

``URL`` is the store (``-`` for in memory). Each service flushes after every request
(after its response went out: a reader still waits for the rows with a deadline).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

import actiontrace
from actiontrace import action, concept, synchronization


@concept("player::Player")
class Player:
    @action
    def play(self, passage_id: int) -> dict[str, Any]:
        return {"playing": passage_id}


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def _announce(sock: socket.socket) -> None:
    print(f"PORT {sock.getsockname()[1]}", flush=True)


def asgi_app(kind: str, next_url: str | None) -> Any:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from actiontrace.contrib import httpx as at_httpx
    from actiontrace.contrib.asgi import ActionTraceMiddleware

    at_httpx.instrument()

    async def w3c(request: Request) -> Response:
        async with httpx.AsyncClient(timeout=5) as client:
            for item in await request.json():
                await client.post(item["url"], json=item.get("arguments", []))
        return Response(status_code=200)

    @synchronization("OrderPlaced")
    async def order_placed(passage_id: int) -> int:
        async with httpx.AsyncClient(timeout=10) as client:
            res = await client.get(f"{next_url}/play", params={"passage_id": passage_id})
        return res.status_code

    async def order(request: Request) -> Response:
        status = await order_placed(int(request.query_params.get("passage_id", "1")))
        return JSONResponse({"b_status": status})

    async def play(request: Request) -> Response:
        return JSONResponse(Player().play(int(request.query_params["passage_id"])))

    routes = {"w3c": [Route("/test", w3c, methods=["POST"])],
              "asgi-a": [Route("/order", order)],
              "asgi-b": [Route("/play", play)]}[kind]
    app = ActionTraceMiddleware(Starlette(routes=routes), concept=f"{kind}::HTTP")

    async def flushing(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        if scope["type"] == "http":
            await asyncio.to_thread(actiontrace.get_tracer().flush, 10)

    return flushing


def wsgi_app(kind: str, next_url: str | None) -> Any:
    import flask
    import requests

    from actiontrace.contrib import requests as at_requests
    from actiontrace.contrib.wsgi import ActionTraceMiddleware

    at_requests.instrument()
    app = flask.Flask(kind)

    @synchronization("OrderPlaced")
    def order_placed(passage_id: int) -> int:
        res = requests.get(f"{next_url}/play", params={"passage_id": passage_id}, timeout=10)
        return res.status_code

    @app.get("/order")
    def order() -> Any:
        return {"b_status": order_placed(int(flask.request.args.get("passage_id", "1")))}

    @app.get("/play")
    def play() -> Any:
        return Player().play(int(flask.request.args["passage_id"]))

    wrapped = ActionTraceMiddleware(app.wsgi_app, concept=f"{kind}::HTTP")

    def flushing(environ: Any, start_response: Any) -> Any:
        body = wrapped(environ, start_response)
        try:
            chunks = list(body)
        finally:
            body.close()
        actiontrace.get_tracer().flush(10)
        return chunks

    return flushing


def main(argv: list[str]) -> None:
    kind, url = argv[0], argv[1]
    next_url = argv[2] if len(argv) > 2 else None
    actiontrace.configure(url=None if url == "-" else url, module=kind)
    if kind.startswith("wsgi"):
        from wsgiref.simple_server import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

        wsgi = make_server("127.0.0.1", 0, wsgi_app(kind, next_url), handler_class=Quiet)
        _announce(wsgi.socket)
        wsgi.serve_forever()
        return
    sock = _listen()
    import uvicorn

    config = uvicorn.Config(asgi_app(kind, next_url), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    sock.listen(128)
    _announce(sock)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main(sys.argv[1:])
