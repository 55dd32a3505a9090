"""``actiontrace serve`` without a browser: the JSON API, paging, the token, read-only.

Every test talks HTTP to a real uvicorn started by the installed command on 127.0.0.1
(tests/viewer_support.py), over a SQLite file the demo ran into twice. The browser
tests are in tests/test_viewer_browser.py; the 1M-action paging figure is a benchmark
(benchmarks/viewer_paging.py), never asserted here.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import socket
import subprocess
import sys
import threading
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa

from actiontrace import ActionFilter, SqlAlchemyTraceStorage
from actiontrace._viewer import plan_token
from actiontrace._viewer._app import loopback_hosts
from actiontrace._viewer._data import Cache, parse_cursor
from viewer_support import Server, demo_store, run_cli

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "actiontrace" / "_viewer" / "static"


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file the demo ran into twice (12 flows)."""
    return demo_store(tmp_path_factory.mktemp("viewer") / "x.db", runs=2)


@pytest.fixture(scope="module")
def server(demo_url: str) -> Iterator[Server]:
    """The viewer over the demo store, knowing the demo's declared reactions."""
    with Server(demo_url, "--import", "actiontrace.demo") as srv:
        yield srv


@pytest.fixture(scope="module")
def store(demo_url: str) -> Iterator[SqlAlchemyTraceStorage]:
    s = SqlAlchemyTraceStorage(demo_url)
    yield s
    s.close()


def play_42(store: SqlAlchemyTraceStorage) -> Any:
    return store.find_actions(ActionFilter(action="play_passage", inputs={"passage_id": 42}))[0]


def next_of(resp: Any) -> str | None:
    link = resp.headers.get("link")
    if link is None:
        return None
    assert link.endswith('>; rel="next"')
    return link[1:link.index(">")]


class TestFlows:
    def test_default_page(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """/api/flows: newest first, the contract's fields, root as concept_uri::action."""
        resp = server.get("/api/flows")
        assert resp.status == 200 and resp.headers["content-type"] == "application/json"
        rows = resp.json()
        assert [r["flow_token"] for r in rows] == [str(f.flow_token) for f in store.list_flows(50)]
        assert len(rows) == 12 and next_of(resp) is None
        first = rows[0]
        assert {"flow_token", "root", "actions", "created_at"} <= set(first)
        assert first["root"] == "wkmp-ap::Web::handle_request"
        assert first["actions"] == len(store.get_trace(uuid.UUID(first["flow_token"])).actions)
        assert [r["created_at"] for r in rows] == sorted((r["created_at"] for r in rows), reverse=True)

    def test_paging_by_link(self, server: Server) -> None:
        """limit=5 gives pages of 5, 5 and 2 through Link rel=next; no flow twice or lost."""
        everything = [r["flow_token"] for r in server.get("/api/flows").json()]
        seen: list[str] = []
        path: str | None = "/api/flows?limit=5"
        sizes = []
        while path is not None:
            resp = server.get(path)
            assert resp.status == 200
            page = resp.json()
            sizes.append(len(page))
            seen += [r["flow_token"] for r in page]
            path = next_of(resp)
        assert sizes == [5, 5, 2] and seen == everything

    def test_filters(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """status=error, concept and action filters, and a time range."""
        failed = server.get("/api/flows?status=error").json()
        assert len(failed) == 2 and all(r["errors"] == 2 and r["status"] == "error" for r in failed)
        selecting = server.get("/api/flows?concept=wkmp-ap::Selector&action=select_next").json()
        wanted = {str(r.flow_token) for r in store.find_actions(ActionFilter(action="select_next"))}
        assert {r["flow_token"] for r in selecting} == wanted and wanted
        newest = server.get("/api/flows?limit=1").json()[0]
        since = server.get(f"/api/flows?since={newest['created_at']}").json()
        assert [r["flow_token"] for r in since] == [newest["flow_token"]]
        until = server.get(f"/api/flows?until={newest['created_at'] - 1}").json()
        assert len(until) == 11 and newest["flow_token"] not in {r["flow_token"] for r in until}

    def test_flow_whose_root_is_not_stored(self, tmp_path: Path) -> None:
        """A flow known only from another process's part: root null, its actions listed."""
        url = f"sqlite:///{tmp_path / 'part.db'}"
        script = (
            "import sys, uuid, actiontrace\n"
            "actiontrace.configure(url=sys.argv[1])\n"
            "@actiontrace.action(concept='svc::Worker')\n"
            "def work(n): return n\n"
            "with actiontrace.continue_flow(uuid.UUID(int=7)):\n"
            "    work(1)\n"
            "actiontrace.get_tracer().shutdown()\n"
        )
        res = subprocess.run([sys.executable, "-c", script, url], capture_output=True,
                             text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        with Server(url) as srv:
            (row,) = srv.get("/api/flows").json()
            assert row["flow_token"] == str(uuid.UUID(int=7)) and row["root"] is None
            assert row["actions"] == 1
            trace = srv.get(f"/api/flows/{row['flow_token']}").json()
            assert [a["action"] for a in trace["actions"].values()] == ["work"]

    def test_head(self, server: Server) -> None:
        """HEAD answers like GET, without a body."""
        resp = server.get("/api/flows", method="HEAD")
        assert resp.status == 200 and resp.body == b""

    @pytest.mark.parametrize("query, message", [
        ("limit=0", "limit must be between"), ("limit=x", "limit must be an integer"),
        ("before=nope", "malformed before cursor"), ("status=bad", "status must be"),
        ("since=yesterday-ish", "since:"),
    ])
    def test_bad_parameters(self, server: Server, query: str, message: str) -> None:
        """A bad parameter answers 400 with a JSON error saying which."""
        resp = server.get(f"/api/flows?{query}")
        assert resp.status == 400 and message in resp.json()["error"]


class TestOneFlow:
    def test_trace_as_to_json(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """/api/flows/<token> is the trace's to_json(), byte for byte."""
        token = store.list_flows(1)[0].flow_token
        resp = server.get(f"/api/flows/{token}")
        assert resp.status == 200 and resp.text == store.get_trace(token).to_json()

    def test_unique_prefix(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """A unique prefix of a token finds the flow; an unknown one is a 404 JSON error."""
        token = str(store.list_flows(1)[0].flow_token)
        for n in range(8, 37):
            if len(store.resolve_prefix(token[:n], "flow")) == 1:
                break
        assert server.get(f"/api/flows/{token[:n]}").json()["flow_token"] == token

    def test_unique_suffix(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """A unique ending of an id finds it too (UUIDv7 ids share their first digits)."""
        play = play_42(store)
        ending = play.id.hex[-12:]
        assert store.resolve_suffix(ending, "action") == [play.id]
        chain = server.get(f"/api/actions/{ending}/chain").json()
        assert chain[-1]["id"] == str(play.id)
        flow_end = play.flow_token.hex[-12:]
        assert server.get(f"/api/flows/{flow_end}").json()["flow_token"] == str(play.flow_token)

    @pytest.mark.parametrize("path", [
        "/api/flows/{zero}", "/api/actions/{zero}", "/api/actions/{zero}/chain",
        "/api/actions/{zero}/why", "/api/actions/ffff0000/chain", "/api/nothing/here",
    ])
    def test_unknown_ids_are_404_json(self, server: Server, path: str) -> None:
        """Unknown ids (and endpoints) answer 404 with {"error": ...}."""
        resp = server.get(path.format(zero=uuid.UUID(int=0)))
        assert resp.status == 404 and resp.headers["content-type"] == "application/json"
        assert resp.json()["error"]

    def test_malformed_id_is_400_json(self, server: Server) -> None:
        """An id that is not hex answers 400 with a JSON error."""
        resp = server.get("/api/flows/not-a-token")
        assert resp.status == 400 and "malformed" in resp.json()["error"]


class TestActions:
    def test_chain_root_first(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """/api/actions/<id>/chain is get_causal_chain: root first, the action last."""
        play = play_42(store)
        chain = server.get(f"/api/actions/{play.id}/chain").json()
        expected = msgspec.json.decode(msgspec.json.encode(store.get_causal_chain(play.id)))
        assert chain == expected
        assert [c["action"] for c in chain] == ["handle_request", "validate_token", "play_passage"]

    def test_why_names_the_synchronizations(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """/api/actions/<id>/why adds the synchronization of each step (as `why --json`)."""
        steps = server.get(f"/api/actions/{play_42(store).id}/why").json()
        assert [s["synchronization"] for s in steps] == [None, "OnWebRequest", "OnAuthSuccess"]

    def test_detail_with_log_events(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """/api/actions/<id>: the record, who produced it, and its log events."""
        play = play_42(store)
        detail = server.get(f"/api/actions/{play.id}").json()
        assert detail["action"]["id"] == str(play.id)
        assert detail["synchronization"] == "OnAuthSuccess"
        assert [(e["level"], e["event"]) for e in detail["logs"]] == [("info", "playing")]

    def test_search_by_input_value(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """/api/actions?input=passage_id=42 is find_actions(inputs=...), oldest first."""
        rows = server.get("/api/actions?input=passage_id%3D42").json()
        expected = store.find_actions(ActionFilter(inputs={"passage_id": 42}))
        assert [r["id"] for r in rows] == [str(r.id) for r in expected]
        assert "play_passage" in {r["action"] for r in rows}
        only = server.get("/api/actions?input=passage_id%3D42&action=play_passage").json()
        assert {r["action"] for r in only} == {"play_passage"} and len(only) == 2

    def test_search_pages_by_link(self, server: Server, store: SqlAlchemyTraceStorage) -> None:
        """Search results page through Link rel=next, oldest first, none twice."""
        everything = [str(r.id) for r in store.find_actions(ActionFilter(concept_uri="wkmp-ap"))]
        seen: list[str] = []
        path: str | None = "/api/actions?concept=wkmp-ap&limit=7"
        while path is not None:
            resp = server.get(path)
            seen += [r["id"] for r in resp.json()]
            path = next_of(resp)
        assert seen == everything and len(everything) > 14

    def test_bad_input(self, server: Server) -> None:
        """An input filter without '=' is a 400 JSON error."""
        resp = server.get("/api/actions?input=passage_id")
        assert resp.status == 400 and "KEY=VALUE" in resp.json()["error"]


class TestAnalysis:
    def test_synchronizations(self, server: Server) -> None:
        """Links seen in the store, the imported module's declared reactions, latencies."""
        data = server.get("/api/synchronizations").json()
        links = {(x["from"], x["synchronization"], x["to"]): x["count"] for x in data["links"]}
        assert links[("wkmp-ap::Authentication::validate_token", "OnAuthSuccess",
                      "wkmp-ap::AudioPlayer::play_passage")] == 10
        declared = {(d["when"], d["synchronization"]): d["fired"] for d in data["declared"]}
        assert declared == {
            ("wkmp-ap::AudioPlayer::play_passage", "RecordPlaybackForCooldown"): True,
            ("wkmp-ap::Queue::dequeue", "AutoSelectWhenQueueLow"): True,
        }
        by_name = {s["synchronization"]: s for s in data["syncs"]}
        on_auth = by_name["OnAuthSuccess"]
        assert on_auth["declared"] is False and on_auth["count"] == 18
        assert on_auth["latency_us"]["count"] == 18 and on_auth["latency_us"]["p99"] is not None

    def test_stats_as_the_command_line(self, server: Server, demo_url: str) -> None:
        """/api/stats holds what `actiontrace stats --json` prints."""
        res = run_cli("--url", demo_url, "stats", "--json")
        assert res.returncode == 0, res.stderr
        assert server.get("/api/stats").json() == msgspec.json.decode(res.stdout)

    def test_meta_names_the_store(self, server: Server, demo_url: str) -> None:
        """/api/meta: the version and the store's path."""
        assert server.get("/api/meta").json()["store"] == demo_url


class TestPage:
    def test_page_and_assets(self, server: Server) -> None:
        """The page and every asset it references are served from the package."""
        page = server.get("/")
        assert page.status == 200 and "text/html" in page.headers["content-type"]
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for asset in ("static/viewer.css", "static/dagre.min.js", "static/viewer.js"):
            assert asset in page.text
            assert server.get(f"/{asset}").status == 200
        assert server.get("/static/README.md").status == 404

    def test_no_outside_addresses(self) -> None:
        """No asset loads anything from another origin (no CDN)."""
        for path in STATIC.iterdir():
            text = path.read_text("utf-8")
            for url in (u for u in text.split() if "://" in u):
                assert "www.w3.org/2000/svg" in url or path.suffix in (".md", ".dagre"), (path, url)

    def test_assets_ship_in_the_wheel(self, tmp_path: Path) -> None:
        """The built wheel holds the page, its script, styles, dagre and dagre's licence."""
        res = subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "-q", "-w", str(tmp_path), str(ROOT)],
            capture_output=True, text=True, timeout=300, check=False,
        )
        assert res.returncode == 0, res.stderr
        (wheel,) = tmp_path.glob("actiontrace-*.whl")
        names = set(zipfile.ZipFile(wheel).namelist())
        for name in ("index.html", "viewer.js", "viewer.css", "dagre.min.js", "LICENSE.dagre"):
            assert f"actiontrace/_viewer/static/{name}" in names


class TestReadOnly:
    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
    def test_only_get(self, server: Server, method: str) -> None:
        """Every route refuses anything but GET (405)."""
        for path in ("/", "/api/flows", "/api/stats", "/static/viewer.js"):
            assert server.get(path, method=method).status == 405, (method, path)

    def test_store_unchanged(self, demo_url: str, tmp_path: Path) -> None:
        """A viewer session leaves the database file's bytes exactly as they were."""
        path = Path(sa.make_url(demo_url).database or "")
        copy = tmp_path / "copy.db"
        copy.write_bytes(path.read_bytes())
        before = hashlib.sha256(copy.read_bytes()).hexdigest()
        srv = Server(f"sqlite:///{copy}")
        try:
            for p in ("/", "/api/flows", "/api/stats", "/api/synchronizations",
                      "/api/actions?input=passage_id%3D42"):
                assert srv.get(p).status == 200
            token = srv.get("/api/flows?limit=1").json()[0]["flow_token"]
            assert srv.get(f"/api/flows/{token}").status == 200
        finally:
            srv.stop()
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == before


class TestToken:
    def test_loopback_needs_none(self, server: Server) -> None:
        """Bound to 127.0.0.1 with no --token, pages answer without one."""
        assert server.token is None and server.get("/api/flows?limit=1").status == 200

    def test_loopback_refuses_other_host_names(self, server: Server) -> None:
        """Without a token, a request naming another host (DNS rebinding) is refused."""
        resp = server.get("/api/flows", headers={"Host": f"evil.example:{server.port}"})
        assert resp.status == 403 and resp.json()["error"]
        assert server.get("/", headers={"Host": f"localhost:{server.port}"}).status == 200

    def test_given_token(self, demo_url: str) -> None:
        """With --token: none 401, wrong 403, right 200, on pages, assets and the API."""
        srv = Server(demo_url, "--token", "right-token-123")
        try:
            assert srv.token == "right-token-123"
            for path in ("/", "/static/viewer.js", "/api/flows", "/api/stats"):
                missing = srv.get(path, token=False)
                wrong = srv.get(path, headers={"Authorization": "Bearer wrong"})
                right = srv.get(path)
                assert (missing.status, wrong.status, right.status) == (401, 403, 200), path
                assert srv.get(f"{path}?token=wrong", token=False).status == 403
            assert "needs its token" in srv.get("/api/flows", token=False).json()["error"]
            assert srv.get("/api/flows?token=right-token-123", token=False).status == 200
        finally:
            srv.stop()

    def test_token_in_the_address_becomes_a_cookie(self, demo_url: str) -> None:
        """Opening /?token=T redirects to / with an HttpOnly cookie that then suffices."""
        srv = Server(demo_url, "--token", "cookie-token")
        try:
            resp = srv.get("/?token=cookie-token", token=False)
            assert resp.status == 303 and resp.headers["location"] == "/"
            cookie = resp.headers["set-cookie"]
            assert "HttpOnly" in cookie and "SameSite=strict" in cookie
            jar = cookie.split(";")[0]
            assert srv.get("/api/flows", headers={"Cookie": jar}, token=False).status == 200
            bad = jar.split("=")[0] + "=nope"
            assert srv.get("/api/flows", headers={"Cookie": bad}, token=False).status == 403
        finally:
            srv.stop()

    def test_token_from_environment(self, demo_url: str) -> None:
        """$ACTIONTRACE_SERVE_TOKEN is used as --token."""
        srv = Server(demo_url, env={"ACTIONTRACE_SERVE_TOKEN": "env-token"})
        try:
            assert srv.token == "env-token"
            assert srv.get("/api/flows", token=False).status == 401
            assert srv.get("/api/flows").status == 200
        finally:
            srv.stop()

    def test_any_address_generates_one(self, demo_url: str) -> None:
        """Bound to 0.0.0.0 with no token given, one is generated, printed and required."""
        srv = Server(demo_url, host="0.0.0.0")
        try:
            assert srv.token and len(srv.token) >= 24
            assert srv.get("/", token=False).status == 401
            assert srv.get("/").status == 200
        finally:
            out = srv.stop()
        assert "a new token" in out

    def test_plan(self) -> None:
        """Loopback names need no token; other addresses get a fresh one each time."""
        assert plan_token("127.0.0.1", None) is None and plan_token("::1", None) is None
        assert plan_token("localhost", None) is None
        assert plan_token("127.0.0.1", "given") == "given"
        a, b = plan_token("0.0.0.0", None), plan_token("192.168.1.5", None)
        assert a and b and a != b
        assert loopback_hosts("10.0.0.1") is None
        assert "localhost" in (loopback_hosts("127.0.0.1") or set())


class TestCredentials:
    @pytest.mark.postgres
    def test_password_reaches_neither_page_nor_log(self, pg_url: str) -> None:
        """A URL with a password: no response and no line the server prints holds it,
        also when the store fails under the viewer."""
        secret = "Hunter2-secret-pw"
        url = sa.make_url(pg_url).set(password=secret).render_as_string(hide_password=False)
        res = run_cli("--url", url, "demo")
        assert res.returncode == 0, res.stderr
        assert secret not in res.stdout + res.stderr
        srv = Server(url, "--import", "actiontrace.demo")
        try:
            token = srv.get("/api/flows").json()[0]["flow_token"]
            play = srv.get("/api/actions?action=play_passage&limit=1").json()[0]["id"]
            bodies = [srv.get(p) for p in (
                "/", "/static/viewer.js", "/api/meta", "/api/flows", f"/api/flows/{token}",
                f"/api/actions/{play}", f"/api/actions/{play}/why", "/api/stats",
                "/api/synchronizations", "/api/flows/ffff", "/api/flows?limit=x")]
            for resp in bodies:
                assert secret not in resp.text and secret not in str(resp.headers)
            assert "Hunter2" not in srv.get("/api/meta").json()["store"]
            engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
            with engine.begin() as conn:  # the store breaks while the viewer runs
                conn.exec_driver_sql("DROP TABLE actiontrace_flows")
            engine.dispose()
            broken = srv.get("/api/flows")
            assert broken.status == 500 and broken.json()["error"]
            assert secret not in broken.text and "Traceback" not in broken.text
        finally:
            out = srv.stop()
        assert secret not in out and "Traceback" not in out
        assert "/api/flows failed" in out  # the failure is logged, in one line

    def test_unreachable_store_fails_in_one_line(self) -> None:
        """serve on a database it cannot reach: one line, no password, no traceback."""
        res = run_cli("--url", "postgresql+psycopg://u:Pw-never-shown@127.0.0.1:9/db", "serve")
        assert res.returncode == 1
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
        assert "Pw-never-shown" not in res.stdout + res.stderr


class TestPostgres:
    @pytest.mark.postgres
    def test_the_api_on_postgresql(self, pg_url: str) -> None:
        """The same answers over PostgreSQL: flows, a trace, a chain, search, links."""
        res = run_cli("--url", pg_url, "demo")
        assert res.returncode == 0, res.stderr
        store = SqlAlchemyTraceStorage(pg_url)
        try:
            with Server(pg_url) as srv:
                rows = srv.get("/api/flows?limit=4").json()
                assert [r["flow_token"] for r in rows] == [str(f.flow_token) for f in store.list_flows(4)]
                second = srv.get(next_of(srv.get("/api/flows?limit=4")) or "").json()
                assert [r["flow_token"] for r in second] == [
                    str(f.flow_token) for f in store.list_flows(6)][4:]
                token = uuid.UUID(rows[0]["flow_token"])
                assert srv.get(f"/api/flows/{token}").text == store.get_trace(token).to_json()
                play = play_42(store)
                chain = srv.get(f"/api/actions/{play.id}/chain").json()
                assert [c["id"] for c in chain] == [str(r.id) for r in store.get_causal_chain(play.id)]
                found = srv.get("/api/actions?input=passage_id%3D42&action=play_passage").json()
                assert [r["id"] for r in found] == [str(play.id)]
                links = srv.get("/api/synchronizations").json()["links"]
                assert sum(x["count"] for x in links) == sum(n for _, n in store.top_synchronizations(99))
                assert srv.get("/api/flows?status=error").json()[0]["errors"] == 2
        finally:
            store.close()


class TestCommand:
    def test_port_in_use(self, demo_url: str) -> None:
        """A port another program holds: one line saying so, exit 1, no traceback."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            res = run_cli("--url", demo_url, "serve", "--port", str(port))
        assert res.returncode == 1 and "Traceback" not in res.stderr
        assert res.stderr.strip().splitlines() == [
            f"actiontrace: error: cannot listen on 127.0.0.1:{port}: Address already in use"]

    def test_ctrl_c_stops_it(self, demo_url: str) -> None:
        """Ctrl-C (SIGINT) stops the viewer: "Stopped.", exit 0, no error line."""
        srv = Server(demo_url)
        out = srv.stop()
        assert srv.returncode == 0 and "Stopped." in out and "error" not in out

    def test_missing_store(self, tmp_path: Path) -> None:
        """No database at the URL: one line, exit 1, and no file created."""
        res = run_cli("--url", f"sqlite:///{tmp_path / 'none.db'}", "serve")
        assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "none.db").exists()


class TestData:
    def test_cursor_round_trip(self) -> None:
        """A cursor is '<µs>_<hex>'; anything else is a ValueError."""
        ident = uuid.uuid4()
        assert parse_cursor(f"17_{ident.hex}") == (17, ident)
        for bad in ("17", "x_" + ident.hex, "17_zz"):
            with pytest.raises(ValueError):
                parse_cursor(bad)

    def test_cache_keeps_for_ttl(self) -> None:
        """A cached answer is reused within ttl and recomputed after it."""
        now = [0.0]
        cache = Cache(ttl=10, clock=lambda: now[0])
        calls: list[int] = []
        compute = lambda: calls.append(1) or len(calls)
        assert cache.get("k", compute) == 1
        now[0] = 9.9
        assert cache.get("k", compute) == 1
        now[0] = 10.0
        assert cache.get("k", compute) == 2

    def test_cache_is_bounded(self) -> None:
        """Past max_items keys, the oldest are forgotten (keys come from requests)."""
        cache = Cache(ttl=60, max_items=3)
        for key in "abcde":
            cache.get(key, lambda k=key: k)
        calls: list[str] = []
        assert cache.get("e", lambda: calls.append("e") or "E") == "e"  # kept
        assert cache.get("a", lambda: calls.append("a") or "A") == "A"  # forgotten
        assert calls == ["a"]

    def test_cache_computes_one_key_at_a_time(self) -> None:
        """Concurrent requests for one key compute it once; another key does not wait."""
        cache = Cache(ttl=60)
        started, release = threading.Event(), threading.Event()
        calls: list[str] = []

        def slow() -> str:
            calls.append("slow")
            started.set()
            assert release.wait(30)
            return "slow"

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            first = pool.submit(cache.get, "a", slow)
            assert started.wait(30)
            second = pool.submit(cache.get, "a", slow)
            assert cache.get("b", lambda: "fast") == "fast"  # while "a" is computing
            release.set()
            assert first.result(30) == second.result(30) == "slow"
        assert calls == ["slow"]


class TestBenchmark:
    def test_paging_benchmark_runs(self) -> None:
        """benchmarks/viewer_paging.py runs at a tiny size and prints every row (no figure checked)."""
        res = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "viewer_paging.py"), "--size", "3000",
             "--repeat", "1"], capture_output=True, text=True, timeout=300, check=False,
        )
        assert res.returncode == 0, res.stderr
        for row in ("flows, first page (limit 50)", "flows, a page half-way down (keyset)",
                    "search input passage_id=42 (input index)", "synchronizations graph",
                    "stats (uncached)"):
            assert row in res.stdout
