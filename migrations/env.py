"""Alembic environment for actiontrace's own tables.

Used two ways: programmatically (``actiontrace db ...``, first use of a storage), which
passes an open connection in ``config.attributes["connection"]``; and from a checkout
with ``alembic upgrade head`` (``alembic.ini`` at the repository root), which connects to
``$ACTIONTRACE_URL``, else ``sqlite:///actiontrace.db``.

Our version table is ``actiontrace_alembic_version`` and autogenerate only looks at
``actiontrace_*`` tables, so a host application's own Alembic history and tables are
never touched.
"""

from __future__ import annotations

import os
from logging.config import fileConfig

import sqlalchemy as sa
from alembic import context

from actiontrace.storage._schema import VERSION_TABLE, for_dialect, metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Only our tables (and everything inside them) take part in autogenerate."""
    if type_ == "table":
        return bool(name) and name.startswith("actiontrace_")  # type: ignore[union-attr]
    return True


def include_object_for(dialect: str) -> object:
    """Leave out the model objects that exist on another dialect only."""

    def include_object(obj: object, name: str | None, type_: str, reflected: bool,
                       compare_to: object) -> bool:
        return reflected or for_dialect(obj, dialect)

    return include_object


def _url() -> str:
    return os.environ.get("ACTIONTRACE_URL") or "sqlite:///actiontrace.db"


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        include_object=include_object_for(connection.dialect.name),
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        literal_binds=True,
        render_as_batch=_url().startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(_url(), poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
