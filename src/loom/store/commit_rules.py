"""The store's rules for a worker's commits, decided once for every SQL database (see
``statements``): what a held workflow's driver writes, in batches (:func:`commit_batch`).

Each commit is fenced by its lease (:class:`Fence`, read with the rows locked in id order by
:func:`lock_fences`); a requested cancel or reset wins over what was decided (``cancel_rules``,
``reset_rules``); otherwise its events and row are written, the children it started are
inserted, a park's ``ready_at`` is set (a buffered signal it waits for makes it ready at once),
its activity tasks are dispatched or settled (``task_rules``), and a run's end tells its
children and parent and deletes its heartbeats. A run that continues as new is ended and the
next begun in the same transaction (:func:`continue_as_new`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from loom.core.history import Event, EventType, decided_before_cancel
from loom.status import WorkflowStatus
from loom.store import task_rules
from loom.store.base import Commit, CommitOutcome
from loom.store.cancel_rules import cancel_now, child_ended, children_of, parent_close
from loom.store.common import Row, dump
from loom.store.reset_rules import reset_now, reset_of
from loom.store.start_rules import new_run_id
from loom.store.statements import Dialect, EventRow, Op, Rule, event_rows, events, rows, run


# -- commits --------------------------------------------------------------------------------
@dataclass(slots=True)
class Fence:
    """A locked workflow row as a commit batch sees it, kept current as the batch applies."""

    epoch: int
    status: str
    cancel_requested: str | None
    last_seq: int
    parent_id: str | None = None
    reset_requested: str | None = None


@dataclass(slots=True)
class Prepared:
    """A commit with its payloads encoded (done before the transaction, outside its lock)."""

    commit: Commit
    now: float
    events: list[EventRow]
    state: str
    result: str | None
    error: str | None

    @classmethod
    def of(cls, commit: Commit, now: float) -> Prepared:
        return cls(
            commit,
            now,
            event_rows(commit.workflow_id, commit.events),
            dump(commit.state),
            None if commit.result is None else dump(commit.result),
            None if commit.error is None else dump(commit.error),
        )


def lock_fences(d: Dialect, ids: Sequence[str]) -> Op:
    """Lock the rows of ``ids`` in id order (so two batches never deadlock), reading their
    :func:`fences`."""
    where, args = d.among("id", sorted(set(ids)) if len(ids) > 1 else ids)
    return rows(
        "SELECT id, lease_epoch, status, cancel_requested, last_seq, parent_id, reset_requested "
        f"FROM workflows WHERE {where} ORDER BY id{d.lock}",
        *args,
    )


def fences(locked: Sequence[Row]) -> dict[str, Fence]:
    """The rows read by :func:`lock_fences`, by id."""
    return {
        r["id"]: Fence(
            r["lease_epoch"],
            r["status"],
            r["cancel_requested"],
            r["last_seq"],
            r["parent_id"],
            r["reset_requested"],
        )
        for r in locked
    }


def commit_batch(d: Dialect, batch: Sequence[Prepared]) -> Rule[list[tuple[CommitOutcome, Any]]]:
    """Record every commit of ``batch`` (or fence it); each outcome comes with the ``ready_at``
    of a workflow the commit released (for announcing work), else None."""
    fenced = fences((yield lock_fences(d, [p.commit.workflow_id for p in batch])))
    written: list[EventRow] = []
    outcomes = []
    for p in batch:
        outcomes.append((yield from commit_one(d, p, fenced, written)))
    if written:
        yield events(written)
    ended = [
        p.commit.workflow_id
        for p, (outcome, _) in zip(batch, outcomes, strict=True)
        if outcome is CommitOutcome.OK
        and p.commit.status is not WorkflowStatus.RUNNING
        and p.commit.heartbeats
    ]
    if ended:  # one statement for the batch (canceled ones: in cancel_now)
        for p, (outcome, _) in zip(batch, outcomes, strict=True):
            # Its tasks go before its heartbeats: the order a routed attempt's heartbeat
            # locks them in (``task_rules.heartbeat``), so the two never deadlock.
            if p.commit.routed and outcome is CommitOutcome.OK and p.commit.workflow_id in ended:
                yield from task_rules.drop(d, p.commit.workflow_id)
        where, args = d.among("workflow_id", ended)
        yield run(f"DELETE FROM activity_heartbeats WHERE {where}", *args)
    return outcomes


def commit_one(
    d: Dialect, p: Prepared, fenced: dict[str, Fence], written: list[EventRow]
) -> Rule[tuple[CommitOutcome, Any]]:
    c, now = p.commit, p.now
    fence = fenced.get(c.workflow_id)
    if fence is None or fence.epoch != c.lease_epoch or fence.status != WorkflowStatus.RUNNING:
        return CommitOutcome.FENCED, None  # the lease moved on (or the workflow ended)
    if fence.cancel_requested is not None:  # a cancel request wins over what was decided
        decided = decided_before_cancel(c.events, fence.last_seq)
        reason = orjson.loads(fence.cancel_requested)
        yield from cancel_now(d, c.workflow_id, reason, fence.last_seq, now, written, decided)
        fence.status, fence.epoch, fence.cancel_requested = "CANCELED", fence.epoch + 1, None
        return CommitOutcome.CANCELED, now
    if fence.reset_requested is not None:  # so does a reset: nothing of the commit is kept
        yield from reset_now(d, c.workflow_id, reset_of(fence.reset_requested), now, written)
        fence.epoch, fence.last_seq = fence.epoch + 1, fence.last_seq + 1
        fence.reset_requested = None
        return CommitOutcome.RESET, now
    new_last = fence.last_seq
    if c.events:
        if c.events[0].seq != fence.last_seq + 1:
            return CommitOutcome.FENCED, None
        new_last = c.events[-1].seq
    if c.consumed_signals:
        where, args = d.among("id", c.consumed_signals, "bigint")
        yield run(f"DELETE FROM signals WHERE {where}", *args)
    if c.settled_tasks:  # their outcomes are among the events written: recorded once
        yield task_rules.settle(c.workflow_id, c.settled_tasks)
    if c.withdrawn_tasks:
        yield from task_rules.drop(d, c.workflow_id, c.withdrawn_tasks)
    # Children start before the park below looks for buffered messages: a child whose id was
    # taken leaves its failure there, for the parent to take at once.
    woke = yield from children_of(d, c.workflow_id, c.events, now, written)
    if c.continue_as_new is not None and c.events:  # the run ends; the next begins in its place
        yield events(p.events)  # before the run's history is put away
        yield from continue_as_new(d, c, fence, now, written)
        return CommitOutcome.OK, now
    written.extend(p.events)
    release = True
    if c.status is not WorkflowStatus.RUNNING:
        ready_at = None
        if c.status is WorkflowStatus.COMPLETED:  # a FAILED one keeps them for a retry
            yield run("DELETE FROM signals WHERE workflow_id = ?", c.workflow_id)
    elif c.release:
        ready_at = c.ready_at
        if c.routed and ready_at != now and (yield task_rules.any_done(c.workflow_id)):
            ready_at = now  # a routed activity ended while it was held (task_rules.complete)
        if c.wait_signals and ready_at != now:  # one it waits for is buffered: ready at once
            where, args = d.among("name", c.wait_signals)
            if (
                yield rows(
                    f"SELECT 1 FROM signals WHERE workflow_id = ? AND {where} LIMIT 1",
                    c.workflow_id,
                    *args,
                )
            ):
                ready_at = now
    else:
        ready_at, release = c.lease_until, False  # still held: ready again when the lease ends
    if c.dispatches and c.status is WorkflowStatus.RUNNING:
        yield task_rules.dispatch(c.workflow_id, c.dispatches, now)
    yield run(
        _RELEASE if release else _KEEP,
        c.status.value,
        p.state,
        p.result,
        p.error,
        c.current_step,
        now,
        new_last,
        ready_at,
        c.workflow_id,
    )
    fence.status, fence.last_seq = c.status.value, new_last
    if c.status is not WorkflowStatus.RUNNING:  # it ended: its children and parent are told
        if c.children:
            woke |= yield from parent_close(d, c.workflow_id, now, written)
        if fence.parent_id is not None:
            outcome: dict[str, Any] = {"workflow_id": c.workflow_id, "status": c.status.value}
            if c.status is WorkflowStatus.COMPLETED:
                outcome["result"] = c.result
            else:
                outcome["error"] = c.error
            woke |= yield from child_ended(d, fence.parent_id, outcome, now)
    if woke or c.dispatches:  # a child started, a parent or child was woken, or tasks sent
        return CommitOutcome.OK, now
    return CommitOutcome.OK, ready_at if release else None


_UPDATE = (
    "UPDATE workflows SET status = ?, state = ?, result = ?, error = ?, current_step = ?, "
    "updated_at = ?, last_seq = ?, ready_at = ?, lease_owner = {} WHERE id = ?"
)
_RELEASE, _KEEP = _UPDATE.format("NULL"), _UPDATE.format("lease_owner")


# -- continue-as-new ------------------------------------------------------------------------
def continue_as_new(
    d: Dialect, c: Commit, fence: Fence, now: float, written: list[EventRow]
) -> Rule[None]:
    """Put the ended run's history away (``run_events``, under its run id) and begin the next
    run in the workflow's row: a new run id, the given input and state, a first event, ready at
    once and leased to nobody. Buffered signals stay for the new run; the run's "cancel"
    children are canceled; a child's next run keeps its parent."""
    assert c.continue_as_new is not None
    wid = c.workflow_id
    [row] = yield rows("SELECT run_id, name, version FROM workflows WHERE id = ?", wid)
    [started] = yield rows("SELECT payload FROM events WHERE workflow_id = ? AND seq = 1", wid)
    old_run = row["run_id"] or new_run_id()
    yield run(
        "INSERT INTO run_events (workflow_id, run_id, seq, type, payload, created_at) "
        "SELECT workflow_id, ?, seq, type, payload, created_at FROM events WHERE workflow_id = ?",
        old_run,
        wid,
    )
    yield run("DELETE FROM events WHERE workflow_id = ?", wid)
    # The next run numbers its activities afresh: no heartbeat or task of this run may reach
    # them.
    if c.routed:
        yield from task_rules.drop(d, wid)
    yield run("DELETE FROM activity_heartbeats WHERE workflow_id = ?", wid)
    yield from parent_close(d, wid, now, written)
    run_id = new_run_id()
    first: dict[str, Any] = {
        "name": row["name"],
        "version": row["version"],
        "input": c.continue_as_new.get("input"),
        "state": c.continue_as_new.get("state") or {},
        "continued_from": old_run,
    }
    begun = orjson.loads(started["payload"])
    for inherited in ("parent", "trace"):  # a child's next run keeps its parent; the trace goes on
        if begun.get(inherited) is not None:
            first[inherited] = begun[inherited]
    written.extend(event_rows(wid, [Event(1, EventType.WORKFLOW_STARTED, first, now)]))
    yield run(
        "UPDATE workflows SET run_id = ?, input = ?, state = ?, status = 'RUNNING', result = NULL, "
        "error = NULL, current_step = NULL, updated_at = ?, last_seq = 1, ready_at = ?, "
        "lease_owner = NULL, lease_epoch = lease_epoch + 1 WHERE id = ?",
        run_id,
        dump(first["input"]),
        dump(first["state"]),
        now,
        now,
        wid,
    )
    fence.status, fence.last_seq, fence.epoch = "RUNNING", 1, fence.epoch + 1
