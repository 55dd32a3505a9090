"""``actiontrace serve``: a read-only web viewer over a store (docs/viewer.md).

Needs the ``web`` extra (``pip install 'actiontrace[web]'``: Starlette and uvicorn).
``create_app(storage)`` is the ASGI application; ``serve(...)`` runs it with uvicorn.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any

from actiontrace._viewer._app import create_app, loopback_hosts, store_label

__all__ = ["TOKEN_ENV", "create_app", "plan_token", "serve"]

TOKEN_ENV = "ACTIONTRACE_SERVE_TOKEN"


def plan_token(host: str, token: str | None) -> str | None:
    """The token the viewer will require: the one given, else a new one unless loopback."""
    if token:
        return token
    if loopback_hosts(host) is not None:
        return None
    return secrets.token_urlsafe(24)


def serve(storage: Any, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          echo: Callable[[str], None] = print, url: str | None = None) -> None:
    """Serve the viewer over ``storage`` until interrupted.

    Args:
        storage: the store to read.
        host: the address to bind; anything but loopback requires a token.
        port: the port (0: any free port; the one chosen is printed).
        token: the token to require (default: none on loopback, a new one elsewhere).
        echo: where the start-up lines go (the address, with the token).
        url: the store's URL as the user gave it (a SQLite one is shown as it is).
    """
    import asyncio
    import socket

    import uvicorn

    required = plan_token(host, token)
    label = store_label(storage, url)
    app = create_app(storage, token=required, label=label,
                     allowed_hosts=None if required else loopback_hosts(host))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = socket.gethostname()
    address = f"http://{shown}:{bound}/"
    echo(f"actiontrace viewer of {label}")
    echo(f"  {address}?token={required}" if required else f"  {address}")
    if required and not token:
        echo("  (a new token: pass --token or $ACTIONTRACE_SERVE_TOKEN to choose one)")
    echo("Press Ctrl-C to stop.")
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        # The access log would show ?token=... of every page opened with it.
        server_header=False,
    )
    server = uvicorn.Server(config)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the Ctrl-C it handled; stopping is what was asked
    finally:
        sock.close()
    echo("Stopped.")
