"""``loom migrate``: copy a whole database to another one (SQLite <-> PostgreSQL), verified."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from loom.cli import render
from loom.cli.common import JsonOption, bounded, database_url, run
from loom.masking import mask_credentials
from loom.transfer import Progress, TransferReport, copy_database


def migrate_command(
    source: Annotated[
        str,
        typer.Option(
            "--from", metavar="URL", help="The database to copy (only read): a URL or SQLite file."
        ),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The database to copy into; its schema is created or upgraded first.",
        ),
    ],
    batch: Annotated[
        int, typer.Option("--batch", help="Workflows per transaction on the target (1 to 100000).")
    ] = 500,
    as_json: JsonOption = False,
) -> None:
    """Copy every workflow, its history and pending signals, and the schedules to another
    database, then verify that both hold the same. Stop the source's workers first.

    Running it again is safe: workflows already copied are skipped, so an interrupted copy is
    completed by the same command. Leases are not copied: running workflows, and routed
    activities in flight, are picked up by the target's workers.
    """
    bounded(batch, "--batch", 1, 100_000)
    source_url, target_url = database_url(source), database_url(target)
    assert source_url is not None and target_url is not None  # typer requires both options
    progress = _progress_printer() if not as_json and sys.stderr.isatty() else None
    report = run(copy_database(source_url, target_url, batch=batch, progress=progress))
    if progress is not None:
        print(file=sys.stderr)
    if as_json:
        render.emit_json(
            {
                "source": report.source,
                "target": report.target,
                "workflows": report.workflows,
                "copied": report.copied,
                "already_present": report.already_present,
                "events": report.events,
                "signals": report.signals,
                "schedules": report.schedules,
                "by_status": report.by_status,
                "leased": report.leased,
                "activity_tasks": report.activity_tasks,
                "migrations_applied": report.migrations_applied,
                "verified": report.verified,
            }
        )
        return
    for line, style in summary(report):
        render.console().print(render.text(mask_credentials(line), style=style))


def _progress_printer() -> Progress:
    def show(done: int, total: int) -> None:
        print(f"\rcopied {done}/{total} workflow(s)", end="", file=sys.stderr, flush=True)

    return show


def summary(report: TransferReport) -> list[tuple[str, str]]:
    """The lines ``loom migrate`` prints, with their styles."""
    lines = []
    if report.migrations_applied:
        lines.append(
            (f"prepared {report.target} (applied {', '.join(report.migrations_applied)})", "")
        )
    copied = (
        f"copied {report.copied} workflow(s) from {report.source} to {report.target}"
        f" ({report.events} event(s), {report.signals} pending signal(s) in all)"
    )
    if report.already_present:
        copied += f"; {report.already_present} were already there"
    lines.append((copied, ""))
    statuses = ", ".join(f"{count} {status}" for status, count in report.by_status.items())
    lines.append(
        (
            f"verified: both databases hold the same {report.workflows} workflow(s)"
            + (f" ({statuses})" if statuses else "")
            + " with identical histories and signals",
            "bold green",
        )
    )
    if report.activity_tasks:
        lines.append(
            (
                f"verified: both databases hold the same {report.activity_tasks} activity "
                "task(s) (routed activities in flight; one a worker was running runs again "
                "on the target once its lease would have expired)",
                "bold green",
            )
        )
    if report.schedules:
        lines.append(
            (
                f"verified: both databases hold the same {report.schedules} schedule(s), "
                "definitions and progress",
                "bold green",
            )
        )
    if report.leased:
        lines.append(
            (
                f"warning: {report.leased} workflow(s) were held by a worker of the source; "
                "the target's workers take them over when those leases expire. Stop the "
                "source's workers before migrating.",
                "bold yellow",
            )
        )
    return lines
