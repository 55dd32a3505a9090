"""Fault matrix rows 4-5: SQLite locked, full or read-only; threads, tasks and fork."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import actiontrace
from actiontrace import ActionFilter, action, flow
from reliability_support import count_rows, run_python


@action(concept="lite::Job")
def step(who: str, i: int) -> int:
    return i


class TestContention:
    def test_another_process_holds_the_write_lock_5s(self, tmp_path: Path) -> None:
        """A 5 s exclusive lock by another process: the app records on, all is stored after."""
        db = tmp_path / "t.db"
        # Who waits for the lock: every write attempt must be the writer thread's.
        store = actiontrace.SqlAlchemyTraceStorage(f"sqlite:///{db}")
        writers: list[int] = []
        write_parts = store.write_parts

        def spy(parts: Any) -> None:
            writers.append(threading.get_ident())
            write_parts(parts)

        store.write_parts = spy  # type: ignore[method-assign]
        tracer = actiontrace.configure(storage=store)
        with flow("lite::Web::warmup"):
            pass
        assert tracer.flush(10)
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys, time
            c = sqlite3.connect({str(db)!r}, isolation_level=None)
            c.execute("BEGIN EXCLUSIVE")
            print("locked", flush=True)
            sys.stdin.readline()  # held until the test says so, not for a fixed time
            c.execute("COMMIT")
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 5:  # the app records on for 5 s of the lock
            with flow("lite::Web::req"):
                step("a", n)
            n += 1
            time.sleep(0.001)
        # Read while the lock is still held (it was read after a timed release, when
        # the writer may have caught up): it waits in SQLite's busy handler (30 s), so
        # nothing recorded since the warmup can have been written yet.
        during = tracer.stats()
        holder.communicate("commit\n", timeout=30)
        assert tracer.flush(60) is True
        s = tracer.stats()
        # Never waits for the lock: the writes (and their waits) are all the writer's.
        # (Asserting flow latency instead failed on a loaded machine.)
        assert writers and threading.get_ident() not in writers
        # The writer was blocked meanwhile: nothing but the warmup written, all in memory.
        assert during["written"] == 1 and during["queued"] == 2 * n
        assert s["dropped"] == 0 and s["written"] == s["recorded"] == 2 * n + 1
        assert count_rows(f"sqlite:///{db}") == 2 * n + 1

    def test_full_disk(self, tmp_path: Path) -> None:
        """RLIMIT_FSIZE: no exception reaches the app; a warning; counters say so."""
        proc = run_python(f"""
            import json, logging, resource, signal, sys, time
            import actiontrace
            from actiontrace import action, flow
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
            logging.basicConfig(level=logging.WARNING)
            t = actiontrace.configure(url="sqlite:///{tmp_path}/t.db",
                                      journal="{tmp_path}/j", batch_size=50)
            with flow("lite::Web::warmup"):
                pass
            assert t.flush(10)
            # From now on no file may grow past 200 KiB: the database nor the journal.
            resource.setrlimit(resource.RLIMIT_FSIZE, (200 * 1024, resource.RLIM_INFINITY))

            @action(concept="lite::Big")
            def big(i, blob):
                return i

            for i in range(400):
                with flow("lite::Web::req"):
                    big(i, "x" * 4000)
            # Wait for what the test checks (it slept 2 s, then read whatever was done):
            # the storage failed, and its batches reached the journal or failed there too.
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                s = t.stats()
                if s["retries"] and (s["journal_errors"] or s["journaled"]):
                    break
                time.sleep(0.05)
            s = t.stats()
            print("STATS", json.dumps(s))
            # Space again: what the journal kept arrives, new flows are written.
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
            with flow("lite::Web::after"):
                pass
            ok = t.flush(30)
            print("AFTER", json.dumps({{"ok": ok, **t.stats()}}))
        """, timeout=120)
        assert proc.returncode == 0, proc.stderr
        stats = __import__("json").loads(proc.stdout.split("STATS ", 1)[1].splitlines()[0])
        after = __import__("json").loads(proc.stdout.split("AFTER ", 1)[1].splitlines()[0])
        assert stats["retries"] > 0 and stats["last_error"]
        assert any(w in stats["last_error"].lower() for w in ("full", "too large", "disk i/o"))
        assert "WARNING:actiontrace" in proc.stderr or "ERROR:actiontrace" in proc.stderr
        assert proc.stderr.count("actiontrace:") < 20  # rate-limited
        assert stats["journal_errors"] > 0 or stats["journaled"] > 0
        # Accounting: every action is written, journaled (then replayed) or counted dropped.
        assert after["recorded"] == 802
        assert after["written"] + after["journaled"] + after["dropped"] == 802
        assert after["replayed"] >= after["journaled"] - after["journal_pending"]
        stored = count_rows(f"sqlite:///{tmp_path}/t.db")
        assert stored == 802 - after["dropped"]

    def test_read_only_database(self, tmp_path: Path) -> None:
        """A read-only database: the app runs; batches wait in the journal until writable."""
        url = f"sqlite:///{tmp_path}/t.db"
        tracer = actiontrace.configure(url=url)
        with flow("lite::Web::warmup"):
            pass
        assert tracer.flush(10)
        tracer.shutdown()
        ro = f"sqlite:///file:{tmp_path}/t.db?mode=ro&uri=true"
        tracer = actiontrace.configure(url=ro, journal=tmp_path / "j")
        for i in range(100):
            with flow("lite::Web::req"):
                step("ro", i)
        assert tracer.flush(2) is False
        s = tracer.stats()
        assert s["storage_down"] and "readonly" in (s["last_error"] or "").replace(" ", "")
        assert tracer.shutdown(timeout=120) is False  # a deadline: journaling takes what it takes
        assert tracer.stats()["journaled"] == 200 and tracer.stats()["dropped"] == 0
        # The next process with write access stores the journal.
        tracer = actiontrace.configure(url=url, journal=tmp_path / "j")
        with flow("lite::Web::again"):
            pass
        assert tracer.flush(10)
        deadline = time.monotonic() + 10
        while count_rows(url, where="WHERE action = 'step'") < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_rows(url, where="WHERE action = 'step'") == 100


class TestConcurrency:
    def test_16_threads_and_1000_tasks(self, tmp_path: Path) -> None:
        """16 threads and 1,000 asyncio tasks at once: every flow reconciles exactly."""
        url = f"sqlite:///{tmp_path}/t.db"
        tracer = actiontrace.configure(url=url)

        @action(concept="lite::Async")
        async def astep(who: str, i: int) -> int:
            await asyncio.sleep(0)
            return i

        expected: dict[str, list[int]] = {}
        lock = threading.Lock()

        def thread_body(k: int) -> None:
            for j in range(200):
                who = f"t{k}-{j}"
                with flow("lite::Web::thread", inputs={"who": who}):
                    for i in range(j % 7 + 1):
                        step(who, i)
                with lock:
                    expected[who] = list(range(j % 7 + 1))

        async def task_body(k: int) -> None:
            who = f"a{k}"
            async with flow("lite::Web::task", inputs={"who": who}):
                for i in range(k % 5 + 1):
                    await astep(who, i)
                    step(who, 100 + i)
            with lock:
                expected[who] = sorted([*range(k % 5 + 1), *range(100, 100 + k % 5 + 1)])

        async def tasks() -> None:
            await asyncio.gather(*(task_body(k) for k in range(1000)))

        threads = [threading.Thread(target=thread_body, args=(k,)) for k in range(16)]
        runner = threading.Thread(target=lambda: asyncio.run(tasks()))
        for th in [*threads, runner]:
            th.start()
        for th in [*threads, runner]:
            th.join()
        assert tracer.flush(60)
        recs = tracer.find_actions(ActionFilter(concept_uri="lite"))
        roots = {r.flow_token: r.inputs["who"] for r in recs if r.action in ("thread", "task")}
        got: dict[str, list[int]] = {}
        for r in recs:
            if r.action in ("step", "astep"):
                who = r.inputs["who"]
                assert roots[r.flow_token] == who  # never mixed into another flow
                got.setdefault(who, []).append(r.inputs["i"])
        assert len(roots) == len(expected) == 16 * 200 + 1000
        assert {k: sorted(v) for k, v in got.items()} == {
            k: sorted(v) for k, v in expected.items()
        }
        s = tracer.stats()
        assert s["dropped"] == 0 and s["written"] == s["recorded"] == len(recs)

    def test_fork_while_the_writer_is_busy(self, tmp_path: Path) -> None:
        """fork mid-write: parent and child both finish; nothing is written twice."""
        url = f"sqlite:///{tmp_path}/t.db"
        proc = run_python(f"""
            import json, os, sys
            import actiontrace
            from actiontrace import action, flow
            t = actiontrace.configure(url={url!r}, journal={str(tmp_path / "j")!r})

            @action(concept="fork::Job")
            def step(who, i):
                return i

            with flow("fork::Web::warmup"):
                pass
            # First use (the schema) before: a fork then waits for it (see
            # test_fork_while_the_schema_is_created); this test is about a busy writer.
            assert t.flush(30)
            for i in range(20_000):
                with flow("fork::Web::req"):
                    step("parent", i)
            pid = os.fork()  # the writer thread is busy with the backlog
            who = "child" if pid == 0 else "parent2"
            for i in range(3_000):
                with flow("fork::Web::req"):
                    step(who, i)
            ok = t.flush(60)
            s = t.stats()
            print(json.dumps({{"who": who, "ok": ok, "recorded": s["recorded"],
                              "written": s["written"]}}), flush=True)
            if pid:
                _, status = os.waitpid(pid, 0)
                sys.exit(os.waitstatus_to_exitcode(status))
        """, timeout=120)
        assert proc.returncode == 0, proc.stderr
        import json

        out = {d["who"]: d for d in map(json.loads, proc.stdout.splitlines())}
        assert out["child"]["ok"] and out["parent2"]["ok"]
        # The child wrote only its own flows; the parent all of its own, once.
        assert out["child"]["recorded"] == out["child"]["written"] == 6_000
        assert out["parent2"]["recorded"] == out["parent2"]["written"] == 46_001
        assert count_rows(url, where="WHERE concept_uri = 'fork::Job'") == 26_000
        assert steps_per_writer(tmp_path / "t.db") == {"parent": 20_000, "parent2": 3_000,
                                                       "child": 3_000}

    @pytest.mark.parametrize("held", ["alembic", "logging.config"])
    def test_fork_while_the_schema_is_created(self, held: str, tmp_path: Path) -> None:
        """fork while another thread creates the schema on first use (importing Alembic,
        holding SQLite's write lock): the fork waits for it; parent and child store all."""
        # The import of ``held`` is held (a finder that waits, then lets the real import
        # run) until the fork is under way: "alembic" comes first (the schema check),
        # "logging.config" inside the upgrade, with the write lock taken (Alembic's env.py
        # imports it). Before the fork waited for them, the child inherited a half-imported
        # Alembic (its writes failed: 8 of 200 stored), or SQLite's in-process lock table
        # holding the parent's write lock (every write refused: 0 of 200).
        url = f"sqlite:///{tmp_path}/t.db"
        proc = run_python(f"""
            import importlib.abc, json, os, sys, threading, time
            import actiontrace
            from actiontrace import action, flow

            importing, forking = threading.Event(), threading.Event()

            class HoldImport(importlib.abc.MetaPathFinder):
                def find_spec(self, name, path=None, target=None):
                    if name == {held!r} and not importing.is_set():
                        importing.set()
                        forking.wait(30)
                        time.sleep(0.5)  # os.fork is running its hooks by now
                    return None  # the real finders import it

            sys.meta_path.insert(0, HoldImport())
            t = actiontrace.configure(url={url!r}, journal={str(tmp_path / "j")!r})

            @action(concept="fork::Job")
            def step(who, i):
                return i

            # First use on an application thread, not the writer's: the schema only (a
            # query's statements after it are another matter: see docs/reliability.md).
            query = threading.Thread(target=t.storage._ensure)
            query.start()
            assert importing.wait(30)
            forking.set()
            pid = os.fork()
            who = "child" if pid == 0 else "parent"
            for i in range(100):
                with flow("fork::Web::req"):
                    step(who, i)
            ok = t.flush(60)
            s = t.stats()
            print(json.dumps({{"who": who, "ok": ok, "written": s["written"],
                              "error": s["last_error"]}}), flush=True)
            if pid:
                query.join()
                _, status = os.waitpid(pid, 0)
                sys.exit(os.waitstatus_to_exitcode(status))
            os._exit(0)
        """, timeout=400)
        assert proc.returncode == 0, proc.stderr
        import json

        out = {d["who"]: d for d in map(json.loads, proc.stdout.splitlines())}
        assert out["child"] == {"who": "child", "ok": True, "written": 200, "error": None}
        assert out["parent"] == {"who": "parent", "ok": True, "written": 200, "error": None}
        assert steps_per_writer(tmp_path / "t.db") == {"parent": 100, "child": 100}


    def test_fork_while_another_thread_queries(self, tmp_path: Path) -> None:
        """fork while another thread is inside a query: the fork waits until the query
        is out of SQLite (a child forked inside one was seen to hang); parent and child
        then query and store as usual."""
        url = f"sqlite:///{tmp_path}/t.db"
        proc = run_python(f"""
            import json, os, sys, threading, time
            import sqlalchemy as sa
            import actiontrace
            from actiontrace import ActionFilter, action, flow

            t = actiontrace.configure(url={url!r}, journal={str(tmp_path / "j")!r})

            @action(concept="fork::Job")
            def step(who, i):
                return i

            t.storage.find_actions(ActionFilter(limit=1))  # the schema, before the hold
            inside, release = threading.Event(), threading.Event()
            held = {{"armed": True}}

            @sa.event.listens_for(t.storage.engine, "before_cursor_execute")
            def hold(conn, cursor, statement, params, context, many):
                if held["armed"] and threading.current_thread().name == "query":
                    held["armed"] = False
                    inside.set()
                    release.wait(30)  # the query stays inside its statement

            released = []

            def let_go():
                time.sleep(0.5)  # os.fork is waiting by now (or, unguarded, long done)
                released.append(time.monotonic())
                release.set()

            query = threading.Thread(target=t.storage.find_actions,
                                     args=(ActionFilter(limit=5),), name="query")
            query.start()
            assert inside.wait(30)
            threading.Thread(target=let_go).start()
            pid = os.fork()
            forked = time.monotonic()
            who = "child" if pid == 0 else "parent"
            for i in range(100):
                with flow("fork::Web::req"):
                    step(who, i)
            ok = t.flush(60)
            found = len(t.storage.find_actions(ActionFilter(concept_uri="fork::Job")))
            s = t.stats()
            line = json.dumps({{"who": who, "ok": ok, "written": s["written"],
                               "waited": bool(released) and forked >= released[0],
                               "found": found >= 100}})
            os.write(1, (line + "\\n").encode())  # one write: the two processes share stdout
            if pid:
                query.join()
                _, status = os.waitpid(pid, 0)
                sys.exit(os.waitstatus_to_exitcode(status))
            os._exit(0)
        """, timeout=120)
        assert proc.returncode == 0, proc.stderr
        import json

        out = {d["who"]: d for d in map(json.loads, proc.stdout.splitlines())}
        assert out["parent"] == {"who": "parent", "ok": True, "written": 200, "waited": True,
                                 "found": True}
        assert out["child"]["ok"] and out["child"]["written"] == 200 and out["child"]["found"]
        assert steps_per_writer(tmp_path / "t.db") == {"parent": 100, "child": 100}


def steps_per_writer(db: Path) -> dict[str, int]:
    """How many ``step`` rows each writer (the ``who`` input) stored in ``db``."""
    with sqlite3.connect(db) as c:
        return dict(c.execute(
            "SELECT json_extract(inputs, '$.who'), count(*) FROM actiontrace_actions "
            "WHERE action = 'step' GROUP BY 1"
        ).fetchall())

@pytest.mark.parametrize("n_threads", [16])
def test_flush_from_many_threads(n_threads: int, tmp_path: Path) -> None:
    """flush() called concurrently from many threads: each returns True, none hangs."""
    tracer = actiontrace.configure(url=f"sqlite:///{tmp_path}/t.db")
    results: list[bool] = []

    def body(k: int) -> None:
        for i in range(50):
            with flow("lite::Web::req"):
                step(str(k), i)
            if i % 10 == 0:
                results.append(tracer.flush(30))

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert all(results) and len(results) == n_threads * 5


FRESH = '''
import multiprocessing as mp, os, sys

ROUNDS, PROCS, DIR = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]


def child(url, journal, barrier):
    import actiontrace
    from actiontrace import action, flow

    @action(concept="fresh::Job")
    def step(i):
        return i

    actiontrace.configure(url=url, journal=journal)
    barrier.wait()  # every process's first write meets a fresh file at once
    for i in range(50):
        with flow("fresh::Worker::task"):
            step(i)


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    for r in range(ROUNDS):
        barrier = ctx.Barrier(PROCS)
        procs = [ctx.Process(target=child, args=(f"sqlite:///{DIR}/r{r}.db", f"{DIR}/j{r}",
                                                 barrier)) for _ in range(PROCS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        assert all(p.exitcode == 0 for p in procs)
'''


class TestFreshStore:
    def test_switching_to_wal_waits_for_a_lock(self, tmp_path: Path) -> None:
        """PRAGMA journal_mode=WAL meeting a locked file retries until the lock goes."""
        from actiontrace.storage._engine import switch_to_wal

        db = tmp_path / "t.db"
        holder = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        holder.execute("CREATE TABLE t (x)")
        holder.execute("BEGIN EXCLUSIVE")
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("PRAGMA busy_timeout = 0")  # fails at once, as the race makes it do
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            other.execute("PRAGMA journal_mode = WAL")
        release = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
        release.start()
        switch_to_wal(other.cursor())
        release.join()
        assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)

    def test_processes_opening_a_fresh_store_together(self, tmp_path: Path) -> None:
        """4 processes released by a barrier onto a fresh file, 25 times: all stored, no journal."""
        rounds, procs = 25, 4  # the race lost a batch about 1 round in 30 before
        proc = run_python(FRESH, str(rounds), str(procs), str(tmp_path), timeout=600)
        assert proc.returncode == 0, proc.stderr
        assert "database is locked" not in proc.stderr
        for r in range(rounds):
            assert count_rows(f"sqlite:///{tmp_path}/r{r}.db") == procs * 50 * 2, r
            assert not list((tmp_path / f"j{r}").glob("*.atj")), r
