"""The pytest plugin: the ``action_trace`` fixture.

Contract: docs/reference.md, Testing; guide: docs/testing.md.

Installing actiontrace registers this module with pytest (entry point group ``pytest11``,
name ``actiontrace``; ``-p no:actiontrace`` turns it off). It only defines a fixture, so a
test that does not ask for ``action_trace`` runs exactly as it would without the plugin.

Every use of actiontrace's global state by the fixture is in ``isolated_tracer`` below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from actiontrace import ActionTracer

__all__ = ["action_trace", "isolated_tracer"]


@contextlib.contextmanager
def isolated_tracer() -> Iterator[ActionTracer]:
    """Install an in-memory global tracer for a block, then put everything back.

    Inside the block, ``get_tracer()`` is a new tracer over an ``InMemoryTraceStorage``
    (no journal) and recording is on; reactions declared inside the block are forgotten
    after it. On exit the block's tracer (or whatever ``configure`` installed meanwhile)
    is shut down, and the earlier tracer, the ``enabled`` switch, the redaction and size
    settings and the declared reactions are restored as they were. The earlier tracer is
    not flushed or shut down: it carries on as if the block had never run.
    """
    from actiontrace import _state
    from actiontrace._tracer import ActionTracer
    from actiontrace.recording import _reactions
    from actiontrace.storage import InMemoryTraceStorage

    enabled = _state.recording_enabled()
    settings = _state.settings
    redactor, max_value_bytes = settings.redactor, settings.max_value_bytes
    reactions = _reactions.reactions_snapshot()
    tracer = ActionTracer(InMemoryTraceStorage(), journal=False)
    earlier = _state.install(tracer)
    if not enabled:
        _state.set_enabled(True)
    try:
        yield tracer
    finally:
        current = _state.install(earlier)
        changed = (settings.redactor, settings.max_value_bytes) != (redactor, max_value_bytes)
        settings.redactor, settings.max_value_bytes = redactor, max_value_bytes
        _reactions.restore_reactions(reactions)
        if changed or _state.recording_enabled() != enabled:
            _state.set_enabled(enabled)  # also recompiles what depends on the settings
        for used in {id(tracer): tracer, id(current): current}.values():
            if isinstance(used, ActionTracer) and used is not earlier:
                used.shutdown()


@pytest.fixture
def action_trace() -> Iterator[ActionTracer]:
    """The global tracer, in memory, for this test alone (docs/testing.md).

    Everything the test records goes to it; its queries (``find_actions``,
    ``get_causal_chain``...) and ``actiontrace.testing``'s assertions read it. Reactions
    the test declares are forgotten afterwards, and the tracer that was global before the
    test is reinstalled as it was.
    """
    with isolated_tracer() as tracer:
        yield tracer
