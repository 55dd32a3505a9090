"""The global state department: every process-wide setting, and fork handling.

All mutable global state of the package lives here (as structlog's ``_config.py``):

* ``settings``: what capture compiles in or reads per value (the redactor, the size
  limit), changed by ``configure``;
* the current recorder (the global ``ActionTracer``), how to build the default one, and
  whether recording is enabled;
* the listeners told when configuration changes (the decorators recompile then);
* the fork hooks, run in one declared order (``FORK_STEPS``) whatever order the
  modules registering them were imported in: the id generator is reseeded before the
  wrappers are given its new counter, and both before the writer and the storages
  forget their parent's threads and connections. Hooks for children started by
  ``multiprocessing`` only (``in_multiprocessing_child``) run in the same order, from
  the writer's multiprocessing after-fork hook.

Nothing here imports below the recording side: the writer and the storages register
their hooks from their own modules.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from actiontrace.recording._redact import DEFAULT_REDACT, Redactor

if TYPE_CHECKING:
    from actiontrace.recording._context import Recorder

__all__ = [
    "FORK_STEPS", "Settings", "after_multiprocessing_fork", "at_fork", "current_recorder", "install", "on_change",
    "recording_enabled", "set_enabled", "set_factory", "settings", "settings_changed",
]

MAX_VALUE_BYTES = 64 * 1024


class Settings:
    """Process-wide capture settings, changed by ``configure()``."""

    __slots__ = ("max_value_bytes", "redactor")

    def __init__(self) -> None:
        self.max_value_bytes = MAX_VALUE_BYTES
        self.redactor = Redactor(DEFAULT_REDACT)


settings = Settings()

# configure() holds this while it swaps the tracer and the settings.
config_lock = threading.Lock()


class _Runtime:
    recorder: Recorder | None = None
    factory: Callable[[], Recorder] | None = None
    enabled = True
    listeners: list[Callable[[], None]] = []  # noqa: RUF012 - one list, process-wide


def on_change(listener: Callable[[], None]) -> None:
    """Call ``listener`` after configure() changes settings the decorators compiled in."""
    _Runtime.listeners.append(listener)


def settings_changed() -> None:
    """Tell the listeners (the decorators) that configuration changed."""
    for listener in list(_Runtime.listeners):
        listener()


def recording_enabled() -> bool:
    """False after ``configure(enabled=False)``: decorated calls go straight through."""
    return _Runtime.enabled


def set_enabled(flag: bool, notify: bool = True) -> None:
    """Switch recording on or off for the whole process."""
    _Runtime.enabled = bool(flag)
    if notify:
        settings_changed()


def install(recorder: Recorder | None) -> Recorder | None:
    """Make ``recorder`` the global one (``configure`` does this); return the old one."""
    old, _Runtime.recorder = _Runtime.recorder, recorder
    return old


def set_factory(factory: Callable[[], Recorder]) -> None:
    """Register how to build the default recorder on first use."""
    _Runtime.factory = factory


def current_recorder() -> Recorder:
    """The global recorder, built with the defaults on first use."""
    rec = _Runtime.recorder
    if rec is None:
        assert _Runtime.factory is not None, "actiontrace._tracer was not imported"
        rec = _Runtime.recorder = _Runtime.factory()
    return rec


# --- fork ---------------------------------------------------------------------------------

# The order hooks run in after a fork (and, reversed, before one). A step's hooks run in
# registration order.
FORK_STEPS = (
    "ids",  # _ids: a new epoch offset, new random bits, a new counter
    "wrappers",  # _decorators: the generated wrappers' runtime (the counter's __next__)
    "context",  # _context: what the parent was recording is not the child's
    # storage._migrate: a fork waits for a schema being created on first use; after the
    # writer's wait for its write in flight (before hooks run in reverse), so the two
    # locks are always taken in one order
    "schema",
    # storage._engine: a fork waits for the SQLite calls other threads are in (queries);
    # after the writer's wait, before the schema's: the order the threads take them in
    "sqlite",
    "writer",  # _writer: no writer thread, an empty buffer
    "storage",  # storage: engines drop the parent's connections
)

Hook = Callable[[], Any]
_PHASES = ("before", "parent", "child", "multiprocessing")
_hooks: dict[str, dict[str, list[Hook]]] = {
    phase: {step: [] for step in FORK_STEPS} for phase in _PHASES
}


def at_fork(
    step: str, *, before: Hook | None = None, after_in_parent: Hook | None = None,
    after_in_child: Hook | None = None, in_multiprocessing_child: Hook | None = None,
) -> None:
    """Register fork hooks for ``step`` (one of ``FORK_STEPS``).

    Hooks run in ``FORK_STEPS`` order after a fork, in reverse order before one, so
    "the id reseed before the wrapper refresh" holds whatever the import order.
    """
    if step not in FORK_STEPS:
        raise ValueError(f"unknown fork step {step!r}; steps: {', '.join(FORK_STEPS)}")
    for phase, hook in (("before", before), ("parent", after_in_parent),
                        ("child", after_in_child),
                        ("multiprocessing", in_multiprocessing_child)):
        if hook is not None:
            _hooks[phase][step].append(hook)


def _run(phase: str, steps: tuple[str, ...]) -> None:
    for step in steps:
        for hook in _hooks[phase][step]:
            hook()


def _before_fork() -> None:
    _run("before", FORK_STEPS[::-1])


def _after_fork_in_parent() -> None:
    _run("parent", FORK_STEPS)


def _after_fork_in_child() -> None:
    _run("child", FORK_STEPS)


def after_multiprocessing_fork() -> None:
    """Run the hooks for a child ``multiprocessing`` started; none of them may stop it."""
    for step in FORK_STEPS:
        for hook in _hooks["multiprocessing"][step]:
            try:
                hook()
            except Exception:  # a child must start whatever happens here
                logging.getLogger("actiontrace").exception(
                    "actiontrace: child process hook failed")


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
