"""A real ``actiontrace serve`` in a subprocess, and a small HTTP client for it.

Used by tests/test_viewer.py (the JSON API) and tests/test_viewer_browser.py (Chromium).
The server binds port 0 and prints its address; the helper reads it from stdout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

import msgspec

EXE = Path(sys.executable).parent / "actiontrace"
ADDRESS = re.compile(r"^  (http://\S+?:(\d+)/)(?:\?token=(\S+))?$")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The installed ``actiontrace`` command (``$ACTIONTRACE_URL`` left out)."""
    env = {k: v for k, v in os.environ.items() if k != "ACTIONTRACE_URL"}
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env, cwd=cwd)


def demo_store(path: Path, runs: int = 1, relative: bool = False) -> str:
    """The URL of a SQLite file at ``path`` that ``actiontrace demo`` ran into ``runs``
    times (``relative``: ``sqlite:///<name>``, for commands run in its directory)."""
    url = f"sqlite:///{path.name if relative else path}"
    for _ in range(runs):
        res = run_cli("--url", url, "demo", cwd=path.parent)
        assert res.returncode == 0, res.stderr
    return url


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return msgspec.json.decode(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


class Server:
    """``actiontrace --url URL serve --port 0 ARGS...`` until ``stop()``."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None,
                 host: str = "127.0.0.1", cwd: Path | None = None) -> None:
        full_env = {k: v for k, v in os.environ.items()
                    if k not in ("ACTIONTRACE_URL", "ACTIONTRACE_SERVE_TOKEN")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [str(EXE), "--url", url, "serve", "--host", host, "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env, cwd=cwd,
        )
        self.out_lines: list[str] = []
        self.err = ""
        self.base, self.port, self.token = self._read_address()
        self.connect = f"http://127.0.0.1:{self.port}"
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()
        self._wait_until_serving()

    def _read_address(self) -> tuple[str, int, str | None]:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out_lines.append(line.rstrip("\n"))
            m = ADDRESS.match(line.rstrip("\n"))
            if m:
                return m.group(1), int(m.group(2)), m.group(3)
        self.proc.wait(30)
        raise AssertionError(f"serve printed no address: {self.out_lines} {self.proc.stderr.read()}")  # type: ignore[union-attr]

    def _read_rest(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out_lines.append(line.rstrip("\n"))

    def _wait_until_serving(self, deadline_s: float = 30.0) -> None:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                urllib.request.urlopen(f"{self.connect}/static/viewer.css", timeout=5)
                return
            except urllib.error.HTTPError:
                return  # it answers (perhaps 401: a token is needed)
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not start: {self.stop()}") from None
                time.sleep(0.05)

    def get(self, path: str, headers: dict[str, str] | None = None, method: str = "GET",
            token: bool = True) -> Response:
        """Request ``path`` (with the server's token, if it has one and ``token``)."""
        hdrs = dict(headers or {})
        if token and self.token and "Authorization" not in hdrs:
            hdrs["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(f"{self.connect}{path}", headers=hdrs, method=method)
        try:
            with _OPENER.open(req, timeout=30) as resp:
                return Response(resp.status, dict(resp.headers.items()), resp.read())
        except urllib.error.HTTPError as exc:
            return Response(exc.code, dict(exc.headers.items()), exc.read())

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> str:
        """Stop the server (Ctrl-C) and return everything it printed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self._drain.join(10)
        self.returncode = self.proc.returncode
        assert self.proc.stderr is not None
        self.err += self.proc.stderr.read()
        self.proc.stderr.close()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return "\n".join(self.out_lines) + "\n" + self.err
