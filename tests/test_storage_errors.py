"""storage/_errors.py: driver errors reach callers as actiontrace's own types."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from actiontrace import (
    ActionFilter,
    SqlAlchemyTraceStorage,
    StorageError,
    StorageUnavailable,
)
from actiontrace.recording._ids import as_uuid, new_id
from actiontrace.recording._record import FlowPart, Named


def _part() -> FlowPart:
    part = FlowPart(new_id(), None, 1_000, "errors")
    part.offset = 0
    part.records.append([Named("e::C", "act"), new_id(), None, 1_000_000, 10, "ok",
                         b'{"k":1}', b"null"])
    return part


class TestQueries:
    def test_unopenable_file_is_unavailable(self, tmp_path: Path) -> None:
        """A SQLite path SQLite cannot open raises StorageUnavailable, from the driver's error."""
        folder = tmp_path / "a-directory.db"
        folder.mkdir()
        store = SqlAlchemyTraceStorage(f"sqlite:///{folder}")
        try:
            with pytest.raises(StorageUnavailable, match="cannot use the database") as info:
                store.find_actions(ActionFilter())
            assert isinstance(info.value.__cause__, sa.exc.OperationalError)
            assert store.is_transient(info.value)
        finally:
            store.close()

    def test_unreachable_server_is_unavailable(self) -> None:
        """A PostgreSQL server that is down raises StorageUnavailable, password masked."""
        store = SqlAlchemyTraceStorage("postgresql+psycopg://u:s3cret@127.0.0.1:1/x")
        try:
            with pytest.raises(StorageUnavailable) as info:
                store.get_causal_chain(as_uuid(new_id()))
            assert "s3cret" not in str(info.value) and "\n" not in str(info.value)
        finally:
            store.close()

    def test_refused_statement_is_a_storage_error(self, tmp_path: Path) -> None:
        """A table dropped under the storage gives StorageError (not transient), never
        SQLAlchemy's own exception."""
        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/t.db")
        try:
            store.find_actions(ActionFilter())
            with store.engine.begin() as conn:
                conn.exec_driver_sql("DROP TABLE actiontrace_edges")
            with pytest.raises(StorageError, match="no such table") as info:
                store.find_by_sync("s")
            assert type(info.value) is StorageError
            assert not store.is_transient(info.value)
            assert "actiontrace_edges" in store.describe_error(info.value)
        finally:
            store.close()


class TestWrites:
    def test_locked_database_is_unavailable(self, tmp_path: Path) -> None:
        """A write while another connection holds SQLite's write lock raises
        StorageUnavailable (the writer retries it), and succeeds once the lock is gone."""
        path = tmp_path / "w.db"
        engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
        store = SqlAlchemyTraceStorage(engine)
        store.find_actions(ActionFilter())  # the schema exists
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with pytest.raises(StorageUnavailable, match="locked") as info:
                store.write_parts([_part()])
            assert store.is_transient(info.value)
            assert isinstance(info.value.__cause__, sqlite3.OperationalError | sa.exc.DBAPIError)
            holder.execute("ROLLBACK")
            store.write_parts([_part()])
            assert len(store.find_actions(ActionFilter(concept_uri="e"))) == 1
        finally:
            holder.close()
            store.close()
            engine.dispose()


class TestClassification:
    def test_raw_driver_errors_are_classified_by_code(self, tmp_path: Path) -> None:
        """An unwrapped sqlite3 error is transient by SQLite's result code, not its text."""
        from actiontrace.storage import _errors

        conn = sqlite3.connect(tmp_path / "c.db")
        try:
            with pytest.raises(sqlite3.OperationalError) as info:
                conn.execute("SELECT * FROM missing")
        finally:
            conn.close()
        assert not _errors.is_transient(info.value)
        assert type(_errors.translate(info.value)) is StorageError
        assert _errors.translate(ValueError("not a driver's")) is None

