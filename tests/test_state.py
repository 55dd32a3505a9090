"""Global state (``actiontrace._state``): settings, the current recorder, fork hooks."""

from __future__ import annotations

import os

import pytest

import actiontrace
from actiontrace import _state
from actiontrace.recording import _codegen, _ids


class TestRecorder:
    def test_configure_installs_and_returns_the_old(self) -> None:
        """install() swaps the global recorder and hands back the previous one."""
        first = actiontrace.configure()
        second = actiontrace.ActionTracer()
        assert _state.install(second) is first
        assert _state.current_recorder() is second
        assert _state.install(first) is second

    def test_enabled_is_process_wide(self) -> None:
        """configure(enabled=False) is seen by recording_enabled() until reconfigured."""
        actiontrace.configure(enabled=False)
        assert _state.recording_enabled() is False
        actiontrace.configure()
        assert _state.recording_enabled() is True


class TestForkHooks:
    def test_steps_run_in_declared_order(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Hooks run in FORK_STEPS order after a fork, reversed before, whatever the
        order they were registered in."""
        fresh = {phase: {step: [] for step in _state.FORK_STEPS}
                 for phase in ("before", "parent", "child")}
        monkeypatch.setattr(_state, "_hooks", fresh)
        ran: list[str] = []
        for step in reversed(_state.FORK_STEPS):
            _state.at_fork(step, before=lambda s=step: ran.append(f"before:{s}"),
                           after_in_child=lambda s=step: ran.append(s))
        _state._before_fork()
        _state._after_fork_in_child()
        steps = list(_state.FORK_STEPS)
        assert ran == [f"before:{s}" for s in reversed(steps)] + steps

    def test_unknown_step_is_refused(self) -> None:
        """A hook for a step that is not declared is a ValueError naming the steps."""
        with pytest.raises(ValueError, match="ids"):
            _state.at_fork("later", after_in_child=lambda: None)

    @pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
    def test_child_wrappers_use_the_reseeded_counter(self) -> None:
        """In a forked child the wrappers count with the child's new id counter."""
        parent_bits = _ids.FIXED_BITS
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report and leave without running the parent's atexit
            ok = (_codegen.RUNTIME["_at_next"].__self__ is _ids.local_counter
                  and parent_bits != _ids.FIXED_BITS)
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
        os.close(write)
        got = os.read(read, 1)
        os.close(read)
        os.waitpid(pid, 0)
        assert got == b"1"
        assert _codegen.RUNTIME["_at_next"].__self__ is _ids.local_counter
