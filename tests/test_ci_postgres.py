"""Guards for the CI environment: PostgreSQL and Graphviz must really be there.

Locally these skip when the services are absent; under CI (``CI`` set) they fail instead,
so a broken provisioning step can never turn the PostgreSQL tests into silent skips.
Start a local server with ``eval "$(scripts/pg-test-server start)"``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest

IN_CI = bool(os.environ.get("CI"))


def _unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def test_postgres_reachable() -> None:
    url = os.environ.get("ACTIONTRACE_TEST_PG_URL")
    if not url:
        _unavailable(
            'ACTIONTRACE_TEST_PG_URL is not set (run: eval "$(scripts/pg-test-server start)")'
        )
    import psycopg  # dev dependency

    # SQLAlchemy URL -> libpq URL: postgresql+psycopg://... -> postgresql://...
    conninfo = url.replace("+psycopg", "", 1)
    with psycopg.connect(conninfo, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)


def test_graphviz_dot_available() -> None:
    if shutil.which("dot") is None:
        _unavailable("Graphviz 'dot' is not on PATH (apt-get install graphviz)")
    result = subprocess.run(["dot", "-V"], check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "graphviz" in (result.stderr + result.stdout).lower()
