"""``loom queue set`` and ``loom queue list``: a task queue's limits, stored in the database and
obeyed by every worker from its next claim; and the table of queues ``loom stats`` shows too."""

from __future__ import annotations

import re
from typing import Annotated, Any

import typer
from rich.table import Table

from loom.cli import render
from loom.cli.common import DatabaseOption, JsonOption, open_database, run
from loom.cli.errors import CliError
from loom.errors import LoomError
from loom.queues import QueueLimits, QueueStats, Rate, check_queue, parse_rate

queue_app = typer.Typer(
    help="Task queues: their limits (concurrency, rate), depth and running work.",
    no_args_is_help=True,
)

NONE = "none"


@queue_app.command("set")
def set_command(
    name: Annotated[str, typer.Argument(metavar="QUEUE", help="The queue.")],
    concurrency: Annotated[
        str | None,
        typer.Option(
            "--concurrency",
            metavar="N|none",
            help="At most N of its items in progress at once, across all workers.",
        ),
    ] = None,
    rate: Annotated[
        str | None,
        typer.Option(
            "--rate", metavar="N/PERIOD|none", help="At most N starts per period: 100/m, 5/s."
        ),
    ] = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a queue's limits; a limit not given keeps its stored value, `none` removes it."""
    try:
        check_queue(name)
        count = _concurrency(concurrency)
        starts = None if rate in (None, NONE) else parse_rate(rate)
    except LoomError as exc:
        raise CliError(str(exc)) from None

    async def store() -> QueueLimits:
        # The limit not given is kept by the database itself, not read here and written back:
        # two of these commands at once, setting different limits, both hold.
        keep = [k for k, given in (("concurrency", concurrency), ("rate", rate)) if given is None]
        async with open_database(database) as db:
            return await db.set_queue(name, concurrency=count, rate=starts, keep=keep)

    limits = run(store())
    if as_json:
        render.emit_json(limits_json(limits))
        return
    render.console().print(
        render.text(
            f"queue {limits.name}: concurrency {_shown(limits.concurrency)}, "
            f"rate {_shown(limits.rate)}"
        )
    )


def _concurrency(text: str | None) -> int | None:
    if text is None or text == NONE:
        return None
    if re.fullmatch("-?[0-9]{1,20}", text) is None:
        # int() would take "1_000", " 7 " and other scripts' digits too
        raise CliError(
            f"--concurrency {text[:40]!r}: give a whole number >= 1, or 'none' for no limit"
        )
    return int(text)


@queue_app.command("list")
def list_command(database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Each queue: waiting (depth), running, limits, the oldest waiting item's age."""

    async def fetch() -> list[QueueStats]:
        async with open_database(database) as db:
            return await db.queues()

    queues = run(fetch())
    if as_json:
        render.emit_json([stats_json(q) for q in queues])
        return
    render.console().print(queues_table(queues))


def _shown(value: object) -> str:
    return "-" if value is None else str(value)


def limits_json(limits: QueueLimits) -> dict[str, Any]:
    return {
        "name": limits.name,
        "concurrency": limits.concurrency,
        "rate": None if limits.rate is None else str(limits.rate),
    }


def stats_json(q: QueueStats) -> dict[str, Any]:
    return {
        "name": q.name,
        "depth": q.depth,
        "running": q.running,
        "concurrency": q.concurrency,
        "rate": None if q.rate is None else str(q.rate),
        "started_in_window": q.started_in_window,
        "oldest_waiting_age": q.oldest_waiting_age,
    }


def queues_table(queues: list[QueueStats]) -> Table:
    table = Table(title="Queues", title_justify="left", box=None, pad_edge=False)
    for column, justify in (
        ("QUEUE", "left"),
        ("WAITING", "right"),
        ("RUNNING", "right"),
        ("CONCURRENCY", "right"),
        ("RATE", "right"),
        ("OLDEST WAITING", "right"),
    ):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for q in queues:
        rate: Rate | None = q.rate
        table.add_row(
            render.text(q.name),
            str(q.depth),
            str(q.running),
            _shown(q.concurrency),
            "-" if rate is None else f"{q.started_in_window} of {rate}",
            "-" if q.oldest_waiting_age is None else render.duration(q.oldest_waiting_age),
        )
    if not queues:
        table.add_row("(no queue holds work or limits)", "", "", "", "", "")
    return table
