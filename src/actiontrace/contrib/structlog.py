"""structlog integration: put the flow and the running action on every event.

    import structlog
    from actiontrace.contrib.structlog import add_flow_context

    structlog.configure(processors=[add_flow_context, structlog.processors.JSONRenderer()])
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from actiontrace._context import current_ids

__all__ = ["add_flow_context"]


def add_flow_context(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Add ``flow_token`` and ``action_id`` (the innermost running action) as strings.

    Outside a flow the event is returned unchanged. Inside a flow but outside any action
    (directly in ``continue_flow``), ``action_id`` is None. Keys the event already has
    are left alone.
    """
    ids = current_ids()
    if ids is not None:
        token, action_id = ids
        event_dict.setdefault("flow_token", str(token))
        event_dict.setdefault("action_id", None if action_id is None else str(action_id))
    return event_dict
