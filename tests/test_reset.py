"""Reset: ``handle.reset(to_step=...)`` restarts a workflow of any status from a named step,
keeping its history; the steps before it are not run again and keep their state, the steps from
it on run again from the state before it, with the signals they had consumed buffered again.
On both backends, with and without the worker's cache, and with the workflow held by a worker
of this process, of another one, or of one that died."""

from __future__ import annotations

import time
from typing import Any

import pytest

import loom
import reset_workflows as rw
from loom import EventType, ResetOutcome, UnknownStepError, WorkflowStatus
from loom.core.replay import WorkflowExecution
from loom.store.base import CommitOutcome, HeartbeatRow
from support import eventually, of_type, worker


async def finished(handle: loom.WorkflowHandle[Any], status: WorkflowStatus) -> bool:
    return await handle.status() is status


async def waiting_for(handle: loom.WorkflowHandle[Any], signal: str) -> bool:
    """The workflow is parked, waiting for ``signal`` (its wait recorded and not answered)."""
    record = await handle.describe()
    if record.status is not WorkflowStatus.RUNNING or record.leased:
        return False
    events = await handle.events()
    waits = {e.seq for e in of_type(events, EventType.SIGNAL_WAIT_STARTED)}
    waits &= {e.seq for e in events if e.payload.get("name") == signal}
    answered = {e.payload.get("scheduled") for e in of_type(events, EventType.SIGNAL_RECEIVED)}
    return bool(waits - answered)


async def order_in(
    db: loom.Database, wid: str, status: WorkflowStatus
) -> loom.WorkflowHandle[dict[str, Any]]:
    """A reset_Order that ended ``status``: completed, failed in ``ship`` (its carrier is
    down), or canceled while ``ship`` waited for its signal."""
    if status is WorkflowStatus.FAILED:
        rw.BROKEN.add(wid)
    handle = await db.start_workflow(
        rw.Order, workflow_input={"wait": status is WorkflowStatus.CANCELED}, workflow_id=wid
    )
    async with worker(db):
        if status is WorkflowStatus.CANCELED:
            await eventually(lambda: waiting_for(handle, "go"), what="ship waiting for go")
            await handle.cancel("changed our mind")
        await eventually(lambda: finished(handle, status), what=f"the order {status.value}")
    rw.BROKEN.discard(wid)
    return handle


async def step_recorded(handle: loom.WorkflowHandle[Any], step: str) -> bool:
    started = of_type(await handle.events(), EventType.STEP_STARTED)
    return any(e.payload["step"] == step for e in started)


def calls(wid: str) -> list[int]:
    return [rw.CALLS[wid, step] for step in rw.STEPS]


@pytest.mark.parametrize(
    "status", [WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED]
)
@pytest.mark.parametrize("to_step", rw.STEPS)
@pytest.mark.parametrize("cache_size", [1000, 0], ids=["cached", "replayed"])
async def test_reset_from_each_step_runs_that_step_and_the_following_again(
    db: loom.Database, wid: str, status: WorkflowStatus, to_step: str, cache_size: int
) -> None:
    handle = await order_in(db, wid, status)
    before = calls(wid)
    history_before = await handle.events()
    index = rw.STEPS.index(to_step)

    assert await handle.reset(to_step, reason="replay the order") is ResetOutcome.RESET

    record = await handle.describe()
    assert (record.status, record.current_step, record.error) == (
        WorkflowStatus.RUNNING,
        to_step,
        None,
    )
    # The state is the one the step began with: the discarded steps' changes are gone.
    assert record.state.get("log", []) == rw.STEPS[:index]
    async with worker(db, cache_size=cache_size):
        if status is WorkflowStatus.CANCELED:
            await eventually(lambda: waiting_for(handle, "go"), what="ship waiting for go again")
            await handle.signal("go", "now")
        final = await handle.result(timeout=10)

    assert final["log"] == rw.STEPS
    ran_again = [1 if i >= index else 0 for i in range(3)]
    expected = [b + r for b, r in zip(before, ran_again, strict=True)]
    if status is WorkflowStatus.CANCELED:
        expected[2] = 1  # ship's activity never ran before the cancel
    assert calls(wid) == expected
    # The steps before the reset kept their results; the others have new ones.
    for i, step in enumerate(rw.STEPS):
        assert final[step] == f"{step}-{expected[i]}"
    events = await handle.events()
    assert events[: len(history_before)] == history_before  # the history is kept
    [reset] = of_type(events, EventType.WORKFLOW_RESET)
    assert reset.seq == history_before[-1].seq + 1
    assert reset.payload == {"to_step": to_step, "index": index, "reason": "replay the order"}
    started_after = of_type(events[reset.seq :], EventType.STEP_STARTED)
    assert [e.payload["step"] for e in started_after] == rw.STEPS[index:]
    assert [r for r in await db.check_replay([wid]) if not r.ok] == []


async def test_the_history_of_a_reset_replays_to_the_same_state_from_every_prefix(
    db: loom.Database, wid: str
) -> None:
    handle = await order_in(db, wid, WorkflowStatus.COMPLETED)
    await handle.reset("reserve")
    async with worker(db):
        final = await handle.result(timeout=10)
    events = await handle.events()
    definition = loom.default_registry.workflow("reset_Order")
    for full in (True, False):
        ex = WorkflowExecution(definition, wid, events, now=events[-1].timestamp + 1, full=full)
        try:
            assert ex.nondeterminism is None
            assert ex.take_new_events() == []
            assert (ex.status, ex.state) == (WorkflowStatus.COMPLETED, final)
        finally:
            ex.close()
    # Cut just after the reset: replay runs reserve and ship again, charge not at all.
    at = [e.type for e in events].index(EventType.WORKFLOW_RESET) + 1
    ex = WorkflowExecution(definition, wid, events[:at], now=events[at - 1].timestamp + 1)
    try:
        assert [r.args[1] for r in ex.activity_runs()] == ["reserve"]
        assert ex.state["log"] == ["charge"]
    finally:
        ex.close()


async def test_signals_the_discarded_steps_consumed_are_delivered_again_in_order(
    db: loom.Database, wid: str
) -> None:
    handle = await db.start_workflow(rw.Collector, workflow_id=wid)
    async with worker(db):
        await handle.signal("ping")
        await handle.signal("item", "a")
        await eventually(lambda: waiting_for(handle, "item"), what="second waiting")
        await handle.signal("ping")
        await handle.signal("item", "b")
        first = await handle.result(timeout=10)
    assert (first["first"], first["second"], first["pings"]) == ("a", "b", 2)

    for to_step, kept_pings in (("second", 1), ("first", 0)):
        assert await handle.reset(to_step) is ResetOutcome.RESET
        assert (await handle.state()).get("pings", 0) == kept_pings
        async with worker(db):
            again = await handle.result(timeout=10)  # nothing is sent: the signals come back
        assert (again["first"], again["second"], again["pings"]) == ("a", "b", 2)
    received = of_type(await handle.events(), EventType.SIGNAL_RECEIVED)
    assert [e.payload["payload"] for e in received if e.payload["name"] == "item"] == [
        "a",
        "b",
        "b",
        "a",
        "b",
    ]


async def test_a_signal_still_buffered_comes_after_those_sent_again(
    db: loom.Database, wid: str
) -> None:
    handle = await db.start_workflow(rw.Collector, workflow_id=wid)
    async with worker(db):
        await handle.signal("item", "a")
        await eventually(lambda: waiting_for(handle, "item"), what="second waiting")
    await handle.signal("item", "late")  # buffered: no worker runs now
    await handle.reset("first")
    async with worker(db):
        final = await handle.result(timeout=10)
    assert (final["first"], final["second"]) == ("a", "late")


async def test_a_running_workflow_parked_on_a_signal_is_reset_at_once(
    db: loom.Database, wid: str
) -> None:
    handle = await db.start_workflow(rw.Order, workflow_input={"wait": True}, workflow_id=wid)
    async with worker(db):
        await eventually(lambda: waiting_for(handle, "go"), what="ship waiting for go")
        assert await handle.reset("reserve") is ResetOutcome.RESET
        await eventually(lambda: waiting_for(handle, "go"), what="ship waiting again")
        await handle.signal("go", 1)
        final = await handle.result(timeout=10)
    assert final["log"] == rw.STEPS
    assert calls(wid) == [1, 2, 1]


@pytest.mark.parametrize("holder", ["this process", "another process"])
async def test_a_workflow_a_worker_holds_is_reset_at_its_next_write(
    db: loom.Database, db_url: str, wid: str, holder: str
) -> None:
    """The reset is requested; the holder learns of it (told directly in this process, by its
    lease renewal from elsewhere), stops its running activity, and what it did since its last
    write is dropped."""
    handle = await db.start_workflow(rw.Order, workflow_input={"hold": True}, workflow_id=wid)
    async with loom.Database(db_url) as elsewhere:
        holding = db if holder == "this process" else elsewhere
        async with worker(holding, lease_seconds=1.5):
            await eventually(lambda: rw.CALLS[wid, "block"] == 1, what="ship's long activity")
            await eventually(lambda: step_recorded(handle, "ship"), what="ship's start written")
            assert await handle.reset("reserve", reason="stuck") is ResetOutcome.REQUESTED
            assert (await handle.describe()).reset_requested
            final = await handle.result(timeout=15)
    assert wid in rw.INTERRUPTED
    assert final["log"] == rw.STEPS
    assert calls(wid) == [1, 2, 1]
    events = await handle.events()
    [reset] = of_type(events, EventType.WORKFLOW_RESET)
    assert reset.payload == {"to_step": "reserve", "index": 1, "reason": "stuck"}
    # Nothing of the interrupted activity was recorded: its scheduling at most.
    before = events[: reset.seq - 1]
    completed = of_type(before, EventType.ACTIVITY_COMPLETED)
    assert "reset_block" not in [e.payload["name"] for e in completed]
    assert not (await handle.describe()).reset_requested


async def test_a_reset_waiting_for_a_dead_worker_happens_at_the_next_claim(
    db: loom.Database, wid: str
) -> None:
    handle = await db.start_workflow(rw.Order, workflow_id=wid)
    now = time.time()
    [claim] = await db.store.claim("dead-worker", ["reset_Order"], 1, 1.0, now)
    assert claim.workflow_id == wid
    assert await handle.reset("charge") is ResetOutcome.REQUESTED
    async with worker(db):
        final = await handle.result(timeout=10)
    assert final["log"] == rw.STEPS
    kinds = [e.type for e in await handle.events()][:3]
    assert kinds == [EventType.WORKFLOW_STARTED, EventType.WORKFLOW_RESET, EventType.STEP_STARTED]


@pytest.mark.parametrize("held", [True, False], ids=["requested", "at once"])
async def test_a_reset_leaves_no_heartbeat_of_the_activities_it_discarded(
    db: loom.Database, wid: str, held: bool
) -> None:
    """The activities of the steps a reset discards will not resume, and those of the kept
    steps completed: none of their last heartbeats is shown as if it still ran."""
    handle = await db.start_workflow(rw.Order, workflow_id=wid)
    now = time.time()
    [claim] = await db.store.claim("dead-worker", ["reset_Order"], 1, 0.5, now)
    beat = HeartbeatRow(3, "reset_work", 1, '{"done": 0.5}', now)
    assert await db.store.record_heartbeat(wid, claim.lease_epoch, beat) is CommitOutcome.OK
    assert [b.details for b in await handle.heartbeats()] == [{"done": 0.5}]
    if not held:
        await eventually(lambda: _past(now + 0.5), what="the dead worker's lease over")
    outcome = await handle.reset("charge")
    assert outcome is (ResetOutcome.REQUESTED if held else ResetOutcome.RESET)
    if held:  # the next claim, once the dead worker's lease is over, carries it out
        await eventually(lambda: _past(now + 0.5), what="the dead worker's lease over")
        await db.store.claim("next-worker", ["reset_Order"], 1, 10.0, time.time())
    assert of_type(await handle.events(), EventType.WORKFLOW_RESET)
    assert await handle.heartbeats() == []


async def _past(moment: float) -> bool:
    return time.time() > moment


async def test_a_cancel_after_a_reset_request_wins_and_a_reset_after_a_cancel_request_too(
    db: loom.Database, wid: str
) -> None:
    for last in ("cancel", "reset"):
        workflow_id = f"{wid}-{last}"
        handle = await db.start_workflow(rw.Order, workflow_id=workflow_id)
        await db.store.claim("dead-worker", ["reset_Order"], 1, 0.5, time.time())
        if last == "cancel":
            await handle.reset("charge")
            assert await handle.cancel("no") is loom.client.CancelOutcome.REQUESTED
        else:
            await handle.cancel("no")
            assert await handle.reset("charge") is ResetOutcome.REQUESTED
        async with worker(db):
            if last == "cancel":
                with pytest.raises(loom.WorkflowCanceledError):
                    await handle.result(timeout=10)
            else:
                assert (await handle.result(timeout=10))["log"] == rw.STEPS


async def test_unknown_and_unreached_steps_are_refused_naming_the_steps_there_are(
    db: loom.Database, wid: str
) -> None:
    handle = await db.start_workflow(rw.Order, workflow_input={"wait": True}, workflow_id=wid)
    async with worker(db):
        await eventually(lambda: waiting_for(handle, "go"), what="ship waiting for go")
    last = (await handle.describe()).last_seq
    with pytest.raises(UnknownStepError) as unknown:
        await handle.reset("shipp")
    assert unknown.value.steps == ["charge", "reserve", "ship"]
    assert "'shipp'" in str(unknown.value) and "'ship'" in str(unknown.value)
    assert wid in str(unknown.value)

    other = await db.start_workflow(rw.Collector, workflow_id=f"{wid}-c")
    async with worker(db):
        await eventually(lambda: waiting_for(other, "item"), what="first waiting")
    with pytest.raises(UnknownStepError, match="never reached step 'second'") as unreached:
        await other.reset("second")
    assert unreached.value.steps == ["first"]
    for bad in ("", "ship\x00", "x" * 201):
        with pytest.raises(loom.errors.InvalidIdError):
            await handle.reset(bad)
    with pytest.raises(loom.WorkflowNotFoundError):
        await db.get_workflow("no-such-workflow").reset("ship")
    with pytest.raises(loom.errors.InvalidIdError):
        await handle.reset("ship", reason="bad\x00reason")
    assert (await handle.describe()).last_seq == last  # nothing was written


async def test_without_the_class_the_history_names_the_steps_it_can_reset_to(
    db: loom.Database, db_url: str, wid: str
) -> None:
    handle = await order_in(db, wid, WorkflowStatus.COMPLETED)
    async with loom.Database(db_url, registry=loom.Registry()) as bare:
        with pytest.raises(UnknownStepError) as refused:
            await bare.get_workflow(wid).reset("pack")
        assert refused.value.steps == rw.STEPS
        assert await bare.get_workflow(wid).reset("ship") is ResetOutcome.RESET
    async with worker(db):
        assert (await handle.result(timeout=10))["log"] == rw.STEPS


async def test_without_the_class_a_reset_or_retry_not_yet_run_can_be_reset_to_its_step(
    db: loom.Database, db_url: str, wid: str
) -> None:
    """A reset or retry that no worker has run yet names the step the workflow runs next: a
    client without the class can reset it to that step again (its history has no start of it
    since), as it could before."""
    reset = await order_in(db, wid, WorkflowStatus.COMPLETED)
    failed = await order_in(db, f"{wid}-f", WorkflowStatus.FAILED)
    charged, reserved, shipped = calls(failed.workflow_id)
    await failed.retry()
    async with loom.Database(db_url, registry=loom.Registry()) as bare:
        assert await bare.get_workflow(wid).reset("reserve") is ResetOutcome.RESET
        assert await bare.get_workflow(wid).reset("reserve") is ResetOutcome.RESET
        with pytest.raises(UnknownStepError, match=r"it can be reset to: 'charge', 'reserve'$"):
            await bare.get_workflow(wid).reset("ship")
        assert await bare.get_workflow(failed.workflow_id).reset("ship") is ResetOutcome.RESET
    async with worker(db):
        assert (await reset.result(timeout=10))["log"] == rw.STEPS
        assert (await failed.result(timeout=10))["log"] == rw.STEPS
    assert calls(wid) == [1, 2, 2]
    assert calls(failed.workflow_id) == [charged, reserved, shipped + 1]


async def test_a_reset_cancels_the_children_of_the_discarded_steps(
    db: loom.Database, wid: str
) -> None:
    parent = await db.start_workflow(rw.Parent, workflow_id=wid)
    async with worker(db):
        first_child = await eventually(
            lambda: _state_value(parent, "child"), what="the child started"
        )
        child = db.get_workflow(first_child)
        await eventually(lambda: waiting_for(child, "release"), what="the child waiting")
        assert await parent.reset("spawn") is ResetOutcome.RESET
        assert await child.status() is WorkflowStatus.CANCELED
        second = await eventually(
            lambda: _other_child(parent, first_child), what="a new child started"
        )
        await eventually(
            lambda: waiting_for(db.get_workflow(second), "release"), what="the new child waiting"
        )
        await db.get_workflow(second).signal("release", "ok")
        final = await parent.result(timeout=10)
    assert final["result"] == {"got": "ok"} and final["child"] == second


async def _state_value(handle: loom.WorkflowHandle[Any], key: str) -> Any:
    return (await handle.state()).get(key)


async def _other_child(handle: loom.WorkflowHandle[Any], first: str) -> Any:
    child = (await handle.state()).get("child")
    return child if child not in (None, first) else None


async def test_a_workflow_reset_twice_runs_from_each_reset_and_replays(
    db: loom.Database, wid: str
) -> None:
    handle = await order_in(db, wid, WorkflowStatus.COMPLETED)
    assert await handle.reset("ship", reason="one") is ResetOutcome.RESET
    assert await handle.reset("reserve", reason="two") is ResetOutcome.RESET  # before any run
    async with worker(db):
        final = await handle.result(timeout=10)
    assert final["log"] == rw.STEPS
    assert calls(wid) == [1, 2, 2]  # the first reset's ship was superseded before it ran
    assert await handle.reset("ship") is ResetOutcome.RESET
    async with worker(db):
        final = await handle.result(timeout=10)
    assert calls(wid) == [1, 2, 3] and final["ship"] == "ship-3"
    resets = of_type(await handle.events(), EventType.WORKFLOW_RESET)
    assert [e.payload["to_step"] for e in resets] == ["ship", "reserve", "ship"]
    [report] = await db.check_replay([wid])
    assert report.ok, report


async def test_a_child_is_reset_like_any_workflow_and_still_reports_to_its_parent(
    db: loom.Database, wid: str
) -> None:
    parent = await db.start_workflow(rw.Parent, workflow_id=wid)
    async with worker(db):
        child_id = await eventually(lambda: _state_value(parent, "child"), what="the child")
        child = db.get_workflow(child_id)
        await eventually(lambda: waiting_for(child, "release"), what="the child waiting")
        assert await child.reset("wait", reason="again") is ResetOutcome.RESET
        await eventually(lambda: waiting_for(child, "release"), what="the child waiting again")
        assert await parent.status() is WorkflowStatus.RUNNING
        await child.signal("release", "ok")
        final = await parent.result(timeout=10)
        assert final["result"] == {"got": "ok"}
        # The child of a finished parent runs again on its own: the parent is not touched.
        parent_last = (await parent.describe()).last_seq
        assert await child.reset("wait") is ResetOutcome.RESET
        assert (await child.result(timeout=10)) == {"got": "ok"}  # its signal, delivered again
    assert (await child.describe()).parent_id == wid
    assert (await parent.describe()).last_seq == parent_last
    assert not of_type(await parent.events(), EventType.WORKFLOW_RESET)


async def test_a_continued_workflow_is_reset_within_its_current_run(
    db: loom.Database, wid: str
) -> None:
    handle = await db.start_workflow(rw.Renewal, workflow_input={"month": 1}, workflow_id=wid)
    async with worker(db):
        await handle.result(timeout=10)
        runs = await handle.runs()
        assert len(runs) == 2
        assert await handle.reset("notify") is ResetOutcome.RESET
        final = await handle.result(timeout=10)
        assert final["notify"] == "notify-2"
        assert await handle.reset("bill") is ResetOutcome.RESET
        final = await handle.result(timeout=10)
    assert final["bill"] == "bill-2-2" and final["notify"] == "notify-3"
    assert rw.CALLS[wid, "bill-1"] == 1  # the earlier run is history: never run again
    assert [r.run_id for r in await handle.runs()] == [r.run_id for r in runs]
    first_run = await handle.events(run_id=runs[0].run_id)
    assert not of_type(first_run, EventType.WORKFLOW_RESET)
    resets = of_type(await handle.events(), EventType.WORKFLOW_RESET)
    assert [e.payload["to_step"] for e in resets] == ["notify", "bill"]


async def test_a_reset_planned_on_a_run_that_continued_as_new_is_planned_again(
    db: loom.Database, wid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workflow continues as new between the reading of its history and the reset, and its
    new run reaches the same length: the reset is planned again on the new run (its signals,
    its state), not applied to it as planned on the old one."""
    handle = await db.start_workflow(rw.Rounds, workflow_id=wid)
    async with worker(db):
        await eventually(lambda: waiting_for(handle, "next"), what="the first run waiting")
        await handle.signal("next", "A")
        await eventually(lambda: waiting_for(handle, "more"), what="the first run's second step")
        stale = (await db.store.get_workflow(wid), await db.store.load_history(wid))
        await handle.signal("more", 1)
        await eventually(lambda: _new_run_waits(handle, "next"), what="the second run waiting")
        await handle.signal("next", "B")
        await eventually(lambda: _new_run_waits(handle, "more"), what="its second step")
    assert (await handle.describe()).last_seq == stale[1][-1].seq  # the same length
    reads = {"record": [stale[0]], "history": [stale[1]]}
    get_workflow, load_history = db.store.get_workflow, db.store.load_history

    async def record_read_before(workflow_id: str) -> Any:
        return reads["record"].pop() if reads["record"] else await get_workflow(workflow_id)

    async def history_read_before(workflow_id: str) -> Any:
        return reads["history"].pop() if reads["history"] else await load_history(workflow_id)

    monkeypatch.setattr(db.store, "get_workflow", record_read_before)
    monkeypatch.setattr(db.store, "load_history", history_read_before)
    assert await handle.reset("first") is ResetOutcome.RESET
    monkeypatch.undo()
    assert [(s.name, s.payload) for s in await db.store.read_signals(wid)] == [("next", "B")]
    [reset] = of_type(await handle.events(), EventType.WORKFLOW_RESET)
    assert reset.payload == {"to_step": "first", "index": 0}
    assert len(await handle.runs()) == 2


async def _new_run_waits(handle: loom.WorkflowHandle[Any], signal: str) -> bool:
    return len(await handle.runs()) == 2 and await waiting_for(handle, signal)


async def test_bulk_start_and_reset_with_encrypted_payloads(db_url: str, wid: str) -> None:
    """Under a payload codec (a fresh nonce per encoding), a batch started again is still
    idempotent, and a reset's state, re-sent signals and reason are stored encoded."""
    from loom.payload_codecs import AesGcmCodec, CodecChain

    codec = CodecChain(AesGcmCodec({"k1": AesGcmCodec.generate_key()}))
    async with loom.Database(db_url, codec=codec) as db:
        await db.migrate_up()
        batch = [loom.StartRequest(rw.Order, {"n": n}, f"{wid}-{n}") for n in range(3)]
        await db.start_workflows(batch)
        await db.start_workflows(batch)  # the same inputs: kept
        with pytest.raises(loom.WorkflowAlreadyExistsError, match="different input"):
            await db.start_workflows([loom.StartRequest(rw.Order, {"n": 9}, f"{wid}-0")])
        handle = db.get_workflow(f"{wid}-0")
        async with worker(db):
            await handle.result(timeout=10)
            assert await handle.reset("ship", reason="a secret reason") is ResetOutcome.RESET
            final = await handle.result(timeout=10)
        assert final["log"] == rw.STEPS
        [reset] = of_type(await handle.events(), EventType.WORKFLOW_RESET)
        assert reset.payload["reason"] == "a secret reason"
    async with loom.Database(db_url) as plain:  # no key: the stored reason is not readable
        raw = await plain.store.inner.load_history(f"{wid}-0")
        [stored] = [e for e in raw if e.type is EventType.WORKFLOW_RESET]
        assert "a secret reason" not in str(stored.payload)


async def test_a_bulk_reset_given_an_id_twice_resets_it_once(db: loom.Database, wid: str) -> None:
    handle = await order_in(db, wid, WorkflowStatus.COMPLETED)
    results = await db.bulk_action("reset", [wid, "no-such-workflow", wid], to_step="ship")
    assert [(r.workflow_id, r.ok) for r in results] == [(wid, True), ("no-such-workflow", False)]
    assert len(of_type(await handle.events(), EventType.WORKFLOW_RESET)) == 1
