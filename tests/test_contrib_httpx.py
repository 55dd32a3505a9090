"""actiontrace.contrib.httpx (docs/reference.md, Across services): every request in a flow is an action and carries headers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import httpx
import pytest

import actiontrace
from actiontrace import extract, flow, synchronization
from actiontrace.contrib import httpx as at_httpx
from web_support import client_actions as clients
from web_support import closed_port


@pytest.fixture
def tracer() -> Iterator[actiontrace.ActionTracer]:
    tracer = actiontrace.configure()
    at_httpx.instrument()
    yield tracer
    at_httpx.uninstrument()


class TestSync:
    def test_request_recorded_and_headers_sent(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """Inside a flow: one http::Client::request per request, its id in the traceparent."""
        with flow("c::Main::run") as token:
            got = httpx.get(f"{echo}/a?q=secret#frag").json()
        (req,) = clients(tracer)
        assert (req.inputs, req.outputs, req.flow_token) == (
            {"method": "GET", "url": f"{echo}/a"}, {"status": 200}, token)
        ctx = extract(got)
        assert ctx is not None and (ctx.flow_token, ctx.trigger, ctx.synchronization) == (
            token, req.id, "remote")

    def test_each_request_has_its_own_parent_id(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """Three requests, three client actions, three parent-ids."""
        with flow("c::Main::run"), httpx.Client() as client:
            sent = [client.get(f"{echo}/{i}").json()["traceparent"] for i in range(3)]
        assert len({s.split("-")[2] for s in sent}) == 3
        assert len(clients(tracer)) == 3

    def test_synchronization_name_is_sent(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """A request a sync sends: the client action has the sync's edge, the name is sent."""

        @synchronization("NotifyShipping")
        def notify() -> dict[str, str]:
            return httpx.post(f"{echo}/ship", json={}).json()

        with flow("c::Main::run") as token:
            got = notify()
        (req,) = clients(tracer)
        assert tracer.find_producing_sync(req.id) == "NotifyShipping"
        ctx = extract(got)
        assert ctx is not None and (ctx.trigger, ctx.synchronization) == (req.id, "NotifyShipping")
        assert ctx.flow_token == token

    def test_status_and_transport_errors(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """A 404 is ok with its status; a refused connection is an error and still raises."""
        with flow("c::Main::run"):
            httpx.get(f"{echo}/missing")
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://127.0.0.1:{closed_port()}/")
        ok, failed = clients(tracer)
        assert ok.outputs == {"status": 404} and ok.status == "ok"
        assert failed.status == "error" and failed.outputs["error_type"] == "httpx.ConnectError"

    def test_outside_a_flow_nothing_is_recorded(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """Requests outside any flow go through untouched."""
        got = httpx.get(f"{echo}/plain").json()
        assert "traceparent" not in got and clients(tracer) == []

    def test_credentials_never_recorded(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """user:password in the URL is not part of the recorded url."""
        with flow("c::Main::run"):
            httpx.get(echo.replace("http://", "http://user:pw@") + "/x")
        assert clients(tracer)[0].inputs["url"] == f"{echo}/x"


class TestAsync:
    async def test_async_client(self, tracer: actiontrace.ActionTracer, echo: str) -> None:
        """AsyncClient requests are recorded and carry headers, concurrently too."""
        import asyncio

        with flow("c::Main::run") as token:
            async with httpx.AsyncClient() as client:
                got = await asyncio.gather(*(client.get(f"{echo}/{i}") for i in range(3)))
        reqs = clients(tracer)
        assert len(reqs) == 3 and {r.flow_token for r in reqs} == {token}
        triggers = {extract(g.json()).trigger for g in got}  # type: ignore[union-attr]
        assert triggers == {r.id for r in reqs}
        assert all(r.duration_us is not None for r in reqs)


class TestInstrumentation:
    def test_idempotent_and_undone(self, echo: str) -> None:
        """instrument() twice wraps once; uninstrument() restores the original."""
        original = vars(httpx.Client)["send"]
        at_httpx.instrument()
        at_httpx.instrument()
        wrapped = vars(httpx.Client)["send"]
        assert wrapped is not original and wrapped.__wrapped__ is original
        at_httpx.uninstrument()
        assert vars(httpx.Client)["send"] is original
        at_httpx.uninstrument()  # a second undo is a no-op
        tracer = actiontrace.configure()
        with flow("c::Main::run"):
            assert "traceparent" not in httpx.get(f"{echo}/x").json()
        assert clients(tracer) == []

    def test_instrument_before_import(self, echo: str) -> None:
        """Instrumenting before httpx is imported applies when it is imported."""
        code = textwrap.dedent(f"""
            import sys
            from actiontrace.contrib import httpx as at_httpx
            at_httpx.instrument()
            assert "httpx" not in sys.modules
            import httpx, actiontrace
            with actiontrace.flow("c::Main::run"):
                got = httpx.get("{echo}/late").json()
            assert got["traceparent"].startswith("00-"), got
            print("ok")
        """)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=60, check=False)
        assert res.stdout.strip() == "ok", res.stderr
