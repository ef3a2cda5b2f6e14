"""The worker at the edges: signals against deadlines, signals while activities run, errors in
the worker's own handling of a workflow, BaseException from user code, failing writes, and
wake-ups that must not be lost. Every test runs on both backends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import EventType
from loom.errors import DatabaseUnavailableError, StoreError
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


def tag(db: loom.Database) -> str:
    """A name unique to this test's database (``id()`` may be reused by the next test's)."""
    found: str = db.__dict__.setdefault("_test_tag", uuid.uuid4().hex)
    return found


async def past(moment: float) -> None:
    """Wait until the wall clock is past ``moment`` (a deadline a workflow recorded)."""

    async def passed() -> bool:
        return time.time() > moment

    await eventually(passed, timeout=10)


async def parked_on_signal_wait(handle: loom.WorkflowHandle[Any]) -> float:
    """Run nothing more; return the recorded deadline of the wait the workflow parked on."""
    events = await handle.events()
    [wait] = of_type(events, EventType.SIGNAL_WAIT_STARTED)[-1:]
    return float(wait.payload["deadline"])


# ------------------------------------------------------------- signals against deadlines


@loom.workflow(name="hard_Deadline")
class HardDeadline(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def first(self, ctx: Ctx) -> None:
        try:
            got = await ctx.wait_for_signal("approve", timeout=ctx.input["timeout"])
        except TimeoutError:
            await ctx.state.set("first", "timed out")
        else:
            await ctx.state.set("first", got)

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        if ctx.input.get("wait_again"):
            await ctx.state.set("second", await ctx.wait_for_signal("approve"))


async def test_a_signal_sent_before_the_deadline_is_delivered_when_the_worker_runs_late(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(HardDeadline, workflow_input={"timeout": 0.3})
    assert await db.default_worker().run_once()  # parks on the wait
    deadline = await parked_on_signal_wait(handle)
    await handle.signal("approve", {"by": "alice"})  # before the deadline
    await past(deadline)  # no worker ran in time
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state == {"first": {"by": "alice"}}
    assert not of_type(await handle.events(), EventType.TIMER_FIRED)


async def test_a_signal_sent_after_the_deadline_stays_buffered_for_the_next_wait(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(
        HardDeadline, workflow_input={"timeout": 0.2, "wait_again": True}
    )
    assert await db.default_worker().run_once()
    deadline = await parked_on_signal_wait(handle)
    await past(deadline)
    await handle.signal("approve", "late")  # after the deadline, before any worker ran
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state == {"first": "timed out", "second": "late"}


async def test_timeout_zero_takes_a_signal_already_buffered(db: loom.Database) -> None:
    handle = await db.start_workflow(HardDeadline, workflow_input={"timeout": 0})
    await handle.signal("approve", "ready")
    async with worker(db):
        assert await handle.result(timeout=10) == {"first": "ready"}


# ------------------------------------------------------ signals while activities run

gate: dict[str, asyncio.Event] = {}


@loom.activity(name="hard_slow", timeout_seconds=60)
async def hard_slow(key: str) -> str:
    await gate[key].wait()
    return "done"


@loom.workflow(name="hard_WaitWhileWorking")
class HardWaitWhileWorking(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def both(self, ctx: Ctx) -> None:
        done, signal = await asyncio.gather(
            ctx.activity(hard_slow, ctx.input["key"]),
            ctx.wait_for_signal("go", timeout=60),
        )
        await ctx.state.set("result", [done, signal])


@pytest.mark.parametrize("sender", ["same process", "other client"])
async def test_a_signal_reaches_a_workflow_whose_activity_is_still_running(
    db: loom.Database, db_url: str, sender: str
) -> None:
    key = f"{sender}-{db_url}"
    gate[key] = asyncio.Event()
    handle = await db.start_workflow(HardWaitWhileWorking, workflow_input={"key": key})
    async with worker(db):

        async def waiting() -> bool:
            return bool(of_type(await handle.events(), EventType.SIGNAL_WAIT_STARTED))

        await eventually(waiting, timeout=10)
        if sender == "same process":
            await handle.signal("go", 1)
        else:  # a Database of its own: this worker hears of it only through the store
            async with loom.Database(db_url) as other:
                await other.get_workflow(handle.workflow_id).signal("go", 1)

        async def received() -> bool:
            return bool(of_type(await handle.events(), EventType.SIGNAL_RECEIVED))

        await eventually(received, timeout=5)  # while the activity still runs
        assert not of_type(await handle.events(), EventType.ACTIVITY_COMPLETED)
        gate[key].set()
        assert await handle.result(timeout=10) == {"result": ["done", 1]}


# -------------------------------------------- errors in the worker's handling: no hot loop

runs: dict[str, int] = {}


@loom.activity(name="hard_count")
async def hard_count(key: str) -> str:
    runs[key] = runs.get(key, 0) + 1
    return key


@loom.workflow(name="hard_Counted")
class HardCounted(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        await ctx.state.set("got", await ctx.activity(hard_count, ctx.input["key"]))


async def test_a_workflow_the_database_keeps_refusing_is_backed_off_then_failed(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = await db.start_workflow(
        HardCounted, workflow_input={"key": f"bad-{tag(db)}"}, workflow_id="bad"
    )
    good = await db.start_workflow(
        HardCounted, workflow_input={"key": f"good-{tag(db)}"}, workflow_id="good"
    )
    commit = db.store.commit

    async def refuse_bad(c: Any, now: float) -> Any:
        if c.workflow_id == "bad" and c.status is not loom.WorkflowStatus.FAILED:
            raise StoreError("the database refused this workflow's write")
        return await commit(c, now)

    monkeypatch.setattr(db.store, "commit", refuse_bad)
    w = worker(db)
    w.handling_backoff = 0.02
    async with w:
        assert await good.result(timeout=10) == {"got": f"good-{tag(db)}"}
        with pytest.raises(loom.WorkflowFailedError) as failed:
            await bad.result(timeout=20)
    cause = failed.value.cause
    assert cause["type"] == "WorkerError"
    assert "5 times in a row" in cause["message"] and "loom retry" in cause["message"]
    assert runs[f"bad-{tag(db)}"] <= w.max_handling_failures  # never a tight loop
    assert w.stats.handling_errors == w.max_handling_failures

    monkeypatch.setattr(db.store, "commit", commit)  # the cause is fixed: retry resumes it
    await bad.retry()
    async with worker(db):
        assert await bad.result(timeout=10) == {"got": f"bad-{tag(db)}"}


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("cannot describe me")

    def __repr__(self) -> str:
        raise RuntimeError("nor represent me")


@loom.activity(name="hard_unprintable", retry_count=1, retry_delay=0)
async def hard_unprintable(key: str) -> None:
    runs[key] = runs.get(key, 0) + 1
    raise Unprintable()


@loom.workflow(name="hard_Unprintable")
class HardUnprintable(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        await ctx.activity(hard_unprintable, ctx.input["key"])


async def test_an_exception_that_cannot_be_described_fails_the_workflow_without_a_loop(
    db: loom.Database,
) -> None:
    key = f"unprintable-{tag(db)}"
    handle = await db.start_workflow(HardUnprintable, workflow_input={"key": key})
    w = worker(db)
    w.handling_backoff = 0.02
    async with w:
        with pytest.raises(loom.WorkflowFailedError):
            await handle.result(timeout=20)
    assert runs[key] <= w.max_handling_failures


# ------------------------------------------------------- BaseException from user code


@loom.activity(name="hard_exits")
def hard_exits() -> None:
    sys.exit(3)


@loom.activity(name="hard_interrupts")
async def hard_interrupts() -> None:
    raise KeyboardInterrupt


@loom.workflow(name="hard_ActivityExits")
class HardActivityExits(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        try:
            await ctx.activity(hard_exits if ctx.input["how"] == "exit" else hard_interrupts)
        except loom.ActivityFailedError as exc:
            await ctx.state.set("caught", exc.error_type)


@loom.workflow(name="hard_StepExits")
class HardStepExits(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        sys.exit("bye")


@pytest.mark.parametrize("how", ["exit", "interrupt"])
async def test_an_activity_raising_a_base_exception_fails_that_attempt_not_the_worker(
    db: loom.Database, how: str
) -> None:
    handle = await db.start_workflow(HardActivityExits, workflow_input={"how": how})
    after = await db.start_workflow(HardCounted, workflow_input={"key": f"after-{how}-{tag(db)}"})
    async with worker(db):
        state = await handle.result(timeout=10)
        assert await after.result(timeout=10)  # the worker lives on
    assert state == {"caught": "SystemExit" if how == "exit" else "KeyboardInterrupt"}


async def test_a_step_calling_sys_exit_fails_the_workflow_and_the_worker_survives(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(HardStepExits)
    after = await db.start_workflow(HardCounted, workflow_input={"key": f"after-step-{tag(db)}"})
    w = worker(db)
    w.handling_backoff = 0.02
    async with w:
        with pytest.raises(loom.WorkflowFailedError) as failed:
            await handle.result(timeout=20)
        assert await after.result(timeout=10)
    assert failed.value.cause["type"] == "SystemExit"  # the step failed, not the worker
    assert failed.value.cause["step"] == "work"


@loom.workflow(name="hard_StepUnprintable")
class HardStepUnprintable(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        raise Unprintable()


async def test_a_step_raising_an_exception_that_cannot_be_described_fails_the_workflow(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(HardStepUnprintable)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as failed:
            await handle.result(timeout=10)  # it used to stay RUNNING with nothing to run
    assert failed.value.cause["type"] == "Unprintable"
    assert failed.value.cause["message"] == "<unprintable Unprintable>"


# ------------------------------------------------------------------- failing writes


async def test_while_writes_fail_no_activity_runs_again_and_again(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [f"full-{tag(db)}-{i}" for i in range(20)]
    handles = [await db.start_workflow(HardCounted, workflow_input={"key": k}) for k in keys]
    commit = db.store.commit
    refused = 0
    full_until = time.monotonic() + 0.3

    async def disk_full(c: Any, now: float) -> Any:
        nonlocal refused
        if time.monotonic() < full_until:
            refused += 1
            raise DatabaseUnavailableError("database or disk is full")
        return await commit(c, now)

    monkeypatch.setattr(db.store, "commit", disk_full)
    async with worker(db):
        for handle in handles:
            await handle.result(timeout=60)
    assert refused >= 1
    executions = sum(runs[k] for k in keys)
    # Each activity ran once, plus those of the first workflows in flight (concurrency 4),
    # whose inline activities ran before the first write was refused. After that, nothing
    # runs before its scheduling is recorded, so a refused write costs no execution.
    assert executions <= len(keys) + 4, executions


# ------------------------------------------------------------------ lost wake-ups


async def test_stop_during_the_idle_read_does_not_wait_for_the_poll_interval(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = worker(db, poll_interval=30)
    next_due = db.store.next_due
    reads = 0

    async def stop_meanwhile(names: list[str], queues: list[str] | None = None) -> float | None:
        nonlocal reads
        reads += 1
        due = await next_due(names, queues)
        w.stop()  # arrives while the idle worker reads its next due time
        return due

    monkeypatch.setattr(db.store, "next_due", stop_meanwhile)
    runner = asyncio.get_running_loop().create_task(w.run())
    await asyncio.wait_for(runner, timeout=5)  # not 30 s
    assert reads >= 1


async def test_a_worker_left_before_its_run_began_stops_and_runs_again_later(
    db: loom.Database,
) -> None:
    """``async with`` a worker around a body that never awaits: the exit's stop comes before
    the run's task has begun, and that run must end as soon as it begins, not claim forever."""
    w = worker(db, poll_interval=30)

    async def enter_and_leave() -> None:
        async with w:
            pass

    leaving = asyncio.get_running_loop().create_task(enter_and_leave())
    done, _ = await asyncio.wait({leaving}, timeout=5)
    if not done:
        leaving.cancel()
        pytest.fail("the worker's exit never returned: its run did not see the stop")
    leaving.result()
    # Stopped is not spent: the same worker runs again, and does the work.
    handle = await db.start_workflow(HardCounted, workflow_input={"key": f"again-{tag(db)}"})
    async with w:
        assert await handle.result(timeout=5) == {"got": f"again-{tag(db)}"}


async def test_a_stop_made_before_run_is_called_ends_that_run(db: loom.Database) -> None:
    """A stop that arrives while the worker starts (a SIGTERM before ``run()`` begins) ends the
    run it was meant for."""
    w = worker(db, poll_interval=30)
    w.stop()
    await asyncio.wait_for(w.run(), timeout=5)
    assert not w.stopping  # stopped: a later run runs


async def test_a_cancel_of_whoever_waits_for_the_worker_to_stop_is_not_lost(
    db: loom.Database,
) -> None:
    """A shutdown bounded by a timeout, or interrupted by Ctrl-C, cancels the task waiting in
    ``stop_and_wait``: that task must end canceled, not carry on as if it had stopped cleanly."""
    w = worker(db, poll_interval=30)
    runner = asyncio.get_running_loop().create_task(w.run())
    await eventually(lambda: w._leases.running, timeout=5)
    stopper = asyncio.get_running_loop().create_task(w.stop_and_wait())
    await asyncio.sleep(0)  # the stopper now waits for the run to end
    stopper.cancel()
    await asyncio.wait({stopper, runner}, timeout=5)
    assert runner.done()
    assert stopper.cancelled()
    assert not w.stopping


async def test_work_started_during_the_idle_read_is_claimed_at_once(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = worker(db, poll_interval=30)
    next_due = db.store.next_due
    started: list[loom.WorkflowHandle[Any]] = []

    async def start_meanwhile(names: list[str], queues: list[str] | None = None) -> float | None:
        due = await next_due(names, queues)
        if not started:
            started.append(
                await db.start_workflow(HardCounted, workflow_input={"key": f"meanwhile-{tag(db)}"})
            )
        return due

    monkeypatch.setattr(db.store, "next_due", start_meanwhile)
    async with w:
        await eventually(lambda: asyncio.sleep(0, bool(started)), timeout=5)
        assert await started[0].result(timeout=5)


# ------------------------------------------------------------- a real full disk (SQLite)


async def test_a_worker_on_a_full_disk_waits_and_loses_nothing(
    tmpfs: Callable[[str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loom.worker")
    mount_point = tmpfs("4m")
    url = f"sqlite:///{mount_point / 'loom.db'}"
    keys = [f"disk-{i}" for i in range(30)]
    async with loom.Database(url) as db:
        await db.migrate_up()
        handles = [await db.start_workflow(HardCounted, workflow_input={"key": k}) for k in keys]
        filler = mount_point / "filler"
        # Take every byte left on the file system.
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"\0" * 4096)
                out.flush()
        async with worker(db):

            async def outage_logged() -> bool:
                return "the database is unavailable" in caplog.text

            await eventually(outage_logged, timeout=10)
            filler.unlink()  # space again: the worker resumes by itself
            for handle in handles:
                await handle.result(timeout=30)
        assert sum(runs[k] for k in keys) <= len(keys) + 4
        for handle in handles:  # every history whole, each activity recorded once
            events = await handle.events()
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert len(of_type(events, EventType.ACTIVITY_COMPLETED)) == 1
    assert caplog.text.count("the database is unavailable") == 1
    assert "the database works again" in caplog.text
    assert "Traceback" not in caplog.text
