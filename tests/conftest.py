"""Shared fixtures: a fresh global tracer per test, and one storage per backend.

PostgreSQL tests use the server named by ``ACTIONTRACE_TEST_PG_URL``: ``make test`` starts
a throwaway one (scripts/run-tests) unless the variable already names a server of the
developer's own. Without it they fail, never skip: a suite that passes has run them.
Each test session works in a schema of its own, so concurrent runs against one server
never see each other.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import actiontrace

PG_ENV = "ACTIONTRACE_TEST_PG_URL"

# tests/test_pytest_plugin.py runs pytest inside pytest.
pytest_plugins = ["pytester"]


def _pg_base_url() -> str:
    url = os.environ.get(PG_ENV)
    if not url:
        pytest.fail(
            f"{PG_ENV} is not set: run the suite with `make test` (it starts a throwaway "
            'PostgreSQL), or eval "$(scripts/pg-test-server start)" first'
        )
    return url


def pg_schema_url(base: str, schema: str) -> str:
    """``base`` with every connection's ``search_path`` set to ``schema``."""
    import sqlalchemy as sa

    url = sa.make_url(base)
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
        hide_password=False
    )


class PgSchemas:
    """Create and drop throwaway schemas on the test server."""

    def __init__(self, base: str) -> None:
        import sqlalchemy as sa

        self.base = base
        self.engine = sa.create_engine(base, poolclass=sa.pool.NullPool)

    def create(self) -> tuple[str, str]:
        name = f"at_test_{uuid.uuid4().hex[:12]}"
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE SCHEMA {name}")
        return name, pg_schema_url(self.base, name)

    def drop(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(autouse=True)
def _fresh_global_tracer() -> Iterator[None]:
    """After each test, shut the global tracer down and install a new in-memory one."""
    yield
    # configure() shuts the old tracer down (flushing it) before installing the new one.
    actiontrace.configure()


@pytest.fixture(scope="session")
def _pg_schemas() -> Iterator[PgSchemas]:
    schemas = PgSchemas(_pg_base_url())
    yield schemas
    schemas.engine.dispose()


@pytest.fixture
def pg_url(_pg_schemas: PgSchemas) -> Iterator[str]:
    """A URL to an empty PostgreSQL schema of this test's own (dropped afterwards)."""
    name, url = _pg_schemas.create()
    yield url
    _pg_schemas.drop(name)


@pytest.fixture(scope="session")
def _pg_storage_url(_pg_schemas: PgSchemas) -> Iterator[str]:
    # One migrated schema for the whole session; tests empty its tables (fast).
    from actiontrace.storage._migrate import upgrade

    name, url = _pg_schemas.create()
    upgrade(url)
    yield url
    _pg_schemas.drop(name)


def make_storage(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Build an empty storage of ``kind`` (memory, sqlite or postgres)."""
    if kind == "memory":
        return actiontrace.InMemoryTraceStorage()
    if kind == "sqlite":
        return actiontrace.SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/t.db")
    url = request.getfixturevalue("_pg_storage_url")
    store = actiontrace.SqlAlchemyTraceStorage(url)
    with store.engine.begin() as conn:
        conn.exec_driver_sql(
            "TRUNCATE actiontrace_flows, actiontrace_actions, actiontrace_edges, "
            "actiontrace_log_events"
        )
    return store


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty storage of each backend."""
    store = make_storage(request.param, request, tmp_path)
    yield store
    store.close()


@pytest.fixture(scope="module")
def echo() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 answering with the headers it got (tests/web_support.py)."""
    from web_support import EchoServer

    with EchoServer() as url:
        yield url
