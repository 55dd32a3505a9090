"""Time-partitioned PostgreSQL stores (storage/_partitions.py): conversion, partitions
made ahead by writers, retention by dropping partitions, all against the real server."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import actiontrace
from actiontrace import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    LogEvent,
    ProvenanceEdge,
    SqlAlchemyTraceStorage,
    StorageError,
)
from actiontrace.recording._ids import as_uuid, new_id, now_us
from actiontrace.recording._record import from_trace
from actiontrace.storage import _partitions

HOUR_US = 3600 * 1_000_000


def make_flow(start_us: int, *, last_us: int | None = None, token: uuid.UUID | None = None,
              status: str = "ok") -> ActionTrace:
    """A flow of 3 actions (root, two children, one edge, one log event) started at
    ``start_us``, its last action at ``last_us``; the token a UUIDv7 of its start."""
    token = token or as_uuid(new_id(start_us))
    last_us = start_us + 2 if last_us is None else last_us
    ids = [as_uuid(new_id(t)) for t in (start_us, start_us + 1, last_us)]
    recs = [
        ActionRecord(ids[0], "app::Web", "get", {"i": 1}, {}, start_us, token, None, "ok", 10),
        ActionRecord(ids[1], "app::Db", "query", {"q": "x"}, {}, start_us + 1, token, ids[0],
                     "ok", 5),
        ActionRecord(ids[2], "app::Cache", "put", {"k": 2}, {}, last_us, token, ids[0],
                     status, 3),  # type: ignore[arg-type]
    ]
    return ActionTrace(
        flow_token=token, root_action_id=ids[0], actions={r.id: r for r in recs},
        provenance_edges=[ProvenanceEdge(ids[1], ids[2], "app::Db.query->put", last_us)],
        created_at=start_us, module="test",
        logs=[LogEvent(as_uuid(new_id(start_us)), token, ids[0], start_us, "info", "hi", {})],
    )


def counts(store: SqlAlchemyTraceStorage) -> dict[str, int]:
    with store.engine.connect() as conn:
        return {t: conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar()
                for t in _partitions.TABLES}


def tables(store: SqlAlchemyTraceStorage) -> set[str]:
    with store.engine.connect() as conn:
        return {r[0] for r in conn.exec_driver_sql(
            "SELECT c.relname FROM pg_class c WHERE starts_with(c.relname, 'actiontrace_') "
            "AND c.relkind IN ('r', 'p') AND c.relnamespace = current_schema()::regnamespace")}


def spans(store: SqlAlchemyTraceStorage) -> list[_partitions.Span]:
    with store.engine.connect() as conn:
        return _partitions.spans(conn)


def partition_since(store: SqlAlchemyTraceStorage, hours_ago: int, period_s: int = 3600) -> None:
    """Partition ``store`` as if it had been partitioned ``hours_ago`` hours ago, with
    partitions made since then and one period ahead (as its writers would have)."""
    now_ms = now_us() // 1000
    store.find_actions(ActionFilter(limit=1))  # the schema
    with store.engine.begin() as conn:
        _partitions.convert(conn, period_s, hours_ago * 3600 // period_s + 1,
                            now_ms - hours_ago * 3_600_000)


@pytest.fixture
def store(pg_url: str) -> Any:
    s = SqlAlchemyTraceStorage(pg_url)
    yield s
    s.close()


class TestConvert:
    def test_stored_flows_read_back_the_same(self, store: SqlAlchemyTraceStorage) -> None:
        """Partitioning keeps every stored flow exactly as it read before."""
        now = now_us()
        old = [make_flow(now - (10 - i) * HOUR_US) for i in range(10)]
        for t in old:
            store.save_trace(t)
        w3c = make_flow(now, token=uuid.UUID("4bf92f3577b34da6a3ce929d0e0e4736"))
        store.save_trace(w3c)
        before = {t.flow_token: store.get_trace(t.flow_token) for t in [*old, w3c]}
        assert store.partition(3600, ahead=2) == 3
        assert {t: store.get_trace(t) for t in before} == before
        names = tables(store)
        assert {f"{t}_before" for t in _partitions.TABLES} <= names
        assert {f"{t}_default" for t in _partitions.TABLES} <= names
        regular = [s for s in spans(store) if s.regular]
        assert len(regular) == 3
        assert store.find_actions(ActionFilter(concept_uri="app::Db")) == sorted(
            (r for t in before.values() for r in t.actions.values() if r.concept_uri == "app::Db"),
            key=lambda r: (r.timestamp, r.id))

    def test_writes_after_partitioning_merge_and_upsert(self, store: SqlAlchemyTraceStorage
                                                       ) -> None:
        """On partitioned tables a running action is completed by its later write, a
        retried batch is stored once, and parts of one flow merge."""
        store.partition(3600)
        now = now_us()
        flow = make_flow(now)
        root, _child, last = flow.actions.values()
        running = ActionTrace(flow.flow_token, root.id, {last.id: ActionRecord(
            last.id, last.concept_uri, last.action, last.inputs, None, last.timestamp,
            flow.flow_token, root.id, "running", None)}, [], now, "worker")
        store.save_trace(running)
        for _ in range(2):  # the second time: every row conflicts
            store.save_trace(flow)
        got = store.get_trace(flow.flow_token)
        assert got.actions == flow.actions
        assert len(got.provenance_edges) == 1 and len(got.logs) == 1
        # More than PG_COPY_MIN rows take COPY, then the conflict path.
        many = [make_flow(now + i) for i in range(40)]
        store.write_parts([from_trace(t) for t in many])
        store.write_parts([from_trace(t) for t in many])
        assert counts(store)["actiontrace_actions"] == 3 * 41

    def test_a_second_call_only_adds_partitions(self, store: SqlAlchemyTraceStorage) -> None:
        """partition() on a partitioned store adds partitions ahead and nothing else."""
        store.partition(3600, ahead=1)
        store.save_trace(make_flow(now_us()))
        first = spans(store)
        assert store.partition(3600, ahead=1) == 0
        assert spans(store) == first
        assert store.partition(3600, ahead=4) == 3
        assert counts(store)["actiontrace_actions"] == 3

    def test_refused_where_it_cannot_work(self, tmp_path: Path, pg_url: str) -> None:
        """SQLite, a read-only storage and a period under a second are refused clearly."""
        lite = SqlAlchemyTraceStorage(f"sqlite:///{tmp_path}/t.db")
        with pytest.raises(StorageError, match="PostgreSQL feature"):
            lite.partition()
        pg = SqlAlchemyTraceStorage(pg_url)
        with pytest.raises(StorageError, match="at least 1 second"):
            pg.partition(0.5)
        pg.find_actions(ActionFilter(limit=1))
        reader = SqlAlchemyTraceStorage(pg_url, read_only=True)
        with pytest.raises(StorageError, match="read_only"):
            reader.partition()
        for s in (lite, pg, reader):
            s.close()


class TestMigrationsOnPartitionedTables:
    def test_down_and_up_keep_every_partition_indexed(self, store: SqlAlchemyTraceStorage,
                                                        pg_url: str) -> None:
        """Revision 0007 down and up on a partitioned store: the edge index is rebuilt on
        every partition (the old table, the default, the periods), the flows read back
        the same, and writes and the synchronization queries work after."""
        from actiontrace.storage import _migrate

        now = now_us()
        flows = [make_flow(now - (3 - i) * HOUR_US) for i in range(3)]
        for t in flows[:1]:
            store.save_trace(t)
        partition_since(store, 4)
        store.close()
        store = SqlAlchemyTraceStorage(pg_url)  # one that sees the partitions
        for t in flows[1:]:
            store.save_trace(t)
        before = {t.flow_token: store.get_trace(t.flow_token) for t in flows}
        perf = store.sync_performance("app::Db.query->put")
        store.close()

        def edge_indexes() -> list[tuple[str, str]]:
            """(table, definition) of each edge table's indexes by synchronization."""
            engine = sa.create_engine(pg_url)
            try:
                with engine.connect() as conn:
                    return sorted((r[0], r[1]) for r in conn.exec_driver_sql(
                        "SELECT c.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                        "JOIN pg_class c ON c.oid = i.indrelid "
                        "WHERE starts_with(c.relname, 'actiontrace_edges') "
                        "AND c.relnamespace = current_schema()::regnamespace "
                        "AND position('(synchronization, ' in pg_get_indexdef(i.indexrelid)) > 0"))
            finally:
                engine.dispose()

        _migrate.downgrade(pg_url, "0006")
        down = edge_indexes()
        edge_tables = {t for t, _ in down}
        assert len(edge_tables) >= 4  # the parent, _before, _default, the periods
        assert len(down) == 2 * len(edge_tables)  # (.., created_at), (.., duration_us)
        _migrate.upgrade(pg_url)
        up = edge_indexes()
        assert {t for t, _ in up} == edge_tables and len(up) == len(edge_tables)
        assert all("(synchronization, created_at) INCLUDE (duration_us)" in d for _, d in up)
        again = SqlAlchemyTraceStorage(pg_url)
        try:
            assert {t: again.get_trace(t) for t in before} == before
            assert again.sync_performance("app::Db.query->put") == perf
            extra = make_flow(now_us())
            again.save_trace(extra)
            assert again.get_trace(extra.flow_token) == extra
            assert again.sync_performance("app::Db.query->put").count == perf.count + 1
        finally:
            again.close()


class TestPartitionedUnderARunningWriter:
    def test_a_writer_that_has_not_looked_again_retries(self, pg_url: str,
                                                        store: SqlAlchemyTraceStorage) -> None:
        """A writer that last looked before another process partitioned the store finds
        its upsert's conflict target gone, looks again and writes, in the same call."""
        flow = make_flow(now_us())
        store.save_trace(flow)  # this writer has seen the store unpartitioned
        assert not store._dialect.partitioned
        other = SqlAlchemyTraceStorage(pg_url)
        other.partition(3600)
        other.close()
        store.save_trace(flow)  # conflicts: the upsert's target was the old key
        assert store._dialect.partitioned
        assert store.get_trace(flow.flow_token).actions == flow.actions
        assert counts(store)["actiontrace_actions"] == 3



class TestWritersAddPartitions:
    def test_a_write_near_the_newest_partition_adds_the_next(
            self, store: SqlAlchemyTraceStorage) -> None:
        """A flow started in the last partition's period makes the writer add the next
        period's partitions first, so its flows never wait in the default partition."""
        store.partition(60, ahead=0)
        top = max(s.hi_ms for s in spans(store) if s.regular)  # type: ignore[type-var]
        later = make_flow((top + 30_000) * 1000)  # in the period after the last one
        store.save_trace(later)
        assert max(s.hi_ms for s in spans(store) if s.regular) > top + 30_000  # type: ignore
        with store.engine.connect() as conn:
            where = conn.exec_driver_sql(
                "SELECT DISTINCT tableoid::regclass::text FROM actiontrace_actions").all()
        assert [w[0] for w in where] == [f"actiontrace_actions_{_partitions._suffix(top)}"]

    def test_processes_racing_to_add_partitions(self, pg_url: str,
                                                store: SqlAlchemyTraceStorage) -> None:
        """Three processes writing flows of the coming periods at once: each period's
        partitions are made once, every flow is stored, none in the default partition."""
        store.partition(1, ahead=0)
        child = """
            import sys, time
            from actiontrace import SqlAlchemyTraceStorage
            from actiontrace.recording._ids import now_us
            from actiontrace.recording._record import from_trace
            sys.path.insert(0, sys.argv[2])
            from test_partitions import make_flow

            store = SqlAlchemyTraceStorage(sys.argv[1])
            for _ in range(12):  # ~3 s: the writers meet several period ends
                start = now_us()
                store.write_parts([from_trace(make_flow(start + i)) for i in range(30)])
                time.sleep(0.25)
            store.close()
        """
        procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(child), pg_url,
                                   str(Path(__file__).parent)], stderr=subprocess.PIPE, text=True)
                 for _ in range(3)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert counts(store)["actiontrace_flows"] == 3 * 12 * 30
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql(
                "SELECT count(*) FROM actiontrace_actions_default").scalar() == 0
        suffixes = [s.suffix for s in spans(store)]
        assert len(suffixes) == len(set(suffixes))


class TestRetentionByPartition:
    def test_old_periods_are_dropped_whole(self, store: SqlAlchemyTraceStorage) -> None:
        """Flows of periods that ended before the cut go with their partitions; a flow
        not of actiontrace's making (the default partition) goes row-wise; the counts
        returned are the rows removed."""
        now = now_us()
        partition_since(store, 6)
        old_periods = [now - (5 - i) * HOUR_US for i in range(3)]
        for t in old_periods:
            for k in range(4):
                store.save_trace(make_flow(t + k))
        foreign = make_flow(now - 5 * HOUR_US, token=uuid.UUID("ffffffff77b34da6a3ce929d0e0e4736"))
        store.save_trace(foreign)
        young = make_flow(now)
        store.save_trace(young)
        dropped = {s.suffix for s in spans(store) if s.regular and s.hi_ms * 1000 < now - HOUR_US}
        assert len(dropped) >= 3  # the periods holding the flows among them
        done = store.prune_flows(now - HOUR_US)
        assert done == (13, 39, True)
        assert not {s.suffix for s in spans(store)} & dropped
        store.get_trace(young.flow_token)
        assert counts(store) == {"actiontrace_flows": 1, "actiontrace_actions": 3,
                                 "actiontrace_edges": 1, "actiontrace_log_events": 1}

    def test_a_partition_with_a_flow_still_running_is_not_dropped(
            self, store: SqlAlchemyTraceStorage) -> None:
        """A period whose flows are old but for one with a recent action: the old ones go
        row-wise, the recent one stays whole, and the partition with it."""
        now = now_us()
        partition_since(store, 4)
        start = now - 3 * HOUR_US
        lo = next(s.lo_ms for s in spans(store) if s.regular and s.lo_ms is not None
                  and s.hi_ms is not None and s.lo_ms * 1000 <= start < s.hi_ms * 1000)
        for k in range(5):
            store.save_trace(make_flow(start + k))
        long_one = make_flow(start + 99, last_us=now)
        store.save_trace(long_one)
        assert store.prune_flows(now - HOUR_US) == (5, 15, True)
        assert _partitions._suffix(lo) in {s.suffix for s in spans(store)}
        assert len(store.get_trace(long_one.flow_token).actions) == 3
        # Once its last action is old too, the partition goes (the flow with it).
        assert store.prune_flows(now + 1) == (1, 3, True)
        assert _partitions._suffix(lo) not in {s.suffix for s in spans(store)}

    def test_background_retention_waits_for_the_period(
            self, store: SqlAlchemyTraceStorage) -> None:
        """exact=False (the writer's retention) keeps the flows of a period that is not
        over at the cut; an exact prune removes them row-wise."""
        store.partition(3600 * 24, ahead=0)
        current = next(s for s in spans(store) if s.regular)
        assert current.lo_ms is not None
        flow = make_flow(current.lo_ms * 1000 + 5)
        store.save_trace(flow)
        cut = flow.created_at + 1000  # after every action of the flow, within its period
        assert store.prune_flows(cut + 10, exact=False) == (0, 0, True)
        assert store.prune_flows(cut + 10) == (1, 3, True)

    def test_configured_retention_drops_partitions(self, pg_url: str,
                                                   store: SqlAlchemyTraceStorage) -> None:
        """configure(retention=...) on a partitioned store drops the old periods' partitions
        in the writer's background step."""
        now = now_us()
        partition_since(store, 6)
        flow = make_flow(now - 5 * HOUR_US)
        store.save_trace(flow)
        lo = next(s.lo_ms for s in spans(store) if s.regular and s.lo_ms is not None
                  and s.hi_ms is not None and s.lo_ms * 1000 <= flow.created_at < s.hi_ms * 1000)
        writer = SqlAlchemyTraceStorage(pg_url)
        tracer = actiontrace.configure(storage=writer, retention=2 * 3600)
        with actiontrace.flow("app::Web::get"):
            pass
        deadline = time.monotonic() + 60
        while _partitions._suffix(lo) in {s.suffix for s in spans(store)}:
            assert time.monotonic() < deadline, tracer.stats()
            time.sleep(0.05)
        assert tracer.flush(30)
        assert tracer.stats()["pruned"] == 1
        tracer.shutdown()
        writer.close()


WRITE_SECONDS = """
    import sys, time
    import actiontrace
    from actiontrace.demo import MusicPlayer

    tracer = actiontrace.configure(url=sys.argv[1])
    app = MusicPlayer()
    end = time.monotonic() + float(sys.argv[2])
    first = True
    n = 0
    while time.monotonic() < end:
        for i in range(20):
            app.handle("/play", "tok-alice", passage_id=i)
        n += 20
        assert tracer.flush(60), tracer.stats()
        if first:
            print("flushed", flush=True)
            first = False
    tracer.shutdown()
    print(n, flush=True)
"""


class TestPruneWhileWriting:
    def test_drops_while_another_process_writes(self, pg_url: str,
                                                store: SqlAlchemyTraceStorage) -> None:
        """One-second partitions, pruned again and again while another process records
        requests: partitions are dropped, every flow left is whole, nothing is orphaned,
        and every flow is either stored or counted as removed."""
        from test_sql_storage import flow_shapes, prune_while_child_writes

        store.partition(1, ahead=0)
        # Half a second back: the cut falls inside the periods being written, so each
        # pass drops some partitions whole and prunes the current ones row by row.
        pruned, out = prune_while_child_writes(store, WRITE_SECONDS, pg_url, "6",
                                               lag_us=500_000)
        cut = now_us() - 500_000
        pruned += store.prune_flows(cut).flows
        # Every period over at the cut went, whole.
        assert all(s.hi_ms * 1000 > cut for s in spans(store) if s.regular)  # type: ignore
        shapes = flow_shapes(store)
        assert set(shapes) <= {(4, 3, 2)}
        assert pruned + len(shapes) == int(out.split()[-1])  # each flow recorded, once
