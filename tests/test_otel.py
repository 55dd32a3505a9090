"""OpenTelemetry: traces as spans, and configure(span_exporters=...) (actiontrace.contrib.otel)."""

from __future__ import annotations

import gzip
import http.server
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import actiontrace
from actiontrace import action, continue_flow, flow, synchronization
from actiontrace.contrib.otel import span_id_of, to_spans

LOW64 = (1 << 64) - 1


@action(concept="otel::Auth")
def login(user: str, password: str) -> dict[str, Any]:
    return {"user": user, "token": "t0k3n"}


@action(concept="otel::Player")
def play_passage(passage_id: int) -> int:
    return load(passage_id)


@action(concept="otel::Player")
def load(passage_id: int) -> int:
    return passage_id


@action(concept="otel::Player")
def fail(reason: str) -> None:
    raise ValueError(reason)


@synchronization("OnAuthSuccess")
def on_auth_success(passage_id: int) -> None:
    play_passage(passage_id)


def record_flow() -> uuid.UUID:
    """Web::request -> login; OnAuthSuccess -> play_passage -> load; an error: 5 actions."""
    with flow("otel::Web::request", inputs={"path": "/play"}) as token:
        login("bob", "hunter2")
        on_auth_success(42)
        with pytest.raises(ValueError):
            fail("no such passage")
    return token


def by_name(spans: Sequence[ReadableSpan]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.01)


class TestToSpans:
    @pytest.fixture
    def trace(self) -> actiontrace.ActionTrace:
        tracer = actiontrace.configure()
        return tracer.get_trace(record_flow())

    def test_one_span_per_action_named_concept_action(self, trace: actiontrace.ActionTrace) -> None:
        """Every action is a span named "<concept_uri>::<action>", INTERNAL, in the trace's order."""
        spans = to_spans(trace)
        assert [s.name for s in spans] == [f"{r.concept_uri}::{r.action}" for r in trace.actions.values()]
        assert {s.kind for s in spans} == {SpanKind.INTERNAL}
        assert len(spans) == 5

    def test_ids(self, trace: actiontrace.ActionTrace) -> None:
        """Trace id = flow token; span id = the low 64 bits of the action id, the same every time."""
        spans = to_spans(trace)
        for span, rec in zip(spans, trace.actions.values(), strict=True):
            assert span.context.trace_id == trace.flow_token.int
            assert span.context.span_id == rec.id.int & LOW64 == span_id_of(rec.id)
            assert span.attributes["actiontrace.action_id"] == str(rec.id)
        assert [s.context.span_id for s in to_spans(trace)] == [s.context.span_id for s in spans]
        assert len({s.context.span_id for s in spans}) == len(spans)

    def test_parents_follow_call_nesting(self, trace: actiontrace.ActionTrace) -> None:
        """A span's parent is the span of the action's parent_id; the root has none."""
        spans = by_name(to_spans(trace))
        root = spans["otel::Web::request"]
        assert root.parent is None
        for name in ("otel::Auth::login", "otel::Player::play_passage", "otel::Player::fail"):
            assert spans[name].parent.span_id == root.context.span_id
            assert spans[name].parent.trace_id == trace.flow_token.int
        load_span = spans["otel::Player::load"]
        assert load_span.parent.span_id == spans["otel::Player::play_passage"].context.span_id
        assert load_span.parent.is_remote is False

    def test_provenance_edges_are_links(self, trace: actiontrace.ActionTrace) -> None:
        """The edge login -> play_passage is a link to login's span with the synchronization."""
        spans = by_name(to_spans(trace))
        (link,) = spans["otel::Player::play_passage"].links
        assert link.context.span_id == spans["otel::Auth::login"].context.span_id
        assert link.context.trace_id == trace.flow_token.int
        assert dict(link.attributes) == {"actiontrace.synchronization": "OnAuthSuccess"}
        assert spans["otel::Player::load"].links == ()
        assert spans["otel::Auth::login"].links == ()
        assert spans["otel::Player::play_passage"].attributes["actiontrace.synchronization"] == "OnAuthSuccess"
        assert "actiontrace.synchronization" not in spans["otel::Player::load"].attributes

    def test_attributes_are_the_stored_json(self, trace: actiontrace.ActionTrace) -> None:
        """Concept, action, and inputs/outputs as JSON text as stored, so redacted."""
        attrs = by_name(to_spans(trace))["otel::Auth::login"].attributes
        assert attrs["actiontrace.concept"] == "otel::Auth"
        assert attrs["actiontrace.action"] == "login"
        assert attrs["actiontrace.inputs"] == '{"user":"bob","password":"[REDACTED]"}'
        assert attrs["actiontrace.outputs"] == '{"user":"bob","token":"[REDACTED]"}'
        root = by_name(to_spans(trace))["otel::Web::request"].attributes
        assert root["actiontrace.inputs"] == '{"path":"/play"}'
        assert root["actiontrace.outputs"] == "null"

    def test_status_ok_and_error_with_message(self, trace: actiontrace.ActionTrace) -> None:
        """Error actions are ERROR with the error text (and an exception event); others OK."""
        spans = by_name(to_spans(trace))
        failed = spans["otel::Player::fail"]
        assert failed.status.status_code is StatusCode.ERROR
        assert failed.status.description == "no such passage"
        (event,) = failed.events
        assert event.name == "exception"
        assert dict(event.attributes) == {
            "exception.type": "ValueError", "exception.message": "no such passage",
        }
        for name in ("otel::Web::request", "otel::Auth::login", "otel::Player::load"):
            assert spans[name].status.status_code is StatusCode.OK

    def test_times_from_timestamp_and_duration(self, trace: actiontrace.ActionTrace) -> None:
        """start = timestamp, end = timestamp + duration_us, in nanoseconds."""
        for span, rec in zip(to_spans(trace), trace.actions.values(), strict=True):
            assert rec.duration_us is not None
            assert span.start_time == rec.timestamp * 1000
            assert span.end_time == (rec.timestamp + rec.duration_us) * 1000

    def test_resource_is_the_module(self, trace: actiontrace.ActionTrace) -> None:
        """The resource's service.name is the trace's module; scope is actiontrace."""
        span = to_spans(trace)[0]
        assert span.resource.attributes["service.name"] == trace.module
        assert span.instrumentation_scope.name == "actiontrace"

    def test_continued_flow_parent_is_the_remote_trigger(self) -> None:
        """A direct action of continue_flow has the remote trigger's span as parent and link."""
        tracer = actiontrace.configure()
        token, trigger = uuid.uuid4(), uuid.uuid4()
        with continue_flow(token, trigger=trigger, synchronization="OnRemote"):
            load(1)
        with continue_flow(token):
            load(2)
        spans = to_spans(tracer.get_trace(token))
        first, second = spans
        assert first.context.trace_id == token.int
        assert first.parent.span_id == trigger.int & LOW64
        assert first.parent.is_remote is True
        assert first.links[0].context.span_id == trigger.int & LOW64
        assert dict(first.links[0].attributes) == {"actiontrace.synchronization": "OnRemote"}
        assert second.parent is None  # no trigger known

    def test_running_action_is_unset(self) -> None:
        """An action still running (a partial trace) has UNSET status and no duration."""
        tracer = actiontrace.configure()
        with flow("otel::Web::long") as token:
            spans = to_spans(tracer.get_trace(token))
        (root,) = spans
        assert root.status.status_code is StatusCode.UNSET
        assert root.attributes["actiontrace.running"] is True
        assert root.end_time == root.start_time

    def test_log_events_are_span_events(self) -> None:
        """Log events attached to an action are events on its span."""
        import structlog

        from actiontrace.contrib.structlog import attach_to_action

        structlog.configure(processors=[structlog.processors.add_log_level, attach_to_action,
                                        lambda *a: ""], cache_logger_on_first_use=False)
        try:
            tracer = actiontrace.configure()
            with flow("otel::Web::logged") as token:
                structlog.get_logger().info("hello", n=1)
        finally:
            structlog.reset_defaults()
        (root,) = to_spans(tracer.get_trace(token))
        (event,) = root.events
        assert event.name == "hello"
        assert dict(event.attributes) == {"actiontrace.level": "info", "actiontrace.fields": '{"n":1}'}


class FailingExporter(SpanExporter):
    """Raises on every export."""

    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.calls += 1
        raise ConnectionError("collector unreachable")

    def shutdown(self) -> None:
        pass


class HangingExporter(SpanExporter):
    """Sleeps 30 s in export (cut short by ``release``, so no test waits for it)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.released = threading.Event()
        self.exported: list[ReadableSpan] = []

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        self.released.wait(30)
        self.exported.extend(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.released.set()


class RaisingShutdownExporter(InMemorySpanExporter):
    """Exports fine, raises in shutdown."""

    def shutdown(self) -> None:
        raise RuntimeError("shutdown exploded")


@pytest.fixture
def hanging() -> Iterator[HangingExporter]:
    exporter = HangingExporter()
    yield exporter
    exporter.released.set()


class TestSpanExporters:
    @pytest.mark.parametrize("kind", ["memory", "sqlite"])
    def test_every_stored_part_is_exported(self, kind: str, tmp_path: Path) -> None:
        """Each stored action reaches the exporter once, as to_spans makes it."""
        exporter = InMemorySpanExporter()
        url = None if kind == "memory" else f"sqlite:///{tmp_path}/t.db"
        tracer = actiontrace.configure(url, span_exporters=[exporter])
        tokens = [record_flow() for _ in range(3)]
        with continue_flow(tokens[0], trigger=uuid.uuid4()):
            load(9)
        expected = {s.context.span_id: s for t in tokens for s in to_spans(tracer.get_trace(t))}
        assert tracer.shutdown(timeout=30)
        spans = exporter.get_finished_spans()
        assert sorted(s.context.span_id for s in spans) == sorted(expected)
        for span in spans:  # the export thread's own path gives what to_spans gives
            want = expected[span.context.span_id]
            assert (span.name, span.parent, span.attributes, span.start_time, span.end_time) == (
                want.name, want.parent, want.attributes, want.start_time, want.end_time)
            assert [(ln.context, dict(ln.attributes)) for ln in span.links] == [
                (ln.context, dict(ln.attributes)) for ln in want.links]
            assert (span.status.status_code, span.status.description) == (
                want.status.status_code, want.status.description)
            assert [(e.name, dict(e.attributes)) for e in span.events] == [
                (e.name, dict(e.attributes)) for e in want.events]
        assert tracer.stats()["spans_exported"] == 16

    def test_exported_only_after_stored(self) -> None:
        """An exporter that queries the storage finds every span's action already there."""
        store = actiontrace.InMemoryTraceStorage()
        missing: list[int] = []

        class Checking(InMemorySpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                for s in spans:
                    found = store.find_actions(actiontrace.ActionFilter(
                        flow_token=uuid.UUID(int=s.context.trace_id)))
                    if s.attributes["actiontrace.action_id"] not in {str(r.id) for r in found}:
                        missing.append(s.context.span_id)
                return super().export(spans)

        exporter = Checking()
        tracer = actiontrace.configure(storage=store, span_exporters=[exporter])
        for _ in range(20):
            record_flow()
        assert tracer.shutdown(timeout=30)
        assert len(exporter.get_finished_spans()) == 100
        assert missing == []

    def test_failing_exporter_never_reaches_storage_or_app(self) -> None:
        """An exporter that raises is counted; storage and the other exporter get everything."""
        failing, good = FailingExporter(), InMemorySpanExporter()
        tracer = actiontrace.configure(span_exporters=[failing, good])
        token = record_flow()
        assert tracer.flush(timeout=30)
        assert len(tracer.get_trace(token).actions) == 5
        wait_for(lambda: len(good.get_finished_spans()) == 5 and tracer.stats()["span_export_failed"] == 5)
        stats = tracer.stats()
        assert stats["span_export_errors"] >= 1
        assert stats["written"] == 5 and stats["dropped"] == 0
        per = {s["exporter"]: s for s in stats["span_exporters"]}
        assert per["FailingExporter"]["failed"] == 5
        assert "ConnectionError: collector unreachable" in per["FailingExporter"]["last_error"]
        assert per["InMemorySpanExporter"]["exported"] == 5

    def test_export_returning_failure_is_counted(self) -> None:
        """An exporter that returns FAILURE has its spans counted as failed."""

        class Refusing(InMemorySpanExporter):
            def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
                return SpanExportResult.FAILURE

        tracer = actiontrace.configure(span_exporters=[Refusing()])
        record_flow()
        assert tracer.flush(timeout=30)
        wait_for(lambda: tracer.stats()["span_export_failed"] == 5)
        assert "returned FAILURE" in tracer.stats()["span_exporters"][0]["last_error"]

    def test_hanging_exporter_never_delays_storage(self, hanging: HangingExporter) -> None:
        """While one exporter hangs in export, flows are stored and the other exporter goes on."""
        good = InMemorySpanExporter()
        tracer = actiontrace.configure(span_exporters=[hanging, good])
        record_flow()
        assert hanging.entered.wait(30)
        tokens = [record_flow() for _ in range(5)]
        assert tracer.flush(timeout=30)  # storage is not held up by the hung export
        assert all(len(tracer.get_trace(t).actions) == 5 for t in tokens)
        wait_for(lambda: len(good.get_finished_spans()) == 30)
        per = {s["exporter"]: s for s in tracer.stats()["span_exporters"]}
        assert per["HangingExporter"]["busy_s"] is not None
        assert per["HangingExporter"]["queued"] == 25
        assert per["HangingExporter"]["exported"] == 0

    def test_queue_is_bounded_and_drops_are_counted(self, hanging: HangingExporter) -> None:
        """Behind a hung exporter at most span_export_queue actions wait; the oldest are dropped."""
        tracer = actiontrace.configure(span_exporters=[hanging], span_export_queue=10)
        load(0)
        assert hanging.entered.wait(30)
        for i in range(50):
            load(i)
        assert tracer.flush(timeout=30)
        stats = tracer.stats()
        assert stats["span_export_queued"] == 10
        assert stats["span_export_dropped"] == 40
        assert stats["written"] == 51
        hanging.released.set()
        assert tracer.shutdown(timeout=30)
        # The first action (in the hung export) and the ten newest got through.
        names = sorted(s.attributes["actiontrace.inputs"] for s in hanging.exported)
        assert names == sorted(['{"passage_id":0}'] + [f'{{"passage_id":{i}}}' for i in range(40, 50)])

    def test_shutdown_honours_its_timeout(self, hanging: HangingExporter) -> None:
        """shutdown(timeout) returns (False) within about timeout: one exporter hung, one raising."""
        raising = RaisingShutdownExporter()
        tracer = actiontrace.configure(span_exporters=[hanging, raising])
        record_flow()
        assert hanging.entered.wait(30)
        record_flow()
        assert tracer.flush(timeout=30)
        wait_for(lambda: len(raising.get_finished_spans()) == 10)
        result: list[bool] = []
        done = threading.Thread(target=lambda: result.append(tracer.shutdown(timeout=2.0)))
        done.start()
        done.join(20)  # generous, yet far short of the 30 s the exporter would sleep
        assert not done.is_alive(), "shutdown waited for the hung exporter"
        assert result == [False]
        assert not hanging.released.is_set()  # it really was still hung
        per = {s["exporter"]: s for s in tracer.stats()["span_exporters"]}
        assert "shutdown: RuntimeError: shutdown exploded" in per["RaisingShutdownExporter"]["last_error"]

    def test_replayed_journal_is_exported(self, tmp_path: Path) -> None:
        """Parts that waited in the overflow journal (a read-only database) are exported once stored."""
        url = f"sqlite:///{tmp_path}/t.db"
        actiontrace.configure(url=url).shutdown()  # create the schema
        ro = f"sqlite:///file:{tmp_path}/t.db?mode=ro&uri=true"
        tracer = actiontrace.configure(url=ro, journal=tmp_path / "j")
        tokens = {record_flow().int for _ in range(3)}
        assert tracer.shutdown(timeout=5) is False
        assert tracer.stats()["journaled"] == 15
        exporter = InMemorySpanExporter()
        tracer = actiontrace.configure(url=url, journal=tmp_path / "j", span_exporters=[exporter])
        assert tracer.flush(30)  # starts the writer, which replays the journal
        replayed = lambda: [s for s in exporter.get_finished_spans() if s.context.trace_id in tokens]
        wait_for(lambda: len(replayed()) == 15)
        assert {s.context.trace_id for s in replayed()} == tokens
        assert tracer.stats()["replayed"] == 15

    def test_rejects_what_is_not_an_exporter(self) -> None:
        """span_exporters takes SpanExporter objects: anything else is a ConfigurationError."""
        with pytest.raises(actiontrace.ConfigurationError, match="SpanExporter"):
            actiontrace.configure(span_exporters=[object()])
        with pytest.raises(actiontrace.ConfigurationError, match="span_export_queue"):
            actiontrace.configure(span_exporters=[InMemorySpanExporter()], span_export_queue=0)

    def test_exported_at_exit_without_shutdown(self, tmp_path: Path) -> None:
        """A program that just exits has its last flows stored and exported."""
        out = tmp_path / "spans.txt"
        script = textwrap.dedent(f"""
            from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
            import actiontrace

            class FileExporter(SpanExporter):
                def export(self, spans):
                    with open({str(out)!r}, "a") as f:
                        f.writelines(s.name + "\\n" for s in spans)
                    return SpanExportResult.SUCCESS

            actiontrace.configure("sqlite:///{tmp_path}/t.db", span_exporters=[FileExporter()])

            @actiontrace.action(concept="exit::Job")
            def run(n):
                return n

            for i in range(3):
                run(i)
        """)
        res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             timeout=120, check=False)
        assert res.returncode == 0, res.stderr
        assert out.read_text().splitlines() == ["exit::Job::run"] * 3


class OtlpReceiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1 that decodes what it gets with opentelemetry-proto."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                assert self.headers["Content-Type"] == "application/x-protobuf"
                msg = trace_service_pb2.ExportTraceServiceRequest()
                msg.ParseFromString(body)
                receiver.requests.append(msg)
                receiver.paths.append(self.path)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}/v1/traces"

    def spans(self) -> list[Any]:
        return [span for req in self.requests for rs in req.resource_spans
                for ss in rs.scope_spans for span in ss.spans]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in kvs}


class TestOtlpHttp:
    def test_real_exporter_to_a_real_receiver(self, receiver: OtlpReceiver) -> None:
        """Through OTLPSpanExporter over HTTP, the receiver decodes our ids, parents, links and status."""
        tracer = actiontrace.configure(span_exporters=[OTLPSpanExporter(endpoint=receiver.endpoint)])
        token = record_flow()
        trace = tracer.get_trace(token)
        assert tracer.shutdown(timeout=30)
        assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
        (rs,) = {id(rs): rs for req in receiver.requests for rs in req.resource_spans}.values()
        assert attrs(rs.resource.attributes)["service.name"] == trace.module
        spans = {s.name: s for s in receiver.spans()}
        assert len(spans) == 5
        ids = {f"{r.concept_uri}::{r.action}": r.id for r in trace.actions.values()}
        for name, span in spans.items():
            assert span.trace_id == token.bytes
            assert span.span_id == (ids[name].int & LOW64).to_bytes(8, "big")
        root = spans["otel::Web::request"]
        assert root.parent_span_id == b""
        assert spans["otel::Auth::login"].parent_span_id == root.span_id
        (link,) = spans["otel::Player::play_passage"].links
        assert link.trace_id == token.bytes
        assert link.span_id == spans["otel::Auth::login"].span_id
        assert attrs(link.attributes) == {"actiontrace.synchronization": "OnAuthSuccess"}
        failed = spans["otel::Player::fail"]
        assert failed.status.code == failed.status.STATUS_CODE_ERROR
        assert failed.status.message == "no such passage"
        assert spans["otel::Auth::login"].status.code == failed.status.STATUS_CODE_OK
        login_attrs = attrs(spans["otel::Auth::login"].attributes)
        assert login_attrs["actiontrace.inputs"] == '{"user":"bob","password":"[REDACTED]"}'
        rec = trace.actions[ids["otel::Player::load"]]
        assert spans["otel::Player::load"].start_time_unix_nano == rec.timestamp * 1000
        assert spans["otel::Player::load"].end_time_unix_nano == (rec.timestamp + rec.duration_us) * 1000

    def test_receiver_refusing_is_counted(self) -> None:
        """A receiver answering 400 makes the export fail: counted, storage unaffected."""
        refusing = OtlpReceiver(status=400)
        try:
            tracer = actiontrace.configure(
                span_exporters=[OTLPSpanExporter(endpoint=refusing.endpoint, timeout=5)])
            token = record_flow()
            assert tracer.flush(timeout=30)
            assert len(tracer.get_trace(token).actions) == 5
            wait_for(lambda: tracer.stats()["span_export_failed"] == 5)
            assert refusing.requests
        finally:
            refusing.close()
