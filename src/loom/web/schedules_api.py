"""The schedules API under ``/api/schedules``: list and describe schedules; pause, resume,
trigger and delete them, through the client API (``Database.list_schedules`` and friends).

Errors are JSON ``{"error": message}``: 404 for an unknown schedule, 422 for a name that breaks
the schedule name rule or, for a trigger, a workflow no module registered in this server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status
from pydantic import BaseModel, ConfigDict, Field

from loom.definitions import Registry
from loom.schedules import ScheduleInfo
from loom.scheduling import check_name
from loom.web import models, serialize
from loom.web.api import DB, _errors, registry

_ERRORS: dict[int | str, dict[str, Any]] = {
    **_errors(401, 403, 422, 503),
    404: {"model": models.ErrorBody, "description": "No schedule of this name"},
}
router = APIRouter(prefix="/api/schedules", tags=["schedules"], responses=_ERRORS)


class Schedule(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    workflow: str
    spec: str = Field(description="How the timing reads: `cron */5 * * * *`, `every 30s`")
    cron: str | None
    every: str | None = Field(description="The interval (`1m30s`); null for a cron schedule")
    timezone: str
    input: Any
    overlap: str = Field(description="skip, buffer_one or allow_all")
    catch_up: str = Field(description="skip, latest or all")
    catch_up_limit: int
    paused: bool
    next_run: str | None = Field(description="ISO 8601, UTC; null while paused")
    buffered_run: str | None = Field(description="A slot held until the last run ends")
    last_run_id: str | None
    created_at: str
    updated_at: str


class ScheduleList(BaseModel):
    model_config = ConfigDict(extra="allow")

    schedules: list[Schedule]


class ScheduleDetail(Schedule):
    upcoming: list[str] = Field(description="The next run times, ISO 8601 UTC")
    recent_runs: list[models.WorkflowSummary] = Field(description="Latest first")


class Triggered(BaseModel):
    model_config = ConfigDict(extra="allow")

    schedule: str
    workflow_id: str


class Deleted(BaseModel):
    model_config = ConfigDict(extra="allow")

    schedule: str
    deleted: bool


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "workflow": info.workflow,
        "spec": info.spec,
        "cron": info.cron,
        "every": info.every,
        "timezone": info.timezone,
        "input": info.input,
        "overlap": info.overlap,
        "catch_up": info.catch_up,
        "catch_up_limit": info.catch_up_limit,
        "paused": info.paused,
        "next_run": _iso(info.next_run),
        "buffered_run": _iso(info.buffered_run),
        "last_run_id": info.last_run_id,
        "created_at": info.created_at.isoformat(),
        "updated_at": info.updated_at.isoformat(),
    }


def schedule_name(name: str) -> str:
    """The schedule a path names, checked against the name rule (422 when it breaks it)."""
    return check_name(name)


Name = Annotated[str, Depends(schedule_name)]


@router.get("", summary="List the schedules, by name", response_model=ScheduleList)
async def list_schedules(db: DB) -> dict[str, Any]:
    return {"schedules": [schedule_json(i) for i in await db.list_schedules()]}


@router.get(
    "/{name}",
    summary="One schedule: its definition, next run times and latest runs",
    response_model=ScheduleDetail,
)
async def get_schedule(
    name: Name,
    db: DB,
    runs: Annotated[int, Query(ge=0, le=500, description="How many recent runs")] = 10,
) -> dict[str, Any]:
    found = await db.describe_schedule(name, runs=runs)
    return {
        **schedule_json(found.schedule),
        "upcoming": [moment.isoformat() for moment in found.upcoming],
        "recent_runs": [serialize.summary(r) for r in found.recent_runs],
    }


@router.post("/{name}/pause", summary="Stop firing the schedule", response_model=Schedule)
async def pause_schedule(name: Name, db: DB) -> dict[str, Any]:
    return schedule_json(await db.pause_schedule(name))


@router.post(
    "/{name}/resume",
    summary="Fire the schedule again from its next slot (paused slots are not caught up)",
    response_model=Schedule,
)
async def resume_schedule(name: Name, db: DB) -> dict[str, Any]:
    return schedule_json(await db.resume_schedule(name))


@router.post(
    "/{name}/trigger",
    summary="Start a run now, whatever the slots, pause or overlap policy",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=Triggered,
)
async def trigger_schedule(
    name: Name, db: DB, reg: Annotated[Registry, Depends(registry)]
) -> dict[str, Any]:
    handle = await db.trigger_schedule(name, registry=reg)
    return {"schedule": name, "workflow_id": handle.workflow_id}


@router.delete("/{name}", summary="Delete the schedule (its runs stay)", response_model=Deleted)
async def delete_schedule(name: Name, db: DB) -> dict[str, Any]:
    await db.delete_schedule(name)
    return {"schedule": name, "deleted": True}
