"""Fault matrix row 1: every way a process ends keeps what it recorded (docs/reliability.md)."""

from __future__ import annotations

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
