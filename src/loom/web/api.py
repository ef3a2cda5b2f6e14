"""The JSON API under ``/api``: read workflows, their histories and definitions; start, signal,
cancel and retry workflows; queue and store statistics; server-sent event streams.

Errors are JSON ``{"error": message}``: 404 for an unknown workflow id, 409 for an action the
workflow's status does not allow (signal or cancel of a finished workflow, retry of one that did
not fail, starting an id that exists with another input), 422 for a malformed request, a value
that cannot be stored as JSON, or a workflow name no module registered in this server.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from loom.client import Database
from loom.definitions import Registry
from loom.errors import ConfigurationError, WorkflowNotFoundError
from loom.status import WorkflowStatus
from loom.store.base import WorkflowRecord
from loom.web import serialize, streams
from loom.web.graph import definition_graph

router = APIRouter(prefix="/api")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="A registered workflow name.")
    input: Any = Field(default=None, description="The workflow input (any JSON value).")
    state: dict[str, Any] | None = Field(default=None, description="The initial state.")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The workflow id; default: a new UUID. Starting an existing id with the "
        "same input returns it (200); with another input is a 409.",
    )


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    payload: Any = None


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


def database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


DB = Annotated[Database, Depends(database)]


async def _record(db: Database, workflow_id: str) -> WorkflowRecord:
    record = await db.store.get_workflow(workflow_id)
    if record is None:
        raise WorkflowNotFoundError(workflow_id)
    return record


def _status(value: str | None) -> WorkflowStatus | None:
    if value is None or value == "":
        return None
    try:
        return WorkflowStatus(value.upper())
    except ValueError:
        choices = ", ".join(s.value for s in WorkflowStatus)
        raise ConfigurationError(f"unknown status {value!r}; use one of {choices}") from None


# -- workflows -------------------------------------------------------------------------------


@router.get("/workflows", tags=["workflows"], summary="List workflows, newest first")
async def list_workflows(
    db: DB,
    status_: Annotated[
        str | None, Query(alias="status", description="RUNNING, COMPLETED, FAILED or CANCELED")
    ] = None,
    name: Annotated[str | None, Query(max_length=200, description="Workflow type")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Substring of the id")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    rows = await db.store.list_workflows(
        status=_status(status_),
        name=name or None,
        id_contains=q or None,
        limit=limit + 1,
        offset=offset,
    )
    return {
        "workflows": [serialize.summary(r) for r in rows[:limit]],
        "limit": limit,
        "offset": offset,
        "has_more": len(rows) > limit,
    }


@router.post(
    "/workflows",
    tags=["workflows"],
    summary="Start a workflow by name",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"description": "The id existed with the same input"}},
)
async def start_workflow(
    body: StartRequest, db: DB, reg: Annotated[Registry, Depends(registry)]
) -> Any:
    definition = reg.workflow(body.name)  # UnknownWorkflowTypeError: 422
    existed = body.id is not None and await db.store.get_workflow(body.id) is not None
    handle = await db.start_workflow(
        definition.cls, workflow_input=body.input, initial_state=body.state, workflow_id=body.id
    )
    data = serialize.detail(await _record(db, handle.workflow_id))
    return JSONResponse(data, status_code=200 if existed else 201)


@router.get(
    "/workflows/{workflow_id:path}/events",
    tags=["workflows"],
    summary="A workflow's history, oldest first",
)
async def get_events(
    workflow_id: str, db: DB, after_seq: Annotated[int, Query(ge=0)] = 0
) -> dict[str, Any]:
    await _record(db, workflow_id)
    events = await db.store.load_history(workflow_id, after_seq=after_seq)
    return {"workflow_id": workflow_id, "events": [serialize.event(e) for e in events]}


@router.post(
    "/workflows/{workflow_id:path}/signal",
    tags=["workflows"],
    summary="Send a signal (buffered until the workflow waits for it)",
    status_code=status.HTTP_202_ACCEPTED,
)
async def signal_workflow(workflow_id: str, body: SignalRequest, db: DB) -> dict[str, Any]:
    await db.get_workflow(workflow_id).signal(body.name, body.payload)
    return {"workflow_id": workflow_id, "signal": body.name, "accepted": True}


@router.post(
    "/workflows/{workflow_id:path}/cancel",
    tags=["workflows"],
    summary="Cancel a running workflow",
    description="`outcome` is CANCELED when done at once, REQUESTED when a worker holds the "
    "workflow (it becomes CANCELED at that worker's next write).",
    status_code=status.HTTP_202_ACCEPTED,
)
async def cancel_workflow(
    workflow_id: str, db: DB, body: CancelRequest | None = None
) -> dict[str, Any]:
    outcome = await db.get_workflow(workflow_id).cancel(body.reason if body else None)
    return {"workflow_id": workflow_id, "outcome": outcome.value}


@router.post(
    "/workflows/{workflow_id:path}/retry",
    tags=["workflows"],
    summary="Resume a FAILED workflow from the step that failed",
    status_code=status.HTTP_202_ACCEPTED,
)
async def retry_workflow(workflow_id: str, db: DB) -> dict[str, Any]:
    await db.get_workflow(workflow_id).retry()
    return serialize.detail(await _record(db, workflow_id))


# -- definitions and statistics ----------------------------------------------------------------


@router.get("/definitions", tags=["definitions"], summary="Registered workflows and their steps")
async def definitions(reg: Annotated[Registry, Depends(registry)]) -> dict[str, Any]:
    found = sorted(reg.workflows(), key=lambda d: d.name)
    return {"definitions": [definition_graph(d) for d in found]}


@router.get(
    "/queue", tags=["monitoring"], summary="Tasks by state and the age of the oldest ready one"
)
async def queue(db: DB) -> dict[str, Any]:
    return serialize.queue(await db.stats())


@router.get("/stats", tags=["monitoring"], summary="Workflows by status, tasks, throughput")
async def stats(db: DB) -> dict[str, Any]:
    return serialize.stats(await db.stats())


# -- streams ---------------------------------------------------------------------------------


def _cursor(last_event_id: str | None, after: str | None) -> str | None:
    value = last_event_id if last_event_id not in (None, "") else after
    return value or None


@router.get(
    "/workflows/{workflow_id:path}/events/stream",
    tags=["streams"],
    summary="Server-sent events: the history, then each new event (id = seq)",
    response_class=StreamingResponse,
)
async def stream_workflow(
    workflow_id: str,
    request: Request,
    db: DB,
    last_event_id: Annotated[str | None, Header()] = None,
    after_seq: Annotated[str | None, Query(description="Resume after this seq")] = None,
) -> StreamingResponse:
    await _record(db, workflow_id)
    cursor = _cursor(last_event_id, after_seq)
    try:
        start = int(cursor) if cursor is not None else 0
    except ValueError:
        raise ConfigurationError(f"the event id {cursor!r} is not a sequence number") from None
    settings = request.app.state
    body = streams.workflow_history(
        db,
        workflow_id,
        max(0, start),
        request.is_disconnected,
        poll_interval=settings.poll_interval,
        heartbeat=settings.heartbeat,
    )
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(
    "/events/stream",
    tags=["streams"],
    summary="Server-sent events: each workflow change (id = change time cursor)",
    response_class=StreamingResponse,
)
async def stream_all(
    request: Request,
    db: DB,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[str | None, Query(description="Resume after this cursor")] = None,
) -> StreamingResponse:
    cursor = _cursor(last_event_id, after)
    try:
        start = float(cursor) if cursor is not None else None
    except ValueError:
        raise ConfigurationError(f"the event id {cursor!r} is not a stream cursor") from None
    if start is not None and not (0 <= start <= time.time() + 86400):
        raise ConfigurationError(f"the event id {cursor!r} is not a stream cursor")
    settings = request.app.state
    body = streams.all_changes(
        db,
        start,
        request.is_disconnected,
        poll_interval=settings.poll_interval,
        heartbeat=settings.heartbeat,
    )
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


# -- one workflow ----------------------------------------------------------------------------


# Registered last: a workflow id may contain "/", so the routes with a suffix match first.
@router.get(
    "/workflows/{workflow_id:path}",
    tags=["workflows"],
    summary="One workflow: summary, input, state, error",
)
async def get_workflow(workflow_id: str, db: DB) -> dict[str, Any]:
    return serialize.detail(await _record(db, workflow_id))
