"""``loom start``, ``signal``, ``cancel`` and ``retry``: act on workflows through the client API."""

from __future__ import annotations

from typing import Annotated

import typer

from loom import limits
from loom.cli import render
from loom.cli.common import (
    CodecOption,
    DatabaseOption,
    JsonOption,
    ModulesOption,
    open_database,
    parse_json,
    run,
)
from loom.client import CancelOutcome, parse_tags
from loom.errors import WorkflowNotFoundError
from loom.modules import import_modules
from loom.queues import check_priority, check_queue

WorkflowId = Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow's id.")]


def start_command(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The registered workflow name.")],
    input_json: Annotated[
        str | None, typer.Option("--input", "-i", metavar="JSON", help="The workflow input.")
    ] = None,
    workflow_id: Annotated[
        str | None, typer.Option("--id", metavar="ID", help="Workflow id (default: a UUID).")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option("--version", metavar="VERSION", help="The version (default: the newest)."),
    ] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", metavar="KEY=VALUE", help="A tag to store with it."),
    ] = None,
    queue: Annotated[
        str | None,
        typer.Option("--queue", metavar="QUEUE", help="Its task queue (default: the workflow's)."),
    ] = None,
    priority: Annotated[
        int,
        typer.Option("--priority", help="Smaller runs first among its queue's ready work."),
    ] = 0,
    modules: ModulesOption = None,
    codec: CodecOption = None,
    database: DatabaseOption = None,
    as_json: JsonOption = False,
) -> None:
    """Start a workflow by name; a worker with its module runs it."""
    limits.check_id(name, "workflow name")
    if queue is not None:
        check_queue(queue)
    check_priority(priority)
    if version is not None:
        limits.check_id(version, "workflow version")
    tags = parse_tags(tag or [])
    if workflow_id is not None:
        limits.check_id(workflow_id)
    workflow_input = parse_json(input_json, "--input")
    import_modules(modules)

    async def start() -> tuple[str, bool]:
        async with open_database(database, codec=codec) as db:
            existed = False
            if workflow_id is not None:
                try:
                    await db.get_workflow(workflow_id).describe()
                    existed = True
                except WorkflowNotFoundError:
                    pass
            handle = await db.start_workflow_by_name(
                name,
                workflow_input=workflow_input,
                workflow_id=workflow_id,
                version=version,
                tags=tags,
                queue=queue,
                priority=priority,
            )
            return handle.workflow_id, existed

    started_id, existed = run(start())
    if as_json:
        render.emit_json({"workflow_id": started_id, "name": name, "created": not existed})
    elif existed:
        render.console().print(
            render.text(f"workflow {started_id} already exists with this input; nothing started")
        )
    else:
        render.console().print(render.text(f"started {name} workflow {started_id}"))


def signal_command(
    workflow_id: WorkflowId,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The signal name.")],
    payload_json: Annotated[
        str | None, typer.Option("--payload", "-p", metavar="JSON", help="The signal payload.")
    ] = None,
    codec: CodecOption = None,
    database: DatabaseOption = None,
) -> None:
    """Send a signal; it waits in the workflow's inbox until the workflow asks for it."""
    limits.check_id(workflow_id)
    limits.check_id(name, "signal name")
    payload = parse_json(payload_json, "--payload")

    async def send() -> None:
        async with open_database(database, codec=codec) as db:
            await db.get_workflow(workflow_id).signal(name, payload)

    run(send())
    render.console().print(render.text(f"sent signal {name!r} to workflow {workflow_id}"))


def cancel_command(
    workflow_id: WorkflowId,
    reason: Annotated[
        str | None, typer.Option("--reason", "-r", metavar="TEXT", help="Why (recorded).")
    ] = None,
    codec: CodecOption = None,
    database: DatabaseOption = None,
) -> None:
    """Cancel a running workflow: no further steps run."""
    limits.check_id(workflow_id)
    if reason is not None:
        limits.check_text(reason, "--reason")

    async def cancel() -> CancelOutcome:
        async with open_database(database, codec=codec) as db:
            return await db.get_workflow(workflow_id).cancel(reason)

    outcome = run(cancel())
    if outcome is CancelOutcome.CANCELED:
        message = f"canceled workflow {workflow_id}"
    else:
        message = (
            f"cancel requested for workflow {workflow_id}: a worker is running it and stops "
            "it at its next write"
        )
    render.console().print(render.text(message))


def retry_command(
    workflow_id: WorkflowId, database: DatabaseOption = None, codec: CodecOption = None
) -> None:
    """Resume a FAILED workflow from the step that failed, keeping its history."""
    limits.check_id(workflow_id)

    async def retry() -> str | None:
        async with open_database(database, codec=codec) as db:
            handle = db.get_workflow(workflow_id)
            step = (await handle.describe()).current_step
            await handle.retry()
            return step

    step = run(retry())
    where = f" from step {step!r}" if step else ""
    render.console().print(render.text(f"retrying workflow {workflow_id}{where}"))
