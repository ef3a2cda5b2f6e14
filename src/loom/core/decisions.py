"""The context's door into an execution: every durable call of the code becomes a decision.

``loom.core.context`` turns each call (an activity, a timer, a signal wait, a child, a patch)
into one :meth:`Decisions.decide`: live, it records a new event; replaying, it must match the
next recorded decision (same kind, same name), or the run fails with
:class:`~loom.errors.NonDeterminismError`. The call is then kept as pending (``calls``) until
its outcome is delivered, or withdrawn when the task awaiting it is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from loom.core.calls import ActivityRun, Pending, child_id
from loom.core.execution_state import ExecutionState
from loom.core.history import WITHDRAWALS, Event, EventType, decision_key
from loom.definitions import ActivityDefinition
from loom.errors import NonDeterminismError
from loom.status import WorkflowStatus


class Decisions(ExecutionState):
    """What the context calls to record or match the code's decisions (mixed into the
    execution)."""

    def decide(self, kind: EventType, payload: dict[str, Any]) -> Event:
        """Record (or, replaying, match) one decision of the code and return its event."""
        if self._failure is not None:
            raise self._failure
        if self.status is not WorkflowStatus.RUNNING:
            raise NonDeterminismError(self.workflow_id, "the workflow already finished")
        if self._stream:
            self._skip_retired_patches()
        if self._stream:
            recorded = self._stream[0]
            if recorded.type is kind and decision_key(kind, recorded.payload) == decision_key(
                kind, payload
            ):
                self._stream.popleft()
                self.now = recorded.timestamp
                return recorded
            mine = Event(0, kind, payload, self._clock).describe().rsplit(" (seq", 1)[0]
            raise self._nondeterminism(
                f"at seq {recorded.seq} the code did {mine} but the history has "
                f"{recorded.describe()}"
            )
        event = Event(self._next_seq, kind, payload, self._clock)
        self._next_seq += 1
        self._new.append(event)
        if kind is EventType.CHILD_WORKFLOW_STARTED:
            self.started_children = True
        self.now = self._clock
        return event

    def schedule_activity(
        self, event: Event, definition: ActivityDefinition
    ) -> asyncio.Future[Any]:
        run = ActivityRun(
            seq=event.seq,
            definition=definition,
            args=list(event.payload.get("args") or []),
            kwargs=dict(event.payload.get("kwargs") or {}),
            step=self.current_step,
        )
        return self._register(event, run=run)

    def schedule_timer(self, event: Event) -> asyncio.Future[Any]:
        return self._register(event, deadline=float(event.payload["fire_at"]))

    def wait_signal(self, event: Event) -> asyncio.Future[Any]:
        deadline = event.payload.get("deadline")
        return self._register(
            event,
            name=event.payload["name"],
            deadline=None if deadline is None else float(deadline),
        )

    def start_child(self, event: Event) -> asyncio.Future[Any]:
        """Register the child started by ``event``; a new start gets its derived id here."""
        payload = event.payload
        if payload.get("workflow_id") is None:
            payload["workflow_id"] = child_id(self.workflow_id, event.seq)
        return self._register(
            event,
            name=payload.get("name"),
            child_id=str(payload["workflow_id"]),
            abandon=payload.get("parent_close_policy") == "abandon",
        )

    def child_task(self, seq: int, task: asyncio.Future[Any]) -> None:
        """The task that awaits the child of ``seq`` (the step may leave an abandoned one)."""
        pending = self._pending.get(seq)
        if pending is not None:
            pending.task = task

    def withdraw(self, event: Event) -> None:
        """The task awaiting the durable call of ``event`` was cancelled: record the call's
        withdrawal (a decision, replayed like any other) unless it already ended. A withdrawn
        timer never fires, a withdrawn signal wait takes no signal, and a withdrawn activity's
        outcome is never delivered (its worker is told to stop it)."""
        if (
            self._tearing_down
            or self.finished
            or event.seq not in self._pending
            or event.seq in self._detached
        ):
            return
        del self._pending[event.seq]
        payload: dict[str, Any] = {"scheduled": event.seq}
        if event.payload.get("name") is not None:
            payload["name"] = event.payload["name"]
        if event.type is EventType.CHILD_WORKFLOW_STARTED:
            payload["workflow_id"] = event.payload["workflow_id"]
        self.decide(WITHDRAWALS[event.type], payload)

    def patched(self, patch_id: str) -> bool:
        """Whether the code takes the new path of ``patch_id`` (see ``ctx.patched``): True live
        (recorded as PATCH_APPLIED), and on replay only where the history recorded it. True
        holds for the rest of the run; False for the rest of the step."""
        known = self._patches.get(patch_id)
        if known is not None:
            return known
        if self._stream:
            # Among the markers recorded here, not only the first: the ones before it may be of
            # patches whose calls were removed since (retired), and are passed over later.
            took = False
            for index, upcoming in enumerate(self._stream):
                if upcoming.type is not EventType.PATCH_APPLIED:
                    break
                if upcoming.payload.get("patch_id") == patch_id:
                    del self._stream[index]
                    took = True
                    break
        else:
            self.decide(EventType.PATCH_APPLIED, {"patch_id": patch_id})
            took = True
        self._patches[patch_id] = took
        return took

    def wait_condition(self, condition: Callable[[], object]) -> asyncio.Future[None]:
        """A future resolved once ``condition()`` is true, checked whenever the code is idle
        (after each delivery): the same points on every replay, so nothing is recorded."""
        future = self._loop.create_future()
        self._conditions.append((condition, future))
        return future

    @property
    def step_instance(self) -> Any:
        return self._instance

    def _register(self, event: Event, **fields: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._pending[event.seq] = Pending(
            event.type, future, step=self.current_step, since=event.timestamp, **fields
        )
        return future
