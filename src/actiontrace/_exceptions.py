"""Every error actiontrace raises to a caller, in one place.

    Exception
    ├── LookupError
    │   ├── TraceNotFound        get_trace: no flow with that token
    │   └── ActionNotFound       get_causal_chain / update_action_output: no such action
    ├── RuntimeError
    │   ├── ReactionLimitError   a cascade of declared reactions went deeper than
    │   │                        configure(max_reaction_depth=...)
    │   └── StorageError         a storage could not do what was asked (the database
    │       │                    refused a statement or its data)
    │       ├── StorageUnavailable  the database is down, locked, busy, full, read-only
    │       │                    or cannot be opened: retrying later may succeed
    │       └── SchemaOutdated   the database is not at this actiontrace's revision
    │           ├── SchemaBehind   at an older revision (or unversioned): run
    │           │                  `actiontrace db upgrade`; writes wait meanwhile
    │           └── SchemaAhead    at a revision this actiontrace does not know:
    │                              upgrade actiontrace
    └── ValueError
        └── ConfigurationError   configure() / a storage was given something unusable

Driver errors (SQLAlchemy, sqlite3, psycopg) never reach a caller as they are: the SQL
storage raises ``StorageUnavailable`` or ``StorageError`` from them (``__cause__`` holds
the original).

Errors *inside* the recording path (encoding a hostile value, a full buffer, a database
that is down) never reach the application: they are counted and logged instead.
"""

from __future__ import annotations

__all__ = [
    "ActionNotFound",
    "ConfigurationError",
    "ReactionLimitError",
    "SchemaAhead",
    "SchemaBehind",
    "SchemaOutdated",
    "StorageError",
    "StorageUnavailable",
    "TraceNotFound",
]


class TraceNotFound(LookupError):
    """No trace is stored or running for the flow token."""


class ActionNotFound(LookupError):
    """No action with that id is stored or running."""


class ReactionLimitError(RuntimeError):
    """A cascade of declared reactions exceeded ``max_reaction_depth``."""


class StorageError(RuntimeError):
    """A storage backend could not perform an operation."""


class SchemaOutdated(StorageError):
    """The database schema is not at the revision this version of actiontrace needs."""


class StorageUnavailable(StorageError):
    """The database cannot be used for now (down, locked, busy, full, read-only)."""


class SchemaBehind(SchemaOutdated):
    """The database is at an older revision: ``actiontrace db upgrade`` brings it up."""


class SchemaAhead(SchemaOutdated):
    """The database is at a revision this version of actiontrace does not know."""


class ConfigurationError(ValueError):
    """A configuration value (URL, option, storage) is unusable."""


# Named by the public module, where users import them from: a recorded error_type reads
# "actiontrace.ReactionLimitError", and tracebacks and pickles name the public path.
for _cls in (TraceNotFound, ActionNotFound, ReactionLimitError, StorageError,
             StorageUnavailable, SchemaOutdated, SchemaBehind, SchemaAhead, ConfigurationError):
    _cls.__module__ = "actiontrace"
del _cls
