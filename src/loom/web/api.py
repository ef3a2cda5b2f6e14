"""The JSON API under ``/api``: read workflows, their histories and definitions; start, signal,
cancel, retry and reset workflows, one or many (``/api/bulk/...``); ask them queries; queue and
store statistics; server-sent event streams.

Errors are JSON ``{"error": message}``: 400 for query arguments that are not a JSON array the
query takes, 404 for an unknown workflow id or query name, 409 for an action the
workflow's status does not allow (signal or cancel of a finished workflow, retry of one that did
not fail, starting an id that exists with another input), 413 for a body or a value above the
payload limit, 422 for a malformed request, an id or name that breaks the id rule
(:mod:`loom.limits`), a value that cannot be stored as JSON, a workflow name no module
registered in this server, a step a workflow cannot be reset to, or a query that failed, and
503 when the database is unavailable.

A workflow id may contain ``/``: it can be sent as is (``/api/workflows/orders/7``) or, always
unambiguously (an id that ends in ``/events``, say), with each ``/`` encoded as ``%2F`` as
``encodeURIComponent`` does (see :mod:`loom.web.paths`).
"""

from __future__ import annotations

import json
import re
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from loom import limits
from loom.client import Database, WorkflowRecord, parse_tags
from loom.definitions import Registry
from loom.errors import ConfigurationError, QueryArgumentsError, WorkflowNotFoundError
from loom.queues import PRIORITY_RANGE
from loom.status import WorkflowStatus
from loom.web import models, paths, serialize, streams
from loom.web.graph import definition_graph


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "Query arguments that are not a JSON array of values the query takes",
        401: "A valid token is required",
        403: "Refused: host, origin or cross-site request",
        404: "No workflow with this id",
        409: "The workflow's status does not allow this action",
        413: "The body or a value is above the payload limit",
        415: "A body that is not JSON",
        422: "A malformed request, or an id or name that breaks the id rule",
        503: "The database is unavailable",
    }
    return {code: {"model": models.ErrorBody, "description": described[code]} for code in codes}


router = APIRouter(prefix="/api", responses=_errors(401, 403, 422, 503))
ONE_WORKFLOW = _errors(404)
ACTION = _errors(404, 409, 413, 415)

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An event stream (text/event-stream)",
        # Each server-sent event: ``data`` is one JSON document (a workflow summary or a
        # history event), ``id`` the cursor to resume from with Last-Event-ID.
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "event": {"type": "string"},
                        "data": {"type": "string"},
                        "id": {"type": "string"},
                        "retry": {"type": "integer"},
                    },
                }
            }
        },
    },
    **ONE_WORKFLOW,
}


def _checked(value: str | None, what: str) -> str | None:
    if value is not None:
        limits.check_id(value, what)
    return value


def _checked_text(value: str | None) -> str | None:
    if value is not None:
        limits.check_text(value, "the reason")
    return value


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, description="A registered workflow name.")
    input: Any = Field(default=None, description="The workflow input (any JSON value).")
    state: dict[str, Any] | None = Field(default=None, description="The initial state.")
    id: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The workflow id; default: a new UUID. Starting an existing id with the "
        "same input returns it (200); with another input is a 409. No control characters.",
    )
    version: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The registered version to start; default: the newest.",
    )
    queue: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The task queue it runs on; default: the workflow's own.",
    )
    priority: int = Field(
        default=0,
        ge=PRIORITY_RANGE[0],
        le=PRIORITY_RANGE[1],
        description="Smaller runs first among the ready work of its queue.",
    )

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | None) -> str | None:
        return _checked(value, "queue name")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return limits.check_id(value, "workflow name")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        return _checked(value, "workflow id")


class QueueRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    concurrency: int | None = Field(
        default=None,
        strict=True,  # true is not 1
        description="At most this many in progress at once; null: no limit.",
    )
    rate: str | None = Field(
        default=None,
        max_length=50,
        description="At most this many starts per period: 100/m, 5/s, 1000/h; null: no limit.",
    )


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    payload: Any = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return limits.check_id(value, "signal name")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return _checked_text(value)


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to_step: str = Field(min_length=1, max_length=200, description="The step to restart from.")
    reason: str | None = Field(default=None, max_length=2000, description="Why (recorded).")

    @field_validator("to_step")
    @classmethod
    def _step(cls, value: str) -> str:
        return limits.check_id(value, "step name")

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return _checked_text(value)


class BulkFilter(BaseModel):
    """The workflows a bulk action selects, as the list's filters do."""

    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(default=None, description="RUNNING, COMPLETED, FAILED, CANCELED")
    name: str | None = Field(default=None, max_length=200, description="Workflow type")
    q: str | None = Field(default=None, max_length=200, description="Substring of the id")
    since_seconds: float | None = Field(
        default=None, gt=0, le=limits.MAX_INT64, description="Started within this many seconds"
    )
    tags: list[str] | None = Field(
        default=None, max_length=20, description="`key=value` tags it must all have"
    )
    created_after: float | None = Field(
        default=None, ge=0, le=limits.MAX_INT64, description="Created at or after (epoch s)"
    )
    created_before: float | None = Field(
        default=None, ge=0, le=limits.MAX_INT64, description="Created before (epoch s)"
    )

    @field_validator("name", "q")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _checked(value or None, "filter")


BULK_MOST = 10_000
"""The most workflows one bulk request acts on, by ids or by a filter: each is acted on in
turn while the request waits, so a larger selection is acted on in parts."""


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(
        default=None, max_length=BULK_MOST, description="The workflows to act on (or a filter)."
    )
    filter: BulkFilter | None = Field(
        default=None, description="Act on every workflow it selects (or give ids)."
    )
    preview: bool = Field(
        default=False, description="Only count what the filter or ids select; act on none."
    )
    expected: int | None = Field(
        default=None,
        ge=0,
        le=BULK_MOST,
        description="How many workflows were confirmed (the preview's `matched`): when the "
        "selection is now another number, nothing is done (409).",
    )
    reason: str | None = Field(default=None, max_length=2000, description="cancel, reset: why")
    to_step: str | None = Field(
        default=None, min_length=1, max_length=200, description="reset: the step to restart from"
    )

    @field_validator("ids")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [limits.check_id(v) for v in value]

    @field_validator("reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        return _checked_text(value)

    @field_validator("to_step")
    @classmethod
    def _step(cls, value: str | None) -> str | None:
        return _checked(value, "step name")


def database(request: Request) -> Database:
    db: Database = request.app.state.database
    return db


def registry(request: Request) -> Registry:
    reg: Registry = request.app.state.registry
    return reg


DB = Annotated[Database, Depends(database)]
WorkflowId = Annotated[str, Depends(paths.workflow_id)]


async def _record(db: Database, workflow_id: str) -> WorkflowRecord:
    record = await db.find_workflow(workflow_id)
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


@router.get(
    "/workflows",
    tags=["workflows"],
    summary="List workflows, newest first",
    response_model=models.WorkflowList,
)
async def list_workflows(
    db: DB,
    status_: Annotated[
        str | None, Query(alias="status", description="RUNNING, COMPLETED, FAILED or CANCELED")
    ] = None,
    name: Annotated[str | None, Query(max_length=200, description="Workflow type")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Substring of the id")] = None,
    parent: Annotated[
        str | None, Query(max_length=200, description="Only the children of this workflow")
    ] = None,
    tag: Annotated[
        list[str] | None,
        Query(max_length=401, description="`key=value`: only workflows with this tag (repeat)"),
    ] = None,
    created_after: Annotated[
        float | None, Query(description="Created at or after (epoch seconds)")
    ] = None,
    created_before: Annotated[
        float | None, Query(description="Created before (epoch seconds)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=limits.MAX_INT64)] = 0,
) -> dict[str, Any]:
    rows = await db.list_records(
        status=_status(status_),
        name=_checked(name or None, "workflow name"),
        id_contains=_checked(q or None, "the id search"),
        limit=limit + 1,
        offset=offset,
        parent_id=_checked(parent or None, "parent workflow id"),
        tags=parse_tags(tag or []),
        created_after=created_after,
        created_before=created_before,
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
    response_model=models.WorkflowDetail,
    responses={
        200: {"description": "The id existed with the same input", "model": models.WorkflowDetail},
        **_errors(409, 413, 415),
    },
)
async def start_workflow(
    body: StartRequest, db: DB, reg: Annotated[Registry, Depends(registry)]
) -> Any:
    definition = reg.workflow(body.name, body.id, body.version)  # UnknownWorkflowTypeError: 422
    existed = body.id is not None and await db.find_workflow(body.id) is not None
    handle = await db.start_workflow(
        definition.cls,
        workflow_input=body.input,
        initial_state=body.state,
        workflow_id=body.id,
        queue=body.queue,
        priority=body.priority,
    )
    data = serialize.detail(await _record(db, handle.workflow_id))
    return JSONResponse(data, status_code=200 if existed else 201)


# Before the other routes with a suffix: a query may be named "events".
@router.get(
    "/workflows/{workflow_id:path}/query/{name}",
    tags=["workflows"],
    summary="Ask a workflow a question: one of its @loom.query methods",
    description="The answer is computed from the workflow's stored state and input (as of its "
    "last write; its final state once it ended) with the class this server registered: the "
    "workflow is not woken, leased or changed. `args` is a JSON array of the arguments. A "
    "query that raises, or whose answer is not JSON, is a 422 with its message.",
    response_model=models.QueryAnswer,
    responses={
        **_errors(400),
        404: {
            "model": models.ErrorBody,
            "description": "No workflow with this id, or no query of this name",
        },
    },
)
async def query_workflow(
    workflow_id: WorkflowId,
    name: str,
    db: DB,
    reg: Annotated[Registry, Depends(registry)],
    args: Annotated[
        str | None, Query(description='The arguments, a JSON array: `[1, "x"]`')
    ] = None,
) -> dict[str, Any]:
    values = _query_arguments(args, workflow_id, name)
    return {"result": await db.query_workflow(workflow_id, name, values, registry=reg)}


def _query_arguments(text: str | None, workflow_id: str, name: str) -> list[Any]:
    """``?args=``: a strict JSON array (no NaN or Infinity); no arguments when absent."""
    if text is None:
        return []
    try:
        value = json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deep"
        raise QueryArgumentsError(workflow_id, name, f"args is not valid JSON: {detail}") from None
    if _depth(value) > MAX_ARGS_DEPTH:  # whatever this process's recursion limit lets json read
        raise QueryArgumentsError(
            workflow_id, name, f"args is not valid JSON: nested more than {MAX_ARGS_DEPTH} deep"
        )
    if not isinstance(value, list):
        raise QueryArgumentsError(
            workflow_id, name, f"args must be a JSON array of the arguments, got {text[:40]!r}"
        )
    return value


MAX_ARGS_DEPTH = 500
"""The deepest nesting of ``?args=`` read (a stored value may nest no deeper anyway)."""


def _depth(value: Any) -> int:
    """How deeply ``value`` (parsed JSON) nests lists and objects, found without recursion."""
    deepest, level = 0, [(value, 1)]
    while level:
        item, depth = level.pop()
        if isinstance(item, list | dict):
            deepest = max(deepest, depth)
            if depth > MAX_ARGS_DEPTH:
                return depth
            children = item.values() if isinstance(item, dict) else item
            level.extend((child, depth + 1) for child in children)
    return deepest


def _not_json(word: str) -> Any:
    raise ValueError(f"{word} is not a JSON number")


@router.get(
    "/workflows/{workflow_id:path}/runs/{run_id}/events",
    tags=["workflows"],
    summary="The whole history of one run of a workflow (see /runs)",
    response_model=models.RunHistory,
    responses=ONE_WORKFLOW,
)
async def get_run_events(workflow_id: WorkflowId, run_id: str, db: DB) -> dict[str, Any]:
    handle = db.get_workflow(workflow_id)
    runs = {r.run_id for r in await handle.runs()}
    if run_id not in runs:
        raise WorkflowNotFoundError(f"{workflow_id} (run {run_id})")
    events = await handle.events(run_id=run_id)
    return {"run_id": run_id, "events": [serialize.event(e) for e in events]}


@router.get(
    "/workflows/{workflow_id:path}/history.json",
    tags=["workflows"],
    summary="A run's whole history (the current one by default) as a file to replay in tests",
    description="What `loom inspect ID --export FILE` writes, served as an attachment: "
    "`loom.testing.Replayer([...]).replay(path)` replays it against the current code.",
    response_model=models.ExportedHistory,
    responses=ONE_WORKFLOW,
)
async def export_history(
    workflow_id: WorkflowId,
    db: DB,
    run_id: Annotated[
        str | None,
        Query(max_length=200, description="An earlier run (one that continued as new)"),
    ] = None,
) -> JSONResponse:
    document = await db.get_workflow(workflow_id).export_history(run_id)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", workflow_id)[:100].strip("._") or "workflow"
    return JSONResponse(
        document,
        headers={"Content-Disposition": f'attachment; filename="{name}.history.json"'},
    )


@router.get(
    "/workflows/{workflow_id:path}/runs",
    tags=["workflows"],
    summary="The runs of a workflow id, oldest first",
    description="Those ended by `ctx.continue_as_new` (status CONTINUED_AS_NEW), then the "
    "current one.",
    response_model=models.RunList,
    responses=ONE_WORKFLOW,
)
async def get_runs(workflow_id: WorkflowId, db: DB) -> dict[str, Any]:
    runs = await db.get_workflow(workflow_id).runs()
    return {"runs": [serialize.run(r) for r in runs]}


@router.get(
    "/workflows/{workflow_id:path}/events",
    tags=["workflows"],
    summary="A workflow's history, oldest first, a page at a time",
    description="At most `limit` events after `after_seq`; while `has_more`, ask for the "
    "next page with `after_seq` = `next_after_seq`.",
    response_model=models.EventPage,
    responses=ONE_WORKFLOW,
)
async def get_events(
    workflow_id: WorkflowId,
    db: DB,
    after_seq: Annotated[int, Query(ge=0, le=limits.MAX_INT64)] = 0,
    limit: Annotated[int, Query(ge=1, le=streams.MAX_PAGE)] = streams.PAGE,
) -> dict[str, Any]:
    await _record(db, workflow_id)
    events, more = await streams.history_page(db, workflow_id, after_seq, limit)
    return {
        "workflow_id": workflow_id,
        "events": [serialize.event(e) for e in events],
        "has_more": more,
        "next_after_seq": events[-1].seq if events else after_seq,
    }


@router.get(
    "/workflows/{workflow_id:path}/heartbeats",
    tags=["workflows"],
    summary="The last heartbeat of each of its running activities",
    description="What each activity that called `loom.heartbeat()` sent last: the attempt, "
    "when, and its last details. Kept while the workflow runs; empty once it ended.",
    response_model=models.Heartbeats,
    responses=ONE_WORKFLOW,
)
async def get_heartbeats(workflow_id: WorkflowId, db: DB) -> dict[str, Any]:
    beats = await db.get_workflow(workflow_id).heartbeats()
    return {"workflow_id": workflow_id, "heartbeats": [serialize.heartbeat(b) for b in beats]}


@router.get(
    "/workflows/{workflow_id:path}/activities",
    tags=["workflows"],
    summary="Its activity calls: each attempt, the worker that ran it, and where it stands",
    description="From the current run's history (each recorded attempt names the worker that "
    "ran it) and its activity tasks: a routed activity in flight is `waiting` for a worker of "
    "its `queue`, or `running` on the `worker` holding its task.",
    response_model=models.Activities,
    responses=ONE_WORKFLOW,
)
async def get_activities(workflow_id: WorkflowId, db: DB) -> dict[str, Any]:
    rows = await db.get_workflow(workflow_id).activities()
    return {"workflow_id": workflow_id, "activities": [serialize.activity(r) for r in rows]}


@router.post(
    "/workflows/{workflow_id:path}/signal",
    tags=["workflows"],
    summary="Send a signal (buffered until the workflow waits for it)",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.SignalAccepted,
    responses=ACTION,
)
async def signal_workflow(workflow_id: WorkflowId, body: SignalRequest, db: DB) -> dict[str, Any]:
    await db.get_workflow(workflow_id).signal(body.name, body.payload)
    return {"workflow_id": workflow_id, "signal": body.name, "accepted": True}


@router.post(
    "/workflows/{workflow_id:path}/cancel",
    tags=["workflows"],
    summary="Cancel a running workflow",
    description="`outcome` is CANCELED when done at once, REQUESTED when a worker holds the "
    "workflow (it becomes CANCELED at that worker's next write).",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.CancelResult,
    responses=ACTION,
)
async def cancel_workflow(
    workflow_id: WorkflowId, db: DB, body: CancelRequest | None = None
) -> dict[str, Any]:
    outcome = await db.get_workflow(workflow_id).cancel(body.reason if body else None)
    return {"workflow_id": workflow_id, "outcome": outcome.value}


@router.post(
    "/workflows/{workflow_id:path}/retry",
    tags=["workflows"],
    summary="Resume a FAILED workflow from the step that failed",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.WorkflowDetail,
    responses=ACTION,
)
async def retry_workflow(workflow_id: WorkflowId, db: DB) -> dict[str, Any]:
    await db.get_workflow(workflow_id).retry()
    return serialize.detail(await _record(db, workflow_id))


@router.post(
    "/workflows/{workflow_id:path}/reset",
    tags=["workflows"],
    summary="Restart a workflow of any status from a named step",
    description="The steps before `to_step` are not run again and keep their state; the steps "
    "from it on run again, and the signals they had received are delivered again. `outcome` "
    "is RESET when done at once, REQUESTED when a worker holds the workflow (it is reset at "
    "that worker's next write). A step the workflow does not have or never reached is a 422 "
    "naming those it can be reset to.",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=models.ResetResult,
    responses=_errors(404, 413, 415),
)
async def reset_workflow(
    workflow_id: WorkflowId,
    body: ResetRequest,
    db: DB,
    reg: Annotated[Registry, Depends(registry)],
) -> dict[str, Any]:
    outcome = await db.reset_workflow(workflow_id, body.to_step, reason=body.reason, registry=reg)
    return {"workflow_id": workflow_id, "outcome": outcome.value, "to_step": body.to_step}


@router.post(
    "/bulk/{action}",
    tags=["workflows"],
    summary="Cancel, retry or reset many workflows, each on its own",
    description="The workflows are `ids`, or those `filter` selects (every one, not a page). "
    "With `preview`, only their number is returned. Otherwise each is acted on as its own "
    "action would (`reason` for cancel and reset, `to_step` for reset), and `results` says "
    "what became of each: its outcome, or the error that stopped it (the others go on). "
    "With `expected` (the preview's count, as confirmed), a selection that has grown or "
    "shrunk since is a 409 and nothing is done. At most 10,000 workflows per request.",
    response_model=models.BulkOutcome,
    responses=_errors(409, 413, 415),
)
async def bulk_action(
    action: Annotated[str, Path(pattern="^(cancel|retry|reset)$")],
    body: BulkRequest,
    db: DB,
    reg: Annotated[Registry, Depends(registry)],
) -> dict[str, Any]:
    if (body.ids is None) == (body.filter is None):
        raise ConfigurationError("give the workflows to act on: either ids or a filter")
    if action == "reset" and body.to_step is None:
        raise ConfigurationError("a reset needs to_step, the step to restart from")
    if body.filter is not None:
        f = body.filter
        after = f.created_after
        if f.since_seconds is not None:
            since = time.time() - f.since_seconds
            after = since if after is None else max(after, since)
        chosen = await db.workflow_ids(
            _status(f.status),
            name=f.name,
            id_contains=f.q,
            tags=parse_tags(f.tags or []),
            created_after=after,
            created_before=f.created_before,
        )
    else:
        chosen = list(dict.fromkeys(body.ids or []))
    if body.preview:
        return {"action": action, "matched": len(chosen), "preview": True}
    # What is acted on is what was confirmed: a filter matches more (or fewer) workflows as
    # they start and end, so a count that moved since the preview acts on none.
    if body.expected is not None and len(chosen) != body.expected:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"the selection is now {len(chosen)} workflow(s), not the {body.expected} "
            "confirmed; nothing was done: count again and confirm",
        )
    if len(chosen) > BULK_MOST:
        raise ConfigurationError(
            f"the filter selects {len(chosen)} workflows, more than the {BULK_MOST} one "
            "request acts on; nothing was done: narrow it (by creation time, say) and act "
            "in parts"
        )
    results = await db.bulk_action(
        action, chosen, reason=body.reason, to_step=body.to_step, registry=reg
    )
    failed = sum(1 for r in results if not r.ok)
    return {
        "action": action,
        "matched": len(chosen),
        "preview": False,
        "succeeded": len(results) - failed,
        "failed": failed,
        "results": [
            {"workflow_id": r.workflow_id, "ok": r.ok, "outcome": r.outcome, "error": r.error}
            for r in results
        ],
    }


# -- definitions and statistics ----------------------------------------------------------------


@router.get(
    "/definitions",
    tags=["definitions"],
    summary="Registered workflows and their steps",
    response_model=models.Definitions,
)
async def definitions(reg: Annotated[Registry, Depends(registry)]) -> dict[str, Any]:
    found = sorted(reg.workflows(), key=lambda d: d.name)
    return {"definitions": [definition_graph(d) for d in found]}


@router.get(
    "/queue",
    tags=["monitoring"],
    summary="Tasks by state and the age of the oldest ready one",
    response_model=models.Queue,
)
async def queue(db: DB) -> dict[str, Any]:
    return serialize.queue(await db.stats())


@router.get(
    "/queues",
    tags=["queues"],
    summary="Each task queue: depth, running, limits and its oldest waiting item",
    response_model=models.TaskQueues,
)
async def task_queues(db: DB) -> dict[str, Any]:
    return {"queues": [serialize.task_queue(q) for q in await db.queues()]}


@router.put(
    "/queues/{name}",
    tags=["queues"],
    summary="Set a task queue's limits (null: no limit), obeyed from every worker's next claim",
    response_model=models.TaskQueue,
)
async def set_task_queue(name: str, body: QueueRequest, db: DB) -> dict[str, Any]:
    limits = await db.set_queue(name, concurrency=body.concurrency, rate=body.rate)
    [found] = [q for q in await db.queues() if q.name == limits.name]
    return serialize.task_queue(found)


@router.get(
    "/stats",
    tags=["monitoring"],
    summary="Workflows by status, tasks, throughput",
    response_model=models.Stats,
)
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
    description="An event whose payload is above the stream's limit is sent without it "
    "(`payload_omitted`, `payload_bytes`) and with `href`, where the JSON API returns it.",
    response_class=StreamingResponse,
    responses=SSE_RESPONSE,
)
async def stream_workflow(
    workflow_id: WorkflowId,
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
        start = -1
    if cursor is not None and not 0 <= start <= limits.MAX_INT64:
        raise ConfigurationError(f"the event id {cursor[:40]!r} is not a sequence number")
    settings = request.app.state
    body = streams.workflow_history(
        db,
        workflow_id,
        start,
        request.is_disconnected,
        poll_interval=settings.poll_interval,
        heartbeat=settings.heartbeat,
        lifetime=settings.stream_lifetime,
        max_event_bytes=settings.stream_event_bytes,
    )
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(
    "/events/stream",
    tags=["streams"],
    summary="Server-sent events: each workflow change (id = change time cursor)",
    response_class=StreamingResponse,
    responses={200: SSE_RESPONSE[200]},
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
        start = -1.0
    if start is not None and not (0 <= start <= time.time() + 86400):
        raise ConfigurationError(f"the event id {(cursor or '')[:40]!r} is not a stream cursor")
    settings = request.app.state
    body = streams.all_changes(
        db,
        start,
        request.is_disconnected,
        poll_interval=settings.poll_interval,
        heartbeat=settings.heartbeat,
        lifetime=settings.stream_lifetime,
    )
    return StreamingResponse(body, media_type="text/event-stream", headers=SSE_HEADERS)


# -- one workflow ----------------------------------------------------------------------------


# Registered last: a workflow id may contain "/", so the routes with a suffix match first.
@router.get(
    "/workflows/{workflow_id:path}",
    tags=["workflows"],
    summary="One workflow: summary, input, state, error",
    response_model=models.WorkflowDetail,
    responses=ONE_WORKFLOW,
)
async def get_workflow(workflow_id: WorkflowId, db: DB) -> dict[str, Any]:
    detail = serialize.detail(await _record(db, workflow_id))
    detail["tags"] = await db.get_workflow(workflow_id).tags()
    return detail
