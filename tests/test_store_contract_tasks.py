"""The storage contract for activity tasks (routed activities), on every backend, as it is and
behind the codec layer (the ``store`` fixture of ``test_store_contract``): dispatch with the
commit that schedules, claim within the queue's limits, completion fenced by the task's lease,
delivery once, withdrawal, cancel and the workflow's end."""

# ruff: noqa: F811 (each test takes the shared ``store`` fixture imported below)
from __future__ import annotations

import pytest

from loom.core.history import Event, EventType
from loom.queues import QueueLimits
from loom.status import WorkflowStatus
from loom.store.base import (
    ActivityTask,
    CancelOutcome,
    CommitOutcome,
    Dispatch,
    HeartbeatRow,
    Store,
    TaskOutcome,
)
from test_store_contract import LEASE, T0, commit_of, create, store  # noqa: F401 (the fixture)

GPU = ["gpu"]


def scheduled(seq: int, name: str = "render") -> Event:
    return Event(seq, EventType.ACTIVITY_SCHEDULED, {"name": name, "args": [seq], "kwargs": {}}, T0)


async def dispatched(
    store: Store, wid: str = "wf-1", seqs: tuple[int, ...] = (2,), *, park: bool = True
) -> int:
    """Create ``wid``, claim it, schedule activities ``seqs`` dispatched to queue gpu, and
    park it (it waits for nothing else) or keep it held; its lease epoch."""
    await create(store, wid)
    [claim] = await store.claim("wf-worker", ["W"], 1, LEASE, T0)
    commit = commit_of(
        wid,
        claim.lease_epoch,
        [scheduled(seq) for seq in seqs],
        release=park,
        ready_at=None,
        dispatches=tuple(Dispatch(seq, 1, "render", "gpu", T0) for seq in seqs),
        routed=True,
    )
    assert await store.commit(commit, T0) is CommitOutcome.OK
    return claim.lease_epoch


async def claim_one(store: Store, owner: str = "gpu-1", now: float = T0) -> ActivityTask:
    [task] = await store.claim_tasks(owner, ["render"], 5, LEASE, now, GPU)
    return task


async def test_a_dispatch_is_claimed_once_by_a_worker_of_its_queue(store: Store) -> None:
    await dispatched(store)
    assert await store.claim_tasks("cpu-1", ["render"], 5, LEASE, T0, ["default"]) == []
    assert await store.claim_tasks("gpu-1", ["other"], 5, LEASE, T0, GPU) == []
    task = await claim_one(store)
    assert (task.workflow_id, task.seq, task.attempt, task.queue) == ("wf-1", 2, 1, "gpu")
    assert task.lease_epoch == 1
    assert await store.claim_tasks("gpu-2", ["render"], 5, LEASE, T0 + 1, GPU) == []
    # Its arguments are its scheduling's, read from the history (decoded).
    [event] = await store.load_history("wf-1", task.seq - 1, 1)
    assert event.payload["args"] == [2]
    [gpu] = [q for q in await store.queue_stats(T0 + 1) if q.name == "gpu"]
    assert (gpu.depth, gpu.running) == (0, 1)


async def test_dispatching_again_changes_nothing(store: Store) -> None:
    epoch = await dispatched(store, park=False)  # its worker dies after this write
    task = await claim_one(store)
    [claim] = await store.claim("wf-worker", ["W"], 1, LEASE, T0 + LEASE + 1)
    assert claim.lease_epoch == epoch + 1
    again = commit_of(
        "wf-1",
        claim.lease_epoch,
        [],
        release=True,
        dispatches=(Dispatch(2, 1, "render", "gpu", T0),),
        routed=True,
    )
    assert await store.commit(again, T0 + LEASE + 1) is CommitOutcome.OK
    # Still leased to gpu-1 (its lease lives until T0 + LEASE): nothing to claim.
    assert await store.claim_tasks("gpu-2", ["render"], 5, LEASE, T0 + 1, GPU) == []
    assert await store.renew_tasks("gpu-1", [task], T0 + 2 * LEASE) == (set(), set())


async def test_a_completion_wakes_the_parked_workflow_and_is_delivered_once(
    store: Store,
) -> None:
    await dispatched(store)
    assert await store.claim("wf-worker", ["W"], 1, LEASE, T0 + 1) == []  # it waits
    task = await claim_one(store)
    outcome = TaskOutcome(2, 1, True, {"frame": 2}, worker="gpu-1")
    assert await store.complete_task(task, "gpu-1", outcome, T0 + 1)
    assert not await store.complete_task(task, "gpu-1", outcome, T0 + 1)  # done already
    [read] = await store.read_task_outcomes("wf-1")
    assert (read.seq, read.attempt, read.ok, read.result, read.worker) == (
        2,
        1,
        True,
        {"frame": 2},
        "gpu-1",
    )
    [claim] = await store.claim("wf-worker", ["W"], 1, LEASE, T0 + 1)  # ready at once
    completed = Event(
        3, EventType.ACTIVITY_COMPLETED, {"scheduled": 2, "attempt": 1, "result": {"frame": 2}}, T0
    )
    commit = commit_of(
        "wf-1", claim.lease_epoch, [completed], release=True, settled_tasks=((2, 1),), routed=True
    )
    assert await store.commit(commit, T0 + 1) is CommitOutcome.OK
    assert await store.read_task_outcomes("wf-1") == []
    record = await store.get_workflow("wf-1")
    assert record is not None and record.ready_at is None  # it waits for nothing more


async def test_read_tasks_shows_where_each_routed_attempt_stands(store: Store) -> None:
    """Waiting for a worker of its queue, running on its lease holder, then done by the worker
    that ran it (until the workflow records the outcome); with a codec too (plain parts)."""
    await dispatched(store, seqs=(2, 3))
    assert await store.read_tasks("other") == []
    waiting = await store.read_tasks("wf-1")
    assert [(t.seq, t.attempt, t.activity, t.queue, t.state, t.worker) for t in waiting] == [
        (2, 1, "render", "gpu", "ready", None),
        (3, 1, "render", "gpu", "ready", None),
    ]
    assert waiting[0].ready_at == T0 and waiting[0].created_at == T0
    [first, _] = await store.claim_tasks("gpu-1", ["render"], 5, LEASE, T0 + 1, GPU)
    assert await store.complete_task(
        first, "gpu-1", TaskOutcome(first.seq, 1, True, {"x": 1}, worker="gpu-1"), T0 + 2
    )
    done, running = await store.read_tasks("wf-1")
    assert (done.seq, done.state, done.worker, done.ready_at) == (2, "done", "gpu-1", None)
    assert (running.seq, running.state, running.worker) == (3, "leased", "gpu-1")
    assert running.lease_expires == T0 + 1 + LEASE


async def test_a_park_sees_a_task_done_while_the_workflow_was_held(store: Store) -> None:
    await create(store)
    [claim] = await store.claim("wf-worker", ["W"], 1, LEASE, T0)
    keep = commit_of(
        "wf-1",
        claim.lease_epoch,
        [scheduled(2)],
        dispatches=(Dispatch(2, 1, "render", "gpu", T0),),
        routed=True,
    )
    assert await store.commit(keep, T0) is CommitOutcome.OK  # a checkpoint: still held
    task = await claim_one(store)
    assert await store.complete_task(task, "gpu-1", TaskOutcome(2, 1, True, 1), T0 + 1)
    record = await store.get_workflow("wf-1")
    assert record is not None and record.leased  # not taken from its holder
    park = commit_of("wf-1", claim.lease_epoch, [], release=True, ready_at=None, routed=True)
    assert await store.commit(park, T0 + 2) is CommitOutcome.OK
    record = await store.get_workflow("wf-1")
    assert record is not None and record.ready_at == T0 + 2


async def test_a_stale_holder_writes_nothing(store: Store) -> None:
    await dispatched(store)
    first = await claim_one(store)
    # gpu-1 stops renewing; its lease runs out and gpu-2 takes the task over.
    second = await claim_one(store, "gpu-2", T0 + LEASE + 1)
    assert second.lease_epoch == first.lease_epoch + 1
    assert await store.renew_tasks("gpu-1", [first], T0 + 30) == ({("wf-1", 2, 1)}, set())
    beat = HeartbeatRow(2, "render", 1, '{"at": 1}', T0 + 11)
    assert await store.record_task_heartbeat(first, beat) is CommitOutcome.FENCED
    assert not await store.complete_task(first, "gpu-1", TaskOutcome(2, 1, True, 1), T0 + 12)
    assert await store.read_task_outcomes("wf-1") == []
    assert await store.record_task_heartbeat(second, beat) is CommitOutcome.OK
    [recorded] = await store.read_heartbeats("wf-1")
    assert recorded.details == {"at": 1}
    failed = TaskOutcome(2, 1, False, error={"type": "E", "message": "m"}, retry_at=T0 + 20)
    assert await store.complete_task(second, "gpu-2", failed, T0 + 12)
    [read] = await store.read_task_outcomes("wf-1")
    assert not read.ok and read.error == {"type": "E", "message": "m"} and read.retry_at == T0 + 20


async def test_a_withdrawn_task_goes_or_is_asked_to_stop(store: Store) -> None:
    await dispatched(store, seqs=(2, 3), park=False)
    running = await store.claim_tasks("gpu-1", ["render"], 1, LEASE, T0, GPU)
    [task] = running
    [claim] = await store.claim("wf-worker", ["W"], 1, LEASE, T0 + LEASE + 1)
    withdrawn = [
        Event(4 + i, EventType.ACTIVITY_CANCELED, {"scheduled": seq}, T0)
        for i, seq in enumerate((2, 3))
    ]
    commit = commit_of(
        "wf-1", claim.lease_epoch, withdrawn, release=True, withdrawn_tasks=(2, 3), routed=True
    )
    assert await store.commit(commit, T0 + 1) is CommitOutcome.OK
    assert await store.claim_tasks("gpu-2", ["render"], 5, LEASE, T0 + 2, GPU) == []
    assert await store.renew_tasks("gpu-1", [task], T0 + 5) == (set(), {("wf-1", task.seq, 1)})
    assert (
        await store.record_task_heartbeat(task, HeartbeatRow(task.seq, "render", 1, None, T0 + 3))
        is CommitOutcome.CANCELED
    )
    # Whatever it returns, nothing is recorded: the task goes.
    assert await store.complete_task(task, "gpu-1", TaskOutcome(task.seq, 1, True, 1), T0 + 4)
    assert await store.read_task_outcomes("wf-1") == []
    assert [q for q in await store.queue_stats(T0 + 4) if q.name == "gpu"] == []


@pytest.mark.parametrize("end", ["cancel", "complete"])
async def test_a_workflow_that_ends_takes_its_tasks_with_it(store: Store, end: str) -> None:
    await dispatched(store, seqs=(2, 3), park=end == "cancel")
    [task] = await store.claim_tasks("gpu-1", ["render"], 1, LEASE, T0, GPU)
    if end == "cancel":
        assert await store.cancel("wf-1", "enough", T0 + 1) is CancelOutcome.CANCELED
    else:
        [claim] = await store.claim("wf-worker", ["W"], 1, LEASE, T0 + LEASE + 1)
        done = Event(4, EventType.WORKFLOW_COMPLETED, {"state": {}}, T0)
        commit = commit_of(
            "wf-1",
            claim.lease_epoch,
            [done],
            release=True,
            status=WorkflowStatus.COMPLETED,
            routed=True,
        )
        assert await store.commit(commit, T0 + 1) is CommitOutcome.OK
    assert await store.claim_tasks("gpu-2", ["render"], 5, LEASE, T0 + LEASE + 2, GPU) == []
    assert await store.renew_tasks("gpu-1", [task], T0 + 5) == (set(), {("wf-1", task.seq, 1)})
    # The attempt still beats until it stops: told to stop, and nothing is kept of the beat
    # (a workflow that ended has no heartbeats).
    beat = HeartbeatRow(task.seq, "render", 1, '{"at": 5}', T0 + 5)
    assert await store.record_task_heartbeat(task, beat) is CommitOutcome.CANCELED
    assert await store.read_heartbeats("wf-1") == []
    assert await store.complete_task(task, "gpu-1", TaskOutcome(task.seq, 1, True, 1), T0 + 5)
    assert await store.read_task_outcomes("wf-1") == []
    assert await store.read_heartbeats("wf-1") == []


async def test_a_queue_limit_counts_leased_tasks_with_its_workflows(store: Store) -> None:
    await dispatched(store, seqs=(2, 3, 4))
    await store.set_queue(QueueLimits.of("gpu", concurrency=2, rate="3/m"), T0)
    first = await store.claim_tasks("gpu-1", ["render"], 5, LEASE, T0, GPU)
    assert len(first) == 2
    assert await store.claim_tasks("gpu-2", ["render"], 5, LEASE, T0 + 1, None) == []
    assert await store.complete_task(
        first[0], "gpu-1", TaskOutcome(first[0].seq, 1, True, 1), T0 + 1
    )
    # A slot came back, and the window allows a third start.
    [third] = await store.claim_tasks("gpu-2", ["render"], 5, LEASE, T0 + 2, None)
    [gpu] = [q for q in await store.queue_stats(T0 + 2) if q.name == "gpu"]
    assert (gpu.running, gpu.started_in_window) == (2, 3)
    assert third.seq not in {t.seq for t in first}
