"""Fault matrix row 8 in CI: a 60-second soak with PostgreSQL restarted twice.

The 10-minute version (restart every 2 minutes) is ``make soak`` (tests/soak.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from reliability_support import PrivateCluster, private_cluster
from soak import run_soak

pytestmark = pytest.mark.postgres

DURATION = float(os.environ.get("ACTIONTRACE_SOAK_SECONDS", "60"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateCluster]:
    """A PostgreSQL server this module may stop and start."""
    yield from private_cluster(tmp_path_factory, 55480)


def test_soak_counts_match_exactly(cluster: PrivateCluster, tmp_path: Path) -> None:
    """Mixed load for 60 s, database down 5 s every 20 s: stored == recorded, exactly."""
    result = run_soak(cluster.url, DURATION, DURATION / 3, cluster, tmp_path / "j",
                      threads=4, outage=5)
    print("SOAK", json.dumps(result))
    assert result["restarts"] >= 2
    assert result["flush_ok"] and result["dropped"] == 0
    assert result["sent"] == result["stored"], result
