"""``loom list`` and ``loom stats``: what is in the database, as a table or JSON."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer
from rich.table import Table

from loom import limits
from loom.cli import render
from loom.cli.common import DatabaseOption, JsonOption, bounded, open_database, run
from loom.cli.queue_commands import queues_table, stats_json
from loom.client import StoreStats, WorkflowSummary, parse_tags
from loom.queues import QueueStats
from loom.status import WorkflowStatus

MAX_ROWS = 1_000_000


def list_command(
    limit: Annotated[
        int, typer.Option("--limit", "-n", help=f"At most this many rows (1 to {MAX_ROWS}).")
    ] = 50,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help="Only this status: RUNNING, COMPLETED, FAILED or CANCELED."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Only workflows of this type.")] = None,
    parent: Annotated[
        str | None, typer.Option("--parent", help="Only the child workflows of this workflow.")
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", metavar="KEY=VALUE", help="Only workflows with this tag."),
    ] = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """List workflows, newest first."""
    bounded(limit, "--limit", 1, MAX_ROWS)
    if name is not None:
        limits.check_id(name, "workflow name")
    if parent is not None:
        limits.check_id(parent, "parent workflow id")
    tags = parse_tags(tag or [])

    async def fetch() -> list[WorkflowSummary]:
        async with open_database(database) as db:
            return await db.list_workflows(
                status=status, limit=limit, name=name, parent_id=parent, tags=tags
            )

    rows = run(fetch())
    if as_json:
        render.emit_json([summary_json(row) for row in rows])
        return
    out = render.console()
    if not rows:
        out.print("No workflows.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("ID", no_wrap=True)
    for column in ("NAME", "VERSION", "STATUS", "STEP", "STARTED", "UPDATED"):
        table.add_column(column)
    table.add_column("DURATION", justify="right")
    for row in rows:
        created, updated = row.created_at.timestamp(), row.updated_at.timestamp()
        table.add_row(
            render.text(row.workflow_id),
            render.text(row.name),
            render.text(row.version),
            render.status_text(row.status),
            render.text(row.current_step or "-"),
            render.short_time(created),
            render.short_time(updated),
            render.duration(render.lifetime(row.status, created, updated)),
        )
    out.print(table)


def summary_json(row: WorkflowSummary) -> dict[str, Any]:
    created, updated = row.created_at.timestamp(), row.updated_at.timestamp()
    return {
        "workflow_id": row.workflow_id,
        "name": row.name,
        "version": row.version,
        "status": row.status.value,
        "current_step": row.current_step,
        "created_at": row.created_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "duration_seconds": round(render.lifetime(row.status, created, updated), 3),
        "parent_id": row.parent_id,
    }


def stats_command(database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """Workflows by status, tasks by state, throughput and the oldest pending task."""

    async def fetch() -> tuple[StoreStats, list[QueueStats]]:
        async with open_database(database) as db:
            return await db.stats(), await db.queues()

    stats, queues = run(fetch())
    by_status = {s.value: stats.by_status.get(s.value, 0) for s in WorkflowStatus}
    if as_json:
        render.emit_json(
            {
                **dataclasses.asdict(stats),
                "by_status": by_status,
                "queues": [stats_json(q) for q in queues],
            }
        )
        return
    out = render.console()
    workflows = Table(title="Workflows", title_justify="left", box=None, pad_edge=False)
    for status in WorkflowStatus:
        workflows.add_column(
            status.value, justify="right", header_style=render.STATUS_STYLES[status]
        )
    workflows.add_column("TOTAL", justify="right", header_style="bold")
    workflows.add_row(*(str(n) for n in by_status.values()), str(sum(by_status.values())))
    tasks = _section("Tasks")
    tasks.add_row("ready", str(stats.ready), "runnable now, waiting for a worker")
    tasks.add_row("leased", str(stats.leased), "being run by a worker")
    tasks.add_row("sleeping", str(stats.sleeping), "until a timer or an activity retry")
    tasks.add_row("waiting", str(stats.waiting), "for a signal")
    tasks.add_row("signals pending", str(stats.signals_pending), "sent, not yet consumed")
    oldest = stats.oldest_ready_age
    tasks.add_row(
        "oldest ready",
        "-" if oldest is None else render.duration(oldest),
        "how long the oldest ready task has waited",
    )
    throughput = _section("Throughput")
    per_minute = " ".join(str(n) for n in stats.completed_per_minute[:5]) or "-"
    throughput.add_row("last minute", str(stats.completed_last_minute), "workflows completed")
    throughput.add_row("per minute", per_minute, "completed, the last 5 minutes, newest first")
    failed = " ".join(str(n) for n in stats.failed_per_minute[:5]) or "-"
    throughput.add_row("failed", failed, "per minute, the last 5 minutes, newest first")
    throughput.add_row("events", str(stats.events), "stored in all histories")
    for index, table in enumerate((workflows, tasks, throughput, queues_table(queues))):
        if index:
            out.print()
        out.print(table)


def _section(title: str) -> Table:
    table = Table(title=title, title_justify="left", box=None, pad_edge=False, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(style="dim")
    return table
