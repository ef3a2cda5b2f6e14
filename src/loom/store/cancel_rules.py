"""The store's rules for canceling a workflow, and for the child workflows whose lives are
bound to their parent's by it. One module, because the two call each other: a workflow that
ends (:func:`cancel_now`, or a commit's end) cancels its "cancel"-policy children
(:func:`parent_close`) and tells its parent (:func:`child_ended`); a parent's commit starts the
children it decided and cancels those it withdrew (:func:`children_of`).

A cancel (:func:`cancel`) is carried out at once, unless a worker holds a live lease: then it is
requested, and the holder's next commit (``commit_rules.commit_one``) or the next claim
(``lease_rules.settle_claimed``) carries it out with :func:`cancel_now`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loom.core.history import CHILD_OUTCOME, Event, EventType
from loom.queues import DEFAULT_QUEUE
from loom.status import WorkflowStatus
from loom.store import task_rules
from loom.store.base import CancelOutcome
from loom.store.common import dump, state_after
from loom.store.signal_rules import INSERT_SIGNAL, running_row
from loom.store.start_rules import NEW_COLUMNS_BASE, new_run_id
from loom.store.statements import (
    Dialect,
    EventRow,
    Rule,
    event_rows,
    events,
    rows,
    run,
    wake_parked,
)


def cancel(d: Dialect, workflow_id: str, reason: str | None, now: float) -> Rule[CancelOutcome]:
    """Cancel at once, unless a worker holds a live lease: then request it, for that worker's
    next write (or the next claim, should that worker die) to carry out."""
    row = yield from running_row(d, workflow_id, "cancel")
    if row["lease_owner"] is not None and row["ready_at"] is not None and row["ready_at"] > now:
        yield run(
            "UPDATE workflows SET cancel_requested = ?, reset_requested = NULL WHERE id = ?",
            dump(reason),
            workflow_id,
        )
        return CancelOutcome.REQUESTED
    written: list[EventRow] = []
    yield from cancel_now(d, workflow_id, reason, row["last_seq"], now, written)
    yield events(written)
    return CancelOutcome.CANCELED


def cancel_now(
    d: Dialect,
    workflow_id: str,
    reason: Any,
    last_seq: int,
    now: float,
    written: list[EventRow],
    decided: Sequence[Event] = (),
) -> Rule[None]:
    """End the workflow as CANCELED after ``decided`` (see ``decided_before_cancel``); its
    events are added to ``written``, for the caller to insert. The children it started are
    started, then (the "cancel" ones still running) canceled, and its parent is told."""
    found = yield rows("SELECT state, parent_id FROM workflows WHERE id = ?", workflow_id)
    state = state_after(found[0]["state"], decided)
    seq = last_seq + len(decided) + 1
    canceled = Event(seq, EventType.WORKFLOW_CANCELED, {"reason": reason}, now)
    written.extend(event_rows(workflow_id, [*decided, canceled]))
    yield run(
        "UPDATE workflows SET status = 'CANCELED', ready_at = NULL, lease_owner = NULL, "
        "lease_epoch = lease_epoch + 1, cancel_requested = NULL, reset_requested = NULL, "
        "last_seq = ?, "
        "updated_at = ?, error = ?, state = ? WHERE id = ?",
        seq,
        now,
        dump(canceled_error(reason)),
        state,
        workflow_id,
    )
    yield run("DELETE FROM signals WHERE workflow_id = ?", workflow_id)
    yield from task_rules.drop(d, workflow_id)  # before the heartbeats: see commit_batch
    yield run("DELETE FROM activity_heartbeats WHERE workflow_id = ?", workflow_id)
    yield from children_of(d, workflow_id, decided, now, written)
    yield from parent_close(d, workflow_id, now, written)
    parent_id = found[0]["parent_id"]
    if parent_id is not None:
        ended = {"workflow_id": workflow_id, "status": "CANCELED", "error": canceled_error(reason)}
        yield from child_ended(d, parent_id, ended, now)


def canceled_error(reason: Any) -> dict[str, Any]:
    return {"type": "Canceled", "message": reason}


# -- child workflows ------------------------------------------------------------------------
def children_of(
    d: Dialect, parent_id: str, decided: Sequence[Event], now: float, written: list[EventRow]
) -> Rule[bool]:
    """Start the children that ``decided`` starts and cancel those it withdraws, in the
    parent's transaction (so a child starts exactly when its start is recorded). True when
    it started or woke any."""
    acted = False
    for e in decided:
        if e.type is EventType.CHILD_WORKFLOW_STARTED:
            yield from start_child(d, parent_id, e, now, written)
            acted = True
        elif e.type is EventType.CHILD_WORKFLOW_CANCELED:
            child = yield rows(
                "SELECT id FROM workflows WHERE id = ? AND parent_id = ? AND status = 'RUNNING'",
                str(e.payload.get("workflow_id")),
                parent_id,
            )
            if child:
                yield from cancel(d, child[0]["id"], "withdrawn by its parent", now)
                acted = True
    return acted


CHILD_MARKS = ", ".join("?" * (len(NEW_COLUMNS_BASE.split(",")) + 3))
CHILD_COLUMNS = f"{NEW_COLUMNS_BASE}, parent_id, parent_close_policy, queue"


def start_child(
    d: Dialect, parent_id: str, e: Event, now: float, written: list[EventRow]
) -> Rule[None]:
    """Insert the child the parent's ``e`` (CHILD_WORKFLOW_STARTED) starts, ready at once. When
    its id is taken, the parent is told at once that the child failed."""
    p = e.payload
    child = str(p["workflow_id"])
    first = Event(
        1,
        EventType.WORKFLOW_STARTED,
        {
            "name": p["name"],
            "version": p["version"],
            "input": p.get("input"),
            "state": p.get("state") or {},
            "parent": {"workflow_id": parent_id, "seq": e.seq},
        },
        now,
    )
    if p.get("trace") is not None:  # the context of the parent's step that started it
        first.payload["trace"] = p["trace"]
    inserted = yield rows(
        f"INSERT INTO workflows ({CHILD_COLUMNS}) VALUES ({CHILD_MARKS}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        child,
        p["name"],
        p["version"],
        "RUNNING",
        dump(p.get("input")),
        dump(p.get("state") or {}),
        now,
        now,
        1,
        now,
        new_run_id(),
        parent_id,
        p.get("parent_close_policy") or "cancel",
        p.get("queue") or DEFAULT_QUEUE,
    )
    if inserted:
        written.extend(event_rows(child, [first]))
        return
    taken = {
        "workflow_id": child,
        "status": "FAILED",
        "error": {
            "type": "WorkflowAlreadyExistsError",
            "message": f"a workflow with id {child!r} exists already; give the child another id",
        },
    }
    yield run(INSERT_SIGNAL, parent_id, CHILD_OUTCOME, dump(taken), now)


def child_ended(d: Dialect, parent_id: str, outcome: dict[str, Any], now: float) -> Rule[bool]:
    """Leave the end of a child in its RUNNING parent's signal buffer and make the parent
    ready if it is parked; True when it was woken. (The parent's row is locked first, so a
    parent being parked meanwhile sees the message: no wake-up is lost.)"""
    found = yield rows(
        f"SELECT status, lease_owner, ready_at FROM workflows WHERE id = ?{d.lock}", parent_id
    )
    if not found or found[0]["status"] != WorkflowStatus.RUNNING:
        return False
    yield run(INSERT_SIGNAL, parent_id, CHILD_OUTCOME, dump(outcome), now)
    return (yield from wake_parked(found[0], parent_id, now))


def parent_close(d: Dialect, parent_id: str, now: float, written: list[EventRow]) -> Rule[bool]:
    """The parent ended: cancel its children still running whose policy is "cancel"."""
    running = yield rows(
        "SELECT id FROM workflows WHERE parent_id = ? AND status = 'RUNNING' "
        "AND parent_close_policy = 'cancel' ORDER BY id",
        parent_id,
    )
    for r in running:
        yield from cancel(d, r["id"], f"its parent {parent_id!r} ended", now)
    return bool(running)
