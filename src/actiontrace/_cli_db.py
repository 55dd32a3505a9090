"""``actiontrace db upgrade|downgrade|current``: the schema's Alembic migrations.

A subgroup of the ``actiontrace`` command line (``cli.py`` adds it); errors are one line
and a non-zero exit, as everywhere in the command line (``_cli_support.friendly_errors``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import click

from actiontrace._cli_support import CliError, Context, friendly_errors, pass_ctx

__all__ = ["db"]


@click.group()
def db() -> None:
    """Manage the database schema (Alembic migrations bundled with actiontrace)."""


def _engine(url: str) -> Any:
    from actiontrace.storage._sql import make_engine

    return make_engine(url)


def _move_schema(obj: Context, step: str, rev: str) -> None:
    """Run ``_migrate.upgrade`` or ``_migrate.downgrade`` to ``rev`` and say where it is.

    A SQLite file this created is removed again when the step fails (an unknown
    revision, say): a failed command leaves nothing behind.
    """
    from actiontrace.storage import _migrate

    path = obj.sqlite_path()
    new_file = path is not None and not os.path.exists(path)
    engine = _engine(obj.url)
    try:
        getattr(_migrate, step)(engine, rev)
        click.echo(f"actiontrace schema at {_migrate.current(engine) or 'base'}")
    except BaseException:
        engine.dispose()
        if new_file and path is not None:
            for leftover in (path, f"{path}-wal", f"{path}-shm", f"{path}-journal"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
        raise
    finally:
        engine.dispose()


@db.command()
@click.argument("rev", default="head")
@pass_ctx
@friendly_errors
def upgrade(obj: Context, rev: str) -> None:
    """Upgrade the schema to REV (default: head)."""
    _move_schema(obj, "upgrade", rev)


@db.command()
@click.argument("rev")
@pass_ctx
@friendly_errors
def downgrade(obj: Context, rev: str) -> None:
    """Downgrade the schema to REV (``base`` removes every actiontrace table)."""
    _move_schema(obj, "downgrade", rev)


@db.command()
@pass_ctx
@friendly_errors
def current(obj: Context) -> None:
    """Print the schema's revision id (the database is only read)."""
    from actiontrace.storage import _migrate
    from actiontrace.storage._sql import make_engine

    obj.require_file()
    engine = make_engine(obj.url, read_only=True)
    try:
        rev = _migrate.current(engine)
    finally:
        engine.dispose()
    if rev is None:
        raise CliError(
            f"{_migrate.describe(engine)} has no actiontrace schema: "
            f"{_migrate.UPGRADE_HINT} to create it"
        )
    click.echo(rev)
