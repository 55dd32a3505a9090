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

import actiontrace
from actiontrace import ActionFilter, ActionTrace, SqlAlchemyTraceStorage
from actiontrace._cli_support import parse_input, parse_time

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

    def test_ends_by_pointing_at_the_viewer(self, demo: Demo) -> None:
        """The demo's last line says the browser viewer can show it: `actiontrace serve`."""
        last = demo.first.rstrip().splitlines()[-1]
        assert f"actiontrace --url {demo.url} serve" in last and "[web]" in last

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
        lines = demo("flows", "--full-ids").splitlines()
        assert all(UUID_AT_START.match(line) for line in lines), lines
        # The root's full concept URI, not only its last segment.
        assert all("  wkmp-ap::Web::handle_request  " in line for line in lines)
        assert sum("error" in line for line in lines) == 2  # the rejected token, twice
        data = json.loads(demo("flows", "--limit", "3", "--json"))
        assert [d["flow_token"] for d in data] == [line.split()[0] for line in lines[:3]]
        assert data[0]["created_at"] >= data[1]["created_at"] >= data[2]["created_at"]
        assert {d["action"] for d in data} == {"handle_request"}
        assert demo("flows", "--since", "2099-01-01") == ""
        assert len(demo("flows", "--since", "1h", "-n", "5").splitlines()) == 5

    def test_find_show_why_with_prefixes(self, demo: Demo) -> None:
        """find lists actions by id; show and why take unique prefixes of those ids."""
        lines = demo("find", "--action", "play_passage", "--input", "passage_id=42",
                     "--full-ids").splitlines()
        assert len(lines) == 2 and all(UUID_AT_START.match(line) for line in lines)
        play_id, flow_token = lines[-1].split()[0], lines[-1].split()[-1]
        all_ids = [str(r.id) for r in demo.storage().find_actions(ActionFilter())]
        why = demo("why", shortest_unique_prefix(play_id, all_ids))
        assert f"id      {play_id}" in why and "──(OnAuthSuccess)──>" in why
        flows = [str(f.flow_token) for f in demo.storage().list_flows(100)]
        tree = demo("show", shortest_unique_prefix(flow_token, flows))
        assert f"flow_token={flow_token}" in tree and "[AudioPlayer::play_passage]" in tree
        assert demo("show", play_id) == tree  # an action id shows its flow
        in_flow = demo("find", "--flow", flow_token, "--concept", "wkmp-ap::Queue",
                       "--full-ids").splitlines()
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
    ("unknown action", ["--url", "DEMO", "why", "ffffffff"], 1, "no action id starts or ends with"),
    ("unknown flow", ["--url", "DEMO", "show", "ffffffff-ffff"], 1, "no flow token starts or ends with"),
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
    """With --full-ids, every listed flow token parses as a UUID."""
    for line in demo("flows", "--full-ids").splitlines():
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
        why = ok("--url", url, "why", found.split()[0])
        assert f"note: Payment::charge was triggered (via Remote) by {trigger}, which is " \
               "not (yet) in the store" in why
# -- ids: short forms ------------------------------------------------------------------------------


class TestShortIds:
    def test_listings_show_unique_endings_every_command_accepts(self, demo: Demo) -> None:
        """flows/find show short ids that name one id in the store; show/why/export take them."""
        store = demo.storage()
        tokens = [str(f.flow_token) for f in store.list_flows(100)]
        shown = [line.split()[0] for line in demo("flows", "-n", "100").splitlines()]
        assert len(shown) == len(tokens) == 12
        for short, full in zip(shown, tokens, strict=True):
            assert 8 <= len(short) < 32 and full.replace("-", "").endswith(short)
            assert sum(t.replace("-", "").endswith(short) for t in tokens) == 1
            assert f"flow_token={full}" in demo("show", short)
        ids = [str(r.id) for r in store.find_actions(actiontrace.ActionFilter())]
        line = demo("find", "--action", "play_passage", "-n", "1").splitlines()[0]
        short_id, short_flow = line.split()[0], line.split()[-1]
        assert len(short_id) < 32 and sum(i.replace("-", "").endswith(short_id) for i in ids) == 1
        full_id = next(i for i in ids if i.replace("-", "").endswith(short_id))
        assert f"id      {full_id}" in demo("why", short_id)
        assert demo("export", short_flow, "-f", "json").startswith("{")

    def test_suffix_of_a_whole_id(self, demo: Demo) -> None:
        """The last digits of a full id, dashes and all, pick that id out."""
        play = demo.storage().find_actions(
            actiontrace.ActionFilter(action="play_passage", limit=1))[0]
        assert f"id      {play.id}" in demo("why", str(play.id)[-12:])

    def test_ambiguous_suffix(self, demo: Demo) -> None:
        """A suffix many ids end with is refused with one line naming two of them."""
        ids = [r.id.hex for r in demo.storage().find_actions(actiontrace.ActionFilter())]
        last = max(set(i[-1] for i in ids), key=lambda c: sum(i.endswith(c) for i in ids))
        res = run("--url", demo.url, "why", last)
        assert res.returncode == 1 and res.stderr.count("\n") == 1
        assert "ambiguous" in res.stderr and res.stdout == ""


# -- reading never changes a database ----------------------------------------------------------------

READING = [["flows"], ["show", "0"], ["why", "0"], ["find"], ["export", "0"], ["stats"],
           ["db", "current"]]


def digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


class TestReadingChangesNothing:
    @pytest.mark.parametrize("args", READING, ids=" ".join)
    def test_foreign_sqlite_database(self, args: list[str], tmp_path: Path) -> None:
        """A database without actiontrace tables: one line naming `actiontrace db upgrade`,
        and the file's bytes (journal mode included) exactly as they were."""
        import sqlite3

        path = tmp_path / "other.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
            conn.execute("INSERT INTO orders (item) VALUES ('tea')")
        conn.close()
        before = digest(path)
        res = run("--url", f"sqlite:///{path}", *args)
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.count("\n") == 1 and "actiontrace db upgrade" in res.stderr
        assert digest(path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]

    def test_actiontrace_database_bytes_stay(self, demo: Demo, tmp_path: Path) -> None:
        """Every reading command on a real store: the file's bytes do not change, no
        -wal/-shm is left behind, and a rollback-journal file stays in that mode."""
        import sqlite3

        path = tmp_path / "copy.db"
        src = Path(demo.url.removeprefix("sqlite:///"))
        with sqlite3.connect(src) as s, sqlite3.connect(path) as d:
            s.backup(d)
            d.execute("PRAGMA journal_mode = DELETE")
        s.close()
        d.close()
        before = digest(path)
        url = f"sqlite:///{path}"
        token = str(demo.storage().list_flows(1)[0].flow_token)
        play = demo.storage().find_actions(actiontrace.ActionFilter(action="play_passage"))[0]
        for args in (["flows"], ["show", token], ["why", str(play.id)], ["find"],
                     ["export", token], ["stats"], ["db", "current"]):
            res = run("--url", url, *args)
            assert res.returncode == 0, (args, res.stderr)
        assert digest(path) == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.db"]
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        conn.close()

    @pytest.mark.parametrize("args", READING, ids=" ".join)
    def test_foreign_postgres_database(self, args: list[str], pg_url: str) -> None:
        """The same on PostgreSQL: one line naming `actiontrace db upgrade`, no table made."""
        import sqlalchemy as sa

        engine = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
        res = run("--url", pg_url, *args)
        assert res.returncode == 1 and res.stdout == ""
        assert res.stderr.count("\n") == 1 and "actiontrace db upgrade" in res.stderr
        with engine.connect() as conn:
            assert sa.inspect(conn).get_table_names() == ["orders"]
        engine.dispose()

    def test_missing_file(self, tmp_path: Path) -> None:
        """On a missing file every reading command fails with one line and creates nothing."""
        path = tmp_path / "none.db"
        for args in READING:
            res = run("--url", f"sqlite:///{path}", *args)
            assert res.returncode == 1 and res.stdout == "", args
            assert res.stderr.count("\n") == 1 and "actiontrace db upgrade" in res.stderr
        assert list(tmp_path.iterdir()) == []


class TestDbCommands:
    def test_current_prints_the_revision(self, demo: Demo) -> None:
        """db current prints the schema's revision id."""
        from actiontrace.storage import _migrate

        assert demo("db", "current").strip() == _migrate.HEAD

    def test_failed_upgrade_leaves_no_file(self, tmp_path: Path) -> None:
        """db upgrade to an unknown revision fails with one line and leaves no file."""
        path = tmp_path / "new.db"
        res = run("--url", f"sqlite:///{path}", "db", "upgrade", "9999")
        assert res.returncode == 1 and res.stderr.count("\n") == 1 and "9999" in res.stderr
        assert list(tmp_path.iterdir()) == []

    def test_upgrade_creates_then_current_reads(self, tmp_path: Path) -> None:
        """db upgrade makes an empty store that reading commands accept."""
        url = f"sqlite:///{tmp_path / 'new.db'}"
        assert "schema at" in ok("--url", url, "db", "upgrade")
        assert ok("--url", url, "flows") == ""
        assert ok("--url", url, "db", "current").strip()


# -- output cut short ----------------------------------------------------------------------------------


class TestReaderLeaves:
    @pytest.mark.parametrize("args", [["flows"], ["find"], ["stats"], ["show", "LATEST"]])
    def test_closed_pipe_ends_quietly(self, args: list[str], demo: Demo) -> None:
        """`actiontrace ... | head -0`: the reader is gone before the first line: exit 0,
        nothing on stderr."""
        if "LATEST" in args:
            args = ["show", str(demo.storage().list_flows(1)[0].flow_token)]
        read, write = os.pipe()
        os.close(read)  # every write now fails with EPIPE
        env = {k: v for k, v in os.environ.items() if k != "ACTIONTRACE_URL"}
        res = subprocess.run([str(EXE), "--url", demo.url, *args], stdout=write,
                             stderr=subprocess.PIPE, text=True, timeout=120, check=False, env=env)
        os.close(write)
        assert (res.returncode, res.stderr) == (0, "")

    def test_head_in_a_shell(self, demo: Demo) -> None:
        """`actiontrace find | head -1` through a real shell pipe: one line, exit 0."""
        cmd = f"{EXE} --url {demo.url} find -n 1000 | head -1; echo \"status=${{PIPESTATUS[0]}}\""
        res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120,
                             check=False)
        lines = res.stdout.splitlines()
        assert len(lines) == 2 and lines[1] == "status=0", res.stdout + res.stderr
        assert res.stderr == ""


# -- export --------------------------------------------------------------------------------------------


class TestExportDot:
    def test_call_nesting_and_provenance(self, demo: Demo) -> None:
        """DOT draws provenance edges labelled and call nesting dashed: every action but
        the root is reached, and Graphviz renders one edge per arrow."""
        store = demo.storage()
        play = store.find_actions(actiontrace.ActionFilter(action="play_passage"))[0]
        trace = store.get_trace(play.flow_token)
        dot = demo("export", str(trace.flow_token), "-f", "dot")
        arrows = [line for line in dot.splitlines() if " -> " in line]
        labelled = [a for a in arrows if "[label=" in a]
        dashed = [a for a in arrows if "style=dashed" in a]
        assert len(labelled) == len(trace.provenance_edges) > 0
        nested = [r for r in trace.actions.values() if r.parent_id in trace.actions]
        assert len(dashed) == len(nested) > 0 and len(labelled) + len(dashed) == len(arrows)
        for r in nested:
            assert f'"{r.parent_id}" -> "{r.id}" [style=dashed' in dot
        targets = {a.split(" -> ")[1].split('"')[1] for a in arrows}
        assert targets == {str(i) for i in trace.actions} - {str(trace.root_action_id)}
        svg = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True,
                             check=True)
        assert svg.stdout.count('class="edge"') == len(arrows)


# -- start-up -----------------------------------------------------------------------------------------


def test_reading_commands_import_no_migrations_or_drivers(demo: Demo) -> None:
    """A reading command on an up-to-date SQLite store imports neither Alembic nor psycopg
    (start-up time; docs/cli.md)."""
    code = (
        "import sys, atexit\n"
        "atexit.register(lambda: print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] "
        "in ('alembic', 'psycopg'))), file=sys.stderr))\n"
        "from actiontrace.cli import main\n"
        f"main(['--url', {demo.url!r}, 'flows'])\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=False)
    assert res.returncode == 0
    assert res.stderr.strip() == ""


class TestPrune:
    """actiontrace prune (docs/reference.md, Retention), against a database of its own."""

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


class TestPartition:
    """actiontrace partition (docs/retention.md, partitioned PostgreSQL stores)."""

    def test_partitions_a_postgres_store_then_prunes_it(self, pg_url: str) -> None:
        """The command partitions the store (its flows stay), a second run only adds
        partitions ahead, and prune still removes every old flow."""
        ok("--url", pg_url, "demo")
        out = ok("--url", pg_url, "partition", "--period", "1h", "--ahead", "1").strip()
        assert re.fullmatch(r"made 2 partitions of 3,600 s each; they reach \S+ \S+ UTC", out), out
        store = SqlAlchemyTraceStorage(pg_url)
        assert len(store.list_flows()) == 6
        store.close()
        again = ok("--url", pg_url, "partition", "--period", "1h", "--ahead", "3").strip()
        assert again.startswith("made 2 partitions"), again
        removed = ok("--url", pg_url, "prune", "--older-than", "0s").strip()
        assert re.fullmatch(r"removed 6 flows \(\d+ actions\)", removed), removed

    def test_sqlite_is_refused_in_one_line(self, tmp_path: Path) -> None:
        """On SQLite the command says partitioning is PostgreSQL's, without a traceback."""
        url = f"sqlite:///{tmp_path}/p.db"
        ok("--url", url, "demo")
        res = run("--url", url, "partition")
        assert res.returncode == 1 and "PostgreSQL feature" in res.stderr
        assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
