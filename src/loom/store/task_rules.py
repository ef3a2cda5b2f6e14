"""The store's rules for activity tasks: activities dispatched to the workers serving their queue.
Shared by both dialects, like every ``*_rules`` module; the claim, which counts against the queues'
limits, is ``queue_rules.claim`` with ``queue_rules.take_tasks``.

A task is one attempt, keyed (workflow_id, seq, attempt). Its life:

- **dispatch** (:func:`dispatch`), in the commit that records the activity's scheduling (or the
  failure that decided its retry): inserted ``ready``, ``ON CONFLICT DO NOTHING``, so a driver
  that claims the workflow again after a crash and dispatches again changes nothing;
- **claim** (``queue_rules.take_tasks``): ``leased``, ``lease_epoch + 1``, ``ready_at`` at the
  lease's end (a dead worker's task is claimable again then), renewed by :func:`renew`;
- **completion** (:func:`complete`), fenced by the task's lease epoch: ``done`` with its
  outcome, and its workflow made ready if parked;
- **delivery** (:func:`settle`): the workflow's commit that records the outcome deletes the row
  in the same transaction, so an outcome is recorded exactly once;
- **withdrawal and end** (:func:`drop`): a task not running is deleted; a running one is asked
  to stop (``cancel_requested``), and its worker deletes it when the attempt has stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from loom.status import WorkflowStatus
from loom.store.base import (
    ActivityTask,
    CommitOutcome,
    Dispatch,
    HeartbeatRow,
    TaskInFlight,
    TaskOutcome,
)
from loom.store.common import Row, dump
from loom.store.statements import Dialect, Op, Rule, many, rows, run, wake_parked

TASK_KEY = "workflow_id = ? AND seq = ? AND attempt = ?"
TASK_COLUMNS = "workflow_id, seq, attempt, run_id, queue, activity, lease_epoch"


def key_of(task: ActivityTask) -> tuple[str, int, int]:
    return (task.workflow_id, task.seq, task.attempt)


def task_of(row: Row) -> ActivityTask:
    return ActivityTask(
        row["workflow_id"],
        int(row["seq"]),
        int(row["attempt"]),
        row["run_id"],
        row["queue"],
        row["activity"],
        int(row["lease_epoch"]),
    )


# -- the workflow's commit ------------------------------------------------------------------
def dispatch(workflow_id: str, dispatches: Sequence[Dispatch], now: float) -> Op:
    """Insert the tasks of ``dispatches``, each with its workflow's run and priority."""
    return many(
        "INSERT INTO activity_tasks (workflow_id, seq, attempt, run_id, queue, priority, "
        "activity, ready_at, created_at) SELECT id, ?, ?, run_id, ?, priority, ?, ?, ? "
        "FROM workflows WHERE id = ? ON CONFLICT DO NOTHING",
        [(x.seq, x.attempt, x.queue, x.activity, x.ready_at, now, workflow_id) for x in dispatches],
    )


def settle(workflow_id: str, settled: Sequence[tuple[int, int]]) -> Op:
    """Delete the done tasks whose outcomes the same commit records."""
    return many(
        f"DELETE FROM activity_tasks WHERE {TASK_KEY}",
        [(workflow_id, seq, attempt) for seq, attempt in settled],
    )


def drop(d: Dialect, workflow_id: str, seqs: Sequence[int] | None = None) -> Rule[None]:
    """The workflow no longer awaits the activities ``seqs`` (None: any; it ended, was reset or
    continued as new): their tasks not running are deleted; a running one is asked to stop and
    is never claimed again (its worker deletes it once the attempt stopped; should that worker
    die, the row stays, inert, until its workflow is deleted)."""
    cond: str = ""
    args: tuple[Any, ...] = ()
    if seqs is not None:
        where, args = d.among("seq", seqs, "bigint")
        cond = f" AND {where}"
    yield run(
        f"DELETE FROM activity_tasks WHERE workflow_id = ?{cond} AND state <> 'leased'",
        workflow_id,
        *args,
    )
    yield run(
        "UPDATE activity_tasks SET cancel_requested = 1, ready_at = NULL "
        f"WHERE workflow_id = ?{cond} AND state = 'leased'",
        workflow_id,
        *args,
    )


def any_done(workflow_id: str) -> Op:
    """Whether one of the workflow's tasks is done, its outcome not yet recorded: a park that
    finds one makes the workflow ready at once (see :func:`complete`)."""
    return rows(
        "SELECT 1 FROM activity_tasks WHERE workflow_id = ? AND state = 'done' LIMIT 1",
        workflow_id,
    )


# -- the activity's worker ------------------------------------------------------------------
def renew(task: ActivityTask, owner: str, lease_until: float) -> Op:
    """Extend the lease of ``task`` if ``owner`` still holds it under its epoch; the row comes
    back (with whether its stop was asked) only then."""
    return rows(
        # One asked to stop stays out of the claim (ready_at NULL) while its holder stops it.
        "UPDATE activity_tasks SET ready_at = CASE WHEN cancel_requested = 0 "
        "THEN CAST(? AS DOUBLE PRECISION) END, "
        f"lease_expires = ? WHERE {TASK_KEY} AND lease_owner = ? AND lease_epoch = ? "
        "AND state = 'leased' RETURNING cancel_requested",
        lease_until,
        lease_until,
        *key_of(task),
        owner,
        task.lease_epoch,
    )


def outcome_json(outcome: TaskOutcome) -> str:
    return dump(
        {
            "ok": outcome.ok,
            "result": outcome.result,
            "error": outcome.error,
            "retry_at": outcome.retry_at,
            "worker": outcome.worker,
        }
    )


def in_flight(workflow_id: str, row: Row) -> TaskInFlight:
    """What an operator sees of a task: a done one names the worker that ran it (kept in its
    outcome, plain), a leased one its lease holder."""
    worker = row["lease_owner"]
    if row["state"] == "done" and row["outcome"] is not None:
        worker = orjson.loads(row["outcome"]).get("worker")
    return TaskInFlight(
        workflow_id,
        int(row["seq"]),
        int(row["attempt"]),
        row["activity"],
        row["queue"],
        row["state"],
        worker,
        row["ready_at"],
        row["lease_expires"],
        float(row["created_at"]),
    )


def outcome_of(row: Row) -> TaskOutcome:
    data = orjson.loads(row["outcome"])
    return TaskOutcome(
        int(row["seq"]),
        int(row["attempt"]),
        bool(data["ok"]),
        data.get("result"),
        data.get("error"),
        data.get("retry_at"),
        data.get("worker"),
    )


def complete(
    d: Dialect, task: ActivityTask, owner: str, outcome: str | None, now: float
) -> Rule[tuple[bool, bool]]:
    """Record a routed attempt's ``outcome`` (JSON, payloads encoded; None: it was stopped, the
    task goes) under the task's lease; a parked workflow is made ready. Returns (written,
    workflow made ready).

    The workflow's row is locked first, as its own commits lock it, so a completion and a park
    of the same workflow are serialised on that row, whichever comes first (PostgreSQL, READ
    COMMITTED; SQLite has one writer):

    - completion first: the park, once it holds the row, reads the tasks (``any_done``: each
      statement sees what committed before it began) and finds this one done, so it parks
      with ``ready_at = now``;
    - park first: this transaction waits for the row; ``FOR UPDATE`` then reads the row as the
      park left it (no lease), so the workflow is made ready here.

    Either way the outcome is never left waiting on a workflow nobody will claim."""
    [*found] = yield rows(
        f"SELECT status, lease_owner, ready_at FROM workflows WHERE id = ?{d.lock}",
        task.workflow_id,
    )
    held = yield rows(
        "SELECT cancel_requested FROM activity_tasks "
        f"WHERE {TASK_KEY} AND lease_owner = ? AND lease_epoch = ? AND state = 'leased'{d.lock}",
        *key_of(task),
        owner,
        task.lease_epoch,
    )
    if not held:
        return False, False  # the lease moved on, or the task went: a stale holder writes nothing
    running = bool(found) and found[0]["status"] == WorkflowStatus.RUNNING
    if outcome is None or held[0]["cancel_requested"] or not running:
        yield run(f"DELETE FROM activity_tasks WHERE {TASK_KEY}", *key_of(task))
        return True, False
    yield run(
        "UPDATE activity_tasks SET state = 'done', outcome = ?, ready_at = NULL, "
        f"lease_owner = NULL, lease_expires = NULL WHERE {TASK_KEY}",
        outcome,
        *key_of(task),
    )
    return True, (yield from wake_parked(found[0], task.workflow_id, now))


def heartbeat(
    d: Dialect, task: ActivityTask, beat: HeartbeatRow, upsert: str
) -> Rule[CommitOutcome]:
    """Record a routed attempt's heartbeat (``upsert``: ``lease_rules.RECORD_HEARTBEAT``),
    fenced by its task's lease epoch; CANCELED, and not written, when its stop was asked: its
    workflow no longer awaits it (it ended, was reset or gave it up), so its details would serve
    no retry and would outlive the end that deleted its heartbeats. Only the task's row is
    locked, before the heartbeat's, the order a workflow's end deletes them in."""
    held = yield rows(
        "SELECT cancel_requested FROM activity_tasks "
        f"WHERE {TASK_KEY} AND lease_epoch = ? AND state = 'leased'{d.lock}",
        *key_of(task),
        task.lease_epoch,
    )
    if not held:
        return CommitOutcome.FENCED
    if held[0]["cancel_requested"]:
        return CommitOutcome.CANCELED
    yield run(upsert, task.workflow_id, *beat)
    return CommitOutcome.OK
