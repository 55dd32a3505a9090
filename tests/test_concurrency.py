"""Concurrent flows in tasks and threads never mix, and pools can join a flow."""

from __future__ import annotations

import asyncio
import concurrent.futures
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
