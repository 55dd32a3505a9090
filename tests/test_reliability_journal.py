"""Fault matrix rows 2-3: the database goes away; nothing is lost, nothing duplicated.

Rows 2 and 3 of docs/reliability.md. PostgreSQL tests use a cluster of this module's own
(``reliability_support.PrivateCluster``), which they stop and start.
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actiontrace
from actiontrace import ActionFilter, InMemoryTraceStorage, action, flow
from actiontrace.pipeline._journal import HEADER, Journal, default_directory
from actiontrace.pipeline._replay import Backlog
from reliability_support import PrivateCluster, count_rows, private_cluster, run_python

pytestmark = pytest.mark.postgres

DEAD_PG = "postgresql+psycopg://postgres:pw@127.0.0.1:1/none"  # nothing listens on port 1
N_BIG = int(os.environ.get("ACTIONTRACE_RELIABILITY_ACTIONS", "200000"))
OUTAGE_S = float(os.environ.get("ACTIONTRACE_OUTAGE_SECONDS", "30"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A PostgreSQL server this module may stop and start."""
    yield from private_cluster(tmp_path_factory, 55470)


@pytest.fixture
def pg(cluster: PrivateCluster) -> Iterator[str]:
    """The private cluster's URL, running, with empty actiontrace tables."""
    from actiontrace.storage._migrate import upgrade

    upgrade(cluster.url)
    import sqlalchemy as sa

    engine = sa.create_engine(cluster.url, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE actiontrace_flows, actiontrace_actions, actiontrace_edges")
    engine.dispose()
    yield cluster.url


class Flaky(InMemoryTraceStorage):
    """An in-memory storage that fails (transiently) while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.calls = 0

    def write_parts(self, parts: Any) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionRefusedError("database is down")
        super().write_parts(parts)


@action(concept="rel::Job")
def step(i: int, password: str = "", nested: dict[str, Any] | None = None) -> int:
    return i


class TestJournalFormat:
    def test_round_trip_keeps_storage_form(self, tmp_path: Path) -> None:
        """A journaled part replays to exactly the rows, edges and ids it was written with."""
        store = InMemoryTraceStorage()
        tracer = actiontrace.configure(storage=store)

        @actiontrace.synchronization("Glue")
        def glue() -> None:
            step(2)

        with flow("rel::Web::req", inputs={"x": 1}):
            step(1)
            glue()
        assert tracer.flush(5)
        part = tracer._writer.recent[next(iter(tracer._writer.recent))][0].snapshot()
        part.log_events = [(7 << 100, None, 5, "info", "hello", b'{"a":1}')]
        part.sampled = False
        journal = Journal(tmp_path / "j")
        path, size = journal.append([part])
        assert size == path.stat().st_size
        cursor = journal.release_current()
        assert cursor is not None
        (back,) = cursor.next_frame() or []
        assert list(back.rows()) == list(part.rows())
        assert back.edges == part.edges and back.token == part.token
        assert back.root_id == part.root_id and back.module == part.module
        assert back.log_rows() == part.log_rows() and back.sampled is False

    def test_permissions(self, tmp_path: Path) -> None:
        """The journal directory is 0700 and its files 0600, whatever the umask."""
        old = os.umask(0)
        try:
            journal = Journal(tmp_path / "deep" / "j")
            path, _ = journal.append([])
        finally:
            os.umask(old)
        assert stat.S_IMODE((tmp_path / "deep" / "j").stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    def test_default_locations(self, tmp_path: Path) -> None:
        """Next to a SQLite file; in the per-user state dir for a server, without password."""
        lite = actiontrace.SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/app.db")
        assert default_directory(lite) == tmp_path / "app.db-journal.d"
        a = default_directory(actiontrace.SqlAlchemyTraceStorage(DEAD_PG))
        b = default_directory(actiontrace.SqlAlchemyTraceStorage(DEAD_PG.replace(":pw@", ":other@")))
        c = default_directory(actiontrace.SqlAlchemyTraceStorage(DEAD_PG.replace("/none", "/db2")))
        assert a is not None and a == b and a != c and "pw" not in str(a)
        assert default_directory(InMemoryTraceStorage()) is None
        assert default_directory(actiontrace.SqlAlchemyTraceStorage("sqlite://")) is None

    def test_foreign_directory_refused(self, tmp_path: Path) -> None:
        """A journal directory owned by someone else is not used (no injection through it)."""
        if os.geteuid() != 0:
            pytest.skip("needs root to chown")
        d = tmp_path / "j"
        d.mkdir(mode=0o700)
        os.chown(d, 65534, 65534)
        with pytest.raises(OSError, match="another user"):
            Journal(d).append([])

    def test_torn_last_frame_is_skipped(self, tmp_path: Path) -> None:
        """A frame cut short (SIGKILL mid-write) is skipped; the frames before it replay."""
        # The state a process killed in the middle of its last write leaves: one journal
        # file, unlocked, whose last frame is cut. (Made here rather than by an outage in
        # this process: that tracer would own the file and might replay it itself, or
        # spill into two files if it retried the storage meanwhile; either made what was
        # replayed, and by whom, depend on timing.)
        parts = recorded_parts(50)
        jdir = tmp_path / "j"
        journal = Journal(jdir)
        for k in range(0, 50, 5):  # ten frames of five flows (ten actions) each
            path, _ = journal.append(parts[k:k + 5])
        journal.close_current()
        cut_last_frame(path)

        store = InMemoryTraceStorage()
        tracer = actiontrace.configure(storage=store, journal=jdir)
        with flow("rel::Web::later"):  # starts the writer, which finds the file
            pass
        assert tracer.flush(60)
        deadline = time.monotonic() + 60
        while Journal(jdir).files() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert Journal(jdir).files() == []
        # A file goes only once its end is counted (Backlog.stored): no wait for the count.
        s = tracer.stats()
        assert s["torn_frames"] == 1 and s["replayed"] == 90 and s["dropped"] == 0
        steps = store.find_actions(ActionFilter(action="step"))
        assert sorted(r.inputs["i"] for r in steps) == list(range(45))

    def test_file_goes_only_after_its_end_is_counted(self, tmp_path: Path) -> None:
        """A replayed file is deleted, and the flushes waiting for it released, only after
        the writer counted its torn tail: whoever sees it gone sees ``torn_frames`` too."""
        drained: list[bool] = []
        backlog = Backlog(Journal(tmp_path / "j"), lambda: drained.append(True))
        parts = recorded_parts(4)
        backlog.spill(parts[:2], encoded=lambda: None)
        backlog.spill(parts[2:], encoded=lambda: None)
        path = backlog.journal.current
        assert path is not None and backlog.own_pending == 8
        cut_last_frame(path)
        first = backlog.take()
        assert first is not None and first.parts is not None and len(first.parts) == 2
        backlog.stored()
        end = backlog.take()
        assert end is not None and end.parts is None and end.torn_bytes > 0
        # Not yet counted by the writer: the file and the flushes' wait are still there.
        assert path.exists() and drained == [] and backlog.own_pending == 8
        assert backlog.take() == end  # the same end again until it is counted
        backlog.stored()
        assert not path.exists() and drained == [True] and backlog.own_pending == 0
        assert backlog.take() is None


def recorded_parts(n: int) -> list[Any]:
    """``n`` ended flow parts of ``step(i)`` (two actions each), recorded for real."""
    tracer = actiontrace.configure(storage=InMemoryTraceStorage(), journal=False)
    for i in range(n):
        with flow("rel::Web::req"):
            step(i)
    assert tracer.flush(10)
    parts = [p for ps in tracer._writer.recent.values() for p in ps]
    assert len(parts) == n
    return parts


def cut_last_frame(path: Path) -> None:
    """Cut ``path`` seven bytes into its last frame's payload, as a killed write leaves it."""
    data = path.read_bytes()
    offsets, pos = [], 0
    while pos < len(data):
        offsets.append(pos)
        pos += HEADER.size + HEADER.unpack_from(data, pos)[1]
    assert pos == len(data) and offsets
    path.write_bytes(data[: offsets[-1] + HEADER.size + 7])


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_replaying_a_frame_twice_stores_it_once(backend: str, request: pytest.FixtureRequest,
                                                tmp_path: Path) -> None:
    """Inserts are idempotent by action id: a frame stored twice leaves the same rows."""
    url = (f"sqlite:///{tmp_path}/t.db" if backend == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    tracer = actiontrace.configure(url=url, journal=False)

    @actiontrace.synchronization("Glue")
    def glue() -> None:
        step(2)

    for _ in range(20):
        with flow("rel::Web::req"):
            step(1)
            glue()
    assert tracer.flush(10)
    parts = [p for ps in tracer._writer.recent.values() for p in ps]
    journal = Journal(tmp_path / "j")
    journal.append(parts)
    cursor = journal.release_current()
    assert cursor is not None
    frame = cursor.next_frame()
    assert frame is not None
    before = [count_rows(url, t) for t in ("actiontrace_actions", "actiontrace_edges",
                                           "actiontrace_flows")]
    tracer.storage.write_parts(frame)
    tracer.storage.write_parts(frame)
    after = [count_rows(url, t) for t in ("actiontrace_actions", "actiontrace_edges",
                                          "actiontrace_flows")]
    assert before == after == [60, 20, 20]
    assert {r.status for r in tracer.find_actions(ActionFilter())} == {"ok"}
    cursor.close()


class TestSpillAndReplay:
    def test_outage_spills_then_replays_in_process(self, tmp_path: Path) -> None:
        """Past spill_after, batches go to the journal; all of them reach storage after."""
        store = Flaky()
        tracer = actiontrace.configure(storage=store, journal=tmp_path / "j")
        for i in range(2_000):
            with flow("rel::Web::req"):
                step(i, password="hunter2")
        deadline = time.monotonic() + 10
        while tracer.stats()["journaled"] < 4_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        s = tracer.stats()
        assert s["journaled"] == 4_000 and s["queued"] == 0 and s["storage_down"]
        assert tracer.flush(0.2) is False  # not in storage yet
        store.down = False
        assert tracer.flush(20) is True
        s = tracer.stats()
        assert s["replayed"] == 4_000 and s["journal_pending"] == 0 and s["dropped"] == 0
        steps = store.find_actions(ActionFilter(action="step"))
        assert sorted(r.inputs["i"] for r in steps) == list(range(2_000))
        assert {r.inputs["password"] for r in steps} == {"[REDACTED]"}
        assert Journal(tmp_path / "j").files() == []

    def test_journal_unwritable_drops_and_counts(self, tmp_path: Path) -> None:
        """When the journal cannot be written either, batches are dropped and counted."""
        blocker = tmp_path / "j"
        blocker.write_text("not a directory")
        store = Flaky()
        tracer = actiontrace.configure(storage=store, journal=blocker, max_queue=100,
                                       full_wait=0.01)
        for i in range(200):
            with flow("rel::Web::req"):
                step(i)
        deadline = time.monotonic() + 10
        while tracer.stats()["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
        s = tracer.stats()
        assert s["journal_errors"] >= 1 and s["dropped"] > 0
        assert s["recorded"] == 400 == s["dropped"] + s["journaled"] + s["written"] + s["queued"]
        assert "journal" in (s["last_error"] or "")

    def test_put_never_does_io(self, tmp_path: Path) -> None:
        """Recording during an outage costs the application no I/O: every write attempt
        and every journal frame happens on the writer's thread, never the caller's."""
        store = Flaky()
        io_threads: list[int] = []
        write_parts = store.write_parts

        def spy_write(parts: Any) -> None:
            io_threads.append(threading.get_ident())
            write_parts(parts)

        store.write_parts = spy_write  # type: ignore[method-assign]
        tracer = actiontrace.configure(storage=store, journal=tmp_path / "j")
        buffer = tracer._writer
        buffer.spill_after = 0
        journal = buffer.journal
        assert journal is not None
        append_frame = journal.append_frame

        def spy_append(data: bytes) -> Any:
            io_threads.append(threading.get_ident())
            return append_frame(data)

        journal.append_frame = spy_append  # type: ignore[method-assign]
        # (Asserting on latency instead failed on a loaded machine: not a measure of I/O.)
        for i in range(20_000):
            with flow("rel::Web::req"):
                step(i)
        deadline = time.monotonic() + 120
        while tracer.stats()["journaled"] < 40_000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert tracer.stats()["journaled"] == 40_000 and tracer.stats()["dropped"] == 0
        assert len(set(io_threads)) == 1 and threading.get_ident() not in io_threads
        assert store.calls > 0  # the write attempts were among them

    def test_several_processes_replay_each_frame_once(self, tmp_path: Path) -> None:
        """Journals left by dead processes are replayed by exactly one of several sweepers."""
        jdir = tmp_path / "j"
        url = f"sqlite:///{tmp_path}/t.db"
        # Three processes record against a dead database, then die (their journals stay).
        for k in range(3):
            proc = run_python(f"""
                import actiontrace
                from actiontrace import flow, action
                actiontrace.configure(url={DEAD_PG!r}, journal={str(jdir)!r})
                @action(concept="rel::Dead")
                def work(k, i):
                    return i
                for i in range(1000):
                    with flow("rel::Web::req"):
                        work({k}, i)
            """)
            assert proc.returncode == 0, proc.stderr
        assert len(Journal(jdir).files()) >= 3
        # Four processes start on a live database at once and sweep the directory.
        sweeper = f"""
            import time, actiontrace
            from actiontrace import flow
            t = actiontrace.configure(url={url!r}, journal={str(jdir)!r})
            with flow("rel::Web::start"):
                pass
            t.flush(30)
            deadline = time.monotonic() + 60
            from actiontrace.pipeline._journal import Journal
            while Journal({str(jdir)!r}).files() and time.monotonic() < deadline:
                time.sleep(0.05)
            print(t.stats()["replayed"])
        """
        import subprocess
        import sys
        import textwrap

        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(sweeper)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
        replayed = sum(int(o[0].strip().splitlines()[-1]) for o in outs)
        assert replayed == 3 * 2000  # each frame replayed by one sweeper only
        assert count_rows(url, where="WHERE concept_uri = 'rel::Dead'") == 3000
        assert Journal(jdir).files() == []


class TestPostgresDown:
    def test_unreachable_at_start(self, pg: str, cluster: PrivateCluster, tmp_path: Path) -> None:
        """PostgreSQL down when the app starts: it runs; everything arrives once it is up."""
        cluster.stop()
        try:
            tracer = actiontrace.configure(url=pg, journal=tmp_path / "j")
            for i in range(3_000):
                with flow("rel::Web::req"):
                    step(i)
            assert tracer.flush(0.5) is False
            assert tracer.stats()["storage_down"]
        finally:
            cluster.start()
        assert tracer.flush(60) is True
        s = tracer.stats()
        assert s["dropped"] == 0 and s["recorded"] == 6_000
        assert s["written"] + s["replayed"] == 6_000
        assert count_rows(pg) == 6_000
        assert count_rows(pg, "actiontrace_flows") == 3_000

    def test_stopped_mid_run_and_restarted(self, pg: str, cluster: PrivateCluster,
                                           tmp_path: Path) -> None:
        """PostgreSQL stopped for 30 s while the app records: the app never waits on it (no
        write, no journal frame on its thread), zero lost or doubled."""
        tracer = actiontrace.configure(url=pg, journal=tmp_path / "j")
        journal = tracer._writer.journal
        assert journal is not None
        io_threads: set[int] = set()
        append_frame = journal.append_frame

        def spy_append(data: bytes) -> Any:
            io_threads.add(threading.get_ident())
            return append_frame(data)

        journal.append_frame = spy_append  # type: ignore[method-assign]
        stop = threading.Event()
        phase = {"name": "before"}
        lat: dict[str, list[float]] = {"before": [], "outage": [], "after": []}
        sent = [0]

        def app() -> None:
            i = 0
            while not stop.is_set():
                t0 = time.perf_counter()
                with flow("rel::Web::req", inputs={"i": i}):
                    step(i)
                    step(-i - 1)
                lat[phase["name"]].append(time.perf_counter() - t0)
                i += 1
                sent[0] = i
                time.sleep(0.0005)  # ~1,500 flows/s: a busy service, not a benchmark

        worker = threading.Thread(target=app)
        worker.start()
        try:
            time.sleep(3)
            phase["name"] = "outage"
            cluster.stop()
            t_stop = time.monotonic()
            time.sleep(OUTAGE_S)
            during = tracer.stats()
            cluster.start()
            outage = time.monotonic() - t_stop
            phase["name"] = "after"
            time.sleep(3)
        finally:
            stop.set()
            worker.join()
        t0 = time.monotonic()
        assert tracer.flush(120) is True
        drain = time.monotonic() - t0
        s = tracer.stats()
        n_flows = sent[0]
        assert s["dropped"] == 0 and s["recorded"] == 3 * n_flows
        assert during["storage_down"] and during["journaled"] > 0
        assert count_rows(pg) == 3 * n_flows
        # Zero duplicated: every flow's inputs appear once, and each flow holds 3 actions.
        assert count_rows(pg, "actiontrace_flows") == n_flows
        assert count_rows(
            pg, "(SELECT flow_token FROM actiontrace_actions GROUP BY flow_token "
            "HAVING count(*) <> 3) t") == 0
        p99 = {k: sorted(v)[int(len(v) * 0.99)] for k, v in lat.items() if v}
        report = {
            "outage_s": round(outage, 1), "flows": n_flows, "actions": 3 * n_flows,
            "journaled": s["journaled"], "replayed": s["replayed"], "drain_s": round(drain, 2),
            "p99_ms": {k: round(v * 1000, 3) for k, v in p99.items()},
            "rate_before": len(lat["before"]) / 3, "rate_outage": len(lat["outage"]) / outage,
        }
        print("OUTAGE", json.dumps(report))  # the speed figures (docs/reliability.md, row 2)
        # Normal speed, asserted as its cause rather than as timings (which a loaded machine
        # bends): the journal was written, and never by the application's thread.
        assert io_threads and worker.ident not in io_threads, report


BIG = """
import json, os, sys, time
import actiontrace
from actiontrace import action, flow
sys.path.insert(0, {tests!r})
from reliability_support import rss_kib

url, jdir, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
# full_wait: this loop records as fast as a CPU can, faster than a disk absorbs
# fsyncs; it is slowed down (back-pressure) rather than losing actions.
tracer = actiontrace.configure(url=url, journal=jdir, max_queue=50_000, full_wait=1.0)

@action(concept="rel::Big")
def work(i, payload):
    return i

per_flow = 10
t0 = time.monotonic()
peak = base = 0
journal_peak = 0
for f in range(n // per_flow):
    with flow("rel::Web::req", inputs={{"f": f}}):
        for k in range(per_flow - 1):
            work(f * per_flow + k, "x" * 64)
    if f == 2_000:
        base = rss_kib()
    if f % 5_000 == 0:
        peak = max(peak, rss_kib())
record_s = time.monotonic() - t0
# Wait for the condition the test checks, not for an empty queue: the writer takes a
# batch off the queue before it reaches the journal, so "queued == 0" came up to one
# batch (5,000 actions) early on a busy machine.
deadline = time.monotonic() + 300
while tracer.stats()["journaled"] < n and time.monotonic() < deadline:
    time.sleep(0.05)
    peak = max(peak, rss_kib())
s = tracer.stats()
from actiontrace.pipeline._journal import Journal
journal_bytes = Journal(jdir).size()
print("READY", json.dumps({{"record_s": record_s, "base_kib": base, "peak_kib": peak,
                           "journal_bytes": journal_bytes, **{{k: s[k] for k in (
                           "recorded", "journaled", "dropped", "written")}}}}), flush=True)
sys.stdin.readline()  # the test starts the database again
t0 = time.monotonic()
ok = tracer.flush(600)
s = tracer.stats()
print("DONE", json.dumps({{"ok": ok, "drain_s": time.monotonic() - t0, "peak_after_kib": rss_kib(),
                          **{{k: s[k] for k in ("recorded", "replayed", "dropped", "written")}}}}),
      flush=True)
"""


def record_big(url: str, jdir: Path, n: int, cluster: PrivateCluster) -> dict[str, Any]:
    """Record ``n`` actions in a child while the database is down, restart it, drain."""
    import subprocess
    import sys

    tests = str(Path(__file__).parent)
    cluster.stop()
    proc = subprocess.Popen(
        [sys.executable, "-c", BIG.format(tests=tests), url, str(jdir), str(n)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line + (proc.stderr.read() if proc.stderr else "")
        ready = json.loads(line.split(" ", 1)[1])
    finally:
        cluster.start()
    proc.stdin.write("go\n")
    proc.stdin.flush()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    done = json.loads(out.split("DONE ", 1)[1])
    return {**ready, **{f"after_{k}": v for k, v in done.items()}}


class TestBoundedMemory:
    def test_many_actions_against_a_dead_database(self, pg: str, cluster: PrivateCluster,
                                                  tmp_path: Path) -> None:
        """N actions while PostgreSQL is down: RSS stays bounded, and all of them arrive."""
        r = record_big(pg, tmp_path / "j", N_BIG, cluster)
        print("BIG", json.dumps(r))
        assert r["dropped"] == 0 and r["recorded"] == N_BIG
        assert r["journaled"] == N_BIG  # the backlog went to disk, not memory
        # Bounded: after the first 20,000 actions memory grows by at most the in-memory
        # bound (max_queue=50,000 actions, ~0.7 KB each here), whatever N is.
        assert r["peak_kib"] - r["base_kib"] < 60_000, r
        assert r["after_ok"] is True and r["after_replayed"] == N_BIG
        assert count_rows(pg) == N_BIG
        assert Journal(tmp_path / "j").files() == []


class TestSigkill:
    def test_sigkill_keeps_journaled_frames(self, pg: str, tmp_path: Path) -> None:
        """Killed (SIGKILL) during an outage: what reached the journal is stored by the next run."""
        jdir = tmp_path / "j"
        proc = run_python(f"""
            import os, signal, time
            import actiontrace
            from actiontrace import flow, action
            t = actiontrace.configure(url={DEAD_PG!r}, journal={str(jdir)!r})
            @action(concept="rel::Killed")
            def work(i):
                return i
            for i in range(5000):
                with flow("rel::Web::req"):
                    work(i)
            while t.stats()["journaled"] < 10000:
                time.sleep(0.01)
            for i in range(100):  # these stay in memory: lost with the process
                with flow("rel::Web::req"):
                    work(5000 + i)
            os.kill(os.getpid(), signal.SIGKILL)
        """)
        assert proc.returncode == -9
        assert Journal(jdir).files()
        tracer = actiontrace.configure(url=pg, journal=jdir)
        with flow("rel::Web::start"):
            pass
        assert tracer.flush(30)
        deadline = time.monotonic() + 30
        while Journal(jdir).files() and time.monotonic() < deadline:
            time.sleep(0.05)
        got = tracer.find_actions(ActionFilter(concept_uri="rel::Killed"))
        assert sorted(r.inputs["i"] for r in got) == list(range(5000))
        assert tracer.stats()["replayed"] == 10_000


class Gate:
    """Holds a real lock on a storage, so its writes wait (alive, just slow) until opened."""

    def __init__(self, store: Any, tmp_path: Path) -> None:
        self.store = store
        self.kind = getattr(store, "dialect", "memory")
        self.release: Any = None

    def close(self) -> None:
        if self.kind == "memory":
            self.store.gate = threading.Event()
            self.release = self.store.gate.set
        elif self.kind == "sqlite":
            import sqlite3

            holder = sqlite3.connect(self.store.engine.url.database, isolation_level=None,
                                     check_same_thread=False)
            holder.execute("BEGIN IMMEDIATE")  # writers wait in SQLite's busy handler
            self.release = lambda: (holder.execute("COMMIT"), holder.close())
        else:
            conn = self.store.engine.connect()
            conn.exec_driver_sql("LOCK TABLE actiontrace_flows IN EXCLUSIVE MODE")
            self.release = lambda: (conn.commit(), conn.close())

    def open(self) -> None:
        self.release()


class GatedMemory(InMemoryTraceStorage):
    """In memory, a write waits while ``gate`` is closed (the memory backend's Gate)."""

    gate: threading.Event | None = None

    def write_parts(self, parts: Any) -> None:
        if self.gate is not None:
            self.gate.wait(60)
        super().write_parts(parts)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def gated(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gate]:
    """A storage of each backend, with its schema in place, and a gate to slow it."""
    from conftest import make_storage

    store = GatedMemory() if request.param == "memory" else make_storage(
        request.param, request, tmp_path)
    if request.param != "memory":
        store._ensure()
    gate = Gate(store, tmp_path)
    yield gate
    store.close()


def stored(store: Any) -> int:
    return len(store.find_actions(ActionFilter(concept_uri="rel")))


class TestSlowStorage:
    def test_queued_bytes_stay_bounded(self, gated: Gate) -> None:
        """Large values and a store that lags: queued bytes never pass max_queue_bytes."""
        bound = 1 << 20
        tracer = actiontrace.configure(storage=gated.store, journal=False, full_wait=0.01,
                                       max_queue_bytes=bound)
        big = {"blob": "x" * 50_000}
        gated.close()
        peak = 0
        for i in range(100):  # ~5 MB of inputs, 5 times the bound
            with flow("rel::Web::req"):
                step(i, nested=big)
            peak = max(peak, tracer.stats()["queued_bytes"])
        assert 0 < peak <= bound
        gated.open()
        tracer.flush(60)
        s = tracer.stats()
        assert s["dropped"] > 0 and s["queued_bytes"] == 0  # the last resort, counted
        assert s["recorded"] == 200 == s["written"] + s["dropped"] == stored(gated.store) + s["dropped"]

    def test_slow_store_gets_everything_through_the_journal(self, gated: Gate,
                                                           tmp_path: Path) -> None:
        """A store that answers but lags: the backlog spills, is replayed, nothing dropped."""
        tracer = actiontrace.configure(storage=gated.store, journal=tmp_path / "j",
                                       max_queue=1_000, batch_size=100, full_wait=30)
        gated.close()
        for i in range(400):  # 800 actions: past spill_at (500), under max_queue
            with flow("rel::Web::req"):
                step(i)
        gated.open()
        for i in range(400, 3_000):
            with flow("rel::Web::req"):
                step(i)
        assert tracer.flush(120) is True
        s = tracer.stats()
        assert s["journaled_backlog"] > 0 and s["journaled"] == s["replayed"]
        assert s["dropped"] == 0 and not s["storage_down"] and s["journal_pending"] == 0
        assert s["recorded"] == 6_000 == s["written"] + s["replayed"] == stored(gated.store)
        assert Journal(tmp_path / "j").files() == []
