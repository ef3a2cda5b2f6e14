"""The event history: the single source of truth for a workflow.

Each event has a per-workflow sequence number (``seq``) that the store enforces as unique, so
two writers can never both record the same step of a workflow. Events fall in two groups:

* *decisions*, which the workflow code produces (STEP_*, STATE_*, *_SCHEDULED, SIGNAL_WAIT_STARTED,
  the *_CANCELED of a durable call whose awaiting task was cancelled, WORKFLOW_COMPLETED/FAILED)
  and which replay checks the code still produces, and
* *inputs*, which the outside world delivers (activity outcomes, timers, signals) and which
  replay feeds back to the code in their recorded order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    WORKFLOW_STARTED = "WORKFLOW_STARTED"
    WORKFLOW_COMPLETED = "WORKFLOW_COMPLETED"
    WORKFLOW_FAILED = "WORKFLOW_FAILED"
    WORKFLOW_CANCELED = "WORKFLOW_CANCELED"
    WORKFLOW_RETRIED = "WORKFLOW_RETRIED"
    WORKFLOW_CONTINUED_AS_NEW = "WORKFLOW_CONTINUED_AS_NEW"
    STEP_STARTED = "STEP_STARTED"
    STEP_COMPLETED = "STEP_COMPLETED"
    STATE_SET = "STATE_SET"
    STATE_UPDATE = "STATE_UPDATE"
    ACTIVITY_SCHEDULED = "ACTIVITY_SCHEDULED"
    ACTIVITY_COMPLETED = "ACTIVITY_COMPLETED"
    ACTIVITY_FAILED = "ACTIVITY_FAILED"
    TIMER_SCHEDULED = "TIMER_SCHEDULED"
    TIMER_FIRED = "TIMER_FIRED"
    SIGNAL_WAIT_STARTED = "SIGNAL_WAIT_STARTED"
    SIGNAL_RECEIVED = "SIGNAL_RECEIVED"
    # The code cancelled the task awaiting a durable call: the call is withdrawn.
    ACTIVITY_CANCELED = "ACTIVITY_CANCELED"
    TIMER_CANCELED = "TIMER_CANCELED"
    SIGNAL_WAIT_CANCELED = "SIGNAL_WAIT_CANCELED"
    # Child workflows: started with the parent's commit; their end is delivered to the parent.
    CHILD_WORKFLOW_STARTED = "CHILD_WORKFLOW_STARTED"
    CHILD_WORKFLOW_COMPLETED = "CHILD_WORKFLOW_COMPLETED"
    CHILD_WORKFLOW_FAILED = "CHILD_WORKFLOW_FAILED"
    CHILD_WORKFLOW_CANCELED = "CHILD_WORKFLOW_CANCELED"
    # ctx.patched("id") took the new code path: replays of this history take it too.
    PATCH_APPLIED = "PATCH_APPLIED"


DECISIONS = frozenset(
    {
        EventType.STEP_STARTED,
        EventType.STEP_COMPLETED,
        EventType.STATE_SET,
        EventType.STATE_UPDATE,
        EventType.ACTIVITY_SCHEDULED,
        EventType.TIMER_SCHEDULED,
        EventType.SIGNAL_WAIT_STARTED,
        EventType.ACTIVITY_CANCELED,
        EventType.TIMER_CANCELED,
        EventType.SIGNAL_WAIT_CANCELED,
        EventType.CHILD_WORKFLOW_STARTED,
        EventType.CHILD_WORKFLOW_CANCELED,
        EventType.PATCH_APPLIED,
        EventType.WORKFLOW_COMPLETED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_CONTINUED_AS_NEW,
    }
)
WITHDRAWALS = {
    EventType.ACTIVITY_SCHEDULED: EventType.ACTIVITY_CANCELED,
    EventType.TIMER_SCHEDULED: EventType.TIMER_CANCELED,
    EventType.SIGNAL_WAIT_STARTED: EventType.SIGNAL_WAIT_CANCELED,
    EventType.CHILD_WORKFLOW_STARTED: EventType.CHILD_WORKFLOW_CANCELED,
}
"""The decision that withdraws each kind of durable call."""
INPUTS = frozenset(
    {
        EventType.ACTIVITY_COMPLETED,
        EventType.ACTIVITY_FAILED,
        EventType.TIMER_FIRED,
        EventType.SIGNAL_RECEIVED,
        EventType.CHILD_WORKFLOW_COMPLETED,
        EventType.CHILD_WORKFLOW_FAILED,
    }
)
CHILD_OUTCOME = "__loom_child__"
"""The name of the message a child's end leaves in its parent's signal buffer (names starting
with ``__loom`` are refused to users)."""
TERMINAL = frozenset(
    {
        EventType.WORKFLOW_COMPLETED,
        EventType.WORKFLOW_FAILED,
        EventType.WORKFLOW_CANCELED,
        EventType.WORKFLOW_CONTINUED_AS_NEW,
    }
)


@dataclass(frozen=True, slots=True)
class Event:
    """One immutable entry of a workflow's history. ``created_at`` is seconds since the epoch."""

    seq: int
    type: EventType
    payload: dict[str, Any]
    timestamp: float

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp, UTC)

    def describe(self) -> str:
        """``ACTIVITY_SCHEDULED 'charge'`` — the kind and name used in determinism errors."""
        name = decision_key(self.type, self.payload)
        return (
            f"{self.type.value} {name!r} (seq {self.seq})"
            if name
            else (f"{self.type.value} (seq {self.seq})")
        )


def decision_key(kind: EventType, payload: dict[str, Any]) -> str | None:
    """What must be equal, besides the kind, for a replayed decision to match its history."""
    if kind in (EventType.STEP_STARTED, EventType.STEP_COMPLETED):
        return str(payload.get("step"))
    if kind is EventType.STATE_SET:
        return str(payload.get("key"))
    if kind is EventType.STATE_UPDATE:
        return ",".join(sorted(payload.get("values", {})))
    if kind in (
        EventType.ACTIVITY_SCHEDULED,
        EventType.SIGNAL_WAIT_STARTED,
        EventType.CHILD_WORKFLOW_STARTED,
    ):
        return str(payload.get("name"))
    if kind in WITHDRAWALS.values():
        return str(payload.get("scheduled"))
    if kind is EventType.PATCH_APPLIED:
        return str(payload.get("patch_id"))
    return None


def apply_state(state: dict[str, Any], event: Event) -> None:
    """Apply a STATE_SET or STATE_UPDATE event to ``state`` (any other event is ignored)."""
    if event.type is EventType.STATE_SET:
        state[event.payload["key"]] = event.payload["value"]
    elif event.type is EventType.STATE_UPDATE:
        state.update(event.payload["values"])


def decided_before_cancel(events: Sequence[Event], last_seq: int) -> list[Event]:
    """What a commit that meets a cancel request still records.

    Its leading decisions are facts (the step began, an activity was scheduled and may well
    have run), so they stay in the history; from its first input on (an activity's outcome, a
    fired timer, a received signal) and any ending, it is discarded, as the cancel says. Nothing
    is kept from a commit that does not follow ``last_seq``.
    """
    if not events or events[0].seq != last_seq + 1:
        return []
    kept: list[Event] = []
    for event in events:
        if event.type in INPUTS or event.type in TERMINAL:
            break
        kept.append(event)
    return kept
