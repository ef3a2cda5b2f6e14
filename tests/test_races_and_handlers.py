"""Cancelling a durable call from workflow code, ``@loom.signal`` handlers and
``ctx.wait_until``: what a user sees on both backends, with and without the worker's cache, and
that every history they record replays from any point."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

import loom
from loom import EventType
from loom.web.app import create_app
from support import eventually, of_type, worker
from support.replay import assert_replays_from_every_prefix

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

STOPPED: Counter[str] = Counter()  # activities that saw their cancellation, by key
STARTED: Counter[str] = Counter()


@loom.activity(name="race_slow", timeout_seconds=30)
async def slow(key: str) -> str:
    STARTED[key] += 1
    try:
        await asyncio.sleep(20)
    except asyncio.CancelledError:
        STOPPED[key] += 1
        raise
    return "slow"


@loom.activity(name="race_quick")
async def quick(value: str) -> str:
    return value


@loom.activity(name="race_broken")
async def broken() -> None:
    raise ValueError("out of stock")


@loom.workflow(name="race_SignalOrTimer")
class SignalOrTimer(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """The first of a signal and a timer wins; the loser is withdrawn and the step goes on."""

    @loom.step
    async def race(self, ctx: Ctx) -> None:
        answer = asyncio.ensure_future(ctx.wait_for_signal("answer"))
        timer = asyncio.ensure_future(ctx.sleep(ctx.input["seconds"]))
        done, pending = await asyncio.wait([answer, timer], return_when=asyncio.FIRST_COMPLETED)
        for loser in pending:
            loser.cancel()
        await ctx.state.set("winner", "signal" if answer in done else "timer")
        if answer in done:
            await ctx.state.set("answer", answer.result())

    @loom.step
    async def later(self, ctx: Ctx) -> None:
        # A signal sent after its wait was withdrawn stays buffered for a later wait.
        if ctx.input.get("wait_again"):
            await ctx.state.set("later", await ctx.wait_for_signal("answer"))


@loom.workflow(name="race_TaskGroup")
class FailFast(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """A TaskGroup cancels the slow sibling when one activity fails; the step catches it."""

    @loom.step
    async def both(self, ctx: Ctx) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(ctx.activity(slow, ctx.input["key"]))
                group.create_task(ctx.activity(broken))
        except* loom.ActivityFailedError as failed:
            await ctx.state.set("failed", [e.error_message for e in failed.exceptions])
        await ctx.state.set("after", await ctx.activity(quick, "went on"))


@loom.workflow(name="race_Approval")
class Approval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Wait until approved or the deadline passes, counting the reminders meanwhile."""

    @loom.signal("approve")
    async def approve(self, ctx: Ctx, payload: Any) -> None:
        await ctx.state.set("approved_by", payload["by"])

    @loom.signal("remind")
    async def remind(self, ctx: Ctx, payload: Any) -> None:
        await ctx.state.update(reminders=lambda n: (n or 0) + 1)

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        try:
            await ctx.wait_until(
                lambda: "approved_by" in ctx.state, timeout=ctx.input["hours"] * 3600
            )
            await ctx.state.set("outcome", "approved")
        except TimeoutError:
            await ctx.state.set("outcome", "expired")


def _replays(
    workflow: type[loom.Workflow[Any, Any]], handle_id: str, events: list[loom.Event]
) -> None:
    assert_replays_from_every_prefix(workflow, handle_id, events, times_from_the_clock=True)


CACHE = pytest.mark.parametrize("cache_size", [0, 1000], ids=["replayed", "cached"])


@CACHE
async def test_a_signal_beats_a_timer_and_the_timer_is_withdrawn(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(
        SignalOrTimer, workflow_input={"seconds": 3600, "wait_again": True}
    )
    async with worker(db, cache_size=cache_size):
        await eventually(lambda: _has(handle, EventType.SIGNAL_WAIT_STARTED))
        await handle.signal("answer", "yes")
        await eventually(lambda: _has(handle, EventType.TIMER_CANCELED))
        await handle.signal("answer", "again")
        state = await handle.result(timeout=10)
    assert state == {"winner": "signal", "answer": "yes", "later": "again"}
    events = await handle.events()
    [timer] = of_type(events, EventType.TIMER_SCHEDULED)
    [withdrawn] = of_type(events, EventType.TIMER_CANCELED)
    assert withdrawn.payload == {"scheduled": timer.seq}
    assert not of_type(events, EventType.TIMER_FIRED)
    _replays(SignalOrTimer, handle.workflow_id, events)


@CACHE
async def test_a_timer_beats_a_signal_and_the_wait_is_withdrawn(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(
        SignalOrTimer, workflow_input={"seconds": 0.2, "wait_again": True}
    )
    async with worker(db, cache_size=cache_size):
        await eventually(lambda: _has(handle, EventType.SIGNAL_WAIT_CANCELED))
        # The withdrawn wait takes nothing: this signal goes to the next step's wait.
        await handle.signal("answer", "late")
        state = await handle.result(timeout=10)
    assert state == {"winner": "timer", "later": "late"}
    events = await handle.events()
    wait, second_wait = of_type(events, EventType.SIGNAL_WAIT_STARTED)
    [withdrawn] = of_type(events, EventType.SIGNAL_WAIT_CANCELED)
    assert withdrawn.payload == {"scheduled": wait.seq, "name": "answer"}
    received = of_type(events, EventType.SIGNAL_RECEIVED)
    assert [e.payload["scheduled"] for e in received] == [second_wait.seq]
    _replays(SignalOrTimer, handle.workflow_id, events)


@CACHE
async def test_a_task_group_stops_the_slow_sibling_of_a_failed_activity(
    db: loom.Database, cache_size: int, request: pytest.FixtureRequest
) -> None:
    key = request.node.name
    handle = await db.start_workflow(FailFast, workflow_input={"key": key})
    async with worker(db, cache_size=cache_size):
        state = await handle.result(timeout=10)
    assert state == {"failed": ["out of stock"], "after": "went on"}
    events = await handle.events()
    [canceled] = of_type(events, EventType.ACTIVITY_CANCELED)
    slow_seq = next(
        e.seq
        for e in of_type(events, EventType.ACTIVITY_SCHEDULED)
        if e.payload["name"] == "race_slow"
    )
    assert canceled.payload == {"scheduled": slow_seq, "name": "race_slow"}
    # The running attempt was told to stop (it saw CancelledError), and no outcome of it
    # was recorded.
    assert STARTED[key] >= 1
    await eventually(lambda: STOPPED[key] == STARTED[key])
    assert not [
        e
        for e in events
        if e.payload.get("scheduled") == slow_seq
        and e.type in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED)
    ]
    _replays(FailFast, handle.workflow_id, events)


@CACHE
async def test_handlers_apply_signals_and_wait_until_resumes_the_step(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(Approval, workflow_input={"hours": 48})
    async with worker(db, cache_size=cache_size):
        await eventually(lambda: _has(handle, EventType.TIMER_SCHEDULED))
        await handle.signal("remind", {})
        await handle.signal("remind", {})
        await eventually(lambda: _state_has(handle, "reminders", 2))
        assert await handle.status() is loom.WorkflowStatus.RUNNING
        await handle.signal("approve", {"by": "alice"})
        state = await handle.result(timeout=10)
    assert state == {"reminders": 2, "approved_by": "alice", "outcome": "approved"}
    events = await handle.events()
    handled = of_type(events, EventType.SIGNAL_RECEIVED)
    assert [(e.payload["name"], e.payload["scheduled"]) for e in handled] == [
        ("remind", None),
        ("remind", None),
        ("approve", None),
    ]
    assert of_type(events, EventType.TIMER_CANCELED)  # the 48 hours were withdrawn
    _replays(Approval, handle.workflow_id, events)


async def test_wait_until_times_out(db: loom.Database) -> None:
    handle = await db.start_workflow(Approval, workflow_input={"hours": 0.1 / 3600})
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state == {"outcome": "expired"}
    assert of_type(await handle.events(), EventType.TIMER_FIRED)


async def test_a_handler_signal_sent_before_the_workflow_runs_is_applied(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(Approval, workflow_input={"hours": 48})
    await handle.signal("approve", {"by": "early bird"})
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state == {"approved_by": "early bird", "outcome": "approved"}


# ---------------------------------------------------------------------- misuse, clearly


@loom.workflow(name="race_HandlerAwaits")
class HandlerAwaits(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.signal("go")
    async def go(self, ctx: Ctx, payload: Any) -> None:
        await ctx.activity(quick, "no")

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_until(lambda: False)


@loom.workflow(name="race_HandlerRaises")
class HandlerRaises(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.signal
    def go(self, ctx: Ctx, payload: Any) -> None:
        raise ValueError(f"bad payload {payload!r}")

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_until(lambda: False)


@loom.workflow(name="race_WaitsOnHandled")
class WaitsOnHandled(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.signal("go")
    def go(self, ctx: Ctx, payload: Any) -> None:
        pass

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("go")


@loom.workflow(name="race_NothingCanChange")
class NothingCanChange(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_until(lambda: "never" in ctx.state)


@pytest.mark.parametrize(
    ("workflow", "signal", "error_type", "message"),
    [
        (HandlerAwaits, "go", "ConfigurationError", "waited on a durable call"),
        (HandlerRaises, "go", "ValueError", "bad payload 7"),
        (WaitsOnHandled, None, "ConfigurationError", "taken by the @loom.signal handler go()"),
        (NothingCanChange, None, "WorkflowSandboxError", "nothing can make true"),
    ],
    ids=["handler awaits", "handler raises", "wait on a handled signal", "stuck condition"],
)
async def test_misuse_fails_the_workflow_saying_why(
    db: loom.Database, workflow: Any, signal: str | None, error_type: str, message: str
) -> None:
    handle = await db.start_workflow(workflow)
    if signal:
        await handle.signal(signal, 7)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError):
            await handle.result(timeout=10)
    record = await handle.describe()
    assert record.error is not None
    assert record.error["type"] == error_type
    assert message in record.error["message"]


def test_a_malformed_handler_fails_at_import() -> None:
    with pytest.raises(loom.DefinitionError, match=r"exactly \(self, ctx, payload\)"):

        @loom.workflow(name="race_BadHandler")
        class BadHandler(loom.Workflow[Any, Any]):
            @loom.signal("x")
            def x(self, ctx: Any) -> None: ...

            @loom.step
            async def s(self, ctx: Any) -> None: ...

    with pytest.raises(loom.DefinitionError, match="both handle signal 'x'"):

        @loom.workflow(name="race_TwoHandlers")
        class TwoHandlers(loom.Workflow[Any, Any]):
            @loom.signal("x")
            def a(self, ctx: Any, payload: Any) -> None: ...

            @loom.signal("x")
            def b(self, ctx: Any, payload: Any) -> None: ...

            @loom.step
            async def s(self, ctx: Any) -> None: ...


async def _has(handle: loom.WorkflowHandle[Any], kind: EventType) -> bool:
    return bool(of_type(await handle.events(), kind))


async def _state_has(handle: loom.WorkflowHandle[Any], key: str, value: Any) -> bool:
    return (await handle.state()).get(key) == value


# ------------------------------------------------------------------ seen from the outside


async def test_the_cli_and_the_dashboard_show_withdrawals_and_handlers(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    handle = await db.start_workflow(Approval, workflow_input={"hours": 48})
    await handle.signal("remind", {})
    await handle.signal("approve", {"by": "dora"})
    async with worker(db):
        await handle.result(timeout=10)

    loom_cmd = Path(sys.executable).parent / "loom"
    env = {"PATH": "/usr/bin:/bin", "LOOM_DATABASE_URL": db_url}
    shown = await asyncio.to_thread(
        subprocess.run,
        [str(loom_cmd), "inspect", handle.workflow_id, "--json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    [step] = json.loads(shown.stdout)["steps"]
    assert (step["step"], step["withdrawn"], step["signals_handled"]) == ("wait", 1, 2)
    table = (
        await asyncio.to_thread(
            subprocess.run,
            [str(loom_cmd), "inspect", handle.workflow_id],
            env={**env, "COLUMNS": "200"},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
    ).stdout
    assert "1 withdrawn" in table and "2 signal(s) handled" in table

    app = create_app(database=db, poll_interval=0.05)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        definitions = (await client.get("/api/definitions")).json()["definitions"]
        [approval] = [d for d in definitions if d["name"] == "race_Approval"]
        assert approval["signal_handlers"] == {"approve": "approve", "remind": "remind"}
        history = (await client.get(f"/api/workflows/{handle.workflow_id}/events")).json()
        kinds = [e["type"] for e in history["events"]]
        assert "TIMER_CANCELED" in kinds
