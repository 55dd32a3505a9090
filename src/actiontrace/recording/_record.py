"""Records in flight: a flow's part as the hot path builds it, and its materialization.

A ``FlowPart`` is what one process records of one flow between the flow's start (or a
``continue_flow``) and its end. The hot path appends plain lists to it and defers every
conversion to ``FlowPart.rows()``, which runs on the writer thread (or when a partial
trace or a reaction's record is asked for): building Structs, UUIDs, microseconds, and
checking encodings for nested secrets and size would cost more than the recording
itself (docs/performance.md).

A raw record is a list whose slots ``_layout`` names (mutated once, when the call
completes; a record that is also a frame is longer, only the first ``RECORD_SLOTS`` are
read here):

* ``SPEC``: any object with ``concept_uri`` and ``name`` (the decorated action's
  ``ActionSpec``, read late, so ``@concept`` applied after ``@action`` still names it).
* ids: either a full UUIDv7 int (flow roots, ids from other processes) or a *local*
  id, a small per-process sequence number below ``2**64`` that ``rows()`` turns into a
  UUIDv7 from the record's own start time and the part's process bits.
* times: ``time.perf_counter_ns()`` values; the part's ``offset`` maps them to the epoch.
* inputs/outputs: JSON bytes as encoded at call time, not yet redacted at depth or cut
  to size (``rows()`` does both, before anything leaves the part).

Raw edges (``edge_log``) are ``(from_id, to_id, synchronization, created_ns)`` tuples, same
id rules; ``FlowPart.edges`` converts them.

Raw log events (``log_events``) are ``(id, action_id, timestamp_us, level, event,
fields_json)`` tuples with full ids (``action_id`` None outside any action), appended
only by a log processor (``actiontrace.contrib.structlog.attach_to_action``), never by
the hot path; ``FlowPart.log_rows`` converts them. They travel with the part, so the
writer stores them in the same transaction as its actions.
"""

from __future__ import annotations

import bisect
import functools
import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Protocol

from actiontrace._model import ActionRecord, ActionTrace, LogEvent, ProvenanceEdge, Status
from actiontrace._state import settings
from actiontrace.recording import _ids
from actiontrace.recording._capture import NULL, SCALARS, decode, finish
from actiontrace.recording._ids import as_uuid
from actiontrace.recording._layout import (
    DURATION,
    ID,
    INPUTS,
    OUTPUTS,
    PARENT,
    RECORD_SLOTS,
    SPEC,
    START,
    STATUS,
    new_record,
)
from actiontrace.recording._redact import Redactor

__all__ = ["ActionRow", "FlowPart", "LogRow", "Named", "Part", "to_trace"]

# What one queued record holds beyond the length of its encoded inputs and outputs: the
# list of 13 slots, its ints, the two bytes objects' headers (tracemalloc over 10,000
# recorded calls: 394 bytes per record, 14 of them value bytes; rounded up).
RECORD_BYTES = 400
LOCAL_LIMIT = 1 << 64  # ids below this are local sequence numbers (see the module doc)


class Named(NamedTuple):
    """A spec for records made without a decorator (flow roots, manual records)."""

    concept_uri: str
    name: str

    @property
    def redactor(self) -> Any:
        return settings.redactor


@functools.lru_cache(maxsize=1024)  # root names repeat: one Named per name
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
    status: Status
    inputs: bytes
    outputs: bytes


class LogRow(NamedTuple):
    """One log event in storage form (what SQL storages insert)."""

    id: int
    flow_token: int
    action_id: int | None
    timestamp: int
    level: str
    event: str
    fields: bytes


Edge = tuple[int, int, str, int]  # (from_id, to_id, synchronization, created_us)


class Part(Protocol):
    """What the writer, the journal and the storages take: a part in storage form.

    ``FlowPart`` (recorded here) and ``_journal.JournalPart`` (read back from disk) are
    the two kinds: they hold records of different shapes, and give the same rows.
    """

    token: int
    root_id: int | None
    created_at: int
    module: str
    sampled: bool
    #: The log events as ``(id, action_id, timestamp_us, level, event, fields_json)``
    #: (full ids; ``log_rows()`` gives them in storage form).
    log_events: list[tuple[int, int | None, int, str, str, bytes]]

    @property
    def n_actions(self) -> int:
        """How many actions the part holds."""

    def rows(self) -> Iterator[ActionRow]:
        """The actions in storage form, in recording order."""

    def sql_rows(self) -> tuple[list[tuple[Any, ...]], dict[int, str]]:
        """The actions as SQL storages bind them, and the hex of their ids."""

    def sql_edges(self, hexes: dict[int, str]) -> list[tuple[str, str, str, int]]:
        """``edges`` with hex ids, ``hexes`` being ``sql_rows()``'s map."""

    @property
    def edges(self) -> list[Edge]:
        """The edges as ``(from_id, to_id, synchronization, created_us)``."""

    def log_rows(self) -> list[LogRow]:
        """The log events in storage form."""


class FlowPart:
    """What this process recorded of one flow; handed to the buffer when it ends."""

    __slots__ = (
        "_idmap",
        "created_at",
        "edge_log",
        "fixed",
        "log_events",
        "module",
        "nbytes",
        "offset",
        "recorder",
        "records",
        "root_id",
        "sampled",
        "token",
        "token_uuid",
    )

    def __init__(self, token: int, root_id: int | None, created_at: int, module: str,
                 recorder: Any = None) -> None:
        self.token = token
        self.root_id = root_id
        self.created_at = created_at  # µs since the epoch
        self.module = module
        self.records: list[list[Any]] = []
        self.edge_log: list[tuple[int, int, str, int]] = []  # raw, as the hot path appends
        # Raw log events (see the module doc); only a log processor appends here.
        self.log_events: list[tuple[int, int | None, int, str, str, bytes]] = []
        self.sampled = True  # configure(sample_rate=...)'s decision for this flow
        self._idmap: tuple[int, dict[int, int]] | None = None  # see _id_map
        self.recorder: Any = recorder  # the Recorder that closes it (not part of the stored form)
        self.nbytes = 0  # what it holds, as the buffer counts it (set when queued)
        # How this process turns perf_counter_ns into epoch time and local ids into UUIDv7.
        self.offset = _ids.EPOCH_OFFSET_NS
        self.fixed = _ids.FIXED_BITS
        # The token's uuid.UUID, once someone built it (flow() does, to return it).
        self.token_uuid: uuid.UUID | None = None

    @property
    def n_actions(self) -> int:
        """How many actions the part holds (running ones included)."""
        return len(self.records)

    def held_bytes(self) -> int:
        """Roughly what the part holds in memory: encoded inputs and outputs, plus
        ``RECORD_BYTES`` per record (the buffer's byte bound counts this).

        Runs when the flow ends, on the application's thread, for every record
        (callgrind, flows of 1,000 calls, writer parked: 9,712 -> 10,511 instructions per
        recorded call with the byte bound, this loop most of it). Values are not cut to size before the writer's ``rows()``,
        so a cheaper estimate would not bound anything.
        """
        n = 0
        i, o = INPUTS, OUTPUTS  # locals: the loop runs per record on the app's thread
        try:
            for rec in self.records:
                n += len(rec[i]) + len(rec[o])
        except TypeError:  # outputs not captured yet (an action still running elsewhere)
            n = sum(len(v) for rec in self.records for v in (rec[i], rec[o]) if v is not None)
        return n + RECORD_BYTES * len(self.records)

    def full_id(self, rec: list[Any]) -> int:
        """The UUIDv7 int of a raw record of this part."""
        aid: int = rec[ID]
        if aid >= LOCAL_LIMIT:
            return aid
        start: int = rec[START]
        return (((start + self.offset) // 1_000_000) << 80) | self.fixed | (aid & _ids.COUNTER_MASK)

    def _id_map(self) -> dict[int, int]:
        # Local id -> UUIDv7 int. Records are only ever appended and their ids and start
        # times never change, so the map is kept until the part grows (rows() and edges
        # both need it: building it twice cost ~11% of a SQLite write).
        n = len(self.records)
        if self._idmap is not None:
            known, full = self._idmap
            if known == n:
                return full
        full = {r[ID]: self.full_id(r) for r in self.records[:n] if r[ID] < LOCAL_LIMIT}
        self._idmap = (n, full)
        return full

    def rows(self) -> Iterator[ActionRow]:
        """Yield the part's actions in storage form, in recording order.

        Local ids become UUIDv7 ints, times become µs, and encodings that may hold a
        secret key or exceed the size limit are redacted and cut here.
        """
        return self._rows(list(self.records), self._id_map())

    def record_of(self, rec: list[Any], parent: list[Any] | None) -> ActionRecord:
        """The public record of one raw record, ``parent`` being its parent's record (or
        frame): what ``record_from_row`` gives for the record's row in ``rows()``.

        For a declared reaction, run after every matching action: it costs the same
        whatever the flow's length. Built in one step rather than as a row first: the
        values are decoded once, and a dict of scalars whose keys are not secret (what
        ``_stored`` would redact and re-encode to the same value) is taken as decoded;
        the flow token's ``uuid.UUID`` is the one ``flow()`` made (callgrind, per record
        of a seed-shaped play: 36,200 instructions through ``row_of`` and
        ``record_from_row``, 19,800 with the ids built inline, ~1,000 more with them
        from ``full_id`` and ``as_uuid``).
        """
        spec, _, parent_id, t0, dur, status, inp, out = rec[:RECORD_SLOTS]
        limit = settings.max_value_bytes
        if 123 in inp[1:] or len(inp) > limit:  # as _stored decides
            inputs = decode(finish(inp, spec.redactor, inputs=True))
        else:
            inputs = decode(inp)
        if out is None:
            outputs = None
        elif len(out) > limit:
            outputs = decode(finish(out, spec.redactor))
        else:
            outputs = decode(out)
            if 123 in out:  # kept as decoded if a dict of scalars without a secret key
                plain = outputs.__class__ is dict
                if plain:
                    answers, scalars = spec.redactor.answers, SCALARS
                    for k, v in outputs.items():  # decoded JSON: the keys are str
                        if v.__class__ not in scalars or answers[k]:
                            plain = False
                            break
                if not plain:
                    outputs = decode(finish(out, spec.redactor))
        if parent_id is None:
            p = None
        else:
            if parent is not None and parent[ID] == parent_id:
                parent_id = self.full_id(parent)
            p = as_uuid(parent_id)
        flow = self.token_uuid
        if flow is None:
            flow = self.token_uuid = as_uuid(self.token)
        return ActionRecord(as_uuid(self.full_id(rec)), spec.concept_uri, spec.name, inputs,
                            outputs, (t0 + self.offset) // 1000, flow, p, status,
                            None if dur is None else dur // 1000)

    def _rows(self, records: list[list[Any]], full: dict[int, int]) -> Iterator[ActionRow]:
        token, off = self.token, self.offset
        limit = settings.max_value_bytes
        new = tuple.__new__  # ActionRow(...) runs a Python-level __new__: 3x slower
        get = full.get
        for r in records:
            spec, aid, parent, t0, dur, status, inp, out = r[:RECORD_SLOTS]
            inp, out = _stored(inp, out, spec, limit)
            yield new(ActionRow, (
                get(aid, aid), token, None if parent is None else get(parent, parent),
                spec.concept_uri, spec.name, (t0 + off) // 1000,
                None if dur is None else dur // 1000, status, inp, out,
            ))

    def sql_rows(self) -> tuple[list[tuple[Any, ...]], dict[int, str]]:
        """The part's actions as SQL storages bind them, and the hex of their ids.

        What ``rows()`` gives (same redaction and size rules): rows are ``(id,
        flow_token, parent_id, concept_uri, action, timestamp_us, duration_us, status,
        inputs, outputs)`` with ids as 32 hex digits and the JSON documents as ``str``
        (what sqlite3 binds without its adapter lookup, and what ``COPY`` writes). The
        map takes every action's id to its hex, under its full id and under its local
        id too (for ``sql_edges``, whose raw edges hold local ids). ``sql_rows_of``
        gives this for a whole batch at once.
        """
        (mine,) = sql_rows_of([self])
        return mine

    def sql_edges(self, hexes: dict[int, str]) -> list[tuple[str, str, str, int]]:
        """The part's edges as ``edges`` gives them, ids as hex through ``sql_rows``'s
        map (ids outside the part formatted here)."""
        off = self.offset
        out = []
        for f, t, sync, created in list(self.edge_log):
            out.append((hexes.get(f) or _full_hex(self, f), hexes.get(t) or _full_hex(self, t),
                        sync, (created + off) // 1000))
        return out

    @property
    def edges(self) -> list[tuple[int, int, str, int]]:
        """The part's edges as ``(from_id, to_id, synchronization, created_us)``."""
        if not self.edge_log:
            return []
        full = self._id_map()
        off = self.offset
        return [
            (full.get(f, f), full.get(t, t), sync, (created + off) // 1000)
            for f, t, sync, created in list(self.edge_log)
        ]

    def log_rows(self) -> list[LogRow]:
        """The part's log events in storage form, in the order they were logged."""
        token = self.token
        return [
            LogRow(lid, token, aid, ts, level, event, fields)
            for lid, aid, ts, level, event, fields in list(self.log_events)
        ]

    def snapshot(self) -> FlowPart:
        """A copy safe to read while the flow goes on recording (for partial traces)."""
        copy = FlowPart(self.token, self.root_id, self.created_at, self.module)
        copy.records = [r[:RECORD_SLOTS] for r in list(self.records)]
        copy.edge_log = list(self.edge_log)
        copy.log_events = list(self.log_events)
        copy.sampled = self.sampled
        copy.offset, copy.fixed = self.offset, self.fixed
        return copy


SqlRows = tuple[list[tuple[Any, ...]], dict[int, str]]


def sql_rows_of(parts: Sequence[Part]) -> list[SqlRows]:
    """Each part's ``sql_rows()``, in one pass for the writer, which pays for every step
    here while the application waits for the GIL (docs/performance.md, "Short flows and
    large stores"; callgrind figures per seed-shaped action).

    For a ``FlowPart``, full ids are computed inline (as ``full_id``), the documents
    decoded in the same pass, and ``_stored`` inlined. The documents that
    ``_stored`` would hand to ``finish`` only for ``may_contain`` to decide (a mapping
    within the size limit) are checked for the whole batch at once by
    ``Redactor.may_contain_each``, and only those it names go through ``finish``: the
    same calls on the same documents, so the same rows (tests/test_sql_storage.py
    compares them with ``rows()``). Per such document: ~5,400 instructions through
    ``finish`` (its call, ``may_contain``'s lowering and regex), ~580 in
    ``may_contain_each`` (a batch's 2,500 seed-shaped documents). Callgrind, a batch of
    1,250 seed-shaped parts: 70.5M -> 58.2M instructions (14,109 -> 11,650 per action).
    """
    limit = settings.max_value_bytes
    mask, local = _ids.COUNTER_MASK, LOCAL_LIMIT
    out: list[SqlRows] = []
    # The documents to check, their redactors, and their rows: the row's position in
    # its part (``~`` it for outputs); ``marks``: how many documents came before each
    # part. Flat lists and small ints (ints up to 256 are shared, others allocated).
    docs: list[bytes] = []
    redactors: list[Redactor] = []
    spots: list[int] = []
    marks: list[int] = []
    for part in parts:
        marks.append(len(docs))
        if not isinstance(part, FlowPart):
            out.append(part.sql_rows())
            continue
        off, fixed = part.offset, part.fixed
        token = part.token.to_bytes(16).hex()
        hexes: dict[int, str] = {}
        rows: list[tuple[Any, ...]] = []
        add = rows.append
        for r in list(part.records):
            # Slot by slot: ~380 instructions fewer than unpacking r[:RECORD_SLOTS] (a
            # list made per record). A frame's record is longer: only these are read.
            spec = r[SPEC]
            aid = r[ID]
            parent = r[PARENT]
            dur = r[DURATION]
            status = r[STATUS]
            inp = r[INPUTS]
            res = r[OUTPUTS]
            us = (r[START] + off) // 1000  # ms below from µs: one 128-bit sum fewer (~250)
            if aid < local:
                full = ((us // 1000) << 80) | fixed | (aid & mask)
                aid_hex = hexes[aid] = hexes[full] = full.to_bytes(16).hex()
            else:
                aid_hex = hexes[aid] = aid.to_bytes(16).hex()
            if parent is not None:
                # A parent is recorded before its children: its hex is known by now.
                parent = hexes.get(parent) or parent.to_bytes(16).hex()
            # _stored, inline (its call and result tuple: ~700 per action).
            if len(inp) > limit:
                inp = finish(inp, spec.redactor, inputs=True)
            elif 123 in inp[1:]:  # see _stored
                docs.append(inp)
                redactors.append(spec.redactor)
                spots.append(len(rows))
            if res is None or res == NULL:
                # The commonest output (None), without decoding it (~400 per action).
                res = "null"
            else:
                if len(res) > limit:
                    res = finish(res, spec.redactor)
                elif 123 in res:
                    docs.append(res)
                    redactors.append(spec.redactor)
                    spots.append(~len(rows))
                res = res.decode()
            add((aid_hex, token, parent, spec.concept_uri, spec.name, us,
                 None if dur is None else dur // 1000, status, inp.decode(), res))
        out.append((rows, hexes))
    if docs:
        for k in _flagged(docs, redactors):
            rows, _ = out[bisect.bisect_right(marks, k) - 1]
            i = spots[k]
            slot = 8 if i >= 0 else 9
            if i < 0:
                i = ~i
            row = rows[i]
            value = finish(docs[k], redactors[k], inputs=slot == 8).decode()
            rows[i] = (*row[:slot], value, *row[slot + 1:])
    return out


def _flagged(docs: list[bytes], redactors: list[Redactor]) -> Iterable[int]:
    """The positions of the documents their redactor's ``may_contain`` is true of."""
    kinds = set(redactors)
    try:
        if len(kinds) == 1:
            (redactor,) = kinds
            return redactor.may_contain_each(docs)
        flagged: list[int] = []
        for redactor in kinds:
            mine = [k for k, r in enumerate(redactors) if r is redactor]
            flagged += (mine[j] for j in redactor.may_contain_each([docs[k] for k in mine]))
        return flagged
    except BaseException:  # noqa: BLE001 - then each as finish decides (never raises)
        return range(len(docs))


def _full_hex(part: FlowPart, aid: int) -> str:
    """The hex of an edge's end that is not one of the part's records (as ``edges``)."""
    return part._id_map().get(aid, aid).to_bytes(16).hex()


def _stored(inp: bytes, out: bytes | None, spec: Any, limit: int) -> tuple[bytes, bytes]:
    """Inputs and outputs as stored: nested secret keys redacted, oversized values cut.

    Encodings without a nested mapping and within the limit are stored as they are.
    """
    # ``123 in data`` is b"{" in data: bytes.__contains__ with an int is a memchr
    # (~200 instructions), where ``data.find(b"{")`` parses its arguments as a tuple
    # (~1,200) and ``b"{" in data`` first fails to read b"{" as an int (~2,200).
    if 123 in inp[1:] or len(inp) > limit:
        inp = finish(inp, spec.redactor, inputs=True)
    if out is None:
        out = NULL
    elif 123 in out or len(out) > limit:
        out = finish(out, spec.redactor)
    return inp, out


def record_from_row(row: ActionRow, uuids: dict[int, uuid.UUID] | None = None) -> ActionRecord:
    """Build the public ``ActionRecord`` for a row (``uuids`` caches repeated ids)."""
    if uuids is None:
        uuids = {}
    aid, token, parent = row.id, row.flow_token, row.parent_id
    flow = uuids.get(token)
    if flow is None:
        flow = uuids[token] = as_uuid(token)
    if parent is not None:
        p = uuids.get(parent)
        if p is None:
            p = uuids[parent] = as_uuid(parent)
    else:
        p = None
    own = uuids[aid] = as_uuid(aid)
    return ActionRecord(own, row.concept_uri, row.action, decode(row.inputs),
                        decode(row.outputs), row.timestamp, flow, p, row.status, row.duration_us)


def to_trace(part: Part) -> ActionTrace:
    """Build the public ``ActionTrace`` of one part."""
    uuids: dict[int, uuid.UUID] = {}
    actions = {}
    first: int | None = None
    for row in part.rows():
        rec = record_from_row(row, uuids)
        actions[rec.id] = rec
        first = row.id if first is None else first
    edges = [
        ProvenanceEdge(uuids.get(f) or as_uuid(f), uuids.get(t) or as_uuid(t), sync, created)
        for f, t, sync, created in part.edges
    ]
    root = part.root_id
    if root is None:  # a continue_flow part: the root lives in another process
        root = part.token if first is None else first
    return ActionTrace(
        flow_token=as_uuid(part.token),
        root_action_id=uuids.get(root) or as_uuid(root),
        actions=actions,
        provenance_edges=edges,
        created_at=part.created_at,
        module=part.module,
        logs=[log_from_row(row, uuids) for row in part.log_rows()],
        sampled=part.sampled,
    )


def log_from_row(row: LogRow, uuids: dict[int, uuid.UUID] | None = None) -> LogEvent:
    """Build the public ``LogEvent`` for a row (``uuids`` caches repeated ids)."""
    if uuids is None:
        uuids = {}
    aid = row.action_id
    return LogEvent(
        id=as_uuid(row.id),
        flow_token=uuids.get(row.flow_token) or as_uuid(row.flow_token),
        action_id=None if aid is None else (uuids.get(aid) or as_uuid(aid)),
        timestamp=row.timestamp,
        level=row.level,
        event=row.event,
        fields=decode(row.fields),
    )


def from_trace(trace: ActionTrace) -> FlowPart:
    """Turn a public ``ActionTrace`` back into a part (for ``save_trace``)."""
    from actiontrace.recording._capture import encode

    part = FlowPart(trace.flow_token.int, trace.root_action_id.int, trace.created_at, trace.module)
    part.offset = 0  # times below are µs since the epoch, stored as ns
    part.sampled = trace.sampled
    for rec in trace.actions.values():
        part.records.append(new_record(
            Named(rec.concept_uri, rec.action), rec.id.int,
            None if rec.parent_id is None else rec.parent_id.int, rec.timestamp * 1000,
            None if rec.duration_us is None else rec.duration_us * 1000, rec.status,
            encode(rec.inputs), encode(rec.outputs),
        ))
    part.records.sort(key=lambda r: (r[START], r[ID]))
    part.edge_log = [
        (e.from_action.int, e.to_action.int, e.synchronization, e.created_at * 1000)
        for e in trace.provenance_edges
    ]
    part.log_events = [
        (ev.id.int, None if ev.action_id is None else ev.action_id.int, ev.timestamp, ev.level,
         ev.event, encode(ev.fields))
        for ev in trace.logs
    ]
    return part
