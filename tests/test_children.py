"""Child workflows: started durably with the parent's write, awaited for their final state, a
failure raised in the parent's step, fan-out, withdrawal, and the parent-close policy; on both
backends, with and without the worker's cache."""

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
from support.replay import assert_replays_from_every_prefix

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.activity(name="child_pack")
async def pack(item: str) -> str:
    return f"packed {item}"


@loom.workflow(name="child_Shipment")
class Shipment(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        if ctx.input.get("fail"):
            raise RuntimeError(f"no carrier for {ctx.input['item']}")
        await ctx.state.set("parcel", await ctx.activity(pack, ctx.input["item"]))


@loom.workflow(name="child_Waiter")
class Waiter(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Waits for a signal nobody sends (until canceled)."""

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("never")


@loom.workflow(name="child_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def fan_out(self, ctx: Ctx) -> None:
        shipments = [ctx.start_child(Shipment, {"item": item}) for item in ctx.input["items"]]
        states = await asyncio.gather(*shipments)
        await ctx.state.set("parcels", [s["parcel"] for s in states])
        await ctx.state.set("ids", [s.workflow_id for s in shipments])

    @loom.step
    async def one_more(self, ctx: Ctx) -> None:
        final = await ctx.child(Shipment, {"item": "gift"}, workflow_id=f"{ctx.workflow_id}-gift")
        await ctx.state.set("gift", final["parcel"])


@loom.workflow(name="child_Careful")
class Careful(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def try_it(self, ctx: Ctx) -> None:
        try:
            await ctx.child(Shipment, {"item": "glass", "fail": True})
        except loom.ChildWorkflowFailedError as exc:
            await ctx.state.set(
                "failed",
                {
                    "status": exc.status,
                    "type": exc.error_type,
                    "message": exc.error_message,
                    "cause": type(exc.__cause__).__name__,
                },
            )


@loom.workflow(name="child_Parent")
class Parent(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def spawn(self, ctx: Ctx) -> None:
        kept = ctx.start_child(Waiter, {}, parent_close_policy="abandon")
        await ctx.state.set("abandoned", kept.workflow_id)
        await ctx.child(Waiter, {})  # canceled with its parent


@loom.workflow(name="child_Impatient")
class Impatient(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Races a child against a short timer; the child loses and is withdrawn (canceled)."""

    @loom.step
    async def race(self, ctx: Ctx) -> None:
        child = ctx.start_child(Waiter, {})
        timer = asyncio.ensure_future(ctx.sleep(0.2))
        await asyncio.wait([child.task, timer], return_when=asyncio.FIRST_COMPLETED)
        child.cancel()
        await ctx.state.set("child", child.workflow_id)


@loom.workflow(name="child_Leaver")
class Leaver(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Gives up on the "cancel" child it started after a park (replayed without the cache):
    its step fails while the child runs."""

    @loom.step
    async def spawn(self, ctx: Ctx) -> None:
        child = ctx.start_child(Waiter, {})
        await ctx.state.set("child", child.workflow_id)
        await ctx.sleep(0.2)
        raise RuntimeError("gave up on the child")


CACHE = pytest.mark.parametrize("cache_size", [0, 1000], ids=["replayed", "cached"])


@CACHE
async def test_a_parent_fans_out_to_children_and_gets_their_final_states(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(Order, workflow_input={"items": ["a", "b", "c"]})
    async with worker(db, cache_size=cache_size):
        state = await handle.result(timeout=15)
    pid = handle.workflow_id
    assert state["parcels"] == ["packed a", "packed b", "packed c"]
    assert state["gift"] == "packed gift"
    events = await handle.events()
    started = of_type(events, EventType.CHILD_WORKFLOW_STARTED)
    # Derived ids: the parent's id and the seq of the start; a given id is kept.
    assert [e.payload["workflow_id"] for e in started] == [
        *(f"{pid}/{e.seq}" for e in started[:3]),
        f"{pid}-gift",
    ]
    assert state["ids"] == [e.payload["workflow_id"] for e in started[:3]]
    completed = of_type(events, EventType.CHILD_WORKFLOW_COMPLETED)
    assert sorted(e.payload["scheduled"] for e in completed) == [e.seq for e in started]
    children = await db.list_workflows(parent_id=pid)
    assert sorted(c.workflow_id for c in children) == sorted(
        e.payload["workflow_id"] for e in started
    )
    assert all(c.status is WorkflowStatus.COMPLETED for c in children)
    for child in children:
        record = await db.get_workflow(child.workflow_id).describe()
        assert record.parent_id == pid
    assert_replays_from_every_prefix(Order, pid, events, times_from_the_clock=True)


@CACHE
async def test_a_failed_child_raises_in_the_parent_which_can_catch_it(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(Careful)
    async with worker(db, cache_size=cache_size):
        state = await handle.result(timeout=15)
    assert state["failed"] == {
        "status": "FAILED",
        "type": "RuntimeError",
        "message": "no carrier for glass",
        "cause": "WorkflowFailedError",
    }
    [failed] = of_type(await handle.events(), EventType.CHILD_WORKFLOW_FAILED)
    assert failed.payload["error"]["message"] == "no carrier for glass"


async def test_a_canceled_parent_cancels_its_children_unless_abandoned(db: loom.Database) -> None:
    handle = await db.start_workflow(Parent)
    async with worker(db):
        children = await eventually(lambda: _children(db, handle.workflow_id, 2))
        await eventually(lambda: _all_parked(db, children))
        await handle.cancel("order withdrawn")
        state = await handle.state()
        abandoned = state["abandoned"]
        statuses = await eventually(lambda: _statuses_settled(db, children))
    assert statuses[abandoned] is WorkflowStatus.RUNNING
    [canceled] = [c for c in children if c != abandoned]
    assert statuses[canceled] is WorkflowStatus.CANCELED
    record = await db.get_workflow(canceled).describe()
    assert "ended" in str(record.error)


@CACHE
async def test_a_parent_that_fails_cancels_the_child_it_left_running(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(Leaver)
    async with worker(db, cache_size=cache_size):
        with pytest.raises(loom.WorkflowFailedError, match="gave up on the child"):
            await handle.result(timeout=15)
        child = db.get_workflow((await handle.state())["child"])
        assert await eventually(lambda: _status_is(child, WorkflowStatus.CANCELED))
    record = await child.describe()
    assert "ended" in str(record.error)


async def test_a_withdrawn_child_is_canceled(db: loom.Database) -> None:
    handle = await db.start_workflow(Impatient)
    async with worker(db):
        state = await handle.result(timeout=15)
        child = db.get_workflow(state["child"])
        assert await eventually(lambda: _status_is(child, WorkflowStatus.CANCELED))
    events = await handle.events()
    [withdrawn] = of_type(events, EventType.CHILD_WORKFLOW_CANCELED)
    assert withdrawn.payload["workflow_id"] == state["child"]


async def test_a_child_id_taken_already_fails_the_child_call(db: loom.Database) -> None:
    taken = await db.start_workflow(Waiter, workflow_id="taken-gift")
    handle = await db.start_workflow(Order, workflow_input={"items": []}, workflow_id="taken")
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError, match="exists already"):
            await handle.result(timeout=15)
    assert await taken.status() is WorkflowStatus.RUNNING


async def _children(db: loom.Database, parent: str, n: int) -> list[str] | None:
    found = await db.list_workflows(parent_id=parent)
    return [c.workflow_id for c in found] if len(found) == n else None


async def _all_parked(db: loom.Database, ids: list[str]) -> bool:
    for wid in ids:
        record = await db.get_workflow(wid).describe()
        if record.leased or record.last_seq < 3:
            return False
    return True


async def _statuses_settled(db: loom.Database, ids: list[str]) -> dict[str, WorkflowStatus] | None:
    statuses = {wid: await db.get_workflow(wid).status() for wid in ids}
    return statuses if WorkflowStatus.CANCELED in statuses.values() else None


async def _status_is(handle: loom.WorkflowHandle[Any], status: WorkflowStatus) -> bool:
    return await handle.status() is status


async def test_the_cli_and_the_api_show_a_parent_and_its_children(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    handle = await db.start_workflow(
        Order, workflow_input={"items": ["x", "y"]}, workflow_id="family"
    )
    async with worker(db):
        await handle.result(timeout=15)
    kids = ["family/3", "family/4", "family-gift"]
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

    listed = json.loads(await cli("list", "--parent", "family", "--json"))
    assert sorted(row["workflow_id"] for row in listed) == sorted(kids)
    assert {row["parent_id"] for row in listed} == {"family"}
    shown = json.loads(await cli("inspect", "family", "--json"))
    assert [c["workflow_id"] for c in shown["children"]] == kids
    assert shown["steps"][0]["children"] == 2
    table = await cli("inspect", "family")
    assert "Children (3)" in table and "family/3" in table
    child = json.loads(await cli("inspect", "family/3", "--json"))
    assert child["parent_id"] == "family"

    app = create_app(database=db, poll_interval=0.05)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        listed = (await client.get("/api/workflows", params={"parent": "family"})).json()
        assert sorted(w["workflow_id"] for w in listed["workflows"]) == sorted(kids)
        detail = (await client.get("/api/workflows/family%2F3")).json()
        assert detail["parent_id"] == "family"
        refused = await client.get("/api/workflows", params={"parent": "a\x00b"})
        assert refused.status_code == 422
        assert "parent workflow id" in refused.text
