"""Alembic autogenerate beside actiontrace: leave actiontrace's tables out of it.

A host application that keeps its Alembic history in the database actiontrace writes
to would otherwise see every ``actiontrace_*`` table as one to drop (``alembic check``
fails, ``alembic revision --autogenerate`` writes ``op.drop_table``). Pass these filters
in the host's ``migrations/env.py``::

    from actiontrace.contrib.alembic import include_name, include_object

    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_name=include_name,
        include_object=include_object,
    )

actiontrace owns every table whose name starts with ``actiontrace_`` (its version table,
``actiontrace_alembic_version``, too); everything else is compared as usual. A host with
filters of its own combines them: ``include_name=lambda *a: mine(*a) and
include_name(*a)``. The host's ``alembic_version`` is never touched by actiontrace: its
migrations keep their own version table (docs/storage.md).

Importing this module imports nothing heavy (no SQLAlchemy, no Alembic).
"""

from __future__ import annotations

from typing import Any

__all__ = ["TABLE_PREFIX", "include_name", "include_object", "is_actiontrace_table"]

TABLE_PREFIX = "actiontrace_"


def is_actiontrace_table(name: str | None) -> bool:
    """Whether ``name`` is one of actiontrace's tables (including its version table)."""
    return bool(name) and name.startswith(TABLE_PREFIX)  # type: ignore[union-attr]


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Alembic's ``include_name`` hook: False for actiontrace's tables (so they are not
    even reflected) and for anything that belongs to one."""
    if type_ == "table":
        return not is_actiontrace_table(name)
    if isinstance(parent_names, dict):
        return not is_actiontrace_table(parent_names.get("table_name"))
    return True


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    """Alembic's ``include_object`` hook: False for actiontrace's tables and for the
    columns, indexes and constraints on them."""
    if type_ == "table":
        return not is_actiontrace_table(name)
    table = getattr(obj, "table", None)
    return not is_actiontrace_table(getattr(table, "name", None))
