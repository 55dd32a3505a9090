"""Fault matrix row 7: nothing secret on disk, no password in messages, no SQL injection."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    ConfigurationError,
    ProvenanceEdge,
    action,
    flow,
    synchronization,
)
from reliability_support import count_rows, run_python

SECRET = "S3cr3t-" + uuid.uuid4().hex  # unique: a hit can only be a leak
PASSWORD = "Pw-" + uuid.uuid4().hex


def files_under(path: Path) -> Iterator[Path]:
    for p in path.rglob("*"):
        if p.is_file():
            yield p


def assert_no_secret(path: Path) -> int:
    """Fail if SECRET's bytes appear in any file under ``path``; return the files read."""
    n = 0
    for f in files_under(path):
        data = f.read_bytes()
        for form in (SECRET.encode(), SECRET.encode("utf-16-le")):
            assert form not in data, f"secret found in {f}"
        n += 1
    return n


SECRET_PROGRAM = """
import sys, time
import actiontrace
from actiontrace import action, flow, synchronization

SECRET = sys.argv[3]
t = actiontrace.configure(url=sys.argv[1], journal=sys.argv[2])

@action(concept="sec::Auth")
def login(user, password, options):
    return {{"session": {{"token": SECRET, "ok": True}}, "Authorization": "Bearer " + SECRET}}

@action(concept="sec::Api", redact=["pin"])
def call(pin, headers):
    return None

@synchronization("OnLogin")
def on_login():
    call(SECRET, {{"Cookie": SECRET, "x-api-key": SECRET, "nested": [{{"apiKey": SECRET}}]}})

for i in range(200):
    with flow("sec::Web::req", inputs={{"auth_token": SECRET, "user": "ann"}}):
        login("ann", SECRET, {{"db": {{"passwd": SECRET}}, "list": [{{"secret": SECRET}}]}})
        on_login()
{ending}
"""


class TestNoSecretOnDisk:
    def test_sqlite_files(self, tmp_path: Path) -> None:
        """Redacted names never reach the database, its WAL, or the journal."""
        db = tmp_path / "data"
        db.mkdir()
        proc = run_python(SECRET_PROGRAM.format(ending="import os; os._exit(0) if False else None"),
                          f"sqlite:///{db}/t.db", str(db / "j"), SECRET)
        assert proc.returncode == 0, proc.stderr
        assert count_rows(f"sqlite:///{db}/t.db") == 600
        assert assert_no_secret(db) >= 1

    def test_sqlite_wal_before_checkpoint(self, tmp_path: Path) -> None:
        """Also while the data still sits in the WAL (process killed before a checkpoint)."""
        proc = run_python(SECRET_PROGRAM.format(
            ending="t.flush(10); import os, signal; os.kill(os.getpid(), signal.SIGKILL)"),
            f"sqlite:///{tmp_path}/t.db", str(tmp_path / "j"), SECRET)
        assert proc.returncode == -9
        assert (tmp_path / "t.db-wal").stat().st_size > 0
        assert_no_secret(tmp_path)

    def test_journal_files(self, tmp_path: Path) -> None:
        """With the database down everything goes to the journal, redacted."""
        dead = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/none"
        proc = run_python(SECRET_PROGRAM.format(ending=""), dead, str(tmp_path / "j"), SECRET)
        assert proc.returncode == 0, proc.stderr
        journals = list((tmp_path / "j").glob("*.atj"))
        assert journals and sum(f.stat().st_size for f in journals) > 10_000
        assert_no_secret(tmp_path)
        assert PASSWORD not in proc.stderr and PASSWORD not in proc.stdout
        # ...and the journal holds all of it: replayed into SQLite, every action arrives.
        url = f"sqlite:///{tmp_path}/t.db"
        proc = run_python(f"""
            import time, actiontrace
            t = actiontrace.configure(url={url!r}, journal={str(tmp_path / "j")!r})
            t.flush(10)
            while t.stats()["replayed"] < 600:
                time.sleep(0.05)
        """, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert count_rows(url) == 600
        assert_no_secret(tmp_path)

    def test_default_files_are_owner_only(self, tmp_path: Path) -> None:
        """The SQLite file (and its WAL/SHM) and the journal are created 0600, dir 0700."""
        old = os.umask(0o022)
        try:
            tracer = actiontrace.configure(url=f"sqlite:///{tmp_path}/t.db")
            with flow("sec::Web::req"):
                pass
            assert tracer.flush(10)
            for name in ("t.db", "t.db-wal", "t.db-shm"):
                assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
            journal = tracer._writer.journal
            assert journal is not None
            assert journal.directory == tmp_path / "t.db-journal.d"
            path, _ = journal.append([])
            assert stat.S_IMODE(journal.directory.stat().st_mode) == 0o700
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        finally:
            os.umask(old)


class TestRedactionOfHeaders:
    def test_hyphenated_header_names(self) -> None:
        """``{"x-api-key": ...}`` (an HTTP header) is redacted like api_key."""
        tracer = actiontrace.configure()
        tracer.record_action("sec::Api", "call", {"headers": {"x-api-key": SECRET,
                                                              "X-Auth-Token": SECRET}})
        (rec,) = tracer.find_actions(ActionFilter(concept_uri="sec::Api"))
        assert SECRET not in repr(rec.inputs)


class TestPasswordsMasked:
    def test_cli_db_current(self, tmp_path: Path) -> None:
        """`actiontrace db current` on an unreachable server: one line, no password."""
        exe = Path(sys.executable).with_name("actiontrace")
        for url in (
            f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/none",
            f"postgresql+psycopg://postgres:{PASSWORD}@[::1]:notaport/none",
            f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/none?sslmode=bogus",
            f"mysql://root:{PASSWORD}@localhost/x",
        ):
            proc = subprocess.run([str(exe), "--url", url, "db", "current"], capture_output=True,
                                  text=True, timeout=60, check=False)
            assert proc.returncode != 0
            assert PASSWORD not in proc.stdout + proc.stderr, url
            assert "Traceback" not in proc.stderr
            assert len(proc.stderr.strip().splitlines()) <= 3

    def test_cli_env_url(self) -> None:
        """The same through $ACTIONTRACE_URL."""
        exe = Path(sys.executable).with_name("actiontrace")
        env = {**os.environ,
               "ACTIONTRACE_URL": f"postgresql+psycopg://u:{PASSWORD}@127.0.0.1:1/none"}
        proc = subprocess.run([str(exe), "db", "current"], capture_output=True, text=True,
                              timeout=60, check=False, env=env)
        assert proc.returncode != 0 and PASSWORD not in proc.stdout + proc.stderr

    def test_writer_errors_logs_and_reprs(self, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:
        """The writer's last_error, its log lines and reprs never show the password."""
        caplog.set_level(logging.DEBUG, logger="actiontrace")
        url = f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:1/none"
        tracer = actiontrace.configure(url=url, journal=tmp_path / "j")
        with flow("sec::Web::req"):
            pass
        assert tracer.flush(1) is False
        s = tracer.stats()
        assert s["last_error"] and PASSWORD not in s["last_error"]
        assert PASSWORD not in caplog.text
        assert caplog.text  # a warning was logged
        assert PASSWORD not in repr(tracer) + repr(tracer.storage) + str(s)
        assert PASSWORD not in str(tracer._writer.journal.directory)  # type: ignore[union-attr]
        with pytest.raises(Exception) as info:  # queries raise the database's error...
            tracer.storage.find_actions(ActionFilter())
        # ...which is SQLAlchemy's own: it names host and port, never the password.
        assert PASSWORD not in str(info.value)

    def test_configuration_errors(self) -> None:
        """Malformed or unsupported URLs are refused without echoing the password."""
        for url in (f"postgresql+psycopg://u:{PASSWORD}@h:port/db",
                    f"oracle://u:{PASSWORD}@h/db", f"postgresql+nodriver://u:{PASSWORD}@h/db"):
            with pytest.raises(ConfigurationError) as info:
                actiontrace.configure(url=url)
            assert PASSWORD not in str(info.value), url


INJECTIONS = [
    "x' OR '1'='1",
    '"; DROP TABLE actiontrace_actions; --',
    "'); DELETE FROM actiontrace_flows; --",
    "a%_\\' --",
    "$.x",
    '$."a"',
    "🙂'||'",
]


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    return str(request.getfixturevalue("pg_url"))


class TestInjection:
    def test_every_filter_field_is_a_parameter(self, sql_url: str) -> None:
        """Injection strings in every field are data: exact results, tables intact."""
        tracer = actiontrace.configure(url=sql_url, journal=False)
        made: dict[str, Any] = {}
        for k, bad in enumerate(INJECTIONS):
            tracer.record_action(bad, bad, {bad: bad, "k": k}, {bad: bad})

            @action(concept=bad, name=bad)
            def act(v: str) -> None:
                return None

            @synchronization(bad)
            def sync(value: str = bad) -> None:
                act(v=value)

            with flow("inj::Web::req") as token:
                sync()
            made[bad] = token
        assert tracer.flush(10)
        total = count_rows(sql_url)
        assert total == len(INJECTIONS) * 3
        for k, bad in enumerate(INJECTIONS):
            got = tracer.find_actions(ActionFilter(concept_uri=bad))
            assert len(got) == 2 and {r.concept_uri for r in got} == {bad}
            got = tracer.find_actions(ActionFilter(action=bad))
            assert len(got) == 2 and {r.action for r in got} == {bad}
            got = tracer.find_actions(ActionFilter(inputs={bad: bad}))
            assert [r.inputs["k"] for r in got] == [k]
            got = tracer.find_actions(ActionFilter(concept_uri=bad, inputs={"v": bad}))
            assert len(got) == 1 and got[0].inputs == {"v": bad}
            produced = tracer.find_by_sync(bad)
            assert len(produced) == 1 and produced[0].flow_token == made[bad]
            assert tracer.find_producing_sync(produced[0].id) == bad
            assert tracer.get_causal_chain(produced[0].id)[-1].id == produced[0].id
        for probe in ("' OR 1=1 --", "%", "_", "*", "x' OR '1'='1' --"):
            assert tracer.find_actions(ActionFilter(concept_uri=probe)) == []
            assert tracer.find_actions(ActionFilter(inputs={probe: probe})) == []
            assert tracer.find_by_sync(probe) == []
        assert count_rows(sql_url) == total
        assert count_rows(sql_url, "actiontrace_flows") == len(INJECTIONS) * 2
        assert count_rows(sql_url, "actiontrace_edges") == len(INJECTIONS)


label_text = st.text(
    st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40,
) | st.sampled_from(['"]', "|x|", "a\nb", "#quot;", "<br/>", "`", "--> b", "end", "%%",
                                      "a\x85b", "a\u2028b", "a\u2029b", "a\r\nb"])


def mermaid_trace(label: str) -> ActionTrace:
    token, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    recs = {
        a: ActionRecord(a, label or "c", label, {label: label}, label, 1, token, None, "ok", 1),
        b: ActionRecord(b, label, label, [label], {"error": label}, 2, token, a, "error", 1),
    }
    return ActionTrace(token, a, recs, [ProvenanceEdge(a, b, label, 2)], 1, label)


class TestMermaid:
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(label_text)
    def test_arbitrary_labels_stay_inside_their_quotes(self, label: str) -> None:
        """Whatever a label holds, every node and edge line keeps Mermaid's structure."""
        trace = mermaid_trace(label)
        text = trace.to_mermaid()
        lines = text.splitlines()  # every line break a reader may split on: \x85, \u2028...
        assert lines == text.rstrip("\n").split("\n")
        assert lines[0] == "flowchart TD"
        node_ids = {f"a{aid.hex}" for aid in trace.actions}
        for line in lines[1:]:
            body = line.strip()
            head = body.split("[", 1)[0].split(" ", 1)[0]
            if body.startswith("style "):
                assert body.split()[1] in node_ids
                continue
            assert head in node_ids, line
            if "[" in body and body.endswith('"]'):
                inner = body[len(head) + 2:-2]
                assert '"' not in inner and "\n" not in inner, line
            elif "-->|" in body:
                src, rest = body.split(" -->|", 1)
                inner, dst = rest[1:].rsplit('"| ', 1)
                assert src in node_ids and dst in node_ids
                assert '"' not in inner and "|" not in inner, line
            else:
                src, dst = body.split(" -.-> ")
                assert src in node_ids and dst in node_ids
