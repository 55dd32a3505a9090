"""The writer's process life: fork, exit, and children started by ``multiprocessing``.

Every live ``Writer`` is in ``WRITERS``. At ``fork`` (through ``_state``'s ordered
steps, as the "writer" step) a writer holds its I/O lock across the fork and the child
starts empty; at exit every busy writer is flushed (``atexit``, and in a
multiprocessing child, a multiprocessing finalizer, since such a child never runs
``atexit``). Writers are reached through the methods they share (``WriterLike``), so
this module never imports the writer.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
import weakref
from typing import Any, Protocol

from actiontrace._state import after_multiprocessing_fork, at_fork

__all__ = ["WRITERS", "WriterLike", "hook_child_exit", "register_child_hooks"]


class WriterLike(Protocol):
    """What a process event does to a writer (``_writer.Writer``)."""

    @property
    def running(self) -> bool: ...

    def busy(self) -> bool: ...

    def stop(self, timeout: float | None = ...) -> bool: ...

    def before_fork(self, wait: float) -> None: ...

    def after_fork_in_parent(self) -> None: ...

    def after_fork_in_child(self) -> None: ...


WRITERS: weakref.WeakSet[WriterLike] = weakref.WeakSet()


FORK_WAIT = 5.0  # seconds a fork waits for a write in flight before going ahead


def _before_fork() -> None:
    register_child_hooks()  # multiprocessing is imported by now if it is forking
    for writer in list(WRITERS):
        writer.before_fork(FORK_WAIT)


def _after_fork_in_parent() -> None:
    for writer in list(WRITERS):
        writer.after_fork_in_parent()


def _after_fork_in_child() -> None:
    for writer in list(WRITERS):
        writer.after_fork_in_child()


def _flush_all_at_exit() -> None:
    timeout = float(os.environ.get("ACTIONTRACE_EXIT_TIMEOUT", "10"))
    deadline = time.monotonic() + timeout
    for writer in list(WRITERS):
        if writer.busy():
            writer.stop(max(deadline - time.monotonic(), 0.1))


# -- exit of a process started by multiprocessing ---------------------------------------------
#
# Such a process never runs `atexit` hooks when it was forked (fork, forkserver, and every
# Pool or ProcessPoolExecutor worker so started): BaseProcess._bootstrap runs the target,
# then multiprocessing.util._exit_function() (its own finalizers), then the process ends
# with os._exit(). So the exit flush is registered there too, as a finalizer of
# `multiprocessing.util`. _bootstrap clears the finalizers inherited from the parent
# before it calls the target, so the hook is (re)registered in the child: when its first
# writer starts (always inside the target, after that clearing), and from multiprocessing's
# own after-fork hooks for a child that starts one earlier (a spawned child importing a
# main module that records at import time).

_child_exit: Any = None  # this process's multiprocessing.util.Finalize, if any
# Runs after any finalizer of default priority (0) and after the children of this process
# were joined: whatever they record first is flushed too.
CHILD_EXIT_PRIORITY = -100


def hook_child_exit() -> None:
    """In a multiprocessing child, flush at its exit too (once per process)."""
    global _child_exit
    process = sys.modules.get("multiprocessing.process")
    if process is None or process.parent_process() is None:
        return  # not started by multiprocessing: atexit does it
    if _child_exit is not None and _child_exit.still_active():
        return
    from multiprocessing import util

    _child_exit = util.Finalize(None, _flush_all_at_exit, exitpriority=CHILD_EXIT_PRIORITY)


class _AfterForkToken:
    """A weak-referenceable object multiprocessing's after-fork registry holds."""


_AFTER_FORK = _AfterForkToken()


_registered_in: int | None = None  # the pid whose multiprocessing registry has our hook


def _mp_after_fork(_token: object) -> None:
    # The layers' hooks for a multiprocessing child (_state.at_fork's
    # in_multiprocessing_child), in their declared order; then the exit flush.
    after_multiprocessing_fork()
    if any(writer.running for writer in list(WRITERS)):
        hook_child_exit()


def register_child_hooks() -> None:
    """Have multiprocessing run ``_mp_after_fork`` in the children of this process.

    Called at import, whenever a writer starts, and before every fork (by then a
    program that imports multiprocessing after actiontrace has imported it).
    """
    global _registered_in
    util = sys.modules.get("multiprocessing.util")
    if util is not None and _registered_in != os.getpid():
        _registered_in = os.getpid()
        util.register_after_fork(_AFTER_FORK, _mp_after_fork)


register_child_hooks()

at_fork(
    "writer", before=_before_fork, after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_flush_all_at_exit)
