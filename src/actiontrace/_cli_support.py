"""What the ``actiontrace`` commands share: one-line errors, the context, parsing, formats.

The commands themselves are in ``cli``; this is their toolbox (docs/cli.md).
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import re
import sys
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

if TYPE_CHECKING:
    _ParamType = click.ParamType[Any]  # generic in click's types, not at run time before 8.2
else:
    _ParamType = click.ParamType

if TYPE_CHECKING:
    from actiontrace._model import ActionRecord
    from actiontrace.storage._base import IdKind
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

__all__ = [
    "AgeParam", "CliError", "Context", "InputParam", "TimeParam", "compact", "describe_error", "echo_json",
    "fail",
    "fail_line", "fmt_duration", "fmt_status", "fmt_time", "friendly_errors",
    "full_ids_option", "json_option", "name_of", "parse_age", "parse_input", "parse_time", "pass_ctx",
    "reader_left", "resolve", "short_ids",
]

F = TypeVar("F", bound=Callable[..., Any])


# -- errors ----------------------------------------------------------------------------------


class CliError(click.ClickException):
    """A failure the user caused or can fix: printed as one line, exit 1."""

    def show(self, file: Any = None) -> None:
        fail_line(self.message)


def fail_line(message: str) -> None:
    """Print ``actiontrace: error: MESSAGE`` on one line of stderr, passwords masked."""
    from actiontrace.storage._sql import mask_url

    line = " ".join(mask_url(str(message)).split())
    click.echo(f"actiontrace: error: {line}", err=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line on stderr and exit with ``code``."""
    fail_line(message)
    sys.exit(code)


def describe_error(exc: BaseException) -> str:
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        orig = exc.orig
        text = str(orig).strip().splitlines()
        detail = text[0] if text else ""
        if isinstance(exc, sa_exc.OperationalError):
            return f"cannot use the database: {detail or type(orig).__name__}"
        return f"{type(orig).__name__}: {detail}" if detail else type(orig).__name__
    text = str(exc).strip().splitlines()
    detail = text[0] if text else ""
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def reader_left() -> None:
    """``actiontrace flows | head``: the reader left. Send what is still buffered (and
    the interpreter's last flush) to /dev/null, so nothing more is said."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def friendly_errors(fn: F) -> F:
    """Turn any exception from a command into a one-line error (exit 1)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from actiontrace._exceptions import ConfigurationError, StorageError

        try:
            return fn(*args, **kwargs)
        except BrokenPipeError:
            # Before click sees it: click turns EPIPE into exit status 1.
            reader_left()
            raise click.exceptions.Exit(0) from None
        except (click.ClickException, click.exceptions.Exit, KeyboardInterrupt):
            raise
        except (ConfigurationError, StorageError, LookupError) as exc:
            fail(str(exc).strip("'\""))
        except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback
            fail(describe_error(exc))

    return wrapper  # type: ignore[return-value]


# -- the context of every command -------------------------------------------------------------------------------


class Context:
    """What every command gets: the database URL, and the storage once opened."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._storage: SqlAlchemyTraceStorage | None = None

    def sqlite_path(self) -> str | None:
        """The SQLite file the URL names (None for PostgreSQL, memory or a bad URL)."""
        import sqlalchemy as sa

        try:
            parsed = sa.make_url(self.url)
        except Exception:  # noqa: BLE001 - the storage reports a bad URL well
            return None
        path = parsed.database
        if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
            return None
        return None if path.startswith("file:") else path

    def require_file(self) -> None:
        """Fail with one line when the SQLite file to read does not exist."""
        path = self.sqlite_path()
        if path is not None and not os.path.isfile(path):
            raise CliError(
                f"no actiontrace database at {path!r}: record something first (e.g. "
                "`actiontrace demo`), create an empty one with `actiontrace db upgrade`, "
                "or pass --url"
            )

    def storage(self) -> SqlAlchemyTraceStorage:
        """The read-only storage of the reading commands (the database stays as it is)."""
        if self._storage is None:
            from actiontrace.storage._sql import SqlAlchemyTraceStorage

            self.require_file()
            self._storage = SqlAlchemyTraceStorage(self.url, read_only=True)
        return self._storage

    def close(self) -> None:
        if self._storage is not None:
            self._storage.close()


pass_ctx = click.make_pass_decorator(Context)


# -- parsing helpers --------------------------------------------------------------------------

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _age_of(text: str) -> float | None:
    """Seconds in ``30s``/``10m``/``2h``/``7d``/``1w``, or None when ``text`` is no age."""
    m = _RELATIVE.fullmatch(text.strip())
    return float(m.group(1)) * _UNITS[m.group(2).lower()] if m else None


def parse_age(text: str) -> float:
    """``30s``/``10m``/``2h``/``7d``/``1w`` as seconds.

    Raises:
        ValueError: not an age.
    """
    age = _age_of(text)
    if age is None:
        raise ValueError(f"{text!r} is not an age: use a number and a unit, like 12h, 7d or 2w")
    return age


def parse_time(text: str, now: dt.datetime | None = None) -> int:
    """``10m``/``2h``/``1d`` ago, or an ISO timestamp (naive means UTC), as µs since the epoch.

    Raises:
        ValueError: neither form.
    """
    age = _age_of(text)
    if age is not None:
        now = now or dt.datetime.now(dt.UTC)
        return int((now - dt.timedelta(seconds=age)).timestamp() * 1_000_000)
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use an ISO timestamp (2024-06-01T12:00) or an age "
            "like 10m, 2h, 1d"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1_000_000)


class TimeParam(_ParamType):
    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class AgeParam(_ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_age(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def parse_input(text: str) -> tuple[str, Any]:
    """``key=value``; the value is JSON when it parses (``42``, ``true``, ``"x"``), else text.

    Raises:
        ValueError: no ``=``, or an empty key.
    """
    import msgspec

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--input expects KEY=VALUE (e.g. passage_id=42), got {text!r}")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        value = raw
    return key.strip(), value


class InputParam(_ParamType):
    name = "KEY=VALUE"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        try:
            return parse_input(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def resolve(obj: Context, text: str, kind: IdKind) -> uuid.UUID:
    """The one stored id starting or ending with ``text``; a clear error when none or
    several do."""
    from actiontrace.storage._base import prefix_bounds

    what = "flow token" if kind == "flow" else "action id"
    try:
        digits, _, _ = prefix_bounds(text)
    except ValueError:
        raise CliError(
            f"malformed {what} {text!r}: expected a UUID, or its start or end (hex digits)"
        ) from None
    storage = obj.storage()
    found = storage.resolve_prefix(digits, kind, limit=3)
    if len(digits) < 32:
        found = sorted({*found, *storage.resolve_suffix(digits, kind, limit=3)})
    if not found:
        raise CliError(f"no {what} starts or ends with {text!r}")
    if len(found) > 1:
        shown = ", ".join(str(u) for u in found[:2]) + (", ..." if len(found) > 2 else "")
        raise CliError(f"{what} {text!r} is ambiguous: it matches {shown}; give more digits")
    return found[0]


# -- formatting --------------------------------------------------------------------------------


def fmt_time(us: int) -> str:
    """µs since the epoch as ``2024-06-01T12:00:00.123Z`` (UTC; accepted by --since)."""
    when = dt.datetime.fromtimestamp(us / 1_000_000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def fmt_duration(us: float | None) -> str:
    if us is None:
        return "-"
    if us < 1_000:
        return f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1_000:.1f} ms"
    return f"{us / 1_000_000:.2f} s"


def fmt_status(status: str | None) -> str:
    text = status or "?"
    colour = {"ok": "green", "error": "red", "running": "yellow"}.get(text)
    return click.style(text, fg=colour) if colour else text


def compact(value: Any, width: int = 100) -> str:
    from actiontrace._views import _compact

    return _compact(value, width)


def name_of(rec: ActionRecord) -> str:
    from actiontrace._views import short_name

    return short_name(rec)


def echo_json(value: Any) -> None:
    import msgspec

    click.echo(msgspec.json.format(msgspec.json.encode(value).decode(), indent=2))


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts).")(fn)


def full_ids_option(fn: F) -> F:
    return click.option("--full-ids", is_flag=True,
                        help="Print whole ids instead of the short ones.")(fn)


def short_ids(obj: Context, ids: list[uuid.UUID], kind: IdKind, full: bool) -> dict[uuid.UUID, str]:
    """How a listing shows each id: its shortest unique ending (see ``resolve``), or whole."""
    if full:
        return {i: str(i) for i in ids}
    return obj.storage().short_ids(ids, kind)
