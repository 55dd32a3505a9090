"""Turn call arguments, return values and exceptions into stored JSON, safely.

The fast path is one ``msgspec`` encode of a dict built by a binder that was generated
at decoration time (``_codegen``), so no ``inspect`` runs per call. Everything that
can go wrong with a hostile value (cycles, lone surrogates, odd keys, a ``__repr__``
that raises, megabyte strings, nesting deeper than the recursion limit) is handled on a
slow path that is only taken when the fast encode raises or the result needs redaction
or truncation. Whatever happens, a capture returns bytes: tracing never raises into
the application.

Values are encoded at call time, so a later mutation of an argument cannot rewrite
history.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from actiontrace._state import settings
from actiontrace.recording._redact import REDACTED, Redactor

__all__ = [
    "SCALARS",
    "capture_error",
    "capture_fallback",
    "capture_fields",
    "capture_value",
    "decode",
    "encode",
    "finish",
]

REPR_LIMIT = 200  # characters of repr() kept for a value msgspec cannot encode
MAX_DEPTH = 64  # nesting kept by the slow path; deeper levels become a marker


def _safe_repr(obj: Any) -> str:
    try:
        text = repr(obj)
    except BaseException:  # noqa: BLE001 - a hostile __repr__ may raise anything
        try:
            name = type(obj).__qualname__
        except BaseException:  # noqa: BLE001 - hostile values may raise anything
            name = "object"
        return f"<unrepresentable {name}>"
    if not isinstance(text, str):
        return "<unrepresentable>"
    if len(text) > REPR_LIMIT:
        text = text[:REPR_LIMIT] + "…"
    return _clean_str(text)


def _enc_hook(obj: Any) -> Any:
    # Called by msgspec for types it does not know: keep a short repr instead.
    return _safe_repr(obj)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
encode: Callable[[Any], bytes] = _encoder.encode
decode: Callable[[bytes | str], Any] = msgspec.json.Decoder().decode
NULL = b"null"
EMPTY = b"{}"  # the inputs of a root given none: nothing to redact or cut


# --- the slow path: make any value JSON-safe --------------------------------------------


def _clean_str(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates cannot be stored as UTF-8: keep them visible as \udXXX.
        s = s.encode("utf-8", "backslashreplace").decode("utf-8")
    return s


def _key(k: Any) -> str:
    if isinstance(k, str):
        return _clean_str(k)
    if isinstance(k, int | float) and not isinstance(k, bool):
        return repr(k)
    return _safe_repr(k)  # as msgspec's enc_hook names unsupported keys: True, None, (1, 2)


def _sanitize(obj: Any, depth: int, path: set[int]) -> Any:
    if obj is None or isinstance(obj, bool | int | float):
        return obj
    if isinstance(obj, str):
        return _clean_str(obj)
    if depth >= MAX_DEPTH:
        return "[max depth]"
    if isinstance(obj, dict | list | tuple | set | frozenset):
        ident = id(obj)
        if ident in path:
            return "[cycle]"
        path.add(ident)
        try:
            if isinstance(obj, dict):
                items = list(obj.items())  # snapshot: another thread may mutate it
                return {_key(k): _sanitize(v, depth + 1, path) for k, v in items}
            return [_sanitize(v, depth + 1, path) for v in list(obj)]
        except RuntimeError:  # mutated while we iterated
            return _safe_repr(obj)
        finally:
            path.discard(ident)
    try:
        # Structs, dataclasses, datetimes, UUIDs, bytes...: as msgspec would encode them.
        return _sanitize(decode(encode(obj)), depth + 1, path)
    except BaseException:  # noqa: BLE001 - hostile values may raise anything
        return _safe_repr(obj)


# Whole inputs stay within INPUTS_BOUND x max_value_bytes (256 KiB by default): each
# parameter's value is cut to the limit on its own, and when the values so cut still
# add up to more, the largest are cut further, to equal shares (docs/concepts.md).
INPUTS_BOUND = 4
_MIN_CUT = 64  # no value is cut shorter than this, whatever the bound


def _cut(value: Any, raw: bytes, limit: int) -> str:
    """``value`` (encoded as ``raw``) as a marked string whose encoding fits ``limit``.

    A string keeps its own first characters; anything else its JSON text.
    """
    suffix = f"…[truncated: {len(raw)} bytes]"
    head = value if isinstance(value, str) else raw.decode("utf-8", "ignore")
    n = limit - len(suffix.encode()) - 2  # the quotes
    while True:
        text = head[: max(n, 0)] + suffix
        excess = len(encode(text)) - limit
        if excess <= 0 or n <= 0:
            return text
        n -= excess  # every character dropped frees at least one byte


def _fair_cap(sizes: list[int], room: int) -> int:
    """The size cap that shares ``room`` bytes fairly: small values kept whole."""
    remaining, n = room, len(sizes)
    for i, size in enumerate(sorted(sizes)):
        share = remaining // (n - i)
        if size > share:
            return max(share, _MIN_CUT)
        remaining -= size
    return max(sizes)


def _truncate(data: bytes, limit: int, bound: int) -> bytes:
    """Cut an encoding: every value to ``limit`` bytes, the whole to ``bound``.

    A mapping (the inputs, by parameter name) keeps its keys and has its values cut;
    anything else is one value. Every cut value is marked ``…[truncated: N bytes]``.
    """
    obj = decode(data)
    if isinstance(obj, dict) and obj:
        orig = {k: (v, encode(v)) for k, v in obj.items()}
        for k, (v, raw) in orig.items():
            if len(raw) > limit:
                obj[k] = _cut(v, raw, limit)
        out = encode(obj)
        if len(out) > bound:
            sizes = {k: len(encode(v)) for k, v in obj.items()}
            room = bound - (len(out) - sum(sizes.values()))
            cap = _fair_cap(list(sizes.values()), room)
            for k, size in sizes.items():
                if size > cap:
                    obj[k] = _cut(orig[k][0], orig[k][1], cap)
            out = encode(obj)
        if len(out) <= bound:
            return out
    return encode(_cut(obj, data, min(limit, bound)))


def finish(data: bytes, redactor: Redactor, inputs: bool = False) -> bytes:
    """Redact nested secret keys and enforce the size limits on an encoding.

    ``inputs``: ``data`` is a call's inputs, bounded as a whole by ``INPUTS_BOUND`` x the
    limit (each value still by the limit); otherwise it is one value, cut to the limit.
    """
    try:
        if redactor.may_contain(data):
            data = encode(redactor.apply(decode(data)))
        limit = settings.max_value_bytes
        if len(data) > limit:
            data = _truncate(data, limit, INPUTS_BOUND * limit if inputs else limit)
        return data
    except BaseException:  # noqa: BLE001 - hostile values may raise anything
        return encode("<unencodable>")


# Values a flat mapping may hold for capture_flat (and FlowPart.record_of): JSON scalars.
SCALARS = frozenset((str, int, float, bool, type(None)))
_FLAT_KEYS = 16  # a longer mapping takes the general path


def capture_flat(value: dict[Any, Any], redactor: Redactor) -> bytes | None:
    """``capture_value`` of a small mapping of str keys to scalars, or None if it is not one.

    Such a mapping can only hold secrets as its own keys, so they are redacted before
    encoding instead of by decoding and re-encoding the whole (``finish``), and a mapping
    without one skips ``may_contain``'s scan. Flows' inputs and log events are such
    mappings (callgrind: a structlog event's fields, 8,600 -> 6,500 instructions). With
    ``Redactor.answers`` read instead of calling ``is_secret`` per key, and the secrets
    replaced in a copy instead of a comprehension asking again for every key: the
    seed's flow inputs (three, ``token`` secret), 19,700 -> 10,700 per capture_value.
    """
    if len(value) > _FLAT_KEYS:
        return None
    secret = None
    flat = SCALARS
    answers = redactor.answers  # keys are exact str here (checked first)
    for k, v in value.items():
        if k.__class__ is not str or v.__class__ not in flat:
            return None
        if answers[k]:
            if secret is None:
                secret = []
            secret.append(k)
    if secret is not None:
        value = _redacted(value, secret)
    data = encode(value)
    if len(data) > settings.max_value_bytes:
        return None
    return data


def _redacted(value: dict[Any, Any], secret: list[str]) -> dict[Any, Any]:
    """A copy of ``value`` with the values of its ``secret`` keys replaced (order kept)."""
    value = value.copy()
    for k in secret:
        value[k] = REDACTED
    return value


def capture_fields(event: Mapping[Any, Any], skip: frozenset[str], redactor: Redactor) -> bytes:
    """``capture_value`` of ``event``'s items whose key is not in ``skip``, in their order.

    A log event's fields (``contrib.structlog``, twice per seed-shaped request): the
    usual event, a few str keys to scalars, is copied, checked and encoded in one pass,
    as ``capture_flat`` would store it; any other takes the general path (callgrind, a
    seed-shaped event through ``attach_to_action``: 20,400 -> 16,900 instructions
    against a comprehension and ``capture_value``).
    """
    fields = {}
    flat = True
    secret = None
    answers = redactor.answers
    scalars = SCALARS
    for k, v in event.items():
        if k in skip:
            continue
        fields[k] = v
        if flat:
            if k.__class__ is str and v.__class__ in scalars:
                if answers[k]:
                    if secret is None:
                        secret = []
                    secret.append(k)
            else:
                flat = False
    if flat and len(fields) <= _FLAT_KEYS:
        value = fields if secret is None else _redacted(fields, secret)
        try:
            data = encode(value)
        except BaseException:  # noqa: BLE001 - e.g. a lone surrogate: the general path copes
            data = b""
        if data and len(data) <= settings.max_value_bytes:
            return data
    return capture_value(fields, redactor)


def capture_value(value: Any, redactor: Redactor, inputs: bool = False) -> bytes:
    """Encode any value for storage; never raises (``inputs``: see ``finish``)."""
    if value.__class__ is dict:
        try:
            flat = capture_flat(value, redactor)
        except BaseException:  # noqa: BLE001 - hostile values may raise anything
            flat = None
        if flat is not None:
            return flat
    try:
        data = encode(value)
    except BaseException:  # noqa: BLE001 - hostile values may raise anything
        try:
            data = encode(_sanitize(value, 0, set()))
        except BaseException:  # noqa: BLE001 - hostile values may raise anything
            data = encode(_safe_repr(value))
    if data.find(b"{") >= 0 or len(data) > settings.max_value_bytes:
        data = finish(data, redactor, inputs)
    return data


def capture_fallback(args: tuple[Any, ...], kwargs: dict[str, Any], redactor: Redactor) -> bytes:
    """Inputs of a call whose arguments did not bind to the signature."""
    kw = {k: (REDACTED if redactor.is_secret(k) else v) for k, v in kwargs.items()}
    return capture_value({"args": list(args), "kwargs": kw}, redactor, inputs=True)


def type_name(exc: BaseException) -> str:
    """Return the exception's class name, module-qualified unless builtin."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def capture_error(exc: BaseException, redactor: Redactor) -> bytes:
    """The outputs of a call that raised: ``{"error": str(exc), "error_type": ...}``."""
    try:
        message = str(exc)
    except BaseException:  # noqa: BLE001 - hostile values may raise anything
        message = _safe_repr(exc)
    return capture_value({"error": message, "error_type": type_name(exc)}, redactor)
