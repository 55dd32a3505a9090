"""The Alembic migrations, the first-use schema check, and ``actiontrace db``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from actiontrace import ActionFilter, SchemaAhead, SchemaBehind, SqlAlchemyTraceStorage
from actiontrace.recording._ids import new_id
from actiontrace.recording._layout import new_record
from actiontrace.recording._record import FlowPart, Named
from actiontrace.storage import _migrate
from actiontrace.storage._schema import VERSION_TABLE, for_dialect, metadata

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
OUR_TABLES = {"actiontrace_flows", "actiontrace_actions", "actiontrace_edges"}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each SQL backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/m.db"
    return str(request.getfixturevalue("pg_url"))


def tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return set(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def one_part() -> FlowPart:
    part = FlowPart(new_id(), None, 1, "m")
    root = new_id()
    part.root_id = root
    part.offset = 0
    part.records.append(new_record(Named("mig", "root"), root, None, 1000, 1000, "ok", b"{}", b"1"))
    return part


def add_host_app(url: str) -> None:
    """A host application with its own Alembic history and table."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('hostrev1')")
        conn.exec_driver_sql("CREATE TABLE host_users (id INTEGER PRIMARY KEY)")
        conn.exec_driver_sql("INSERT INTO host_users VALUES (7)")
    engine.dispose()


def host_state(url: str) -> tuple[list[str], list[int]]:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        revs = [r[0] for r in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]
        users = [r[0] for r in conn.exec_driver_sql("SELECT id FROM host_users")]
    engine.dispose()
    return revs, users


class TestMigrations:
    def test_down_and_up_with_data(self, db_url: str) -> None:
        """base -> head -> base -> head works with data in the database."""
        add_host_app(db_url)
        _migrate.upgrade(db_url)
        assert _migrate.current(db_url) == _migrate.head()
        assert tables(db_url) >= OUR_TABLES
        store = SqlAlchemyTraceStorage(db_url)
        store.write_parts([one_part()])
        assert len(store.find_actions(ActionFilter())) == 1
        store.close()
        _migrate.downgrade(db_url, "base")
        assert _migrate.current(db_url) is None
        assert not (OUR_TABLES & tables(db_url))
        _migrate.upgrade(db_url, "head")
        store = SqlAlchemyTraceStorage(db_url)
        assert store.find_actions(ActionFilter()) == []
        store.write_parts([one_part()])
        assert len(store.find_actions(ActionFilter())) == 1
        store.close()
        assert host_state(db_url) == (["hostrev1"], [7])

    def test_models_match_migrations(self, db_url: str) -> None:
        """Autogenerate finds no difference between the models and the migrated schema."""
        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        sys.path.insert(0, str(_migrate.migrations_dir()))
        add_host_app(db_url)  # a host's tables must be ignored, not reported
        _migrate.upgrade(db_url)
        engine = sa.create_engine(db_url)
        try:
            with engine.connect() as conn:
                ctx = MigrationContext.configure(conn, opts={
                    "include_name": _include_name, "compare_type": True,
                    "include_object": _include_object_for(conn.dialect.name),
                    "version_table": VERSION_TABLE,
                })
                diff = compare_metadata(ctx, metadata)
        finally:
            engine.dispose()
        assert diff == []

    def test_host_alembic_version_untouched(self, db_url: str) -> None:
        """Our upgrade and downgrade never touch the host application's alembic_version."""
        add_host_app(db_url)
        _migrate.upgrade(db_url)
        assert VERSION_TABLE in tables(db_url)
        assert host_state(db_url) == (["hostrev1"], [7])
        _migrate.downgrade(db_url, "base")
        assert host_state(db_url) == (["hostrev1"], [7])


class TestEdgeDurations:
    """Revision 0006: edges get their target's duration, converted from stored data."""

    @staticmethod
    def _fill_0005(url: str) -> dict[str, Any]:
        import uuid

        from actiontrace.storage._schema import actions, edges, flows

        _migrate.upgrade(url, "0005")
        engine = sa.create_engine(url)
        pg = engine.dialect.name == "postgresql"
        ids = {k: uuid.UUID(int=new_id()) for k in ("flow", "root", "a", "b", "c", "d")}
        doc = {} if pg else "{}"
        acts = [("root", None, 10, "ok"), ("a", "root", 300, "ok"), ("b", "root", 700, "ok"),
                ("c", "root", 50, "error"), ("d", "root", None, "running")]
        with engine.begin() as conn:
            conn.execute(flows.insert(), [{"flow_token": ids["flow"], "root_action_id": ids["root"],
                                           "created_at": 1, "module": "m", "sampled": True}])
            conn.execute(actions.insert(), [
                {"id": ids[k], "flow_token": ids["flow"],
                 "parent_id": None if p is None else ids[p], "concept_uri": "mig::C",
                 "action": k, "timestamp": n, "duration_us": d, "status": st,
                 "inputs": doc, "outputs": doc}
                for n, (k, p, d, st) in enumerate(acts)])
            conn.execute(edges.insert(), [
                {"from_action": ids[f], "to_action": ids[t], "synchronization": sync,
                 "flow_token": ids["flow"], "created_at": n}
                for n, (f, t, sync) in enumerate([
                    ("root", "a", "S"), ("root", "b", "S"),  # one edge each: carried
                    ("root", "c", "Twice"), ("a", "c", "Twice"),  # two into c: looked up
                    ("root", "d", "S")])])  # d still running: looked up
        engine.dispose()
        return ids

    @staticmethod
    def _durations(url: str) -> dict[tuple[str, str], Any]:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT a.action, e.synchronization, e.duration_us FROM actiontrace_edges e "
                "JOIN actiontrace_actions a ON a.id = e.to_action").all()
        engine.dispose()
        return {(r[0], r[1]): r[2] for r in rows}

    def test_upgrade_fills_durations_down_and_up(self, db_url: str) -> None:
        """Up: each edge carries its finished target's duration (the only edge of its
        synchronization into it); sync_performance answers the same; down and up again."""
        self._fill_0005(db_url)
        _migrate.upgrade(db_url)
        assert self._durations(db_url) == {("a", "S"): 300, ("b", "S"): 700,
                                           ("c", "Twice"): None, ("d", "S"): None}
        store = SqlAlchemyTraceStorage(db_url)
        s = store.sync_performance("S")
        assert (s.count, s.mean, s.median) == (2, 500.0, 500.0)
        twice = store.sync_performance("Twice")
        assert (twice.count, twice.mean) == (1, 50.0)  # c once, though two edges lead to it
        store.close()
        _migrate.downgrade(db_url, "0005")
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            cols = {c["name"] for c in sa.inspect(conn).get_columns("actiontrace_edges")}
            n = conn.exec_driver_sql("SELECT count(*) FROM actiontrace_edges").scalar()
        engine.dispose()
        assert "duration_us" not in cols and n == 5
        _migrate.upgrade(db_url)
        assert self._durations(db_url)[("b", "S")] == 700


def _documented(page: str, start: str) -> list[str]:
    """The SQL statements of ``page``'s ```sql block that begins with ``start``."""
    text = (REPO / "docs" / page).read_text()
    block = next(b.split("```", 1)[0] for b in text.split("```sql\n")[1:] if start in b)
    return [stmt.strip() for stmt in block.split(";") if stmt.strip()]


_DOCUMENTED_0007 = _documented("storage.md", "ix_actiontrace_edges_sync_durations")


def _edge_indexes(url: str) -> dict[str, str]:
    """Index name -> definition (columns, and INCLUDE on PostgreSQL) of the edges table."""
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes "
                "WHERE tablename = 'actiontrace_edges' AND schemaname = current_schema()").all()
            out = {r[0]: r[1].split(" USING btree ", 1)[1] for r in rows}
        else:
            out = {i["name"]: "(" + ", ".join(i["column_names"]) + ")"
                   for i in sa.inspect(conn).get_indexes("actiontrace_edges")}
    engine.dispose()
    return {k: v for k, v in out.items() if "_sync" in k or "_duration" in k}


class TestEdgeIndexes:
    """Revision 0007: PostgreSQL's two edge indexes by synchronization become one."""

    @staticmethod
    def _answers(url: str) -> tuple[Any, ...]:
        store = SqlAlchemyTraceStorage(url)
        try:
            return (store.sync_performance("S"), store.sync_performance("Twice"),
                    store.synchronization_links(), store.synchronization_links(1),
                    store.top_synchronizations(5))
        finally:
            store.close()

    def test_indexes_converted_down_and_up(self, db_url: str) -> None:
        """Up: on PostgreSQL one (synchronization, created_at) INCLUDE (duration_us)
        index and a partial one of the edges without a duration, on SQLite both as before, and the synchronization queries answer from the
        stored data; down restores the two indexes, up again converts them."""
        TestEdgeDurations._fill_0005(db_url)
        _migrate.upgrade(db_url, "0006")
        two = {"ix_actiontrace_edges_sync": "(synchronization, created_at)",
               "ix_actiontrace_edges_durations": "(synchronization, duration_us)"}
        assert _edge_indexes(db_url) == two
        _migrate.upgrade(db_url)
        pg = db_url.startswith("postgresql")
        assert _edge_indexes(db_url) == ({
            "ix_actiontrace_edges_sync_durations":
                "(synchronization, created_at) INCLUDE (duration_us)",
            "ix_actiontrace_edges_no_duration": "(synchronization) WHERE (duration_us IS NULL)",
        } if pg else two)
        answers = self._answers(db_url)
        s, twice, links, newest, top = answers
        assert (s.count, s.mean, s.median) == (2, 500.0, 500.0)  # a and b; d still runs
        assert (twice.count, twice.mean) == (1, 50.0)
        assert top == [("S", 3), ("Twice", 2)]
        assert ("mig::C::root", "S", "mig::C::a", 1) in links and len(newest) == 2
        _migrate.downgrade(db_url, "0006")
        assert _edge_indexes(db_url) == two
        _migrate.upgrade(db_url)
        assert self._answers(db_url) == answers
        assert _edge_indexes(db_url).keys() == ({"ix_actiontrace_edges_sync_durations",
                                                 "ix_actiontrace_edges_no_duration"} if pg
                                                else two.keys())

    def test_indexes_built_beforehand_are_kept(self, pg_url: str) -> None:
        """On PostgreSQL the new indexes may be built beforehand (CONCURRENTLY, as
        docs/storage.md shows); the upgrade keeps them and drops the old two."""
        TestEdgeDurations._fill_0005(pg_url)
        _migrate.upgrade(pg_url, "0006")
        engine = sa.create_engine(pg_url)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for sql in _DOCUMENTED_0007:
                conn.exec_driver_sql(sql)
        engine.dispose()
        _migrate.upgrade(pg_url)
        assert set(_edge_indexes(pg_url)) == {"ix_actiontrace_edges_sync_durations",
                                              "ix_actiontrace_edges_no_duration"}
        store = SqlAlchemyTraceStorage(pg_url)
        assert store.sync_performance("S").count == 2
        store.close()

    def test_first_use_creates_the_migrated_indexes(self, db_url: str) -> None:
        """A new store's edge indexes are the ones the migrations make (the models'
        comparison does not look at INCLUDE columns)."""
        store = SqlAlchemyTraceStorage(db_url)
        store.find_actions(ActionFilter(limit=1))
        store.close()
        fresh = _edge_indexes(db_url)
        _migrate.downgrade(db_url, "0006")
        _migrate.upgrade(db_url)
        assert _edge_indexes(db_url) == fresh
        assert len(fresh) == 2


def _include_object_for(dialect: str) -> Any:
    # The same filter migrations/env.py uses: objects of the other dialect are left out.
    return lambda obj, name, type_, reflected, compare_to: reflected or for_dialect(obj, dialect)


def _include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # The same filter migrations/env.py uses.
    return type_ != "table" or bool(name and name.startswith("actiontrace_"))


class TestFirstUse:
    def test_fresh_sqlite_file_brought_to_head(self, tmp_path: Path) -> None:
        """A new SQLite file gets the schema on first use."""
        url = f"sqlite:///{tmp_path}/new.db"
        store = SqlAlchemyTraceStorage(url)
        assert not (tmp_path / "new.db").exists()  # nothing happens at construction
        assert store.find_actions(ActionFilter()) == []
        assert _migrate.current(url) == _migrate.head()
        store.close()

    def test_fresh_postgres_schema_brought_to_head(self, pg_url: str) -> None:
        """An empty PostgreSQL database gets the schema on first use."""
        store = SqlAlchemyTraceStorage(pg_url)
        store.write_parts([one_part()])
        assert _migrate.current(pg_url) == _migrate.head()
        store.close()

    def test_two_processes_start_on_one_new_file(self, tmp_path: Path) -> None:
        """Two processes that create the schema of one new SQLite file both succeed."""
        url = f"sqlite:///{tmp_path}/race.db"
        code = textwrap.dedent("""
            import sys, time
            from actiontrace import SqlAlchemyTraceStorage, ActionFilter
            time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
            store = SqlAlchemyTraceStorage(sys.argv[1])
            store.find_actions(ActionFilter())
            print("ok")
        """)
        import time

        start = str(time.time() + 1.5)
        procs = [
            subprocess.Popen([sys.executable, "-c", code, url, start],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)
        ]
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            assert out.strip() == "ok"
        assert _migrate.current(url) == _migrate.head()

    def test_first_use_waits_for_another_process_write_lock(self, tmp_path: Path) -> None:
        """Another process holds the new file's write lock: first use tries again (not one
        wait inside, where a fork would wait too) until it is free, then brings the file to
        head."""
        import threading
        import time

        db = tmp_path / "held.db"
        holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import sqlite3, sys
            c = sqlite3.connect({str(db)!r}, isolation_level=None)
            c.execute("PRAGMA journal_mode = WAL")
            c.execute("BEGIN IMMEDIATE")
            print("locked", flush=True)
            sys.stdin.readline()
            c.execute("COMMIT")
        """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        store = SqlAlchemyTraceStorage(f"sqlite:///{db}")
        tries: list[str] = []
        sa.event.listen(store.engine, "before_cursor_execute",
                        lambda *a: tries.append(a[2]) if a[2] == "BEGIN IMMEDIATE" else None)
        errors: list[BaseException] = []

        def first_use() -> None:
            try:
                store.find_actions(ActionFilter())
            except BaseException as exc:
                errors.append(exc)

        user = threading.Thread(target=first_use)
        user.start()
        deadline = time.monotonic() + 60
        while len(tries) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(tries) >= 3 and user.is_alive() and not errors  # tried again, waiting
        holder.communicate("commit\n", timeout=30)
        user.join(60)
        assert not user.is_alive() and errors == []
        assert _migrate.current(f"sqlite:///{db}") == _migrate.head()
        store.close()

    def _migrations_with_a_newer_revision(self, tmp_path: Path) -> str:
        """A copy of our migrations plus a revision 9999 (what a newer release would ship)."""
        copy = tmp_path / "migrations"
        shutil.copytree(_migrate.migrations_dir(), copy,
                        ignore=shutil.ignore_patterns("__pycache__"))
        (copy / "versions" / "9999_extra.py").write_text(textwrap.dedent(f"""
            import sqlalchemy as sa
            from alembic import op

            revision = "9999"
            down_revision = "{_migrate.head()}"
            branch_labels = None
            depends_on = None

            def upgrade():
                op.create_table("actiontrace_extra", sa.Column("id", sa.Integer, primary_key=True))

            def downgrade():
                op.drop_table("actiontrace_extra")
        """))
        return str(copy)

    def test_database_behind_head_is_refused(self, db_url: str, tmp_path: Path) -> None:
        """A schema at an older revision raises SchemaBehind naming the upgrade command."""
        newer = self._migrations_with_a_newer_revision(tmp_path)
        _migrate.upgrade(db_url)  # at head, while "this version" (newer) needs 9999
        engine = sa.create_engine(db_url)
        try:
            with pytest.raises(SchemaBehind, match="actiontrace db upgrade"):
                _migrate.ensure_schema(engine, newer)
        finally:
            engine.dispose()

    def test_database_ahead_of_head_is_refused(self, db_url: str, tmp_path: Path) -> None:
        """A schema at a revision this version does not know is refused, not transient."""
        from alembic import command

        newer = self._migrations_with_a_newer_revision(tmp_path)
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            command.upgrade(_migrate._config(conn, newer), "head")
            conn.commit()
        engine.dispose()
        store = SqlAlchemyTraceStorage(db_url)
        try:
            with pytest.raises(SchemaAhead, match="9999") as info:
                store.find_actions(ActionFilter())
            assert not store.is_transient(info.value)
        finally:
            store.close()


# -- the command line ---------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k != "ACTIONTRACE_URL"}
    full_env.update(env or {})
    return subprocess.run([str(BIN / "actiontrace"), *args], capture_output=True, text=True,
                          timeout=120, check=False, env=full_env)


class TestCommandLine:
    def test_upgrade_current_downgrade(self, db_url: str) -> None:
        """db upgrade / current / downgrade through the installed console script."""
        # No schema yet: a one-line error naming the command that creates it.
        res = cli("--url", db_url, "db", "current")
        assert (res.returncode, res.stdout) == (1, "") and res.stderr.count("\n") == 1
        assert "actiontrace db upgrade" in res.stderr
        res = cli("--url", db_url, "db", "upgrade")
        assert res.returncode == 0, res.stderr
        res = cli("--url", db_url, "db", "current")
        assert (res.returncode, res.stdout.strip()) == (0, _migrate.head())
        res = cli("--url", db_url, "db", "downgrade", "base")
        assert res.returncode == 0, res.stderr
        res = cli("--url", db_url, "db", "current")
        assert (res.returncode, res.stdout) == (1, "") and "actiontrace db upgrade" in res.stderr
        # The URL can also come from the environment.
        res = cli("db", "upgrade", _migrate.head(), env={"ACTIONTRACE_URL": db_url})
        assert res.returncode == 0, res.stderr
        assert _migrate.current(db_url) == _migrate.head()

    def test_default_url_is_local_sqlite(self, tmp_path: Path) -> None:
        """Without --url or $ACTIONTRACE_URL, ./actiontrace.db is used."""
        res = subprocess.run([str(BIN / "actiontrace"), "db", "upgrade"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120, check=False,
                             env={k: v for k, v in os.environ.items() if k != "ACTIONTRACE_URL"})
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "actiontrace.db").exists()

    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("::not-a-url", "malformed"),
            ("nosuchdb://u:hunter2@h/d", "unsupported"),
            ("sqlite:////no/such/directory/x.db", "does not exist"),
            ("postgresql+psycopg://u:hunter2@127.0.0.1:1/x", "connection"),
        ],
    )
    def test_errors_are_one_line(self, url: str, words: str) -> None:
        """Bad URLs and unreachable servers give one line on stderr, no traceback."""
        res = cli("--url", url, "db", "upgrade")
        assert res.returncode != 0
        assert res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert words in lines[0].lower()
        assert "Traceback" not in res.stderr and "hunter2" not in res.stderr

    def test_unknown_revision_is_one_line(self, tmp_path: Path) -> None:
        """An unknown revision is a one-line error too."""
        res = cli("--url", f"sqlite:///{tmp_path}/x.db", "db", "upgrade", "nope")
        assert res.returncode != 0 and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_alembic_upgrade_from_checkout(tmp_path: Path) -> None:
    """`ACTIONTRACE_URL=... alembic upgrade head` from the repository root works."""
    url = f"sqlite:///{tmp_path}/alembic.db"
    res = subprocess.run([str(BIN / "alembic"), "upgrade", "head"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=False, env={**os.environ, "ACTIONTRACE_URL": url})
    assert res.returncode == 0, res.stderr
    assert _migrate.current(url) == _migrate.head()
    res = subprocess.run([str(BIN / "alembic"), "current"], cwd=REPO, capture_output=True,
                         text=True, timeout=120, check=False, env={**os.environ, "ACTIONTRACE_URL": url})
    assert res.returncode == 0 and _migrate.head() in res.stdout


def test_head_constant_is_alembics_head() -> None:
    """_migrate.HEAD (the fast check on first use) names the newest migration."""
    assert _migrate.head() == _migrate.HEAD


def test_first_use_at_head_does_not_import_alembic(tmp_path: Path) -> None:
    """A store already at head is opened and queried without importing Alembic."""
    url = f"sqlite:///{tmp_path}/h.db"
    _migrate.upgrade(url)
    code = (
        "import sys\n"
        "from actiontrace import ActionFilter, SqlAlchemyTraceStorage\n"
        f"SqlAlchemyTraceStorage({url!r}).find_actions(ActionFilter())\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert out.strip() == "False"
