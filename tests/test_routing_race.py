"""A routed activity's outcome reaches its workflow while the workflow is still held by its
worker for a long local activity: the code sees the routed one end first, as it did. From the
same process (told at once) and from another (read within ``signal_check_interval``, or at
PostgreSQL's announcement), on both backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

import loom
from support.workers import worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.activity(name="race_local_wait")
async def local_wait(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "local"


@loom.activity(name="race_remote_quick", queue="race-remote")
async def remote_quick() -> str:
    return "remote"


@loom.workflow(name="race_FirstDone")
class FirstDone(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def race(self, ctx: Ctx) -> None:
        local = asyncio.ensure_future(ctx.activity(local_wait, ctx.input["seconds"]))
        remote = asyncio.ensure_future(ctx.activity(remote_quick))
        done, _ = await asyncio.wait([local, remote], return_when=asyncio.FIRST_COMPLETED)
        await ctx.state.set("first", "remote" if remote in done else "local")
        local.cancel()
        with contextlib.suppress(loom.ActivityCancelledError, asyncio.CancelledError):
            await local


@contextlib.asynccontextmanager
async def other_database(db: loom.Database, separate: bool) -> AsyncIterator[loom.Database]:
    if not separate:
        yield db
        return
    async with loom.Database(db.url) as other:
        yield other


@pytest.mark.parametrize("separate", [False, True], ids=["same-process", "other-process"])
async def test_a_routed_outcome_reaches_a_workflow_busy_with_a_local_activity(
    db: loom.Database, separate: bool
) -> None:
    handle = await db.start_workflow(FirstDone, workflow_input={"seconds": 60})
    async with (
        other_database(db, separate) as remote_db,
        worker(db, queues=["default"], lease_seconds=30),
        worker(remote_db, queues=["race-remote"]),
    ):
        state = await handle.result(timeout=20)  # not the local activity's 60 s
    assert state["first"] == "remote"
    kinds = [e.type for e in await handle.events()]
    assert kinds.count(loom.EventType.ACTIVITY_COMPLETED) == 1
