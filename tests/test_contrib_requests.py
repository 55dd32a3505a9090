"""actiontrace.contrib.requests (docs/reference.md, Across services): every request in a flow is an action and carries headers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
import requests

import actiontrace
from actiontrace import extract, flow, synchronization
from actiontrace.contrib import requests as at_requests
from web_support import client_actions as clients
from web_support import closed_port


@pytest.fixture
def tracer() -> Iterator[actiontrace.ActionTracer]:
    tracer = actiontrace.configure()
    at_requests.instrument()
    yield tracer
    at_requests.uninstrument()


class TestRequests:
    def test_request_recorded_and_headers_sent(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """requests.get in a flow: an http::Client::request whose id is the remote trigger."""
        with flow("c::Main::run") as token:
            got = requests.get(f"{echo}/a?page=1", timeout=10).json()
        (req,) = clients(tracer)
        assert (req.inputs, req.outputs) == ({"method": "GET", "url": f"{echo}/a"}, {"status": 200})
        ctx = extract(got)
        assert ctx is not None and (ctx.flow_token, ctx.trigger) == (token, req.id)

    def test_sessions_and_synchronizations(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """A Session's requests sent by a sync carry the sync's name."""

        @synchronization("Sync Prices")
        def sync_prices() -> list[dict[str, str]]:
            with requests.Session() as s:
                return [s.post(f"{echo}/p", json={}, timeout=10).json() for _ in range(2)]

        with flow("c::Main::run"):
            got = sync_prices()
        names = {extract(g).synchronization for g in got}  # type: ignore[union-attr]
        assert names == {"Sync Prices"}
        assert len({g["traceparent"] for g in got}) == 2

    def test_transport_error(self, tracer: actiontrace.ActionTracer) -> None:
        """A refused connection is an error action, and the exception still reaches the caller."""
        with flow("c::Main::run"), pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{closed_port()}/", timeout=10)
        (req,) = clients(tracer)
        assert req.status == "error"

    def test_outside_a_flow_and_undone(self, echo: str) -> None:
        """Outside a flow nothing happens; uninstrument() restores Session.send."""
        original = vars(requests.Session)["send"]
        at_requests.instrument()
        at_requests.instrument()
        assert vars(requests.Session)["send"].__wrapped__ is original
        assert "traceparent" not in requests.get(f"{echo}/x", timeout=10).json()
        at_requests.uninstrument()
        assert vars(requests.Session)["send"] is original

    def test_instrument_before_import(self, echo: str) -> None:
        """Instrumenting before requests is imported applies when it is imported."""
        code = textwrap.dedent(f"""
            import sys
            from actiontrace.contrib import requests as at_requests
            at_requests.instrument()
            assert "requests" not in sys.modules
            import requests, actiontrace
            with actiontrace.flow("c::Main::run"):
                got = requests.get("{echo}/late", timeout=10).json()
            assert got["traceparent"].startswith("00-"), got
            print("ok")
        """)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=False)
        assert res.stdout.strip() == "ok", res.stderr
