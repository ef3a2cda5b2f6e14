"""A workflow whose code changes while it runs: detected, failed with history kept, retried.

Two registries stand in for two deployments of the same workflow name.
"""

from __future__ import annotations

import loom
from loom import EventType, WorkflowStatus

V1 = loom.Registry()
V2 = loom.Registry()
V1_FIXED = loom.Registry()
calls: list[str] = []


@loom.activity(name="deploy_reserve", registry=V1)
async def reserve(item: str) -> str:
    calls.append(f"reserve:{item}")
    return f"reserved-{item}"


@loom.activity(name="deploy_hold", registry=V2)
async def hold(item: str) -> str:
    calls.append(f"hold:{item}")
    return f"held-{item}"


@loom.activity(name="deploy_ship", registry=V1)
async def ship(item: str) -> str:
    calls.append(f"ship:{item}")
    return f"shipped-{item}"


async def _wait_then_ship(ctx: loom.WorkflowContext[dict[str, str], dict[str, str]]) -> None:
    await ctx.wait_for_signal("go")
    await ctx.state.set("shipped", await ctx.activity(ship, ctx.input["item"]))


class _Base(loom.Workflow[dict[str, str], dict[str, str]]):
    pass


@loom.workflow(name="deploy_Order", registry=V1)
class OrderV1(_Base):
    @loom.step
    async def prepare(self, ctx: loom.WorkflowContext[dict[str, str], dict[str, str]]) -> None:
        await ctx.state.set("prepared", await ctx.activity(reserve, ctx.input["item"]))
        await _wait_then_ship(ctx)


@loom.workflow(name="deploy_Order", registry=V2)
class OrderV2(_Base):
    """The same workflow after an incompatible edit: a different activity at the same point."""

    @loom.step
    async def prepare(self, ctx: loom.WorkflowContext[dict[str, str], dict[str, str]]) -> None:
        await ctx.state.set("prepared", await ctx.activity(hold, ctx.input["item"]))
        await _wait_then_ship(ctx)


@loom.workflow(name="deploy_Order", registry=V1_FIXED)
class OrderV1Again(OrderV1):
    """The edit rolled back."""


async def test_changed_code_fails_the_workflow_and_retry_resumes_after_the_fix(
    db_url: str,
) -> None:
    calls.clear()
    async with loom.Database(db_url, registry=V1) as db:
        await db.migrate_up()
        handle = await db.start_workflow(OrderV1, workflow_input={"item": "lamp"})
        assert await loom.Worker(db).run_once()
        assert calls == ["reserve:lamp"]  # parked, waiting for "go"
        await handle.signal("go")
        history_before = await handle.events()

    # A deployment with incompatible code picks the workflow up.
    async with loom.Database(db_url, registry=V2) as db:
        handle = db.get_workflow(handle.workflow_id)
        assert await loom.Worker(db).run_once()
        assert await handle.status() is WorkflowStatus.FAILED
        events = await handle.events()
        assert events[: len(history_before)] == history_before  # history kept
        failure = events[-1]
        assert failure.type is EventType.WORKFLOW_FAILED
        message = failure.payload["error"]["message"]
        assert "non-deterministic" in message
        assert "deploy_hold" in message and "deploy_reserve" in message
        reports = await db.check_replay([handle.workflow_id])
        assert not reports[0].ok
        assert calls == ["reserve:lamp"]  # the incompatible code ran no activity

    # The fix is deployed; the operator retries.
    async with loom.Database(db_url, registry=V1_FIXED) as db:
        handle = db.get_workflow(handle.workflow_id)
        await handle.retry()
        async with loom.Worker(db, poll_interval=0.05):
            final = await handle.result(timeout=10)
        kinds = [e.type for e in await handle.events()]
    assert final == {"prepared": "reserved-lamp", "shipped": "shipped-lamp"}
    assert kinds.count(EventType.WORKFLOW_FAILED) == 1
    assert kinds.index(EventType.WORKFLOW_RETRIED) > kinds.index(EventType.WORKFLOW_FAILED)
    # The failed step started afresh (its activity ran again) and received the signal again.
    assert calls == ["reserve:lamp", "reserve:lamp", "ship:lamp"]


flaky = {"broken": True}


@loom.activity(name="deploy_fulfil", non_retryable=(RuntimeError,))
async def fulfil(order: str) -> str:
    if flaky["broken"]:
        raise RuntimeError("warehouse offline")
    return f"fulfilled-{order}"


@loom.workflow(name="deploy_SignalThenFail")
class SignalThenFail(loom.Workflow[dict[str, str], dict[str, str]]):
    @loom.step
    async def approve_and_fulfil(
        self, ctx: loom.WorkflowContext[dict[str, str], dict[str, str]]
    ) -> None:
        approver = await ctx.wait_for_signal("approved")
        await ctx.state.set("approver", approver)
        await ctx.state.set("result", await ctx.activity(fulfil, ctx.input["order"]))


async def test_retry_delivers_again_the_signals_the_failed_attempt_received(
    db: loom.Database,
) -> None:
    flaky["broken"] = True
    handle = await db.start_workflow(SignalThenFail, workflow_input={"order": "o-7"})
    await handle.signal("approved", "alice")
    await handle.signal("approved", "bob")  # a second one stays buffered
    async with loom.Worker(db, poll_interval=0.05):
        failed = None
        try:
            await handle.result(timeout=10)
        except loom.WorkflowFailedError as exc:
            failed = exc
        assert failed is not None and "warehouse offline" in str(failed)
        assert (await handle.state())["approver"] == "alice"

        flaky["broken"] = False
        await handle.retry()
        final = await handle.result(timeout=10)
    # The retried step started afresh and received "alice" again, not "bob".
    assert final == {"approver": "alice", "result": "fulfilled-o-7"}
    received = [
        e.payload["payload"] for e in await handle.events() if e.type is EventType.SIGNAL_RECEIVED
    ]
    assert received == ["alice", "alice"]
