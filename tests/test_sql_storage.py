"""SqlAlchemyTraceStorage beyond the shared contract: processes, URLs, errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import ActionFilter, ConfigurationError, SqlAlchemyTraceStorage


def run_python(code: str, *args: str, timeout: float = 120) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout (fail on a non-zero exit)."""
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture(params=["sqlite", "postgres"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL to an empty database of each SQL backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/t.db"
    return str(request.getfixturevalue("pg_url"))


RECORD_300 = """
    import sys
    import actiontrace
    from actiontrace import action, flow

    actiontrace.configure(url=sys.argv[1], module="child")

    @action
    def step(i):
        return i * 2

    for i in range(300):
        with flow("app::Job::run", inputs={"i": i}):
            step(i)
    # no flush, no shutdown: the writer's atexit hook must write everything
"""


class TestProcesses:
    def test_exit_without_flush_keeps_everything(self, sql_url: str) -> None:
        """A process that records 300 flows and just exits leaves all 300 stored."""
        run_python(RECORD_300, sql_url)
        store = SqlAlchemyTraceStorage(sql_url)
        try:
            roots = store.find_actions(ActionFilter(concept_uri="app::Job", action="run"))
            steps = store.find_actions(ActionFilter(action="step"))
            assert len(roots) == 300 and len(steps) == 300
            assert len({r.flow_token for r in roots}) == 300
            assert sorted(r.inputs["i"] for r in steps) == list(range(300))
            assert store.get_trace(roots[0].flow_token).module == "child"
        finally:
            store.close()

    def test_two_processes_write_one_flow(self, sql_url: str) -> None:
        """A flow started in one process and continued in another reads back as one."""
        first = run_python("""
            import sys
            import actiontrace
            from actiontrace import action, flow

            tracer = actiontrace.configure(url=sys.argv[1], module="web")

            @action
            def enqueue(job):
                return job

            with flow("web::Api::post") as token:
                enqueue("j1")
            trace = tracer.get_trace(token)
            print(token, list(trace.actions)[-1])
        """, sql_url)
        token, trigger = first.split()
        run_python("""
            import sys
            import actiontrace
            from actiontrace import action, continue_flow

            actiontrace.configure(url=sys.argv[1], module="worker")

            @action
            def work(job):
                return inner(job)

            @action
            def inner(job):
                return "done"

            with continue_flow(sys.argv[2], trigger=sys.argv[3], synchronization="Queue"):
                work("j1")
        """, sql_url, token, trigger)
        store = SqlAlchemyTraceStorage(sql_url)
        try:
            trace = store.get_trace(uuid.UUID(token))
            recs = list(trace.actions.values())
            assert [r.action for r in recs] == ["post", "enqueue", "work", "inner"]
            assert trace.root_action_id == recs[0].id
            assert trace.module == "web"
            assert [(str(e.from_action), e.synchronization) for e in trace.provenance_edges] == [
                (trigger, "Queue")
            ]
            chain = store.get_causal_chain(recs[3].id)
            assert [r.action for r in chain] == ["post", "enqueue", "work", "inner"]
            assert store.longest_chains(1) == [(uuid.UUID(token), 4)]
        finally:
            store.close()


class TestConfiguration:
    @pytest.mark.parametrize(
        ("url", "words"),
        [
            ("::not a url", "malformed"),
            ("nosuchdb://x/y", "unsupported"),
            ("postgresql+nosuchdriver://u@h/d", "driver"),
            ("sqlite:////definitely/missing/dir/t.db", "does not exist"),
        ],
    )
    def test_unusable_urls(self, url: str, words: str) -> None:
        """configure(url=...) rejects unusable URLs with one clear line."""
        with pytest.raises(ConfigurationError, match=words) as info:
            actiontrace.configure(url=url)
        assert "\n" not in str(info.value)

    def test_unreachable_server_is_not_a_configuration_error(self) -> None:
        """A server that is down fails the first query, transiently, without the password."""
        store = SqlAlchemyTraceStorage("postgresql+psycopg://u:s3cret@127.0.0.1:1/x")
        try:
            with pytest.raises(Exception) as info:
                store.find_actions(ActionFilter())
            assert store.is_transient(info.value)
            line = store.describe_error(info.value)
            assert "\n" not in line and "s3cret" not in line
            assert "s3cret" not in repr(store)
        finally:
            store.close()

    def test_accepts_an_engine(self, tmp_path: Path) -> None:
        """An Engine works too (and is left for its owner to dispose)."""
        import sqlalchemy as sa

        engine = sa.create_engine(f"sqlite:///{tmp_path}/e.db")
        store = SqlAlchemyTraceStorage(engine)
        assert store.find_actions(ActionFilter()) == []
        store.close()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("select count(*) from actiontrace_actions").scalar() == 0
        engine.dispose()

    def test_data_errors_are_not_transient(self, tmp_path: Path) -> None:
        """A failure that retrying cannot fix is reported as not transient."""
        import sqlalchemy as sa

        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/t.db")
        try:
            with pytest.raises(sa.exc.DBAPIError) as info, store.engine.connect() as conn:
                conn.exec_driver_sql("select * from no_such_table")
            assert not store.is_transient(info.value)
            assert "no_such_table" in store.describe_error(info.value)
        finally:
            store.close()

    def test_mask_url(self) -> None:
        """Passwords in URLs and conninfo strings are masked."""
        from actiontrace.storage._sql import mask_url

        assert mask_url("x postgresql+psycopg://bob:pw@h/db y") == "x postgresql+psycopg://bob:***@h/db y"
        assert mask_url("host=h password=pw user=u") == "host=h password=*** user=u"

    def test_memory_sqlite_is_shared_between_threads(self) -> None:
        """sqlite:// (in memory) is one database for the writer thread and the caller."""
        tracer: Any = actiontrace.configure(url="sqlite://")

        @actiontrace.action
        def ping() -> str:
            return "pong"

        ping()
        assert [r.outputs for r in tracer.find_actions(action="ping")] == ["pong"]


class TestBulkPath:
    """Batches large enough for PostgreSQL's COPY path keep every storage rule."""

    def test_large_batch_hostile_values_and_duplicates(self, storage: Any) -> None:
        """200 actions in one batch, NULs and big ints included, a part written twice."""
        import actiontrace
        from actiontrace import ActionFilter, action, flow

        tracer = actiontrace.ActionTracer(storage, flush_interval=3600)
        actiontrace._state.install(tracer)

        @action(concept="bulk::Echo")
        def echo(value: Any) -> Any:
            return value

        values = ["nul\x00char", 2**80, "ünï\u2028cödé", {"k": "\\u0000 not a NUL"}, None]
        with flow("bulk::Web::req") as token:
            for i in range(200):
                echo(values[i % len(values)])
        part = next(iter(tracer._writer.buffer.queue))  # the part, before the writer takes it
        assert tracer.flush(30)
        storage.write_parts([part, part])  # the same actions twice in one batch: stored once
        stored = storage.get_trace(token)
        echoes = [r for r in stored.actions.values() if r.action == "echo"]
        assert len(echoes) == 200
        got = [r.inputs["value"] for r in echoes[:5]]
        assert got[1] == 2**80 and got[2] == "ünï\u2028cödé" and got[3] == {"k": "\\u0000 not a NUL"}
        assert got[0] in ("nul\x00char", "nul\ufffdchar")  # PostgreSQL cannot hold NUL
        assert len(tracer.find_actions(ActionFilter(concept_uri="bulk::Echo"))) == 200
        tracer.shutdown()

    @pytest.mark.parametrize("n", [1, 7, 8, 9, 63, 1025, 2500])
    def test_chunked_inserts_store_every_row_once(self, tmp_path: Path, n: int) -> None:
        """SQLite's multi-row chunks (a full size, then the powers of two of the rest)
        store each of ``n`` actions and edges once, also under the 999-variable limit of
        SQLite before 3.32."""
        import actiontrace
        from actiontrace import SqlAlchemyTraceStorage, action, flow, synchronization

        for limit in (None, 999):
            storage = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/chunks-{limit}.db")
            if limit is not None:
                storage._dialect._max_vars = limit  # a 10-column row: chunks of 64 at most
            tracer = actiontrace.ActionTracer(storage, flush_interval=3600)
            actiontrace._state.install(tracer)

            @action(concept="bulk::Chunk")
            def one(i: int) -> int:
                return i

            @synchronization("Next")
            def next_one(i: int) -> None:
                one(i)

            with flow("bulk::Web::req") as token:
                for i in range(n):
                    next_one(i)  # n + 1 actions with the root, n edges
            assert tracer.flush(30)
            stored = storage.get_trace(token)
            assert sorted(r.inputs["i"] for r in stored.actions.values() if r.action == "one") \
                == list(range(n))
            assert len(stored.provenance_edges) == n
            tracer.shutdown()
            storage.close()

    def test_parts_of_one_flow_in_one_large_batch_merge(self, storage: Any) -> None:
        """100 flows, each recorded as two parts, written in a single batch."""
        import actiontrace
        from actiontrace import action, continue_flow, flow
        from actiontrace.recording._ids import as_uuid

        tracer = actiontrace.ActionTracer(storage, flush_interval=3600)
        actiontrace._state.install(tracer)

        @action(concept="bulk::Two")
        def step(n: int) -> int:
            return n

        tokens = []
        for i in range(100):
            with flow("bulk::Web::req") as token:
                step(i)
            part = tracer._writer.buffer.queue[-1]  # still queued: the writer waits for flush()
            trigger = as_uuid(part.full_id(part.records[1]))
            with continue_flow(token, trigger=trigger, synchronization="Remote"):
                step(-i)
            tokens.append((token, as_uuid(part.root_id)))
        assert len(tracer._writer.buffer.queue) == 200
        assert tracer.flush(30)
        for token, root in tokens:
            trace = storage.get_trace(token)
            assert trace.root_action_id == root and len(trace.actions) == 3
            (edge,) = trace.provenance_edges
            assert [r.action for r in storage.get_causal_chain(edge.to_action)] == ["req", "step", "step"]
        assert {depth for _, depth in storage.longest_chains(5)} == {3}
        tracer.shutdown()


class TestInputValueIndex:
    """SQLite's index of input values (migration 0004): added to in bulk by the writer,
    the newest actions scanned; find_actions answers the same either way."""

    @staticmethod
    def _write(store: SqlAlchemyTraceStorage, n: int, start: int = 0) -> None:
        from actiontrace.recording._ids import new_id
        from actiontrace.recording._layout import new_record
        from actiontrace.recording._record import FlowPart, Named

        for i in range(start, start + n):  # one action per batch
            part = FlowPart(new_id(), None, 1_000 + i, "idx")
            part.offset = 0
            part.records.append(new_record(Named("idx::C", "act"), new_id(), None, (1_000 + i) * 1000,
                                 1000, "ok", b'{"k":%d,"s":"v%d"}' % (i % 5, i % 3), b"null"))
            store.write_parts([part])

    @staticmethod
    def _state(store: SqlAlchemyTraceStorage) -> tuple[int, int]:
        with store.engine.connect() as conn:
            indexed = conn.exec_driver_sql(
                "SELECT count(DISTINCT action_id) FROM actiontrace_input_values").scalar()
            start = conn.exec_driver_sql(
                "SELECT coalesce(max(last_rowid), 0) FROM actiontrace_input_values_state"
            ).scalar()
        return int(indexed or 0), int(start or 0)

    def _timestamps(self, store: SqlAlchemyTraceStorage, **wanted: Any) -> list[int]:
        got = store.find_actions(ActionFilter(concept_uri="idx::C", action="act", inputs=wanted))
        return [r.timestamp - 1_000 for r in got]

    def test_indexed_and_newest_actions_are_both_found(self, tmp_path: Path) -> None:
        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/i.db")
        store.input_index_every = 7
        self._write(store, 30)
        indexed, start = self._state(store)
        assert indexed == 28 and start == 28  # four bulk additions of 7; 2 newest not yet
        assert self._timestamps(store, k=3) == [3, 8, 13, 18, 23, 28]
        assert self._timestamps(store, k=4, s="v2") == [14, 29]
        assert self._timestamps(store, s="v0", k=0) == [0, 15]
        store.close()

    def test_renumbered_rowids_start_the_index_over(self, tmp_path: Path) -> None:
        """If the state no longer names the action at its rowid (as after a VACUUM that
        renumbered rows, which cannot be forced), queries scan everything and the next
        bulk addition indexes every action again."""
        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/r.db")
        store.input_index_every = 10
        self._write(store, 20)
        with store.engine.begin() as conn:
            conn.exec_driver_sql("DELETE FROM actiontrace_input_values WHERE action_id IN "
                                 "(SELECT action_id FROM actiontrace_input_values LIMIT 10)")
            conn.exec_driver_sql("UPDATE actiontrace_input_values_state SET last_id = NULL")
        assert self._timestamps(store, k=1) == [1, 6, 11, 16]
        self._write(store, 10, start=20)
        assert self._state(store) == (21, 21)  # the first write after it indexed all 21
        assert self._timestamps(store, k=1) == [1, 6, 11, 16, 21, 26]
        store.close()

    def test_migration_indexes_the_actions_already_stored(self, tmp_path: Path) -> None:
        from actiontrace.storage import _migrate

        url = f"sqlite:///{tmp_path}/m.db"
        _migrate.upgrade(url, "0003")
        old = SqlAlchemyTraceStorage(url)
        old._ready = True  # write with the 0003 schema (this version's writer adds to 0004's)
        old._dialect.index_inputs = lambda cur, every: None  # type: ignore[attr-defined]
        self._write(old, 12)
        old.close()
        _migrate.upgrade(url)
        store = SqlAlchemyTraceStorage(url)
        assert self._state(store) == (12, 12)
        assert self._timestamps(store, k=2) == [2, 7]
        store.close()

    def test_the_index_drives_the_query(self, tmp_path: Path) -> None:
        """The plan looks values up in the index instead of walking the concept's actions."""
        store = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/p.db")
        self._write(store, 3)
        seen: list[tuple[str, Any]] = []

        def keep(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            seen.append((statement, params))

        sa.event.listen(store.engine, "before_cursor_execute", keep)
        self._timestamps(store, k=1)
        statement, params = seen[-1]
        with store.engine.connect() as conn:
            plan = " | ".join(r[3] for r in conn.exec_driver_sql(
                "EXPLAIN QUERY PLAN " + statement, params))
        assert "actiontrace_input_values USING PRIMARY KEY (key=? AND value=?)" in plan, plan
        assert "ix_actiontrace_actions_concept" not in plan, plan
        store.close()


def _tables(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _hand_trace(token: uuid.UUID, ids: list[uuid.UUID]) -> actiontrace.ActionTrace:
    recs = {
        i: actiontrace.ActionRecord(
            id=i, concept_uri="hand::C", action=f"a{n}", inputs={}, outputs=None,
            timestamp=1_000 + n, flow_token=token, parent_id=None if n == 0 else ids[0],
            status="ok", duration_us=1,
        )
        for n, i in enumerate(ids)
    }
    return actiontrace.ActionTrace(token, ids[0], recs, [], 1_000, "hand")


class TestReadOnly:
    def test_empty_database_is_refused_and_left_empty(self, sql_url: str) -> None:
        """A reader on a database without actiontrace tables names `actiontrace db upgrade`
        and creates nothing."""
        if sql_url.startswith("sqlite"):
            engine = sa.create_engine(sql_url)
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE host_orders (id INTEGER PRIMARY KEY)")
            engine.dispose()
        before = _tables(sql_url)
        reader = SqlAlchemyTraceStorage(sql_url, read_only=True)
        with pytest.raises(actiontrace.SchemaOutdated, match="actiontrace db upgrade"):
            reader.list_flows()
        reader.close()
        assert _tables(sql_url) == before
        assert not any(t.startswith("actiontrace_") for t in before)

    def test_reads_and_refuses_writes(self, sql_url: str) -> None:
        """A reader sees what a writer stored; a write through it fails, nothing stored."""
        token, ids = uuid.UUID(int=7 << 80), [uuid.UUID(int=(7 << 80) | n) for n in (1, 2)]
        writer = SqlAlchemyTraceStorage(sql_url)
        writer.save_trace(_hand_trace(token, ids))
        reader = SqlAlchemyTraceStorage(sql_url, read_only=True)
        assert set(reader.get_trace(token).actions) == set(ids)
        other = uuid.UUID(int=8 << 80)
        with pytest.raises(actiontrace.StorageError, match="read_only"):
            reader.save_trace(_hand_trace(other, [uuid.UUID(int=(8 << 80) | 1)]))
        with pytest.raises(actiontrace.TraceNotFound):
            writer.get_trace(other)
        # Below the storage, the connections themselves refuse to write.
        with pytest.raises(sa.exc.DBAPIError), reader.engine.connect() as conn:
            conn.exec_driver_sql("CREATE TABLE intruder (id INTEGER)")
        reader.close()
        writer.close()

    def test_missing_sqlite_file_is_not_created(self, tmp_path: Path) -> None:
        """A reader of a SQLite file that does not exist fails and leaves no file."""
        path = tmp_path / "none.db"
        reader = SqlAlchemyTraceStorage(f"sqlite:///{path}", read_only=True)
        with pytest.raises(actiontrace.StorageUnavailable, match="unable to open") as info:
            reader.list_flows()
        assert isinstance(info.value.__cause__, sa.exc.OperationalError)
        assert not path.exists()


class TestShortIds:
    def test_suffixes_resolve_and_short_ids_are_unique(self, sql_url: str) -> None:
        """Ids are found by their ends; short ids grow where 8 digits are shared."""
        token = uuid.UUID("01900000-0000-7000-8000-0000000000aa")
        shared = [uuid.UUID(f"01900000-0000-7000-8{k:03x}-0000deadbeef") for k in (1, 2)]
        alone = uuid.UUID("01900000-0000-7000-8000-000012345678")
        store = SqlAlchemyTraceStorage(sql_url)
        store.save_trace(_hand_trace(token, [alone, *shared]))
        assert store.resolve_suffix("12345678", "action") == [alone]
        assert store.resolve_suffix("deadbeef", "action", limit=5) == sorted(shared)
        assert store.resolve_suffix("ffff", "action") == []
        short = store.short_ids([alone, *shared], "action")
        assert short[alone] == "12345678"
        for i in shared:
            assert len(short[i]) > 8 and i.hex.endswith(short[i])
            assert store.resolve_suffix(short[i], "action", limit=5) == [i]
            assert store.resolve_prefix(short[i], "action", limit=5) == []
        # A short form that is also another id's start would be ambiguous: it grows too.
        assert store.short_ids([token], "flow")[token] == "000000aa"
        store.close()  # else its pooled connection is left for the GC (a ResourceWarning)


WRITE_REQUESTS = """
    import sys
    import actiontrace
    from actiontrace.demo import MusicPlayer

    tracer = actiontrace.configure(url=sys.argv[1], module="writer")
    app = MusicPlayer()
    for round_ in range(int(sys.argv[2])):
        for i in range(100):
            app.handle("/play", "tok-alice", passage_id=i)
        assert tracer.flush(60), tracer.stats()
        if round_ == 0:
            print("flushed", flush=True)
    tracer.shutdown()
"""


class TestRetention:
    """prune on SQL stores: index and log rows go too; safe while another process writes."""

    @staticmethod
    def _counts(store: SqlAlchemyTraceStorage) -> dict[str, int]:
        tables = ["flows", "actions", "edges", "log_events"]
        if store.dialect == "sqlite":
            tables.append("input_values")
        with store.engine.connect() as conn:
            return {t: conn.exec_driver_sql(f"SELECT count(*) FROM actiontrace_{t}").scalar()
                    for t in tables}

    def test_every_row_of_a_flow_goes(self, sql_url: str) -> None:
        """Actions, edges, log events and SQLite's input-value index rows all go."""
        from actiontrace.demo import MusicPlayer
        from actiontrace.recording._ids import now_us

        store = SqlAlchemyTraceStorage(sql_url)
        store.input_index_every = 5  # index as the writer goes
        tracer = actiontrace.configure(storage=store)
        app = MusicPlayer()
        for i in range(30):
            app.handle("/play", "tok-alice", passage_id=i)
        assert tracer.flush(30)
        before = self._counts(store)
        assert before["actions"] == 120 and before["log_events"] == 60
        assert before.get("input_values", 1) > 0
        assert store.prune_flows(now_us() + 1, batch_size=7) == (30, 120, True)
        assert set(self._counts(store).values()) == {0}
        store.close()

    def test_prune_while_another_process_writes(self, sql_url: str) -> None:
        """Pruning everything older than now, again and again, while another process
        writes requests: every flow is either whole or gone, nothing is orphaned."""

        rounds = 15
        store = SqlAlchemyTraceStorage(sql_url)
        store.find_actions(ActionFilter(limit=1))  # the schema, before the writer starts
        try:
            pruned, _ = prune_while_child_writes(store, WRITE_REQUESTS, sql_url, str(rounds))
            assert pruned >= 100  # at least the first round, flushed before we started
            shapes = flow_shapes(store)
            assert set(shapes) <= {(4, 3, 2)}
            assert len(shapes) + pruned == rounds * 100
        finally:
            store.close()


def prune_while_child_writes(store: SqlAlchemyTraceStorage, code: str, *args: str,
                             lag_us: int = 0) -> tuple[int, str]:
    """Run ``code`` in another process and prune ``store`` to ``lag_us`` before now,
    again and again, from its first "flushed" line to its exit; return the flows pruned
    and its output."""
    from actiontrace.recording._ids import now_us

    with subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as child:
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "flushed"
            pruned = passes = 0
            while child.poll() is None or passes == 0:
                pruned += store.prune_flows(now_us() - lag_us, batch_size=50).flows
                passes += 1
            out, err = child.communicate(timeout=120)
            assert child.returncode == 0, err
        finally:
            if child.poll() is None:
                child.kill()
    return pruned, out


def flow_shapes(store: SqlAlchemyTraceStorage) -> list[tuple[int, int, int]]:
    """(actions, edges, log events) of each stored flow, after checking that no action,
    edge or log event is left without its flow."""
    with store.engine.connect() as conn:
        for table in ("actions", "edges", "log_events"):
            assert conn.exec_driver_sql(
                f"SELECT count(*) FROM actiontrace_{table} t WHERE NOT EXISTS "
                "(SELECT 1 FROM actiontrace_flows f WHERE f.flow_token = t.flow_token)"
            ).scalar() == 0, table
        return [tuple(r) for r in conn.exec_driver_sql(
            "SELECT "
            "(SELECT count(*) FROM actiontrace_actions a WHERE a.flow_token = f.flow_token), "
            "(SELECT count(*) FROM actiontrace_edges e WHERE e.flow_token = f.flow_token), "
            "(SELECT count(*) FROM actiontrace_log_events g "
            "WHERE g.flow_token = f.flow_token) FROM actiontrace_flows f").all()]


class TestEdgeDurations:
    def test_recorded_edges_carry_durations(self, sql_url: str) -> None:
        """Edges the writer stores with their finished target carry its duration, so
        sync_performance reads the edges' index; the answer is the actions' durations."""
        from actiontrace.demo import MusicPlayer

        store = SqlAlchemyTraceStorage(sql_url)
        tracer = actiontrace.configure(storage=store)
        app = MusicPlayer()
        for i in range(20):
            app.handle("/play", "tok-alice", passage_id=i)
        assert tracer.flush(30)
        with store.engine.connect() as conn:
            missing = conn.exec_driver_sql(
                "SELECT count(*) FROM actiontrace_edges WHERE duration_us IS NULL").scalar()
        assert missing == 0
        produced = sorted(r.duration_us for r in store.find_by_sync("OnAuthSuccess"))
        perf = store.sync_performance("OnAuthSuccess")
        assert perf.count == len(produced) == 20
        assert perf.mean == pytest.approx(sum(produced) / 20)
        assert perf.median == pytest.approx((produced[9] + produced[10]) / 2)
        store.close()


_VALUES = st.recursive(
    st.none() | st.integers(-5, 5) | st.sampled_from(["x", "tok", "Token", "a-b", "é" * 40]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["id", "user_id", "token", "X-Api-Key", "password", "note", "é"]),
        inner, max_size=3),
    max_leaves=8)


@st.composite
def _parts(draw: st.DrawFn) -> list[Any]:
    """Flow parts as the recorder leaves them: local and full ids, nested and secret
    documents, values over the size limit, edges sharing targets or leaving the part."""
    import msgspec

    from actiontrace.recording import _ids
    from actiontrace.recording._layout import new_record
    from actiontrace.recording._record import FlowPart, Named

    parts = []
    for p in range(draw(st.integers(1, 4))):
        t0 = 10**12 + p * 10**6
        root = _ids.new_id()
        part = FlowPart(_ids.new_id(), root if draw(st.booleans()) else None, 1, "m")
        ids = [root]
        spec = Named("t::C", "run")
        for k in range(draw(st.integers(0, 6))):
            aid = root if k == 0 else next(_ids.local_counter) & _ids.COUNTER_MASK
            parent = None if k == 0 else draw(st.sampled_from(ids))
            inputs = msgspec.json.encode({"v": draw(_VALUES)})
            outputs = None if draw(st.booleans()) else msgspec.json.encode(draw(_VALUES))
            status = draw(st.sampled_from(["ok", "error", "running"]))
            part.records.append(new_record(spec, aid, parent, t0 + k * 999_999,
                                           None if status == "running" else 5_000, status,
                                           inputs, outputs))
            ids.append(aid)
        ends = st.sampled_from([*ids, _ids.new_id()])  # the last: an action elsewhere
        part.edge_log = [(draw(ends), draw(ends), draw(st.sampled_from(["S1", "S2"])), t0 + i)
                         for i in range(draw(st.integers(0, 4)))]
        full = [part.full_id(r) for r in part.records]  # log events hold full ids
        part.log_events = [(_ids.new_id(), draw(st.sampled_from([None, *full])), 7, "info",
                            "e", b"{}") for _ in range(draw(st.integers(0, 2)))]
        parts.append(part)
    return parts


def _general_batch(dialect: Any, parts: list[Any]) -> Any:
    """What ``Dialect.batch`` gives, by the general path alone (``rows()``, ``_stored``,
    ``_part_depth``, ``_shared_targets`` for every part)."""
    from actiontrace.storage._dialects import Batch, _part_depth, _shared_targets

    def hexid(v: int) -> str:
        return v.to_bytes(16).hex()

    out = Batch()
    for part in parts:
        rows = [(hexid(r.id), hexid(r.flow_token),
                 None if r.parent_id is None else hexid(r.parent_id), r.concept_uri,
                 r.action, r.timestamp, r.duration_us, r.status, r.inputs.decode(),
                 r.outputs.decode()) for r in part.rows()]
        token = hexid(part.token)
        edges = [(hexid(f), hexid(t), s, c) for f, t, s, c in part.edges]
        by_id = {row[0]: row for row in rows}
        depth = _part_depth(rows, edges, by_id)
        out.flows.append((token, None if part.root_id is None else hexid(part.root_id),
                          part.created_at, part.module, depth, 1))
        out.actions.extend(dialect.action_rows(rows))
        shared = _shared_targets(edges)
        for f, t, sync, created in edges:
            target = by_id.get(t)
            if target is None:
                out.foreign.append(t)
            final = target is not None and target[7] != "running" and (t, sync) not in shared
            out.edges.append((f, t, sync, token, created, target[6] if final else None))
        out.logs.extend((hexid(lid), token, None if aid is None else hexid(aid), ts, lv, ev,
                         f.decode()) for lid, aid, ts, lv, ev, f in part.log_events)
    return out


class TestWriterRows:
    @given(parts=_parts(), limit=st.sampled_from([64, 1_000_000]))
    @settings(max_examples=200, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    def test_same_rows_as_the_general_path(self, parts: list[Any], limit: int) -> None:
        """The writer's batch (sql_rows_of, the common-part shortcuts) holds exactly the
        rows the general path makes: redaction, size limits, depth, edge durations."""
        from actiontrace._state import settings as capture_settings
        from actiontrace.storage._dialects import Postgres, Sqlite

        before = capture_settings.max_value_bytes  # configure() alone keeps the limit
        actiontrace.configure(max_value_bytes=limit)
        try:
            for dialect in (Sqlite(), Postgres()):
                got, want = dialect.batch(parts), _general_batch(dialect, parts)
                for table in ("flows", "actions", "edges", "foreign", "logs"):
                    assert getattr(got, table) == getattr(want, table), table
        finally:
            actiontrace.configure(max_value_bytes=before)
