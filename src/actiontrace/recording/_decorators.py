"""``@concept``, ``@action`` and ``@synchronization``: capture calls and their causes.

The per-call work of ``@action`` is one generated wrapper per decorated function. The
same template is rendered twice, once plain and once ``async def`` with ``await``, so
an async action's timing, error capture and context reset wrap the awaited body, not
the creation of the coroutine.

Why not ``wrapt`` (which the contract names): a ``wrapt.FunctionWrapper`` costs ~550 ns per
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
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, overload

from actiontrace._model import ActionRecord
from actiontrace._state import at_fork, on_change, recording_enabled, settings
from actiontrace.recording import _codegen, _ids
from actiontrace.recording._calls import auto_flow, auto_flow_async, capture_inputs
from actiontrace.recording._capture import capture_error, capture_value, encode
from actiontrace.recording._context import frame_var, state
from actiontrace.recording._generators import async_generator_wrapper, generator_wrapper
from actiontrace.recording._layout import DEPTH, ID, OWNER, PART, TRIGGER, Frame, sync_frame
from actiontrace.recording._reactions import REACTIONS, Reaction, leave_frame, react, react_async

__all__ = ["ActionSpec", "action", "concept", "synchronization"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
SPEC_ATTR = "__actiontrace_spec__"


def _kind(func: Callable[..., Any]) -> str:
    """``"sync"``, ``"async"``, ``"generator"`` or ``"asyncgen"``: how a call runs."""
    probe = func
    if not (inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func)
            or isinstance(func, functools.partial)):
        probe = type(func).__call__  # a callable object: what its calls run
    if inspect.isasyncgenfunction(probe):
        return "asyncgen"
    if inspect.isgeneratorfunction(probe):
        return "generator"
    if inspect.iscoroutinefunction(probe):
        return "async"
    return "sync"


class ActionSpec:
    """What a decorated action is: its names, redaction and reactions."""

    __slots__ = (
        "__weakref__",
        "bind",
        "binder_filename",
        "concept_uri",
        "drop_first",
        "explicit_concept",
        "extra_redact",
        "filename",
        "func",
        "is_async",
        "kind",
        "name",
        "reactions",
        "redactor",
        "wrapper",
    )

    def __init__(
        self, func: Callable[..., Any], concept_uri: str, name: str, explicit: bool,
        drop_first: bool, extra_redact: tuple[str, ...],
    ) -> None:
        self.func = func
        self.concept_uri = concept_uri
        self.name = name
        self.explicit_concept = explicit
        self.kind = _kind(func)
        self.is_async = self.kind in ("async", "asyncgen")  # reactions may be async
        self.drop_first = drop_first
        self.extra_redact = extra_redact
        self.reactions = REACTIONS.setdefault(self.key, [])
        self.wrapper: Callable[..., Any] | None = None
        self.filename = _codegen.filename_for("wrapper", func)
        self.binder_filename = _codegen.filename_for("binder", func)
        self.compile()
        _SPECS.add(self)

    def compile(self) -> Callable[..., Any] | None:
        """(Re)build the redactor, binder and wrapper from the global settings.

        One signature analysis serves the binder and the wrapper. Secret parameter
        names are compiled into both, so a later ``configure(redact=...)`` calls this
        again: the binder is replaced and the wrapper *recompiled* in place
        (``_codegen.recompile``), so the decorated object that classes and modules
        already hold stays the same. Returns the fresh wrapper (None for generators,
        whose wrappers are not generated).
        """
        base = settings.redactor
        self.redactor = base.extended(self.extra_redact) if self.extra_redact else base
        sig = _codegen.analyse(self.func, self.drop_first, self.redactor)
        self.bind = _codegen.make_binder(self.func, sig, self.binder_filename)  # slow paths
        if self.kind not in ("sync", "async"):
            return None
        auto = auto_flow_async if self.is_async else auto_flow
        fresh = _codegen.make_wrapper(self, sig, auto, self.filename)
        if self.wrapper is not None:
            _codegen.recompile(self.wrapper, fresh)
        return fresh

    @property
    def key(self) -> str:
        return f"{self.concept_uri}::{self.name}"

    def rename_concept(self, concept_uri: str) -> None:
        """Move to a new concept URI, keeping the reactions already declared."""
        old = self.reactions
        self.concept_uri = concept_uri
        self.reactions = REACTIONS.setdefault(self.key, [])
        self.reactions.extend(r for r in old if r not in self.reactions)


_SPECS: weakref.WeakSet[ActionSpec] = weakref.WeakSet()


def recompile_all() -> None:
    """Apply changed settings (``configure(redact=...)``) to every action decorated so far."""
    for spec in list(_SPECS):
        spec.compile()


def refresh_runtime() -> None:
    """Give every generated wrapper the current runtime values (see ``_codegen``).

    Runs at import, after ``configure`` and in a forked child, after the id counter
    was reseeded (the counter's ``__next__`` is one of the values).
    """
    _codegen.set_runtime(
        disabled=not recording_enabled(),
        get=frame_var.get,
        set=frame_var.set,
        tuple=tuple,
        perf=_ids.perf_ns,
        next=_ids.local_counter.__next__,
        encode=encode,
        capture_value=capture_value,
        capture_error=capture_error,
        capture_inputs=capture_inputs,
        react=react,
        react_async=react_async,
    )


refresh_runtime()
on_change(refresh_runtime)
on_change(recompile_all)
at_fork("wrappers", after_in_child=refresh_runtime)

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
    plain = inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func)
    default_name = getattr(func, "__name__", None)  # a callable object: its class's name
    spec = ActionSpec(
        func, concept_uri or default_uri, name or default_name or type(func).__name__,
        concept_uri is not None, drop_first, tuple(redact),
    )
    if spec.kind == "generator":
        wrapper: Callable[..., Any] | None = generator_wrapper(spec)
    elif spec.kind == "asyncgen":
        wrapper = async_generator_wrapper(spec)
    else:
        wrapper = spec.compile()
    assert wrapper is not None
    spec.wrapper = wrapper
    if plain:
        functools.update_wrapper(wrapper, func)
    else:  # a callable object: its class's name and doc, not a copy of its attributes
        functools.update_wrapper(wrapper, func, updated=())
        wrapper.__name__ = wrapper.__qualname__ = spec.name
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


def action(
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
    ``classmethod``/``staticmethod`` objects, ``async def`` functions, generator and
    async generator functions (one action over the whole iteration) and callable
    objects (``action(obj)``; the name defaults to the object's class name). A class
    is refused with a ``TypeError``: decorate its methods instead.

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
        if inspect.isclass(target):
            raise TypeError(
                f"@action decorates functions and methods, not the class {target.__name__}:"
                " decorate its methods (and name its concept with @concept)"
            )
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


_get, _set = frame_var.get, frame_var.set


def _direct_sync_frame(cur: Frame, last: int | None, name: str) -> Frame:
    """The frame of a synchronization called directly inside ``cur`` (docs/reference.md,
    Decorators).

    ``last`` is the action most recently completed in ``cur``'s owner, in this context.
    """
    owner = cur[OWNER] or cur
    trigger = last
    if trigger is None:
        trigger = owner[ID]
    if trigger is None:  # a base frame: continue_flow's trigger, else the flow root
        trigger = cur[TRIGGER] if cur[TRIGGER] is not None else cur[PART].root_id
    return sync_frame(cur[PART], owner, name if trigger is not None else None, trigger,
                      cur[DEPTH])


def _target_key(when: Any) -> tuple[str, ActionSpec | None]:
    if isinstance(when, str):
        if "::" not in when:
            raise ValueError(f"when={when!r}: expected 'concept_uri::action'")
        return when, None
    spec = _spec_of(when) or _spec_of(getattr(when, "__func__", None))
    if spec is None:
        raise TypeError(f"when={when!r} is not an @action (or a 'concept_uri::action' string)")
    return spec.key, spec


@overload
def synchronization(func: F, /) -> F: ...
@overload
def synchronization(
    name: str | None = None, /, *, when: Any = None,
    where: Callable[[ActionRecord], bool] | None = None,
) -> Callable[[F], F]: ...
@overload
def synchronization(
    *, name: str | None = None, when: Any = None,
    where: Callable[[ActionRecord], bool] | None = None,
) -> Callable[[F], F]: ...


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
    trigger (docs/reference.md, Decorators). With ``when=Concept.action`` (or ``"concept_uri::action"``) it
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
                cur, last = state()
                if cur is None:
                    return await func(*args, **kwargs)
                _set((_direct_sync_frame(cur, last, sync_name), last))
                try:
                    return await func(*args, **kwargs)
                finally:
                    leave_frame(cur)

            wrapper: Callable[..., Any] = run_async
        else:

            def run(*args: Any, **kwargs: Any) -> Any:
                # state(), leave_frame() and _direct_sync_frame() inlined: a seed-shaped
                # request runs two of these (callgrind, per call: 12,100 -> 7,850
                # instructions; 7,900 -> 7,450 for _direct_sync_frame's).
                cur: Any = _get()
                if cur.__class__ is tuple:
                    cur, last = cur
                    if cur is None:
                        return func(*args, **kwargs)
                else:
                    last = None
                owner = cur[OWNER] or cur
                trigger = owner[ID] if last is None else last
                if trigger is None:  # a base frame: continue_flow's trigger, else the flow root
                    trigger = cur[TRIGGER] if cur[TRIGGER] is not None else cur[PART].root_id
                _set((sync_frame(cur[PART], owner, sync_name if trigger is not None else None,
                                 trigger, cur[DEPTH]), last))
                try:
                    return func(*args, **kwargs)
                finally:  # back to cur, keeping what completed inside (leave_frame)
                    done: Any = _get()
                    if done.__class__ is tuple:
                        _, last = done
                        _set((cur, last))
                    else:
                        _set((cur, None))

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
            (spec.reactions if spec is not None else REACTIONS.setdefault(key, [])).append(
                reaction
            )
        return wrapper  # type: ignore[return-value]

    if name_or_func is not None:
        return decorate(name_or_func)
    return decorate
