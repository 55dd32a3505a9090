"""One flow across processes: ``inject``, ``extract``, ``continue_flow_from`` (docs/reference.md, Across services).

Two headers travel with a request (or a queued message):

* ``traceparent``, W3C Trace Context level 1: ``00-<flow token>-<low 64 bits of the
  trigger's id>-<flags>``, so any tracer that speaks W3C joins the same trace;
* ``actiontrace``: ``trigger=<trigger UUID>;sync=<name, percent-encoded>``, the full
  trigger id (W3C's parent-id holds only its low 64 bits) and the synchronization whose
  edge the remote action gets.

A ``tracestate`` that arrived with the flow is passed on with it. Parsing never raises:
whatever is malformed, oversized or hostile is ignored (a new flow starts) and counted in
``stats()["rejected_trace_headers"]``. Every read of the recording internals goes
through ``_context.remote_view`` and ``_context.count_event``.
"""

from __future__ import annotations

import contextvars
import re
import secrets
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import msgspec

from actiontrace.recording._context import continue_flow, count_event, flow, remote_view
from actiontrace.recording._ids import as_uuid

__all__ = ["RemoteContext", "continue_flow_from", "extract", "inject"]

TRACEPARENT, TRACESTATE, ACTIONTRACE = "traceparent", "tracestate", "actiontrace"
_NAMES = frozenset((TRACEPARENT, TRACESTATE, ACTIONTRACE))
MAX_VALUE = 512  # bytes: a longer traceparent or actiontrace value is ignored
MAX_MEMBERS = 32  # tracestate list members passed on
MAX_RAW_TRACESTATE = 8192  # a longer combined tracestate is not even split (hostile)
MAX_FIELDS = 1024  # carrier entries looked at; HTTP servers cap headers far below this
REJECTED = "rejected_trace_headers"  # the stats() counter

# traceparent version 00 is exactly version-traceid-parentid-flags in lowercase hex; a
# higher version is read by its version-00 fields and must continue with "-" (or end)
# after the flags (W3C Trace Context §3.2.4).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_TRACEPARENT_00 = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
_KEY = re.compile(r"[a-z0-9][_0-9a-z\-*/@]{0,255}")
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_OWS = " \t"
_OURS = re.compile(r"trigger=([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12});sync=([^;=]*)")
_LOW64 = (1 << 64) - 1

# The tracestate that came with the flow this context continues: (flow token, value).
_tracestate: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "actiontrace_tracestate", default=None
)


class RemoteContext(msgspec.Struct, frozen=True, gc=False):
    """What ``extract`` found in a carrier: the flow to join and the remote cause.

    ``trigger`` and ``synchronization`` come from the ``actiontrace`` header (None when
    another tracer wrote the ``traceparent``); ``tracestate`` is the W3C list to pass on.
    """

    flow_token: uuid.UUID
    trigger: uuid.UUID | None = None
    synchronization: str | None = None
    tracestate: str | None = None


# -- inject ----------------------------------------------------------------------------


def inject(carrier: Any, synchronization: str | None = None) -> Any:
    """Add the current flow's ``traceparent`` and ``actiontrace`` headers to ``carrier``.

    Called directly inside a running synchronization, the trigger and name are that
    synchronization's, so the remote action gets the edge a local call would; elsewhere
    the trigger is the innermost running action and the name ``"remote"``. A given
    ``synchronization`` always sets the name. Outside a flow ``carrier`` is unchanged.

    Args:
        carrier: any mutable mapping of header names to values (a dict, ``httpx.Headers``,
            a message's headers).
        synchronization: the name of the edge the remote action gets.

    Returns:
        ``carrier`` itself.
    """
    view = remote_view()
    if view is None or not view[0]:
        return carrier
    token, trigger, sync_name, sampled = view
    name = synchronization if synchronization is not None else (sync_name or "remote")
    parent = (trigger or 0) & _LOW64 or secrets.randbits(64) or 1
    headers = {TRACEPARENT: f"00-{token:032x}-{parent:016x}-{'01' if sampled else '00'}"}
    if trigger is not None and trigger & _LOW64:
        headers[ACTIONTRACE] = f"trigger={uuid.UUID(int=trigger)};sync={quote(str(name), safe='')}"
    state = _tracestate.get()
    if state is not None and state[0] == token:
        headers[TRACESTATE] = state[1]
    # Keys of ours in another casing (a forwarded dict) would make duplicated headers; a
    # tracestate must belong to the traceparent it travels with, so a stale one goes too.
    try:
        stale = [k for k in carrier if isinstance(k, str) and k.lower() in _NAMES
                 and k not in headers]
        for key in stale:
            del carrier[key]
    except TypeError:  # not iterable: only set the headers
        pass
    for key, value in headers.items():
        carrier[key] = value
    return carrier


# -- extract ---------------------------------------------------------------------------


_BINARY = (bytes, bytearray, memoryview)  # a tuple: `a | b` would build a union per call
_NAME_TYPES = (str, bytes, bytearray)


def _text(value: Any) -> str | None:
    if type(value) is str:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, _BINARY):
        return bytes(value).decode("latin-1")
    return None


# Header name -> its slot in _fields' result; both forms, so bytes names (ASGI) are
# looked up without decoding. Only names of length 10 or 11 can match: every other
# header is skipped after one len() (extract runs on every request: callgrind counted
# ~80,000 instructions for three headers before this, when each name was decoded).
_SLOTS: dict[Any, int] = {}
for _i, _name in enumerate((TRACEPARENT, TRACESTATE, ACTIONTRACE)):
    _SLOTS[_name] = _SLOTS[_name.encode()] = _i


def _fields(carrier: Any) -> tuple[list[str], list[str], list[str], bool]:
    """Our headers' values in order (names case-insensitive), and whether it was hostile."""
    found: tuple[list[str], list[str], list[str]] = ([], [], [])
    bad = False
    items = carrier.items() if isinstance(carrier, Mapping) else carrier
    count = 0
    for entry in items:
        count += 1
        if count > MAX_FIELDS:
            bad = True
            break
        try:
            raw_name, raw_value = entry
            size = len(raw_name)
        except (TypeError, ValueError):
            bad = True
            continue
        if size != 11 and size != 10:
            continue
        slot = _SLOTS.get(raw_name)
        if slot is None:
            if not isinstance(raw_name, _NAME_TYPES):
                continue
            slot = _SLOTS.get(raw_name.lower())
            if slot is None:
                continue
        value = _text(raw_value)
        if value is None:
            bad = True
            continue
        found[slot].append(value)
    return found[0], found[1], found[2], bad


def _traceparent(values: list[str]) -> tuple[int, int] | None:
    """(trace id, parent id) of the one valid traceparent, else None."""
    if len(values) != 1 or len(values[0]) > MAX_VALUE:
        return None
    value = values[0]
    if len(value) == 55 and _TRACEPARENT_00.fullmatch(value) is not None:
        # Version 00 as every tracer writes it: one match and two slices (callgrind,
        # per header: 12,950 -> 11,100 instructions, against the general path below).
        trace_id, parent_id = int(value[3:35], 16), int(value[36:52], 16)
        return (trace_id, parent_id) if trace_id and parent_id else None
    if len(value) != 55 or value[0] in _OWS or value[-1] in _OWS:
        value = value.strip(_OWS)
    m = _TRACEPARENT.match(value)
    if m is None:
        return None
    version, trace_hex, parent_hex, _ = m.groups()
    if version == "ff" or (version == "00" and len(value) != 55):
        return None
    if len(value) > 55 and value[55] != "-":
        return None
    trace_id, parent_id = int(trace_hex, 16), int(parent_hex, 16)
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id


def _tracestate_of(values: list[str]) -> tuple[str | None, bool]:
    """The list to pass on (invalid members dropped, at most 32), and whether any was bad.

    Several header fields are one list, joined in order (RFC 9110 §5.3). Empty members
    are allowed and dropped; a repeated key keeps its first value. When the result is
    longer than 512 bytes, members over 128 bytes go first, then members from the right
    (W3C Trace Context §3.3.1.5).
    """
    if not values:
        return None, False
    raw = ",".join(values)
    if len(raw) > MAX_RAW_TRACESTATE:
        return None, True
    members: list[str] = []
    keys: set[str] = set()
    bad = False
    for field in raw.split(","):
        member = field.strip(_OWS)
        if not member:
            continue
        key, eq, value = member.partition("=")
        if not eq or _KEY.fullmatch(key) is None or _VALUE.fullmatch(value) is None:
            bad = True
            continue
        if key in keys:
            continue
        if len(members) == MAX_MEMBERS:
            bad = True
            break
        keys.add(key)
        members.append(member)
    while members and len(",".join(members)) > MAX_VALUE:
        big = next((i for i, m in enumerate(members) if len(m) > 128), None)
        members.pop(len(members) - 1 if big is None else big)
    return (",".join(members) or None), bad


def _actiontrace(values: list[str], parent_id: int) -> tuple[int | None, str | None]:
    """(trigger, synchronization) from the actiontrace header, or (None, None)."""
    if len(values) != 1 or len(values[0]) > MAX_VALUE:
        return None, None
    value = values[0]
    raw_sync: str | None
    fast = _OURS.fullmatch(value)  # what inject writes: one regex, not the loop below
    if fast is not None:
        # "trigger=" + 36 characters + ";sync=": slices, not a tuple of groups.
        raw_trigger, raw_sync = value[8:44], value[50:]
    else:
        fields: dict[str, str] = {}
        for item in value.strip(_OWS).split(";"):
            key, eq, field = item.strip(_OWS).partition("=")
            if not eq or key in fields:
                return None, None
            fields[key] = field
        raw_trigger, raw_sync = fields.get("trigger", ""), fields.get("sync")
        if _UUID.fullmatch(raw_trigger) is None:
            return None, None
    trigger = int(raw_trigger.replace("-", ""), 16)
    # Our traceparent's parent-id is the trigger's low 64 bits: a header that disagrees
    # describes another hop (or was forged), so it names no cause here.
    if trigger & _LOW64 != parent_id:
        return None, None
    if raw_sync is None:
        return trigger, None
    if "%" not in raw_sync:  # unquote would return it as it is, after a call
        sync = raw_sync
    else:
        try:
            sync = unquote(raw_sync, errors="strict")
        except UnicodeDecodeError:
            return None, None
    if not sync or not sync.isprintable():  # control characters never reach storage
        return None, None
    return trigger, sync


# What a carrier names, ids as ints: (flow token, trigger, synchronization, tracestate).
Remote = tuple[int, int | None, str | None, str | None]


def _parse(carrier: Any) -> tuple[Remote | None, bool]:
    try:
        parents, states, ours, bad = _fields(carrier)
    except Exception:  # noqa: BLE001 - a carrier that fails to iterate is just no context
        return None, True
    return _remote(parents, states, ours, bad)


def _remote(parents: list[str], states: list[str], ours: list[str],
            bad: bool) -> tuple[Remote | None, bool]:
    if not parents:
        return None, bad or bool(ours)  # a tracestate alone is discarded (W3C §3.4)
    ids = _traceparent(parents)
    if ids is None:
        return None, True
    trigger, sync = _actiontrace(ours, ids[1]) if ours else (None, None)
    state, bad_state = _tracestate_of(states) if states else (None, False)
    bad = bad or bad_state or (bool(ours) and trigger is None)
    return (ids[0], trigger, sync, state), bad


def extract_asgi(headers: Any) -> Remote | None:
    """``extract`` of an ASGI scope's ``headers`` (a list of ``(bytes, bytes)``), as ints.

    ASGI servers give header names lowercased, so the scan compares bytes and decodes
    only our three values; anything else goes the general way. (The middleware runs
    this on every request: ~16,000 instructions for the general scan of three headers,
    ~5,000 here, callgrind.)
    """
    parents: list[str] = []
    states: list[str] = []
    ours: list[str] = []
    try:
        for name, value in headers:
            if name == b"traceparent":
                parents.append(value.decode("latin-1"))
            elif name == b"tracestate":
                states.append(value.decode("latin-1"))
            elif name == b"actiontrace":
                ours.append(value.decode("latin-1"))
            elif (len(name) == 11 or len(name) == 10) and name.lower() in _SLOTS:
                return extract_remote(headers)  # a name in another casing: not an ASGI server
    except Exception:  # noqa: BLE001 - not what ASGI promises: the general path decides
        return extract_remote(headers)
    if not parents and not ours:
        return None
    remote, bad = _remote(parents, states, ours, False)
    if bad:
        count_event(REJECTED)
    return remote


def extract_remote(carrier: Any) -> Remote | None:
    """``extract`` with ids as ints (for ``join``), rejections counted."""
    remote, bad = _parse(carrier)
    if bad:
        count_event(REJECTED)
    return remote


def extract(carrier: Any) -> RemoteContext | None:
    """The flow and remote cause that ``carrier``'s headers name, or None.

    Accepts any ``Mapping[str, str]`` or iterable of ``(name, value)`` pairs (str or
    bytes); header names are case-insensitive. Missing, malformed, oversized or all-zero
    values give None, never an exception; anything rejected is counted in
    ``stats()["rejected_trace_headers"]``.
    """
    remote = extract_remote(carrier)
    if remote is None:
        return None
    token, trigger, sync, state = remote
    return RemoteContext(as_uuid(token), None if trigger is None else as_uuid(trigger), sync, state)


# -- continue_flow_from ----------------------------------------------------------------


def pass_tracestate(token: int, state: str) -> contextvars.Token[Any]:
    """Pass ``state`` on with flow ``token`` in this context (``inject`` adds it)."""
    return _tracestate.set((token, state))


def end_tracestate(reset: contextvars.Token[Any]) -> None:
    """Stop passing on what ``pass_tracestate`` set."""
    try:
        _tracestate.reset(reset)
    except ValueError:  # exited in another context
        _tracestate.set(None)


class join:
    """``continue_flow`` of what a carrier named, with its ``tracestate`` passed on."""

    __slots__ = ("_inner", "_reset", "_state", "_token")

    def __init__(self, remote: Remote) -> None:
        token, trigger, sync, self._state = remote
        self._token = token
        self._inner = continue_flow.of_ints(token, trigger, sync or "remote")
        self._reset: contextvars.Token[Any] | None = None

    def __enter__(self) -> uuid.UUID:
        self.enter()
        return as_uuid(self._token)

    def enter(self) -> None:
        """``__enter__`` without building the flow token's ``uuid.UUID`` (the middleware's)."""
        self._inner.enter()
        if self._state is not None:
            self._reset = pass_tracestate(self._token, self._state)

    def __exit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        if self._reset is not None:
            end_tracestate(self._reset)
            self._reset = None
        self._inner.__exit__(et, exc, tb)


class continue_flow_from:
    """Join the flow ``carrier``'s headers name, else start ``flow(root, inputs)``.

    The block's value is the flow token. When continuing, actions called directly in the
    block get edges from the remote trigger, and an incoming ``tracestate`` is passed on
    by ``inject`` inside the block. Usable with ``with`` and ``async with``.
    """

    __slots__ = ("_carrier", "_inner", "_inputs", "_root")

    def __init__(self, carrier: Any, root: str, inputs: dict[str, Any] | None = None) -> None:
        if not isinstance(root, str) or not root:
            raise TypeError("continue_flow_from() needs the root action's name, e.g. 'app::HTTP::request'")
        self._carrier = carrier
        self._root = root
        self._inputs = inputs

    def __enter__(self) -> uuid.UUID:
        remote = extract_remote(self._carrier)
        self._inner: join | flow = flow(self._root, self._inputs) if remote is None else join(remote)
        return self._inner.__enter__()

    def __exit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        self._inner.__exit__(et, exc, tb)

    async def __aenter__(self) -> uuid.UUID:
        return self.__enter__()

    async def __aexit__(self, et: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(et, exc, tb)
