"""What the viewer shows, as plain JSON-ready values, read through the storage's queries.

Nothing here knows HTTP: each function takes a storage (and parsed parameters) and
returns msgspec-encodable values. Paging is by keyset (the last item of a page is the
cursor of the next), never by OFFSET, so a page deep in a 1M-action store costs what
the first page costs (docs/viewer.md#paging).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from actiontrace._model import ActionFilter, ActionRecord, FlowSummary, Status
from actiontrace.storage._base import TraceStorage

__all__ = [
    "Cache",
    "action_detail",
    "declared_reactions",
    "find_page",
    "flow_row",
    "flows_page",
    "parse_cursor",
    "stats",
    "sync_graph",
    "sync_latency",
    "why",
]

T = TypeVar("T")
_END = 2**63 - 1


def parse_cursor(text: str) -> tuple[int, uuid.UUID]:
    """``"<µs>_<32 hex>"`` as ``(time, id)``.

    Raises:
        ValueError: any other text.
    """
    at, sep, ident = text.partition("_")
    if not sep:
        raise ValueError(f"malformed cursor {text!r}")
    return int(at), uuid.UUID(hex=ident)


def cursor(at: int, ident: uuid.UUID) -> str:
    """The cursor of an item (its time and id), as ``parse_cursor`` reads it."""
    return f"{at}_{ident.hex}"


def flow_row(f: FlowSummary) -> dict[str, Any]:
    """One flow of ``/api/flows``: the fields docs/reference.md (Viewer) names, then the rest."""
    root = f"{f.concept_uri}::{f.action}" if f.concept_uri is not None else None
    return {
        "flow_token": f.flow_token,
        "root": root,
        "actions": f.actions,
        "created_at": f.created_at,
        "errors": f.errors,
        "status": f.status,
        "duration_us": f.duration_us,
        "module": f.module,
        "root_action_id": f.root_action_id,
    }


def flows_page(
    storage: TraceStorage, limit: int, before: tuple[int, uuid.UUID] | None = None, *,
    since: int | None = None, until: int | None = None, concept_uri: str | None = None,
    action: str | None = None, status: Status | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of flows, newest first, and the cursor of the next page (None at the end)."""
    found = storage.list_flows(
        limit + 1, since, until=until, before=before, concept_uri=concept_uri,
        action=action, status=status,
    )
    more = len(found) > limit
    found = found[:limit]
    nxt = cursor(found[-1].created_at, found[-1].flow_token) if more and found else None
    return [flow_row(f) for f in found], nxt


def find_page(
    storage: TraceStorage, limit: int, after: tuple[int, uuid.UUID] | None = None, *,
    concept_uri: str | None = None, action: str | None = None,
    inputs: dict[str, Any] | None = None, since: int | None = None, until: int | None = None,
) -> tuple[list[ActionRecord], str | None]:
    """A page of ``find_actions`` (oldest first, as the query answers) and the next cursor.

    The cursor is the last action's ``(timestamp, id)``; the next page asks for the
    actions from that timestamp on and drops those up to the cursor (several actions
    can share a microsecond), asking for more until it has a page or the end.
    """
    start = since if since is not None else 0
    end = until if until is not None else _END
    if after is not None:
        start = max(start, after[0])
    want = limit + 1
    ask = want + (16 if after is not None else 0)
    while True:
        bounded = since is not None or until is not None or after is not None
        got = storage.find_actions(ActionFilter(
            concept_uri=concept_uri, action=action, inputs=inputs,
            time_range=(start, end) if bounded else None, limit=ask,
        ))
        exhausted = len(got) < ask
        if after is not None:
            mark = (after[0], after[1].int)
            got = [r for r in got if (r.timestamp, r.id.int) > mark]
        if len(got) >= want or exhausted:
            break
        ask *= 4
    page = got[:limit]
    nxt = cursor(page[-1].timestamp, page[-1].id) if len(got) > limit and page else None
    return page, nxt


def why(storage: TraceStorage, action_id: uuid.UUID) -> list[dict[str, Any]]:
    """The causal chain, root first, each step with the synchronization that produced it
    (the shape of ``actiontrace why --json``). Raises ``ActionNotFound``."""
    chain = storage.get_causal_chain(action_id)
    steps: list[dict[str, Any]] = []
    for n, rec in enumerate(chain):
        sync = storage.find_producing_sync(rec.id) if n else None
        steps.append({"action": rec, "synchronization": sync})
    return steps


def action_detail(storage: TraceStorage, action_id: uuid.UUID) -> dict[str, Any]:
    """One action, the synchronization that produced it, and its log events.

    Raises:
        ActionNotFound: no such action.
    """
    rec = storage.get_causal_chain(action_id)[-1]
    logs = [ev for ev in storage.get_trace(rec.flow_token).logs if ev.action_id == rec.id]
    return {
        "action": rec,
        "synchronization": storage.find_producing_sync(rec.id),
        "logs": logs,
    }


def declared_reactions() -> list[tuple[str, str]]:
    """``(when, synchronization)`` of every reaction declared in this process.

    The viewer's process declares the reactions of the modules it imported (``serve
    --import``); the store does not record declarations.
    """
    from actiontrace.recording._reactions import reactions_snapshot

    return sorted((when, r.name) for when, reactions in reactions_snapshot().items()
                  for r in reactions)


EXACT_LINKS = 50_000  # edges; above that the graph's links come from the newest of each sync
SAMPLE_LINKS = 20


def sync_graph(storage: TraceStorage, links_limit: int = 150,
               measured: int = 8) -> dict[str, Any]:
    """The synchronizations as one graph: ``concept::action -> sync -> concept::action``.

    ``syncs`` lists every synchronization with its firing count (edges in the whole
    store, ``top_synchronizations``) and, for the ``measured`` most frequent, the
    latency (µs) of the actions it produced (``sync_performance``; the others through
    ``sync_latency``, on request). ``links`` are what the provenance edges connect, with
    counts, the ``links_limit`` most frequent (``links_total`` says how many there
    are). A store of more than ``EXACT_LINKS`` edges gets its links from each
    synchronization's newest ``SAMPLE_LINKS`` edges (``links_sampled``: that number,
    else None), since every edge counted costs two lookups (2.5 s at 1M actions).
    ``declared`` holds the reactions this process knows of, each marked ``fired`` when
    the store holds an edge of it.
    """
    totals = dict(storage.top_synchronizations(10**9))
    sampled = SAMPLE_LINKS if sum(totals.values()) > EXACT_LINKS else None
    try:
        links = storage.synchronization_links(newest=sampled)
    except NotImplementedError:
        links = []
    declared = declared_reactions()
    declared_names = {s for _, s in declared}
    names = sorted(totals, key=lambda s: (-totals[s], s))
    names += sorted(declared_names - set(totals))
    perf = storage.sync_performances([n for n in names[:measured] if totals.get(n)])
    syncs = [{
        "synchronization": name,
        "count": totals.get(name, 0),
        "declared": name in declared_names,
        "latency_us": perf.get(name),
    } for name in names]
    return {
        "links": [{"from": f, "synchronization": s, "to": t, "count": n}
                  for f, s, t, n in links[:links_limit]],
        "links_total": len(links),
        "links_sampled": sampled,
        "declared": [{"when": w, "synchronization": s, "fired": s in totals} for w, s in declared],
        "syncs": syncs,
    }


def sync_latency(storage: TraceStorage, name: str) -> dict[str, Any]:
    """One synchronization's firing count and latency (µs), from the analyzer."""
    from actiontrace._analysis import TraceAnalyzer

    perf = TraceAnalyzer(storage).sync_performance(name)
    return {"synchronization": name, "count": perf.count, "latency_us": perf}


def stats(storage: TraceStorage, limit: int = 10) -> dict[str, Any]:
    """The analyzer's figures, in the shape of ``actiontrace stats --json``."""
    top = storage.top_synchronizations(limit)
    perf = storage.sync_performances([name for name, _ in top])  # one query
    chains = storage.longest_chains(limit)
    return {
        "top_synchronizations": [{"synchronization": n, "count": c} for n, c in top],
        "longest_chains": [{"flow_token": t, "depth": d} for t, d in chains],
        "latency_us": perf,
    }


class Cache:
    """Whole-store answers (statistics, the synchronization graph) kept for ``ttl`` s.

    They scan every edge, so a page that asks twice in a row should not pay twice;
    ``ttl`` bounds how stale they get while writers add flows.
    """

    def __init__(self, ttl: float = 10.0, clock: Callable[[], float] = time.monotonic,
                 max_items: int = 256) -> None:
        self.ttl = ttl
        self.max_items = max_items  # keys come from requests: bounded, oldest dropped
        self._clock = clock
        self._lock = threading.Lock()
        self._key_locks: dict[Any, threading.Lock] = {}
        self._items: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any, compute: Callable[[], T]) -> T:
        """The cached value for ``key``, computed when missing or stale: once at a time
        per key (a second request waits for the first's answer), other keys meanwhile."""
        with self._lock:
            while len(self._key_locks) >= self.max_items and key not in self._key_locks:
                oldest = next(iter(self._key_locks))
                del self._key_locks[oldest]
                self._items.pop(oldest, None)
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            hit = self._items.get(key)
            if hit is not None and self._clock() - hit[0] < self.ttl:
                return hit[1]  # type: ignore[no-any-return]
            value = compute()
            self._items[key] = (self._clock(), value)
            return value
