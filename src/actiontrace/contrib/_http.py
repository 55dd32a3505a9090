"""What the HTTP integrations share: the request's inputs (docs/reference.md §9)."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

__all__ = ["query_inputs"]


def query_inputs(query: str) -> dict[str, Any]:
    """A query string as a dict (a repeated name gets a list), so redaction sees its keys."""
    out: dict[str, Any] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key in out:
            prev = out[key]
            out[key] = [*prev, value] if isinstance(prev, list) else [prev, value]
        else:
            out[key] = value
    return out
