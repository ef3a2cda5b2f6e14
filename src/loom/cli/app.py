"""The ``loom`` command: wiring of the commands, and one-line errors instead of tracebacks."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

import loom
from loom.cli.action_commands import cancel_command, retry_command, signal_command, start_command
from loom.cli.admin_commands import init_command, replay_command, web_command
from loom.cli.errors import report
from loom.cli.inspect_command import inspect_command
from loom.cli.migrate_command import migrate_command
from loom.cli.query_command import query_command
from loom.cli.queue_commands import queue_app
from loom.cli.read_commands import list_command, stats_command
from loom.cli.worker_command import worker_command

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Loom: durable workflows for Python. Every command takes --database/-d URL "
    "(default: $LOOM_DATABASE_URL, else loom.db in the current directory).",
)


def _version(value: bool) -> None:
    if value:
        print(f"loom {loom.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Loom: durable workflows for Python."""


app.command("init")(init_command)
app.command("worker")(worker_command)
app.command("list")(list_command)
app.command("inspect")(inspect_command)
app.command("stats")(stats_command)
app.command("start")(start_command)
app.command("signal")(signal_command)
app.command("cancel")(cancel_command)
app.command("retry")(retry_command)
app.command("query")(query_command)
app.command("replay")(replay_command)
app.command("web")(web_command)
app.command("migrate")(migrate_command)
app.add_typer(queue_app, name="queue")


def main() -> None:
    """Run the ``loom`` command; a failure is one line on stderr and a non-zero exit code."""
    try:
        app()
    except Exception as exc:
        sys.exit(report(exc))
