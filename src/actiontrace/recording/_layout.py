"""The record/frame list: its slots, declared once, and the one way to build it.

A decorated call appends one plain list to its flow part. The same list is the call's
*record* (the first eight slots, what ``FlowPart.rows`` reads) and, while the call runs,
its *frame* (the next five, what the context points at). One list instead of a record
plus a frame, and a list rather than a Struct or a ``__slots__`` object, because every
allocation on the hot path counts (measured, issue 12: a msgspec ``array_like`` Struct
costs ~90 ns more per call, a ``gc=False`` Struct leaks through the record -> part ->
records cycle, a ``__slots__`` object costs 4x a list to build). So the list stays, but
its positions have names, here, and nothing else in the package subscripts a record
with a bare number (tests/test_layout.py scans the package for it).

Slots::

    SPEC      the action's ``ActionSpec`` (or any object with ``concept_uri``/``name``)
    ID        local id (a per-process sequence number) or a full UUIDv7 int
    PARENT    the parent action's id, or None
    START     ``perf_counter_ns`` at the start (the part's offset maps it to the epoch)
    DURATION  nanoseconds, None while running
    STATUS    "running", "ok" or "error"
    INPUTS    JSON bytes as encoded at call time
    OUTPUTS   JSON bytes (the result or the error), None while running
    -- the frame (absent from records that are never a frame) --
    PART      the ``FlowPart`` the frame records into
    OWNER     the enclosing action frame of a synchronization frame, else None
    SYNC      the synchronization labelling edges of actions called directly inside
    TRIGGER   the id those edges come from
    DEPTH     how deep in declared reactions the frame is

The kinds of frame (docs/concepts.md, "Concurrency"):

* action frames (one per running ``@action``, and the root of ``flow()``): ``ID`` is the
  running action, ``OWNER`` is None (the frame is its own owner).
* synchronization frames (a running ``@synchronization`` or a declared reaction): no
  record; ``OWNER`` is the enclosing action frame. ``SYNC`` and ``TRIGGER`` label the
  provenance edge of every action called directly inside.
* base frames (``continue_flow`` and the flow an ``@action`` starts for itself): like an
  action frame with ``ID`` None, so their direct actions have no parent.

The generated wrapper (``_codegen``) builds the same list as a literal, rendered from
``SLOTS`` with the numbers written into its source: the same bytecode as hand-written
``rec[4]``, with the names kept in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = [
    "DEPTH", "DURATION", "FRAME_SLOTS", "ID", "INPUTS", "OUTPUTS", "OWNER", "PARENT", "PART",
    "RECORD_SLOTS", "SLOTS", "SPEC", "START", "STATUS", "SYNC", "TRIGGER", "base_frame",
    "list_source", "new_record", "root_frame", "sync_frame",
]

# The record.
SPEC, ID, PARENT, START, DURATION, STATUS, INPUTS, OUTPUTS = range(8)
# The frame.
PART, OWNER, SYNC, TRIGGER, DEPTH = range(8, 13)

SLOTS = ("SPEC", "ID", "PARENT", "START", "DURATION", "STATUS", "INPUTS", "OUTPUTS",
         "PART", "OWNER", "SYNC", "TRIGGER", "DEPTH")
RECORD_SLOTS = 8  # a record that is never a frame (manual records, journaled parts)
FRAME_SLOTS = len(SLOTS)

RUNNING, OK, ERROR = "running", "ok", "error"

Record = list[Any]  # a record, or a record that is also a frame
Frame = list[Any]


def new_record(
    spec: Any, aid: int | None, parent: int | None, start: int | None, duration: int | None,
    status: str | None, inputs: bytes | None, outputs: bytes | None, *frame: Any,
) -> Record:
    """A record; with ``part, owner, sync, trigger, depth`` after it, a frame too.

    Every record outside the generated wrapper is built here (the wrapper renders the
    same layout as a literal, see ``list_source``).
    """
    if frame and len(frame) != FRAME_SLOTS - RECORD_SLOTS:
        raise TypeError(f"a frame has {FRAME_SLOTS} slots, got {RECORD_SLOTS + len(frame)}")
    return [spec, aid, parent, start, duration, status, inputs, outputs, *frame]


def list_source(**slots: str) -> str:
    """The source of a frame-sized list literal: ``slots`` maps slot names to expressions.

    Slots not given are ``None``. For the generated wrapper, which builds its record
    in one ``BUILD_LIST`` (a call to ``new_record`` would cost ~150 ns per call).
    """
    unknown = set(slots) - set(SLOTS)
    if unknown:
        raise ValueError(f"no such slot(s): {', '.join(sorted(unknown))}")
    return "[" + ", ".join(slots.get(name, "None") for name in SLOTS) + "]"


def _builder(name: str, params: str, doc: str, **slots: str) -> Any:
    """A function ``name(params)`` returning the frame literal ``list_source(**slots)``.

    The frames of flows and synchronizations are built on every flow and every
    synchronization call: a literal spares ``new_record``'s packing of ``*frame`` and
    its check (part of 12,100 -> 7,850 instructions per synchronization call, callgrind,
    docs/performance.md).
    """
    namespace: dict[str, Any] = {}
    exec(f"def {name}({params}):\n    return {list_source(**slots)}\n", namespace)
    fn = namespace[name]
    fn.__doc__ = doc
    fn.__module__ = __name__
    return fn


base_frame: Callable[[Any], Frame] = _builder(
    "base_frame", "part", "A frame with no action: its direct actions have no parent.",
    PART="part", DEPTH="0",
)
sync_frame: Callable[[Any, Frame, str | None, int | None, int], Frame] = _builder(
    "sync_frame", "part, owner, sync, trigger, depth",
    "A synchronization's frame: actions called directly inside get an edge.",
    PART="part", OWNER="owner", SYNC="sync", TRIGGER="trigger", DEPTH="depth",
)
root_frame: Callable[[Any, int, int, bytes, Any], Frame] = _builder(
    "root_frame", "spec, aid, start, inputs, part",
    "A running action's record without parent (a flow's root, a joined request), also its frame.",
    SPEC="spec", ID="aid", START="start", STATUS='"running"', INPUTS="inputs", PART="part",
    DEPTH="0",
)
