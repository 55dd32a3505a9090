"""The storage interface every backend implements (docs/reference.md: Queries, Storage).

Storages are written in *parts* (``actiontrace.recording._record.Part``): what one process
recorded of one flow. Parts of the same flow merge; writing the same action twice
(same id) stores it once. The public ``save_trace`` takes an ``ActionTrace`` and
converts it; the tracer's writer calls ``write_parts`` with whole batches.

A custom storage may subclass ``TraceStorage`` and override either ``save_trace`` or
``write_parts`` (one is defined in terms of the other), plus the queries.
"""

from __future__ import annotations

import abc
import re
import uuid
from collections.abc import Sequence
from typing import Literal, NamedTuple

from actiontrace._exceptions import ActionNotFound, TraceNotFound
from actiontrace._model import (
    ActionFilter,
    ActionRecord,
    ActionTrace,
    FlowSummary,
    PerformanceMetrics,
    Status,
)
from actiontrace.recording._record import Part, from_trace, to_trace

__all__ = ["IdKind", "Pruned", "TraceStorage", "prefix_bounds"]

IdKind = Literal["flow", "action"]
_HEX = re.compile(r"[0-9a-f]{1,32}")


class Pruned(NamedTuple):
    """What ``TraceStorage.prune_flows`` removed (or would remove, in a dry run)."""

    flows: int
    actions: int
    done: bool  # False: stopped after ``max_batches``; more flows are old enough


def prefix_bounds(prefix: str) -> tuple[str, uuid.UUID, uuid.UUID]:
    """Normalize an id prefix and return ``(hex, lowest, highest)`` UUIDs it covers.

    The prefix is a UUID's text cut anywhere (dashes optional, any case).

    Raises:
        ValueError: the prefix is empty or holds something other than hex digits.
    """
    digits = prefix.strip().lower().replace("-", "")
    if not _HEX.fullmatch(digits):
        raise ValueError(
            f"malformed id {prefix!r}: expected a UUID or the start of one (hex digits)"
        )
    return digits, uuid.UUID(digits.ljust(32, "0")), uuid.UUID(digits.ljust(32, "f"))


class TraceStorage(abc.ABC):
    """Where traces are kept, and the queries over them."""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        overrides_none = (
            cls.save_trace is TraceStorage.save_trace and cls.write_parts is TraceStorage.write_parts
        )
        if overrides_none and not getattr(cls, "__abstractmethods__", None):
            raise TypeError(f"{cls.__name__} must override save_trace or write_parts")

    def save_trace(self, trace: ActionTrace) -> None:
        """Store ``trace`` (a whole flow or a part of one; parts merge)."""
        self.write_parts([from_trace(trace)])

    def write_parts(self, parts: Sequence[Part]) -> None:
        """Store a batch of parts, atomically where the backend can."""
        for part in parts:
            self.save_trace(to_trace(part))

    def is_transient(self, exc: BaseException) -> bool:
        """Whether a failed write is worth retrying as it is (the backend was down)."""
        return True

    def close(self) -> None:  # noqa: B027 - optional hook, most storages hold nothing
        """Release connections and files."""

    # -- queries -------------------------------------------------------------------------

    @abc.abstractmethod
    def get_trace(self, flow_token: uuid.UUID) -> ActionTrace:
        """The flow's trace, all parts merged; raises ``TraceNotFound``.

        Until the part holding the flow's root arrives (it is recorded by the process
        that started the flow, or the token was never seen), ``root_action_id`` is the
        flow token itself, an id no action has: ``trace.root_action_id in
        trace.actions`` tells whether the root is stored.
        """

    @abc.abstractmethod
    def find_actions(self, filter: ActionFilter) -> list[ActionRecord]:
        """Actions matching ``filter``, oldest first (ties in recording order)."""

    @abc.abstractmethod
    def find_producing_sync(self, action_id: uuid.UUID) -> str | None:
        """The synchronization that produced the action, or None."""

    @abc.abstractmethod
    def get_causal_chain(self, action_id: uuid.UUID) -> list[ActionRecord]:
        """Root first, the action last; raises ``ActionNotFound``."""

    @abc.abstractmethod
    def find_by_sync(self, sync_name: str) -> list[ActionRecord]:
        """The actions a synchronization produced, oldest first."""

    # -- analysis (TraceAnalyzer delegates here, so each backend answers natively) --------

    @abc.abstractmethod
    def top_synchronizations(self, limit: int) -> list[tuple[str, int]]:
        """``(synchronization, edge count)``, most frequent first."""

    @abc.abstractmethod
    def longest_chains(self, limit: int) -> list[tuple[uuid.UUID, int]]:
        """``(flow_token, depth)``, deepest first; depth = actions on the longest causal path."""

    @abc.abstractmethod
    def sync_performance(self, sync_name: str) -> PerformanceMetrics:
        """Duration statistics of the actions the synchronization produced."""

    def sync_performances(self, sync_names: Sequence[str]) -> dict[str, PerformanceMetrics]:
        """``sync_performance`` of several synchronizations at once (``actiontrace stats``).

        Backends override it to answer in one query; this fallback asks one by one.
        """
        return {name: self.sync_performance(name) for name in sync_names}

    # -- retention (docs/retention.md); not abstract, so older custom storages keep working --

    def prune(self, before_us: int) -> int:
        """Remove every flow whose newest action started before ``before_us`` (µs since
        the epoch; a flow without actions: its ``created_at``), whole: its actions,
        edges, log events and index rows. Returns how many flows were removed."""
        return self.prune_flows(before_us).flows

    def prune_flows(self, before_us: int, *, dry_run: bool = False, batch_size: int = 500,
                    max_batches: int | None = None) -> Pruned:
        """``prune``, in batches of ``batch_size`` flows (one transaction each), at most
        ``max_batches`` of them; ``dry_run`` counts what would go and removes nothing."""
        raise NotImplementedError(f"{type(self).__name__} does not support prune()")

    # -- browsing (the command line); not abstract, so older custom storages keep working --

    def list_flows(
        self, limit: int = 20, since: int | None = None, *, until: int | None = None,
        before: tuple[int, uuid.UUID] | None = None, concept_uri: str | None = None,
        action: str | None = None, status: Status | None = None,
    ) -> list[FlowSummary]:
        """The most recent flows, newest first, each with its root action and size.

        Newest first means by ``created_at``, then by flow token (both descending), so
        ``before`` can page on from the last flow of a page (keyset paging: each page
        costs the same however deep it is).

        Args:
            limit: at most this many flows.
            since: only flows created at or after this time (µs since the epoch).
            until: only flows created at or before this time.
            before: only flows after ``(created_at, flow_token)`` in this order, i.e.
                older than the last flow of the previous page.
            concept_uri: only flows holding an action of this concept (exactly, or a
                ``::``-bounded prefix, as ``ActionFilter``).
            action: only flows holding an action of this name (with ``concept_uri``:
                the same action).
            status: ``"error"``: flows where any action failed; ``"ok"``: flows where
                none failed and the root ended ok; ``"running"``: the root is running.
        """
        raise NotImplementedError(f"{type(self).__name__} does not support list_flows()")

    def synchronization_links(self, newest: int | None = None) -> list[tuple[str, str, str, int]]:
        """What the provenance edges connect: ``(from, synchronization, to, count)``.

        ``from`` and ``to`` are ``"concept_uri::action"`` of the edges' trigger and
        produced actions (``"?"`` for an action no flow holds); ``count`` is how many
        edges go that way. Most frequent first, ties by the three names.

        Args:
            newest: count only each synchronization's ``newest`` most recent edges (by
                ``created_at``): the shape of a large store at a bounded cost.
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not support synchronization_links()"
        )

    def resolve_prefix(self, prefix: str, kind: IdKind, limit: int = 2) -> list[uuid.UUID]:
        """The stored flow tokens (``kind="flow"``) or action ids starting with ``prefix``.

        Returns at most ``limit`` ids, in id order: one means the prefix is unique. This
        fallback only accepts a whole id (it checks the id exists); SQL and in-memory
        storages match real prefixes.

        Raises:
            ValueError: the prefix is not hex digits (see ``prefix_bounds``).
        """
        digits, low, _ = prefix_bounds(prefix)
        if len(digits) < 32:
            raise NotImplementedError(
                f"{type(self).__name__} only accepts whole ids, not prefixes"
            )
        try:
            if kind == "flow":
                self.get_trace(low)
            else:
                self.get_causal_chain(low)
        except (TraceNotFound, ActionNotFound):
            return []
        return [low]

    def resolve_suffix(self, suffix: str, kind: IdKind, limit: int = 2) -> list[uuid.UUID]:
        """The stored flow tokens or action ids ending with ``suffix`` (as
        ``resolve_prefix``; this fallback, too, only accepts a whole id)."""
        return self.resolve_prefix(suffix, kind, limit)
