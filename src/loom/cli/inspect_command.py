"""``loom inspect``: one workflow's input, state, steps, error and (optionally) history."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from loom import limits
from loom.cli import render
from loom.cli.common import (
    CodecOption,
    DatabaseOption,
    JsonOption,
    ModulesOption,
    open_database,
    run,
)
from loom.cli.errors import CliError, describe
from loom.cli.timeline import (
    StepRun,
    failure_cause,
    place_activities,
    place_heartbeats,
    step_runs,
)
from loom.client import (
    ActivityHeartbeat,
    ActivityRow,
    Database,
    WorkflowRecord,
    WorkflowRun,
    WorkflowSummary,
)
from loom.core.history import Event, EventType
from loom.errors import ConfigurationError
from loom.modules import import_modules
from loom.status import WorkflowStatus


def inspect_command(
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow's id.")],
    events: Annotated[
        bool, typer.Option("--events", "-e", help="Also print the whole event history.")
    ] = False,
    traceback: Annotated[
        bool,
        typer.Option(
            "--traceback",
            help="Print the recorded tracebacks: of the workflow's error and of every failed "
            "activity attempt.",
        ),
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE",
            help="Write the workflow's history (its current run, or --run's) to FILE as JSON "
            "('-': to stdout) instead of showing it: for loom.testing.Replayer and golden tests.",
            dir_okay=False,
        ),
    ] = None,
    run_id: Annotated[
        str | None,
        typer.Option(
            "--run",
            metavar="RUN_ID",
            help="With --export: write that earlier run (one that continued as new; the "
            "runs are listed by loom inspect) instead of the current one.",
        ),
    ] = None,
    modules: ModulesOption = None,
    codec: CodecOption = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show a workflow: input, state, status, steps with durations and heartbeats, its children
    and runs, error and its cause, and the queries it answers (with its module: -m,
    $LOOM_MODULES or [tool.loom])."""
    limits.check_id(workflow_id)
    if export is not None:
        _export(workflow_id, export, run_id, database, codec)
        return
    if run_id is not None:
        raise CliError("--run goes with --export (the run whose history to write)")
    unimportable = _import_quietly(modules)

    async def fetch() -> tuple[
        WorkflowRecord,
        list[Event],
        list[str] | str,
        list[WorkflowSummary],
        list[WorkflowRun],
        dict[str, str],
        list[ActivityHeartbeat],
        list[ActivityRow],
    ]:
        async with open_database(database, codec=codec) as db:
            handle = db.get_workflow(workflow_id)
            record = await handle.describe()
            queries = unimportable or _queries(db, record)
            kids = await db.list_workflows(parent_id=workflow_id, limit=MAX_CHILDREN)
            found = (record, await handle.events(), queries, kids, await handle.runs())
            running = record.status is WorkflowStatus.RUNNING
            beats = await handle.heartbeats() if running else []
            return (*found, await handle.tags(), beats, await handle.activities())

    record, history, queries, children, runs_of_id, tags, heartbeats, activities = run(fetch())
    runs = step_runs(history, record.status)
    place_heartbeats(runs, heartbeats)
    place_activities(runs, activities)
    error = record.error
    cause = failure_cause(history) if error and error.get("type") == "ActivityFailedError" else None
    if as_json:
        document = _as_json(record, runs, cause)
        document["parent_id"] = record.parent_id
        document["tags"] = tags
        document["run_id"] = record.run_id
        document["runs"] = [
            {
                "run_id": r.run_id,
                "number": r.number,
                "status": r.status,
                "started_at": render.iso(r.started),
                "ended_at": render.iso(r.ended),
                "events": r.events,
            }
            for r in runs_of_id
        ]
        document["children"] = [
            {"workflow_id": c.workflow_id, "name": c.name, "status": c.status.value}
            for c in _started_order(children)
        ]
        document["queries"] = queries if isinstance(queries, list) else None
        document["heartbeats"] = [_heartbeat_json(b) for b in heartbeats]
        document["activities"] = [_activity_json(a) for a in activities]
        if traceback:
            document["failed_attempts"] = _failed_attempts(history)
        if events:
            document["events"] = [_event_json(e) for e in history]
        render.emit_json(document)
        return
    out = render.console()
    _print_header(out, record, queries, tags, _awaited(activities, children))
    _section(out, "Input", _json_block(record.input))
    _section(out, "State", _json_block(record.state))
    _section(out, "Steps", _steps_table(runs) if runs else Text("no step has started yet"))
    if children:
        _section(out, f"Children ({len(children)})", _children_table(children))
    if activities:
        _section(out, f"Activities ({len(activities)})", _activities_table(activities))
    if len(runs_of_id) > 1:
        _section(out, f"Runs ({len(runs_of_id)})", _runs_table(runs_of_id))
    if heartbeats:
        _section(out, "Heartbeats (last of each activity)", _heartbeats_table(heartbeats))
    if record.status is WorkflowStatus.CANCELED:
        reason = (error or {}).get("message")
        _section(out, "Canceled", render.text(f"reason: {reason}" if reason else "no reason given"))
    elif error:
        _section(out, "Error", _error_block(error, cause, show_traceback=traceback))
    attempts = _failed_attempts(history) if traceback else []
    if attempts:
        _section(out, f"Failed activity attempts ({len(attempts)})", _attempts_block(attempts))
    if events:
        _section(out, f"Events ({len(history)})", _events_table(history))


def _export(
    workflow_id: str,
    target: Path,
    run_id: str | None,
    database: str | None,
    codec: str | None,
) -> None:
    """Write the workflow's exported history to ``target`` (or stdout for ``-``), its payloads
    decoded (with the codec's key: a history to replay cannot hold placeholders)."""

    async def fetch() -> dict[str, Any]:
        async with open_database(database, codec=codec) as db:
            return await db.get_workflow(workflow_id).export_history(run_id)

    document = run(fetch())
    text = render.json_text(json.dumps(document, indent=2, ensure_ascii=False)) + "\n"
    if str(target) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    try:
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write the history to {target}: {describe(exc)}") from None
    count = len(document["events"])
    render.console().print(
        render.text(
            f"wrote the history of workflow {workflow_id} ({document['status']}, {count} "
            f"event{'s' if count != 1 else ''}) to {target}"
        )
    )


def _as_json(
    record: WorkflowRecord, runs: list[StepRun], cause: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "workflow_id": record.workflow_id,
        "name": record.name,
        "version": record.version,
        "queue": record.queue,
        "priority": record.priority,
        "status": record.status.value,
        "current_step": record.current_step,
        "input": record.input,
        "state": record.state,
        "result": record.result,
        "error": record.error,
        "cause": cause,
        "created_at": render.iso(record.created),
        "updated_at": render.iso(record.updated),
        "duration_seconds": round(
            render.lifetime(record.status, record.created, record.updated), 3
        ),
        "steps": [r.to_json() for r in runs],
    }


def _event_json(event: Event) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "type": event.type.value,
        "created_at": render.iso(event.timestamp),
        "payload": event.payload,
    }


def _import_quietly(modules: list[str] | None) -> str | None:
    """Import the workflow modules; a module named with -m must import, but one from the
    defaults that cannot is only noted (inspecting needs no code): the reason, or None."""
    try:
        import_modules(modules)
    except ConfigurationError as exc:
        if modules:
            raise
        return f"unknown ({exc})"
    return None


def _queries(db: Database, record: WorkflowRecord) -> list[str] | str:
    """The names of the workflow's queries, or why they are unknown here."""
    try:
        definition = db.definition_for(record)
    except ConfigurationError:
        return f"unknown: no class named {record.name!r} is registered here (-m MODULE)"
    return [q.name for q in definition.queries]


def _queries_line(queries: list[str] | str) -> str:
    if isinstance(queries, str):
        return queries
    return ", ".join(queries) if queries else "none"


def _print_header(
    out: Console,
    record: WorkflowRecord,
    queries: list[str] | str,
    tags: dict[str, str],
    awaited: str,
) -> None:
    title = Text.assemble(
        ("Workflow ", "bold"),
        (render.safe(record.workflow_id), "bold"),
        "  ",
        render.status_text(record.status),
    )
    out.print(title)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("name", render.text(f"{record.name} (version {record.version})"))
    if record.parent_id is not None:
        grid.add_row("parent", render.text(record.parent_id))
    if tags:
        grid.add_row("tags", render.text(", ".join(f"{k}={v}" for k, v in tags.items())))
    grid.add_row("queue", render.text(f"{record.queue} (priority {record.priority})"))
    grid.add_row("current step", render.text(record.current_step or "-"))
    if record.status is WorkflowStatus.RUNNING:
        grid.add_row("scheduling", _scheduling(record, awaited))
    grid.add_row("created", render.local_time(record.created))
    grid.add_row("updated", render.local_time(record.updated))
    lifetime = render.lifetime(record.status, record.created, record.updated)
    grid.add_row("duration", render.duration(lifetime))
    grid.add_row("queries", render.text(_queries_line(queries)))
    out.print(Padding(grid, (0, 0, 0, 2), expand=False))


def _awaited(activities: list[ActivityRow], children: list[WorkflowSummary]) -> str:
    """What a parked workflow with nothing due waits for: a routed activity (where it stands),
    a child still running, or else a signal."""
    routed = [a for a in activities if a.status in ("waiting", "running", "done")]
    if routed:
        return "waiting for " + "; ".join(f"activity {a.activity} ({a.where})" for a in routed)
    running = [c for c in children if c.status is WorkflowStatus.RUNNING]
    if running:
        return f"waiting for {len(running)} child workflow(s)"
    return "waiting for a signal"


def _scheduling(record: WorkflowRecord, awaited: str) -> str:
    """Where a running workflow stands with the workers (``awaited``: what it waits for when
    parked with nothing due)."""
    if record.cancel_requested:
        return "cancel requested; stops at its worker's next write"
    now = time.time()
    if record.leased and record.ready_at is not None and record.ready_at <= now:
        return (
            f"its worker's lease expired at {render.local_time(record.ready_at)}; "
            "the next free worker takes it over"
        )
    if record.leased:
        return f"being run by a worker (lease until {render.local_time(record.ready_at)})"
    if record.ready_at is None:
        return awaited
    if record.ready_at <= now:
        return "ready: the next free worker runs it"
    return f"sleeping until {render.local_time(record.ready_at)}"


MAX_CHILDREN = 1000
"""The children ``inspect`` lists (``loom list --parent ID`` lists them all)."""


def _started_order(children: list[WorkflowSummary]) -> list[WorkflowSummary]:
    """Oldest first (the list is newest first; children started together keep its order)."""
    return sorted(children, key=lambda c: c.created_at)


def _runs_table(runs: list[WorkflowRun]) -> Table:
    """The runs of a workflow id that continued as new; the history above is the last one's."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "RUN ID", "STATUS", "STARTED", "EVENTS"):
        table.add_column(column, justify="right" if column in ("#", "EVENTS") else "left")
    for r in runs:
        table.add_row(
            str(r.number),
            render.text(r.run_id),
            render.text(r.status),
            render.local_time(r.started),
            str(r.events),
        )
    return table


def _children_table(children: list[WorkflowSummary]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "STATUS", "STEP"):
        table.add_column(column, no_wrap=column == "ID")
    for child in _started_order(children):
        table.add_row(
            render.text(child.workflow_id),
            render.text(child.name),
            render.status_text(child.status),
            render.text(child.current_step or "-"),
        )
    return table


def _section(out: Console, title: str, body: RenderableType) -> None:
    out.print()
    out.print(Text(title, style="bold underline"))
    out.print(Padding(body, (0, 0, 0, 2), expand=False))


def _json_block(value: Any) -> RenderableType:
    # Plain text, not Rich's JSON (which re-encodes it): the escapes of render.json_text stay.
    return Text(render.json_text(json.dumps(value, default=str, ensure_ascii=False, indent=2)))


def _steps_table(runs: list[StepRun]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("#", "STEP", "STARTED", "DURATION", "STATUS", "NOTES"):
        table.add_column(column, justify="right" if column in ("#", "DURATION") else "left")
    styles = {
        "completed": "green",
        "failed": "red",
        "canceled": "yellow",
        "running": "cyan",
        "reset": "magenta",
    }
    for run_ in runs:
        notes = []
        if run_.activities:
            notes.append(f"{run_.activities} activit{'y' if run_.activities == 1 else 'ies'}")
        if run_.failed_attempts:
            notes.append(f"{run_.failed_attempts} failed attempt(s)")
        if run_.children:
            notes.append(f"{run_.children} child workflow(s)")
        if run_.withdrawn:
            notes.append(f"{run_.withdrawn} withdrawn (cancelled by the step)")
        if run_.signals_handled:
            notes.append(f"{run_.signals_handled} signal(s) handled")
        if run_.status == "running" and run_.waiting:
            notes.append(f"waiting for {', '.join(run_.waiting)}")
        if run_.heartbeat is not None:
            ago = render.duration(max(0.0, time.time() - run_.heartbeat.at))
            notes.append(f"heartbeat {ago.strip()} ago")
        notes.extend(run_.in_flight)
        table.add_row(
            str(run_.index + 1),
            render.text(run_.step),
            render.clock_time(run_.started),
            render.duration(run_.duration),
            Text(run_.status, style=styles.get(run_.status, "")),
            render.text(", ".join(notes), style="dim"),
        )
    return table


def _activity_json(row: ActivityRow) -> dict[str, Any]:
    document = row.to_json()
    document["scheduled_at"] = render.iso(row.scheduled_at)
    for attempt in document["attempts"]:
        attempt["at"] = render.iso(attempt["at"])
    return document


def _activities_table(rows: list[ActivityRow]) -> Table:
    """Each activity call: its latest attempt, how it stands, and where it ran or runs."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SEQ", "ACTIVITY", "STEP", "ATTEMPT", "STATUS", "WORKER"):
        table.add_column(column, justify="right" if column in ("SEQ", "ATTEMPT") else "left")
    styles = {"completed": "green", "failed": "red", "canceled": "yellow", "running": "cyan"}
    for row in rows:
        table.add_row(
            str(row.seq),
            render.text(row.activity),
            render.text(row.step or "-"),
            str(row.attempt),
            Text(row.status, style=styles.get(row.status, "")),
            render.text(row.where),
        )
    return table


def _heartbeat_json(beat: ActivityHeartbeat) -> dict[str, Any]:
    return {
        "seq": beat.seq,
        "activity": beat.activity,
        "attempt": beat.attempt,
        "sent_at": render.iso(beat.at),
        "details": beat.details,
    }


def _heartbeats_table(heartbeats: list[ActivityHeartbeat]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SEQ", "ACTIVITY", "ATTEMPT", "SENT", "AGO", "DETAILS"):
        table.add_column(column, justify="right" if column in ("SEQ", "ATTEMPT", "AGO") else "left")
    now = time.time()
    for beat in heartbeats:
        table.add_row(
            str(beat.seq),
            render.text(beat.activity),
            str(beat.attempt),
            render.clock_time(beat.at),
            render.duration(max(0.0, now - beat.at)),
            Text(render.compact_json(beat.details)),
        )
    return table


def _error_block(
    error: dict[str, Any], cause: dict[str, Any] | None, *, show_traceback: bool
) -> RenderableType:
    parts: list[RenderableType] = []
    message = str(error.get("message", ""))
    step = error.get("step")
    where = f" (in step {step!r})" if step and f"step {step!r}" not in message else ""
    parts.append(render.text(f"{error.get('type', 'Error')}: {message}{where}", "red"))
    if cause:
        parts.append(
            render.text(
                f"caused by {cause['type']}: {cause['message']} "
                f"(activity {cause['activity']!r}, attempt {cause['attempt']})"
            )
        )
    if show_traceback and error.get("traceback"):
        traceback_text = render.safe(str(error["traceback"]).rstrip(), newlines=True)
        parts.append(Text(traceback_text, style="dim"))
    return Group(*parts)


def _failed_attempts(history: list[Event]) -> list[dict[str, Any]]:
    """Every ACTIVITY_FAILED event: which activity, which attempt, and its recorded error
    (traceback and cause chain included when the history has them)."""
    return [
        {
            "seq": event.seq,
            "activity": event.payload.get("name"),
            "attempt": event.payload.get("attempt"),
            "scheduled": event.payload.get("scheduled"),
            "retried": event.payload.get("retry_at") is not None,
            "failed_at": render.iso(event.timestamp),
            "error": event.payload.get("error") or {},
        }
        for event in history
        if event.type is EventType.ACTIVITY_FAILED
    ]


def _attempts_block(attempts: list[dict[str, Any]]) -> RenderableType:
    parts: list[RenderableType] = []
    for i, attempt in enumerate(attempts):
        error = attempt["error"]
        then = "retried" if attempt["retried"] else "not retried"
        if i:
            parts.append(Text(""))
        parts.append(
            Text(
                render.safe(
                    f"activity {attempt['activity']!r} attempt {attempt['attempt']} (seq "
                    f"{attempt['seq']}, {then}): {error.get('type', 'Error')}: "
                    f"{error.get('message', '')}"
                ),
                "red",
            )
        )
        link = error.get("cause")
        while isinstance(link, dict):
            parts.append(
                Text(render.safe(f"  caused by {link.get('type')}: {link.get('message')}"))
            )
            link = link.get("cause")
        if error.get("traceback"):
            parts.append(
                Text(render.safe(str(error["traceback"]).rstrip(), newlines=True), style="dim")
            )
    return Group(*parts)


def _events_table(history: list[Event]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("SEQ", justify="right")
    table.add_column("TIME", no_wrap=True)
    table.add_column("TYPE", no_wrap=True)
    table.add_column("PAYLOAD", overflow="fold")
    for event in history:
        payload = {k: v for k, v in event.payload.items() if k != "traceback"}
        if isinstance(payload.get("error"), dict):
            payload["error"] = {k: v for k, v in payload["error"].items() if k != "traceback"}
        table.add_row(
            str(event.seq),
            render.clock_time(event.timestamp),
            render.safe(event.type.value),
            Text(render.compact_json(payload)),
        )
    return table
