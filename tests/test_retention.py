"""Retention: finished workflows older than a period are deleted with their histories, earlier
runs, buffered signals, heartbeats and tags, in small batches; running ones and young ones
stay. By ``loom gc`` (``db.delete_finished``) and by a worker's periodic sweep
(``Worker(retention=...)``); on both backends."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import timedelta
from typing import Any

import pytest

import loom
from loom import ConfigurationError, StartRequest, WorkflowStatus
from loom.store.statements import rows, run
from support import eventually, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.workflow(name="gc_Job")
class Job(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Fails, waits for a signal, continues as new once or ends, as its input says."""

    @loom.step
    async def work(self, ctx: Ctx) -> None:
        mode = (ctx.input or {}).get("mode")
        if mode == "fail":
            raise RuntimeError("broken")
        if mode == "wait":
            await ctx.state.set("got", await ctx.wait_for_signal("go"))
        if mode == "again":
            await ctx.continue_as_new({"mode": None})


@loom.workflow(name="gc_Parent")
class Parent(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def spawn(self, ctx: Ctx) -> None:
        ctx.start_child(Job, {"mode": "wait"}, workflow_id="orphan", parent_close_policy="abandon")


async def run_all(
    db: loom.Database, jobs: dict[str, Any], signalled: tuple[str, ...] = ()
) -> dict[str, loom.WorkflowHandle[Any]]:
    """Start the jobs (id -> mode), send those ``signalled`` a signal before they run, and run
    them until each has finished or waits."""
    handles = {
        wid: await db.start_workflow(Job, workflow_input={"mode": mode}, workflow_id=wid)
        for wid, mode in jobs.items()
    }
    for wid in signalled:
        await handles[wid].signal("unused", wid)
    async with worker(db):
        for wid, handle in handles.items():
            if jobs[wid] == "wait":
                await eventually(lambda h=handle: _parked(h), what=f"{wid} waiting")
            else:
                await eventually(lambda h=handle: _ended(h), what=f"{wid} finished")
    return handles


async def _parked(handle: loom.WorkflowHandle[Any]) -> bool:
    record = await handle.describe()
    return record.status is WorkflowStatus.RUNNING and not record.leased and record.last_seq > 2


async def _ended(handle: loom.WorkflowHandle[Any]) -> bool:
    return await handle.status() is not WorkflowStatus.RUNNING


async def ids(db: loom.Database) -> list[str]:
    return sorted(w.workflow_id for w in await db.list_workflows(limit=-1))


async def test_old_finished_workflows_go_with_everything_they_stored(db: loom.Database) -> None:
    old = await run_all(
        db,
        {"done-1": None, "done-2": None, "failed": "fail", "again": "again", "waits": "wait"},
        signalled=("failed",),  # a FAILED workflow keeps its signals, for a retry
    )
    await old["waits"].cancel("enough")
    assert await db.store.read_signals("failed")
    assert len(await old["again"].runs()) == 2
    cutoff = time.time()
    await run_all(db, {"young": None, "running": "wait"})
    statuses = [WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED]

    assert await db.store.count_finished(cutoff, statuses) == 5
    assert await db.store.delete_finished(cutoff, statuses, 2) == 2  # one batch
    while await db.store.delete_finished(cutoff, statuses, 2):
        pass

    assert await ids(db) == ["running", "young"]
    for wid in old:
        assert await db.store.load_history(wid) == []
        assert await db.store.read_signals(wid) == []
        assert await db.store.list_runs(wid) == []
        with pytest.raises(loom.WorkflowNotFoundError):
            await db.get_workflow(wid).retry()


async def test_gc_by_status_and_age_in_batches(db: loom.Database) -> None:
    await run_all(db, {f"ok-{n}": None for n in range(5)} | {"bad": "fail", "open": "wait"})
    assert await db.count_finished(timedelta(days=1)) == 0  # all ended just now
    assert await db.count_finished(0.000001, ["completed"]) == 5
    # Measured from an earlier moment, before any of them ended: none.
    assert await db.delete_finished(0.000001, now=time.time() - 3600) == 0
    assert await db.delete_finished(0.000001, ["COMPLETED"], batch=2) == 5
    assert await ids(db) == ["bad", "open"]
    assert await db.delete_finished(0.000001) == 1
    assert await ids(db) == ["open"]


async def test_gc_refuses_running_workflows_and_odd_periods(db: loom.Database) -> None:
    for statuses in (["RUNNING"], ["done"], []):
        with pytest.raises(ConfigurationError):
            await db.count_finished(60, statuses)
    for period in (0, -1, math.nan, math.inf, "30d", True, 1e12):
        with pytest.raises(ConfigurationError):
            await db.delete_finished(period)  # type: ignore[arg-type]
    for now in (math.nan, math.inf, "now", True):
        with pytest.raises(ConfigurationError, match="epoch time"):
            await db.count_finished(60, now=now)  # type: ignore[arg-type]
    for batch in (0, -5, 10_001, 2.5):
        with pytest.raises(ConfigurationError):
            await db.delete_finished(60, batch=batch)  # type: ignore[arg-type]


async def test_a_child_outlives_its_deleted_parent_unless_finished_and_old(
    db: loom.Database,
) -> None:
    parent = await db.start_workflow(Parent, workflow_id="parent")
    async with worker(db):
        await parent.result(timeout=10)
        child = db.get_workflow("orphan")
        await eventually(lambda: _parked(child), what="the abandoned child waiting")
        assert await db.delete_finished(0.000001) == 1
        assert await ids(db) == ["orphan"]
        await child.signal("go", "still here")
        assert (await child.result(timeout=10))["got"] == "still here"
    assert await db.delete_finished(0.000001) == 1
    assert await ids(db) == []


async def test_two_sweeps_at_once_delete_each_workflow_once(db: loom.Database, db_url: str) -> None:
    await db.start_workflows([loom.StartRequest(Job, {}, f"j-{n}") for n in range(40)])
    async with worker(db):
        for n in range(40):
            await db.get_workflow(f"j-{n}").result(timeout=20)
    async with loom.Database(db_url) as other:
        counts = await asyncio.gather(
            db.delete_finished(0.000001, batch=3), other.delete_finished(0.000001, batch=3)
        )
    assert sum(counts) == 40
    assert await ids(db) == []


async def test_a_worker_with_retention_sweeps_while_it_runs(db: loom.Database) -> None:
    with pytest.raises(ConfigurationError):
        loom.Worker(db, retention=0)
    with pytest.raises(ConfigurationError):
        loom.Worker(db, retention=timedelta(seconds=-1))
    assert loom.Worker(db).retention is None
    await run_all(db, {"open": "wait"})
    running = worker(db, retention=timedelta(milliseconds=1))
    assert running.retention is not None
    running.retention.interval = 0.05
    async with running:
        finished = await db.start_workflow(Job, workflow_input={}, workflow_id="short-lived")
        await eventually(lambda: _gone(db, "short-lived"), what="the finished workflow deleted")
        del finished
    assert running.retention.deleted == 1
    assert await ids(db) == ["open"]


async def _gone(db: loom.Database, workflow_id: str) -> bool:
    return await db.find_workflow(workflow_id) is None


def _tables_with_workflow_rows(postgres: bool) -> Any:
    """Every table with a ``workflow_id`` column, read from the database's own catalogue, so a
    table added later is checked too."""
    if postgres:
        sql = (
            "SELECT table_name AS t FROM information_schema.columns "
            "WHERE column_name = 'workflow_id' AND table_schema = current_schema()"
        )
    else:
        sql = (
            "SELECT m.name AS t FROM sqlite_master m, pragma_table_info(m.name) p "
            "WHERE m.type = 'table' AND p.name = 'workflow_id'"
        )
    found = yield rows(sql)
    return sorted(r["t"] for r in found)


def _rows_of(tables: list[str], workflow_ids: list[str]) -> Any:
    counts: dict[str, int] = {}
    for table in tables:
        for workflow_id in workflow_ids:
            [n] = yield rows(
                f"SELECT COUNT(*) AS n FROM {table} WHERE workflow_id = ?", workflow_id
            )
            counts[table] = counts.get(table, 0) + int(n["n"])
    return counts


async def test_a_deleted_workflow_leaves_no_row_in_any_table(db: loom.Database) -> None:
    store: Any = db.store
    postgres = bool(store.sql.list_param)
    old = {"plain": None, "failed": "fail", "again": "again", "waits": "wait"}
    await db.start_workflows(
        [StartRequest(Job, {"mode": m}, w, tags={"gc": "yes", "id": w}) for w, m in old.items()]
    )
    async with worker(db):
        await db.get_workflow("failed").signal("unused", 1)
        for w, m in old.items():
            if m == "wait":
                await eventually(lambda w=w: _parked(db.get_workflow(w)), what=f"{w} waiting")
            else:
                await eventually(lambda w=w: _ended(db.get_workflow(w)), what=f"{w} finished")
    await db.get_workflow("waits").cancel()
    # A heartbeat left over (an end removes them; a row from any path must still go).
    await store._transact(
        _one(
            "INSERT INTO activity_heartbeats (workflow_id, seq, activity, attempt, details, "
            "beat_at) VALUES (?, 3, 'x', 1, NULL, 0)",
            "plain",
        )
    )
    # ... and a queue slot its activity held when its worker died (it expires; it must go too).
    await store._transact(
        _one(
            "INSERT INTO activity_slots (workflow_id, seq, queue, owner, lease_until) "
            "VALUES (?, 3, 'gpu', 'dead-worker', 0)",
            "plain",
        )
    )
    await db.start_workflow(
        Job, workflow_input={"mode": "wait"}, workflow_id="alive", tags={"gc": "yes"}
    )
    tables = await store._read(_tables_with_workflow_rows(postgres))
    owned = {"events", "run_events", "signals", "activity_heartbeats", "activity_slots"}
    assert owned | {"workflow_tags"} <= set(tables)
    before = await store._read(_rows_of(tables, list(old)))
    assert all(before[t] for t in owned)
    assert before["workflow_tags"] == 8

    assert await db.delete_finished(0.000001, batch=3) == 4
    after = await store._read(_rows_of(tables, list(old)))
    assert after == {t: 0 for t in tables}
    assert await ids(db) == ["alive"]
    assert (await store._read(_rows_of(tables, ["alive"])))["workflow_tags"] == 1
    assert [w.workflow_id for w in await db.list_workflows(tags={"gc": "yes"})] == ["alive"]


def _one(sql: str, *args: Any) -> Any:
    yield run(sql, *args)


async def test_gc_racing_workers_and_signals_deletes_only_what_had_ended(
    db: loom.Database, db_url: str
) -> None:
    """Sweeps run over and over while a worker runs workflows to their end and signals wake
    the ones that wait: nothing running is ever deleted, every signal to a live workflow is
    delivered, and a signal to one deleted meanwhile is refused as to an unknown workflow."""
    waiting = [f"w-{n}" for n in range(20)]
    await db.start_workflows([StartRequest(Job, {"mode": "wait"}, w) for w in waiting])
    await db.start_workflows([StartRequest(Job, {}, f"quick-{n}") for n in range(40)])
    stop = asyncio.Event()
    deleted: list[int] = []

    async with loom.Database(db_url) as sweeper:

        async def sweep() -> None:
            while not stop.is_set():
                deleted.append(await sweeper.delete_finished(0.000001, batch=5))
                await asyncio.sleep(0)

        async with worker(db):
            task = asyncio.ensure_future(sweep())
            for w in waiting:
                await eventually(lambda w=w: _parked(db.get_workflow(w)), what=f"{w} waiting")
            for w in waiting:
                await db.get_workflow(w).signal("go", w)
            for w in waiting:  # each got its signal and ended; the sweep may take it at once
                await eventually(lambda w=w: _ended_or_gone(db, w), what=f"{w} ended")
            stop.set()
            await task
    assert await db.delete_finished(0.000001) + sum(deleted) == 60
    assert await ids(db) == []
    with pytest.raises(loom.WorkflowNotFoundError):
        await db.get_workflow("w-0").signal("go", 1)


async def _ended_or_gone(db: loom.Database, workflow_id: str) -> bool:
    record = await db.find_workflow(workflow_id)
    return record is None or record.status is WorkflowStatus.COMPLETED


@pytest.mark.parametrize("action", ["reset", "check", "check all", "export"])
async def test_an_action_racing_the_deletion_of_its_workflow_finds_it_gone(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch, action: str
) -> None:
    """The workflow is deleted between an action's reading of it and of its history: the
    action says it is not found (as it would a moment later), not that its history does not
    replay; a replay check of every workflow passes over it."""
    await run_all(db, {"done": None})
    read = db.store.get_workflow

    async def read_then_deleted(workflow_id: str) -> Any:
        record = await read(workflow_id)
        await db.delete_finished(0.000001)
        return record

    monkeypatch.setattr(db.store, "get_workflow", read_then_deleted)
    handle = db.get_workflow("done")
    if action == "check all":
        assert await db.check_replay() == []
        return
    with pytest.raises(loom.WorkflowNotFoundError):
        if action == "reset":
            await handle.reset("work")
        elif action == "check":
            await db.check_replay(["done"])
        else:
            await handle.export_history()
