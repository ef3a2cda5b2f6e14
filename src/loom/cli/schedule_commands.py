"""``loom schedule ...``: create, list, describe, pause, resume, trigger, delete and sync
schedules, through the client API (``Database.create_schedule`` and friends)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from loom.cli import render
from loom.cli.common import (
    DatabaseOption,
    JsonOption,
    ModulesOption,
    bounded,
    open_database,
    parse_json,
    run,
)
from loom.cli.errors import CliError
from loom.modules import import_modules
from loom.schedules import ScheduleDescription, ScheduleInfo
from loom.scheduling import check_name

schedule_app = typer.Typer(
    no_args_is_help=True,
    help="Start workflows on a cron expression or an interval, once per slot, whatever the "
    "number of workers.",
)

Name = Annotated[str, typer.Argument(metavar="NAME", help="The schedule's name.")]


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else render.local_time(moment.timestamp())


def info_json(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "workflow": info.workflow,
        "cron": info.cron,
        "every": info.every,
        "timezone": info.timezone,
        "spec": info.spec,
        "input": info.input,
        "overlap": info.overlap,
        "catch_up": info.catch_up,
        "catch_up_limit": info.catch_up_limit,
        "paused": info.paused,
        "next_run": info.next_run,
        "buffered_run": info.buffered_run,
        "last_run_id": info.last_run_id,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    }


def _state(info: ScheduleInfo) -> Any:
    return render.text("paused", "bold yellow") if info.paused else render.text("active", "green")


@schedule_app.command("create")
def create_command(
    name: Name,
    workflow: Annotated[
        str, typer.Option("--workflow", "-w", metavar="NAME", help="The workflow to start.")
    ],
    cron: Annotated[
        str | None,
        typer.Option("--cron", metavar="EXPR", help='A cron expression: "*/5 * * * *".'),
    ] = None,
    every: Annotated[
        str | None,
        typer.Option("--every", metavar="INTERVAL", help="An interval: 30s, 5m, 2h, 1d, 1h30m."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option("--timezone", "--tz", metavar="TZ", help="IANA timezone of --cron [UTC]."),
    ] = None,
    input_json: Annotated[
        str | None, typer.Option("--input", "-i", metavar="JSON", help="The workflow input.")
    ] = None,
    overlap: Annotated[
        str,
        typer.Option("--overlap", help="While the last run runs: skip, buffer_one or allow_all."),
    ] = "skip",
    catch_up: Annotated[
        str,
        typer.Option("--catch-up", help="Slots missed while no worker ran: skip, latest or all."),
    ] = "latest",
    catch_up_limit: Annotated[
        int, typer.Option("--catch-up-limit", help="At most this many slots for --catch-up all.")
    ] = 10,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    modules: ModulesOption = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a schedule (its workflow's module is needed: -m, $LOOM_MODULES or \\[tool.loom])."""
    if (cron is None) == (every is None):
        raise CliError("give exactly one of --cron and --every", exit_code=2)
    workflow_input = parse_json(input_json, "--input")
    import_modules(modules)

    async def create() -> ScheduleInfo:
        async with open_database(database) as db:
            return await db.create_schedule(
                name,
                workflow,
                cron=cron,
                every=every,
                timezone=timezone,
                input=workflow_input,
                overlap=overlap,
                catch_up=catch_up,
                catch_up_limit=catch_up_limit,
                paused=paused,
            )

    info = run(create())
    if as_json:
        render.emit_json(info_json(info))
        return
    state = "paused" if info.paused else f"next run {_when(info.next_run)}"
    message = f"created schedule {info.name}: {info.workflow}, {info.spec}; {state}"
    render.console().print(render.text(message))


@schedule_app.command("list")
def list_command(database: DatabaseOption = None, as_json: JsonOption = False) -> None:
    """List the schedules, by name, with their next run."""

    async def fetch() -> list[ScheduleInfo]:
        async with open_database(database) as db:
            return await db.list_schedules()

    found = run(fetch())
    if as_json:
        render.emit_json([info_json(i) for i in found])
        return
    out = render.console()
    if not found:
        out.print("No schedules.")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "WORKFLOW", "SPEC", "STATE", "NEXT RUN", "OVERLAP", "CATCH-UP"):
        table.add_column(column, no_wrap=column == "NAME")
    table.add_column("LAST RUN")
    for info in found:
        table.add_row(
            render.text(info.name),
            render.text(info.workflow),
            render.text(info.spec),
            _state(info),
            _when(info.next_run),
            info.overlap,
            info.catch_up,
            render.text(info.last_run_id or "-"),
        )
    out.print(table)


@schedule_app.command("describe")
def describe_command(
    name: Name,
    runs: Annotated[int, typer.Option("--runs", "-n", help="Recent runs shown (0 to 1000).")] = 10,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a schedule: its definition, its next run times and its recent runs."""
    check_name(name)
    bounded(runs, "--runs", 0, 1000)

    async def fetch() -> ScheduleDescription:
        async with open_database(database) as db:
            return await db.describe_schedule(name, runs=runs)

    found = run(fetch())
    info = found.schedule
    recent = [
        {
            "workflow_id": r.workflow_id,
            "status": r.status.value,
            "created_at": r.created_at,
            "updated_at": r.updated_at,
        }
        for r in found.recent_runs
    ]
    if as_json:
        render.emit_json({**info_json(info), "upcoming": found.upcoming, "recent_runs": recent})
        return
    out = render.console()
    head = render.text(f"Schedule {info.name}  ", "bold")
    head.append_text(_state(info))
    out.print(head)
    details = Table(box=None, show_header=False, pad_edge=False)
    details.add_column(style="bold")
    details.add_column()
    details.add_row("  workflow", render.text(info.workflow))
    details.add_row("  spec", render.text(info.spec))
    details.add_row("  input", render.text(render.compact_json(info.input)))
    details.add_row("  overlap", info.overlap)
    limit = f" (at most {info.catch_up_limit})" if info.catch_up == "all" else ""
    details.add_row("  catch-up", info.catch_up + limit)
    if info.buffered_run is not None:
        details.add_row("  buffered", _when(info.buffered_run))
    details.add_row("  created", _when(info.created_at))
    details.add_row("  updated", _when(info.updated_at))
    out.print(details)
    out.print()
    out.print(render.text("Next runs", "bold"))
    if info.paused:
        out.print("  none while paused (`loom schedule resume`)")
    for moment in found.upcoming:
        out.print(f"  {_when(moment)}  ({moment.strftime('%Y-%m-%dT%H:%M:%SZ')})")
    out.print()
    out.print(render.text("Recent runs", "bold"))
    if not found.recent_runs:
        out.print("  none yet")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("  ID", "STATUS", "STARTED", "DURATION"):
        table.add_column(column)
    for r in found.recent_runs:
        created, updated = r.created_at.timestamp(), r.updated_at.timestamp()
        table.add_row(
            render.text(f"  {r.workflow_id}"),
            render.status_text(r.status),
            render.short_time(created),
            render.duration(render.lifetime(r.status, created, updated)),
        )
    out.print(table)


@schedule_app.command("pause")
def pause_command(name: Name, database: DatabaseOption = None) -> None:
    """Stop firing a schedule; runs in progress go on."""
    check_name(name)

    async def pause() -> ScheduleInfo:
        async with open_database(database) as db:
            return await db.pause_schedule(name)

    run(pause())
    render.console().print(render.text(f"paused schedule {name}"))


@schedule_app.command("resume")
def resume_command(name: Name, database: DatabaseOption = None) -> None:
    """Fire a paused schedule again, from its next slot (the paused ones are not caught up)."""
    check_name(name)

    async def resume() -> ScheduleInfo:
        async with open_database(database) as db:
            return await db.resume_schedule(name)

    info = run(resume())
    message = f"resumed schedule {name}; next run {_when(info.next_run)}"
    render.console().print(render.text(message))


@schedule_app.command("trigger")
def trigger_command(
    name: Name,
    modules: ModulesOption = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a run now, whatever the slots, pause or overlap policy (needs the workflow's
    module: -m, $LOOM_MODULES or \\[tool.loom])."""
    check_name(name)
    import_modules(modules)

    async def trigger() -> str:
        async with open_database(database) as db:
            return (await db.trigger_schedule(name)).workflow_id

    workflow_id = run(trigger())
    if as_json:
        render.emit_json({"schedule": name, "workflow_id": workflow_id})
        return
    render.console().print(render.text(f"triggered schedule {name}: workflow {workflow_id}"))


@schedule_app.command("delete")
def delete_command(name: Name, database: DatabaseOption = None) -> None:
    """Delete a schedule; its runs stay."""
    check_name(name)

    async def delete() -> None:
        async with open_database(database) as db:
            await db.delete_schedule(name)

    run(delete())
    render.console().print(render.text(f"deleted schedule {name}"))


@schedule_app.command("sync")
def sync_command(modules: ModulesOption = None, database: DatabaseOption = None) -> None:
    """Write the schedules the modules declare (loom.schedule) to the database, as a worker
    does when it starts: new ones are created, changed ones updated (pause state kept)."""
    import_modules(modules)

    async def sync() -> list[ScheduleInfo]:
        async with open_database(database) as db:
            return await db.sync_schedules()

    saved = run(sync())
    out = render.console()
    if not saved:
        out.print("No schedules are declared in the modules (loom.schedule(...)).")
    for info in saved:
        out.print(render.text(f"synced schedule {info.name}: {info.workflow}, {info.spec}"))
