"""Cheap timestamps and ids for the hot path.

A ``uuid.uuid4()`` costs ~1,700 ns and ``time.time_ns()`` plus a ``perf_counter_ns()`` for
the duration ~110 ns, so both are replaced here (see docs/performance.md):

* time: one ``perf_counter_ns()`` read (~60 ns) plus an offset to the Unix epoch taken at
  import. It is monotonic, so durations never go negative, and it tracks the wall clock
  closely enough for a trace (the offset is re-taken after ``fork``).
* ids: UUIDv7 (RFC 9562) as plain ints: 48 bits of Unix milliseconds, the version and
  variant bits, 34 random bits drawn per process, and a 40-bit per-process counter. Ids are
  unique across processes (the random part) and, inside one process, sort in creation
  order, which is the "recording order" the queries promise. The hot path takes only the
  counter (``local_counter``); ``FlowPart.rows`` adds the time and process bits later.
  Building a ``uuid.UUID`` is deferred to whoever reads the record (``as_uuid``).
"""

from __future__ import annotations

import itertools
import secrets
import time
import uuid

from actiontrace._state import at_fork

__all__ = ["as_uuid", "flow_ids", "new_id", "now_us", "stamped_id"]

perf_ns = time.perf_counter_ns
COUNTER_MASK = (1 << 40) - 1

# Module globals, rebound by _reseed(); the hot path reads them at call time.
EPOCH_OFFSET_NS = 0
FIXED_BITS = 0
counter = itertools.count()
# Ids the hot path hands out: the low 40 bits of a UUIDv7, shared with `counter` so a
# local id and a full one can never carry the same sequence number.
local_counter = counter


def _reseed() -> None:
    global EPOCH_OFFSET_NS, FIXED_BITS, counter, local_counter
    EPOCH_OFFSET_NS = time.time_ns() - time.perf_counter_ns()
    rand_a = secrets.randbits(12)
    rand_hi = secrets.randbits(22)
    FIXED_BITS = (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | (rand_hi << 40)
    counter = local_counter = itertools.count(secrets.randbits(20))


_reseed()
at_fork("ids", after_in_child=_reseed)


def now_us() -> int:
    """Return the current time in microseconds since the Unix epoch."""
    return (perf_ns() + EPOCH_OFFSET_NS) // 1000


def new_id(ts_us: int | None = None) -> int:
    """Return a new UUIDv7 as an int, for a record that starts at ``ts_us``."""
    if ts_us is None:
        ts_us = now_us()
    return ((ts_us // 1000) << 80) | FIXED_BITS | (next(counter) & COUNTER_MASK)


def stamped_id() -> tuple[int, int]:
    """Return ``(now_us(), new_id(that time))`` in one call (a log event's time and id)."""
    ts = (perf_ns() + EPOCH_OFFSET_NS) // 1000
    return ts, ((ts // 1000) << 80) | FIXED_BITS | (next(counter) & COUNTER_MASK)


def flow_ids(t0: int) -> tuple[int, int, int]:
    """Return ``(ts_us, root id, flow token)`` for a flow whose root starts at ``t0``.

    ``t0`` is a ``perf_ns()`` reading. Every flow pays this, so both ids are built in one
    call (instead of ``now_us()`` and two ``new_id()`` calls); the root's id is taken
    first, so it sorts before the token, as two ``new_id()`` calls would.
    """
    ts = (t0 + EPOCH_OFFSET_NS) // 1000
    high = ((ts // 1000) << 80) | FIXED_BITS
    return ts, high | (next(counter) & COUNTER_MASK), high | (next(counter) & COUNTER_MASK)


_new_uuid = object.__new__
_UUID = uuid.UUID
_SAFE = uuid.SafeUUID.unknown
# The slots' own setters: ``object.__setattr__`` looked the slot up in the type on every
# call (timeit: ~400 -> ~350 ns per UUID).
_set_int = _UUID.__dict__["int"].__set__
_set_safe = _UUID.__dict__["is_safe"].__set__


def as_uuid(value: int) -> uuid.UUID:
    """Return ``uuid.UUID(int=value)`` without its validation (~350 ns instead of ~690)."""
    u = _new_uuid(_UUID)
    _set_int(u, value)
    _set_safe(u, _SAFE)
    return u
