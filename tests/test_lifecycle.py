"""A workflow's life seen through the client: start (idempotent), status, state, events, list,
stats, cancel and retry, with real workers on a SQLite file."""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import EventType, WorkflowStatus
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

# Executions per key: what really ran, whatever the history says.
calls: collections.Counter[str] = collections.Counter()
# Per-key gates that let a test hold an activity in progress, and learn when it began.
gates: dict[str, asyncio.Event] = {}
began: dict[str, asyncio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Each test (and each backend's run of it) counts its own executions."""
    calls.clear()
    gates.clear()
    began.clear()
    repaired.clear()


interrupted: set[str] = set()
# Keys whose fragile activity is allowed to succeed.
repaired: set[str] = set()


def steps_started(events: list[loom.Event]) -> list[str]:
    return [e.payload["step"] for e in of_type(events, EventType.STEP_STARTED)]


def gate(key: str) -> tuple[asyncio.Event, asyncio.Event]:
    """(opens the activity, set once the activity began) for ``key``."""
    gates[key] = asyncio.Event()
    began[key] = asyncio.Event()
    return gates[key], began[key]


# ------------------------------------------------------------------------ definitions


@loom.activity(name="life_count")
async def life_count(key: str) -> int:
    calls[key] += 1
    return calls[key]


@loom.activity(name="life_gated", timeout_seconds=30)
async def life_gated(key: str) -> str:
    calls[key] += 1
    began[key].set()
    try:
        await gates[key].wait()
    except asyncio.CancelledError:
        interrupted.add(key)
        raise
    return f"{key} done"


@loom.activity(name="life_fragile")
async def life_fragile(key: str) -> str:
    calls[key] += 1
    if key not in repaired:
        raise RuntimeError(f"{key} is broken")
    return "repaired"


@loom.workflow(name="life_Echo")
class LifeEcho(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def echo(self, ctx: Ctx) -> None:
        await ctx.state.set("echo", ctx.input)


@loom.workflow(name="life_Approval")
class LifeApproval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", True)

    @loom.step
    async def approval(self, ctx: Ctx) -> None:
        await ctx.state.set("decision", await ctx.wait_for_signal("approve"))

    @loom.step
    async def after(self, ctx: Ctx) -> None:
        await ctx.state.set("count", await ctx.activity(life_count, ctx.input["key"]))


@loom.workflow(name="life_Charge")
class LifeCharge(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        await ctx.state.set("phase", "charging")
        receipt = await ctx.activity(life_gated, ctx.input["key"])
        await ctx.state.set("receipt", receipt)
        await ctx.state.set("phase", "charged")

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        await ctx.state.set("shipped", await ctx.activity(life_count, ctx.input["key"] + ":ship"))


@loom.workflow(name="life_Repairable")
class LifeRepairable(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def first(self, ctx: Ctx) -> None:
        await ctx.state.set("first", await ctx.activity(life_count, ctx.input["key"] + ":first"))

    @loom.step(name="fragile_step")
    async def fragile(self, ctx: Ctx) -> None:
        await ctx.state.set("fragile", await ctx.activity(life_fragile, ctx.input["key"]))

    @loom.step
    async def last(self, ctx: Ctx) -> None:
        await ctx.state.set("last", await ctx.activity(life_count, ctx.input["key"] + ":last"))


@loom.workflow(name="life_Broken")
class LifeBroken(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def explode(self, ctx: Ctx) -> None:
        raise ValueError("bad order")


# ----------------------------------------------------------------------------- start


async def test_start_with_the_same_id_and_input_returns_the_same_workflow(
    db: loom.Database,
) -> None:
    first = await db.start_workflow(
        LifeEcho, workflow_input={"n": 1, "tags": ["a"]}, workflow_id="life-order-1"
    )
    again = await db.start_workflow(
        LifeEcho, workflow_input={"tags": ["a"], "n": 1}, workflow_id="life-order-1"
    )
    assert first.workflow_id == again.workflow_id == "life-order-1"
    [summary] = await db.list_workflows()
    assert summary.workflow_id == "life-order-1"
    assert of_type(await again.events(), EventType.WORKFLOW_STARTED) == (await first.events())[:1]

    async with worker(db):
        assert await again.result(timeout=10) == {"echo": {"n": 1, "tags": ["a"]}}
    # Starting it again once finished still names the same workflow; nothing runs twice.
    repeat = await db.start_workflow(
        LifeEcho, workflow_input={"n": 1, "tags": ["a"]}, workflow_id="life-order-1"
    )
    assert await repeat.status() == WorkflowStatus.COMPLETED
    assert len(of_type(await repeat.events(), EventType.STEP_STARTED)) == 1


async def test_start_with_the_same_id_and_another_input_is_refused(db: loom.Database) -> None:
    await db.start_workflow(LifeEcho, workflow_input={"n": 1}, workflow_id="life-order-2")
    with pytest.raises(loom.WorkflowAlreadyExistsError) as info:
        await db.start_workflow(LifeEcho, workflow_input={"n": 2}, workflow_id="life-order-2")
    assert info.value.workflow_id == "life-order-2"
    assert "different input" in str(info.value)
    with pytest.raises(loom.WorkflowAlreadyExistsError, match="life_Echo"):
        await db.start_workflow(LifeBroken, workflow_input={"n": 1}, workflow_id="life-order-2")
    [summary] = await db.list_workflows()
    assert summary.name == "life_Echo"
    stored = await db.get_workflow("life-order-2").events()
    assert stored[0].payload["input"] == {"n": 1}


async def test_get_workflow_does_no_io_and_unknown_ids_raise(
    db: loom.Database, db_url: str
) -> None:
    closed = loom.Database(db_url)  # never opened: any I/O would raise StoreError
    handle = closed.get_workflow("life-nobody")
    assert handle.workflow_id == "life-nobody"
    with pytest.raises(loom.StoreError):
        await handle.status()

    unknown = db.get_workflow("life-nobody")
    calls_that_read: list[Callable[[], Awaitable[Any]]] = [
        unknown.status,
        unknown.state,
        unknown.events,
        unknown.describe,
        lambda: unknown.result(timeout=1),
        lambda: unknown.signal("approve", 1),
        lambda: unknown.cancel("why"),
        unknown.retry,
    ]
    for call in calls_that_read:
        with pytest.raises(loom.WorkflowNotFoundError, match="life-nobody"):
            await call()
    assert await db.list_workflows() == []


# ---------------------------------------------------------------------------- cancel


async def test_cancel_a_workflow_waiting_for_a_signal(db: loom.Database) -> None:
    handle = await db.start_workflow(LifeApproval, workflow_input={"key": "cancel-wait"})
    async with worker(db):

        async def parked() -> bool:
            record = await handle.describe()
            events = await handle.events()
            return not record.leased and bool(of_type(events, EventType.SIGNAL_WAIT_STARTED))

        await eventually(parked)
        outcome = await handle.cancel("customer changed their mind")
        assert outcome == "CANCELED"

        with pytest.raises(loom.WorkflowCanceledError) as info:
            await handle.result(timeout=5)
        assert info.value.reason == "customer changed their mind"
        assert "customer changed their mind" in str(info.value)
        with pytest.raises(loom.WorkflowNotRunningError):
            await handle.signal("approve", "too late")

    assert await handle.status() == WorkflowStatus.CANCELED
    events = await handle.events()
    assert events[-1].type is EventType.WORKFLOW_CANCELED
    assert events[-1].payload["reason"] == "customer changed their mind"
    assert steps_started(events) == ["prepare", "approval"]
    assert calls["cancel-wait"] == 0
    assert await handle.state() == {"prepared": True}


async def test_cancel_from_another_process_takes_effect_at_the_next_write(
    db: loom.Database,
) -> None:
    """With every activity's scheduling written before it runs (``inline_window=0``), a cancel
    requested elsewhere ends the workflow at the holder's next write: the result of the activity
    running meanwhile is discarded and no further step runs."""
    key = "cancel-discard"
    opened, started = gate(key)
    handle = await db.start_workflow(LifeCharge, workflow_input={"key": key})
    async with loom.Worker(db, poll_interval=0.05, inline_window=0), loom.Database(db.url) as other:
        await asyncio.wait_for(started.wait(), 5)
        outcome = await other.get_workflow(handle.workflow_id).cancel("stop")
        assert outcome == "REQUESTED"  # a worker holds it: canceled at its next write
        opened.set()  # the activity now returns a result that must be thrown away

        with pytest.raises(loom.WorkflowCanceledError):
            await handle.result(timeout=5)

    assert await handle.status() == WorkflowStatus.CANCELED
    events = await handle.events()
    assert events[-1].type is EventType.WORKFLOW_CANCELED
    assert len(of_type(events, EventType.WORKFLOW_CANCELED)) == 1
    assert not of_type(events, EventType.ACTIVITY_COMPLETED)
    assert steps_started(events) == ["charge"]
    state = await handle.state()
    assert state == {"phase": "charging"}
    # No further step ran: the next step's activity never executed.
    assert calls[key + ":ship"] == 0


async def test_cancel_in_the_workers_process_interrupts_its_activity_at_once(
    db: loom.Database,
) -> None:
    """The worker hears of a cancel made in its own process at once, even while its short
    activities run inline (not yet written): what the workflow had decided is kept, the running
    activity is interrupted, nothing after it runs."""
    key = "cancel-inline"
    _, started = gate(key)  # never opened
    handle = await db.start_workflow(LifeCharge, workflow_input={"key": key})
    async with loom.Worker(db, poll_interval=0.05, lease_seconds=60, inline_window=30):
        await asyncio.wait_for(started.wait(), 5)
        assert await handle.cancel("stop now") == "REQUESTED"
        with pytest.raises(loom.WorkflowCanceledError, match="stop now"):
            await handle.result(timeout=5)

    assert key in interrupted
    events = await handle.events()
    assert [e.type for e in events] == [
        EventType.WORKFLOW_STARTED,
        EventType.STEP_STARTED,
        EventType.STATE_SET,
        EventType.ACTIVITY_SCHEDULED,
        EventType.WORKFLOW_CANCELED,
    ]
    assert await handle.state() == {"phase": "charging"}
    assert calls[key + ":ship"] == 0


async def test_cancel_from_another_process_interrupts_an_activity_in_progress(
    db: loom.Database,
) -> None:
    key = "cancel-interrupt"
    _, started = gate(key)  # never opened: the activity would wait forever
    handle = await db.start_workflow(LifeCharge, workflow_input={"key": key})
    async with worker(db, lease_seconds=0.6), loom.Database(db.url) as other:
        await asyncio.wait_for(started.wait(), 5)
        await other.get_workflow(handle.workflow_id).cancel("taking too long")
        with pytest.raises(loom.WorkflowCanceledError, match="taking too long"):
            await handle.result(timeout=5)

    assert key in interrupted
    events = await handle.events()
    assert events[-1].type is EventType.WORKFLOW_CANCELED
    assert not of_type(events, EventType.ACTIVITY_COMPLETED)
    assert calls[key] == 1
    assert calls[key + ":ship"] == 0


async def test_cancel_a_finished_workflow_is_refused(db: loom.Database) -> None:
    handle = await db.start_workflow(LifeEcho, workflow_input={"n": 3})
    async with worker(db):
        await handle.result(timeout=10)
    with pytest.raises(loom.WorkflowNotRunningError) as info:
        await handle.cancel("late")
    assert "COMPLETED" in str(info.value)
    assert info.value.workflow_id == handle.workflow_id
    assert (await handle.events())[-1].type is EventType.WORKFLOW_COMPLETED


# ----------------------------------------------------------------------------- retry


async def test_retry_resumes_a_failed_workflow_at_the_failed_step(db: loom.Database) -> None:
    key = "retry-me"
    handle = await db.start_workflow(LifeRepairable, workflow_input={"key": key})
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)
    assert info.value.cause["step"] == "fragile_step"
    assert f"{key} is broken" in info.value.cause["message"]
    assert await handle.state() == {"first": 1}

    # A retry is only for FAILED workflows; fix the cause, then retry.
    repaired.add(key)
    await handle.retry()
    assert await handle.status() == WorkflowStatus.RUNNING
    async with worker(db):
        state = await handle.result(timeout=10)

    assert state == {"first": 1, "fragile": "repaired", "last": 1}
    assert calls[key + ":first"] == 1  # the completed step did not run again
    assert calls[key] == 2
    assert calls[key + ":last"] == 1

    events = await handle.events()
    kinds = [e.type for e in events]
    failed_at = kinds.index(EventType.WORKFLOW_FAILED)
    retried_at = kinds.index(EventType.WORKFLOW_RETRIED)
    assert failed_at < retried_at < kinds.index(EventType.WORKFLOW_COMPLETED)
    assert steps_started(events) == ["first", "fragile_step", "fragile_step", "last"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    with pytest.raises(loom.WorkflowNotRunningError):
        await handle.retry()


async def test_retry_of_a_running_workflow_is_refused(db: loom.Database) -> None:
    handle = await db.start_workflow(LifeApproval, workflow_input={"key": "retry-running"})
    with pytest.raises(loom.WorkflowNotRunningError, match="RUNNING"):
        await handle.retry()


# ------------------------------------------------------------------------------ state


async def test_state_changes_are_visible_while_the_step_still_runs(db: loom.Database) -> None:
    key = "visible"
    opened, started = gate(key)
    handle = await db.start_workflow(LifeCharge, workflow_input={"key": key})
    async with worker(db):
        await asyncio.wait_for(started.wait(), 5)

        async def charging() -> bool:
            return await handle.state() == {"phase": "charging"}

        await eventually(charging)
        record = await handle.describe()
        assert record.status is WorkflowStatus.RUNNING
        assert record.current_step == "charge"
        assert of_type(await handle.events(), EventType.STATE_SET)

        opened.set()
        state = await handle.result(timeout=10)
    assert state == {
        "phase": "charged",
        "receipt": f"{key} done",
        "shipped": 1,
    }


# ------------------------------------------------------------------------ list, stats


async def test_list_workflows_and_stats(db: loom.Database) -> None:
    before = time.time()
    done = await db.start_workflow(LifeEcho, workflow_input={"n": 1}, workflow_id="life-a")
    broken = await db.start_workflow(LifeBroken, workflow_input={"n": 2}, workflow_id="life-b")
    waiting = await db.start_workflow(
        LifeApproval, workflow_input={"key": "listed"}, workflow_id="life-c"
    )
    async with worker(db):
        await done.result(timeout=10)
        with pytest.raises(loom.WorkflowFailedError):
            await broken.result(timeout=10)

        async def parked() -> bool:
            return bool(of_type(await waiting.events(), EventType.SIGNAL_WAIT_STARTED))

        await eventually(parked)

    summaries = await db.list_workflows()
    assert [s.workflow_id for s in summaries] == ["life-c", "life-b", "life-a"]  # newest first
    by_id = {s.workflow_id: s for s in summaries}
    assert by_id["life-a"].name == "life_Echo"
    assert by_id["life-a"].version == "1.0.0"
    assert by_id["life-a"].status is WorkflowStatus.COMPLETED
    assert by_id["life-b"].status is WorkflowStatus.FAILED
    assert by_id["life-c"].status is WorkflowStatus.RUNNING
    assert by_id["life-c"].current_step == "approval"
    for summary in summaries:
        assert isinstance(summary.created_at, datetime)
        assert summary.created_at.tzinfo is not None
        assert before <= summary.created_at.timestamp() <= summary.updated_at.timestamp()
        assert summary.updated_at.timestamp() <= time.time()
    assert by_id["life-a"].updated_at > by_id["life-a"].created_at

    assert [s.workflow_id for s in await db.list_workflows(status="COMPLETED")] == ["life-a"]
    assert [s.workflow_id for s in await db.list_workflows(status=WorkflowStatus.FAILED)] == [
        "life-b"
    ]
    assert [s.workflow_id for s in await db.list_workflows(status="running")] == ["life-c"]
    assert await db.list_workflows(status="CANCELED") == []
    assert len(await db.list_workflows(limit=2)) == 2
    with pytest.raises(loom.ConfigurationError, match="unknown status"):
        await db.list_workflows(status="SLEEPING")

    stats = await db.stats()
    assert stats.by_status == {"COMPLETED": 1, "FAILED": 1, "RUNNING": 1}
    assert stats.waiting == 1
    assert stats.events == sum([len(await h.events()) for h in (done, broken, waiting)])

    await waiting.cancel()
    assert (await db.stats()).by_status == {"COMPLETED": 1, "FAILED": 1, "CANCELED": 1}


# ------------------------------------------------------------------- default database


async def test_workflow_start_uses_the_default_database(in_tmp_cwd: Path) -> None:
    assert not (in_tmp_cwd / "loom.db").exists()
    handle = await LifeEcho.start({"n": 7})
    try:
        assert (in_tmp_cwd / "loom.db").is_file()
        with sqlite3.connect(in_tmp_cwd / "loom.db") as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert {"workflows", "events", "signals"} <= tables
            [(status,)] = conn.execute(
                "SELECT status FROM workflows WHERE id = ?", (handle.workflow_id,)
            ).fetchall()
        assert status == "RUNNING"
        assert await handle.status() == WorkflowStatus.RUNNING

        # loom.run_once() without a database drives the same default database.
        assert await loom.run_once() is True
        assert await handle.result(timeout=5) == {"echo": {"n": 7}}
        assert await loom.run_once() is False
    finally:
        default = await loom.client.default_database()
        await default.close()
