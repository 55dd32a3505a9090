"""Fault matrix row 1: every way a process ends keeps what it recorded (docs/reliability.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reliability_support import count_rows, run_python

DEAD_PG = "postgresql+psycopg://postgres:pw@127.0.0.1:1/none"

PROGRAM = """
import os, signal, sys
import actiontrace
from actiontrace import action, flow

actiontrace.configure(url=sys.argv[1], journal=sys.argv[2])

@action(concept="exit::Job")
def step(i):
    return i

for i in range(500):
    with flow("exit::Web::req", inputs={{"i": i}}):
        step(i)
{ending}
"""

ENDINGS = {
    "normal": ("pass", {0}),
    "sys.exit": ("sys.exit(3)", {3}),
    "exception": ("raise RuntimeError('boom')", {1}),
    # A real SIGINT (Ctrl-C): KeyboardInterrupt unwinds main; exit status 1 or -SIGINT.
    # Python's own handler first: a child started from a background job inherits SIGINT
    # ignored (bash does that to `cmd &`), and then it would wait in pause() forever.
    "KeyboardInterrupt": (
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "os.kill(os.getpid(), signal.SIGINT); signal.pause()",
        {1, -2, 130},
    ),
}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    return str(request.getfixturevalue("pg_url"))


class TestExitPaths:
    @pytest.mark.parametrize("ending", list(ENDINGS))
    def test_everything_recorded_is_stored(self, ending: str, url: str, tmp_path: Path) -> None:
        """Normal exit, sys.exit, an unhandled exception, Ctrl-C: all 1,000 actions stored."""
        code, status = ENDINGS[ending]
        proc = run_python(PROGRAM.format(ending=code), url, str(tmp_path / "j"))
        assert proc.returncode in status, proc.stderr
        assert "Traceback" not in proc.stderr or ending in ("exception", "KeyboardInterrupt")
        assert "actiontrace" not in proc.stderr.replace("/actiontrace", "")  # no warning
        assert count_rows(url) == 1_000
        assert not list((tmp_path / "j").glob("*.atj"))

    def test_exit_while_database_is_down_journals_at_once(self, tmp_path: Path) -> None:
        """Exit with the database down: the backlog goes to the journal, exit is quick."""
        import time

        t0 = time.monotonic()
        proc = run_python(PROGRAM.format(ending="pass"), DEAD_PG, str(tmp_path / "j"))
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        assert took < 8, took  # not the 10 s exit timeout
        files = list((tmp_path / "j").glob("*.atj"))
        assert files and sum(f.stat().st_size for f in files) > 0
        # The next process on a live database stores all of it.
        url = f"sqlite:///{tmp_path}/t.db"
        proc = run_python(f"""
            import time, actiontrace
            from actiontrace import flow
            t = actiontrace.configure(url={url!r}, journal={str(tmp_path / "j")!r})
            with flow("exit::Web::start"):
                pass
            t.flush(10)
            while t.stats()["replayed"] < 1000:
                time.sleep(0.05)
        """, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert count_rows(url, where="WHERE concept_uri LIKE 'exit::%' AND action <> 'start'") == 1_000

    def test_os_exit_loses_only_the_unwritten(self, tmp_path: Path) -> None:
        """os._exit skips atexit: what the writer had not stored yet is lost (documented)."""
        url = f"sqlite:///{tmp_path}/t.db"
        proc = run_python(PROGRAM.format(ending="os._exit(0)"), url, str(tmp_path / "j"))
        assert proc.returncode == 0, proc.stderr
        try:
            stored = count_rows(url)
        except Exception:  # no schema yet: the writer never ran
            stored = 0
        assert 0 <= stored <= 1_000
        print("os._exit stored", stored, "of 1000")


# A program whose children record: every child process shape multiprocessing offers.
CHILDREN = '''
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor

import actiontrace
from actiontrace import action, flow

URL, JOURNAL, METHOD, SHAPE = sys.argv[1:5]
actiontrace.configure(url=URL, journal=JOURNAL)  # spawn and forkserver children run it too


@action(concept="child::Job")
def step(i):
    return i


def work(i):
    with flow("child::Worker::task", inputs={"i": i}):
        step(i)
    return i


def many(n):
    for i in range(n):
        work(i)


if __name__ == "__main__":
    ctx = mp.get_context(METHOD)
    many(10)  # the parent has a writer thread, maybe a backlog, when it forks
    if SHAPE == "process":
        procs = [ctx.Process(target=many, args=(50,)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    elif SHAPE == "executor":
        with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as ex:
            assert sum(ex.map(work, range(100))) == sum(range(100))
    elif SHAPE == "pool":
        pool = ctx.Pool(4)
        assert sum(pool.map(work, range(1000), chunksize=5)) == sum(range(1000))
        pool.close()
        pool.join()
    elif SHAPE == "pool-in-flow":  # forked inside a flow: workers start outside it
        with flow("child::Web::batch"):
            pool = ctx.Pool(4)
            assert sum(pool.map(step, range(1000), chunksize=5)) == sum(range(1000))
            pool.close()
            pool.join()
'''

# Actions the children record in each shape (each task: a flow root and one step).
CHILD_ACTIONS = {"process": 2 * 50 * 2, "executor": 100 * 2, "pool": 1000 * 2,
                 "pool-in-flow": 1 + 1000}


class TestChildProcesses:
    @pytest.mark.parametrize("shape", list(CHILD_ACTIONS))
    @pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
    def test_children_store_everything_without_flush(
        self, method: str, shape: str, url: str, tmp_path: Path
    ) -> None:
        """Process, ProcessPoolExecutor and Pool children (fork/forkserver/spawn) store all."""
        program = tmp_path / "children.py"  # a file: spawn re-imports the main module
        program.write_text(CHILDREN)
        proc = subprocess.run(
            [sys.executable, str(program), url, str(tmp_path / "j"), method, shape],
            capture_output=True, text=True, timeout=300, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert "actiontrace" not in proc.stderr.replace("/actiontrace", ""), proc.stderr
        stored = count_rows(url, where="WHERE concept_uri LIKE 'child::%'")
        assert stored == 10 * 2 + CHILD_ACTIONS[shape]  # with the parent's 10 flows, once
        assert not list((tmp_path / "j").glob("*.atj"))  # nothing left in a journal
