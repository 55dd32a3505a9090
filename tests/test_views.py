"""Views: the ASCII tree, DOT (checked by Graphviz), Mermaid and JSON."""

from __future__ import annotations

import contextlib
import re
import subprocess
import uuid

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import actiontrace
from actiontrace import (
    ActionRecord,
    ActionTrace,
    LogEvent,
    ProvenanceEdge,
    action,
    flow,
    synchronization,
)


@pytest.fixture
def trace() -> ActionTrace:
    tracer = actiontrace.configure()

    @action(concept="app::Auth")
    def validate(token: str) -> dict[str, object]:
        return {"valid": True, "user_id": 42}

    @action(concept="app::Player")
    def play(passage_id: int) -> dict[str, int]:
        return {"started_at": 1699564800}

    @action(concept="app::Player")
    def load(passage_id: int) -> None:
        raise OSError("no such file")

    @synchronization("OnWebRequest")
    def on_web() -> None:
        validate("t")

    @synchronization("OnAuthSuccess")
    def on_auth() -> None:
        play(123)
        with contextlib.suppress(OSError):
            load(123)

    with flow("app::Web::request", inputs={"path": "/play"}) as token:
        on_web()
        on_auth()
    return tracer.get_trace(token)


def make_trace(label: str) -> ActionTrace:
    """A two-action trace whose every text field is ``label``."""
    token, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    recs = {
        a: ActionRecord(a, label, label, {label: label}, label, 1, token, None, "ok", 1),
        b: ActionRecord(b, label, label, [label], {"error": label}, 2, token, a, "error", 1),
    }
    return ActionTrace(token, a, recs, [ProvenanceEdge(a, b, label, 2)], 1, label)


# Every character at which str.splitlines ends a line, and C1 controls (U+0085 is both).
LINE_ENDS = ["\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
RAW_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def one_statement_per_line(text: str) -> list[str]:
    """``text``'s lines; fails unless only its newlines end lines, whoever splits them."""
    assert RAW_CONTROLS.search(text) is None, repr(text)
    lines = text.splitlines()
    assert lines == text.rstrip("\n").split("\n")
    return lines


class TestAscii:
    def test_tree_shape(self, trace: ActionTrace) -> None:
        """Each action as [Concept::action] under its cause, edges labelled, values below."""
        text = trace.to_ascii()
        lines = text.splitlines()
        assert lines[0].startswith("[Web::request]") and f"flow_token={trace.flow_token}" in lines[0]
        assert any("──(OnWebRequest)──> [Auth::validate]" in line for line in lines)
        assert any("──(OnAuthSuccess)──> [Player::play]" in line for line in lines)
        assert any("──(OnAuthSuccess)──> [Player::load] ✗" in line for line in lines)
        assert '└─ Input: {"token":"[REDACTED]"}' in text
        assert '└─ Output: {"valid":true,"user_id":42}' in text
        assert '└─ Error: {"error":"no such file","error_type":"OSError"}' in text
        # play is caused by validate (the most recent completed action): nested under it.
        validate_line = next(i for i, line in enumerate(lines) if "[Auth::validate]" in line)
        play_line = next(i for i, line in enumerate(lines) if "[Player::play]" in line)
        indent = lambda s: len(s) - len(s.lstrip(" │├└"))
        assert play_line > validate_line and indent(lines[play_line]) > indent(lines[validate_line])

    @pytest.mark.parametrize("sep", [*LINE_ENDS, "\x9b", "\x7f"])
    def test_values_stay_on_their_line(self, sep: str) -> None:
        """A line separator or control in a value is a JSON escape: one detail, one line."""
        token, a = uuid.uuid4(), uuid.uuid4()
        rec = ActionRecord(a, "app::C", "act", {"k": f"x{sep}y"}, [f"x{sep}y"], 1, token,
                           None, "ok", 1)
        text = ActionTrace(token, a, {a: rec}, [], 1, "").to_ascii()
        lines = one_statement_per_line(text)
        assert len(lines) == 3  # the action, its inputs, its outputs
        escaped = msgspec.json.encode(f"x{sep}y").decode()
        escaped = re.sub(r"[\x7f-\x9f\u2028\u2029]", lambda m: f"\\u{ord(m.group()):04x}", escaped)
        assert lines[1].endswith(f'Input: {{"k":{escaped}}}')
        assert msgspec.json.decode(lines[1].split("Input: ", 1)[1]) == {"k": f"x{sep}y"}

    @pytest.mark.parametrize("sep", [*LINE_ENDS, "\n", "\x9b"])
    def test_names_stay_on_their_line(self, sep: str) -> None:
        """A line separator or control in a name, a synchronization or a log event is
        U+FFFD in the tree: each action and log event keeps its one line."""
        label = f"x{sep}y"
        trace = make_trace(label)
        trace.logs = [LogEvent(uuid.uuid4(), trace.flow_token, trace.root_action_id, 1, "info",
                               label, {})]
        lines = one_statement_per_line(trace.to_ascii())
        assert sum("[x\ufffdy::x\ufffdy]" in line for line in lines) == 2
        assert sum("──(x\ufffdy)──>" in line for line in lines) == 1
        assert sum(line.endswith("Log: [info] x\ufffdy") for line in lines) == 1

    def test_every_action_appears_once(self, trace: ActionTrace) -> None:
        """No action is lost or repeated in the tree."""
        text = trace.to_ascii()
        for rec in trace.actions.values():
            name = f"[{rec.concept_uri.rpartition('::')[2]}::{rec.action}]"
            assert text.count(name) == 1


class TestDot:
    def test_nodes_and_edges(self, trace: ActionTrace) -> None:
        """One node per action (its UUID), one edge per provenance edge."""
        dot = trace.to_dot()
        assert dot.startswith("digraph ActionTrace {")
        node_lines = [line for line in dot.splitlines() if line.startswith('    "') and " -> " not in line]
        assert sorted(line.split('"')[1] for line in node_lines) == sorted(str(a) for a in trace.actions)
        assert dot.count(" -> ") == len(trace.provenance_edges) == 3
        for e in trace.provenance_edges:
            assert f'"{e.from_action}" -> "{e.to_action}" [label="{e.synchronization}"]' in dot

    def test_call_nesting(self, trace: ActionTrace) -> None:
        """calls=True adds one dashed, unlabelled edge per nested call; Graphviz draws all."""
        dot = trace.to_dot(calls=True)
        nested = [r for r in trace.actions.values() if r.parent_id in trace.actions]
        assert dot.count("style=dashed") == len(nested) > 0
        assert dot.count(" -> ") == len(trace.provenance_edges) + len(nested)
        out = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True)
        assert out.returncode == 0 and out.stdout.count(b'class="edge"') == dot.count(" -> ")

    def test_graphviz_accepts_it(self, trace: ActionTrace) -> None:
        """The real dot renders it."""
        out = subprocess.run(["dot", "-Tsvg"], input=trace.to_dot().encode(), capture_output=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count(b'class="node"') == len(trace.actions)

    @pytest.mark.parametrize(
        "label",
        ['quote " and \\ backslash', "new\nline\r\n", "}; digraph x { a -> b", "<html>&amp;",
         "\\N \\G \\l \\", "nul\x00ctrl\x01\x1b[31m", "emoji 🎵 ünïcödé", "lone \ud800 surrogate",
         "'single' `tick`", "", "nel\x85 ls\u2028 ps\u2029 c1\x9b"],
    )
    def test_hostile_labels(self, label: str) -> None:
        """Labels that could break DOT syntax are escaped: dot still parses one graph."""
        trace = make_trace(label)
        one_statement_per_line(trace.to_dot())
        out = subprocess.run(["dot", "-Tsvg"], input=trace.to_dot().encode("utf-8", "replace"),
                             capture_output=True)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        assert out.stdout.count(b'class="node"') == 2
        assert out.stdout.count(b'class="edge"') == 1

    @given(label=st.text(max_size=40))
    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    def test_arbitrary_labels(self, label: str) -> None:
        """Any text in any field: dot renders exactly two nodes and one edge."""
        dot = make_trace(label).to_dot()
        out = subprocess.run(["dot", "-Tsvg"], input=dot.encode("utf-8", "replace"), capture_output=True)
        assert out.returncode == 0, out.stderr.decode(errors="replace")
        assert out.stdout.count(b'class="node"') == 2


class TestMermaidAndJson:
    def test_mermaid(self, trace: ActionTrace) -> None:
        """A flowchart with a node per action and labelled provenance edges."""
        text = trace.to_mermaid()
        assert text.startswith("flowchart TD")
        assert text.count('-->|"OnAuthSuccess"|') == 2
        for aid in trace.actions:
            assert f"a{aid.hex}[" in text

    def test_mermaid_escapes_labels(self) -> None:
        """Quotes, brackets and pipes in labels cannot end the label early."""
        text = make_trace('a"b]c|d<e>\nf').to_mermaid()
        for line in text.splitlines()[1:]:
            if "[" in line:
                body = line.split("[", 1)[1]
                assert body.startswith('"') and body.rstrip().endswith('"]')
                assert '"' not in body[1:-2]

    @pytest.mark.parametrize("sep", [*LINE_ENDS, "\x9b", "\x00", "\x7f"])
    def test_mermaid_escapes_line_separators_and_controls(self, sep: str) -> None:
        """No line separator or control reaches the output raw: a line break in a name or
        sync shows as <br/>, any other control as U+FFFD, and each statement keeps its line."""
        token, a, b = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        label = f"x{sep}y"
        recs = {
            a: ActionRecord(a, "app::C", label, {"k": label}, None, 1, token, None, "ok", 1),
            b: ActionRecord(b, "app::D", "b", [label], None, 2, token, a, "ok", 1),
        }
        trace = ActionTrace(token, a, recs, [ProvenanceEdge(a, b, label, 2)], 1, "")
        lines = one_statement_per_line(trace.to_mermaid())
        assert lines[0] == "flowchart TD" and len(lines) == 4  # two nodes, one edge
        shown = "x<br/>y" if sep in ("\r", "\r\n", "\x85", "\u2028", "\u2029") else "x\ufffdy"
        assert lines[1].startswith(f'    a{a.hex}["C::{shown}<br/>')
        assert lines[3] == f'    a{a.hex} -->|"{shown}"| a{b.hex}'

    def test_json_round_trip(self, trace: ActionTrace) -> None:
        """to_json decodes back to an equal ActionTrace."""
        assert msgspec.json.decode(trace.to_json(), type=ActionTrace) == trace

    def test_json_escapes_line_separators(self) -> None:
        """U+0085, U+2028, U+2029 and DEL are JSON escapes: one line, the same trace back."""
        trace = make_trace("a\x85b\u2028c\u2029d\x7fe\x9bf")
        text = trace.to_json()
        assert len(one_statement_per_line(text)) == 1
        assert msgspec.json.decode(text, type=ActionTrace) == trace


@action(concept="shop::Payment")
def charge(amount: int) -> int:
    return amount


class TestMissingCauses:
    def test_unknown_trigger_and_token_are_named(self, storage: object) -> None:
        """A trigger or token the store never saw: accepted, and show/why say so."""
        from actiontrace._views import missing_causes, root_label

        tracer = actiontrace.configure(storage=storage)  # type: ignore[arg-type]
        unknown_flow, unknown_trigger = uuid.uuid4(), uuid.uuid4()
        with actiontrace.continue_flow(unknown_flow, trigger=unknown_trigger,
                                       synchronization="Remote"):
            charge(7)
        assert tracer.flush(10)
        trace = storage.get_trace(unknown_flow)  # type: ignore[attr-defined]
        assert trace.root_action_id not in trace.actions
        notes = missing_causes(trace)
        assert notes == [
            f"the root of flow {unknown_flow} is not (yet) in the store (its part may not "
            "have arrived yet, or it was never recorded)",
            f"trigger {unknown_trigger} of Payment::charge (via Remote) is not (yet) in the "
            "store (its part may not have arrived yet, or it was never recorded)",
        ]
        (rec,) = trace.actions.values()
        chain = storage.get_causal_chain(rec.id)  # type: ignore[attr-defined]
        (why,) = missing_causes(trace, chain)
        assert why.startswith(f"Payment::charge was triggered (via Remote) by {unknown_trigger}")
        (summary,) = storage.list_flows()  # type: ignore[attr-defined]
        assert root_label(summary) == "(root not (yet) in the store)"

    def test_notes_go_once_the_root_part_arrives(self, storage: object) -> None:
        """A continuation stored before its root part: noted, then complete, no note."""
        from actiontrace._views import missing_causes, root_label

        tracer = actiontrace.configure(storage=storage)  # type: ignore[arg-type]
        with flow("shop::Web::checkout") as token:
            root = tracer.get_trace(token).root_action_id  # the live part, not stored yet
            with actiontrace.continue_flow(token, trigger=root, synchronization="Pay"):
                charge(3)
            assert tracer.flush(10)
            early = storage.get_trace(token)  # type: ignore[attr-defined]
            (rec,) = early.actions.values()
            chain = storage.get_causal_chain(rec.id)  # type: ignore[attr-defined]
            assert "is not (yet) in the store" in missing_causes(early, chain)[0]
            assert len(missing_causes(early)) == 2  # the root, and the trigger (the root)
        assert tracer.flush(10)
        trace = storage.get_trace(token)  # type: ignore[attr-defined]
        assert trace.root_action_id in trace.actions
        chain = storage.get_causal_chain(rec.id)  # type: ignore[attr-defined]
        assert [r.action for r in chain] == ["checkout", "charge"]
        assert missing_causes(trace) == [] and missing_causes(trace, chain) == []
        (summary,) = storage.list_flows()  # type: ignore[attr-defined]
        assert root_label(summary) == "shop::Web::checkout"
