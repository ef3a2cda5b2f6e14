"""Short activities run inline: written with their outcome, one write for a quick workflow;
a longer one has its scheduling written when the window ends; waiters hear other processes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import loom
from loom import EventType, WorkflowStatus
from support import eventually

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

opened: dict[str, asyncio.Event] = {}
began: dict[str, asyncio.Event] = {}


@loom.activity(name="inline_add")
async def inline_add(a: int, b: int) -> int:
    return a + b


@loom.activity(name="inline_gated")
async def inline_gated(key: str) -> str:
    began[key].set()
    await opened[key].wait()
    return key


@loom.workflow(name="inline_Three")
class Three(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def add(self, ctx: Ctx) -> None:
        total = await ctx.activity(inline_add, 1, 2)
        total = await ctx.activity(inline_add, total, 3)
        await ctx.state.set("total", await ctx.activity(inline_add, total, 4))


@loom.workflow(name="inline_Slow")
class Slow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.state.set("phase", "waiting")
        await ctx.state.set("got", await ctx.activity(inline_gated, ctx.input["key"]))


def count_commits(db: loom.Database) -> list[int]:
    """Count the commits this Database's store writes (one list entry per commit)."""
    seen: list[int] = []
    commit = db.store.commit

    async def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(1)
        return await commit(*args, **kwargs)

    db.store.commit = counting  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize(("window", "writes"), [(30.0, 1), (0.0, 4)])
async def test_quick_activities_are_written_with_their_outcome(
    db: loom.Database, window: float, writes: int
) -> None:
    commits = count_commits(db)
    handle = await db.start_workflow(Three)
    async with loom.Worker(db, poll_interval=0.05, inline_window=window):
        assert await handle.result(timeout=10) == {"total": 10}
    # Inline: the whole workflow is one write. Without: each activity's scheduling is written
    # before it starts (3), then the end.
    assert len(commits) == writes
    events = await handle.events()
    scheduled = [e.seq for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
    completed = [e.payload["scheduled"] for e in events if e.type is EventType.ACTIVITY_COMPLETED]
    assert len(scheduled) == 3 and completed == scheduled


async def test_a_long_activity_is_written_as_scheduled_when_the_window_ends(
    db: loom.Database,
) -> None:
    key = f"slow-{db.store.dialect}"
    opened[key], began[key] = asyncio.Event(), asyncio.Event()
    handle = await db.start_workflow(Slow, workflow_input={"key": key})
    async with loom.Worker(db, poll_interval=0.05, inline_window=0.05):
        await asyncio.wait_for(began[key].wait(), 5)

        async def scheduled_and_visible() -> bool:
            kinds = [e.type for e in await handle.events()]
            return EventType.ACTIVITY_SCHEDULED in kinds

        await eventually(scheduled_and_visible)
        assert await handle.state() == {"phase": "waiting"}  # durable while it runs
        assert await handle.status() is WorkflowStatus.RUNNING
        opened[key].set()
        assert await handle.result(timeout=5) == {"phase": "waiting", "got": key}


async def test_a_waiter_hears_a_workflow_finished_by_another_process(db_url: str) -> None:
    """On PostgreSQL a client's ``workflow_changed`` is woken by NOTIFY when a worker of another
    process commits; on SQLite the client polls."""
    async with loom.Database(db_url) as client, loom.Database(db_url) as elsewhere:
        await client.migrate_up()
        handle = await client.start_workflow(Three)
        await client.follow_changes()
        before = client.workflow_changed.version
        async with loom.Worker(elsewhere, poll_interval=0.05):
            assert await elsewhere.get_workflow(handle.workflow_id).result(timeout=10)
        if client.store.dialect == "postgres":

            async def heard() -> bool:
                return client.workflow_changed.version > before

            await eventually(heard)
        assert await handle.result(timeout=5) == {"total": 10}
