"""Browsing a SQL store (the command line and the viewer): flows page by page, ids by
their ends, what the synchronizations connect.

A mixin of ``SqlAlchemyTraceStorage`` (``_sql``), kept apart so neither module grows past
what one reads at a sitting; it uses the storage's ``_connect``, ``_fetch`` and dialect.
"""

from __future__ import annotations

import collections
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from actiontrace._model import FlowSummary, Status
from actiontrace.storage import _sqltext
from actiontrace.storage._base import IdKind, prefix_bounds
from actiontrace.storage._schema import actions, concept_is, edges, flows

if TYPE_CHECKING:
    from actiontrace.storage._dialects import Dialect

__all__ = ["Browsing"]


class Browsing:
    """``list_flows``, ``resolve_prefix``/``resolve_suffix``, ``short_ids`` and
    ``synchronization_links`` of ``SqlAlchemyTraceStorage``."""

    _dialect: Dialect

    if TYPE_CHECKING:
        def _fetch(self, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]: ...
        def _connect(self, begin: bool = False) -> Any: ...

    def list_flows(
        self, limit: int = 20, since: int | None = None, *, until: int | None = None,
        before: tuple[int, uuid.UUID] | None = None, concept_uri: str | None = None,
        action: str | None = None, status: Status | None = None,
    ) -> list[FlowSummary]:
        """The most recent flows, newest first: one indexed scan, sizes counted per flow.

        Filters on the flow's actions are ``EXISTS`` probes through the (flow_token,
        timestamp) index, so a page stops as soon as it has ``limit`` flows.
        """
        f, a = flows.c, actions.c
        recent = sa.select(f.flow_token, f.root_action_id, f.created_at, f.module)
        if since is not None:
            recent = recent.where(f.created_at >= since)
        if until is not None:
            recent = recent.where(f.created_at <= until)
        if before is not None:
            at, token = before
            # The first bound is redundant, but lets the planner start the index range
            # scan at the cursor instead of filtering from the newest flow down.
            recent = recent.where(f.created_at <= at, sa.or_(
                f.created_at < at, sa.and_(f.created_at == at, f.flow_token < token)
            ))
        if concept_uri is not None or action is not None:
            match = []
            if concept_uri is not None:
                match.append(concept_is(a.concept_uri, concept_uri))
            if action is not None:
                match.append(a.action == action)
            if concept_uri is not None and self._few(match):
                # Rare: the flows of the few matching actions (the concept index finds
                # them), instead of probing every flow for one (1.4 s at 1M actions for
                # a concept no flow holds; now a few ms).
                recent = recent.where(f.flow_token.in_(sa.select(a.flow_token).where(*match)))
            else:
                # Common: probing the newest flows finds a page of them quickly.
                recent = recent.where(
                    sa.select(sa.literal(1)).where(a.flow_token == f.flow_token, *match).exists()
                )
        if status is not None:
            # A literal, not a parameter: only then may SQLite use the partial index of
            # failed actions (a flow with none costs one index probe).
            failed = sa.select(sa.literal(1)).where(
                a.flow_token == f.flow_token, a.status == sa.literal_column("'error'")
            ).exists()
            root_ended = sa.select(sa.literal(1)).where(
                a.id == f.root_action_id, a.status == ("ok" if status == "ok" else "running")
            ).exists()
            if status == "error":
                recent = recent.where(failed)
            elif status == "ok":
                recent = recent.where(~failed, root_ended)
            else:
                recent = recent.where(root_ended)
        sub = recent.order_by(f.created_at.desc(), f.flow_token.desc()).limit(max(limit, 0)).subquery()
        root = actions.alias("root")
        n = sa.select(sa.func.count()).where(a.flow_token == sub.c.flow_token).scalar_subquery()
        errors = (
            sa.select(sa.func.count()).where(a.flow_token == sub.c.flow_token, a.status == "error")
            .scalar_subquery()
        )
        stmt = (
            sa.select(sub.c.flow_token, sub.c.created_at, sub.c.module, n, errors,
                      sub.c.root_action_id, root.c.concept_uri, root.c.action, root.c.status,
                      root.c.duration_us)
            .select_from(sub.outerjoin(root, root.c.id == sub.c.root_action_id))
            .order_by(sub.c.created_at.desc(), sub.c.flow_token.desc())
        )
        return [FlowSummary(*r) for r in self._fetch(stmt)]

    # list_flows(concept_uri=...): below this many matching actions, start from them.
    few_actions = 5_000

    def _few(self, match: list[Any]) -> bool:
        """Whether fewer than ``few_actions`` actions satisfy ``match`` (a bounded count)."""
        bound = self.few_actions
        some = sa.select(actions.c.id).where(*match).limit(bound).subquery()
        return bool(self._fetch(sa.select(sa.func.count()).select_from(some))[0][0] < bound)

    def resolve_prefix(self, prefix: str, kind: IdKind, limit: int = 2) -> list[uuid.UUID]:
        """Ids starting with ``prefix``: a range scan on the primary key."""
        _, low, high = prefix_bounds(prefix)
        col = flows.c.flow_token if kind == "flow" else actions.c.id
        stmt = sa.select(col).where(col.between(low, high)).order_by(col).limit(limit)
        return [r[0] for r in self._fetch(stmt)]

    def resolve_suffix(self, suffix: str, kind: IdKind, limit: int = 2) -> list[uuid.UUID]:
        """Ids ending with ``suffix`` (hex digits): a scan of the primary key.

        UUIDv7 ids share their leading (time) digits, so their ends tell them apart.
        """
        digits, _, _ = prefix_bounds(suffix)
        col = flows.c.flow_token if kind == "flow" else actions.c.id
        stmt = (sa.select(col).where(self._dialect.hex_of(col).like("%" + digits))
                .order_by(col).limit(limit))
        return [r[0] for r in self._fetch(stmt)]

    def short_ids(self, ids: Sequence[uuid.UUID], kind: IdKind,
                  min_digits: int = 8) -> dict[uuid.UUID, str]:
        """For each id, its shortest ending (``min_digits`` or more hex digits, in steps
        of 4) that names it alone in the store, read as a prefix or as a suffix.

        One scan of the ids per length tried (almost always one: 8 random digits).
        """
        col = flows.c.flow_token if kind == "flow" else actions.c.id
        out: dict[uuid.UUID, str] = {}
        pending = list(dict.fromkeys(ids))
        n = min_digits
        while pending and n < 32:
            want = {i: i.hex[-n:] for i in pending}
            tail = sa.func.substr(self._dialect.hex_of(col), 33 - n)
            stmt = (sa.select(tail).where(tail.in_(sorted(set(want.values()))))
                    .group_by(tail).having(sa.func.count() > 1))
            shared = {r[0] for r in self._fetch(stmt)}
            still = []
            for i, s in want.items():
                if s in shared or self.resolve_prefix(s, kind, limit=2) not in ([], [i]):
                    still.append(i)
                else:
                    out[i] = s
            pending, n = still, n + 4
        out.update((i, i.hex) for i in pending)
        return out

    def synchronization_links(self, newest: int | None = None) -> list[tuple[str, str, str, int]]:
        """Edges grouped by (trigger's action, synchronization, produced action).

        Each edge counted costs two primary-key lookups (2.5 s for 300,000 edges on
        SQLite). With ``newest``, one indexed query per synchronization reads only its
        newest edges (0.2-0.8 s for 300 synchronizations there, on a loaded machine; one
        window-function query over every edge took 0.75 s before any lookup).
        """
        e = edges.c
        src, dst = actions.alias("src"), actions.alias("dst")

        def ends(source: Any) -> Any:
            c = source.c
            return (
                sa.select(src.c.concept_uri, src.c.action, c.synchronization,
                          dst.c.concept_uri, dst.c.action)
                .select_from(source.outerjoin(src, src.c.id == c.from_action)
                             .outerjoin(dst, dst.c.id == c.to_action))
            )

        counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
        with self._connect() as conn:
            if newest is None:
                stmt = ends(edges)
                rows = conn.execute(
                    stmt.add_columns(sa.func.count()).group_by(*stmt.selected_columns)
                ).all()
                for r in rows:
                    counts[(_key(r[0], r[1]), r[2], _key(r[3], r[4]))] += r[5]
            else:
                names = conn.execute(sa.text(_sqltext.SYNC_NAMES)).scalars().all()
                recent = ends(
                    sa.select(e.from_action, e.to_action, e.synchronization)
                    .where(e.synchronization == sa.bindparam("name"))
                    .order_by(e.created_at.desc()).limit(sa.bindparam("n")).subquery()
                )
                for name in names:
                    for r in conn.execute(recent, {"name": name, "n": newest}):
                        counts[(_key(r[0], r[1]), r[2], _key(r[3], r[4]))] += 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return [(f, s, t, n) for (f, s, t), n in ranked]


def _key(concept_uri: str | None, action: str | None) -> str:
    """``concept_uri::action``, or ``"?"`` for an action no flow holds."""
    return "?" if concept_uri is None else f"{concept_uri}::{action}"
