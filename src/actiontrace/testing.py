"""Assertions about why things happened, for tests.

Contract: docs/reference.md, Testing; guide: docs/testing.md.

With pytest, the ``action_trace`` fixture (installed with actiontrace) gives each test a
global tracer of its own::

    def test_login_starts_playback(action_trace):
        app.login("bob")
        assert_caused(action_trace, "Auth::login", "Player::play_passage", via="OnAuthSuccess")

A *pattern* names an action as ``"Concept::action"`` (Concept being the last ``::``
segment of the concept URI) or in full, ``"<concept_uri>::<action>"``. These functions
read only the public queries (``find_actions``, ``get_causal_chain``,
``find_producing_sync``, ``get_trace``), so they take a tracer or any storage.
"""

from __future__ import annotations

import difflib
from typing import Any, Protocol

from actiontrace._exceptions import TraceNotFound
from actiontrace._model import ActionFilter, ActionRecord, ActionTrace
from actiontrace._views import causal_tree, short_name

__all__ = ["assert_caused", "assert_not_caused", "flow_shape"]

SHOWN_CHAINS = 3  # distinct causal chains (by the names on them) a failure message shows
SHOWN_ACTIONS = 40  # distinct action names a failure message lists


class Queryable(Protocol):
    """A tracer or a storage: what the assertions read."""

    def find_actions(self, filter: ActionFilter) -> list[ActionRecord]: ...

    def get_causal_chain(self, action_id: Any) -> list[ActionRecord]: ...

    def find_producing_sync(self, action_id: Any) -> str | None: ...

    def get_trace(self, flow_token: Any) -> ActionTrace: ...


def _split(pattern: str, role: str) -> tuple[str, str]:
    if not isinstance(pattern, str):
        raise TypeError(f"{role} must be a str such as 'Player::play', got {pattern!r}")
    concept, sep, name = pattern.rpartition("::")
    if not sep or not concept or not name:
        raise ValueError(
            f"{role} {pattern!r} is not a pattern: write 'Concept::action' "
            "(the last segment of the concept URI) or '<concept_uri>::<action>'"
        )
    return concept, name


def _matches(concept: str, name: str, rec: ActionRecord) -> bool:
    return rec.action == name and (
        rec.concept_uri == concept or rec.concept_uri.rpartition("::")[2] == concept
    )


def _find(source: Queryable, pattern: str, role: str) -> list[ActionRecord]:
    concept, name = _split(pattern, role)
    return [r for r in source.find_actions(ActionFilter(action=name)) if _matches(concept, name, r)]


def _full(rec: ActionRecord) -> str:
    return f"{rec.concept_uri}::{rec.action}"


def _nothing_matches(source: Queryable, caller: str, role: str, pattern: str) -> AssertionError:
    """The failure when no recorded action matches: the nearest names and the whole list."""
    recorded = source.find_actions(ActionFilter())
    if not recorded:
        return AssertionError(
            f"{caller}: no recorded action matches the {role} {pattern!r}: no actions were "
            "recorded (did the code under test run, and is it decorated with @action?)"
        )
    counts: dict[str, int] = {}
    for rec in recorded:
        counts[_full(rec)] = counts.get(_full(rec), 0) + 1
    # Suggest in the form the pattern was written in: short unless it had more segments.
    full_form = _split(pattern, role)[0].count("::") > 0
    names = list(dict.fromkeys(_full(r) if full_form else short_name(r) for r in recorded))
    near = difflib.get_close_matches(pattern, names, n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    lines = [
        f"{caller}: no recorded action matches the {role} {pattern!r}{hint}",
        f"recorded actions ({len(counts)} distinct, {len(recorded)} in all):",
    ]
    for full, n in list(counts.items())[:SHOWN_ACTIONS]:
        lines.append(f"  {full}  x{n}")
    if len(counts) > SHOWN_ACTIONS:
        lines.append(f"  ... and {len(counts) - SHOWN_ACTIONS} more")
    return AssertionError("\n".join(lines))


def _chain_tree(source: Queryable, chain: list[ActionRecord]) -> str:
    """The causal chain as the tree view (``ActionTrace.to_ascii`` of just those actions)."""
    last = chain[-1]
    ids = {r.id for r in chain}
    try:
        edges = [
            e for e in source.get_trace(last.flow_token).provenance_edges
            if e.to_action in ids and e.from_action in ids
        ]
    except TraceNotFound:
        edges = []
    sub = ActionTrace(
        flow_token=last.flow_token, root_action_id=chain[0].id,
        actions={r.id: r for r in chain}, provenance_edges=edges,
        created_at=chain[0].timestamp, module="",
    )
    return sub.to_ascii().rstrip("\n")


def _evidence(source: Queryable, effects: list[tuple[ActionRecord, list[ActionRecord]]],
              pattern: str) -> str:
    """The causal chains of the effects, most recent first, one per distinct shape."""
    parts = []
    shapes: set[tuple[str, ...]] = set()
    hidden = 0
    for effect, chain in reversed(effects):
        shape = tuple(f"{r.concept_uri}::{r.action}" for r in chain)
        if shape in shapes or len(shapes) == SHOWN_CHAINS:
            hidden += 1
            continue
        shapes.add(shape)
        parts.append(f"causal chain of {pattern} (action {effect.id}):\n"
                     + _chain_tree(source, chain))
    if hidden:
        parts.append(f"({hidden} more {pattern} actions not shown"
                     + (", their chains the same shape)" if len(shapes) < SHOWN_CHAINS else ")"))
    return "\n".join(parts)


def _via_text(sync: str | None) -> str:
    return "no synchronization (a plain call)" if sync is None else repr(sync)


def assert_caused(source: Queryable, cause: str, effect: str, via: str | None = None) -> ActionRecord:
    """Assert that some action matching ``effect`` has one matching ``cause`` on its causal chain.

    Args:
        source: the tracer (``action_trace`` in a pytest test) or a storage.
        cause: the pattern of the action that must be on the effect's causal chain
            (an action is not its own cause).
        effect: the pattern of the action that happened.
        via: when given, the effect's producing synchronization must be this one.

    Returns:
        The (most recent) effect action that satisfies the assertion.

    Raises:
        AssertionError: with the effect's causal chain as a tree, or, when no recorded
            action matches a pattern, the recorded actions and the nearest names.
    """
    __tracebackhide__ = True  # pytest shows the test's line, not ours
    concept, name = _split(cause, "cause")
    effects = _find(source, effect, "effect")
    if not effects:
        raise _nothing_matches(source, "assert_caused", "effect", effect)
    if not _find(source, cause, "cause"):
        raise _nothing_matches(source, "assert_caused", "cause", cause)
    checked = []
    wrong_sync: list[str | None] = []
    for rec in reversed(effects):
        chain = source.get_causal_chain(rec.id)
        if any(_matches(concept, name, r) for r in chain[:-1]):
            if via is None:
                return rec
            sync = source.find_producing_sync(rec.id)
            if sync == via:
                return rec
            wrong_sync.append(sync)
        checked.append((rec, chain))
    checked.reverse()
    if wrong_sync:
        got = sorted({_via_text(s) for s in wrong_sync})
        head = (f"assert_caused: {cause!r} is on the causal chain of {effect!r}, but "
                f"{effect!r} was produced by {' and '.join(got)}, not {via!r}")
    else:
        head = f"assert_caused: {cause!r} is not on the causal chain of {effect!r}"
    raise AssertionError(head + "\n" + _evidence(source, checked, effect))


def _sync_missing(source: Queryable, caller: str, via: str) -> AssertionError | None:
    """The failure when no recorded action was produced by ``via``, else None."""
    recorded = source.find_actions(ActionFilter())
    names: dict[str, None] = {}
    for token in dict.fromkeys(r.flow_token for r in recorded):
        try:
            edges = source.get_trace(token).provenance_edges
        except TraceNotFound:
            continue
        for e in edges:
            if e.synchronization == via:
                return None
            names.setdefault(e.synchronization)
    if not names:
        return AssertionError(
            f"{caller}: no recorded action was produced by the synchronization {via!r}: no "
            "synchronization produced any recorded action"
        )
    near = difflib.get_close_matches(via, list(names), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    shown = ", ".join(repr(n) for n in list(names)[:SHOWN_ACTIONS])
    more = f" and {len(names) - SHOWN_ACTIONS} more" if len(names) > SHOWN_ACTIONS else ""
    return AssertionError(
        f"{caller}: no recorded action was produced by the synchronization {via!r}{hint}\n"
        f"synchronizations that produced actions: {shown}{more}"
    )


MISSING_OK = "(if it may not have happened at all, pass missing_ok=True)"


def assert_not_caused(source: Queryable, cause: str, effect: str, via: str | None = None, *,
                      missing_ok: bool = False) -> None:
    """Assert that no action matching ``effect`` has one matching ``cause`` on its causal chain.

    With ``via``, only effects that synchronization produced count.

    Like ``assert_caused``, it fails when no recorded action matches ``effect`` or
    ``cause`` (or, with ``via``, when that synchronization produced no recorded action):
    an assertion about something that never happened proves nothing, and a misspelt
    pattern would pass. ``missing_ok=True`` says the test means it anyway (whatever
    happened, none of it was caused that way).

    Raises:
        AssertionError: showing the causal chain that links them; or, when a pattern (or
            ``via``) matches nothing recorded, what was recorded and the nearest names.
    """
    __tracebackhide__ = True
    concept, name = _split(cause, "cause")
    effects = _find(source, effect, "effect")
    if not missing_ok:
        if not effects:
            raise _with_hint(_nothing_matches(source, "assert_not_caused", "effect", effect))
        if not _find(source, cause, "cause"):
            raise _with_hint(_nothing_matches(source, "assert_not_caused", "cause", cause))
    for rec in reversed(effects):
        chain = source.get_causal_chain(rec.id)
        if not any(_matches(concept, name, r) for r in chain[:-1]):
            continue
        sync = source.find_producing_sync(rec.id)
        if via is not None and sync != via:
            continue
        how = "" if sync is None else f" (via {sync!r})"
        raise AssertionError(
            f"assert_not_caused: {cause!r} caused {effect!r}{how}\n"
            + _evidence(source, [(rec, chain)], effect)
        )
    if via is not None and not missing_ok:
        missing = _sync_missing(source, "assert_not_caused", via)
        if missing is not None:
            raise _with_hint(missing)


def _with_hint(exc: AssertionError) -> AssertionError:
    """``exc`` with how to allow it as its second line (assert_not_caused)."""
    head, sep, rest = str(exc).partition("\n")
    return AssertionError(f"{head}\n{MISSING_OK}{sep}{rest}")


def flow_shape(trace: ActionTrace) -> str:
    """The trace's wiring as indented text, without ids or times, for snapshot tests.

    One line per action in causal-tree order (an action under the action that caused it:
    its provenance edge's trigger, else its parent), two spaces per level, children in
    recording order; ``Concept::action``, then ``  <-Sync-`` when a synchronization
    produced it. The flow's root comes first. No trailing newline.
    """
    _, children = causal_tree(trace)
    produced: dict[Any, tuple[int, str]] = {}
    for e in trace.provenance_edges:
        best = produced.get(e.to_action)
        if best is None or e.created_at < best[0]:
            produced[e.to_action] = (e.created_at, e.synchronization)
    lines: list[str] = []
    seen: set[Any] = set()

    def walk(aid: Any, depth: int) -> None:
        if aid in seen:
            return
        seen.add(aid)
        label = short_name(trace.actions[aid])
        if aid in produced:
            label += f"  <-{produced[aid][1]}-"
        lines.append("  " * depth + label)
        for kid in children.get(aid, ()):
            walk(kid, depth + 1)

    for root in children[None]:
        walk(root, 0)
    return "\n".join(lines)
