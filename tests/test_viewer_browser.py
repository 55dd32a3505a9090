"""``actiontrace serve`` in a real browser: Debian's headless Chromium, driven by Playwright.

The browser is the system's ``/usr/bin/chromium`` (never a downloaded build), with a
fresh profile and no background networking. The viewer runs as the installed command
over a SQLite file the demo filled. Screenshots are checked structurally (the elements
are there and visible); ``ACTIONTRACE_VIEWER_SHOTS=docs/img`` writes the two that
docs/viewer.md shows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright import sync_api as playwright_api

from viewer_support import Server, demo_store

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS_SHOTS = {"viewer-flow.png", "viewer-syncs.png"}  # the two docs/viewer.md shows
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding actiontrace.db, which the demo filled (as `make demo` does)."""
    where = tmp_path_factory.mktemp("browser")
    demo_store(where / "actiontrace.db", relative=True)
    return where


@pytest.fixture(scope="module")
def demo_url(store_dir: Path) -> str:
    return f"sqlite:///{store_dir / 'actiontrace.db'}"


@pytest.fixture(scope="module")
def server(store_dir: Path) -> Iterator[Server]:
    """`actiontrace serve` run where the store is, with its default URL."""
    with Server("sqlite:///actiontrace.db", "--import", "actiontrace.demo", cwd=store_dir) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):  # fail, not skip: the suite's set-up installs it
        pytest.fail("the browser tests need Debian's chromium: apt-get install chromium")
    with playwright_api.sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("profile")), executable_path=CHROMIUM, headless=True,
            args=ARGS, viewport={"width": 1400, "height": 900},
        )
        yield ctx
        ctx.close()


class Page:
    """A tab that records console errors and every address it asked for."""

    def __init__(self, browser: Any, shots: Path) -> None:
        self.page = browser.new_page()
        self.shots = shots
        self.problems: list[str] = []
        self.requested: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.problems.append(m.text))
        self.page.on("pageerror", lambda e: self.problems.append(str(e)))
        self.page.on("request", lambda r: self.requested.append(r.url))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.page, name)

    def visible(self, selector: str) -> Any:
        """The first element matching ``selector``, waited for, visible and not empty."""
        loc = self.page.locator(selector).first
        loc.wait_for(state="visible", timeout=20_000)
        box = loc.bounding_box()
        assert box is not None and box["width"] > 0 and box["height"] > 0, selector
        return loc

    def shot(self, name: str) -> Path:
        path = self.shots / name
        self.page.screenshot(path=str(path), full_page=True)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        out = os.environ.get("ACTIONTRACE_VIEWER_SHOTS")
        if out and name in DOCS_SHOTS:
            Path(out).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(out) / name)
        return path

    def close(self, base: str) -> None:
        assert self.problems == []
        outside = [u for u in self.requested if not u.startswith(base) and not u.startswith("data:")]
        assert outside == []  # everything comes from the viewer itself
        self.page.close()


@pytest.fixture
def page(browser: Any, server: Server, tmp_path: Path) -> Iterator[Page]:
    tab = Page(browser, tmp_path)
    yield tab
    tab.close(server.base)


class TestWalkthrough:
    def test_newest_flow_play_passage_and_its_chain(self, page: Page, server: Server) -> None:
        """Open the newest flow, click play_passage: its chain is highlighted, root first."""
        newest = server.get("/api/flows?limit=1").json()[0]
        page.goto(server.base)
        rows = page.visible("#flows-table tbody tr")
        assert page.locator("#flows-table tbody tr").count() == 6
        assert rows.get_attribute("data-flow") == newest["flow_token"]
        page.shot("viewer-flows.png")
        rows.click()
        page.visible("#flow-graph svg g.node")
        trace = server.get(f"/api/flows/{newest['flow_token']}").json()
        assert page.locator("#flow-graph g.node").count() == len(trace["actions"])
        assert page.locator("#flow-graph g.edge.sync").count() == len(trace["provenance_edges"])
        assert page.locator("#flow-graph g.edge.call").count() == sum(
            1 for a in trace["actions"].values() if a["parent_id"] in trace["actions"])
        assert page.locator("#waterfall g.lane").count() == len(trace["actions"])
        page.visible("#flow-graph g.node[data-name=play_passage]").click()
        page.visible("#chain li")
        steps = page.locator("#chain li")
        assert steps.count() == 3
        texts = [steps.nth(i).inner_text() for i in range(3)]
        assert ["handle_request" in texts[0], "validate_token" in texts[1],
                "play_passage" in texts[2]] == [True, True, True]
        assert "OnWebRequest" in texts[1] and "OnAuthSuccess" in texts[2]
        highlighted = page.locator("#flow-graph g.node.in-chain")
        assert sorted(highlighted.nth(i).get_attribute("data-name") for i in range(3)) == [
            "handle_request", "play_passage", "validate_token"]
        assert highlighted.count() == 3
        assert page.locator("#flow-graph g.edge.in-chain").count() == 2
        assert page.locator("#flow-graph g.node.selected").get_attribute("data-name") == "play_passage"
        assert page.locator("#waterfall g.lane.in-chain").count() == 3
        assert '"passage_id": 42' in page.visible("#inputs").inner_text()
        assert "playing" in page.visible("#logs").inner_text()
        page.shot("viewer-flow.png")

    def test_search_by_input_value(self, page: Page, server: Server) -> None:
        """Search passage_id=42: matching actions; one opens its flow with its chain."""
        page.goto(server.base)
        page.visible("#flows-table")
        page.fill("input[name=input]", "passage_id=42")
        page.click("#filters button[type=submit]")
        page.visible("#actions-table tbody tr")
        names = page.locator("#actions-table tbody tr td:nth-child(2)").all_inner_texts()
        assert any(n.endswith("play_passage") for n in names)
        page.shot("viewer-search.png")
        page.locator("#actions-table tbody tr", has_text="play_passage").first.click()
        page.visible("#chain li")
        assert page.locator("#flow-graph g.node.selected").get_attribute("data-name") == "play_passage"

    def test_synchronizations_view(self, page: Page, server: Server) -> None:
        """The synchronizations graph: actions, syncs with counts, the declared reactions."""
        page.goto(server.base)
        page.visible("#flows-table")
        page.click("header nav a[data-view=syncs]")
        page.visible("#sync-graph g.sync-node")
        syncs = {page.locator("#sync-graph g.sync-node").nth(i).get_attribute("data-sync")
                 for i in range(page.locator("#sync-graph g.sync-node").count())}
        assert syncs == {"OnWebRequest", "OnAuthSuccess", "RecordPlaybackForCooldown",
                         "AutoSelectWhenQueueLow"}
        assert page.locator("#sync-graph g.node").count() == 7  # concept::action nodes
        assert "9×" in (page.locator("#sync-graph g.sync-node[data-sync=OnAuthSuccess]").text_content() or "")
        table = page.visible("#syncs-table").inner_text()
        assert "declared" in table and "seen in the store" in table
        page.shot("viewer-syncs.png")

    def test_stats_charts(self, page: Page, server: Server) -> None:
        """The stats view draws the three charts as SVG."""
        page.goto(f"{server.base}#/stats")
        for chart in ("#chart-top svg rect.bar", "#chart-chains svg rect.bar",
                      "#chart-latency svg rect.p99"):
            page.visible(chart)
        assert page.locator("#chart-top svg rect.bar").count() == 4
        page.shot("viewer-stats.png")


class TestTokenInBrowser:
    def test_opening_the_printed_address(self, browser: Any, demo_url: str, tmp_path: Path) -> None:
        """The address printed with ?token= opens the viewer; without it, a 401 page."""
        srv = Server(demo_url, "--token", "browser-token")
        tab = Page(browser, tmp_path)
        try:
            resp = tab.goto(f"{srv.connect}/")
            assert resp.status == 401 and "needs its token" in tab.inner_text("body")
            tab.goto(f"{srv.connect}/?token=browser-token")
            tab.visible("#flows-table tbody tr")
            assert "token" not in tab.url
        finally:
            srv.stop()
        # The refused first visit is logged as a console error; nothing else may be.
        tab.problems = [p for p in tab.problems if "401 (Unauthorized)" not in p]
        tab.close(srv.connect)


WIDE_FLOW = """
import sys
import actiontrace
from actiontrace import action, concept, flow, synchronization

actiontrace.configure(url=sys.argv[1], module="shop")

@concept("shop::Cart")
class Cart:
    @action
    def add(self, item):
        return {"item": item}

@concept("shop::Stock")
class Stock:
    @action
    def reserve(self, item):
        if item == 37:
            raise KeyError(item)
        return True

cart, stock = Cart(), Stock()

@synchronization("ReserveOnAdd")
def reserve_on_add(item):
    try:
        stock.reserve(item)
    except KeyError:
        pass

with flow("shop::Web::order"):
    for i in range(40):
        cart.add(i)
        reserve_on_add(i)
"""


class TestWideFlow:
    def test_drawn_full_size_and_scrolled_to_the_action(
        self, browser: Any, tmp_path: Path
    ) -> None:
        """81 actions under one root: drawn readable (not shrunk), the failed one scrolled into view."""
        url = f"sqlite:///{tmp_path / 'wide.db'}"
        res = subprocess.run([sys.executable, "-c", WIDE_FLOW, url], capture_output=True,
                             text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        tab = Page(browser, tmp_path)
        with Server(url) as srv:
            token = srv.get("/api/flows").json()[0]["flow_token"]
            tab.goto(f"{srv.base}#/flow/{token}")
            tab.visible("#flow-graph svg g.node")
            assert tab.locator("#flow-graph g.node").count() == 81
            svg = tab.locator("#flow-graph svg")
            drawn = svg.bounding_box()
            assert drawn and drawn["width"] >= 0.75 * float(svg.get_attribute("width") or 0)
            failed = tab.locator("#flow-graph g.node.error")
            assert failed.count() == 1
            failed.click()
            tab.visible("#chain li")
            assert tab.locator("#chain li").count() == 3
            wrap = tab.locator("#flow-graph").bounding_box()
            node = failed.bounding_box()
            assert wrap and node and wrap["y"] <= node["y"] <= wrap["y"] + wrap["height"] - node["height"]
            assert tab.locator("#flow-graph g.node.in-chain").count() == 3
            tab.shot("viewer-wide.png")
            base = srv.base
        tab.close(base)


DEAD_REACTION = """
from actiontrace import synchronization


@synchronization("RefundOnCancel", when="wkmp-ap::Queue::cancel")
def refund_on_cancel(record):
    pass
"""


class TestDeadSynchronization:
    def test_declared_but_never_fired(
        self, browser: Any, demo_url: str, tmp_path: Path
    ) -> None:
        """A reaction declared by an --import module that never fired is drawn dashed red."""
        (tmp_path / "shop_reactions.py").write_text(DEAD_REACTION)
        tab = Page(browser, tmp_path)
        env = {"PYTHONPATH": str(tmp_path)}
        with Server(demo_url, "--import", "actiontrace.demo", "--import", "shop_reactions",
                    env=env) as srv:
            tab.goto(f"{srv.base}#/syncs")
            dead = tab.visible("#sync-graph g.sync-node.dead")
            assert dead.get_attribute("data-sync") == "RefundOnCancel"
            assert tab.locator("#sync-graph g.sync-node.dead").count() == 1
            assert tab.locator("#sync-graph g.edge.dead").count() == 1
            assert tab.locator("#sync-graph g.node[data-key='wkmp-ap::Queue::cancel']").count() == 1
            row = tab.visible("#syncs-table tr[data-sync=RefundOnCancel]").inner_text()
            assert "never fired" in row and "declared" in row
            base = srv.base
        tab.close(base)
