"""Concurrent flows in tasks and threads never mix, and pools can join a flow."""

from __future__ import annotations

import asyncio
import concurrent.futures
import pathlib
import random
import threading
import uuid

import pytest

import actiontrace
from actiontrace import ActionFilter, action, concept, flow, synchronization, wrap_context


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


@concept("conc::Worker")
class Worker:
    @action
    async def step(self, flow_id: int, n: int) -> int:
        await asyncio.sleep(0)
        return n

    @action
    def sync_step(self, flow_id: int, n: int) -> int:
        return n


worker = Worker()


@synchronization("Next")
async def next_step(flow_id: int, n: int) -> None:
    await worker.step(flow_id, n)


def assert_flows_pure(tracer: actiontrace.ActionTracer, tokens: dict[int, uuid.UUID], per_flow: int) -> None:
    """Every flow holds exactly its own actions, all tagged with its own id."""
    for flow_id, token in tokens.items():
        trace = tracer.get_trace(token)
        steps = [r for r in trace.actions.values() if r.concept_uri == "conc::Worker"]
        assert len(steps) == per_flow
        assert {r.inputs["flow_id"] for r in steps} == {flow_id}
        assert {r.flow_token for r in trace.actions.values()} == {token}


class TestAsyncio:
    def test_200_concurrent_flows(self, tracer: actiontrace.ActionTracer) -> None:
        """200 interleaved asyncio flows: no record ever lands in the wrong flow."""

        async def one(flow_id: int) -> tuple[int, uuid.UUID]:
            async with flow("conc::Web::req", inputs={"flow_id": flow_id}) as token:
                for n in range(5):
                    await worker.step(flow_id, n)
                    await next_step(flow_id, n)
            return flow_id, token

        async def main() -> dict[int, uuid.UUID]:
            return dict(await asyncio.gather(*(one(i) for i in range(200))))

        tokens = asyncio.run(main())
        assert len(set(tokens.values())) == 200
        assert_flows_pure(tracer, tokens, per_flow=10)
        for token in tokens.values():
            trace = tracer.get_trace(token)
            assert len(trace.provenance_edges) == 5
            assert {trace.actions[e.to_action].inputs["flow_id"] for e in trace.provenance_edges} == {
                trace.actions[trace.root_action_id].inputs["flow_id"]
            }

    def test_tasks_inherit_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """Tasks created inside a flow record into it, as children of the creator."""

        @action(concept="conc::Fan")
        async def fan_out() -> list[int]:
            return list(await asyncio.gather(*(worker.step(7, i) for i in range(4))))

        async def main() -> uuid.UUID:
            async with flow("conc::Web::req") as token:
                await fan_out()
            return token

        token = asyncio.run(main())
        trace = tracer.get_trace(token)
        fan = next(r for r in trace.actions.values() if r.action == "fan_out")
        steps = [r for r in trace.actions.values() if r.action == "step"]
        assert len(steps) == 4 and {s.parent_id for s in steps} == {fan.id}


class TestThreads:
    def test_8_threads_100_flows_each(self, tracer: actiontrace.ActionTracer) -> None:
        """8 threads × 100 flows, recording at once: every flow is exactly its own."""
        tokens: dict[int, uuid.UUID] = {}
        lock = threading.Lock()
        barrier = threading.Barrier(8)

        def run(thread: int) -> None:
            barrier.wait()
            for i in range(100):
                flow_id = thread * 1000 + i
                with flow("conc::Web::req") as token:
                    for n in range(3):
                        worker.sync_step(flow_id, n)
                with lock:
                    tokens[flow_id] = token

        threads = [threading.Thread(target=run, args=(t,)) for t in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(tokens) == 800
        assert_flows_pure(tracer, tokens, per_flow=3)
        assert len(tracer.find_actions(ActionFilter(concept_uri="conc::Worker"))) == 2400

    def test_new_thread_has_no_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """A plain thread does not see the flow of the thread that started it."""
        seen: list[uuid.UUID | None] = []
        with flow("conc::Web::req"):
            t = threading.Thread(target=lambda: seen.append(tracer.current_flow_token()))
            t.start()
            t.join()
        assert seen == [None]

    def test_wrap_context_carries_flow_into_pool(self, tracer: actiontrace.ActionTracer) -> None:
        """wrap_context: work in a thread pool joins the flow, under the calling action."""

        @action(concept="conc::Pool")
        def dispatch(pool: concurrent.futures.ThreadPoolExecutor) -> list[int]:
            job = wrap_context(worker.sync_step)
            return list(pool.map(lambda n: job(5, n), range(6)))

        with concurrent.futures.ThreadPoolExecutor(4) as pool, flow("conc::Web::req") as token:
            assert dispatch(pool) == list(range(6))
        trace = tracer.get_trace(token)
        parent = next(r for r in trace.actions.values() if r.action == "dispatch")
        steps = [r for r in trace.actions.values() if r.action == "sync_step"]
        assert len(steps) == 6 and {s.parent_id for s in steps} == {parent.id}


@concept("fan::Shop")
class Shop:
    @action
    def start(self) -> str:
        return "started"

    @action
    def work(self, n: int) -> int:
        return n

    @action
    async def awork(self, n: int) -> int:
        return n

    @action
    def finish(self) -> str:
        return "done"


shop = Shop()


@synchronization("Fan")
def fan(n: int) -> None:
    shop.work(n)


@synchronization("AFan")
async def afan(n: int) -> None:
    await shop.awork(n)


@synchronization("Collect")
def collect() -> None:
    shop.finish()


def label(r: actiontrace.ActionRecord) -> str:
    """``work(3)`` for an action with input ``n``, else the action's name."""
    return f"{r.action}({r.inputs['n']})" if "n" in r.inputs else r.action


def edges_into(trace: actiontrace.ActionTrace) -> dict[str, tuple[str, str]]:
    """``{"work(3)": ("start", "Fan")}``: each edge by its target's and source's labels."""
    name = {r.id: label(r) for r in trace.actions.values()}
    return {name[e.to_action]: (name[e.from_action], e.synchronization) for e in trace.provenance_edges}


def chain_names(tracer: actiontrace.ActionTracer, trace: actiontrace.ActionTrace, target: str) -> list[str]:
    """The ``why`` chain of the action named ``target``, as action names."""
    rec = next(r for r in trace.actions.values() if label(r) == target)
    return [r.action for r in tracer.get_causal_chain(rec.id)]


def assert_fan_out_causes(tracer: actiontrace.ActionTracer, token: uuid.UUID, n: int) -> None:
    """Every work(i) is caused by start, and finish (after the join) by start too."""
    trace = tracer.get_trace(token)
    edges = edges_into(trace)
    works = {k: v for k, v in edges.items() if k.startswith(("work(", "awork("))}
    assert len(works) == n
    assert {v[0] for v in works.values()} == {"start"}
    assert edges["finish"] == ("start", "Collect")
    for target in works:
        assert chain_names(tracer, trace, target) == ["run", "start", target.split("(")[0]]
    assert chain_names(tracer, trace, "finish") == ["run", "start", "finish"]
    # flow root -> start -> work: three actions on the longest causal path, not n + 2.
    assert dict(tracer.storage.longest_chains(10))[token] == 3


class TestCausesUnderConcurrency:
    @pytest.mark.parametrize("seed", range(5))
    def test_gathered_tasks_each_triggered_by_start(self, tracer: actiontrace.ActionTracer, seed: int) -> None:
        """asyncio.gather of tasks finishing in random order: each sync's trigger is start."""
        rng = random.Random(seed)
        n = 6
        delays = [rng.choice([0, 0.001, 0.003]) for _ in range(n)]
        yields = [rng.randrange(4) for _ in range(n)]

        async def task(i: int) -> None:
            for _ in range(yields[i]):
                await asyncio.sleep(0)
            await asyncio.sleep(delays[i])
            if i % 2:
                await afan(i)
            else:
                fan(i)

        async def main() -> uuid.UUID:
            async with flow("fan::Web::run") as token:
                shop.start()
                await asyncio.gather(*(task(i) for i in range(n)))
                collect()
            return token

        token = asyncio.run(main())
        assert_fan_out_causes(tracer, token, n)

    def test_task_sees_own_completions(self, tracer: actiontrace.ActionTracer) -> None:
        """Inside a task, the next synchronization is triggered by the task's own last action."""

        async def task(i: int) -> None:
            fan(i)
            await asyncio.sleep(0.001 * (3 - i))
            collect()

        async def main() -> uuid.UUID:
            async with flow("fan::Web::run") as token:
                shop.start()
                await asyncio.gather(*(task(i) for i in range(3)))
            return token

        trace = tracer.get_trace(asyncio.run(main()))
        name = {r.id: (r.action, r.inputs.get("n")) for r in trace.actions.values()}
        pairs = sorted(
            (name[e.from_action], name[e.to_action]) for e in trace.provenance_edges
            if name[e.to_action][0] == "finish"
        )
        assert pairs == [(("work", i), ("finish", None)) for i in range(3)]

    @pytest.mark.parametrize("seed", range(5))
    def test_wrap_context_pool_each_triggered_by_start(self, tracer: actiontrace.ActionTracer, seed: int) -> None:
        """ThreadPoolExecutor with wrap_context, random finishing order: start triggers each."""
        rng = random.Random(seed)
        n = 8
        gates = [threading.Event() for _ in range(n)]
        order = list(range(n))
        rng.shuffle(order)

        def job(i: int) -> None:
            gates[i].wait(10)
            fan(i)

        with flow("fan::Web::run") as token:
            shop.start()
            with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
                futures = [pool.submit(wrap_context(job), i) for i in range(n)]
                for i in order:  # release the jobs in a random order
                    gates[i].set()
                for f in futures:
                    f.result()
            collect()
        assert_fan_out_causes(tracer, token, n)

    def test_pool_thread_reused_does_not_leak(self, tracer: actiontrace.ActionTracer) -> None:
        """One worker thread running wrap_context jobs in turn: each still sees only start."""
        with flow("fan::Web::run") as token:
            shop.start()
            with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
                for f in [pool.submit(wrap_context(fan), i) for i in range(4)]:
                    f.result()
            collect()
        assert_fan_out_causes(tracer, token, 4)

    def test_sqlite_longest_chains_fan_out(self, tmp_path: pathlib.Path) -> None:
        """The stored fan-out (SQLite) has causal depth 3, whatever the number of tasks."""
        tracer = actiontrace.configure(url=f"sqlite:///{tmp_path / 'fan.db'}")

        async def main() -> uuid.UUID:
            async with flow("fan::Web::run") as token:
                shop.start()
                await asyncio.gather(*(afan(i) for i in range(5)))
                collect()
            return token

        token = asyncio.run(main())
        assert_fan_out_causes(tracer, token, 5)

    def test_reactions_in_tasks_stay_in_their_task(self, tracer: actiontrace.ActionTracer) -> None:
        """A declared reaction's actions inside one task never become a sibling's trigger."""

        @synchronization("ReactToWork", when=Shop.awork)
        def react(record: actiontrace.ActionRecord) -> None:
            shop.finish()

        async def task(i: int) -> None:
            await asyncio.sleep(0.001 * (i % 3))
            await afan(i)

        async def main() -> uuid.UUID:
            async with flow("fan::Web::run") as token:
                shop.start()
                await asyncio.gather(*(task(i) for i in range(4)))
            return token

        try:
            trace = tracer.get_trace(asyncio.run(main()))
        finally:
            actiontrace.remove_reaction(react)
        acts = trace.actions
        pairs = {(label(acts[e.from_action]), label(acts[e.to_action]), e.synchronization)
                 for e in trace.provenance_edges}
        assert {p for p in pairs if p[2] == "AFan"} == {
            ("start", f"awork({i})", "AFan") for i in range(4)}
        assert len([p for p in pairs if p[2] == "ReactToWork"]) == 4
        assert all(p[0].startswith("awork(") for p in pairs if p[2] == "ReactToWork")
