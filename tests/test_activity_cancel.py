"""Cancellation reaches a running activity, on both backends.

Cancelling the workflow (from this process, or from another one, found by lease renewal)
interrupts its running activity: an async one gets ``CancelledError`` where it awaits (it can
catch it and clean up); a sync one, which cannot be interrupted, sees
``activity_info().is_cancelled()`` turn true and its next ``heartbeat()`` raise
``ActivityCancelledError``. ``Worker.cancel_activity`` (``WorkflowDriver.cancel_activity``)
cancels one activity for its workflow, which gets a failure that is not retried.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any

import pytest

import loom
from loom import EventType
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

started: dict[str, int] = {}
"""The seq of each test's activity, once it runs (by test key)."""
cleanup: dict[str, dict[str, Any]] = {}
"""What each test's activity saw when it was cancelled."""
runs: collections.Counter[str] = collections.Counter()


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return request.node.name


@loom.activity(name="cx_async", timeout_seconds=30, retry_count=3)
async def cx_async(key: str, swallow: bool = False) -> str:
    info = loom.activity_info()
    runs[key] += 1
    started[key] = info.seq
    try:
        while True:
            loom.heartbeat()
            await asyncio.sleep(0.01)
    except asyncio.CancelledError:  # interrupted: clean up, then let it go on
        try:
            loom.heartbeat()
        except loom.ActivityCancelledError as exc:
            cleanup[key] = {"cancelled": info.is_cancelled(), "reason": exc.reason}
        if swallow:
            return "finished anyway"
        raise


@loom.activity(name="cx_sync", timeout_seconds=30, retry_count=3)
def cx_sync(key: str, swallow: bool = False) -> str:
    info = loom.activity_info()
    runs[key] += 1
    started[key] = info.seq
    beats = 0
    try:
        while True:
            loom.heartbeat({"beats": beats})
            beats += 1
            time.sleep(0.01)
    except loom.ActivityCancelledError as exc:
        cleanup[key] = {"cancelled": info.is_cancelled(), "reason": exc.reason}
        return "finished anyway"  # too late: nobody records it


KINDS = {"async": cx_async, "sync": cx_sync}


@loom.workflow(name="cx_Long")
class CxLong(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        fn = KINDS[ctx.input["kind"]]
        try:
            result = await ctx.activity(fn, ctx.input["key"], ctx.input.get("swallow", False))
            await ctx.state.set("result", result)
        except loom.ActivityFailedError as exc:
            await ctx.state.set("failed", [exc.error_type, exc.error_message, exc.attempts])
        await ctx.state.set("after", True)


async def start_long(
    db: loom.Database, key: str, kind: str, **extra: Any
) -> loom.WorkflowHandle[Any]:
    handle = await db.start_workflow(CxLong, workflow_input={"key": key, "kind": kind, **extra})
    return handle


@pytest.mark.parametrize("kind", sorted(KINDS))
async def test_canceling_the_workflow_reaches_its_running_activity(
    db: loom.Database, key: str, kind: str
) -> None:
    handle = await start_long(db, key, kind)
    async with worker(db) as w:
        await eventually(lambda: key in started, what="the activity running")
        assert await handle.cancel("enough") is loom.client.CancelOutcome.REQUESTED
        with pytest.raises(loom.WorkflowCanceledError):
            await handle.result(timeout=10)
        await eventually(lambda: key in cleanup, what="the activity seeing the cancel")
        await eventually(lambda: w.stats.activity_threads_stuck == 0)
    assert cleanup[key] == {"cancelled": True, "reason": "its workflow was canceled"}
    assert runs[key] == 1
    assert not of_type(await handle.events(), EventType.ACTIVITY_COMPLETED)
    assert await handle.heartbeats() == []


async def test_a_cancel_from_another_process_reaches_a_sync_activity(
    db: loom.Database, key: str
) -> None:
    handle = await start_long(db, key, "sync")
    async with worker(db, lease_seconds=0.6):  # renewed, and cancels learnt, every 0.2 s
        await eventually(lambda: key in started, what="the activity running")
        # Another Database: as another process, it cannot tell this worker directly.
        async with loom.Database(db.url) as elsewhere:
            assert await elsewhere.get_workflow(handle.workflow_id).cancel() is (
                loom.client.CancelOutcome.REQUESTED
            )
        await eventually(lambda: key in cleanup, what="the activity seeing the cancel")
        with pytest.raises(loom.WorkflowCanceledError):
            await handle.result(timeout=10)
    assert cleanup[key] == {"cancelled": True, "reason": "its workflow was canceled"}


@pytest.mark.parametrize("kind", ["async", "sync", "async-swallowing"])
async def test_cancel_activity_fails_one_activity_for_its_workflow(
    db: loom.Database, key: str, kind: str
) -> None:
    handle = await start_long(db, key, kind.split("-")[0], swallow=kind.endswith("swallowing"))
    async with worker(db) as w:
        await eventually(lambda: key in started, what="the activity running")
        seq = started[key]
        assert w.cancel_activity(handle.workflow_id, seq) is True
        state = await handle.result(timeout=10)
        assert w.cancel_activity(handle.workflow_id, seq) is False  # the workflow ended
    assert w.cancel_activity("cx-no-such-workflow", 1) is False

    name = "cx_sync" if kind == "sync" else "cx_async"
    # The workflow goes on: the step got a failure it could catch; what the attempt returned
    # after it saw the cancel (the swallowing one) is not recorded.
    assert state == {
        "failed": ["ActivityCancelledError", f"activity {name!r} was canceled by its workflow", 1],
        "after": True,
    }
    await eventually(lambda: key in cleanup, what="the activity seeing the cancel")
    assert cleanup[key] == {"cancelled": True, "reason": "canceled by its workflow"}
    assert runs[key] == 1  # not retried, though retry_count=3
    [failed] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert failed.payload["scheduled"] == seq and failed.payload["retry_at"] is None
    assert not of_type(await handle.events(), EventType.ACTIVITY_COMPLETED)


@loom.activity(name="cx_flaky", retry_count=3, retry_delay=30)
async def cx_flaky(key: str) -> None:
    runs[key] += 1
    started[key] = loom.activity_info().seq
    raise ConnectionError("down")


@loom.workflow(name="cx_Pair")
class CxPair(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        async def outcome(call: Any) -> str:
            try:
                await call
            except loom.ActivityFailedError as exc:
                return f"{exc.error_type} after {exc.attempts}"
            return "done"

        key = ctx.input["key"]
        long, flaky = await asyncio.gather(
            outcome(ctx.activity(cx_async, key)), outcome(ctx.activity(cx_flaky, f"{key}-flaky"))
        )
        await ctx.state.update(long=lambda _: long, flaky=lambda _: flaky)


async def test_cancel_activity_of_one_waiting_for_its_retry(db: loom.Database, key: str) -> None:
    handle = await db.start_workflow(CxPair, workflow_input={"key": key})
    async with worker(db) as w:

        async def waits_for_retry() -> bool:
            failed = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
            return bool(failed) and failed[0].payload["retry_at"] is not None

        await eventually(waits_for_retry, what="the flaky activity waiting for its retry")
        # Not running (its retry is 30 s away): cancelled all the same, never started again.
        assert w.cancel_activity(handle.workflow_id, started[f"{key}-flaky"]) is False
        await eventually(lambda: key in started, what="the long activity running")
        assert w.cancel_activity(handle.workflow_id, started[key]) is True
        state = await handle.result(timeout=10)
    # Its second attempt was cancelled before it began.
    assert state == {
        "long": "ActivityCancelledError after 1",
        "flaky": "ActivityCancelledError after 2",
    }
    assert runs[f"{key}-flaky"] == 1
