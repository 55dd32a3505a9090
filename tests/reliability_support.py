"""Helpers for the reliability tests (tests/test_reliability_*.py and tests/soak.py).

* ``PrivateCluster``: a throwaway PostgreSQL cluster of the caller's own, started with
  ``scripts/pg-test-server`` and a private state file, which the tests stop and start
  (never the shared server other tests use).
* ``run_python``: a child interpreter running a script, with its outcome.
* ``rss_kib``: the resident set size of a process, from ``/proc``.
"""

from __future__ import annotations

import os
import random
import shlex
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "pg-test-server"


def need_postgres(reason: str) -> None:
    """Fail a test that needs PostgreSQL when it is not available (never a skip)."""
    pytest.fail(f"{reason} (`make test` provisions PostgreSQL: scripts/provision)")


class PrivateCluster:
    """A PostgreSQL server of this test module's own, which it may stop and restart."""

    def __init__(self, state_dir: Path, first_port: int = 55432) -> None:
        self.state = state_dir / "env"
        self.env = {**os.environ, "PGTEST_STATE": str(self.state), "PGTEST_PORT": str(first_port)}
        self.vars: dict[str, str] = {}
        self._hold: socket.socket | None = None

    def start_new(self) -> None:
        """Create and start the cluster (``scripts/pg-test-server start``)."""
        proc = subprocess.run(
            ["bash", str(SCRIPT), "start"], env=self.env, capture_output=True, text=True,
            timeout=120, cwd="/", check=False,
        )
        if proc.returncode != 0:
            need_postgres(f"cannot start a private PostgreSQL cluster: {proc.stderr[-500:]}")
        for line in proc.stdout.splitlines():
            if line.startswith("export "):
                key, _, value = line[len("export "):].partition("=")
                self.vars[key] = shlex.split(value)[0] if value else ""

    @property
    def url(self) -> str:
        return self.vars["ACTIONTRACE_TEST_PG_URL"]

    def _pg_ctl(self, args: str) -> None:
        v = self.vars
        cmd = f"{v['ACTIONTRACE_TEST_PG_BIN']}/pg_ctl -D {v['ACTIONTRACE_TEST_PG_DATA']} {args}"
        if os.geteuid() == 0:
            argv = ["su", v["ACTIONTRACE_TEST_PG_OSUSER"], "-s", "/bin/sh", "-c", cmd]
        else:
            argv = ["sh", "-c", cmd]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/",
                              check=False)
        assert proc.returncode == 0, f"pg_ctl {args}: {proc.stdout}{proc.stderr}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: open connections are cut).

        The port stays bound meanwhile (a socket of ours that does not listen, so
        connections are still refused as by a stopped server), so that another test run
        starting a cluster on this machine cannot take it: the server must come back at
        the same address. (A concurrent run took the port during an outage, and the
        restart failed.) Best effort: when the port cannot be bound at once (connections
        in TIME_WAIT), it is not held.
        """
        self._pg_ctl("-m fast -w -t 60 stop")
        hold = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            hold.bind(("127.0.0.1", int(self.vars["ACTIONTRACE_TEST_PG_PORT"])))
        except OSError:
            hold.close()
            return
        self._hold = hold

    def start(self) -> None:
        """Start the stopped server again, on the same port and data."""
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        self._pg_ctl(f"-l {self.vars['ACTIONTRACE_TEST_PG_LOG']} -w -t 60 start")

    def destroy(self) -> None:
        """Stop the server and delete its files."""
        if self._hold is not None:
            self._hold.close()
            self._hold = None
        subprocess.run(["bash", str(SCRIPT), "stop"], env=self.env, capture_output=True,
                       timeout=120, cwd="/", check=False)


def private_cluster(tmp_path_factory: pytest.TempPathFactory, port: int):  # type: ignore[no-untyped-def]
    """Generator body for a module-scoped fixture yielding a started ``PrivateCluster``.

    ``port`` is a base: the search for a free port starts at a random offset above it,
    so test runs side by side on one machine do not all reach for the same ports.
    """
    port += random.randrange(0, 4000, 10)
    cluster = PrivateCluster(tmp_path_factory.mktemp("pgstate"), port)
    cluster.start_new()
    try:
        yield cluster
    finally:
        cluster.destroy()


def run_python(code: str, *args: str, timeout: float = 120,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter and return the finished process."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, **(env or {})},
    )


def rss_kib(pid: int | str = "self") -> int:
    """Resident set size (KiB) of a process."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def wait_for(predicate, timeout: float, interval: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def count_rows(url: str, table: str = "actiontrace_actions", where: str = "") -> int:
    """Rows in one of our tables (a direct SQL count, not through actiontrace)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT count(*) FROM {table} {where}")).scalar_one())
    finally:
        engine.dispose()
