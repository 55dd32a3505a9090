"""Code generated at decoration time: each action's wrapper and binder.

Both are rebuilt from one analysis of the decorated function's signature
(``analyse``), so Python itself binds the arguments (defaults, keywords, ``*args``,
``**kwargs``) in the call: no ``inspect`` per call, no ``*args``/``**kwargs`` packing.

Generated source is compiled under a real, unique filename whose lines are registered
in ``linecache`` (as dataclasses and attrs do), so tracebacks and debuggers show the
generated lines. Values the code needs are parameters of a factory function (the
parameters' defaults among them), never poked into a shared namespace. The one shared
namespace is ``RUNTIME``, the wrappers' globals: what every wrapper must see change at
once (recording switched off, the id counter reseeded after ``fork``), refreshed by
``set_runtime``. A wrapper function object is compiled once; ``recompile`` swaps its
``__code__`` when ``configure(redact=...)`` changes the secret names compiled into it,
so the objects classes and modules already hold stay the same.
"""

from __future__ import annotations

import builtins
import inspect
import itertools
import keyword
import linecache
import types
from collections.abc import Callable
from typing import Any, NamedTuple

import msgspec

from actiontrace.recording._layout import (
    DEPTH,
    DURATION,
    ID,
    OUTPUTS,
    OWNER,
    PART,
    STATUS,
    SYNC,
    TRIGGER,
    list_source,
)
from actiontrace.recording._redact import REDACTED, Redactor

__all__ = [
    "RUNTIME", "Signature", "analyse", "make_binder", "make_wrapper", "set_runtime",
]

PREFIX = "_at_"  # every generated name: it cannot collide with the action's parameters


class Signature(NamedTuple):
    """A function's signature as source fragments (see ``analyse``)."""

    params: str  # the parameter list: "a, b=_at_d1, *rest, k, **kw"
    fields: list[str]  # the inputs' keys, in order ("self"/"cls" left out)
    values: list[str]  # an expression for each field's value
    positional: list[str]  # how to pass the arguments on: ["a", "b", "*rest"]
    keyword: list[str]  # ... and by keyword: ["k=k", "**kw"]
    defaults: dict[str, Any]  # the "_at_d{i}" names the parameter list refers to

    @property
    def clashes(self) -> bool:
        """Whether a parameter's name starts with the generated names' prefix."""
        names = (*self.fields, *self.positional, *self.keyword)
        return any(n.lstrip("*").startswith(PREFIX) for n in names)


def analyse(func: Callable[..., Any], drop_first: bool, redactor: Redactor) -> Signature | None:
    """Describe ``func``'s signature as source text, or None if it cannot be rebuilt.

    Parameters whose name is a secret get the value ``"[REDACTED]"``, ``*args`` a list;
    ``drop_first`` leaves ``self``/``cls`` out of the fields.
    """
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(not p.name.isidentifier() or keyword.iskeyword(p.name) for p in params):
        return None
    P = inspect.Parameter
    sig = Signature("", [], [], [], [], {})
    text: list[str] = []
    star_done = False
    for i, p in enumerate(params):
        if p.kind is P.KEYWORD_ONLY and not star_done:
            text.append("*")
            star_done = True
        if p.kind is P.VAR_POSITIONAL:
            text.append(f"*{p.name}")
            sig.positional.append(f"*{p.name}")
            star_done = True
        elif p.kind is P.VAR_KEYWORD:
            text.append(f"**{p.name}")
            sig.keyword.append(f"**{p.name}")
        else:
            if p.default is P.empty:
                text.append(p.name)
            else:
                sig.defaults[f"{PREFIX}d{i}"] = p.default
                text.append(f"{p.name}={PREFIX}d{i}")
            if p.kind is P.KEYWORD_ONLY:
                sig.keyword.append(f"{p.name}={p.name}")
            else:
                sig.positional.append(p.name)
        if p.kind is P.POSITIONAL_ONLY and (
            i + 1 == len(params) or params[i + 1].kind is not P.POSITIONAL_ONLY
        ):
            text.append("/")
        if i == 0 and drop_first:
            continue
        sig.fields.append(p.name)
        if redactor.is_secret(p.name):
            sig.values.append(repr(REDACTED))
        elif p.kind is P.VAR_POSITIONAL:
            sig.values.append(f"[*{p.name}]")
        else:
            sig.values.append(p.name)
    return sig._replace(params=", ".join(text))


# --- compiling ------------------------------------------------------------------------

_serial = itertools.count(1)


def filename_for(kind: str, func: Callable[..., Any]) -> str:
    """A unique filename for generated code about ``func`` (shown in tracebacks)."""
    where = f"{getattr(func, '__module__', None) or '?'}.{getattr(func, '__qualname__', '?')}"
    return f"<actiontrace {kind} {where} #{next(_serial)}>"


def factory(source: str, filename: str, name: str, namespace: dict[str, Any]) -> Any:
    """Compile ``source`` (one ``def name(...)``) under ``filename``; return the function.

    The source is registered in ``linecache`` under ``filename`` (replacing what an
    earlier compile there left), so tracebacks show its lines. The function's globals
    are ``namespace``, which is not written to.
    """
    code = compile(source, filename, "exec")
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    (make_code,) = (c for c in code.co_consts if isinstance(c, types.CodeType) and c.co_name == name)
    return types.FunctionType(make_code, namespace, name)


# --- the binder (slow paths: a call whose inputs the wrapper could not encode) --------


def make_binder(
    func: Callable[..., Any], sig: Signature | None, filename: str | None = None
) -> Callable[..., dict[str, Any]]:
    """Compile ``bind(*args, **kwargs) -> inputs`` for the signature ``sig`` of ``func``.

    ``filename`` names the source (default: a new one; an action keeps one, so that a
    recompile replaces its lines in ``linecache`` instead of adding more).

    Python itself does the binding by calling a generated function with the same
    parameters, which costs ~170 ns against ~2,000 ns for ``inspect.Signature.bind``
    (docs/performance.md). A call that does not match the signature raises
    ``TypeError`` from the binder; the caller then records its raw ``args``/``kwargs``.
    """
    if sig is None:
        return raw_binder
    body = ", ".join(f"{f!r}: {v}" for f, v in zip(sig.fields, sig.values, strict=True))
    params = ", ".join(sig.defaults)
    source = (f"def {PREFIX}make({params}):\n"
              f"    def bind({sig.params}):\n"
              f"        return {{{body}}}\n"
              f"    return bind\n")
    make = factory(source, filename or filename_for("binder", func), f"{PREFIX}make",
                   {"__builtins__": builtins})
    binder: Callable[..., dict[str, Any]] = make(**sig.defaults)
    return binder


def raw_binder(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """The inputs of a call whose signature cannot be rebuilt: its raw arguments."""
    return {"args": list(args), "kwargs": kwargs}


# --- the wrapper (the hot path) -------------------------------------------------------

# The wrappers' shared globals (see the module doc). Globals of one dict are cheaper to
# read than module attributes or closure cells refreshed by hand.
RUNTIME: dict[str, Any] = {"__builtins__": builtins}


def set_runtime(**values: Any) -> None:
    """Give every wrapper new runtime values (names without the ``_at_`` prefix)."""
    RUNTIME.update({PREFIX + k: v for k, v in values.items()})


# The wrapper is generated per action with the action's own signature, so Python binds
# the arguments in the call itself and the inputs are built from locals. Per call it does
# two encodes, one list, one append and a context switch; ids are a local sequence number
# and times raw perf_counter_ns, converted later by FlowPart.rows(), which also redacts
# nested secret keys and cuts oversized values off this thread. Callgrind counts
# (docs/performance.md) drove each choice: `b"{" in data` raised and swallowed a
# TypeError per call (~1,800 instructions), `bytes.find` parses its arguments the slow
# way (~700), and building a UUIDv7 int here cost ~750.
# Concurrency (docs/concepts.md): the call ends by *setting* (enclosing frame, own id),
# the context-local "most recently completed"; the frame is set bare at the start (a
# tuple there cost ~100 instructions more). Callgrind, per call recorded in flows of
# 1,000, writer parked: ~11,600 instructions (docs/performance.md).
# Record slots are written as {SLOT} and rendered as numbers (the same bytecode as a
# hand-written rec[4]); {RECORD} is the record literal, rendered from _layout.
#
# {SIG} the action's parameters; {INPUTS} the inputs; {CALL} the arguments passed on;
# {ARGS}/{KWARGS} the same packed for the auto-flow path; {DEFAULTS} the factory's
# parameters that the signature's defaults refer to.
TEMPLATE = """\
def _at_make(_at_spec, _at_func, _at_auto, _at_In{DEFAULTS}):
    {ASYNC}def _at_wrapper({SIG}):
        if _at_disabled:
            return {AWAIT}_at_func({CALL})
        _at_cur = _at_get()
        if _at_cur.__class__ is _at_tuple:  # (frame, last completed) - see _context
            _at_cur, _at_last = _at_cur
        if _at_cur is None:
            return {AWAIT}_at_auto(_at_wrapper, _at_func, {ARGS}, {KWARGS})
        _at_part = _at_cur[{PART}]
        _at_owner = _at_cur[{OWNER}] or _at_cur
        _at_id = _at_next()
        try:
            _at_in = _at_encode({INPUTS})
        except BaseException:  # noqa: BLE001 - tracing never raises into the app
            _at_in = _at_capture_inputs(_at_spec, {ARGS}, {KWARGS})
        _at_t0 = _at_perf()
        # The record, which is also this call's frame (see _layout).
        _at_rec = {RECORD}
        _at_part.records.append(_at_rec)
        if _at_cur[{SYNC}] is not None:
            _at_part.edge_log.append((_at_cur[{TRIGGER}], _at_id, _at_cur[{SYNC}], _at_t0))
        _at_set(_at_rec)
        try:
            _at_result = {AWAIT}_at_func({CALL})
        except BaseException as _at_exc:  # noqa: BLE001 - tracing never raises into the app
            _at_rec[{DURATION}] = _at_perf() - _at_t0
            _at_rec[{OUTPUTS}] = _at_capture_error(_at_exc, _at_spec.redactor)
            _at_rec[{STATUS}] = "error"
            raise
        finally:
            _at_set((_at_cur, _at_id))
        _at_rec[{DURATION}] = _at_perf() - _at_t0
        try:
            _at_rec[{OUTPUTS}] = _at_encode(_at_result)
        except BaseException:  # noqa: BLE001 - tracing never raises into the app
            _at_rec[{OUTPUTS}] = _at_capture_value(_at_result, _at_spec.redactor)
        _at_rec[{STATUS}] = "ok"
        if _at_spec.reactions:
            {AWAIT}_at_react{SUFFIX}(_at_spec, _at_rec, _at_part, _at_owner, _at_cur[{DEPTH}])
        return _at_result
    return _at_wrapper
"""

SLOT_NUMBERS = {"PART": PART, "OWNER": OWNER, "SYNC": SYNC, "TRIGGER": TRIGGER,
                "DURATION": DURATION, "OUTPUTS": OUTPUTS, "STATUS": STATUS, "DEPTH": DEPTH}
RECORD = list_source(SPEC="_at_spec", ID="_at_id", PARENT=f"_at_owner[{ID}]",
                     START="_at_t0", STATUS='"running"', INPUTS="_at_in", PART="_at_part",
                     DEPTH=f"_at_cur[{DEPTH}]")

_GENERIC = {"SIG": "*args, **kwargs", "INPUTS": "_at_spec.bind(*args, **kwargs)",
            "CALL": "*args, **kwargs", "ARGS": "args", "KWARGS": "kwargs", "DEFAULTS": ""}


def _fragments(sig: Signature | None) -> tuple[dict[str, str], dict[str, Any], Any]:
    """The template's fragments, the factory's defaults and the inputs Struct type."""
    if sig is None or sig.clashes:
        return _GENERIC, {}, None
    names = [k[:k.index("=")] for k in sig.keyword if not k.startswith("**")]
    packed = [f"{n!r}: {n}" for n in names] + [k for k in sig.keyword if k.startswith("**")]
    # The inputs are built as a msgspec Struct whose fields are the parameters: built in
    # C and encoded with precomputed field names, ~90 ns against ~140 ns for a dict.
    inputs_type: Any = None
    try:
        inputs_type = msgspec.defstruct("Inputs", sig.fields, gc=False)
        inputs = "_at_In(" + ", ".join(sig.values) + ")"
    except (TypeError, ValueError):  # a name msgspec refuses: build a dict instead
        pairs = zip(sig.fields, sig.values, strict=True)
        inputs = "{" + ", ".join(f"{f!r}: {v}" for f, v in pairs) + "}"
    return {
        "SIG": sig.params,
        "INPUTS": inputs,
        "CALL": ", ".join(sig.positional + sig.keyword),
        "ARGS": "(" + "".join(f"{a}, " for a in sig.positional) + ")",
        "KWARGS": "{" + ", ".join(packed) + "}",
        "DEFAULTS": "".join(f", {name}" for name in sig.defaults),
    }, sig.defaults, inputs_type


def wrapper_source(sig: Signature | None, is_async: bool) -> tuple[str, dict[str, Any], Any]:
    """The wrapper factory's source, its defaults and the inputs type, for ``sig``."""
    fragments, defaults, inputs_type = _fragments(sig)
    source = TEMPLATE.format(
        ASYNC="async " if is_async else "",
        AWAIT="await " if is_async else "",
        SUFFIX="_async" if is_async else "",
        RECORD=RECORD,
        **SLOT_NUMBERS,
        **fragments,
    )
    return source, defaults, inputs_type


def make_wrapper(
    spec: Any, sig: Signature | None, auto: Callable[..., Any], filename: str
) -> Callable[..., Any]:
    """Compile the wrapper of the action ``spec`` (whose ``func`` has signature ``sig``).

    ``auto`` runs a call made outside any flow in a flow of its own. ``filename`` names
    the generated source (keep one per action: a recompile replaces its lines).
    """
    source, defaults, inputs_type = wrapper_source(sig, spec.is_async)
    make = factory(source, filename, f"{PREFIX}make", RUNTIME)
    wrapper: Callable[..., Any] = make(spec, spec.func, auto, inputs_type, **defaults)
    return wrapper


def recompile(wrapper: Callable[..., Any], fresh: Callable[..., Any]) -> None:
    """Give ``wrapper`` the code of ``fresh``, keeping the object (and its identity).

    Used when ``configure(redact=...)`` changes the secret names compiled into an
    action's wrapper. Only the code changes: the closure (spec, function, inputs type,
    defaults) must have the same shape, which wrappers of one action always have unless
    the signature analysis itself changed (then the caller keeps the old code).
    """
    if wrapper.__code__.co_freevars == fresh.__code__.co_freevars:
        wrapper.__code__ = fresh.__code__
        wrapper.__defaults__ = fresh.__defaults__
        wrapper.__kwdefaults__ = fresh.__kwdefaults__
