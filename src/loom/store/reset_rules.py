"""The store's rules for running a workflow again: a retry of a FAILED workflow
(:func:`retry`) and a reset to an earlier step (:func:`reset`). Each buffers again the signals
the discarded attempt consumed, ahead of those still buffered.

A reset of a held workflow is requested (``reset_requested``, the plan as JSON) and carried out
like a cancel: by the holder's next commit (``commit_rules.commit_one``) or the next claim
(``lease_rules.settle_claimed``), with :func:`reset_now`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from loom.core.history import CHILD_OUTCOME, Event, EventType
from loom.errors import WorkflowNotFoundError, WorkflowNotRunningError
from loom.status import WorkflowStatus
from loom.store import task_rules
from loom.store.base import HistoryMoved, ResetOutcome, ResetRequest
from loom.store.cancel_rules import parent_close
from loom.store.common import dump
from loom.store.signal_rules import rebuffer
from loom.store.statements import Dialect, EventRow, Rule, event_rows, events, rows, run


def retry(d: Dialect, workflow_id: str, now: float, resent: list[tuple[str, str]]) -> Rule[None]:
    found = yield rows(
        f"SELECT status, last_seq, current_step FROM workflows WHERE id = ?{d.lock}", workflow_id
    )
    if not found:
        raise WorkflowNotFoundError(workflow_id)
    status, last_seq, step = found[0]["status"], found[0]["last_seq"], found[0]["current_step"]
    if status != WorkflowStatus.FAILED:
        raise WorkflowNotRunningError(
            workflow_id, status, "retry", "only FAILED workflows can be retried"
        )
    retried = Event(last_seq + 1, EventType.WORKFLOW_RETRIED, {"step": step}, now)
    yield events(event_rows(workflow_id, [retried]))
    yield run(
        "UPDATE workflows SET status = 'RUNNING', error = NULL, ready_at = ?, "
        "lease_owner = NULL, lease_epoch = lease_epoch + 1, last_seq = ?, updated_at = ? "
        "WHERE id = ?",
        now,
        retried.seq,
        now,
        workflow_id,
    )
    # Signals the failed attempt consumed are delivered again, before those still buffered.
    yield from rebuffer(workflow_id, resent, now)
    # A task left by a worker that gave up on it is not this resumption's to run.
    yield from task_rules.drop(d, workflow_id)


# -- resets ---------------------------------------------------------------------------------
def reset(d: Dialect, workflow_id: str, request: ResetRequest, now: float) -> Rule[ResetOutcome]:
    """Reset at once, unless a worker holds a live lease: then request it, for that worker's
    next write (or lease renewal, or the next claim should it die) to carry out."""
    found = yield rows(
        "SELECT status, lease_owner, ready_at, last_seq, run_id FROM workflows "
        f"WHERE id = ?{d.lock}",
        workflow_id,
    )
    if not found:
        raise WorkflowNotFoundError(workflow_id)
    row = found[0]
    moved = request.run_id is not None and row["run_id"] != request.run_id
    if moved or row["last_seq"] != request.last_seq:
        raise HistoryMoved(workflow_id)
    held = row["lease_owner"] is not None and row["ready_at"] is not None and row["ready_at"] > now
    if row["status"] == WorkflowStatus.RUNNING and held:
        yield run(
            "UPDATE workflows SET reset_requested = ?, cancel_requested = NULL WHERE id = ?",
            dump(dataclasses.asdict(request)),
            workflow_id,
        )
        return ResetOutcome.REQUESTED
    written: list[EventRow] = []
    yield from reset_now(d, workflow_id, request, now, written)
    yield events(written)
    return ResetOutcome.RESET


def reset_of(stored: str) -> ResetRequest:
    """A reset request as :func:`reset` stored it."""
    data = orjson.loads(stored)
    data["resend"] = tuple((name, payload) for name, payload in data["resend"])
    return ResetRequest(**data)


def reset_now(
    d: Dialect, workflow_id: str, request: ResetRequest, now: float, written: list[EventRow]
) -> Rule[None]:
    """Record WORKFLOW_RESET after the history (``request.last_seq``; its event is added to
    ``written``), make the workflow RUNNING from ``request.to_step`` with ``request.state``,
    ready at once under a new lease epoch, cancel its running "cancel" children (the discarded
    steps started them), drop the ends of children it no longer awaits and buffer the
    discarded steps' signals again."""
    payload: dict[str, Any] = {"to_step": request.to_step, "index": request.index}
    if request.reason is not None:
        payload["reason"] = request.reason
    seq = request.last_seq + 1
    written.extend(event_rows(workflow_id, [Event(seq, EventType.WORKFLOW_RESET, payload, now)]))
    yield run(
        "UPDATE workflows SET status = 'RUNNING', state = ?, result = NULL, error = NULL, "
        "current_step = ?, updated_at = ?, last_seq = ?, ready_at = ?, lease_owner = NULL, "
        "lease_epoch = lease_epoch + 1, cancel_requested = NULL, reset_requested = NULL "
        "WHERE id = ?",
        dump(request.state),
        request.to_step,
        now,
        seq,
        now,
        workflow_id,
    )
    yield from parent_close(d, workflow_id, now, written)
    yield from task_rules.drop(d, workflow_id)  # the steps that awaited them are discarded
    # The kept steps' activities completed and the discarded ones' will not resume: no
    # heartbeat of the workflow is of use (tasks first: see commit_batch).
    yield run("DELETE FROM activity_heartbeats WHERE workflow_id = ?", workflow_id)
    yield run("DELETE FROM signals WHERE workflow_id = ? AND name = ?", workflow_id, CHILD_OUTCOME)
    yield from rebuffer(workflow_id, [(n, dump(p)) for n, p in request.resend], now)
