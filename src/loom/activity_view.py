"""A workflow's activities as an operator sees them: each attempt, its outcome and the worker
that ran it (from the history), and where a routed activity stands now (from its task).

The history says where each recorded attempt ran (the ``worker`` of its ACTIVITY_COMPLETED or
ACTIVITY_FAILED event; absent from histories written before it was recorded). An attempt not
recorded yet is either running where its workflow runs, or, routed to a queue its workflow's
worker does not serve, an activity task: waiting for a worker of that queue, running on the
worker holding its lease, or done there and waiting for its workflow to record it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from loom.core.history import Event, EventType
from loom.store.base import TaskInFlight


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One recorded attempt: ``outcome`` ``completed`` or ``failed``; ``worker`` None when the
    history predates the field (or the attempt was withdrawn before it ran)."""

    attempt: int
    outcome: str
    worker: str | None
    at: float
    error_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "outcome": self.outcome,
            "worker": self.worker,
            "at": self.at,
            "error_type": self.error_type,
        }


@dataclass(slots=True)
class ActivityRow:
    """One activity call (its ACTIVITY_SCHEDULED event ``seq``). ``status``: ``completed``,
    ``failed``, ``canceled`` (withdrawn by its workflow), ``pending`` (awaited, run where its
    workflow runs), ``waiting`` (a routed attempt no worker of ``queue`` has claimed yet),
    ``running`` (a routed attempt on ``worker``), ``done`` (a routed attempt ended on
    ``worker``, its outcome not recorded yet) or ``abandoned`` (awaited when its workflow
    ended). ``worker`` is where the latest attempt ran or runs, when known."""

    seq: int
    activity: str
    step: str | None
    scheduled_at: float
    status: str = "pending"
    attempt: int = 1
    worker: str | None = None
    queue: str | None = None
    attempts: list[AttemptRecord] = field(default_factory=list)

    @property
    def where(self) -> str:
        """Where it ran or runs, in words."""
        if self.status == "waiting":
            return f"waiting for a worker of queue {self.queue!r}"
        if self.status == "running" and self.worker:
            return f"running on {self.worker}"
        if self.status == "pending":
            return "runs where its workflow runs"
        if self.worker:
            return f"ran on {self.worker}"
        return "-"

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "activity": self.activity,
            "step": self.step,
            "scheduled_at": self.scheduled_at,
            "status": self.status,
            "attempt": self.attempt,
            "worker": self.worker,
            "queue": self.queue,
            "where": self.where,
            "attempts": [a.to_json() for a in self.attempts],
        }


OUTCOMES = {EventType.ACTIVITY_COMPLETED: "completed", EventType.ACTIVITY_FAILED: "failed"}


def activity_rows(
    events: Sequence[Event],
    tasks: Sequence[TaskInFlight],
    *,
    running: bool,
    now: float | None = None,
) -> list[ActivityRow]:
    """The workflow's activities, by seq, from its history and its tasks (``running``: the
    workflow still runs, so what it awaits is pending rather than abandoned). A task whose
    holder's lease ran out by ``now`` (a worker that died) waits for a worker again."""
    now = time.time() if now is None else now
    rows: dict[int, ActivityRow] = {}
    for event in events:
        payload = event.payload
        if event.type is EventType.ACTIVITY_SCHEDULED:
            rows[event.seq] = ActivityRow(
                event.seq, str(payload.get("name")), payload.get("step"), event.timestamp
            )
            continue
        if event.type not in OUTCOMES and event.type is not EventType.ACTIVITY_CANCELED:
            continue
        row = rows.get(int(payload.get("scheduled") or 0))
        if row is None:
            continue
        if event.type is EventType.ACTIVITY_CANCELED:
            row.status = "canceled"
            continue
        error = payload.get("error")
        worker = payload.get("worker")
        row.attempt = int(payload.get("attempt") or 1)
        row.attempts.append(
            AttemptRecord(
                row.attempt,
                OUTCOMES[event.type],
                worker,
                event.timestamp,
                error.get("type") if isinstance(error, dict) else None,
            )
        )
        row.worker = worker
        retried = event.type is EventType.ACTIVITY_FAILED and payload.get("retry_at") is not None
        if retried:
            row.attempt += 1  # the next attempt is awaited
        else:
            row.status = OUTCOMES[event.type]
    for task in tasks:
        row = rows.get(task.seq)
        if row is None or row.status != "pending" or task.attempt < row.attempt:
            continue
        row.attempt, row.queue, row.worker = task.attempt, task.queue, task.worker
        row.status = {"ready": "waiting", "leased": "running"}.get(task.state, task.state)
        expired = task.lease_expires is not None and task.lease_expires <= now
        if row.status == "running" and expired:
            row.status, row.worker = "waiting", None
    if not running:
        for row in rows.values():
            if row.status in ("pending", "waiting", "running"):
                row.status = "abandoned"
    return [rows[seq] for seq in sorted(rows)]


__all__ = ["ActivityRow", "AttemptRecord", "activity_rows"]
