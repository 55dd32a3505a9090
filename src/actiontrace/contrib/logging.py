"""Standard-library logging integration: flow and action ids on every record.

    import logging
    from actiontrace.contrib.logging import FlowContextFilter

    handler = logging.StreamHandler()
    handler.addFilter(FlowContextFilter())
    handler.setFormatter(logging.Formatter(
        "%(levelname)s %(flow_token)s %(action_id)s %(message)s",
        defaults={"flow_token": "-", "action_id": "-"},
    ))
"""

from __future__ import annotations

import logging

from actiontrace.recording._context import current_ids

__all__ = ["FlowContextFilter"]


class FlowContextFilter(logging.Filter):
    """Set ``record.flow_token`` and ``record.action_id`` (strings) inside a flow.

    It never drops a record. Outside a flow it adds nothing, so give the formatter
    ``defaults=`` for the two fields (as above) if it names them.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        ids = current_ids()
        if ids is not None:
            token, action_id = ids
            record.flow_token = str(token)
            record.action_id = None if action_id is None else str(action_id)
        return True
