"""``@concept``, ``@action`` and ``@synchronization``: capture calls and their causes.

The per-call work of ``@action`` is one generated wrapper per decorated function. The
same template is rendered twice, once plain and once ``async def`` with ``await``, so
an async action's timing, error capture and context reset wrap the awaited body, not
the creation of the coroutine.

Why not ``wrapt`` (which API.md names): a ``wrapt.FunctionWrapper`` costs ~550 ns per
call on our machines before the wrapper does anything, against ~120 ns for a plain
function wrapper, i.e. more than a third of the 1.5 µs budget for the whole recording
(docs/performance.md). Plain wrappers keep what wrapt would give us: they bind as
methods, ``functools.update_wrapper`` keeps the name, docstring, ``__wrapped__`` and so
``inspect.signature``, and an async wrapper is still a coroutine function.
``classmethod`` and ``staticmethod`` objects are unwrapped and wrapped again.
"""

from __future__ import annotations

import functools
import inspect
import os
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from actiontrace import _ids
from actiontrace._capture import (
    Redactor,
    capture_error,
    capture_fallback,
    capture_value,
    encode,
    finish,
    make_binder,
    settings,
)
from actiontrace._context import current_frame, current_recorder
from actiontrace._exceptions import ReactionLimitError
from actiontrace._record import ActionRow, record_from_row
from actiontrace._model import ActionRecord

__all__ = ["ActionSpec", "action", "concept", "synchronization"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
SPEC_ATTR = "__actiontrace_spec__"


class Reaction:
    """A declared reaction: ``func(record)`` runs after a matching action succeeds."""

    __slots__ = ("name", "func", "where", "is_async")

    def __init__(self, name: str, func: Callable[..., Any], where: Callable[..., Any] | None):
        self.name = name
        self.func = func
        self.where = where
        self.is_async = inspect.iscoroutinefunction(func)


_SPECS: weakref.WeakSet[ActionSpec] = weakref.WeakSet()


def refresh_all_redaction() -> None:
    """Apply a changed ``configure(redact=...)`` to every action decorated so far."""
    for spec in list(_SPECS):
        spec.refresh_redaction()


# Reactions by "concept_uri::action"; an ActionSpec holds the list for its own key, so a
# reaction declared after the action is seen by it without any per-call lookup.
_REACTIONS: dict[str, list[Reaction]] = {}


class ActionSpec:
    """What a decorated action is: its names, redaction and reactions."""

    __slots__ = (
        "concept_uri", "name", "redactor", "reactions", "explicit_concept", "is_async",
        "func", "drop_first", "extra_redact", "bind", "__weakref__",
    )

    def __init__(
        self, func: Callable[..., Any], concept_uri: str, name: str, explicit: bool,
        drop_first: bool, extra_redact: tuple[str, ...],
    ) -> None:
        self.func = func
        self.concept_uri = concept_uri
        self.name = name
        self.explicit_concept = explicit
        self.is_async = inspect.iscoroutinefunction(func)
        self.drop_first = drop_first
        self.extra_redact = extra_redact
        self.reactions = _REACTIONS.setdefault(self.key, [])
        self.refresh_redaction()
        _SPECS.add(self)

    def refresh_redaction(self) -> None:
        """(Re)build the redactor and argument binder from the global settings."""
        base = settings.redactor
        self.redactor = base.extended(self.extra_redact) if self.extra_redact else base
        self.bind = make_binder(self.func, self.drop_first, self.redactor)

    @property
    def key(self) -> str:
        return f"{self.concept_uri}::{self.name}"

    def rename_concept(self, concept_uri: str) -> None:
        """Move to a new concept URI, keeping the reactions already declared."""
        old = self.reactions
        self.concept_uri = concept_uri
        self.reactions = _REACTIONS.setdefault(self.key, [])
        self.reactions.extend(r for r in old if r not in self.reactions)


# --- the hot path -----------------------------------------------------------------------

# Shared globals of every generated wrapper; refreshed after fork (the id generator is
# reseeded there). Globals of one dict are cheaper to read than module attributes.
_HOT: dict[str, Any] = {}


def _refresh_hot() -> None:
    _HOT.update(
        _get=current_frame.get,
        _set=current_frame.set,
        _reset=current_frame.reset,
        _perf=_ids.perf_ns,
        _OFF=_ids.EPOCH_OFFSET_NS,
        _FIXED=_ids.FIXED_BITS,
        _next=_ids.counter.__next__,
        _encode=encode,
        _finish=finish,
        _settings=settings,
        _capture_value=capture_value,
        _capture_error=capture_error,
        _capture_inputs=_capture_inputs,
        _react=_react,
        _react_async=_react_async,
    )


# Measured on the reference machine (docs/performance.md): this body costs ~0.9 µs per
# call above the bare call. Keep per-call work to list appends and local arithmetic.
_TEMPLATE = """
def make(spec, func, auto_flow):
    {ASYNC}def wrapper(*args, **kwargs):
        cur = _get()
        if cur is None:
            return {AWAIT}auto_flow(wrapper, func, args, kwargs)
        part = cur[0]
        t0 = _perf()
        ts = (t0 + _OFF) // 1000
        aid = ((ts // 1000) << 80) | _FIXED | (_next() & 0xFFFFFFFFFF)
        try:
            inputs = _encode(spec.bind(*args, **kwargs))
            if inputs.find(b"{{", 1) > 0 or len(inputs) > _settings.max_value_bytes:
                inputs = _finish(inputs, spec.redactor)
        except BaseException:
            inputs = _capture_inputs(spec.bind, args, kwargs, spec.redactor)
        owner = cur[3] or cur
        rec = [spec, aid, owner[1], ts, None, "running", inputs, None]
        part.records.append(rec)
        if cur[4] is not None:
            part.edges.append((cur[5], aid, cur[4], ts))
        token = _set([part, aid, None, None, None, None, cur[6]])
        try:
            result = {AWAIT}func(*args, **kwargs)
        except BaseException as exc:
            rec[4] = (_perf() - t0) // 1000
            rec[7] = _capture_error(exc, spec.redactor)
            rec[5] = "error"
            owner[2] = aid
            raise
        finally:
            _reset(token)
        rec[4] = (_perf() - t0) // 1000
        try:
            out = _encode(result)
            if b"{{" in out or len(out) > _settings.max_value_bytes:
                out = _finish(out, spec.redactor)
        except BaseException:
            out = _capture_value(result, spec.redactor)
        rec[7] = out
        rec[5] = "ok"
        owner[2] = aid
        if spec.reactions:
            {AWAIT}_react{SUFFIX}(spec, rec, part, owner, cur[6])
        return result
    return wrapper
"""


def _compile(is_async: bool) -> Callable[..., Callable[..., Any]]:
    source = _TEMPLATE.format(
        ASYNC="async " if is_async else "",
        AWAIT="await " if is_async else "",
        SUFFIX="_async" if is_async else "",
    )
    exec(source, _HOT)  # noqa: S102 - our own template
    make: Callable[..., Callable[..., Any]] = _HOT.pop("make")
    return make


def _capture_inputs(bind: Callable[..., Any], args: Any, kwargs: Any, redactor: Redactor) -> bytes:
    try:
        return capture_value(bind(*args, **kwargs), redactor)
    except BaseException:  # the call does not match the signature (it will raise itself)
        return capture_fallback(args, kwargs, redactor)


def _auto_flow(wrapper: Callable[..., Any], func: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    """Run a root action (no flow active) in a flow of its own."""
    try:
        recorder = current_recorder()
        part = recorder._open(_ids.new_id(), None, _ids.now_us())
        token = current_frame.set([part, None, None, None, None, None, 0])
    except BaseException:  # tracing must not stop the call
        return func(*args, **kwargs)
    try:
        return wrapper(*args, **kwargs)
    finally:
        current_frame.reset(token)
        _end_auto_flow(part)


async def _auto_flow_async(
    wrapper: Callable[..., Any], func: Callable[..., Any], args: Any, kwargs: Any
) -> Any:
    try:
        recorder = current_recorder()
        part = recorder._open(_ids.new_id(), None, _ids.now_us())
        token = current_frame.set([part, None, None, None, None, None, 0])
    except BaseException:
        return await func(*args, **kwargs)
    try:
        return await wrapper(*args, **kwargs)
    finally:
        current_frame.reset(token)
        _end_auto_flow(part)


def _end_auto_flow(part: Any) -> None:
    if part.records:
        part.root_id = part.records[0][1]
        part.created_at = part.records[0][3]
    part.sink._close(part)


def _record_of(spec: ActionSpec, rec: list[Any], part: Any) -> ActionRecord:
    return record_from_row(
        ActionRow(rec[1], part.token, rec[2], spec.concept_uri, spec.name, rec[3], rec[4],
                  rec[5], rec[6], rec[7])
    )


def _reactions_to_run(spec: ActionSpec, record: ActionRecord, depth: int, part: Any):  # type: ignore[no-untyped-def]
    limit = part.sink.max_reaction_depth
    for reaction in list(spec.reactions):
        if reaction.where is not None and not reaction.where(record):
            continue
        if depth >= limit:
            raise ReactionLimitError(
                f"declared reactions nested deeper than max_reaction_depth={limit} "
                f"(at {reaction.name!r} reacting to {spec.key!r})"
            )
        yield reaction


def _react(spec: ActionSpec, rec: list[Any], part: Any, owner: list[Any], depth: int) -> None:
    """Run the declared reactions to a sync action that just succeeded."""
    record = _record_of(spec, rec, part)
    for reaction in _reactions_to_run(spec, record, depth, part):
        token = current_frame.set([part, None, None, owner, reaction.name, rec[1], depth + 1])
        try:
            result = reaction.func(record)
        finally:
            current_frame.reset(token)
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            raise TypeError(
                f"reaction {reaction.name!r} is async but {spec.key!r} is a sync action: "
                "reactions to a sync action must be sync functions"
            )


async def _react_async(
    spec: ActionSpec, rec: list[Any], part: Any, owner: list[Any], depth: int
) -> None:
    """Run the declared reactions to an async action; they may be sync or async."""
    record = _record_of(spec, rec, part)
    for reaction in _reactions_to_run(spec, record, depth, part):
        token = current_frame.set([part, None, None, owner, reaction.name, rec[1], depth + 1])
        try:
            result = reaction.func(record)
            if inspect.isawaitable(result):
                await result
        finally:
            current_frame.reset(token)


_refresh_hot()
_MAKE_SYNC = _compile(False)
_MAKE_ASYNC = _compile(True)
os.register_at_fork(after_in_child=_refresh_hot)


# --- @action --------------------------------------------------------------------------


def _default_concept(func: Callable[..., Any]) -> tuple[str, bool]:
    """``"{module}::{ClassQualname}"`` for a method, ``"{module}"`` for a function."""
    module = getattr(func, "__module__", None) or "__main__"
    qualname = getattr(func, "__qualname__", "")
    owner, _, _ = qualname.rpartition(".")
    if owner and not owner.endswith("<locals>"):
        return f"{module}::{owner}", True
    return module, False


def _wrap_function(
    func: Callable[..., Any],
    name: str | None,
    concept_uri: str | None,
    redact: Iterable[str],
    bound_kind: str | None,
) -> Callable[..., Any]:
    default_uri, in_class = _default_concept(func)
    try:
        first = next(iter(inspect.signature(func).parameters.values()), None)
    except (TypeError, ValueError):
        first = None
    drop_first = (
        first is not None
        and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
        and (bound_kind == "classmethod" or (in_class and first.name in ("self", "cls")))
    )
    spec = ActionSpec(
        func, concept_uri or default_uri, name or func.__name__, concept_uri is not None,
        drop_first, tuple(redact),
    )
    if spec.is_async:
        wrapper = _MAKE_ASYNC(spec, func, _auto_flow_async)
    else:
        wrapper = _MAKE_SYNC(spec, func, _auto_flow)
    functools.update_wrapper(wrapper, func)
    setattr(wrapper, SPEC_ATTR, spec)
    return wrapper


@overload
def action(func: F, /) -> F: ...
@overload
def action(
    name: str | None = None, /, *, concept: str | None = None, redact: Iterable[str] = ()
) -> Callable[[F], F]: ...
@overload
def action(
    *, name: str | None = None, concept: str | None = None, redact: Iterable[str] = ()
) -> Callable[[F], F]: ...


def action(  # type: ignore[misc]
    func_or_name: Any = None,
    /,
    *,
    name: str | None = None,
    concept: str | None = None,
    redact: Iterable[str] = (),
) -> Any:
    """Record every call of the decorated function or method as an action.

    Usable bare (``@action``) or with options: ``@action("name")``,
    ``@action(name=..., concept=..., redact=[...])``. Works on functions, methods,
    ``classmethod``/``staticmethod`` objects and ``async def`` functions.

    Args:
        name: the action's name (default: the function's ``__name__``).
        concept: the concept URI (default: the class's ``@concept`` URI, else
            ``"{module}::{ClassQualname}"`` for methods and ``"{module}"`` for functions).
        redact: more parameter and key names to store as ``"[REDACTED]"``.
    """
    if isinstance(func_or_name, str):
        if name is not None:
            raise TypeError("give the action's name once: @action('x') or @action(name='x')")
        name, func_or_name = func_or_name, None
    redact = (redact,) if isinstance(redact, str) else tuple(redact)

    def decorate(target: Any) -> Any:
        if isinstance(target, classmethod | staticmethod):
            kind = "classmethod" if isinstance(target, classmethod) else "staticmethod"
            inner = _wrap_function(target.__func__, name, concept, redact, kind)
            return type(target)(inner)
        if not callable(target):
            raise TypeError(f"@action decorates functions and methods, not {target!r}")
        return _wrap_function(target, name, concept, redact, None)

    if func_or_name is None:
        return decorate
    return decorate(func_or_name)


def _spec_of(obj: Any) -> ActionSpec | None:
    if isinstance(obj, classmethod | staticmethod):
        obj = obj.__func__
    spec = getattr(obj, SPEC_ATTR, None)
    return spec if isinstance(spec, ActionSpec) else None


def concept(uri: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: the concept URI of the actions the class defines.

    Only the methods defined in the class body itself are named; an ``@action(concept=)``
    keeps its own URI, and a subclass's ``@concept`` does not rename inherited methods.
    """
    if not isinstance(uri, str) or not uri:
        raise TypeError("@concept needs a URI string, e.g. @concept('app::AudioPlayer')")

    def decorate(cls: type[T]) -> type[T]:
        for value in vars(cls).values():
            spec = _spec_of(value)
            if spec is not None and not spec.explicit_concept:
                spec.rename_concept(uri)
        cls.__concept_uri__ = uri  # type: ignore[attr-defined]
        return cls

    return decorate


# --- @synchronization ---------------------------------------------------------------------


def _sync_frame(cur: list[Any], name: str) -> list[Any]:
    """The frame of a synchronization called directly inside ``cur`` (API.md §2)."""
    owner = cur[3] or cur
    trigger = owner[2]
    if trigger is None:
        trigger = owner[1]
    if trigger is None:  # a base frame: continue_flow's trigger, else the flow root
        trigger = cur[5] if cur[5] is not None else cur[0].root_id
    return [cur[0], None, None, owner, name if trigger is not None else None, trigger, cur[6]]


def _target_key(when: Any) -> tuple[str, ActionSpec | None]:
    if isinstance(when, str):
        if "::" not in when:
            raise ValueError(f"when={when!r}: expected 'concept_uri::action'")
        return when, None
    spec = _spec_of(when) or _spec_of(getattr(when, "__func__", None))
    if spec is None:
        raise TypeError(f"when={when!r} is not an @action (or a 'concept_uri::action' string)")
    return spec.key, spec


def synchronization(
    name_or_func: Any = None,
    /,
    *,
    name: str | None = None,
    when: Any = None,
    where: Callable[[ActionRecord], bool] | None = None,
) -> Any:
    """Mark a function (sync or async) as a synchronization between concepts.

    Every ``@action`` it calls directly gets a provenance edge from the synchronization's
    trigger (API.md §2). With ``when=Concept.action`` (or ``"concept_uri::action"``) it
    is also a declared reaction: it is called with the triggering ``ActionRecord`` right
    after each successful matching action, when ``where(record)`` is true.

    Usable as ``@synchronization``, ``@synchronization("Name")`` or with keywords.
    """
    if isinstance(name_or_func, str):
        name, name_or_func = name_or_func, None

    def decorate(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@synchronization decorates functions, not {func!r}")
        sync_name = name or func.__name__
        if inspect.iscoroutinefunction(func):

            async def run_async(*args: Any, **kwargs: Any) -> Any:
                cur = current_frame.get()
                if cur is None:
                    return await func(*args, **kwargs)
                token = current_frame.set(_sync_frame(cur, sync_name))
                try:
                    return await func(*args, **kwargs)
                finally:
                    current_frame.reset(token)

            wrapper: Callable[..., Any] = run_async
        else:

            def run(*args: Any, **kwargs: Any) -> Any:
                cur = current_frame.get()
                if cur is None:
                    return func(*args, **kwargs)
                token = current_frame.set(_sync_frame(cur, sync_name))
                try:
                    return func(*args, **kwargs)
                finally:
                    current_frame.reset(token)

            wrapper = run
        functools.update_wrapper(wrapper, func)
        wrapper.__synchronization__ = sync_name  # type: ignore[attr-defined]
        if when is not None:
            key, spec = _target_key(when)
            reaction = Reaction(sync_name, func, where)
            if spec is not None and not spec.is_async and reaction.is_async:
                raise TypeError(
                    f"reaction {sync_name!r} is async but {key!r} is a sync action: "
                    "reactions to a sync action must be sync functions"
                )
            (spec.reactions if spec is not None else _REACTIONS.setdefault(key, [])).append(
                reaction
            )
        return wrapper  # type: ignore[return-value]

    if name_or_func is not None:
        return decorate(name_or_func)
    return decorate
