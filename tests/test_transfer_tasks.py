"""`loom migrate` with routed activities in flight: their activity tasks travel with their
workflows (one waiting for a worker, one a vanished worker was running, one done whose outcome
the workflow has not recorded yet), verification covers them, and workers of the tasks' queue
on the target finish the workflows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import EventType
from loom.store.base import DumpedTask, TaskOutcome, WorkflowDump
from loom.transfer import copy_database
from routing_workload import Echo, Hold, Render, seen
from support import eventually, pg, worker
from support.workers import of_type

HELD_LEASE = 1.0  # the lease of the gpu worker that stopped answering


async def depth(db: loom.Database, queue: str) -> int:
    found = next((q for q in await db.queues() if q.name == queue), None)
    return 0 if found is None else found.depth


async def dispatched(db: loom.Database, wids: set[str]) -> bool:
    """Each of ``wids`` has a task and is parked (its default worker holds nothing)."""
    for wid in wids:
        if not await db.store.read_tasks(wid) or (await db.get_workflow(wid).describe()).leased:
            return False
    return True


async def fill(db: loom.Database) -> None:
    """r-wait: its render waits for a gpu worker; r-held: a gpu worker took its hold and
    vanished; r-done: its first echo attempt failed on gpu worker src-gpu, the failure not
    yet recorded by the workflow."""
    await db.start_workflow(Render, workflow_id="r-wait", workflow_input={"frame": 4})
    await db.start_workflow(Hold, workflow_id="r-held", workflow_input={"seconds": 0.05})
    await db.start_workflow(Echo, workflow_id="r-done", workflow_input={"text": "moved"})
    async with worker(db, queues=["default"], worker_id="src-cpu"):
        await eventually(
            lambda: dispatched(db, {"r-wait", "r-held", "r-done"}), 20, what="the dispatches"
        )
    [held] = await db.store.claim_tasks(
        "src-gpu-gone", ["routing_hold"], 1, HELD_LEASE, time.time(), ["gpu"]
    )
    assert held.workflow_id == "r-held"
    # What a gpu worker of the source writes when the first echo attempt fails.
    [echo] = await db.store.claim_tasks("src-gpu", ["routing_echo"], 1, 10, time.time(), ["gpu"])
    error = {"type": "ValueError", "message": "not yet: moved", "traceback": None, "cause": None}
    failure = TaskOutcome(echo.seq, 1, False, None, error, time.time(), "src-gpu")
    assert await db.store.complete_task(echo, "src-gpu", failure, time.time())


@pytest.mark.postgres
async def test_activity_tasks_in_flight_are_copied_and_finished_on_the_target(
    tmp_path: Path,
) -> None:
    seen.pop("r-held", None)
    source_url, target_url = f"sqlite:///{tmp_path / 'source.db'}", pg.pg_url(tmp_path)
    async with loom.Database(source_url) as source:
        await source.migrate_up()
        await fill(source)
        before = {w: await source.store.read_tasks(w) for w in ("r-wait", "r-held", "r-done")}
    assert [t.state for t in before["r-held"]] == ["leased"]
    assert [t.state for t in before["r-done"]] == ["done"]

    report = await copy_database(source_url, target_url)
    assert report.verified and report.activity_tasks == 3

    async with loom.Database(target_url) as target:
        [held] = await target.store.read_tasks("r-held")
        # Its lease did not travel: ready when it would have run out, as if its worker died.
        assert (held.state, held.worker) == ("ready", None)
        assert held.ready_at == before["r-held"][0].lease_expires
        [done] = await target.store.read_tasks("r-done")
        assert (done.state, done.worker) == ("done", "src-gpu")
        [waiting] = await target.store.read_tasks("r-wait")
        assert (waiting.state, waiting.queue) == ("ready", "gpu")
        async with (
            worker(target, queues=["default"], worker_id="dst-cpu"),
            worker(target, queues=["gpu"], worker_id="dst-gpu"),
        ):
            rendered = await target.get_workflow("r-wait").result(timeout=20)
            held_state = await target.get_workflow("r-held").result(timeout=20)
            echoed = await target.get_workflow("r-done").result(timeout=20)
        assert rendered["rendered"]["thread"].startswith("loom-activity-dst-gpu")
        assert "pid" in held_state["held"]
        assert seen["r-held"].count("started") == 1  # the vanished worker's attempt, again
        assert echoed == {"echo": {"echo": "moved"}}
        events = await target.get_workflow("r-done").events()
        [failed] = of_type(events, EventType.ACTIVITY_FAILED)
        [completed] = of_type(events, EventType.ACTIVITY_COMPLETED)
        # The outcome recorded on the source's gpu worker was delivered once, on the target.
        assert (failed.payload["attempt"], failed.payload["worker"]) == (1, "src-gpu")
        assert (completed.payload["attempt"], completed.payload["worker"]) == (2, "dst-gpu")
        for wid in ("r-wait", "r-held", "r-done"):
            assert await target.store.read_tasks(wid) == []


def test_differences_name_the_activity_tasks() -> None:
    task = DumpedTask(2, 1, "run-1", "gpu", 0, "render", "ready", 10.0, 1, None, 5.0)
    base: dict[str, Any] = {
        "workflow_id": "w",
        "name": "W",
        "version": "1",
        "status": "RUNNING",
        "input": "{}",
        "state": "{}",
        "result": None,
        "error": None,
        "current_step": "run",
        "created_at": 1.0,
        "updated_at": 2.0,
        "last_seq": 2,
        "ready_at": None,
        "lease_owner": None,
        "lease_epoch": 1,
        "cancel_requested": None,
        "events": (),
        "signals": (),
    }
    with_task = WorkflowDump(**base, tasks=(task,))
    assert with_task.differences(WorkflowDump(**base, tasks=(task,))) == []
    assert with_task.differences(WorkflowDump(**base)) == ["activity tasks (1 vs 0)"]
    moved = task._replace(ready_at=20.0)
    assert with_task.differences(WorkflowDump(**base, tasks=(moved,))) == [
        "activity tasks (1 vs 1)"
    ]
