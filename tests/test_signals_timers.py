"""Signals and durable timers, driven by real workers on each backend; the waits of hours run on
a virtual clock (``loom.testing``), the same code paths as the wall clock's seconds."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

import loom
from loom import EventType
from loom.testing import VirtualClock, WorkflowEnvironment
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


async def parked_waiting_for(handle: loom.WorkflowHandle[Any], kind: EventType) -> bool:
    """The workflow recorded ``kind`` and then gave its lease back (no worker holds it)."""
    record = await handle.describe()
    if record.leased or record.status is not loom.WorkflowStatus.RUNNING:
        return False
    return any(e.type is kind for e in await handle.events())


# ------------------------------------------------------------------------------ signals


@loom.workflow(name="sig_Approval")
class SigApproval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", True)

    @loom.step
    async def approval(self, ctx: Ctx) -> None:
        decision = await ctx.wait_for_signal("approve")
        await ctx.state.set("decision", decision)


@loom.workflow(name="sig_Deadline")
class SigDeadline(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        try:
            await ctx.wait_for_signal("approve", timeout=timedelta(hours=48))
        except TimeoutError as exc:
            await ctx.state.set("timed_out", str(exc))
        else:
            await ctx.state.set("timed_out", None)


async def test_signal_sent_before_the_wait_is_buffered_and_delivered(db: loom.Database) -> None:
    handle = await db.start_workflow(SigApproval)
    # No worker has run the workflow yet: nothing waits for the signal.
    await handle.signal("approve", {"by": "alice"})
    assert not of_type(await handle.events(), EventType.SIGNAL_WAIT_STARTED)

    async with worker(db):
        state = await handle.result(timeout=10)

    assert state == {"prepared": True, "decision": {"by": "alice"}}
    events = await handle.events()
    [wait] = of_type(events, EventType.SIGNAL_WAIT_STARTED)
    [received] = of_type(events, EventType.SIGNAL_RECEIVED)
    assert received.payload["scheduled"] == wait.seq
    assert received.payload["payload"] == {"by": "alice"}


async def test_signal_wakes_a_waiting_workflow(db: loom.Database) -> None:
    handle = await db.start_workflow(SigApproval)
    async with worker(db):
        await eventually(lambda: parked_waiting_for(handle, EventType.SIGNAL_WAIT_STARTED))
        assert await handle.status() == loom.WorkflowStatus.RUNNING
        assert await handle.state() == {"prepared": True}

        await handle.signal("approve", "yes")
        state = await handle.result(timeout=10)
    assert state == {"prepared": True, "decision": "yes"}


async def test_signals_of_one_name_are_delivered_in_the_order_sent(db: loom.Database) -> None:
    handle = await db.start_workflow(SigApproval)
    await handle.signal("other", "ignored")
    await handle.signal("approve", "first")
    await handle.signal("approve", "second")
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state["decision"] == "first"


async def test_wait_for_signal_timeout_raises_timeout_error_in_the_step(db_url: str) -> None:
    async with WorkflowEnvironment(db_url) as env:  # 48 hours, skipped
        handle = await env.start_workflow(SigDeadline)
        state = await handle.result(timeout=10)
        events = await handle.events()

    assert state["timed_out"] is not None
    assert "approve" in state["timed_out"]
    [wait] = of_type(events, EventType.SIGNAL_WAIT_STARTED)
    assert wait.payload["deadline"] == wait.timestamp + 48 * 3600
    [fired] = of_type(events, EventType.TIMER_FIRED)
    assert fired.payload["scheduled"] == wait.seq
    assert fired.timestamp == wait.payload["deadline"]
    assert not of_type(events, EventType.SIGNAL_RECEIVED)


async def test_signalling_a_finished_workflow_is_refused(db: loom.Database) -> None:
    handle = await db.start_workflow(SigApproval)
    await handle.signal("approve", "yes")
    async with worker(db):
        await handle.result(timeout=10)

    with pytest.raises(loom.WorkflowNotRunningError) as info:
        await handle.signal("approve", "again")
    assert info.value.workflow_id == handle.workflow_id
    assert "COMPLETED" in str(info.value)


async def test_signalling_an_unknown_workflow_is_refused(db: loom.Database) -> None:
    with pytest.raises(loom.WorkflowNotFoundError) as info:
        await db.get_workflow("sig-no-such-id").signal("approve", "yes")
    assert "sig-no-such-id" in str(info.value)


# ------------------------------------------------------------------------------- timers


@loom.workflow(name="sig_Nap")
class SigNap(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def nap(self, ctx: Ctx) -> None:
        await ctx.state.set("before", ctx.now().timestamp())
        await ctx.sleep(seconds=ctx.input["seconds"])
        await ctx.state.set("after", ctx.now().timestamp())


@loom.workflow(name="sig_NaiveUntil")
class SigNaiveUntil(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="nap_until")
    async def nap(self, ctx: Ctx) -> None:
        await ctx.sleep(until=datetime.now() + timedelta(seconds=1))


async def test_a_timer_fires_through_a_running_worker(db: loom.Database) -> None:
    handle = await db.start_workflow(SigNap, workflow_input={"seconds": 0.2})
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state["after"] - state["before"] >= 0.2
    events = await handle.events()
    [scheduled] = of_type(events, EventType.TIMER_SCHEDULED)
    [fired] = of_type(events, EventType.TIMER_FIRED)
    assert fired.payload["scheduled"] == scheduled.seq
    assert fired.timestamp >= scheduled.payload["fire_at"]


async def test_a_timer_due_while_no_worker_runs_fires_when_one_starts(db_url: str) -> None:
    clock = VirtualClock(auto_skip=False)  # time passes only when the test says
    async with loom.Database(db_url, clock=clock) as db:
        await db.migrate_up()
        handle = await db.start_workflow(SigNap, workflow_input={"seconds": 3600})

        first = worker(db)
        async with first:
            await eventually(lambda: parked_waiting_for(handle, EventType.TIMER_SCHEDULED))
            # Parked: the worker holds neither a lease nor a slot for the sleeping workflow.
            assert first.in_flight == 0
        [scheduled] = of_type(await handle.events(), EventType.TIMER_SCHEDULED)
        fire_at = scheduled.payload["fire_at"]
        assert fire_at == scheduled.timestamp + 3600

        # The timer falls due with no worker at all: the passing of time is the scenario here.
        await clock.advance(timedelta(hours=2))
        assert clock.now() > fire_at
        assert await handle.status() == loom.WorkflowStatus.RUNNING
        assert not of_type(await handle.events(), EventType.TIMER_FIRED)

        async with worker(db):
            state = await handle.result(timeout=10)
        assert state["after"] - state["before"] >= 3600
        [fired] = of_type(await handle.events(), EventType.TIMER_FIRED)
        assert fired.payload["scheduled"] == scheduled.seq
        assert fired.timestamp == clock.now() > fire_at  # it fires when a worker sees it due


async def test_sleep_until_a_naive_datetime_fails_the_workflow(db: loom.Database) -> None:
    handle = await db.start_workflow(SigNaiveUntil)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)
    cause = info.value.cause
    assert cause["type"] == "ConfigurationError"
    assert cause["step"] == "nap_until"
    assert "aware datetime" in cause["message"]
    assert await handle.status() == loom.WorkflowStatus.FAILED
    assert not of_type(await handle.events(), EventType.TIMER_SCHEDULED)
