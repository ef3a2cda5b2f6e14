"""``loom gc``: delete the finished workflows that ended longer ago than a period, once.

It counts them first and asks (``--yes`` skips the question), then deletes them in small
batches, each its own short transaction, so running workers are never held up for long (see
``loom.retention``; ``loom worker --retention`` does the same every minute)."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from loom.cli import render
from loom.cli.bulk import YesOption, confirm
from loom.cli.common import DatabaseOption, JsonOption, bounded, open_database, parse_duration, run
from loom.cli.errors import CliError
from loom.retention import BATCH, finished_statuses


def gc_command(
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Delete the finished workflows that ended longer ago than this (30d, 12h).",
        ),
    ] = "",
    statuses: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            help="Only this status: COMPLETED, FAILED or CANCELED (repeatable) "
            "[default: all three].",
        ),
    ] = None,
    batch: Annotated[
        int, typer.Option("--batch", help="Workflows deleted per transaction (1 to 10000).")
    ] = BATCH,
    yes: YesOption = False,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete finished workflows (with their histories) that ended longer ago than a period."""
    if not older_than:
        raise CliError("give the age of the workflows to delete: --older-than 30d", exit_code=2)
    seconds = parse_duration(older_than, "--older-than")
    bounded(batch, "--batch", 1, 10_000)
    try:
        chosen = finished_statuses(statuses)
    except ValueError as exc:
        raise CliError(str(exc), exit_code=2) from None
    which = "/".join(s.value for s in chosen)
    what = f"finished workflows ({which}) that ended more than {older_than.strip()} ago"

    # The age is measured from the moment of the count, for the deletion too: a workflow that
    # ends (or ages past the period) while the question waits was not confirmed, and stays.
    counted_at = time.time()

    async def count() -> int:
        async with open_database(database) as db:
            return await db.count_finished(seconds, chosen, now=counted_at)

    found = run(count())
    if not found:
        if as_json:
            render.emit_json({"matched": 0, "deleted": 0})
        else:
            render.console().print(render.text(f"no {what}; nothing to delete"))
        return
    if not yes:
        confirm(f"delete {found} {what}, with their histories?", "nothing was deleted")

    async def delete() -> int:
        async with open_database(database) as db:
            return await db.delete_finished(seconds, chosen, batch=batch, now=counted_at)

    deleted = run(delete())
    if as_json:
        render.emit_json({"matched": found, "deleted": deleted})
    else:
        render.console().print(render.text(f"deleted {deleted} {what}"))
