"""Continue-as-new: a run ends and a fresh one begins under the same workflow id, with a new
run id and an empty history; the handle follows the chain, earlier runs stay readable, buffered
signals carry over; on both backends, with and without the worker's cache."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import loom
from loom import EventType, WorkflowStatus
from loom.web.app import create_app
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.activity(name="can_bill")
async def bill(month: int) -> str:
    return f"invoice {month}"


@loom.workflow(name="can_Subscription")
class Subscription(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Bills one month per run, then continues as new until the last month."""

    @loom.step
    async def month(self, ctx: Ctx) -> None:
        month = ctx.input["month"]
        invoice = await ctx.activity(bill, month)
        total = ctx.state.get("total", 0) + 1
        await ctx.state.set("total", total)
        await ctx.state.set("last", invoice)
        if month < ctx.input["months"]:
            if ctx.input.get("wait"):
                await ctx.state.set("note", await ctx.wait_for_signal("note"))
            await ctx.continue_as_new(
                {**ctx.input, "month": month + 1}, initial_state=ctx.state.to_dict()
            )


CACHE = pytest.mark.parametrize("cache_size", [0, 1000], ids=["replayed", "cached"])


@CACHE
async def test_a_workflow_continues_as_new_and_the_handle_follows_the_chain(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(
        Subscription, workflow_input={"month": 1, "months": 4}, workflow_id="sub-1"
    )
    async with worker(db, cache_size=cache_size):
        state = await handle.result(timeout=15)
    assert state == {"total": 4, "last": "invoice 4"}
    runs = await handle.runs()
    assert [r.number for r in runs] == [1, 2, 3, 4]
    assert [r.status for r in runs] == ["CONTINUED_AS_NEW"] * 3 + ["COMPLETED"]
    assert len({r.run_id for r in runs}) == 4
    record = await handle.describe()
    assert record.run_id == runs[-1].run_id
    # The current run's history starts afresh: one month's worth, not four.
    events = await handle.events()
    assert events[0].type is EventType.WORKFLOW_STARTED
    assert events[0].payload["input"]["month"] == 4
    assert events[0].payload["continued_from"] == runs[2].run_id
    assert len(of_type(events, EventType.ACTIVITY_COMPLETED)) == 1
    for run in runs[:3]:
        earlier = await handle.events(run_id=run.run_id)
        assert earlier[-1].type is EventType.WORKFLOW_CONTINUED_AS_NEW
        assert len(earlier) == run.events
    # One row per workflow id.
    assert [w.workflow_id for w in await db.list_workflows()] == ["sub-1"]


async def test_buffered_signals_carry_over_to_the_next_run(db: loom.Database) -> None:
    handle = await db.start_workflow(
        Subscription, workflow_input={"month": 1, "months": 3, "wait": True}
    )
    await handle.signal("note", "first")
    await handle.signal("note", "second")
    async with worker(db):
        state = await handle.result(timeout=15)
    assert state["note"] == "second"
    assert [r.status for r in await handle.runs()][-1] == "COMPLETED"


async def test_an_unknown_run_is_refused_clearly(db: loom.Database) -> None:
    handle = await db.start_workflow(Subscription, workflow_input={"month": 1, "months": 1})
    with pytest.raises(loom.ConfigurationError, match="has no run 'nope'"):
        await handle.events(run_id="nope")
    async with worker(db):
        await handle.result(timeout=15)
    [only] = await handle.runs()
    assert (only.number, only.status) == (1, "COMPLETED")
    assert await handle.events(run_id=only.run_id) == await handle.events()


async def test_a_copied_database_keeps_the_earlier_runs(db: loom.Database, tmp_path: Any) -> None:
    from loom.transfer import copy_database

    handle = await db.start_workflow(
        Subscription, workflow_input={"month": 1, "months": 2}, workflow_id="sub-copy"
    )
    async with worker(db):
        await handle.result(timeout=15)
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    report = await copy_database(db.url, target)
    assert report.verified
    async with loom.Database(target) as copied:
        runs = await copied.get_workflow("sub-copy").runs()
        assert [r.status for r in runs] == ["CONTINUED_AS_NEW", "COMPLETED"]
        assert await copied.get_workflow("sub-copy").events(run_id=runs[0].run_id) == (
            await handle.events(run_id=runs[0].run_id)
        )


async def test_a_canceled_run_stops_the_chain(db: loom.Database) -> None:
    handle = await db.start_workflow(
        Subscription, workflow_input={"month": 1, "months": 5, "wait": True}
    )
    async with worker(db):
        await eventually(lambda: _waiting(handle))
        await handle.cancel("moved away")
        with pytest.raises(loom.WorkflowCanceledError):
            await handle.result(timeout=15)
    assert (await handle.status()) is WorkflowStatus.CANCELED


async def _waiting(handle: loom.WorkflowHandle[Any]) -> bool:
    return bool(of_type(await handle.events(), EventType.SIGNAL_WAIT_STARTED))


async def test_the_cli_and_the_api_show_the_runs(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    handle = await db.start_workflow(
        Subscription, workflow_input={"month": 1, "months": 3}, workflow_id="sub/shown"
    )
    async with worker(db):
        await handle.result(timeout=15)
    runs = await handle.runs()

    loom_cmd = Path(sys.executable).parent / "loom"
    env = {"PATH": "/usr/bin:/bin", "LOOM_DATABASE_URL": db_url, "COLUMNS": "200"}

    async def cli(*args: str) -> str:
        done = await asyncio.to_thread(
            subprocess.run,
            [str(loom_cmd), *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    shown = json.loads(await cli("inspect", "sub/shown", "--json"))
    assert [r["run_id"] for r in shown["runs"]] == [r.run_id for r in runs]
    assert shown["run_id"] == runs[-1].run_id
    assert "Runs (3)" in await cli("inspect", "sub/shown")

    app = create_app(database=db, poll_interval=0.05)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        listed = (await client.get("/api/workflows/sub%2Fshown/runs")).json()["runs"]
        assert [(r["number"], r["status"]) for r in listed] == [
            (1, "CONTINUED_AS_NEW"),
            (2, "CONTINUED_AS_NEW"),
            (3, "COMPLETED"),
        ]
        first = (
            await client.get(f"/api/workflows/sub%2Fshown/runs/{runs[0].run_id}/events")
        ).json()
        assert first["events"][-1]["type"] == "WORKFLOW_CONTINUED_AS_NEW"
        assert (await client.get("/api/workflows/sub%2Fshown/runs/nope/events")).status_code == 404
        assert (await client.get("/api/workflows/nobody/runs")).status_code == 404
