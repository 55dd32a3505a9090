"""Render a trace: an ASCII tree, Graphviz DOT, Mermaid and JSON (docs/reference.md)."""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

import msgspec

from actiontrace.recording._capture import capture_value
from actiontrace.recording._redact import Redactor

if TYPE_CHECKING:
    from actiontrace._model import ActionRecord, ActionTrace, FlowSummary, LogEvent

__all__ = [
    "causal_tree",
    "causes",
    "log_line",
    "missing_causes",
    "root_label",
    "short_name",
    "to_ascii",
    "to_dot",
    "to_json",
    "to_mermaid",
]

DETAIL_WIDTH = 120
# What no text view writes raw: C0 and C1 controls (tab and newline aside: each view
# handles newline), DEL, lone surrogates, and the Unicode line and paragraph separators,
# at which str.splitlines, JavaScript and editors end a line (U+0085, U+2028 and U+2029
# went through, and a Mermaid or DOT statement came out cut in two).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# A line break in a label, in any convention: a diagram shows each as one line break.
_LINE_BREAK = re.compile(r"\r\n|[\r\x85\u2028\u2029]")
# What JSON leaves raw but _CONTROL names: written as JSON escapes in values.
_JSON_RAW = re.compile(r"[\x7f-\x9f\u2028\u2029]")


def short_name(rec: ActionRecord) -> str:
    """``[Concept::action]`` with the last segment of the concept URI."""
    concept = rec.concept_uri.rpartition("::")[2] or rec.concept_uri
    return f"{concept}::{rec.action}"


def _one_line(text: str) -> str:
    """``text`` for one line of a text view: a line break (any convention) or a control
    character as U+FFFD."""
    return _CONTROL.sub("\ufffd", _LINE_BREAK.sub("\n", text)).replace("\n", "\ufffd")


def _json_escape(text: str) -> str:
    """JSON text with what ``_JSON_RAW`` names as ``\\uXXXX`` escapes: the same JSON."""
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _compact(value: Any, width: int = DETAIL_WIDTH) -> str:
    try:
        text = msgspec.json.encode(value).decode()
    except Exception:  # noqa: BLE001 - a hand-built trace may hold what storage never would
        text = capture_value(value, Redactor(())).decode()
    text = _json_escape(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def log_line(event: LogEvent, width: int = DETAIL_WIDTH) -> str:
    """``[level] event key=value ...`` with JSON values, cut to ``width`` characters."""
    text = f"[{event.level}] {_one_line(event.event)}"
    if isinstance(event.fields, dict):
        pairs = " ".join(f"{k}={_compact(v, width)}" for k, v in event.fields.items())
        text = f"{text} {pairs}" if pairs else text
    elif event.fields is not None:
        text = f"{text} {_compact(event.fields, width)}"
    return text if len(text) <= width else text[: width - 1] + "…"


def causes(trace: ActionTrace) -> dict[uuid.UUID, tuple[uuid.UUID | None, str | None]]:
    """Each action's cause inside the trace: ``(from_action, synchronization)``.

    The cause is the provenance edge into the action (the earliest, if several), else its
    parent; ``(None, None)`` for actions whose cause is outside the trace.
    """
    incoming: dict[uuid.UUID, tuple[int, uuid.UUID, str]] = {}
    for e in trace.provenance_edges:
        if e.from_action in trace.actions:
            best = incoming.get(e.to_action)
            if best is None or e.created_at < best[0]:
                incoming[e.to_action] = (e.created_at, e.from_action, e.synchronization)
    out: dict[uuid.UUID, tuple[uuid.UUID | None, str | None]] = {}
    for aid, rec in trace.actions.items():
        if aid in incoming:
            out[aid] = (incoming[aid][1], incoming[aid][2])
        elif rec.parent_id in trace.actions:
            out[aid] = (rec.parent_id, None)
        else:
            out[aid] = (None, None)
    return out


NOT_YET = "not (yet) in the store"
# Why a cause can be missing: continue_flow accepts any trigger and token, because the
# other process's part may arrive later (docs/queries.md#causes-not-yet-stored).
_LATER = "its part may not have arrived yet, or it was never recorded"


def root_label(summary: FlowSummary) -> str:
    """A flow's root as ``<concept_uri>::<action>``, or a note when its part is not stored."""
    if summary.concept_uri is None or summary.action is None:
        return f"(root {NOT_YET})"
    return f"{summary.concept_uri}::{summary.action}"


def missing_causes(trace: ActionTrace, chain: list[ActionRecord] | None = None) -> list[str]:
    """Sentences naming what the store lacks of ``trace`` (or of a causal chain in it).

    Without ``chain``: the flow's root, and every trigger an edge comes from. With a chain
    (``get_causal_chain``, root first): why it starts where it does, when its first
    action is not the flow's root.
    """
    stored = trace.actions
    root_missing = trace.root_action_id not in stored
    notes: list[str] = []
    if chain is None:
        if root_missing:
            notes.append(f"the root of flow {trace.flow_token} is {NOT_YET} ({_LATER})")
        seen = set()
        for e in trace.provenance_edges:
            if e.from_action not in stored and e.from_action not in seen:
                seen.add(e.from_action)
                effect = stored.get(e.to_action)
                of = f" of {short_name(effect)}" if effect is not None else ""
                notes.append(f"trigger {e.from_action}{of} (via {e.synchronization}) is "
                             f"{NOT_YET} ({_LATER})")
        return notes
    if not chain:
        return notes
    first = chain[0]
    if first.id == trace.root_action_id:
        return notes
    incoming = sorted((e for e in trace.provenance_edges if e.to_action == first.id),
                      key=lambda e: e.created_at)
    if incoming and incoming[0].from_action not in stored:
        e = incoming[0]
        notes.append(f"{short_name(first)} was triggered (via {e.synchronization}) by "
                     f"{e.from_action}, which is {NOT_YET} ({_LATER})")
    elif first.parent_id is not None and first.parent_id not in stored:
        notes.append(f"the parent {first.parent_id} of {short_name(first)} is {NOT_YET} "
                     f"({_LATER})")
    elif root_missing:
        notes.append(f"the root of flow {trace.flow_token} is {NOT_YET}, so the chain starts "
                     f"at {short_name(first)} ({_LATER})")
    return notes


def causal_tree(
    trace: ActionTrace,
) -> tuple[dict[uuid.UUID, tuple[uuid.UUID | None, str | None]], dict[uuid.UUID | None, list[uuid.UUID]]]:
    """``(causes(trace), children)``: each action's children in recording order.

    ``children[None]`` are the roots (actions whose cause is outside the trace), the
    flow's root first.
    """
    cause = causes(trace)
    children: dict[uuid.UUID | None, list[uuid.UUID]] = {}
    for aid in sorted(trace.actions, key=lambda a: (trace.actions[a].timestamp, a.int)):
        children.setdefault(cause[aid][0], []).append(aid)
    roots = children.setdefault(None, [])
    if trace.root_action_id in roots:  # the flow's root first
        roots.remove(trace.root_action_id)
        roots.insert(0, trace.root_action_id)
    return cause, children


def to_ascii(trace: ActionTrace) -> str:
    """The causal tree: children under the action that caused them, edges labelled."""
    cause, children = causal_tree(trace)
    roots = children[None]
    lines: list[str] = []
    logs: dict[uuid.UUID | None, list[LogEvent]] = {}
    for event in trace.logs:
        key = event.action_id if event.action_id in trace.actions else None
        logs.setdefault(key, []).append(event)

    def details(rec: ActionRecord, prefix: str) -> None:
        lines.append(f"{prefix}└─ Input: {_compact(rec.inputs)}")
        if rec.status == "error":
            lines.append(f"{prefix}└─ Error: {_compact(rec.outputs)}")
        elif rec.status == "running":
            lines.append(f"{prefix}└─ (running)")
        elif rec.outputs is not None:
            lines.append(f"{prefix}└─ Output: {_compact(rec.outputs)}")
        for event in logs.get(rec.id, ()):
            lines.append(f"{prefix}└─ Log: {log_line(event)}")

    def status(rec: ActionRecord) -> str:
        mark = " ✗" if rec.status == "error" else ""
        return f"{mark} ({rec.duration_us} µs)" if rec.duration_us is not None else mark

    def walk(aid: uuid.UUID, prefix: str, seen: set[uuid.UUID]) -> None:
        kids = children.get(aid, [])
        for i, kid in enumerate(kids):
            if kid in seen:
                continue
            seen.add(kid)
            last = i == len(kids) - 1
            rec = trace.actions[kid]
            sync = cause[kid][1]
            arrow = f"──({_one_line(sync)})──> " if sync else "──> "
            lines.append(f"{prefix}{'└' if last else '├'}{arrow}[{_one_line(short_name(rec))}]"
                         f"{status(rec)}")
            inner = prefix + ("    " if last else "│   ")
            details(rec, inner + " " * (len(arrow) - 1))
            walk(kid, inner, seen)

    seen: set[uuid.UUID] = set()
    for n, root in enumerate(roots):
        rec = trace.actions[root]
        seen.add(root)
        head = f"[{_one_line(short_name(rec))}]{status(rec)}"
        lines.append(head + (f" flow_token={trace.flow_token}" if n == 0 else ""))
        details(rec, "│   " if children.get(root) else "    ")
        walk(root, "", seen)
    if not trace.actions:
        lines.append(f"(empty flow {trace.flow_token})")
    for event in logs.get(None, ()):  # logged outside any action of this trace
        lines.append(f"Log: {log_line(event)}")
    return "\n".join(lines) + "\n"


def _dot_str(text: str) -> str:
    text = _CONTROL.sub("\ufffd", _LINE_BREAK.sub("\n", text))
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(trace: ActionTrace, calls: bool = False) -> str:
    """A Graphviz digraph: one node per action (id = its UUID), one edge per provenance edge.

    With ``calls``, the call nesting too: a dashed grey edge (empty arrowhead, no label)
    from each action's caller (its ``parent_id``) to it, beside the provenance edge when
    it has one, so the call tree and the causes read together. Every label is escaped,
    so the output is valid DOT whatever the values contain.
    """
    out = ["digraph ActionTrace {", "    rankdir=LR;", '    node [shape=box, fontname="monospace"];']
    for aid, rec in trace.actions.items():
        label = "\n".join([
            f"{rec.concept_uri}::{rec.action}",
            f"Inputs: {_compact(rec.inputs, 80)}",
            f"{'Error' if rec.status == 'error' else 'Outputs'}: {_compact(rec.outputs, 80)}",
        ])
        style = ', color="red"' if rec.status == "error" else ""
        out.append(f"    {_dot_str(str(aid))} [label={_dot_str(label)}{style}];")
    for e in trace.provenance_edges:
        out.append(
            f"    {_dot_str(str(e.from_action))} -> {_dot_str(str(e.to_action))} "
            f"[label={_dot_str(e.synchronization)}];"
        )
    if calls:
        for aid, rec in trace.actions.items():
            if rec.parent_id in trace.actions:
                out.append(
                    f"    {_dot_str(str(rec.parent_id))} -> {_dot_str(str(aid))} "
                    '[style=dashed, color="gray50", arrowhead=empty];'
                )
    out.append("}")
    return "\n".join(out) + "\n"


_MERMAID_ESCAPES = {'"': "#quot;", "<": "#lt;", ">": "#gt;", "#": "#35;", "`": "#96;",
                    "&": "#amp;", "|": "#124;", "\n": "<br/>"}
_MERMAID_RE = re.compile("|".join(re.escape(k) for k in _MERMAID_ESCAPES))


def _mermaid_str(text: str) -> str:
    text = _CONTROL.sub("\ufffd", _LINE_BREAK.sub("\n", text))
    return '"' + _MERMAID_RE.sub(lambda m: _MERMAID_ESCAPES[m.group()], text) + '"'


def to_mermaid(trace: ActionTrace) -> str:
    """A Mermaid flowchart: provenance edges labelled, nested calls dotted."""
    out = ["flowchart TD"]

    def node(aid: uuid.UUID) -> str:
        return f"a{aid.hex}"

    for aid, rec in trace.actions.items():
        label = f"{short_name(rec)}\n{_compact(rec.inputs, 60)}"
        out.append(f"    {node(aid)}[{_mermaid_str(label)}]")
        if rec.status == "error":
            out.append(f"    style {node(aid)} stroke:#c00")
    for e in trace.provenance_edges:
        out.append(f"    {node(e.from_action)} -->|{_mermaid_str(e.synchronization)}| {node(e.to_action)}")
    with_edge = {e.to_action for e in trace.provenance_edges}
    for aid, rec in trace.actions.items():
        if aid not in with_edge and rec.parent_id in trace.actions:
            out.append(f"    {node(rec.parent_id)} -.-> {node(aid)}")
    return "\n".join(out) + "\n"


def to_json(trace: ActionTrace) -> str:
    """The trace as JSON (UUIDs as strings, the actions keyed by id)."""
    return _json_escape(msgspec.json.encode(trace).decode())
