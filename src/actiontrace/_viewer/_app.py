"""The viewer's ASGI application: the page, its assets and the JSON API (docs/viewer.md).

Every route answers GET (and HEAD) only: nothing here writes. The token check is the
outermost layer, so no page, asset or endpoint answers without it when one is set.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from actiontrace._exceptions import ActionNotFound, TraceNotFound
from actiontrace._viewer import _data
from actiontrace.storage._base import TraceStorage, prefix_bounds

__all__ = ["COOKIE", "TokenGate", "create_app"]

log = logging.getLogger("actiontrace.viewer")

COOKIE = "actiontrace_viewer_token"
MAX_LIMIT = 500
_ENCODER = msgspec.json.Encoder()
_STATIC = resources.files("actiontrace._viewer") / "static"
_ASSETS = {
    "viewer.js": "text/javascript; charset=utf-8",
    "viewer.css": "text/css; charset=utf-8",
    "dagre.min.js": "text/javascript; charset=utf-8",
}
_LOOPBACK_NAMES = {"localhost", "localhost.", "127.0.0.1", "::1"}


class ApiError(Exception):
    """An answer other than 200, given as ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(_ENCODER.encode(value), status_code=status, headers=headers,
                    media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


# -- parameters --------------------------------------------------------------------------------


def _limit(request: Request, default: int = 50) -> int:
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise ApiError(400, f"limit must be an integer, got {raw!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise ApiError(400, f"limit must be between 1 and {MAX_LIMIT}, got {n}")
    return n


def _time(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return None
    from actiontrace._cli_support import parse_time

    try:
        return int(raw) if raw.lstrip("-").isdigit() else parse_time(raw)
    except ValueError as exc:
        raise ApiError(400, f"{name}: {exc}") from None


def _text(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    return raw if raw else None


def _cursor(request: Request, name: str) -> tuple[int, uuid.UUID] | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return _data.parse_cursor(raw)
    except ValueError:
        raise ApiError(400, f"malformed {name} cursor {raw!r}") from None


def _inputs(request: Request) -> dict[str, Any] | None:
    from actiontrace._cli_support import parse_input

    wanted: dict[str, Any] = {}
    for raw in request.query_params.getlist("input"):
        try:
            key, value = parse_input(raw)
        except ValueError as exc:
            raise ApiError(400, str(exc).replace("--input", "input")) from None
        wanted[key] = value
    return wanted or None


def _next_link(request: Request, name: str, value: str | None) -> dict[str, str]:
    """A ``Link: <...>; rel="next"`` header (RFC 8288) for the next page, if there is one."""
    if value is None:
        return {}
    query = [(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True)
             if k not in (name, "token")]
    query.append((name, value))
    return {"Link": f'<{request.url.path}?{urlencode(query)}>; rel="next"'}


def _resolve(storage: TraceStorage, text: str, kind: str) -> uuid.UUID:
    """A whole id, or a unique prefix or suffix of one (as the command line accepts)."""
    what = "flow" if kind == "flow" else "action"
    try:
        digits, low, _ = prefix_bounds(text)
    except ValueError:
        raise ApiError(400, f"malformed {what} id {text!r}") from None
    if len(digits) == 32:
        return low
    try:  # a prefix or a suffix (UUIDv7 ids of one process share their first digits)
        found = sorted({*storage.resolve_prefix(digits, kind, limit=2),  # type: ignore[arg-type]
                        *storage.resolve_suffix(digits, kind, limit=2)})  # type: ignore[arg-type]
    except NotImplementedError:
        found = []
    if not found:
        raise ApiError(404, f"no {what} {text!r}")
    if len(found) > 1:
        raise ApiError(404, f"{what} id {text!r} is ambiguous: give more digits")
    return found[0]


# -- the application ---------------------------------------------------------------------------


def create_app(storage: TraceStorage, *, token: str | None = None,
               allowed_hosts: set[str] | None = None, cache_ttl: float = 10.0,
               label: str | None = None) -> ASGIApp:
    """The viewer over ``storage``, as an ASGI application.

    Args:
        storage: the store to read (only its queries are called).
        token: when given, every request must carry it (see ``TokenGate``).
        allowed_hosts: when given, requests whose ``Host`` is not one of these names are
            refused (a page on another site cannot reach a loopback viewer through DNS
            rebinding); ``None`` accepts any.
        cache_ttl: seconds the whole-store answers (stats, synchronizations) are kept.
        label: what the page calls the store (default: ``store_label(storage)``); it
            must hold no credentials.
    """
    cache = _data.Cache(cache_ttl)
    shown = label or store_label(storage)

    def endpoint(fn: Callable[[Request], Response]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await run_in_threadpool(fn, request)
            except ApiError as exc:
                return error_response(exc.status, exc.message)
            except (TraceNotFound, ActionNotFound) as exc:
                return error_response(404, str(exc).strip("'\""))
            except Exception as exc:  # noqa: BLE001 - one clear JSON error, never a traceback
                message = _describe(exc)
                log.error("viewer: %s %s failed: %s", request.method, request.url.path, message)
                return error_response(500, message)

        return run

    def flows(request: Request) -> Response:
        rows, nxt = _data.flows_page(
            storage, _limit(request), _cursor(request, "before"),
            since=_time(request, "since"), until=_time(request, "until"),
            concept_uri=_text(request, "concept"), action=_text(request, "action"),
            status=_status(request),
        )
        return json_response(rows, headers=_next_link(request, "before", nxt))

    def flow(request: Request) -> Response:
        token = _resolve(storage, request.path_params["token"], "flow")
        return Response(storage.get_trace(token).to_json(), media_type="application/json")

    def find(request: Request) -> Response:
        found, nxt = _data.find_page(
            storage, _limit(request), _cursor(request, "after"),
            concept_uri=_text(request, "concept"), action=_text(request, "action"),
            inputs=_inputs(request), since=_time(request, "since"),
            until=_time(request, "until"),
        )
        return json_response(found, headers=_next_link(request, "after", nxt))

    def action(request: Request) -> Response:
        action_id = _resolve(storage, request.path_params["id"], "action")
        return json_response(_data.action_detail(storage, action_id))

    def chain(request: Request) -> Response:
        action_id = _resolve(storage, request.path_params["id"], "action")
        return json_response(storage.get_causal_chain(action_id))

    def why(request: Request) -> Response:
        action_id = _resolve(storage, request.path_params["id"], "action")
        return json_response(_data.why(storage, action_id))

    def syncs(request: Request) -> Response:
        return json_response(cache.get("syncs", lambda: _data.sync_graph(storage)))

    def sync_latency(request: Request) -> Response:
        name = request.path_params["name"]
        return json_response(cache.get(("sync", name), lambda: _data.sync_latency(storage, name)))

    def stats(request: Request) -> Response:
        n = _limit(request, default=10)
        return json_response(cache.get(("stats", n), lambda: _data.stats(storage, n)))

    def meta(request: Request) -> Response:
        from actiontrace._version import __version__

        return json_response({"version": __version__, "store": shown})

    async def page(request: Request) -> Response:
        html = (_STATIC / "index.html").read_bytes()
        return Response(html, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _ASSETS:
            raise HTTPException(404)
        return Response((_STATIC / name).read_bytes(), media_type=_ASSETS[name],
                        headers={"Cache-Control": "no-cache"})

    async def not_found(request: Request) -> Response:
        return error_response(404, f"no endpoint {request.url.path}")

    get = ["GET"]
    routes = [
        Route("/", page, methods=get),
        Route("/static/{name}", asset, methods=get),
        Route("/api/flows", endpoint(flows), methods=get),
        Route("/api/flows/{token}", endpoint(flow), methods=get),
        Route("/api/actions", endpoint(find), methods=get),
        Route("/api/actions/{id}", endpoint(action), methods=get),
        Route("/api/actions/{id}/chain", endpoint(chain), methods=get),
        Route("/api/actions/{id}/why", endpoint(why), methods=get),
        Route("/api/synchronizations", endpoint(syncs), methods=get),
        Route("/api/synchronizations/{name:path}", endpoint(sync_latency), methods=get),
        Route("/api/stats", endpoint(stats), methods=get),
        Route("/api/meta", endpoint(meta), methods=get),
        Route("/api/{rest:path}", not_found, methods=get),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        if request.url.path.startswith("/api/") or status != 404:
            return error_response(status, str(detail))
        return Response("not found\n", status_code=404, media_type="text/plain")

    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    return TokenGate(app, token=token, allowed_hosts=allowed_hosts)


_PAGE_HEADERS = {
    # Everything the page loads is ours: no other origin, no inline script.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _status(request: Request) -> Any:
    raw = _text(request, "status")
    if raw not in (None, "ok", "error", "running"):
        raise ApiError(400, f"status must be ok, error or running, got {raw!r}")
    return raw


def _describe(exc: BaseException) -> str:
    """One line about a failure, passwords masked."""
    from actiontrace._cli_support import describe_error as describe
    from actiontrace.storage._sql import mask_url

    return " ".join(mask_url(describe(exc)).split())


def store_label(storage: TraceStorage, url: str | None = None) -> str:
    """What store this is, without any credentials: a SQLite URL (``url`` as the user
    gave it, when it is one), else ``dialect://host:port/db``."""
    if url is not None and url.startswith("sqlite:"):
        from actiontrace.storage._sql import mask_url

        return mask_url(url)  # (masked: sqlite+pysqlcipher URLs hold a passphrase)
    engine = getattr(storage, "engine", None)
    if engine is None:
        return type(storage).__name__
    db = engine.url
    if db.get_backend_name() == "sqlite":
        path = db.database or ":memory:"
        if path.startswith("file:"):  # opened read-only as a URI (make_engine)
            path = unquote(path[len("file:"):])
        return f"sqlite:///{path}"
    host = db.host or "localhost"
    port = f":{db.port}" if db.port else ""
    return f"{db.get_backend_name()}://{host}{port}/{db.database or ''}"


# -- the token gate ----------------------------------------------------------------------------

_BEARER = re.compile(r"(?:Bearer|token)\s+(\S+)", re.IGNORECASE)


class TokenGate:
    """ASGI middleware: the token on every request, and only the expected ``Host``.

    A token is accepted from an ``Authorization: Bearer <token>`` header, a ``token``
    query parameter or the cookie this gate sets. A page opened with ``?token=`` gets
    the cookie and is redirected to the same address without the token, so the token
    stays out of the browser's history and the page's own requests. Without a token
    the answer is 401; with a wrong one, 403 (JSON under ``/api/``, text elsewhere).
    """

    def __init__(self, app: ASGIApp, token: str | None, allowed_hosts: set[str] | None) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.allowed_hosts is not None and _host(request) not in self.allowed_hosts:
            await self._refuse(request, 403, "this viewer answers only to its own address")(
                scope, receive, send)
            return
        if self.token is None:
            await self.app(scope, receive, send)
            return
        given = self._given(request)
        if given is None:
            await self._refuse(request, 401, "this viewer needs its token: open the address "
                               "printed when it started (it ends in ?token=...)")(
                scope, receive, send)
            return
        if not hmac.compare_digest(given.encode(), self.token):
            await self._refuse(request, 403, "wrong token")(scope, receive, send)
            return
        if "token" in request.query_params and not request.url.path.startswith("/api/"):
            # A page opened with the token: keep it in a cookie, drop it from the address.
            query = urlencode([(k, v) for k, v in request.query_params.multi_items()
                               if k != "token"])
            target = request.url.path + (f"?{query}" if query else "")
            response = RedirectResponse(target, status_code=303)
            response.set_cookie(COOKIE, given, httponly=True, samesite="strict",
                                secure=request.url.scheme == "https")
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _given(request: Request) -> str | None:
        header = request.headers.get("authorization")
        if header:
            m = _BEARER.fullmatch(header.strip())
            return m.group(1) if m else header.strip()
        return request.query_params.get("token") or request.cookies.get(COOKIE)

    @staticmethod
    def _refuse(request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return error_response(status, message)
        return Response(f"actiontrace viewer: {message}\n", status_code=status,
                        media_type="text/plain; charset=utf-8")


def _host(request: Request) -> str:
    raw = request.headers.get("host", "")
    if raw.startswith("["):
        return raw[1:].partition("]")[0].lower()
    return raw.rpartition(":")[0].lower() if raw.count(":") == 1 else raw.lower()


def loopback_hosts(host: str) -> set[str] | None:
    """The ``Host`` names a viewer bound to ``host`` answers to, or None (any).

    Bound to loopback without a token, only loopback names are accepted: otherwise a
    page on another site could reach it through DNS rebinding.
    """
    try:
        is_loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        is_loopback = host.lower() in _LOOPBACK_NAMES
    return set(_LOOPBACK_NAMES) | {host.lower()} if is_loopback else None
