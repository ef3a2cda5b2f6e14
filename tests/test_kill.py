"""Durability under real process death.

Worker processes run ``crash_Multi`` workflows (tests/crashload.py) and are killed with SIGKILL
at random moments, over and over; each new worker takes over the dead one's workflows once their
short lease runs out. At the end every workflow must be COMPLETED with the state and history a
crash-free run produces, every activity result recorded exactly once, and every activity executed
at least once (the execution log kept outside Loom shows re-executions after kills). The
heartbeating activity resumes from its last recorded details after a kill, never from further
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
from pathlib import Path

import pytest

import crashload
import loom
from loom import EventType, WorkflowStatus
from loom.core.history import decision_key
from support.workers import read_text, spawn_crashload_worker

pytestmark = [pytest.mark.processes, pytest.mark.slow]

SEED = int(os.environ.get("LOOM_KILL_SEED", "20240611"))
WORKFLOWS = 20
ROUNDS = 30
LEASE_SECONDS = 0.5
WORKER_CONCURRENCY = 2
KILL_AFTER = (0.0, 0.6)  # seconds after the worker reported ready


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

    # Kill a worker process at a random moment, again and again.
    stderr_path = tmp_path / "workers.stderr"
    interrupted_rounds = 0  # rounds whose worker died holding a workflow it had advanced
    activity_kills = 0  # workflows whose worker died while one of their activities was running
    completed_per_round = []
    last_seq = {wid: 1 for wid in ids}
    for _ in range(ROUNDS):
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

    # The kills landed mid-flight: workflows were left half done with activities in progress.
    assert interrupted_rounds > 0, completed_per_round
    assert activity_kills > 0, completed_per_round

    # A last worker (this process) takes over what the dead ones held and finishes everything.
    statuses = await run_until_all_completed(db, ids, timeout=60)
    assert statuses == {wid: WorkflowStatus.COMPLETED for wid in ids}
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
        f"from heartbeat details; completed after each round: {completed_per_round}"
    )
