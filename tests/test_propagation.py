"""Propagation across processes (docs/reference.md, Across services): inject, extract, continue_flow_from.

The W3C Trace Context level 1 rules checked here are the ones the W3C test suite
(w3c/trace-context, test/test.py) checks, each with its own test below.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import (
    RemoteContext,
    action,
    concept,
    continue_flow,
    continue_flow_from,
    extract,
    flow,
    inject,
    synchronization,
)

TRACE = "12345678901234567890123456789012"
TP = f"00-{TRACE}-1234567890123456-01"
TOKEN = uuid.UUID(TRACE)


@pytest.fixture
def tracer() -> actiontrace.ActionTracer:
    return actiontrace.configure()


@concept("p::Svc")
class Svc:
    @action
    def step(self, x: int = 0) -> int:
        return x

    @action
    def send(self) -> dict[str, str]:
        return inject({})


svc = Svc()


def rejected(tracer: actiontrace.ActionTracer) -> int:
    return int(tracer.stats()["rejected_trace_headers"])


def token_of(headers: list[tuple[str, str]]) -> uuid.UUID | None:
    ctx = extract(headers)
    return None if ctx is None else ctx.flow_token


class TestInject:
    def test_outside_a_flow_the_carrier_is_unchanged(self) -> None:
        """inject() outside a flow adds nothing and returns the same carrier."""
        carrier = {"x": "1"}
        assert inject(carrier) is carrier
        assert carrier == {"x": "1"}

    def test_headers_name_flow_and_innermost_action(self, tracer: actiontrace.ActionTracer) -> None:
        """traceparent = flow token + low 64 bits of the running action; actiontrace names it."""
        with flow("p::Web::handle") as token:
            headers = svc.send()
        trace = tracer.get_trace(token)
        sender = next(r for r in trace.actions.values() if r.action == "send")
        version, trace_id, parent, flags = headers["traceparent"].split("-")
        assert (version, trace_id, flags) == ("00", token.hex, "01")
        assert parent == f"{sender.id.int & (2**64 - 1):016x}"
        assert headers["actiontrace"] == f"trigger={sender.id};sync=remote"

    def test_in_flow_root_the_trigger_is_the_root(self, tracer: actiontrace.ActionTracer) -> None:
        """Directly in a flow block the trigger is the flow's root action."""
        with flow("p::Web::handle") as token:
            headers = inject({})
        root = tracer.get_trace(token).root_action_id
        assert extract(headers) == RemoteContext(token, root, "remote", None)

    def test_in_a_synchronization_the_remote_gets_the_local_edge(
        self, tracer: actiontrace.ActionTracer
    ) -> None:
        """Directly in a sync, trigger and name are the sync's, as a local call's edge."""

        @synchronization("OnStep")
        def on_step() -> tuple[dict[str, str], int]:
            return inject({}), svc.step(2)

        with flow("p::Web::handle") as token:
            svc.step(1)
            headers, _ = on_step()
        trace = tracer.get_trace(token)
        local = next(r for r in trace.actions.values() if r.inputs == {"x": 2})
        edge = next(e for e in trace.provenance_edges if e.to_action == local.id)
        ctx = extract(headers)
        assert ctx is not None
        assert (ctx.trigger, ctx.synchronization) == (edge.from_action, "OnStep")

    def test_synchronization_argument_sets_the_name(self, tracer: actiontrace.ActionTracer) -> None:
        """A given synchronization= always names the edge."""

        @synchronization("OnStep")
        def on_step() -> dict[str, str]:
            return inject({}, synchronization="Queue Job/1")

        with flow("p::Web::handle"):
            headers = on_step()
        assert headers["actiontrace"].endswith(";sync=Queue%20Job%2F1")
        ctx = extract(headers)
        assert ctx is not None and ctx.synchronization == "Queue Job/1"

    def test_unsampled_flow_sends_flag_00(self) -> None:
        """The sampled flag is the flow's sampling decision."""
        actiontrace.configure(sample_rate=0.0)
        with flow("p::Web::handle"):
            assert inject({})["traceparent"].endswith("-00")

    def test_other_casings_are_replaced_not_duplicated(self, tracer: actiontrace.ActionTracer) -> None:
        """A forwarded dict's TraceParent/TraceState is replaced, never sent twice."""
        carrier = {"TraceParent": TP, "TRACESTATE": "a=1", "other": "x"}
        with flow("p::Web::handle"):
            inject(carrier)
        assert sorted(carrier) == ["actiontrace", "other", "traceparent"]


class TestExtract:
    def test_round_trip(self, tracer: actiontrace.ActionTracer) -> None:
        """What inject writes, extract reads back."""
        with flow("p::Web::handle") as token:
            headers = svc.send()
        ctx = extract(headers)
        assert ctx is not None and ctx.flow_token == token and ctx.synchronization == "remote"

    def test_carriers_of_every_shape(self) -> None:
        """Mappings, (name, value) pairs, bytes, any header-name casing."""
        assert token_of([("TrAcEpArEnT", TP)]) == TOKEN
        assert extract({"TRACEPARENT": TP}) is not None
        assert extract([(b"traceparent", TP.encode())]) is not None
        assert extract(iter([("traceparent", TP)])) is not None

    def test_foreign_traceparent_joins_without_trigger(self) -> None:
        """A traceparent from another tracer: its trace id is the token, no trigger."""
        assert extract({"traceparent": TP}) == RemoteContext(TOKEN, None, None, None)

    def test_sampled_flag_does_not_change_the_result(self) -> None:
        """Flags 00 and 01 give the same context."""
        assert extract({"traceparent": TP[:-2] + "00"}) == extract({"traceparent": TP})

    def test_malformed_actiontrace_beside_valid_traceparent(self, tracer: actiontrace.ActionTracer) -> None:
        """A bad actiontrace header gives trigger=None (and is counted)."""
        trigger = uuid.UUID("01234567-89ab-7def-8123-1234567890123456"[:36])
        good = f"00-{TRACE}-{trigger.int & (2**64 - 1):016x}-01"
        for bad in ["trigger=nope;sync=x", "sync=x", f"trigger={trigger};sync=%00",
                    f"trigger={trigger};sync=%ff", f"trigger={trigger};trigger={trigger}",
                    f"trigger={uuid.uuid4()};sync=x"]:  # last: does not match the parent-id
            before = rejected(tracer)
            ctx = extract({"traceparent": good, "actiontrace": bad})
            assert ctx == RemoteContext(TOKEN, None, None, None), bad
            assert rejected(tracer) == before + 1
        ctx = extract({"traceparent": good, "actiontrace": f"trigger={trigger};sync=A%20B"})
        assert ctx == RemoteContext(TOKEN, trigger, "A B", None)

    def test_never_raises_on_hostile_carriers(self, tracer: actiontrace.ActionTracer) -> None:
        """Non-iterables, broken pairs, non-string values: None, counted."""
        before = rejected(tracer)
        for carrier in [None, 42, [("traceparent",)], [("traceparent", 7)], [object()]]:
            assert extract(carrier) is None
        assert rejected(tracer) == before + 5

    def test_missing_headers_are_not_counted(self, tracer: actiontrace.ActionTracer) -> None:
        """No trace headers at all is the normal case, not an event."""
        assert extract({"host": "x"}) is None
        assert rejected(tracer) == 0

    @given(st.lists(st.tuples(st.sampled_from(["traceparent", "tracestate", "actiontrace",
                                                "TraceParent", "x"]) | st.text(max_size=12),
                              st.binary(max_size=700) | st.text(max_size=700)), max_size=8))
    @settings(max_examples=300, deadline=None)
    def test_fuzz_never_raises(self, pairs: list[tuple[str, Any]]) -> None:
        """Arbitrary header names and bytes: extract returns None or a valid context."""
        ctx = extract(pairs)
        assert ctx is None or (isinstance(ctx, RemoteContext) and ctx.flow_token.int != 0)
        if ctx is not None and ctx.tracestate is not None:
            assert len(ctx.tracestate) <= 512 and len(ctx.tracestate.split(",")) <= 32

    @given(st.binary(min_size=0, max_size=200_000))
    @settings(max_examples=30, deadline=None)
    def test_fuzz_huge_values_are_bounded(self, blob: bytes) -> None:
        """Huge values are refused by size before any parsing (the work is bounded)."""
        value = blob.decode("latin-1")
        ctx = extract([("traceparent", TP), ("tracestate", value * 2), ("actiontrace", value)])
        assert ctx is not None and ctx.flow_token == TOKEN
        assert ctx.tracestate is None or len(ctx.tracestate) <= 512


class TestW3CTraceparent:
    """traceparent rules of W3C Trace Context level 1, as the W3C test suite checks them."""

    @pytest.mark.parametrize("value", [
        TP, f" {TP}", f"\t{TP}", f"{TP} ", f"{TP}\t", f"\t {TP} \t",       # OWS
        f"cc-{TRACE}-1234567890123456-01",                                # future version
        f"cc-{TRACE}-1234567890123456-01-what-the-future-will-be-like",
    ])
    def test_valid(self, value: str) -> None:
        """Valid values (and higher versions read by their 00 fields) keep the trace id."""
        assert token_of([("traceparent", value)]) == TOKEN

    @pytest.mark.parametrize("value", [
        f"{TP}.", f"{TP}-what-the-future-will-be-like",                  # 00 with trailing data
        f"cc-{TRACE}-1234567890123456-01.what-the-future-will-be-like",
        f"ff-{TRACE}-1234567890123456-01",                                # version 255
        f".0-{TRACE}-1234567890123456-01", f"0.-{TRACE}-1234567890123456-01",
        f"000-{TRACE}-1234567890123456-01", f"0000-{TRACE}-1234567890123456-01",
        f"0-{TRACE}-1234567890123456-01",
        "00-00000000000000000000000000000000-1234567890123456-01",        # zero trace id
        "00-.2345678901234567890123456789012-1234567890123456-01",
        "00-1234567890123456789012345678901.-1234567890123456-01",
        "00-123456789012345678901234567890123-1234567890123456-01",
        "00-1234567890123456789012345678901-1234567890123456-01",
        f"00-{TRACE}-0000000000000000-01",                                # zero parent id
        f"00-{TRACE}-.234567890123456-01", f"00-{TRACE}-123456789012345.-01",
        f"00-{TRACE}-12345678901234567-01", f"00-{TRACE}-123456789012345-01",
        f"00-{TRACE}-1234567890123456-.0", f"00-{TRACE}-1234567890123456-0.",
        f"00-{TRACE}-1234567890123456-001", f"00-{TRACE}-1234567890123456-1",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-1234567890123456-01",          # uppercase hex
        f"cc-{TRACE}-1234567890123456-01-" + "x" * 500,                     # over 512 bytes
    ])
    def test_invalid(self, value: str, tracer: actiontrace.ActionTracer) -> None:
        """Malformed values give None (a new flow), counted in stats()."""
        assert extract([("traceparent", value)]) is None
        assert rejected(tracer) == 1

    def test_wrong_header_names_are_ignored(self) -> None:
        """trace-parent / trace.parent are not traceparent."""
        assert extract([("trace-parent", TP)]) is None
        assert extract([("trace.parent", TP)]) is None

    def test_duplicated_traceparent_is_invalid(self, tracer: actiontrace.ActionTracer) -> None:
        """Two traceparent headers (even equal ones): None."""
        assert extract([("traceparent", TP), ("TraceParent", TP)]) is None
        assert rejected(tracer) == 1


def state_of(*values: str) -> str | None:
    ctx = extract([("traceparent", TP)] + [("tracestate", v) for v in values])
    assert ctx is not None
    return ctx.tracestate


class TestW3CTracestate:
    """tracestate rules: one list across fields, 32 members, invalid members dropped."""

    def test_passed_on_with_the_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """An incoming tracestate goes out again with every inject in the continued flow."""
        with continue_flow_from({"traceparent": TP, "tracestate": "foo=1,bar=2"}, root="p::x"):
            assert inject({})["tracestate"] == "foo=1,bar=2"
            assert svc.send()["tracestate"] == "foo=1,bar=2"
        with flow("p::Web::handle"):  # another flow: not passed on
            assert "tracestate" not in inject({})

    def test_without_traceparent_is_discarded(self) -> None:
        """A tracestate alone gives no context (nothing to continue)."""
        assert extract({"tracestate": "foo=1"}) is None

    def test_fields_combine_in_order(self) -> None:
        """Several tracestate fields are one list, in order; empty fields are ignored."""
        assert state_of("foo=1,bar=2", "rojo=1,congo=2", "baz=3") == \
            "foo=1,bar=2,rojo=1,congo=2,baz=3"
        assert state_of("foo=1", "") == "foo=1"
        assert state_of("", "foo=1") == "foo=1"
        assert state_of("") is None

    def test_ows(self) -> None:
        """Spaces and tabs around members are not part of them."""
        assert state_of("foo=1 \t , \t bar=2, \t baz=3") == "foo=1,bar=2,baz=3"
        assert state_of("\t foo=1 \t") == "foo=1"

    def test_all_allowed_characters(self) -> None:
        """Every character the grammar allows in keys (with vendor) and values is kept."""
        key = "abcdefghijklmnopqrstuvwxyz0123456789_-*/"
        value = "".join(map(chr, [*range(0x20, 0x2C), *range(0x2D, 0x3D), *range(0x3E, 0x7F)]))
        assert state_of(f"{key}={value}") == f"{key}={value}"
        assert state_of(f"{key}@a-z0-9_-*/={value}") == f"{key}@a-z0-9_-*/={value}"

    def test_at_signs_in_keys(self) -> None:
        """Keys may hold @ anywhere after the first character."""
        for key in ["foo@", "foo@@bar", "foo@bar@baz", "t" * 241 + "@" + "v" * 14, "t@" + "v" * 15]:
            assert state_of(f"{key}=1", "bar=2") == f"{key}=1,bar=2"

    def test_invalid_members_dropped(self, tracer: actiontrace.ActionTracer) -> None:
        """Members with a bad key or value are dropped, the others kept; counted."""
        cases = {
            "@foo=1,bar=2": "bar=2", "foo =1,bar=2": "bar=2", "FOO=1,bar=2": "bar=2",
            "foo.bar=1,bar=2": "bar=2", "foo=bar=baz,bar=2": "bar=2", "foo=,bar=3": "bar=3",
            "foo=1," + "z" * 257 + "=1": "foo=1", "foo=\x01": None,
        }
        for given_value, kept in cases.items():
            assert state_of(given_value) == kept, given_value
        assert rejected(tracer) == len(cases)

    def test_256_character_key_is_valid(self) -> None:
        """A key of 256 characters is the longest allowed."""
        assert state_of("foo=1", "z" * 256 + "=1") == "foo=1," + "z" * 256 + "=1"

    def test_duplicated_keys_keep_the_first(self) -> None:
        """A repeated key keeps its first value."""
        assert state_of("foo=1,foo=2") == "foo=1"
        assert state_of("foo=1", "foo=2") == "foo=1"

    def test_at_most_32_members(self) -> None:
        """32 members are kept; past 32, the list stops at 32."""
        members = [f"bar{i:02d}={i:02d}" for i in range(1, 34)]
        assert state_of(",".join(members[:32])) == ",".join(members[:32])
        assert state_of(",".join(members)) == ",".join(members[:32])

    def test_512_byte_bound(self) -> None:
        """Over 512 bytes, members over 128 bytes go first, then from the right."""
        big = "big=" + "v" * 200
        small = [f"k{i:02d}=" + "x" * 40 for i in range(12)]  # 44 bytes each
        result = state_of(",".join([small[0], big, *small[1:]]))
        assert result is not None and "big=" not in result and len(result) <= 512
        assert result.split(",") == small[: len(result.split(","))]


class TestContinueFlowFrom:
    def test_continues_the_remote_flow(self, tracer: actiontrace.ActionTracer) -> None:
        """With headers, the block joins the flow; direct actions get the remote edge."""
        with flow("p::Client::run") as token:
            headers = svc.send()
        with continue_flow_from(headers, root="p::Worker::job") as joined:
            svc.step(7)
        assert joined == token
        trace = tracer.get_trace(token)
        sender = next(r for r in trace.actions.values() if r.action == "send")
        step = next(r for r in trace.actions.values() if r.action == "step")
        assert step.parent_id is None
        assert [(e.from_action, e.synchronization) for e in trace.provenance_edges
                if e.to_action == step.id] == [(sender.id, "remote")]
        assert trace.root_action_id != step.id

    def test_starts_a_new_flow_otherwise(self, tracer: actiontrace.ActionTracer) -> None:
        """Without (valid) headers, it is flow(root, inputs)."""
        with continue_flow_from({"traceparent": "garbage"}, root="p::Worker::job",
                                inputs={"n": 1}) as token:
            svc.step(1)
        trace = tracer.get_trace(token)
        root = trace.actions[trace.root_action_id]
        assert (root.concept_uri, root.action, root.inputs) == ("p::Worker", "job", {"n": 1})
        assert rejected(tracer) == 1

    async def test_async_with(self, tracer: actiontrace.ActionTracer) -> None:
        """async with works the same."""
        async with continue_flow_from({"traceparent": TP}, root="p::x") as token:
            await asyncio.sleep(0)
            svc.step(1)
        assert token == TOKEN
        assert len(tracer.get_trace(TOKEN).actions) == 1

    def test_bad_root_is_a_type_error(self) -> None:
        """The root must be a non-empty name."""
        with pytest.raises(TypeError):
            continue_flow_from({}, root="")

    def test_queue_consumer_much_later(self, tracer: actiontrace.ActionTracer) -> None:
        """A job carrying headers, consumed after the producer's flow ended, joins it."""
        import queue

        jobs: queue.Queue[dict[str, Any]] = queue.Queue()

        @synchronization("Enqueue")
        def enqueue() -> None:
            jobs.put({"headers": inject({}), "x": 3})

        with flow("p::Producer::run") as token:
            svc.step(1)
            enqueue()
        tracer.flush()  # the producer's flow is stored and gone from memory

        def consume() -> None:
            job = jobs.get(timeout=10)
            with continue_flow_from(job["headers"], root="p::Consumer::job"):
                svc.step(job["x"])

        worker = threading.Thread(target=consume)
        worker.start()
        worker.join(10)
        chain = tracer.get_causal_chain(
            next(r.id for r in tracer.find_actions(flow_token=token) if r.inputs == {"x": 3}))
        assert [(r.action, r.inputs) for r in chain] == [("run", {}), ("step", {"x": 1}),
                                                         ("step", {"x": 3})]
        assert tracer.find_producing_sync(chain[-1].id) == "Enqueue"


class _OtelService(BaseHTTPRequestHandler):
    """A service instrumented with the OpenTelemetry SDK and its own W3C propagator."""

    spans: Any = None
    tracer: Any = None

    def do_GET(self) -> None:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        ctx = TraceContextTextMapPropagator().extract(dict(self.headers.items()))
        with self.tracer.start_as_current_span("otel-handler", context=ctx):
            pass
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class TestOpenTelemetryInterop:
    def test_otel_service_continues_our_trace(self, tracer: actiontrace.ActionTracer) -> None:
        """An OTel-instrumented service receiving our traceparent continues our trace id."""
        import httpx
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        from actiontrace.contrib import httpx as at_httpx

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        _OtelService.tracer = provider.get_tracer("otel-service")
        server = HTTPServer(("127.0.0.1", 0), _OtelService)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        at_httpx.instrument()
        try:
            with flow("p::Client::run") as token:
                httpx.get(f"http://127.0.0.1:{server.server_address[1]}/")
        finally:
            at_httpx.uninstrument()
            server.shutdown()
            server.server_close()
        (span,) = exporter.get_finished_spans()
        client = tracer.find_actions(concept_uri="http::Client")[0]
        assert span.context.trace_id == token.int
        assert span.parent is not None and span.parent.span_id == client.id.int & (2**64 - 1)

    def test_otel_traceparent_joins_the_flow_of_its_trace_id(
        self, tracer: actiontrace.ActionTracer
    ) -> None:
        """A traceparent made by OTel's propagator joins the flow whose token is its trace id."""
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        otel = TracerProvider().get_tracer("caller")
        headers: dict[str, str] = {}
        with otel.start_as_current_span("caller") as span:
            TraceContextTextMapPropagator().inject(headers)
        with continue_flow_from(headers, root="p::x") as token:
            svc.step(1)
        assert token.int == span.get_span_context().trace_id
        assert [r.action for r in tracer.find_actions(flow_token=token)] == ["step"]


class TestContinueFlowStillWorks:
    def test_continue_flow_with_extracted_values(self, tracer: actiontrace.ActionTracer) -> None:
        """RemoteContext's fields are what continue_flow takes."""
        with flow("p::Client::run"):
            ctx = extract(svc.send())
        assert ctx is not None
        with continue_flow(ctx.flow_token, ctx.trigger, ctx.synchronization):
            svc.step(1)
        edges = tracer.get_trace(ctx.flow_token).provenance_edges
        assert [(e.from_action, e.synchronization) for e in edges] == [(ctx.trigger, "remote")]
