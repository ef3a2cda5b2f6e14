"""Routing: an activity runs on a worker serving its queue, and its outcome comes back into
its workflow's history, once. On both backends, with in-process workers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import loom
from loom.core.history import EventType
from loom.payload_codecs import AesGcmCodec, CodecChain, CompressionCodec
from queue_workload import most_at_once
from routing_workload import Echo, Hold, Render, Resume, Stuck, Withdraw, seen
from support import eventually
from support.stored import found_in, stored_bytes
from support.workers import of_type, worker


async def status(db: loom.Database, wid: str) -> loom.WorkflowStatus:
    return (await db.get_workflow(wid).describe()).status


async def queue(db: loom.Database, name: str) -> Any:
    return next((q for q in await db.queues() if q.name == name), None)


async def test_a_routed_activity_runs_on_a_worker_of_its_queue(db: loom.Database) -> None:
    handle = await db.start_workflow(Render, workflow_id="r1", workflow_input={"frame": 7})
    async with (
        worker(db, queues=["default"], worker_id="cpu-1"),
        worker(db, queues=["gpu"], worker_id="gpu-1"),
    ):
        state = await handle.result(timeout=20)
    assert state["prepared"]["thread"].startswith("loom-activity-cpu-1")
    assert state["rendered"]["thread"].startswith("loom-activity-gpu-1")
    assert state["rendered"]["frame"] == 7 and state["rendered"]["step"] == "run"
    events = await handle.events()
    assert len(of_type(events, EventType.ACTIVITY_COMPLETED)) == 2
    assert await queue(db, "gpu") is None or (await queue(db, "gpu")).depth == 0


async def test_without_a_worker_of_its_queue_the_workflow_waits_then_completes(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(Render, workflow_id="r2", workflow_input={"frame": 2})
    async with worker(db, queues=["default"], worker_id="cpu-2"):

        async def waiting() -> bool:
            gpu = await queue(db, "gpu")
            return gpu is not None and gpu.depth == 1

        await eventually(waiting, 20, what="the gpu task to wait in its queue")
        described = await handle.describe()
        assert described.status is loom.WorkflowStatus.RUNNING
        assert not described.leased  # nothing is held while it waits
        async with worker(db, queues=["gpu"], worker_id="gpu-2"):
            state = await handle.result(timeout=20)
    assert state["rendered"]["thread"].startswith("loom-activity-gpu-2")
    gpu = await queue(db, "gpu")
    assert gpu is None or (gpu.depth, gpu.running) == (0, 0)


async def test_a_routed_activity_is_retried_by_the_engine(db: loom.Database) -> None:
    handle = await db.start_workflow(
        Render, workflow_id="r3", workflow_input={"frame": 3, "fail_times": 2}
    )
    async with worker(db, queues=["default"]), worker(db, queues=["gpu"]):
        state = await handle.result(timeout=20)
    assert state["rendered"]["attempt"] == 3
    failed = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert [e.payload["attempt"] for e in failed] == [1, 2]
    assert all(e.payload["retry_at"] is not None for e in failed)
    assert "flaky attempt 1" in failed[0].payload["error"]["message"]


async def test_a_routed_retry_starts_from_the_heartbeat_of_the_attempt_before(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(Resume, workflow_id="r8", workflow_input={})
    async with worker(db, queues=["default"]), worker(db, queues=["gpu"], worker_id="gpu-8"):
        state = await handle.result(timeout=20)
    assert state["resumed"]["from"] == {"done": 3}
    assert state["resumed"]["thread"].startswith("loom-activity-gpu-8")


async def test_a_routed_activity_times_out(db: loom.Database) -> None:
    handle = await db.start_workflow(Stuck, workflow_id="r4", workflow_input={})
    async with worker(db, queues=["default"]), worker(db, queues=["gpu"]):

        async def failed() -> bool:
            return await status(db, "r4") is loom.WorkflowStatus.FAILED

        await eventually(failed, 20, what="the workflow to fail")
    [failure] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert failure.payload["error"]["type"] == "TimeoutError"


async def test_canceling_the_workflow_stops_its_remote_attempt(db: loom.Database) -> None:
    handle = await db.start_workflow(Hold, workflow_id="r5", workflow_input={"seconds": 30})
    async with (
        worker(db, queues=["default"]),
        worker(db, queues=["gpu"], lease_seconds=0.6) as gpu_worker,
    ):
        await eventually(lambda: "started" in seen.get("r5", []), 20, what="the attempt")
        await handle.cancel("enough")
        await eventually(lambda: "canceled" in seen.get("r5", []), 10, what="the attempt to stop")
        assert await status(db, "r5") is loom.WorkflowStatus.CANCELED

        async def gone() -> bool:
            gpu = await queue(db, "gpu")
            return not gpu_worker.tasks.running and (gpu is None or gpu.running == 0)

        await eventually(gone, 10, what="the task to go")
    assert "ended" not in seen["r5"]


async def test_a_withdrawn_routed_activity_fails_as_canceled(db: loom.Database) -> None:
    handle = await db.start_workflow(Withdraw, workflow_id="r6", workflow_input={})
    async with worker(db, queues=["default"]), worker(db, queues=["gpu"], lease_seconds=0.6):
        state = await handle.result(timeout=20)
        assert state["gave_up"] is True
        await eventually(lambda: "canceled" in seen.get("r6", []), 10, what="the attempt to stop")
    assert of_type(await handle.events(), EventType.ACTIVITY_COMPLETED) == []


async def test_a_queue_limit_holds_for_routed_activities_across_workers(
    db: loom.Database,
) -> None:
    await db.set_queue("gpu", concurrency=1)
    ids = [f"h{i}" for i in range(4)]
    for wid in ids:
        await db.start_workflow(Hold, workflow_id=wid, workflow_input={"seconds": 0.15})
    async with (
        worker(db, queues=["default"]),
        worker(db, queues=["gpu"]),
        worker(db, queues=["gpu"]),
    ):
        states = await asyncio.gather(*(db.get_workflow(w).result(timeout=30) for w in ids))
    assert most_at_once([(s["held"]["start"], s["held"]["end"]) for s in states]) == 1
    gpu = await queue(db, "gpu")
    assert gpu is not None and gpu.running == 0


async def test_a_routed_outcome_is_stored_encoded_with_a_codec(db: loom.Database) -> None:
    marker = "routed-secret-7f3a"
    key = AesGcmCodec.generate_key()
    chain = CodecChain(CompressionCodec(min_size=0), AesGcmCodec({"k1": key}))
    async with loom.Database(db.url, codec=chain) as coded:
        handle = await coded.start_workflow(Echo, workflow_id="r7", workflow_input={"text": marker})

        async def outcome_waits() -> bool:
            return bool(await coded.store.read_task_outcomes("r7"))

        # The workflow's worker dispatches and parks; a gpu worker alone then runs the first
        # attempt, whose failure waits, encoded, in its task for the workflow's worker.
        async with worker(coded, queues=["default"]):
            await eventually(
                lambda: _depth(coded, "gpu", 1), 20, what="the first attempt to be dispatched"
            )
        async with worker(coded, queues=["gpu"]):
            await eventually(outcome_waits, 20, what="the first attempt's outcome")
        [failed] = await coded.store.read_task_outcomes("r7")
        assert not failed.ok and marker in failed.error["message"]  # decoded with the key
        assert found_in(await stored_bytes(db.url), [marker]) == []
        async with worker(coded, queues=["default"]), worker(coded, queues=["gpu"]):
            assert await handle.result(timeout=20) == {"echo": {"echo": marker}}
    assert found_in(await stored_bytes(db.url), [marker]) == []


async def _depth(db: loom.Database, name: str, depth: int) -> bool:
    found = await queue(db, name)
    return found is not None and found.depth == depth


LOCAL = loom.Registry()


@loom.activity(name="routing_local_add", registry=LOCAL)
def local_add(i: int) -> int:
    return i + 1


@loom.workflow(name="routing_Local", registry=LOCAL)
class Local(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        total = 0
        for _ in range(3):
            total = await ctx.activity(local_add, total)
        await ctx.state.set("total", total)


async def test_workflows_whose_activities_run_where_they_are_driven_pay_nothing_for_routing(
    tmp_path: Path,
) -> None:
    """No statement on activity tasks: not in their commits, not in the workers' polls (their
    registry has no activity naming a queue, so there is no task they could take)."""
    touched: list[str] = []
    async with loom.Database(f"sqlite:///{tmp_path / 'local.db'}") as db:
        await db.migrate_up()
        db.store._conn.set_trace_callback(  # type: ignore[attr-defined]
            lambda sql: touched.append(sql) if "activity_tasks" in sql else None
        )
        ids = [f"l{i}" for i in range(20)]
        for wid in ids:
            await db.start_workflow(Local, workflow_id=wid, workflow_input={})
        async with worker(db, registry=LOCAL), worker(db, registry=LOCAL, queues=["default"]):
            states = await asyncio.gather(*(db.get_workflow(w).result(timeout=20) for w in ids))
    assert [s["total"] for s in states] == [3] * 20
    assert touched == []
