"""Durability under real process death.

Worker processes run ``crash_Multi`` workflows (tests/crashload.py) and are killed with SIGKILL
at random moments, over and over; each new worker takes over the dead one's workflows once their
short lease runs out. At the end every workflow must be COMPLETED with the state and history a
crash-free run produces, every activity result recorded exactly once, and every activity executed
at least once (the execution log kept outside Loom shows re-executions after kills). The
heartbeating activity resumes from its last recorded details after a kill, never from further
than it got. A schedule fires every couple of seconds all along (catching up the slots that
fell while no worker ran): each of its slots from the first to the last starts exactly one run,
which completes with its one activity recorded once.
than it got. The children run on a queue limited to 2 at once: the slots the dead workers held
come back when their leases run out, and the queue ends with nothing running or waiting.

The random kill times come from ``LOOM_KILL_SEED`` (default below), so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import os
import random
import signal
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import crashload
import loom
from loom import EventType, WorkflowStatus
from loom.core.history import decision_key
from support import eventually
from support.workers import read_text, spawn_crashload_worker

pytestmark = [pytest.mark.processes, pytest.mark.slow]

SEED = int(os.environ.get("LOOM_KILL_SEED", "20240611"))
WORKFLOWS = 20
ROUNDS = 30
LEASE_SECONDS = 0.5
WORKER_CONCURRENCY = 2
KILL_AFTER = (0.0, 0.6)  # seconds after the worker reported ready
TICK_SCHEDULE = "kill-tick"
TICK_EVERY = 2  # seconds between the schedule's slots


def in_flight_activities(events: list[loom.Event]) -> int:
    """Activities scheduled in the history whose result is not recorded yet."""
    scheduled = {e.seq for e in events if e.type is EventType.ACTIVITY_SCHEDULED}
    done = {e.payload["scheduled"] for e in events if e.type is EventType.ACTIVITY_COMPLETED}
    return len(scheduled - done)


def shape(events: list[loom.Event]) -> list[tuple[str, str | None]]:
    """The history without times and seqs: each event's kind and decision name, in order."""
    return [(e.type.value, decision_key(e.type, e.payload)) for e in events]


@dataclasses.dataclass
class ExecutionLog:
    """The execution log (tests/execution_log.py), read back."""

    starts: collections.Counter[tuple[str, str]]
    """Executions begun, per (workflow, activity label)."""
    ends: collections.Counter[tuple[str, str]]
    """Executions that did their work, per (workflow, activity label)."""
    pids: set[str]
    """The processes that ran activities."""
    lines: list[tuple[str, str, str, str]]
    """Every line, in the order written: (what, workflow, label, pid)."""


def read_log(path: Path) -> ExecutionLog:
    log = ExecutionLog(collections.Counter(), collections.Counter(), set(), [])
    for line in path.read_text().splitlines():
        what, workflow_id, label, pid = line.split()
        log.lines.append((what, workflow_id, label, pid))
        if what in ("start", "end"):
            (log.starts if what == "start" else log.ends)[(workflow_id, label)] += 1
            log.pids.add(pid)
    return log


def check_scan_resumes(log: ExecutionLog, ids: list[str]) -> int:
    """The heartbeating activity's invariants: a run resumes only where an earlier run got to
    (its heartbeat details never run ahead of the work), and every chunk was done. Returns how
    many runs resumed from an earlier run's details (after a kill: there are no retries)."""
    done: set[tuple[str, int]] = set()
    resumed = 0
    for what, wid, label, _ in log.lines:
        if what == "chunk" and label.startswith("reserve.scan#"):
            done.add((wid, int(label.split("#")[1])))
        elif what == "resume":
            position = int(label.split("@")[1])
            assert 0 <= position <= crashload.SCAN_CHUNKS, (wid, label)
            if position:
                resumed += 1
                assert (wid, position - 1) in done, f"{wid} resumed at {position}, not reached"
    assert done == {(wid, i) for wid in ids for i in range(crashload.SCAN_CHUNKS)}
    return resumed


def slot_of(workflow_id: str) -> float:
    """The slot a schedule's run is named after: ``schedule:<name>:<ISO UTC>``."""
    stamp = workflow_id.split(":", 2)[2]
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


async def ticks_overdue(db: loom.Database, slots: int) -> bool:
    """At least ``slots`` of the schedule's slots are due and not fired (no worker runs)."""
    upcoming = (await db.get_schedule(TICK_SCHEDULE)).next_run
    return upcoming is not None and upcoming.timestamp() < time.time() - TICK_EVERY * (slots - 1)


async def check_ticks(db: loom.Database, ticks: list[str]) -> int:
    """The schedule's runs: one per slot, none missed from the first to the last, each
    completed with its activity recorded once. Returns how many slots fired late (caught up
    after a downtime)."""
    slots = sorted(slot_of(wid) for wid in ticks)
    assert len(slots) == len(set(slots)), "a slot fired twice"
    assert slots == [slots[0] + TICK_EVERY * i for i in range(len(slots))], "a slot was missed"
    late = 0
    for wid in ticks:
        handle = db.get_workflow(wid)
        events = await handle.events()
        assert events[0].payload["schedule"] == {
            "name": TICK_SCHEDULE,
            "slot": wid.split(":", 2)[2],
        }
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), wid
        [work] = [e for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
        [done] = [e for e in events if e.type is EventType.ACTIVITY_COMPLETED]
        assert done.payload["scheduled"] == work.seq, wid
        expected = crashload.mix(crashload.TICK_LABEL, crashload.TICK_VALUE)
        assert await handle.result(timeout=5) == {"ticked": expected}
        late += events[0].timestamp - slot_of(wid) > 1.0
    return late


async def run_until_all_completed(
    db: loom.Database, ids: list[str], *, timeout: float
) -> dict[str, loom.WorkflowStatus]:
    """Run an in-process worker until every workflow ended; its statuses."""
    deadline = time.monotonic() + timeout
    async with loom.Worker(db, concurrency=8, poll_interval=0.05, lease_seconds=LEASE_SECONDS):
        while True:
            statuses = {wid: await db.get_workflow(wid).status() for wid in ids}
            if all(s is not WorkflowStatus.RUNNING for s in statuses.values()):
                return statuses
            if time.monotonic() > deadline:
                return statuses
            await asyncio.sleep(0.05)


async def test_sigkilled_workers_lose_nothing_and_record_each_result_once(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    log = tmp_path / "executions.log"
    ids = [f"kill-{i:02d}" for i in range(WORKFLOWS)]
    inputs = {wid: crashload.make_input(i, str(log), rng) for i, wid in enumerate(ids)}
    initial = {wid: {"total": 1000 * i, "owner": wid} for i, wid in enumerate(ids)}
    for wid in ids:
        await db.start_workflow(
            crashload.CrashMulti,
            workflow_input=inputs[wid],
            initial_state=initial[wid],
            workflow_id=wid,
        )

    # A schedule fires all along, whichever worker is alive; slots that fall while none is are
    # caught up by the next one.
    await db.create_schedule(
        TICK_SCHEDULE,
        crashload.CrashTick,
        every=f"{TICK_EVERY}s",
        input={"log": str(log)},
        overlap="allow_all",
        catch_up="all",
        catch_up_limit=1000,
    )

    # Kill a worker process at a random moment, again and again.
    stderr_path = tmp_path / "workers.stderr"
    interrupted_rounds = 0  # rounds whose worker died holding a workflow it had advanced
    activity_kills = 0  # workflows whose worker died while one of their activities was running
    completed_per_round = []
    last_seq = {wid: 1 for wid in ids}
    for round_number in range(ROUNDS):
        proc = await spawn_crashload_worker(
            db_url, stderr_path, concurrency=WORKER_CONCURRENCY, lease_seconds=LEASE_SECONDS
        )
        await asyncio.sleep(rng.uniform(*KILL_AFTER))  # the kill point: let it run that long
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL, read_text(stderr_path)

        # Only this round's worker ran since the last look: a workflow that moved on and is still
        # leased was in its hands when it died.
        records = [await db.get_workflow(wid).describe() for wid in ids]
        half_done = [
            r
            for r in records
            if r.status is WorkflowStatus.RUNNING
            and r.leased
            and r.last_seq > last_seq[r.workflow_id]
        ]
        last_seq = {r.workflow_id: r.last_seq for r in records}
        interrupted_rounds += bool(half_done)
        for r in half_done:
            activity_kills += (
                in_flight_activities(await db.get_workflow(r.workflow_id).events()) > 0
            )
        completed_per_round.append(sum(r.status is WorkflowStatus.COMPLETED for r in records))
        if round_number == ROUNDS // 2:  # a longer downtime: two slots fall with no worker
            await eventually(lambda: ticks_overdue(db, 2), timeout=30, what="two missed slots")

    # The kills landed mid-flight: workflows were left half done with activities in progress.
    assert interrupted_rounds > 0, completed_per_round
    assert activity_kills > 0, completed_per_round

    # No worker runs now: the schedule stops where the last one left it.
    await db.pause_schedule(TICK_SCHEDULE)
    runs = (await db.describe_schedule(TICK_SCHEDULE, runs=1000)).recent_runs
    ticks = [r.workflow_id for r in runs]

    # A last worker (this process) takes over what the dead ones held and finishes everything.
    all_statuses = await run_until_all_completed(db, ids + ticks, timeout=90)
    assert all_statuses == {wid: WorkflowStatus.COMPLETED for wid in ids + ticks}
    statuses = {wid: all_statuses[wid] for wid in ids}
    assert len(ticks) >= 5, ticks  # a 2 s schedule over the rounds; check_ticks checks each slot
    late_ticks = await check_ticks(db, ticks)
    assert late_ticks > 0, "no slot fell while no worker ran"
    # The children's queue kept its limit through the kills, and no slot stayed taken.
    [children] = [q for q in await db.queues() if q.name == crashload.CHILD_QUEUE]
    assert (children.concurrency, children.running, children.depth) == (2, 0, 0)

    # The same workflows, run once without any crash, in another database.
    reference_log = tmp_path / "reference.log"
    async with loom.Database(f"sqlite:///{tmp_path / 'reference.db'}") as reference:
        await reference.migrate_up()
        for wid in ids:
            await reference.start_workflow(
                crashload.CrashMulti,
                workflow_input={**inputs[wid], "log": str(reference_log)},
                initial_state=initial[wid],
                workflow_id=wid,
            )
        assert await run_until_all_completed(reference, ids, timeout=60) == statuses
        reference_states = {wid: await reference.get_workflow(wid).result() for wid in ids}
        reference_shapes = {wid: shape(await reference.get_workflow(wid).events()) for wid in ids}

    executions = read_log(log)
    starts, ends, pids = executions.starts, executions.ends, executions.pids
    scheduled_labels: set[tuple[str, str]] = set()
    for wid in ids:
        handle = db.get_workflow(wid)
        state = await handle.result(timeout=5)
        assert state == crashload.expected_state(inputs[wid], initial[wid])
        assert state == reference_states[wid]

        events = await handle.events()
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), wid
        assert shape(events) == reference_shapes[wid], wid
        assert events[-1].type is EventType.WORKFLOW_COMPLETED
        assert events[-1].payload["state"] == state
        assert not [e for e in events if e.type is EventType.ACTIVITY_FAILED], wid
        # The race in the last step: its timer withdrawn once, never fired.
        [timer] = [e for e in events if e.type is EventType.TIMER_SCHEDULED]
        withdrawn = [e for e in events if e.type is EventType.TIMER_CANCELED]
        assert [e.payload["scheduled"] for e in withdrawn] == [timer.seq], wid
        assert not [e for e in events if e.type is EventType.TIMER_FIRED], wid

        scheduled = {e.seq: e for e in events if e.type is EventType.ACTIVITY_SCHEDULED}
        completions = [e for e in events if e.type is EventType.ACTIVITY_COMPLETED]
        per_schedule = collections.Counter(e.payload["scheduled"] for e in completions)
        assert per_schedule == dict.fromkeys(scheduled, 1), wid
        for done in completions:
            assert done.seq > done.payload["scheduled"]
            args = scheduled[done.payload["scheduled"]].payload["args"]
            assert done.payload["result"] == crashload.expected_result(args)
        labels = sorted(e.payload["args"][2] for e in scheduled.values())
        assert labels == sorted(crashload.LABELS), wid
        scheduled_labels |= {(wid, label) for label in labels}

        # Its child: started once, completed once, its one activity recorded once.
        [started] = [e for e in events if e.type is EventType.CHILD_WORKFLOW_STARTED]
        [ended] = [e for e in events if e.type is EventType.CHILD_WORKFLOW_COMPLETED]
        child_id = started.payload["workflow_id"]
        assert (child_id, ended.payload["scheduled"]) == (f"{wid}/{started.seq}", started.seq)
        assert (await db.get_workflow(child_id).describe()).queue == crashload.CHILD_QUEUE
        assert [c.workflow_id for c in await db.list_workflows(parent_id=wid)] == [child_id]
        child = db.get_workflow(child_id)
        first_run, last_run = await child.runs()  # it continued as new once
        assert (first_run.status, last_run.status) == ("CONTINUED_AS_NEW", "COMPLETED")
        child_events = await child.events()
        assert [e.seq for e in child_events] == list(range(1, len(child_events) + 1)), child_id
        assert child_events[-1].type is EventType.WORKFLOW_COMPLETED
        assert child_events[0].payload["continued_from"] == first_run.run_id
        assert ended.payload["result"] == child_events[-1].payload["state"]
        earlier = await child.events(run_id=first_run.run_id)
        assert earlier[-1].type is EventType.WORKFLOW_CONTINUED_AS_NEW, child_id
        [work] = [e for e in earlier if e.type is EventType.ACTIVITY_SCHEDULED]
        [done] = [e for e in earlier if e.type is EventType.ACTIVITY_COMPLETED]
        assert done.payload["scheduled"] == work.seq, child_id
        scheduled_labels.add((child_id, crashload.CHILD_LABEL))

    scheduled_labels |= {(wid, crashload.TICK_LABEL) for wid in ticks}
    # At least once: every recorded result came from an execution that did its work; nothing ran
    # that the histories do not schedule.
    assert set(starts) == set(ends) == scheduled_labels
    assert all(starts[key] >= ends[key] >= 1 for key in scheduled_labels)
    reexecutions = sum(starts.values()) - len(scheduled_labels)
    # Heartbeats: details recorded by a worker that was then killed reached the next worker.
    resumed = check_scan_resumes(executions, ids)
    assert resumed > 0
    print(
        f"\nkill test (seed {SEED}): {ROUNDS} SIGKILLed workers ({len(pids)} processes ran "
        "activities), "
        f"{interrupted_rounds} rounds left workflows half done, {activity_kills} kills during "
        f"an activity, {len(scheduled_labels)} activities, {sum(starts.values())} executions "
        f"begun, {sum(ends.values())} finished, {reexecutions} re-executions, {resumed} resumed "
        f"from heartbeat details, {len(ticks)} scheduled runs ({late_ticks} caught up after a "
        f"downtime); completed after each round: {completed_per_round}"
    )


RESET_WORKFLOWS = 8
RESET_ROUNDS = 14
FILLERS = 12


async def _reserve_done(handle: loom.WorkflowHandle[Any]) -> bool:
    events = await handle.events()
    return any(
        e.type is EventType.STEP_COMPLETED and e.payload.get("step") == "reserve" for e in events
    )


@pytest.mark.timeout(150)
async def test_resets_bulk_starts_and_retention_survive_sigkilled_workers(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    """The same workload, started by one bulk start, reset from its second step while workers
    that sweep old finished workflows are SIGKILLed: each reset is carried out once (by the
    holder, or by the claim after its death), the first step's activities are never run again,
    every workflow ends with the state a crash-free run reaches, and the finished workflows the
    sweeps were given are gone with every row they owned."""
    from test_retention import _rows_of, _tables_with_workflow_rows

    rng = random.Random(SEED + 1)
    log = tmp_path / "executions.log"
    ids = [f"reset-{i:02d}" for i in range(RESET_WORKFLOWS)]
    inputs = {wid: crashload.make_input(i, str(log), rng) for i, wid in enumerate(ids)}
    initial = {wid: {"total": 7 * i, "owner": wid} for i, wid in enumerate(ids)}
    fillers = [f"filler-{i:02d}" for i in range(FILLERS)]
    await db.start_workflows(
        [
            loom.StartRequest(crashload.CrashMulti, inputs[w], w, initial_state=initial[w])
            for w in ids
        ]
        + [
            loom.StartRequest(
                crashload.CrashResume,
                {"log": str(tmp_path / "fillers.log"), "chunks": 1, "chunk_ms": 5},
                w,
                tags={"kind": "filler"},
            )
            for w in fillers
        ]
    )
    store: Any = db.store
    reset_sent: dict[str, loom.client.ResetOutcome] = {}
    stderr_path = tmp_path / "workers.stderr"
    for _ in range(RESET_ROUNDS):
        proc = await spawn_crashload_worker(
            db_url, stderr_path, concurrency=3, lease_seconds=LEASE_SECONDS, retention=3600
        )
        await asyncio.sleep(rng.uniform(0.1, 0.6))
        for wid in ids:  # a reset from the second step, once its first one completed
            handle = db.get_workflow(wid)
            if wid not in reset_sent and await _reserve_done(handle) and rng.random() < 0.5:
                reset_sent[wid] = await handle.reset("fan_out", reason="kill test")
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL, read_text(stderr_path)
        # The fillers that ended are made two hours old: the next worker's sweep deletes them.
        await store._transact(_backdate(fillers))
    # Any not reset yet is reset now (whatever its status), with a worker of this process.
    async with loom.Worker(db, concurrency=8, poll_interval=0.05, lease_seconds=LEASE_SECONDS):
        for wid in ids:
            if wid not in reset_sent:
                await eventually(lambda w=wid: _reserve_done(db.get_workflow(w)), timeout=60)
                reset_sent[wid] = await db.get_workflow(wid).reset("fan_out", reason="kill test")
    assert len(reset_sent) == len(ids)

    # A last worker with retention, killed once the old fillers are gone.
    proc = await spawn_crashload_worker(
        db_url, stderr_path, concurrency=3, lease_seconds=LEASE_SECONDS, retention=3600
    )
    try:
        for _ in range(3):
            await eventually(lambda: _fillers_ended(db, fillers), timeout=60, what="fillers")
            await store._transact(_backdate(fillers))
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            proc = await spawn_crashload_worker(
                db_url, stderr_path, concurrency=3, lease_seconds=LEASE_SECONDS, retention=3600
            )
        await eventually(lambda: _all_gone(db, fillers), timeout=30, what="fillers deleted")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    statuses = await run_until_all_completed(db, ids, timeout=90)
    assert statuses == {wid: WorkflowStatus.COMPLETED for wid in ids}

    postgres = bool(store.sql.list_param)
    tables = await store._read(_tables_with_workflow_rows(postgres))
    assert await store._read(_rows_of(tables, fillers)) == dict.fromkeys(tables, 0)
    assert await db.list_workflows(tags={"kind": "filler"}) == []

    executions = read_log(log)
    for wid in ids:
        handle = db.get_workflow(wid)
        assert await handle.result(timeout=5) == crashload.expected_state(
            inputs[wid], initial[wid]
        ), wid
        events = await handle.events()
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), wid
        [reset] = [e for e in events if e.type is EventType.WORKFLOW_RESET]
        assert (reset.payload["to_step"], reset.payload["index"]) == ("fan_out", 1), wid
        scheduled = {e.seq: e for e in events if e.type is EventType.ACTIVITY_SCHEDULED}
        per_schedule = collections.Counter(
            e.payload["scheduled"] for e in events if e.type is EventType.ACTIVITY_COMPLETED
        )
        assert all(n == 1 for n in per_schedule.values()), wid
        # The first step ran once: its activities are scheduled once in the whole history.
        labels = collections.Counter(e.payload["args"][2] for e in scheduled.values())
        for label in ("reserve.scan", "reserve.hold", "reserve.confirm"):
            assert labels[label] == 1, (wid, label)
            assert executions.ends[(wid, label)] >= 1
        # After the reset, every activity of the steps that ran again is recorded once.
        after = [e for e in scheduled.values() if e.seq > reset.seq]
        assert sorted(e.payload["args"][2] for e in after) == sorted(
            ["fan.left", "fan.right", "finish.seal"]
        ), wid
        assert all(per_schedule[e.seq] == 1 for e in after), wid
        # Its last child is the one whose result it kept; one from before the reset ended too.
        children = await db.list_workflows(parent_id=wid, limit=-1)
        assert {c.status for c in children} <= {WorkflowStatus.COMPLETED, WorkflowStatus.CANCELED}
    [report] = await db.check_replay(ids[:1])
    assert report.ok, report
    print(f"\nreset kill test (seed {SEED + 1}): resets {collections.Counter(reset_sent.values())}")


def _backdate(workflow_ids: list[str]) -> Any:
    from loom.store.statements import run

    for wid in workflow_ids:
        yield run(
            "UPDATE workflows SET updated_at = ? WHERE id = ? AND status = 'COMPLETED' "
            "AND updated_at > ?",
            time.time() - 7200,
            wid,
            time.time() - 3600,
        )


async def _fillers_ended(db: loom.Database, fillers: list[str]) -> bool:
    for wid in fillers:
        record = await db.find_workflow(wid)
        if record is not None and record.status is WorkflowStatus.RUNNING:
            return False
    return True


async def _all_gone(db: loom.Database, fillers: list[str]) -> bool:
    return all([await db.find_workflow(w) is None for w in fillers])
