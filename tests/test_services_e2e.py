"""One flow across three real processes over real sockets (docs/reference.md, Across services), into one store.

The test process is the client: its flow calls service A over HTTP; A's synchronization
``OrderPlaced`` calls service B; B records ``player::Player::play``. All three write to
one PostgreSQL schema (and, in a second run, one SQLite file). The causal chain from
B's action must walk back to the client's root across both services, with the
synchronizations' names on the edges that cross them, in one flow.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import requests

import actiontrace
from actiontrace import flow, synchronization
from actiontrace.contrib import httpx as at_httpx
from actiontrace.contrib import requests as at_requests
from actiontrace.storage._migrate import upgrade

SUPPORT = Path(__file__).with_name("services_support.py")


class Service:
    """``services_support.py KIND URL [NEXT]`` as a child process; ``url`` once it listens."""

    def __init__(self, kind: str, store: str, next_url: str | None = None) -> None:
        args = [sys.executable, str(SUPPORT), kind, store, *([next_url] if next_url else [])]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 60
        line = ""
        while time.monotonic() < deadline and not line.startswith("PORT "):
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if ready:
                line = self.proc.stdout.readline()  # type: ignore[union-attr]
                if not line and self.proc.poll() is not None:
                    break
        if not line.startswith("PORT "):
            raise RuntimeError(f"{kind} did not start: {self.stop()[-3000:]}")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"

    def stop(self) -> str:
        self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def three_services() -> Iterator[object]:
    started: list[Service] = []

    def start(kind_a: str, kind_b: str, store: str) -> str:
        b = Service(kind_b, store)
        started.append(b)
        a = Service(kind_a, store, b.url)
        started.append(a)
        return a.url

    yield start
    for service in started:
        service.stop()


def run_client(a_url: str, store: str, wsgi: bool) -> tuple[actiontrace.ActionTracer, object]:
    tracer = actiontrace.configure(url=store, module="client")
    instrument = at_requests if wsgi else at_httpx
    instrument.instrument()

    @synchronization("OnClick")
    def on_click() -> int:
        if wsgi:
            return requests.get(f"{a_url}/order", params={"passage_id": 42}, timeout=30).status_code
        return httpx.get(f"{a_url}/order", params={"passage_id": 42}, timeout=30).status_code

    try:
        with flow("client::Web::click") as token:
            assert on_click() == 200
    finally:
        instrument.uninstrument()
    assert tracer.flush(30)
    return tracer, token


def wait_for_chain(tracer: actiontrace.ActionTracer) -> list[actiontrace.ActionRecord]:
    """B's action's causal chain once all three processes' parts are stored (deadline 30 s).

    The services store their parts after their responses went out, so the client may
    read before them.
    """
    deadline = time.monotonic() + 30
    chain: list[actiontrace.ActionRecord] = []
    while time.monotonic() < deadline:
        found = tracer.find_actions(concept_uri="player::Player", action="play")
        if found:
            chain = tracer.get_causal_chain(found[0].id)
            if len(chain) >= 6:
                return chain
        time.sleep(0.1)
    return chain


def check_chain(tracer: actiontrace.ActionTracer, token: object, a: str, b: str) -> None:
    chain = wait_for_chain(tracer)
    play = chain[-1] if chain else None
    assert play is not None, "service B's action never reached the store"
    names = [f"{r.concept_uri}::{r.action}" for r in chain]
    assert names == [
        "client::Web::click",
        "http::Client::request",       # in the client
        f"{a}::HTTP::request",         # service A
        "http::Client::request",       # in A, sent by OrderPlaced
        f"{b}::HTTP::request",         # service B
        "player::Player::play",
    ]
    syncs = [tracer.find_producing_sync(r.id) for r in chain]
    assert syncs == [None, "OnClick", "OnClick", "OrderPlaced", "OrderPlaced", None]
    assert {r.flow_token for r in chain} == {token}
    assert play.inputs == {"passage_id": 42} and chain[4].outputs == {"status": 200}
    trace = tracer.get_trace(token)  # type: ignore[arg-type]
    assert trace.root_action_id == chain[0].id
    assert set(trace.actions) == {r.id for r in chain}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One store for the three processes: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/shared.db"
    else:
        url = request.getfixturevalue("pg_url")
    upgrade(url)
    return url


class TestThreeServices:
    @pytest.mark.parametrize("server", ["asgi", "wsgi"])
    def test_chain_crosses_both_services(self, three_services: object, shared_store: str,
                                         server: str) -> None:
        """asgi: uvicorn + Starlette and httpx; wsgi: Flask on wsgiref and requests."""
        a, b = f"{server}-a", f"{server}-b"
        a_url = three_services(a, b, shared_store)  # type: ignore[operator]
        tracer, token = run_client(a_url, shared_store, wsgi=server == "wsgi")
        check_chain(tracer, token, a, b)
