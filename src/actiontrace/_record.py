"""Records in flight: a flow's part as the hot path builds it, and its materialization.

A ``FlowPart`` is what one process records of one flow between the flow's start (or a
``continue_flow``) and its end. The hot path appends plain lists to it, because building
msgspec Structs and ``uuid.UUID`` objects per call would cost more than the rest of the
recording together; ``to_trace`` builds the public model later, off the caller's thread.

Layout of a raw record (a list, mutated once when the call completes)::

    [spec, id, parent_id, timestamp_us, duration_us, status, inputs_json, outputs_json]

``spec`` is any object with ``concept_uri`` and ``name`` attributes (the decorated
action's ``ActionSpec``, read when the record is stored, so ``@concept`` applied after
``@action`` still names it); ids are UUIDv7 ints; inputs and outputs are JSON bytes.
Raw edges are ``(from_id, to_id, synchronization, created_at_us)`` tuples.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

from actiontrace._capture import NULL, decode
from actiontrace._ids import as_uuid
from actiontrace._model import ActionRecord, ActionTrace, ProvenanceEdge

__all__ = ["ActionRow", "FlowPart", "Named", "to_trace"]

RUNNING, OK, ERROR = "running", "ok", "error"


class Named(NamedTuple):
    """A spec for records made without a decorator (flow roots, manual records)."""

    concept_uri: str
    name: str


def split_root(root: str) -> Named:
    """``"app::Web::handle"`` -> concept ``"app::Web"``, action ``"handle"``."""
    concept, sep, name = root.rpartition("::")
    return Named(concept, name) if sep else Named(root, root)


class ActionRow(NamedTuple):
    """One action in storage form (what SQL storages insert)."""

    id: int
    flow_token: int
    parent_id: int | None
    concept_uri: str
    action: str
    timestamp: int
    duration_us: int | None
    status: str
    inputs: bytes
    outputs: bytes


class FlowPart:
    """What this process recorded of one flow; handed to the buffer when it ends."""

    __slots__ = ("token", "root_id", "created_at", "module", "records", "edges", "sink")

    def __init__(self, token: int, root_id: int | None, created_at: int, module: str) -> None:
        self.token = token
        self.root_id = root_id
        self.created_at = created_at
        self.module = module
        self.records: list[list[Any]] = []
        self.edges: list[tuple[int, int, str, int]] = []
        self.sink: Any = None  # the Recorder that closes it (not part of the stored form)

    def rows(self) -> Iterator[ActionRow]:
        """Yield the part's actions in storage form, in recording order."""
        token = self.token
        for spec, aid, parent, ts, dur, status, inp, out in self.records:
            yield ActionRow(
                aid, token, parent, spec.concept_uri, spec.name, ts, dur, status,
                inp, out if out is not None else NULL,
            )

    def snapshot(self) -> FlowPart:
        """A copy safe to read while the flow goes on recording (for partial traces)."""
        copy = FlowPart(self.token, self.root_id, self.created_at, self.module)
        copy.records = [list(r) for r in list(self.records)]
        copy.edges = list(self.edges)
        return copy


def record_from_row(row: ActionRow, uuids: dict[int, uuid.UUID] | None = None) -> ActionRecord:
    """Build the public ``ActionRecord`` for a row."""

    def u(i: int) -> uuid.UUID:
        if uuids is None:
            return as_uuid(i)
        got = uuids.get(i)
        if got is None:
            got = uuids[i] = as_uuid(i)
        return got

    return ActionRecord(
        id=u(row.id),
        concept_uri=row.concept_uri,
        action=row.action,
        inputs=decode(row.inputs),
        outputs=decode(row.outputs),
        timestamp=row.timestamp,
        flow_token=u(row.flow_token),
        parent_id=None if row.parent_id is None else u(row.parent_id),
        status=row.status,  # type: ignore[arg-type]
        duration_us=row.duration_us,
    )


def to_trace(part: FlowPart) -> ActionTrace:
    """Build the public ``ActionTrace`` of one part."""
    uuids: dict[int, uuid.UUID] = {}
    actions = {}
    for row in part.rows():
        rec = record_from_row(row, uuids)
        actions[rec.id] = rec
    edges = [
        ProvenanceEdge(
            uuids.get(f) or as_uuid(f), uuids.get(t) or as_uuid(t), sync, created
        )
        for f, t, sync, created in part.edges
    ]
    root = part.root_id
    if root is None:  # a continue_flow part: the root lives in another process
        root = part.records[0][1] if part.records else part.token
    return ActionTrace(
        flow_token=as_uuid(part.token),
        root_action_id=uuids.get(root) or as_uuid(root),
        actions=actions,
        provenance_edges=edges,
        created_at=part.created_at,
        module=part.module,
    )


def from_trace(trace: ActionTrace) -> FlowPart:
    """Turn a public ``ActionTrace`` back into a part (for ``save_trace``)."""
    from actiontrace._capture import encode

    part = FlowPart(trace.flow_token.int, trace.root_action_id.int, trace.created_at, trace.module)
    for rec in trace.actions.values():
        part.records.append([
            Named(rec.concept_uri, rec.action), rec.id.int,
            None if rec.parent_id is None else rec.parent_id.int, rec.timestamp,
            rec.duration_us, rec.status, encode(rec.inputs), encode(rec.outputs),
        ])
    part.records.sort(key=lambda r: (r[3], r[1]))
    part.edges = [
        (e.from_action.int, e.to_action.int, e.synchronization, e.created_at)
        for e in trace.provenance_edges
    ]
    return part
