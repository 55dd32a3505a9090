"""A host application with its own Alembic history in actiontrace's database.

A real host project (alembic.ini, env.py, one revision creating its ``orders`` table) is
written to a temporary directory and driven with the ``alembic`` command, against the
same SQLite file and PostgreSQL schema actiontrace records into.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

import actiontrace
from actiontrace.contrib.alembic import include_name, include_object, is_actiontrace_table

ENV_PY = '''
import os
import sqlalchemy as sa
from alembic import context

metadata = sa.MetaData()
sa.Table("orders", metadata, sa.Column("id", sa.Integer, primary_key=True),
         sa.Column("item", sa.String(50), nullable=False))

kwargs = {}
if os.environ.get("HOST_USES_FILTER") == "1":
    from actiontrace.contrib.alembic import include_name, include_object
    kwargs = {"include_name": include_name, "include_object": include_object}

engine = sa.create_engine(os.environ["HOST_URL"], poolclass=sa.pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata, **kwargs)
    with context.begin_transaction():
        context.run_migrations()
'''

REVISION = '''
"""orders"""
import sqlalchemy as sa
from alembic import op

revision = "h0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("orders", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("item", sa.String(50), nullable=False))


def downgrade():
    op.drop_table("orders")
'''


def host_project(root: Path) -> Path:
    """Write the host's Alembic project; return its alembic.ini."""
    (root / "migrations" / "versions").mkdir(parents=True)
    (root / "migrations" / "env.py").write_text(ENV_PY)
    (root / "migrations" / "script.py.mako").write_text("")
    (root / "migrations" / "versions" / "h0001_orders.py").write_text(textwrap.dedent(REVISION))
    ini = root / "alembic.ini"
    ini.write_text(f"[alembic]\nscript_location = {root / 'migrations'}\n")
    return ini


def alembic(ini: Path, url: str, *args: str, use_filter: bool) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOST_URL": url, "HOST_USES_FILTER": "1" if use_filter else "0"}
    return subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), *args],
                          capture_output=True, text=True, timeout=120, env=env, check=False)


def host_version(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind, to be shared by the host and actiontrace."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    return str(request.getfixturevalue("pg_url"))


class TestHostProject:
    def test_alembic_check_is_clean_with_the_filters(self, shared_url: str,
                                                     tmp_path: Path) -> None:
        """Host history + actiontrace in one database: the host's `alembic check` passes,
        its alembic_version stays its own, and actiontrace keeps recording."""
        ini = host_project(tmp_path / "host")
        up = alembic(ini, shared_url, "upgrade", "head", use_filter=True)
        assert up.returncode == 0, up.stderr
        tracer = actiontrace.configure(url=shared_url)  # creates actiontrace's tables

        @actiontrace.action(concept="host::Shop")
        def buy(item: str) -> str:
            return item

        buy("tea")
        assert tracer.flush(30)
        assert len(tracer.find_actions(actiontrace.ActionFilter(concept_uri="host::Shop"))) == 1

        # Without the filters the host's autogenerate wants to drop actiontrace's tables:
        # the check below is a real one.
        bare = alembic(ini, shared_url, "check", use_filter=False)
        assert bare.returncode != 0
        assert "actiontrace_actions" in bare.stdout + bare.stderr

        checked = alembic(ini, shared_url, "check", use_filter=True)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        assert "No new upgrade operations detected" in checked.stdout + checked.stderr
        assert host_version(shared_url) == ["h0001"]
        from actiontrace.storage import _migrate

        assert _migrate.current(shared_url) == _migrate.HEAD


class TestFilters:
    def test_tables_by_prefix(self) -> None:
        """actiontrace_* (the version table too) is left out; the host's tables are not."""
        assert is_actiontrace_table("actiontrace_flows")
        assert is_actiontrace_table("actiontrace_alembic_version")
        assert not is_actiontrace_table("alembic_version") and not is_actiontrace_table(None)
        assert include_name("orders", "table", {}) is True
        assert include_name("actiontrace_edges", "table", {}) is False

    def test_objects_on_our_tables(self) -> None:
        """Columns and indexes of actiontrace's tables are left out, the host's kept."""
        md = sa.MetaData()
        ours = sa.Table("actiontrace_x", md, sa.Column("id", sa.Integer, primary_key=True))
        host = sa.Table("orders", md, sa.Column("id", sa.Integer, primary_key=True))
        assert include_object(ours.c.id, "id", "column", False, None) is False
        assert include_object(host.c.id, "id", "column", False, None) is True
        assert include_name("ix_a", "index", {"table_name": "actiontrace_x"}) is False
        assert include_name("ix_b", "index", {"table_name": "orders"}) is True
