"""The ``actiontrace`` command line (API.md §8).

``actiontrace [--url URL] COMMAND``: the URL defaults to ``$ACTIONTRACE_URL``, else
``sqlite:///actiontrace.db``. Every command is a click command in the ``main`` group
(or a subgroup such as ``db``); errors are one line on stderr with a non-zero exit,
never a traceback, and never show a password.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

__all__ = ["main"]

DEFAULT_URL = "sqlite:///actiontrace.db"
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    from actiontrace.storage._sql import mask_url

    line = " ".join(mask_url(str(message)).split())
    click.echo(f"actiontrace: error: {line}", err=True)
    sys.exit(code)


def _describe(exc: BaseException) -> str:
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        exc = exc.orig
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def friendly_errors(fn: F) -> F:
    """Turn any exception from a command into a one-line error (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from actiontrace._exceptions import ConfigurationError, SchemaOutdated

        try:
            return fn(*args, **kwargs)
        except (click.ClickException, KeyboardInterrupt):
            raise
        except (ConfigurationError, SchemaOutdated) as exc:
            fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback
            fail(_describe(exc))

    return wrapper  # type: ignore[return-value]


class Context:
    """What every command gets: the database URL."""

    def __init__(self, url: str) -> None:
        self.url = url


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="Database URL (default: $ACTIONTRACE_URL, else sqlite:///actiontrace.db).",
)
@click.version_option(package_name="actiontrace", prog_name="actiontrace")
@click.pass_context
def main(ctx: click.Context, url: str | None) -> None:
    """Record what your application did and why: query and manage traces."""
    ctx.obj = Context(url or os.environ.get("ACTIONTRACE_URL") or DEFAULT_URL)


# -- db ---------------------------------------------------------------------------------------


@main.group()
def db() -> None:
    """Manage the database schema (Alembic migrations bundled with actiontrace)."""


def _engine(url: str) -> Any:
    from actiontrace.storage._sql import make_engine

    return make_engine(url)


@db.command()
@click.argument("rev", default="head")
@pass_ctx
@friendly_errors
def upgrade(obj: Context, rev: str) -> None:
    """Upgrade the schema to REV (default: head)."""
    from actiontrace.storage import _migrate

    engine = _engine(obj.url)
    try:
        _migrate.upgrade(engine, rev)
        click.echo(f"actiontrace schema at {_migrate.current(engine) or 'base'}")
    finally:
        engine.dispose()


@db.command()
@click.argument("rev")
@pass_ctx
@friendly_errors
def downgrade(obj: Context, rev: str) -> None:
    """Downgrade the schema to REV (``base`` removes every actiontrace table)."""
    from actiontrace.storage import _migrate

    engine = _engine(obj.url)
    try:
        _migrate.downgrade(engine, rev)
        click.echo(f"actiontrace schema at {_migrate.current(engine) or 'base'}")
    finally:
        engine.dispose()


@db.command()
@pass_ctx
@friendly_errors
def current(obj: Context) -> None:
    """Print the schema's revision id (nothing when the database has no schema)."""
    from actiontrace.storage import _migrate

    engine = _engine(obj.url)
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if path and path != ":memory:" and not os.path.exists(path):
        engine.dispose()
        return  # no database yet: do not create one just to say so
    try:
        rev = _migrate.current(engine)
    finally:
        engine.dispose()
    if rev is not None:
        click.echo(rev)


if __name__ == "__main__":  # pragma: no cover
    main()
