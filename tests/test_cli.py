"""The installed ``actiontrace`` command, driven in subprocesses against a fresh SQLite file.

One module-scoped database is filled by ``actiontrace demo`` (twice, as ``make demo`` run
twice would); the reading commands are checked against it. Every error a user can cause
is one short stderr message with a non-zero exit and never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest

from actiontrace import ActionFilter, ActionTrace, SqlAlchemyTraceStorage
from actiontrace.cli import parse_input, parse_time

BIN = Path(sys.executable).parent
EXE = BIN / "actiontrace"
UUID_AT_START = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}  ")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (``$ACTIONTRACE_URL`` removed from its environment)."""
    env = {k: v for k, v in os.environ.items() if k != "ACTIONTRACE_URL"}
    env["NO_COLOR"] = "1"
    return subprocess.run([str(EXE), *args], capture_output=True, text=True, timeout=120,
                          check=False, env=env, cwd=cwd)


def ok(*args: str) -> str:
    res = run(*args)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res.stdout


class Demo:
    def __init__(self, url: str, first: str, second: str) -> None:
        self.url, self.first, self.second = url, first, second

    def __call__(self, *args: str) -> str:
        return ok("--url", self.url, *args)

    def storage(self) -> SqlAlchemyTraceStorage:
        """The same database, read in this process (cheaper than a subprocess)."""
        return SqlAlchemyTraceStorage(self.url)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """A SQLite file the demo ran into twice."""
    path = tmp_path_factory.mktemp("cli") / "demo.db"
    url = f"sqlite:///{path}"
    first = ok("--url", url, "demo")
    second = ok("--url", url, "demo")
    return Demo(url, first, second)


def shortest_unique_prefix(target: str, others: list[str]) -> str:
    hexes = [o.replace("-", "") for o in others if o != target]
    digits = target.replace("-", "")
    for n in range(1, 33):
        if not any(h.startswith(digits[:n]) for h in hexes):
            return digits[:n]
    return digits


# -- happy paths -------------------------------------------------------------------------------


class TestDemo:
    def test_prints_the_causal_chain_of_passage_42(self, demo: Demo) -> None:
        """The demo answers "why did passage 42 play?" with synchronizations, then the tree."""
        out = demo.first
        assert 'Why did AudioPlayer::play_passage {"passage_id":42} happen?' in out
        chain = out.split("And 42 was in the queue")[0]
        steps = re.findall(r"^ *\d+\. (.*)$", chain, re.MULTILINE)
        assert [s.split("]")[0].rpartition("[")[2] for s in steps] == [
            "Web::handle_request", "Authentication::validate_token", "AudioPlayer::play_passage",
        ]
        assert "──(OnWebRequest)──>" in steps[1] and "──(OnAuthSuccess)──>" in steps[2]
        assert "──(AutoSelectWhenQueueLow)──> [Queue::enqueue]" in out
        assert "flow_token=" in out and "└──(RecordPlaybackForCooldown)──> [Cooldown::record_play]" in out
        assert "Log: [info] playing passage_id=42" in out  # the unified view of logs and actions
        assert "tok-" not in out  # tokens are redacted everywhere, logs included

    def test_runs_twice_into_one_file(self, demo: Demo) -> None:
        """A second run adds six more flows; the file stays usable."""
        assert "Why did AudioPlayer::play_passage" in demo.second
        assert len(demo("flows").splitlines()) == 12

    def test_python_dash_m(self, tmp_path: Path) -> None:
        """`python -m actiontrace.demo --url URL` runs the same demo into a new file."""
        db = tmp_path / "m.db"
        res = subprocess.run([sys.executable, "-m", "actiontrace.demo", "--url", f"sqlite:///{db}"],
                             capture_output=True, text=True, timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert "Why did AudioPlayer::play_passage" in res.stdout and db.exists()


class TestReading:
    def test_flows(self, demo: Demo) -> None:
        """One flow per line, newest first, each line starting with its token."""
        lines = demo("flows").splitlines()
        assert all(UUID_AT_START.match(line) for line in lines), lines
        assert all("Web::handle_request" in line for line in lines)
        assert sum("error" in line for line in lines) == 2  # the rejected token, twice
        data = json.loads(demo("flows", "--limit", "3", "--json"))
        assert [d["flow_token"] for d in data] == [line.split()[0] for line in lines[:3]]
        assert data[0]["created_at"] >= data[1]["created_at"] >= data[2]["created_at"]
        assert {d["action"] for d in data} == {"handle_request"}
        assert demo("flows", "--since", "2099-01-01") == ""
        assert len(demo("flows", "--since", "1h", "-n", "5").splitlines()) == 5

    def test_find_show_why_with_prefixes(self, demo: Demo) -> None:
        """find lists actions by id; show and why take unique prefixes of those ids."""
        lines = demo("find", "--action", "play_passage", "--input", "passage_id=42").splitlines()
        assert len(lines) == 2 and all(UUID_AT_START.match(line) for line in lines)
        play_id, flow_token = lines[-1].split()[0], lines[-1].split()[-1]
        all_ids = [str(r.id) for r in demo.storage().find_actions(ActionFilter())]
        why = demo("why", shortest_unique_prefix(play_id, all_ids))
        assert f"id      {play_id}" in why and "──(OnAuthSuccess)──>" in why
        flows = [str(f.flow_token) for f in demo.storage().list_flows(100)]
        tree = demo("show", shortest_unique_prefix(flow_token, flows))
        assert f"flow_token={flow_token}" in tree and "[AudioPlayer::play_passage]" in tree
        assert demo("show", play_id) == tree  # an action id shows its flow
        in_flow = demo("find", "--flow", flow_token, "--concept", "wkmp-ap::Queue").splitlines()
        assert {line.split()[2] for line in in_flow} == {"Queue::dequeue", "Queue::enqueue"}
        chain = json.loads(demo("why", play_id, "--json"))
        assert [s["synchronization"] for s in chain] == [None, "OnWebRequest", "OnAuthSuccess"]

    def test_find_filters(self, demo: Demo) -> None:
        """--concept prefix, --input JSON values and strings, --since/--until, --limit."""
        queued = json.loads(demo("find", "--concept", "wkmp-ap", "--action", "enqueue", "--json"))
        assert sorted(r["inputs"]["passage_id"] for r in queued) == [5, 5, 8, 8, 42, 42]
        assert demo("find", "--input", 'passage_id="42"') == ""  # a JSON string is not 42
        assert demo("find", "--input", "path=/play", "-n", "2").count("Web::handle_request") == 2
        assert demo("find", "--until", "2000-01-01") == ""
        assert len(demo("find", "--since", "1d", "--until", "2099-01-01T00:00Z",
                        "--action", "validate_token").splitlines()) == 12

    def test_export(self, demo: Demo, tmp_path: Path) -> None:
        """DOT (accepted by Graphviz), Mermaid and JSON, to stdout or a file."""
        token = str(demo.storage().list_flows(1)[0].flow_token)
        dot = demo("export", token, "--format", "dot")
        if shutil.which("dot"):
            svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                                 check=False)
            assert svg.returncode == 0 and "<svg" in svg.stdout, svg.stderr
        assert dot.startswith("digraph")
        assert demo("export", token, "-f", "mermaid").startswith("flowchart TD")
        out = tmp_path / "t.json"
        demo("export", token, "-f", "json", "-o", str(out))
        trace = msgspec.json.decode(out.read_text(), type=ActionTrace)
        assert str(trace.flow_token) == token and trace.logs

    def test_stats(self, demo: Demo) -> None:
        """Top synchronizations, longest chains, latency percentiles."""
        out = demo("stats")
        for word in ("Top synchronizations", "OnAuthSuccess", "Longest causal chains", "p95"):
            assert word in out
        data = json.loads(demo("stats", "--json"))
        top = {d["synchronization"]: d["count"] for d in data["top_synchronizations"]}
        assert top["OnWebRequest"] == 12 and top["RecordPlaybackForCooldown"] == 10
        assert data["longest_chains"][0]["depth"] == 4
        assert data["latency_us"]["OnAuthSuccess"]["count"] == 18


class TestParsing:
    def test_input_values(self) -> None:
        """JSON when it parses, else the text itself."""
        assert parse_input("n=42") == ("n", 42)
        assert parse_input("s=hello") == ("s", "hello")
        assert parse_input('s="42"') == ("s", "42")
        assert parse_input("o={\"a\": [1]}") == ("o", {"a": [1]})
        assert parse_input("eq=a=b") == ("eq", "a=b")
        with pytest.raises(ValueError):
            parse_input("novalue")

    def test_times(self) -> None:
        """Relative ages and ISO timestamps (naive ones are UTC)."""
        import datetime as dt

        now = dt.datetime(2024, 6, 1, 12, 0, tzinfo=dt.UTC)
        assert parse_time("10m", now) == int((now - dt.timedelta(minutes=10)).timestamp() * 1e6)
        assert parse_time("1d", now) == int((now - dt.timedelta(days=1)).timestamp() * 1e6)
        assert parse_time("2024-06-01T12:00") == int(now.timestamp() * 1e6)
        assert parse_time("2024-06-01T14:00+02:00") == int(now.timestamp() * 1e6)
        with pytest.raises(ValueError):
            parse_time("yesterday")


# -- errors --------------------------------------------------------------------------------------

PG_DOWN = "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"

# (name, arguments (DEMO stands for the demo database's URL), expected exit code, words)
ERRORS: list[tuple[str, list[str], int, str]] = [
    ("malformed id", ["--url", "DEMO", "why", "not-hex!"], 1, "malformed action id"),
    ("unknown action", ["--url", "DEMO", "why", "ffffffff"], 1, "no action id starts with"),
    ("unknown flow", ["--url", "DEMO", "show", "ffffffff-ffff"], 1, "no flow token starts with"),
    ("ambiguous prefix", ["--url", "DEMO", "why", "0"], 1, "ambiguous"),
    ("bad --input", ["--url", "DEMO", "find", "--input", "passage_id"], 2, "key=value"),
    ("bad --since", ["--url", "DEMO", "flows", "--since", "yesterday"], 2, "not a time"),
    ("bad --format", ["--url", "DEMO", "export", "0", "-f", "png"], 2, "png"),
    ("unknown command", ["--url", "DEMO", "frobnicate"], 2, "no such command"),
    ("malformed url", ["--url", "::nope", "flows"], 1, "malformed"),
    ("unknown dialect", ["--url", "mysql://u:hunter2@h/x", "flows"], 1, "unsupported"),
    ("unreachable server", ["--url", PG_DOWN, "flows"], 1, "connection"),
    ("unreachable server (demo)", ["--url", PG_DOWN, "demo"], 1, "connection"),
    ("missing directory", ["--url", "sqlite:////no/such/dir/t.db", "flows"], 1, "no actiontrace database"),
    ("missing directory (demo)", ["--url", "sqlite:////no/such/dir/t.db", "demo"], 1, "does not exist"),
    ("missing file", ["--url", "MISSING", "why", "0"], 1, "no actiontrace database"),
    ("behind head", ["--url", "OLD", "flows"], 1, "actiontrace db upgrade"),
    ("unwritable output", ["--url", "DEMO", "export", "LATEST", "-o", "/no/such/dir/x.dot"], 1,
     "cannot write"),
]


@pytest.fixture(scope="module")
def old_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A database at revision 0001, behind head."""
    from actiontrace.storage import _migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('old') / 'old.db'}"
    _migrate.upgrade(url, "0001")
    return url


@pytest.mark.parametrize(("args", "code", "words"), [e[1:] for e in ERRORS],
                         ids=[e[0] for e in ERRORS])
def test_error(args: list[str], code: int, words: str, demo: Demo, old_db: str,
               tmp_path: Path) -> None:
    """One clear line on stderr (a usage error may add the usage line), no traceback."""
    missing = tmp_path / "missing.db"
    subst: dict[str, Any] = {"DEMO": demo.url, "OLD": old_db, "MISSING": f"sqlite:///{missing}"}
    if "LATEST" in args:
        subst["LATEST"] = str(demo.storage().list_flows(1)[0].flow_token)
    res = run(*[subst.get(a, a) for a in args])
    lines = res.stderr.strip().splitlines()
    assert res.returncode == code, res.stderr
    assert res.stdout == ""
    assert 1 <= len(lines) <= (3 if code == 2 else 1), res.stderr
    assert lines[-1].startswith("actiontrace: error: ")
    assert words.lower() in lines[-1].lower(), res.stderr
    assert "Traceback" not in res.stderr and "hunter2" not in res.stderr
    assert not missing.exists()  # reading never creates a database


def test_default_url_is_local_file(tmp_path: Path) -> None:
    """Without --url, ./actiontrace.db is read (and not created by a reading command)."""
    res = run("flows", cwd=tmp_path)
    assert res.returncode == 1 and "actiontrace.db" in res.stderr
    assert not (tmp_path / "actiontrace.db").exists()


def test_ids_are_uuids(demo: Demo) -> None:
    """Every listed flow token parses as a UUID."""
    for line in demo("flows").splitlines():
        uuid.UUID(line.split()[0])


class TestMissingCauses:
    def test_why_show_and_flows_say_what_is_not_stored(self, tmp_path: Path) -> None:
        """An unknown trigger and token: why/show name them; flows explains the root."""
        url = f"sqlite:///{tmp_path}/t.db"
        flow_token, trigger = uuid.uuid4(), uuid.uuid4()
        proc = subprocess.run([sys.executable, "-c", f"""
import uuid, actiontrace
from actiontrace import action, continue_flow
t = actiontrace.configure(url={url!r})

@action(concept="shop::Payment")
def charge(n):
    return n

with continue_flow(uuid.UUID({str(flow_token)!r}), trigger=uuid.UUID({str(trigger)!r}),
                   synchronization="Remote"):
    charge(7)
"""], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        (line,) = ok("--url", url, "flows").splitlines()
        assert "(root not (yet) in the store)" in line and "?::?" not in line
        shown = ok("--url", url, "show", str(flow_token))
        assert f"note: the root of flow {flow_token} is not (yet) in the store" in shown
        assert f"note: trigger {trigger} of Payment::charge (via Remote) is not (yet)" in shown
        (found,) = ok("--url", url, "find", "--action", "charge").splitlines()
        why = ok("--url", url, "why", found[:36])
        assert f"note: Payment::charge was triggered (via Remote) by {trigger}, which is " \
               "not (yet) in the store" in why


class TestPrune:
    """actiontrace prune (API.md §13), against a database of its own."""

    def test_dry_run_then_prune(self, tmp_path: Path) -> None:
        """--dry-run counts the old flows and keeps them; without it they go."""
        url = f"sqlite:///{tmp_path}/p.db"
        ok("--url", url, "demo")
        assert ok("--url", url, "prune", "--older-than", "7d").strip() == (
            "removed 0 flows (0 actions)")
        would = ok("--url", url, "prune", "--older-than", "0s", "--dry-run").strip()
        assert re.fullmatch(r"would remove 6 flows \(\d+ actions\)", would), would
        assert len(SqlAlchemyTraceStorage(url).list_flows()) == 6
        assert ok("--url", url, "prune", "--older-than", "0s").strip() == would.replace(
            "would remove", "removed")
        assert SqlAlchemyTraceStorage(url).list_flows() == []

    def test_bad_age_is_one_line(self, tmp_path: Path) -> None:
        """An age without a unit is refused with a usage error, never a traceback."""
        res = run("--url", f"sqlite:///{tmp_path}/x.db", "prune", "--older-than", "7")
        assert res.returncode == 2 and "is not an age" in res.stderr
        assert "Traceback" not in res.stderr

    def test_database_without_tables_is_refused(self, tmp_path: Path) -> None:
        """A database without actiontrace tables is refused, and left without them."""
        import sqlite3

        path = tmp_path / "other.db"
        sqlite3.connect(path).execute("CREATE TABLE host (id INTEGER)").connection.close()
        res = run("--url", f"sqlite:///{path}", "prune", "--older-than", "1d")
        assert res.returncode == 1 and "actiontrace db upgrade" in res.stderr
        names = {r[0] for r in sqlite3.connect(path).execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names == {"host"}
