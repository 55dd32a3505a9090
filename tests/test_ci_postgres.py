"""Guards for the CI environment: PostgreSQL and Graphviz must really be there.

``make test`` provisions both (scripts/provision, scripts/run-tests); when either is
missing these fail, so a broken provisioning step never turns tests into silent skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NoReturn

import pytest


def _unavailable(reason: str) -> NoReturn:
    pytest.fail(f"{reason}; `make test` provisions it")


def test_postgres_reachable() -> None:
    url = os.environ.get("ACTIONTRACE_TEST_PG_URL")
    if not url:
        _unavailable(
            "ACTIONTRACE_TEST_PG_URL is not set"
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
