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
from support import eventually
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


ran: list[str] = []


@loom.activity(name="race_remote_record", queue="race-remote")
async def remote_record(key: str) -> str:
    ran.append(key)
    return key


@loom.workflow(name="race_Remote")
class Remote(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def call(self, ctx: Ctx) -> None:
        await ctx.state.set("got", await ctx.activity(remote_record, ctx.input["key"]))


async def test_a_cancel_between_a_tasks_claim_and_its_start_means_it_never_begins(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker of the task sets its attempt up after claiming it (it reads the history, the
    heartbeats); a cancel that becomes final meanwhile is seen before the attempt begins."""
    key = f"claimed-then-canceled-{db.url[:6]}"
    handle = await db.start_workflow(Remote, workflow_input={"key": key})
    async with loom.Database(db.url) as remote_db:
        real = remote_db.store.load_history
        outcomes: list[loom.CancelOutcome] = []

        async def cancel_first(workflow_id: str, *args: Any, **kwargs: Any) -> Any:
            if workflow_id == handle.workflow_id and not outcomes:
                outcomes.append(await handle.cancel("while its task was being set up"))
            return await real(workflow_id, *args, **kwargs)

        async with worker(db, queues=["default"]):

            async def dispatched() -> bool:
                return any(q.name == "race-remote" and q.depth for q in await db.queues())

            await eventually(dispatched, 20, what="the task to be dispatched")
        monkeypatch.setattr(remote_db.store, "load_history", cancel_first)
        async with worker(remote_db, queues=["race-remote"]) as remote:
            await eventually(lambda: bool(outcomes), 20, what="the claim")

            async def settled() -> bool:
                return not remote.tasks.running

            await eventually(settled, 20, what="the task to be let go")
    assert outcomes == [loom.CancelOutcome.CANCELED]
    assert key not in ran
    assert (await handle.describe()).status is loom.WorkflowStatus.CANCELED
    assert not [q for q in await db.queues() if q.name == "race-remote" and (q.depth or q.running)]
