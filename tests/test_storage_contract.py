"""The storage contract (docs/reference.md: Queries, Storage, Output and analysis), for every backend: memory, SQLite, PostgreSQL.

Traces are recorded through a real tracer (decorated actions, flows, synchronizations,
``continue_flow``) where possible, and written as hand-made parts where a test needs
exact timestamps, durations or arrival orders. The in-memory storage is the reference.
"""

from __future__ import annotations

import uuid
from typing import Any

import msgspec
import pytest

import actiontrace
from actiontrace import (
    ActionFilter,
    ActionNotFound,
    PerformanceMetrics,
    TraceAnalyzer,
    TraceNotFound,
    action,
    concept,
    continue_flow,
    flow,
    synchronization,
)
from actiontrace._model import ActionRecord, ActionTrace, ProvenanceEdge
from actiontrace.recording._ids import new_id
from actiontrace.recording._record import FlowPart, from_trace

# -- helpers -------------------------------------------------------------------------------


def record_into(storage: Any) -> actiontrace.ActionTracer:
    """Make ``storage`` the global tracer's storage."""
    return actiontrace.configure(storage=storage, module="contract")


def flushed(tracer: actiontrace.ActionTracer) -> None:
    assert tracer.flush(10), tracer.stats()


class PartBuilder:
    """Build a ``FlowPart`` by hand, with chosen ids, timestamps and durations."""

    def __init__(self, token: int | None = None, root: bool = True, created: int = 1_000,
                 module: str = "hand") -> None:
        self.token = token if token is not None else new_id()
        self.created, self.module, self.root = created, module, root
        self.recs: dict[uuid.UUID, ActionRecord] = {}
        self.edges: list[ProvenanceEdge] = []

    def add(self, concept_uri: str, name: str, ts: int, *, parent: int | None = None,
            inputs: Any = None, outputs: Any = None, duration: int | None = 5,
            status: str = "ok") -> int:
        aid = new_id()
        self.recs[u(aid)] = ActionRecord(
            id=u(aid), concept_uri=concept_uri, action=name,
            inputs={} if inputs is None else inputs, outputs=outputs, timestamp=ts,
            flow_token=u(self.token), parent_id=None if parent is None else u(parent),
            status=status, duration_us=duration,  # type: ignore[arg-type]
        )
        return aid

    def edge(self, src: int, dst: int, sync: str, created: int) -> None:
        self.edges.append(ProvenanceEdge(u(src), u(dst), sync, created))

    def replace(self, aid: int, **changes: Any) -> None:
        self.recs[u(aid)] = msgspec.structs.replace(self.recs[u(aid)], **changes)

    @property
    def part(self) -> FlowPart:
        """A fresh part holding everything added so far."""
        first = next(iter(self.recs)) if self.recs else u(self.token)
        part = from_trace(ActionTrace(
            u(self.token), first, dict(self.recs), list(self.edges), self.created, self.module
        ))
        if not self.root:
            part.root_id = None
        return part


def filler(n: int) -> list[FlowPart]:
    """``n`` small unrelated flows, one action each."""
    parts = []
    for i in range(n):
        b = PartBuilder(created=1, module="filler")
        b.add("filler", "x", 1 + i)
        parts.append(b.part)
    return parts


def u(i: int) -> uuid.UUID:
    return uuid.UUID(int=i)


# -- recorded application ------------------------------------------------------------------


@concept("shop::Cart")
class Cart:
    @action
    def add(self, item: str, qty: int = 1) -> dict[str, Any]:
        return {"item": item, "qty": qty}

    @action
    def checkout(self) -> str:
        return "ok"


@concept("shop::Payment")
class Payment:
    @action
    def charge(self, amount: int) -> int:
        return amount

    @action
    def refund(self, amount: int) -> int:
        raise ValueError("no refunds")


cart, payment = Cart(), Payment()


@synchronization("OnCheckout")
def on_checkout() -> None:
    payment.charge(amount=42)


def shop_flow() -> uuid.UUID:
    with flow("shop::Web::post", inputs={"path": "/buy"}) as token:
        cart.add("apple", qty=2)
        cart.checkout()
        on_checkout()
    return token


class TestTraces:
    def test_get_trace_round_trip(self, storage: Any) -> None:
        """A recorded flow comes back whole: root, actions in order, edges, module."""
        tracer = record_into(storage)
        token = shop_flow()
        flushed(tracer)
        trace = storage.get_trace(token)
        assert trace.flow_token == token
        assert trace.module == "contract"
        recs = list(trace.actions.values())
        assert [(r.concept_uri, r.action) for r in recs] == [
            ("shop::Web", "post"), ("shop::Cart", "add"), ("shop::Cart", "checkout"),
            ("shop::Payment", "charge"),
        ]
        assert trace.root_action_id == recs[0].id
        assert recs[0].inputs == {"path": "/buy"} and recs[0].parent_id is None
        assert recs[1].inputs == {"item": "apple", "qty": 2}
        assert recs[1].outputs == {"item": "apple", "qty": 2}
        assert all(r.parent_id == recs[0].id for r in recs[1:])
        assert all(r.status == "ok" and r.flow_token == token for r in recs)
        assert [(e.from_action, e.to_action, e.synchronization) for e in trace.provenance_edges] == [
            (recs[2].id, recs[3].id, "OnCheckout")
        ]
        assert trace.created_at <= recs[0].timestamp

    def test_error_action_stored(self, storage: Any) -> None:
        """A raising action is stored with status error and the error outputs."""
        tracer = record_into(storage)
        with flow("shop::Web::refund") as token, pytest.raises(ValueError):
            payment.refund(5)
        flushed(tracer)
        rec = list(storage.get_trace(token).actions.values())[-1]
        assert rec.status == "error"
        assert rec.outputs == {"error": "no refunds", "error_type": "ValueError"}

    def test_trace_not_found(self, storage: Any) -> None:
        """An unknown flow raises TraceNotFound, a LookupError."""
        with pytest.raises(TraceNotFound):
            storage.get_trace(uuid.uuid4())
        with pytest.raises(LookupError):
            storage.get_trace(uuid.uuid4())

    def test_action_not_found(self, storage: Any) -> None:
        """An unknown action raises ActionNotFound from get_causal_chain."""
        with pytest.raises(ActionNotFound):
            storage.get_causal_chain(uuid.uuid4())

    def test_same_trace_as_memory(self, storage: Any) -> None:
        """Every backend returns what the reference storage returns for the same parts."""
        ref = actiontrace.InMemoryTraceStorage()
        b = PartBuilder()
        root = b.add("a", "root", 10)
        x = b.add("a::B", "x", 11, parent=root, inputs={"k": [1, {"z": None}]})
        b.add("a::B", "y", 12, parent=root, outputs=[1.5, "s"])
        b.edge(x, new_id(), "Dangling", 13)  # an edge to an action never stored
        for s in (ref, storage):
            s.write_parts([b.part])
        assert storage.get_trace(u(b.token)) == ref.get_trace(u(b.token))


class TestFindActions:
    def write(self, storage: Any) -> dict[str, int]:
        b = PartBuilder()
        ids = {}
        ids["root"] = b.add("app", "start", 100)
        for i, c in enumerate(["app::Player", "app::Player::Queue", "apple::Player", "app:x",
                               "app::", "xapp::Player", "app"]):
            ids[c] = b.add(c, "play", 101 + i, parent=ids["root"], inputs={"n": i})
        storage.write_parts([b.part])
        return ids

    @pytest.mark.parametrize(
        ("prefix", "expected"),
        [
            ("app", ["root", "app::Player", "app::Player::Queue", "app::", "app"]),
            ("app::Player", ["app::Player", "app::Player::Queue"]),
            ("app::Player::Queue", ["app::Player::Queue"]),
            ("app::Play", []),
            ("apple", ["apple::Player"]),
            ("ap", []),
            ("app:", []),
            ("app:x", ["app:x"]),
        ],
    )
    def test_concept_prefix_is_colon_bounded(
        self, storage: Any, prefix: str, expected: list[str]
    ) -> None:
        """concept_uri matches exactly or as a ``::``-bounded prefix, never mid-name."""
        ids = self.write(storage)
        got = storage.find_actions(ActionFilter(concept_uri=prefix))
        assert [r.id for r in got] == [u(ids[k]) for k in expected]

    def test_action_exact(self, storage: Any) -> None:
        """action matches the name exactly."""
        self.write(storage)
        assert len(storage.find_actions(ActionFilter(action="play"))) == 7
        assert storage.find_actions(ActionFilter(action="pla")) == []
        assert len(storage.find_actions(ActionFilter(concept_uri="app", action="start"))) == 1

    def test_time_range_inclusive(self, storage: Any) -> None:
        """time_range includes both ends."""
        self.write(storage)
        got = storage.find_actions(ActionFilter(time_range=(101, 103)))
        assert [r.timestamp for r in got] == [101, 102, 103]
        assert storage.find_actions(ActionFilter(time_range=(50, 99))) == []
        assert len(storage.find_actions(ActionFilter(time_range=(100, 100)))) == 1

    def test_flow_token_and_limit(self, storage: Any) -> None:
        """flow_token restricts to one flow; limit keeps the oldest."""
        self.write(storage)
        other = PartBuilder()
        other.add("app", "start", 50)
        storage.write_parts([other.part])
        mine = storage.find_actions(ActionFilter(flow_token=u(other.token)))
        assert [r.timestamp for r in mine] == [50]
        got = storage.find_actions(ActionFilter(concept_uri="app", limit=2))
        assert [r.timestamp for r in got] == [50, 100]
        assert storage.find_actions(ActionFilter(limit=0)) == []
        assert len(storage.find_actions(ActionFilter())) == 9

    def test_prefix_limit_interleaves_names(self, storage: Any) -> None:
        """A prefix with a limit merges its concepts and actions by time, within a time
        range, and leaves out names that only share its text; with many names too."""
        b = PartBuilder()
        for i, (c, n) in enumerate([("pre::A", "x"), ("pre::B::C", "y"), ("pre", "z"),
                                    ("prefix", "w"), ("pre::A", "v")] * 3):
            b.add(c, n, 1_000 + i)
        for i in range(40):  # more names than are read one by one
            b.add(f"many::C{i:02d}", "act", 5_000 - i)
        storage.write_parts([b.part])
        got = storage.find_actions(ActionFilter(concept_uri="pre", limit=5))
        assert [r.timestamp for r in got] == [1_000, 1_001, 1_002, 1_004, 1_005]
        ranged = storage.find_actions(ActionFilter(concept_uri="pre::A", limit=2,
                                                   time_range=(1_001, 1_100)))
        assert [(r.action, r.timestamp) for r in ranged] == [("v", 1_004), ("x", 1_005)]
        named = storage.find_actions(ActionFilter(concept_uri="pre", action="x", limit=9))
        assert [r.timestamp for r in named] == [1_000, 1_005, 1_010]
        many = storage.find_actions(ActionFilter(concept_uri="many", limit=3))
        assert [r.timestamp for r in many] == [4_961, 4_962, 4_963]

    def test_ties_in_recording_order(self, storage: Any) -> None:
        """Actions with the same timestamp come back in id (recording) order."""
        b = PartBuilder()
        ids = [b.add("tie", f"a{i}", 500) for i in range(5)]
        part = b.part
        part.records.reverse()  # arrival order must not matter
        storage.write_parts([part])
        got = storage.find_actions(ActionFilter(concept_uri="tie"))
        assert [r.id for r in got] == [u(i) for i in ids]
        assert [r.id for r in storage.find_actions(ActionFilter(concept_uri="tie", limit=3))] == [
            u(i) for i in ids[:3]
        ]

    def test_inputs_containment(self, storage: Any) -> None:
        """inputs matches top-level pairs; True is not 1; nested values compare whole."""
        b = PartBuilder()
        values = {
            "true": {"flag": True}, "one": {"flag": 1}, "onef": {"flag": 1.0},
            "str1": {"flag": "1"}, "none": {"flag": None}, "missing": {"other": 1},
            "false": {"flag": False}, "zero": {"flag": 0},
            "nested": {"cfg": {"a": 1, "b": [1, 2]}, "x": "y"},
            "nested_reordered": {"cfg": {"b": [1, 2], "a": 1}},
            "nested_sub": {"cfg": {"a": 1}},
            "nested_list": {"cfg": [1, 2, 3]},
            "quote": {'we"ird': 7, "dot.key": 8},
            "big": {"n": 2**70},
        }
        ids = {k: b.add("in", k, 600 + i, inputs=v) for i, v in enumerate(values.values())
               for k in [list(values)[i]]}
        storage.write_parts([b.part])

        def names(**wanted: Any) -> list[str]:
            got = storage.find_actions(ActionFilter(inputs=wanted))
            back = {u(v): k for k, v in ids.items()}
            return [back[r.id] for r in got]

        assert names(flag=True) == ["true"]
        assert names(flag=False) == ["false"]
        assert names(flag=1) == ["one", "onef"]
        assert names(flag=0) == ["zero"]
        assert names(flag="1") == ["str1"]
        assert names(flag=None) == ["none"]
        assert names(cfg={"a": 1, "b": [1, 2]}) == ["nested", "nested_reordered"]
        assert names(cfg={"a": 1}) == ["nested_sub"]
        assert names(cfg=[1, 2, 3]) == ["nested_list"]
        assert names(cfg=[1, 2]) == []
        assert names(cfg={"a": 1, "b": [1, 2]}, x="y") == ["nested"]
        assert names(**{'we"ird': 7}) == ["quote"]
        assert names(**{"dot.key": 8}) == ["quote"]
        assert names(n=2**70) == ["big"]
        assert names(nope=1) == []

    def test_inputs_values_an_index_could_confuse(self, storage: Any) -> None:
        """Strings that read as numbers, long strings sharing a prefix, equal numbers of
        different types, across several batches: each finds exactly its own actions."""
        long = "x" * 64
        values = {
            "str42": "42", "int42": 42, "sp42": " 42", "str1e5": "1e5", "int1e5": 100000,
            "strnull": "null", "none": None, "longa": long + "a", "longb": long + "b",
            "uni": "\u00e9" * 70, "f15": 1.5, "f2": 2.0, "i2": 2, "hex": "0x10", "i16": 16,
            "negzero": -0.0, "zero": 0, "bigf": 2.0**60, "empty": "",
        }
        ids = {}
        for i, (name, v) in enumerate(values.items()):
            b = PartBuilder()  # one part, and one batch, each: later batches must be found too
            ids[name] = b.add("in", name, 700 + i, inputs={"s": v})
            storage.write_parts([b.part])
        back = {u(v): k for k, v in ids.items()}

        def names(v: Any) -> list[str]:
            return [back[r.id] for r in storage.find_actions(ActionFilter(inputs={"s": v}))]

        for name in ("str42", "int42", "sp42", "str1e5", "int1e5", "strnull", "none", "longa",
                     "longb", "uni", "f15", "hex", "i16", "empty"):
            assert names(values[name]) == [name], name
        assert names(2) == names(2.0) == ["f2", "i2"]
        assert names(0) == names(-0.0) == ["negzero", "zero"]
        assert names(2**60) == ["bigf"]
        assert names(long) == []

    def test_inputs_with_other_filters(self, storage: Any) -> None:
        """An inputs filter combines with concept, action and limit (recorded actions)."""
        tracer = record_into(storage)
        for i in range(6):
            with flow("shop::Web::post"):
                cart.add("pear" if i % 2 else "fig", qty=i)
        flushed(tracer)
        got = storage.find_actions(
            ActionFilter(concept_uri="shop", action="add", inputs={"item": "pear"}, limit=2)
        )
        assert [r.inputs["qty"] for r in got] == [1, 3]


class TestWrites:
    def test_idempotent_rewrite(self, storage: Any) -> None:
        """Writing the same part twice stores every action and edge once."""
        b = PartBuilder()
        r = b.add("w", "root", 1)
        c = b.add("w", "child", 2, parent=r)
        b.edge(r, c, "Sync", 3)
        storage.write_parts([b.part])
        storage.write_parts([b.part, b.part])
        trace = storage.get_trace(u(b.token))
        assert len(trace.actions) == 2 and len(trace.provenance_edges) == 1
        assert storage.top_synchronizations(5) == [("Sync", 1)]
        assert len(storage.find_by_sync("Sync")) == 1

    def test_running_row_is_completed_by_later_write(self, storage: Any) -> None:
        """A later write of a running action updates its status, duration and outputs."""
        b = PartBuilder()
        aid = b.add("w", "slow", 1, status="running", duration=None)
        storage.write_parts([b.part])
        b.replace(aid, duration_us=99, status="ok", outputs={"done": True})
        storage.write_parts([b.part])
        rec = storage.find_actions(ActionFilter(concept_uri="w"))[0]
        assert (rec.id, rec.status, rec.duration_us, rec.outputs) == (
            u(aid), "ok", 99, {"done": True})

    def test_parts_merge_through_continue_flow(self, storage: Any) -> None:
        """A continue_flow part joins the flow: one trace, the original root, the edge."""
        tracer = record_into(storage)
        with flow("shop::Web::post") as token:
            cart.checkout()
        flushed(tracer)
        trigger = list(storage.get_trace(token).actions)[-1]
        with continue_flow(token, trigger=trigger, synchronization="Remote"):
            payment.charge(7)
        flushed(tracer)
        trace = storage.get_trace(token)
        recs = list(trace.actions.values())
        assert [r.action for r in recs] == ["post", "checkout", "charge"]
        assert trace.root_action_id == recs[0].id
        assert recs[2].parent_id is None
        assert storage.find_producing_sync(recs[2].id) == "Remote"
        chain = storage.get_causal_chain(recs[2].id)
        assert [r.action for r in chain] == ["post", "checkout", "charge"]
        assert storage.longest_chains(1) == [(token, 3)]

    @pytest.mark.parametrize("order", ["start_first", "continuation_first", "same_batch",
                                       "same_bulk_batch"])
    def test_parts_merge_in_any_order(self, storage: Any, order: str) -> None:
        """Parts of one flow merge whatever order they arrive in; depth and module stay right."""
        start = PartBuilder(created=2_000, module="web")
        root = start.add("web", "req", 2_000)
        mid = start.add("web", "mid", 2_001, parent=root)
        # "api" < "web" and the continuation first: neither min() nor arrival order is right.
        cont = PartBuilder(token=start.token, root=False, created=2_500, module="api")
        a = cont.add("worker", "a", 2_500)
        b = cont.add("worker", "b", 2_501, parent=a)
        cont.edge(mid, a, "Queue", 2_500)
        parts = {"start_first": [[start.part], [cont.part]],
                 "continuation_first": [[cont.part], [start.part]],
                 "same_batch": [[cont.part, start.part]],
                 # enough flows in one batch for PostgreSQL's COPY path
                 "same_bulk_batch": [[cont.part, *filler(70), start.part]]}[order]
        for batch in parts:
            storage.write_parts(batch)
        trace = storage.get_trace(u(start.token))
        assert trace.module == "web"  # the module of the process that started the flow
        assert trace.root_action_id == u(root)
        assert trace.created_at == 2_000
        assert list(trace.actions) == [u(root), u(mid), u(a), u(b)]
        assert [r.id for r in storage.get_causal_chain(u(b))] == [u(root), u(mid), u(a), u(b)]
        fillers = 70 if order == "same_bulk_batch" else 0
        chains = storage.longest_chains(100)
        assert chains[0] == (u(start.token), 4)
        assert [d for _, d in chains[1:]] == [1] * fillers

    def test_hostile_values_round_trip(self, storage: Any) -> None:
        """NUL characters, huge ints, unicode and escapes survive (NUL -> U+FFFD on PG)."""
        is_pg = getattr(storage, "dialect", None) == "postgresql"
        nul = "\ufffd" if is_pg else "\x00"
        value = {
            "nul": "a\x00b", "esc": "\\u0000 stays text", "both": "\\\x00",
            "huge": 2**70, "neg": -(2**63), "u64": 2**64 - 1, "float": 1e308, "tiny": 5e-324,
            "uni": "héllo ✓ 🎵 \u2028 עברית", "empty": "", "deep": [[[{"k": [None]}]]],
            "quote\"key": "'; DROP TABLE x; --",
        }
        expected = dict(value, nul=f"a{nul}b", both=f"\\{nul}")
        b = PartBuilder(module="m\x00od")  # NUL in the module name too
        name = "we\x00ird ✓"
        aid = b.add("hostile::C", name, 1, inputs=value, outputs=[value, "x\x00"])
        b.edge(aid, aid, "self\x00loop", 2)
        storage.write_parts([b.part])
        trace = storage.get_trace(u(b.token))
        assert trace.module == f"m{nul}od"
        rec = trace.actions[u(aid)]
        # JSONB keeps numbers as NUMERIC: 1e308 comes back as the integer 10**308.
        assert float(rec.inputs.pop("float")) == 1e308
        assert float(rec.outputs[0].pop("float")) == 1e308
        del expected["float"]
        assert rec.inputs == expected
        assert rec.outputs == [expected, f"x{nul}"]
        assert rec.action == name.replace("\x00", nul)
        assert storage.find_actions(ActionFilter(inputs={"uni": value["uni"]}))[0].id == u(aid)
        assert storage.find_actions(ActionFilter(inputs={"esc": value["esc"]}))[0].id == u(aid)
        assert storage.get_causal_chain(u(aid))[-1].id == u(aid)  # a self-loop terminates


class TestProvenance:
    def test_find_by_sync_and_producing_sync(self, storage: Any) -> None:
        """find_by_sync lists what a sync produced, oldest first; find_producing_sync names it."""
        tracer = record_into(storage)
        tokens = [shop_flow() for _ in range(3)]
        flushed(tracer)
        produced = storage.find_by_sync("OnCheckout")
        assert [r.flow_token for r in produced] == tokens
        assert all(r.action == "charge" for r in produced)
        assert storage.find_producing_sync(produced[0].id) == "OnCheckout"
        root = storage.get_trace(tokens[0]).root_action_id
        assert storage.find_producing_sync(root) is None
        assert storage.find_producing_sync(uuid.uuid4()) is None
        assert storage.find_by_sync("Nope") == []

    def test_causal_chain_follows_edges_then_parents(self, storage: Any) -> None:
        """The chain goes root first, through the sync's trigger, to the action."""
        tracer = record_into(storage)
        token = shop_flow()
        flushed(tracer)
        recs = list(storage.get_trace(token).actions.values())
        chain = storage.get_causal_chain(recs[3].id)
        assert [r.action for r in chain] == ["post", "checkout", "charge"]
        assert [r.id for r in storage.get_causal_chain(recs[0].id)] == [recs[0].id]

    def test_causal_chain_takes_earliest_edge(self, storage: Any) -> None:
        """With several incoming edges, the earliest (by created_at) is the cause."""
        b = PartBuilder()
        root = b.add("c", "root", 1)
        early = b.add("c", "early", 2, parent=root)
        late = b.add("c", "late", 3, parent=root)
        target = b.add("c", "target", 4, parent=root)
        b.edge(late, target, "Late", 10)
        b.edge(early, target, "Early", 5)
        storage.write_parts([b.part])
        assert [r.id for r in storage.get_causal_chain(u(target))] == [
            u(root), u(early), u(target)]
        assert storage.find_producing_sync(u(target)) == "Early"

    def test_cycles_terminate(self, storage: Any) -> None:
        """A cycle of edges does not loop: the chain stops at the first repeat."""
        b = PartBuilder()
        x = b.add("cy", "x", 1)
        y = b.add("cy", "y", 2, parent=x)
        b.edge(y, x, "Back", 3)
        storage.write_parts([b.part])
        assert [r.id for r in storage.get_causal_chain(u(y))] == [u(x), u(y)]
        assert storage.longest_chains(1)[0][0] == u(b.token)


class TestAnalyzer:
    def test_top_synchronizations(self, storage: Any) -> None:
        """Counts per synchronization, most first, ties by name, limited."""
        b = PartBuilder()
        r = b.add("s", "root", 1)
        for i, sync in enumerate(["B", "A", "C", "B", "C", "B"]):
            b.edge(r, b.add("s", f"c{i}", 2 + i, parent=r), sync, 10 + i)
        storage.write_parts([b.part])
        assert storage.top_synchronizations(10) == [("B", 3), ("C", 2), ("A", 1)]
        assert storage.top_synchronizations(1) == [("B", 3)]
        assert TraceAnalyzer(storage).top_synchronizations(2) == [("B", 3), ("C", 2)]

    def test_longest_chains(self, storage: Any) -> None:
        """Depth = actions on the longest causal path; deepest first, ties oldest first."""
        expected = []
        for depth, created in [(2, 30), (5, 10), (2, 20), (1, 40), (3, 50)]:
            b = PartBuilder(created=created)
            prev = first = b.add("l", "a0", created)
            for i in range(1, depth):
                prev = b.add("l", f"a{i}", created + i, parent=prev)
            b.add("l", "leaf", created + 99, parent=first)  # a shallow side branch
            storage.write_parts([b.part])
            expected.append((u(b.token), max(depth, 2), created))
        expected.sort(key=lambda t: (-t[1], t[2]))
        want = [(t, d) for t, d, _ in expected]
        assert storage.longest_chains(10) == want
        assert storage.longest_chains(2) == want[:2]
        assert storage.longest_chains(0) == []

    def test_longest_chains_through_edges_and_parts(self, storage: Any) -> None:
        """A recorded flow's depth counts edges; a continued flow counts both parts."""
        tracer = record_into(storage)
        token = shop_flow()  # post -> checkout -(OnCheckout)-> charge
        flushed(tracer)
        recs = list(storage.get_trace(token).actions.values())
        with continue_flow(token, trigger=recs[3].id, synchronization="Later"):
            cart.add("x")
        flushed(tracer)
        ref = actiontrace.InMemoryTraceStorage()
        ref.save_trace(storage.get_trace(token))
        assert storage.longest_chains(3) == ref.longest_chains(3) == [(token, 4)]

    def test_sync_performance(self, storage: Any) -> None:
        """count/mean and linearly interpolated median, p95, p99 of produced durations."""
        durations = [40, 10, 1000, 20, 30, 7, 7]
        b = PartBuilder()
        r = b.add("p", "root", 1)
        for i, d in enumerate(durations):
            b.edge(r, b.add("p", f"a{i}", 2 + i, parent=r, duration=d), "Perf", 10 + i)
        b.edge(r, b.add("p", "running", 50, parent=r, duration=None, status="running"),
               "Perf", 60)
        storage.write_parts([b.part])
        got = storage.sync_performance("Perf")
        want = PerformanceMetrics.from_durations(durations)
        assert got.count == want.count == 7
        for field in ("mean", "median", "p95", "p99"):
            assert getattr(got, field) == pytest.approx(getattr(want, field))
        assert TraceAnalyzer(storage).sync_performance("Perf").count == 7

    def test_sync_performances_match_one_by_one(self, storage: Any) -> None:
        """sync_performances (what `actiontrace stats` asks) equals sync_performance per name."""
        b = PartBuilder()
        r = b.add("p", "root", 1)
        for i, d in enumerate([40, 10, 1000, 20, 30, 7, 7, 3]):
            b.edge(r, b.add("p", f"a{i}", 2 + i, parent=r, duration=d), f"S{i % 3}", 10 + i)
        storage.write_parts([b.part])
        names = ["S0", "S1", "S2", "Nothing"]
        assert storage.sync_performances(names) == {n: storage.sync_performance(n) for n in names}
        assert storage.sync_performances([]) == {}

    def test_sync_performance_empty(self, storage: Any) -> None:
        """No produced actions: count 0 and None figures."""
        assert storage.sync_performance("Nothing") == PerformanceMetrics(0, None, None, None, None)

    def test_sync_performance_single_and_even(self, storage: Any) -> None:
        """One value is every percentile; an even count interpolates the median."""
        for sync, durations in [("One", [13]), ("Even", [1, 2, 3, 4])]:
            b = PartBuilder()
            r = b.add("p", "root", 1)
            for i, d in enumerate(durations):
                b.edge(r, b.add("p", f"a{i}", 2 + i, parent=r, duration=d), sync, 10 + i)
            storage.write_parts([b.part])
        one = storage.sync_performance("One")
        assert (one.count, one.median, one.p95, one.p99) == (1, 13.0, 13.0, 13.0)
        even = storage.sync_performance("Even")
        assert even.median == 2.5 and even.mean == 2.5
        assert even.p99 == pytest.approx(3.97)


class TestTracerQueries:
    def test_tracer_queries_see_stored_parts(self, storage: Any) -> None:
        """The tracer's own queries flush first and answer from the storage."""
        tracer = record_into(storage)
        token = shop_flow()
        assert len(tracer.find_actions(concept_uri="shop::Cart")) == 2
        assert tracer.get_trace(token).flow_token == token
        charge = tracer.find_by_sync("OnCheckout")[0]
        assert tracer.find_producing_sync(charge.id) == "OnCheckout"
        assert len(tracer.get_causal_chain(charge.id)) == 3
        assert TraceAnalyzer(tracer).longest_chains(1) == [(token, 3)]


class TestRetention:
    """prune (docs/reference.md, Retention): whole flows whose newest action is older than
    the cut."""

    CUT = 10_000

    def _flows(self, storage: Any) -> dict[str, PartBuilder]:
        old = PartBuilder(created=1_000)
        r = old.add("ret::A", "start", 1_000)
        c = old.add("ret::A", "child", 1_500, parent=r, inputs={"k": 1})
        d = old.add("ret::B", "synced", 1_600, parent=r, inputs={"k": 2})
        old.edge(c, d, "RetSync", 1_600)
        long = PartBuilder(created=2_000)  # started before the cut, still going after it
        r2 = long.add("ret::A", "start", 2_000)
        e = long.add("ret::B", "synced", 20_000, parent=r2, inputs={"k": 1})
        long.edge(r2, e, "RetSync", 20_000)
        new = PartBuilder(created=15_000)
        new.add("ret::A", "start", 15_000)
        empty_old = PartBuilder(created=3_000, root=False)
        empty_new = PartBuilder(created=30_000, root=False)
        flows = {"old": old, "long": long, "new": new, "empty_old": empty_old,
                 "empty_new": empty_new}
        storage.write_parts([b.part for b in flows.values()])
        return flows

    def test_old_flows_go_whole(self, storage: Any) -> None:
        """Flows entirely before the cut go with their actions and edges; a flow with any
        action after the cut stays whole, old actions included."""
        flows = self._flows(storage)
        assert storage.prune(self.CUT) == 2  # "old" and "empty_old"
        for gone in ("old", "empty_old"):
            with pytest.raises(TraceNotFound):
                storage.get_trace(u(flows[gone].token))
        assert len(storage.get_trace(u(flows["long"].token)).actions) == 2
        assert len(storage.get_trace(u(flows["new"].token)).actions) == 1
        storage.get_trace(u(flows["empty_new"].token))
        kept = {r.flow_token for r in storage.find_actions(ActionFilter(concept_uri="ret"))}
        assert kept == {u(flows["long"].token), u(flows["new"].token)}
        assert [r.timestamp for r in storage.find_by_sync("RetSync")] == [20_000]
        assert storage.top_synchronizations(5) == [("RetSync", 1)]
        assert [r.timestamp for r in storage.find_actions(
            ActionFilter(inputs={"k": 1}))] == [20_000]
        assert storage.prune(self.CUT) == 0

    def test_dry_run_counts_and_keeps(self, storage: Any) -> None:
        """A dry run counts the flows and actions that would go, and removes nothing."""
        flows = self._flows(storage)
        assert tuple(storage.prune_flows(self.CUT, dry_run=True)) == (2, 3, True)
        assert len(storage.get_trace(u(flows["old"].token)).actions) == 3

    def test_batches(self, storage: Any) -> None:
        """Flows go in batches; max_batches stops early and says more is waiting."""
        for i in range(7):
            b = PartBuilder(created=100 + i)
            b.add("ret::A", "start", 100 + i)
            storage.write_parts([b.part])
        first = storage.prune_flows(self.CUT, batch_size=2, max_batches=2)
        assert (first.flows, first.actions, first.done) == (4, 4, False)
        assert storage.prune_flows(self.CUT, batch_size=2) == (3, 3, True)
        assert storage.find_actions(ActionFilter(concept_uri="ret")) == []
