"""Values that cannot be stored are refused where they are produced, before any side effect."""

from __future__ import annotations

import collections
from typing import Any

import pytest

import loom
from loom import EventType

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

calls: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Each test (and each backend's run of it) counts its own executions."""
    calls.clear()


def worker(db: loom.Database) -> loom.Worker:
    return loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10)


def of_type(events: list[loom.Event], kind: EventType) -> list[loom.Event]:
    return [e for e in events if e.type is kind]


@loom.activity(name="pay_record")
async def pay_record(value: Any) -> str:
    calls["pay_record"] += 1
    return "recorded"


@loom.workflow(name="pay_BadArgument")
class PayBadArgument(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="send")
    async def send(self, ctx: Ctx) -> None:
        await ctx.state.set("before", True)
        await ctx.activity(pay_record, object())


@loom.workflow(name="pay_CaughtArgument")
class PayCaughtArgument(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def send(self, ctx: Ctx) -> None:
        try:
            await ctx.activity(pay_record, {"when": object()})
        except loom.PayloadError as exc:
            await ctx.state.set("refused", str(exc))
        await ctx.state.set("fallback", await ctx.activity(pay_record, {"when": "now"}))


@loom.workflow(name="pay_BadState")
class PayBadState(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="remember")
    async def remember(self, ctx: Ctx) -> None:
        await ctx.state.set("fine", 1)
        await ctx.state.set("handle", object())


@loom.workflow(name="pay_BadUpdate")
class PayBadUpdate(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="remember")
    async def remember(self, ctx: Ctx) -> None:
        await ctx.state.update(fine=lambda _: 1, handle=lambda _: object())


async def test_non_json_activity_argument_fails_before_the_activity_runs(
    db: loom.Database,
) -> None:
    runs_before = calls["pay_record"]
    handle = await db.start_workflow(PayBadArgument)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)

    assert calls["pay_record"] == runs_before  # the activity never executed
    cause = info.value.cause
    assert cause["type"] == "PayloadError"
    assert cause["step"] == "send"
    assert "'pay_record'" in cause["message"]
    assert "cannot be stored" in cause["message"]
    events = await handle.events()
    assert not of_type(events, EventType.ACTIVITY_SCHEDULED)
    assert events[-1].type is EventType.WORKFLOW_FAILED
    assert await handle.state() == {"before": True}


async def test_payload_error_is_raised_at_the_call_site_and_can_be_caught(
    db: loom.Database,
) -> None:
    runs_before = calls["pay_record"]
    handle = await db.start_workflow(PayCaughtArgument)
    async with worker(db):
        state = await handle.result(timeout=10)
    assert "'pay_record'" in state["refused"]
    assert state["fallback"] == "recorded"
    assert calls["pay_record"] == runs_before + 1
    [scheduled] = of_type(await handle.events(), EventType.ACTIVITY_SCHEDULED)
    assert scheduled.payload["args"] == [{"when": "now"}]


@pytest.mark.parametrize("workflow", [PayBadState, PayBadUpdate], ids=["set", "update"])
async def test_non_json_state_value_is_refused(
    db: loom.Database, workflow: type[loom.Workflow[Any, Any]]
) -> None:
    handle = await db.start_workflow(workflow)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)
    cause = info.value.cause
    assert cause["type"] == "PayloadError"
    assert cause["step"] == "remember"
    assert "'handle'" in cause["message"]
    assert "handle" not in await handle.state()
    assert not of_type(await handle.events(), EventType.STATE_UPDATE)


async def test_non_json_workflow_input_is_refused_and_nothing_is_stored(
    db: loom.Database,
) -> None:
    with pytest.raises(loom.PayloadError, match="input") as info:
        await db.start_workflow(PayBadArgument, workflow_input={"file": object()})
    assert "JSON" in str(info.value)
    with pytest.raises(loom.PayloadError, match="initial state"):
        await db.start_workflow(
            PayBadArgument, workflow_input={"n": 1}, initial_state={"lock": object()}
        )
    assert await db.list_workflows() == []
    assert (await db.stats()).events == 0


async def test_non_json_signal_payload_is_refused(db: loom.Database) -> None:
    handle = await db.start_workflow(PayBadArgument)
    with pytest.raises(loom.PayloadError, match="'go'"):
        await handle.signal("go", object())
    assert (await db.stats()).signals_pending == 0
