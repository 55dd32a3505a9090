"""The ``actiontrace`` command line (docs/reference.md, "Command line"; docs/cli.md).

``actiontrace [--url URL] COMMAND``: the URL defaults to ``$ACTIONTRACE_URL``, else
``sqlite:///actiontrace.db``. Every command is a click command in the ``cli`` group
(or a subgroup such as ``db``); ``main`` runs it. Errors are one line on stderr with a
non-zero exit (a usage error adds the usage line), never a traceback, and never show a
password. Reading commands go straight to a read-only ``SqlAlchemyTraceStorage``: no
tracer, no writer thread, and the database is never changed (no file created, no table,
not even SQLite's journal mode). Output cut short by its reader (``| head``) ends
quietly with exit 0.

Exit codes: 0 success, 1 an error (bad id, unreachable database, ...), 2 a usage error,
130 interrupted.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from actiontrace._cli_db import db
from actiontrace._cli_support import (
    AgeParam,
    CliError,
    Context,
    InputParam,
    TimeParam,
    compact,
    echo_json,
    fail_line,
    fmt_duration,
    fmt_status,
    fmt_time,
    friendly_errors,
    full_ids_option,
    json_option,
    name_of,
    pass_ctx,
    reader_left,
    resolve,
    short_ids,
)
from actiontrace._options import DEFAULT_URL

if TYPE_CHECKING:
    from actiontrace._model import ActionRecord

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])


# -- the group -------------------------------------------------------------------------------


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="Database URL (default: $ACTIONTRACE_URL, else sqlite:///actiontrace.db).",
)
@click.version_option(package_name="actiontrace", prog_name="actiontrace")
@click.pass_context
def cli(ctx: click.Context, url: str | None) -> None:
    """Record what your application did and why: query and manage traces.

    Ids (flow tokens, action ids) may be shortened to any unique prefix.
    """
    obj = Context(url or os.environ.get("ACTIONTRACE_URL") or DEFAULT_URL)
    ctx.obj = obj
    ctx.call_on_close(obj.close)


cli.add_command(db)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Run the command line (the ``actiontrace`` console script)."""
    try:
        # Colour only on a terminal (click strips it otherwise), and never with NO_COLOR.
        color = False if os.environ.get("NO_COLOR") else None
        code = cli.main(args=list(argv) if argv is not None else None, prog_name="actiontrace",
                        standalone_mode=False, color=color)
    except click.UsageError as exc:
        # click's own format takes four lines (usage, hint, blank, error): keep two.
        if exc.ctx is not None:
            click.echo(exc.ctx.get_usage(), err=True)
        fail_line(exc.format_message())
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        fail_line("aborted")
        code = 130
    except KeyboardInterrupt:
        fail_line("interrupted")
        code = 130
    except BrokenPipeError:
        reader_left()
        code = 0
    sys.exit(code if isinstance(code, int) else 0)


# -- reading ------------------------------------------------------------------------------------


@cli.command()
@click.option("--limit", "-n", default=20, show_default=True, type=click.IntRange(min=0),
              help="At most this many flows.")
@click.option("--since", type=TimeParam(), help="Only flows started since (10m, 2h, 1d, ISO).")
@json_option
@full_ids_option
@pass_ctx
@friendly_errors
def flows(obj: Context, limit: int, since: int | None, as_json: bool, full_ids: bool) -> None:
    """List recent flows, newest first: token, start, root action, size, status, duration.

    Tokens are shown by their shortest unique ending, which every command accepts.
    """
    from actiontrace._views import root_label

    found = obj.storage().list_flows(limit=limit, since=since)
    if as_json:
        echo_json(found)
        return
    shown = short_ids(obj, [f.flow_token for f in found], "flow", full_ids)
    for f in found:
        root = root_label(f)
        errors = f" ({f.errors} failed)" if f.errors else ""
        click.echo(
            f"{shown[f.flow_token]}  {fmt_time(f.created_at)}  {click.style(root, bold=True)}  "
            f"{f.actions} action{'s' if f.actions != 1 else ''}{errors}  "
            f"{fmt_status(f.status)}  {fmt_duration(f.duration_us)}"
        )


def _flow_of(obj: Context, text: str) -> uuid.UUID:
    """A flow token prefix, or else an action id prefix standing for its action's flow."""
    try:
        return resolve(obj, text, "flow")
    except CliError as flow_error:
        if not flow_error.message.startswith("no flow token"):
            raise
        try:
            action_id = resolve(obj, text, "action")
        except CliError:
            raise flow_error from None
        return obj.storage().get_causal_chain(action_id)[-1].flow_token


@cli.command()
@click.argument("flow")
@pass_ctx
@friendly_errors
def show(obj: Context, flow: str) -> None:
    """Print the tree of FLOW (a flow token, or an action id: that action's flow)."""
    from actiontrace._views import missing_causes

    trace = obj.storage().get_trace(_flow_of(obj, flow))
    click.echo(f"flow {trace.flow_token}  module {trace.module}  {fmt_time(trace.created_at)}")
    click.echo(trace.to_ascii(), nl=False)
    for note in missing_causes(trace):
        click.echo(f"note: {note}")


def render_why(chain: list[ActionRecord], syncs: list[str | None]) -> list[str]:
    """The causal chain as numbered steps, each with how it follows from the one above."""
    last = chain[-1]
    lines = [
        f"Why did {click.style(name_of(last), bold=True)} {compact(last.inputs, 60)} happen?",
        f"flow {last.flow_token}",
        "",
    ]
    for n, (rec, sync) in enumerate(zip(chain, syncs, strict=True), 1):
        if n == 1:
            how = ""
        elif sync is not None:
            how = f"──({click.style(sync, fg='cyan')})──> "
        else:
            how = "──(called inside)──> "
        dur = f"  {fmt_duration(rec.duration_us)}" if rec.duration_us is not None else ""
        lines.append(
            f"{n:>2}. {how}[{click.style(name_of(rec), bold=True)}]  {fmt_status(rec.status)}"
            f"{dur}  {fmt_time(rec.timestamp)}"
        )
        lines.append(f"      id      {rec.id}")
        lines.append(f"      inputs  {compact(rec.inputs)}")
        if rec.status != "running":
            label = "error  " if rec.status == "error" else "outputs"
            lines.append(f"      {label} {compact(rec.outputs)}")
    return lines


def _why(obj: Context, action_id: uuid.UUID) -> tuple[list[ActionRecord], list[str | None]]:
    storage = obj.storage()
    chain = storage.get_causal_chain(action_id)
    syncs: list[str | None] = [None]
    for rec in chain[1:]:
        syncs.append(storage.find_producing_sync(rec.id))
    return chain, syncs


@cli.command()
@click.argument("action_id")
@json_option
@pass_ctx
@friendly_errors
def why(obj: Context, action_id: str, as_json: bool) -> None:
    """Explain why ACTION_ID happened: its causal chain, with the synchronization of each step."""
    from actiontrace._views import missing_causes

    chain, syncs = _why(obj, resolve(obj, action_id, "action"))
    if as_json:
        echo_json([{"action": rec, "synchronization": s} for rec, s in zip(chain, syncs, strict=True)])
        return
    click.echo("\n".join(render_why(chain, syncs)))
    for note in missing_causes(obj.storage().get_trace(chain[0].flow_token), chain):
        click.echo(f"note: {note}")


@cli.command()
@click.option("--concept", help="Concept URI, exactly or as a '::' prefix (wkmp-ap).")
@click.option("--action", "action_name", metavar="NAME", help="Action name, exactly.")
@click.option("--input", "inputs", multiple=True, type=InputParam(),
              help="KEY=VALUE the inputs must hold (VALUE is JSON if it parses). Repeatable.")
@click.option("--since", type=TimeParam(), help="Started at or after (10m, 2h, 1d, ISO).")
@click.option("--until", type=TimeParam(), help="Started at or before (10m, 2h, 1d, ISO).")
@click.option("--flow", "flow_", metavar="FLOW", help="Only actions of this flow.")
@click.option("--limit", "-n", default=100, show_default=True, type=click.IntRange(min=0),
              help="At most this many actions (the oldest first).")
@json_option
@full_ids_option
@pass_ctx
@friendly_errors
def find(obj: Context, concept: str | None, action_name: str | None,
         inputs: tuple[tuple[str, Any], ...], since: int | None, until: int | None,
         flow_: str | None, limit: int, as_json: bool, full_ids: bool) -> None:
    """Find actions, oldest first: id, start, action, status, duration, inputs, flow.

    Ids are shown by their shortest unique ending, which every command accepts.
    """
    from actiontrace._model import ActionFilter

    time_range = None
    if since is not None or until is not None:
        time_range = (since if since is not None else 0,
                      until if until is not None else 2**63 - 1)
    found = obj.storage().find_actions(ActionFilter(
        concept_uri=concept, action=action_name, time_range=time_range,
        flow_token=None if flow_ is None else _flow_of(obj, flow_),
        inputs=dict(inputs) or None, limit=limit,
    ))
    if as_json:
        echo_json(found)
        return
    ids = short_ids(obj, [rec.id for rec in found], "action", full_ids)
    tokens = short_ids(obj, [rec.flow_token for rec in found], "flow", full_ids)
    for rec in found:
        click.echo(
            f"{ids[rec.id]}  {fmt_time(rec.timestamp)}  {click.style(name_of(rec), bold=True)}  "
            f"{fmt_status(rec.status)}  {fmt_duration(rec.duration_us)}  "
            f"{compact(rec.inputs, 60)}  flow {tokens[rec.flow_token]}"
        )


@cli.command()
@click.argument("flow")
@click.option("--format", "-f", "fmt", type=click.Choice(["dot", "mermaid", "json"]),
              default="dot", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file instead of stdout.")
@pass_ctx
@friendly_errors
def export(obj: Context, flow: str, fmt: str, output: str | None) -> None:
    """Export FLOW as Graphviz DOT, Mermaid or JSON.

    DOT draws the provenance edges (labelled with their synchronization) and, dashed, the
    call nesting (each action's caller to it). Mermaid draws the nesting of the actions
    no synchronization caused, dotted.
    """
    trace = obj.storage().get_trace(_flow_of(obj, flow))
    if fmt == "dot":
        text = trace.to_dot(calls=True)
    else:
        text = {"mermaid": trace.to_mermaid, "json": trace.to_json}[fmt]()
    if not text.endswith("\n"):
        text += "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {output!r}: {exc.strerror or exc}") from None
    click.echo(f"wrote {output}", err=True)


@cli.command()
@click.option("--limit", "-n", default=10, show_default=True, type=click.IntRange(min=1),
              help="Rows per table.")
@json_option
@pass_ctx
@friendly_errors
def stats(obj: Context, limit: int, as_json: bool) -> None:
    """Top synchronizations, longest causal chains, and latency per synchronization."""
    storage = obj.storage()
    top = storage.top_synchronizations(limit)
    chains = storage.longest_chains(limit)
    perf = storage.sync_performances([name for name, _ in top])
    if as_json:
        echo_json({
            "top_synchronizations": [{"synchronization": n, "count": c} for n, c in top],
            "longest_chains": [{"flow_token": t, "depth": d} for t, d in chains],
            "latency_us": perf,
        })
        return
    if not top and not chains:
        click.echo("no flows recorded yet")
        return
    width = max([len("synchronization"), *(len(n) for n, _ in top)])
    click.echo(click.style("Top synchronizations (actions produced)", bold=True))
    for name, count in top:
        click.echo(f"  {name:<{width}}  {count:>7}")
    click.echo(click.style("\nLongest causal chains (actions on the longest path)", bold=True))
    for token, depth in chains:
        click.echo(f"  {token}  {depth:>4}")
    click.echo(click.style("\nLatency of the actions each synchronization produced", bold=True))
    click.echo(f"  {'synchronization':<{width}}  {'count':>7}  {'p50':>9}  {'p95':>9}  {'p99':>9}")
    for name, m in perf.items():
        click.echo(
            f"  {name:<{width}}  {m.count:>7}  {fmt_duration(m.median):>9}  "
            f"{fmt_duration(m.p95):>9}  {fmt_duration(m.p99):>9}"
        )


# -- serve ----------------------------------------------------------------------------------------


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; any but loopback requires the token.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port (0: any free port).")
@click.option("--token", envvar="ACTIONTRACE_SERVE_TOKEN", default=None,
              help="Token to require (default: none on loopback, else a new one, printed).")
@click.option("--import", "imports", metavar="MODULE", multiple=True,
              help="Import MODULE first, so the reactions it declares are shown. Repeatable.")
@pass_ctx
@friendly_errors
def serve(obj: Context, host: str, port: int, token: str | None,
          imports: tuple[str, ...]) -> None:
    """Serve a read-only web viewer of the store (needs the `web` extra)."""
    import importlib

    try:
        import uvicorn  # noqa: F401 - checked here, used by _viewer.serve

        from actiontrace import _viewer
    except ImportError as exc:
        raise CliError(f"serve needs the web extra: pip install 'actiontrace[web]' ({exc})") from None
    for name in imports:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise CliError(f"cannot import {name!r}: {exc}") from None
    storage = obj.storage()
    storage.list_flows(limit=1)  # fail now, in one line, on a store that cannot be read
    try:
        _viewer.serve(storage, host=host, port=port, token=token, echo=click.echo, url=obj.url)
    except OSError as exc:
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


# -- demo -----------------------------------------------------------------------------------------


@cli.command()
@click.option("--url", "demo_url", metavar="URL", default=None,
              help="Database to fill (default: the global --url).")
@pass_ctx
@friendly_errors
def demo(obj: Context, demo_url: str | None) -> None:
    """Run the bundled music player into the database, then show why passage 42 played."""
    from actiontrace import demo as app
    from actiontrace._tracer import get_tracer
    from actiontrace.storage._sql import mask_url

    url = demo_url or obj.url
    play, queued = app.run(url)
    tracer = get_tracer()
    storage: Any = tracer.storage
    obj._storage = storage
    n = len(app.DEMO_REQUESTS)
    click.echo(f"Ran the demo music player ({n} web requests, one flow each) into {mask_url(url)}.")
    click.echo("")
    chain, syncs = _why(obj, play.id)
    click.echo("\n".join(render_why(chain, syncs)))
    if queued is not None:
        # The play dequeued 42; an earlier request's flow had queued it.
        click.echo("")
        click.echo(click.style("And 42 was in the queue because, in an earlier request:", bold=True))
        chain, syncs = _why(obj, queued.id)
        click.echo("\n".join(render_why(chain, syncs)[3:]))
    click.echo("")
    click.echo(click.style("The flow that played it (actiontrace show):", bold=True))
    click.echo(storage.get_trace(play.flow_token).to_ascii(), nl=False)
    url_opt = "" if url == DEFAULT_URL else f" --url {mask_url(url)}"
    click.echo("")
    click.echo("Explore it:")
    for line in (f"actiontrace{url_opt} flows", f"actiontrace{url_opt} why {play.id}",
                 f"actiontrace{url_opt} find --action play_passage --input passage_id=42",
                 f"actiontrace{url_opt} stats"):
        click.echo(f"  {line}")
    click.echo("")
    click.echo(f"To look around in your browser: actiontrace{url_opt} serve "
               "(needs pip install 'actiontrace[web]')")
    tracer.shutdown()


# -- prune (docs/retention.md) ----------------------------------------------------------------


@cli.command()
@click.option("--older-than", "age", required=True, type=AgeParam(),
              help="Remove flows whose newest action started longer ago (12h, 7d, 2w).")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
@pass_ctx
@friendly_errors
def prune(obj: Context, age: float, dry_run: bool) -> None:
    """Remove old flows, whole: their actions, edges and log events."""
    from actiontrace.recording._ids import now_us
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

    # Refused, like the reading commands, on a missing file or a database without our
    # tables (checked read-only, so such a database is left exactly as it is).
    obj.storage()._ensure()
    storage = SqlAlchemyTraceStorage(obj.url)
    try:
        done = storage.prune_flows(now_us() - int(age * 1_000_000), dry_run=dry_run)
    finally:
        storage.close()
    verb = "would remove" if dry_run else "removed"
    click.echo(f"{verb} {done.flows:,} flows ({done.actions:,} actions)")


# -- partition (docs/retention.md) ------------------------------------------------------------


@cli.command()
@click.option("--period", default="1d", type=AgeParam(), show_default=True,
              help="Time each partition covers (1h, 1d, 1w).")
@click.option("--ahead", default=2, type=click.IntRange(min=0), show_default=True,
              help="Partitions to make beyond the current period.")
@pass_ctx
@friendly_errors
def partition(obj: Context, period: float, ahead: int) -> None:
    """Partition a PostgreSQL store by time, so prune drops whole partitions."""
    import datetime as dt

    from actiontrace.storage import _partitions
    from actiontrace.storage._sql import SqlAlchemyTraceStorage

    obj.storage()._ensure()  # refused, like prune, on a database without our tables
    storage = SqlAlchemyTraceStorage(obj.url)
    try:
        made = storage.partition(period, ahead=ahead)
        with storage.engine.connect() as conn:
            top = _partitions.layout(conn).top_ms
    finally:
        storage.close()
    until = dt.datetime.fromtimestamp(top / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    click.echo(f"made {made:,} partitions of {period:,.0f} s each; they reach {until}")


if __name__ == "__main__":  # pragma: no cover
    main()
