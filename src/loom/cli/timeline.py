"""A workflow's steps as a timeline, and the cause of its failure, read from its history; the
last heartbeats of its running activities placed on it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from loom.cli.render import iso
from loom.client import ActivityHeartbeat, ActivityRow
from loom.core.history import Event, EventType
from loom.status import WorkflowStatus


@dataclass
class StepRun:
    """One run of one step: from STEP_STARTED to STEP_COMPLETED (or to how it stopped)."""

    step: str
    index: int
    started: float
    ended: float | None = None
    status: str = "running"  # running, completed, failed, canceled, reset
    activities: int = 0
    failed_attempts: int = 0
    withdrawn: int = 0
    """Durable calls withdrawn by cancelling the task awaiting them (a race's loser)."""
    signals_handled: int = 0
    """Signals applied by ``@loom.signal`` handlers during the step."""
    children: int = 0
    """Child workflows the step started."""
    waits: dict[int, str] = field(default_factory=dict)
    activity_seqs: list[int] = field(default_factory=list)
    heartbeat: ActivityHeartbeat | None = None
    """The latest heartbeat of its activities, while the workflow runs."""
    in_flight: list[str] = field(default_factory=list)
    """Where its routed activities in flight stand ("render running on gpu-1")."""

    @property
    def waiting(self) -> list[str]:
        """What the step waits for now: its timers and signal waits not yet over."""
        return list(self.waits.values())

    @property
    def duration(self) -> float:
        return max(0.0, (self.ended if self.ended is not None else time.time()) - self.started)

    def to_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "index": self.index,
            "status": self.status,
            "started_at": iso(self.started),
            "ended_at": iso(self.ended),
            "duration_seconds": round(self.duration, 3),
            "activities": self.activities,
            "failed_attempts": self.failed_attempts,
            "withdrawn": self.withdrawn,
            "signals_handled": self.signals_handled,
            "children": self.children,
            "last_heartbeat_at": None if self.heartbeat is None else iso(self.heartbeat.at),
            "in_flight": self.in_flight,
        }


WITHDRAWN = frozenset(
    {
        EventType.ACTIVITY_CANCELED,
        EventType.TIMER_CANCELED,
        EventType.SIGNAL_WAIT_CANCELED,
        EventType.CHILD_WORKFLOW_CANCELED,
    }
)


def step_runs(events: list[Event], status: WorkflowStatus) -> list[StepRun]:
    runs: list[StepRun] = []
    current: StepRun | None = None
    for event in events:
        kind, payload = event.type, event.payload
        if kind is EventType.STEP_STARTED:
            current = StepRun(
                str(payload.get("step")), int(payload.get("index", 0)), event.timestamp
            )
            runs.append(current)
        elif current is None:
            continue
        elif kind is EventType.STEP_COMPLETED:
            current.ended, current.status, current = event.timestamp, "completed", None
        elif kind is EventType.ACTIVITY_SCHEDULED:
            current.activities += 1
            current.activity_seqs.append(event.seq)
        elif kind is EventType.ACTIVITY_FAILED:
            current.failed_attempts += 1
        elif kind is EventType.SIGNAL_WAIT_STARTED:
            current.waits[event.seq] = f"signal {payload.get('name')!r}"
        elif kind is EventType.TIMER_SCHEDULED:
            current.waits[event.seq] = "timer"
        elif kind is EventType.CHILD_WORKFLOW_STARTED:
            current.children += 1
            current.waits[event.seq] = f"child {payload.get('workflow_id')!r}"
        elif kind in (EventType.CHILD_WORKFLOW_COMPLETED, EventType.CHILD_WORKFLOW_FAILED):
            current.waits.pop(payload.get("scheduled", 0), None)
        elif kind is EventType.SIGNAL_RECEIVED and payload.get("scheduled") is None:
            current.signals_handled += 1
        elif kind in (EventType.SIGNAL_RECEIVED, EventType.TIMER_FIRED):
            current.waits.pop(payload.get("scheduled", 0), None)
        elif kind in WITHDRAWN:
            current.withdrawn += 1
            current.waits.pop(payload.get("scheduled", 0), None)
        elif kind is EventType.WORKFLOW_FAILED:
            current.ended, current.status, current = event.timestamp, "failed", None
        elif kind is EventType.WORKFLOW_CANCELED:
            current.ended, current.status, current = event.timestamp, "canceled", None
        elif kind is EventType.WORKFLOW_RESET:  # a reset stopped it: it runs again
            current.ended, current.status, current = event.timestamp, "reset", None
    if current is not None and status is not WorkflowStatus.RUNNING:
        current.status = status.value.lower()
    return runs


def place_heartbeats(runs: list[StepRun], heartbeats: list[ActivityHeartbeat]) -> None:
    """Give each step run the latest heartbeat of its activities. One whose scheduling is not
    written yet (an activity running inline) belongs to the run still going, the last."""
    for beat in heartbeats:
        run = next((r for r in runs if beat.seq in r.activity_seqs), runs[-1] if runs else None)
        if run is not None and (run.heartbeat is None or beat.at > run.heartbeat.at):
            run.heartbeat = beat


def place_activities(runs: list[StepRun], rows: list[ActivityRow]) -> None:
    """Note on each step run where its routed activities in flight stand."""
    for row in rows:
        if row.status not in ("waiting", "running"):
            continue
        run = next((r for r in runs if row.seq in r.activity_seqs), None)
        if run is not None:
            run.in_flight.append(f"{row.activity} {row.where}")


def failure_cause(events: list[Event]) -> dict[str, Any] | None:
    """The activity failure that made the workflow fail, if that is what happened."""
    for event in reversed(events):
        if event.type in (EventType.WORKFLOW_RETRIED, EventType.WORKFLOW_RESET):
            return None
        if event.type is EventType.ACTIVITY_FAILED and event.payload.get("retry_at") is None:
            error = event.payload.get("error") or {}
            return {
                "activity": event.payload.get("name"),
                "attempt": event.payload.get("attempt"),
                "type": error.get("type"),
                "message": error.get("message"),
            }
    return None
