"""Recording code you do not own: ``instrument``/``uninstrument`` (docs/reference.md, Across services).

Built on ``wrapt`` as OpenTelemetry's instrumentations are: ``wrap_function_wrapper``
puts a wrapper on the attribute, and a post-import hook applies it when the module is
imported later. ``Patch`` is that mechanism once (the HTTP client integrations use it
too); ``instrument`` records the calls through an ``@action`` built from the original
function, so inputs by parameter name, redaction, async functions and errors behave
exactly as for a decorated function.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections.abc import Callable
from typing import Any, cast

from actiontrace.recording._decorators import action

__all__ = ["Patch", "instrument", "uninstrument"]

log = logging.getLogger("actiontrace")

Wrapper = Callable[[Any, Any, tuple[Any, ...], dict[str, Any]], Any]


def _resolve(module: Any, path: str) -> tuple[Any, str]:
    owner = module
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    if attr not in vars(owner) and not hasattr(owner, attr):
        raise AttributeError(f"{owner!r} has no attribute {attr!r}")
    return owner, attr


class Patch:
    """A wrapt wrapper on ``module:path``, applied now or when the module is imported.

    Args:
        module: the module's import name.
        path: ``"function"`` or ``"Class.method"`` inside it.
        make: builds the wrapper ``(wrapped, instance, args, kwargs)`` from the owner
            object and the attribute name, when the patch is applied.
    """

    def __init__(self, module: str, path: str, make: Callable[[Any, str], Wrapper]) -> None:
        self.module, self.path, self._make = module, path, make
        self._wanted = False
        self._hooked = False
        # owner, attribute, wrapper, whether the owner had the attribute itself (not inherited)
        self._installed: tuple[Any, str, Any, bool] | None = None
        self._lock = threading.RLock()

    @property
    def applied(self) -> bool:
        """Whether the wrapper is on the attribute now."""
        return self._installed is not None

    def apply(self) -> None:
        """Wrap now if the module is imported, else when it is; a second call is a no-op.

        Raises what resolving or wrapping raises when the module is imported already; at
        a later import a failure is logged instead (it must not break the import).
        """
        with self._lock:
            if self._wanted:
                return
            self._wanted = True
        try:
            if self.module in sys.modules:
                self._install(sys.modules[self.module])
        except BaseException:
            self._wanted = False
            raise
        with self._lock:
            hook, self._hooked = not self._hooked, True
        if hook:  # once per Patch: wrapt keeps every hook registered
            import wrapt  # lazily: ~35 ms of every CLI start-up (python -X importtime)

            wrapt.register_post_import_hook(self._on_import, self.module)

    def _install(self, module: Any) -> None:
        with self._lock:
            if not self._wanted or self._installed is not None:
                return
            owner, attr = _resolve(module, self.path)
            own = attr in vars(owner)
            import wrapt

            wrapper = wrapt.wrap_function_wrapper(owner, attr, self._make(owner, attr))
            self._installed = (owner, attr, wrapper, own)

    def _on_import(self, module: Any) -> None:
        try:
            self._install(module)
        except Exception:
            log.warning("actiontrace: cannot instrument %s:%s", self.module, self.path,
                        exc_info=True)

    def remove(self) -> None:
        """Take the wrapper off (and forget a pending post-import application)."""
        with self._lock:
            self._wanted = False
            installed, self._installed = self._installed, None
        if installed is None:
            return
        owner, attr, wrapper, own = installed
        if vars(owner).get(attr) is wrapper:
            if own:
                setattr(owner, attr, wrapper.__wrapped__)
            else:  # it was inherited: inherit it again
                delattr(owner, attr)
        else:  # someone wrapped it again on top of ours: take ours out of the chain
            import wrapt

            unwrap = getattr(wrapt, "unwrap_object", None)
            if unwrap is not None:
                unwrap(owner, attr, wrapper, missing_ok=True)


# -- instrument ------------------------------------------------------------------------

_PATCHES: dict[str, tuple[tuple[str | None, str | None], Patch]] = {}
_PATCHES_LOCK = threading.Lock()


def _split(target: str) -> tuple[str, str]:
    if not isinstance(target, str):
        raise TypeError(f"instrument() needs 'package.module:function', got {target!r}")
    module, sep, path = target.partition(":")
    names = path.split(".")
    if not sep or not module or not all(n.isidentifier() for n in names) or \
            not all(p.isidentifier() for p in module.split(".")):
        raise ValueError(
            f"instrument() target {target!r}: expected 'package.module:function' "
            "or 'package.module:Class.method'"
        )
    return module, path


def _recorder(concept: str | None, name: str | None) -> Callable[[Any, str], Wrapper]:
    def make(owner: Any, attr: str) -> Wrapper:
        raw = inspect.getattr_static(owner, attr)
        decorate = action(name=name, concept=concept)
        if isinstance(raw, staticmethod):
            traced = decorate(raw.__func__)
            bind_instance = False
        elif isinstance(raw, classmethod):
            # @action's classmethod handling (cls left out); typed for functions only.
            traced = cast(Any, decorate)(raw).__func__
            bind_instance = True
        elif inspect.isfunction(raw) or inspect.iscoroutinefunction(raw):
            traced = decorate(raw)
            bind_instance = inspect.isclass(owner)
        else:
            raise TypeError(f"instrument(): {owner!r}.{attr} is not a function or method")

        if not bind_instance:

            def call(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                return traced(*args, **kwargs)

            return call

        def call_bound(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if instance is None:  # Class.method(obj, ...)
                return traced(*args, **kwargs)
            return traced(instance, *args, **kwargs)

        return call_bound

    return make


def instrument(target: str, concept: str | None = None, name: str | None = None) -> None:
    """Record every call of ``target`` as ``@action`` would, without touching its source.

    Applied now if the module is imported, else when it is imported. Instrumenting the
    same target twice is a no-op (with other ``concept``/``name``, the new ones apply).

    Args:
        target: ``"package.module:function"`` or ``"package.module:Class.method"``.
        concept: the concept URI (default as ``@action``: ``"{module}::{Class}"`` for a
            method, ``"{module}"`` for a function).
        name: the action name (default: the function's name).

    Raises:
        ValueError: ``target`` is not of that form.
        AttributeError: the module is imported and has no such attribute.
        TypeError: the attribute is not a function or method.
    """
    module, path = _split(target)
    with _PATCHES_LOCK:
        known = _PATCHES.get(target)
        if known is not None and known[0] == (concept, name):
            return
        if known is not None:
            known[1].remove()
        patch = Patch(module, path, _recorder(concept, name))
        _PATCHES[target] = ((concept, name), patch)
    try:
        patch.apply()
    except BaseException:
        with _PATCHES_LOCK:
            _PATCHES.pop(target, None)
        raise


def uninstrument(target: str) -> None:
    """Stop recording ``target`` (also if it was waiting for its module's import)."""
    _split(target)
    with _PATCHES_LOCK:
        known = _PATCHES.pop(target, None)
    if known is not None:
        known[1].remove()
