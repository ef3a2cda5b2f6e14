"""The inputs fed into an execution: activity outcomes, timers, signals and children's ends.

Replaying, the recorded inputs are fed back one at a time, in order, with the code run until
idle after each, exactly as they were delivered live (:meth:`Inputs._replay_inputs`); an input
the code did not ask for, or a decision it did not make, fails the run with
:class:`~loom.errors.NonDeterminismError`. Live, the worker delivers each outcome with the time
it happened, and the new input event is recorded for it to store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from loom.core.context import WorkflowContext
from loom.core.history import DECISIONS, INPUTS, Event, EventType
from loom.core.sandbox import Sandbox
from loom.errors import ActivityFailedError, ChildWorkflowFailedError, ConfigurationError
from loom.frozen import thaw
from loom.status import WorkflowStatus

if TYPE_CHECKING:
    from loom.core.replay import WorkflowExecution


class Inputs(Sandbox):
    """The worker's deliveries and the replay of recorded inputs (mixed into the execution;
    each input runs the code under the sandbox's checks)."""

    # -- live deliveries (the worker) ----------------------------------------------------
    def activity_completed(
        self, seq: int, result: Any, now: float, worker: str | None = None
    ) -> None:
        """Deliver an attempt's result; ``worker``, the id of the worker that ran it, is kept
        in the event for those who read the history (replay never reads it: histories
        without it replay the same)."""
        run = self._pending[seq].run
        attempt = run.attempt if run else 1
        payload: dict[str, Any] = {
            "scheduled": seq,
            "name": run and run.definition.name,
            "attempt": attempt,
            "result": result,
        }
        if worker is not None:
            payload["worker"] = worker
        self._deliver(EventType.ACTIVITY_COMPLETED, payload, now)

    def activity_failed(
        self,
        seq: int,
        error: dict[str, Any],
        retry_at: float | None,
        now: float,
        worker: str | None = None,
    ) -> None:
        """Deliver an attempt's failure (``worker``: see :meth:`activity_completed`)."""
        run = self._pending[seq].run
        payload: dict[str, Any] = {
            "scheduled": seq,
            "name": run and run.definition.name,
            "attempt": run.attempt if run else 1,
            "error": error,
            "retry_at": retry_at,
        }
        if worker is not None:
            payload["worker"] = worker
        self._deliver(EventType.ACTIVITY_FAILED, payload, now)

    def fire_timer(self, seq: int, now: float) -> None:
        self._deliver(EventType.TIMER_FIRED, {"scheduled": seq}, now)

    def receive_signal(self, seq: int | None, name: str, payload: Any, now: float) -> None:
        """Deliver a signal to the wait at ``seq``, or (``seq`` 0) to its ``@loom.signal``
        handler."""
        self._deliver(
            EventType.SIGNAL_RECEIVED,
            {"scheduled": seq or None, "name": name, "payload": payload},
            now,
        )

    def child_finished(self, seq: int, outcome: dict[str, Any], now: float) -> None:
        """Deliver the end of the child started at ``seq``: ``outcome`` is what the child's
        end left for its parent (``workflow_id``, ``status``, ``result`` or ``error``)."""
        pending = self._pending[seq]
        completed = outcome.get("status") == WorkflowStatus.COMPLETED
        payload: dict[str, Any] = {
            "scheduled": seq,
            "workflow_id": pending.child_id,
            "name": pending.name,
            "status": outcome.get("status"),
        }
        if completed:
            payload["result"] = outcome.get("result")
        else:
            payload["error"] = outcome.get("error")
        kind = EventType.CHILD_WORKFLOW_COMPLETED if completed else EventType.CHILD_WORKFLOW_FAILED
        self._deliver(kind, payload, now)

    # -- recorded and live inputs --------------------------------------------------------
    def _replay_inputs(self) -> None:
        """Feed recorded inputs back in order, running the code until idle after each."""
        while self._stream and not self.finished:
            if self._stream[0].type is EventType.PATCH_APPLIED:
                self._skip_retired_patches()
                continue
            event = self._stream[0]
            if event.type in INPUTS:
                self._stream.popleft()
                self._clock = event.timestamp
                self._apply_input(event)
                self._run_code()
            elif event.type is EventType.WORKFLOW_CANCELED:
                self._stream.clear()
                self.status = WorkflowStatus.CANCELED
            elif event.type in DECISIONS:
                self._finish_failed(
                    self._nondeterminism(
                        f"the history has {event.describe()} next, but the code did not make "
                        f"that decision (it is waiting on {self._waiting_on()})"
                    ),
                    step=self.current_step,
                )
            else:
                self._stream.popleft()

    def _deliver(self, kind: EventType, payload: dict[str, Any], now: float) -> None:
        if self.finished:
            return
        self._clock = now
        event = Event(self._next_seq, kind, payload, now)
        self._next_seq += 1
        self._new.append(event)
        self._apply_input(event)
        self._run_code()

    def _apply_input(self, event: Event) -> None:
        self.now = event.timestamp
        if event.type is EventType.SIGNAL_RECEIVED and event.payload.get("scheduled") is None:
            self._run_handler(str(event.payload.get("name")), event.payload.get("payload"))
            return
        seq = int(event.payload["scheduled"])
        pending = self._pending.get(seq)
        if pending is None:
            name = event.payload.get("name")
            what = event.describe() + (f" of {name!r}" if name else "")
            self._finish_failed(
                self._nondeterminism(
                    f"the history has {what} for seq {seq}, which the code did not schedule "
                    f"(it is waiting on {self._waiting_on()})"
                ),
                step=self.current_step,
            )
            return
        kind = event.type
        if kind is EventType.ACTIVITY_FAILED and event.payload.get("retry_at") is not None:
            assert pending.run is not None
            pending.run = replace(
                pending.run,
                attempt=int(event.payload["attempt"]) + 1,
                not_before=float(event.payload["retry_at"]),
            )
            return
        del self._pending[seq]
        if pending.future.done():
            return
        if kind is EventType.ACTIVITY_COMPLETED:
            pending.future.set_result(event.payload.get("result"))
        elif kind is EventType.ACTIVITY_FAILED:
            error = event.payload.get("error") or {}
            pending.future.set_exception(
                ActivityFailedError(
                    workflow_id=self.workflow_id,
                    step=pending.step or "?",
                    activity=str(event.payload.get("name")),
                    attempts=int(event.payload.get("attempt", 1)),
                    error_type=str(error.get("type", "Error")),
                    error_message=str(error.get("message", "")),
                )
            )
        elif kind is EventType.SIGNAL_RECEIVED:
            pending.future.set_result(event.payload.get("payload"))
        elif kind is EventType.CHILD_WORKFLOW_COMPLETED:
            pending.future.set_result(event.payload.get("result"))
        elif kind is EventType.CHILD_WORKFLOW_FAILED:
            pending.future.set_exception(
                ChildWorkflowFailedError(
                    workflow_id=self.workflow_id,
                    step=pending.step or "?",
                    child_id=str(event.payload.get("workflow_id")),
                    child_name=str(event.payload.get("name")),
                    status=str(event.payload.get("status")),
                    error=event.payload.get("error"),
                )
            )
        elif pending.kind is EventType.SIGNAL_WAIT_STARTED:
            pending.future.set_exception(
                TimeoutError(f"no signal {pending.name!r} arrived before the timeout")
            )
        else:
            pending.future.set_result(None)

    def _run_handler(self, name: str, payload: Any) -> None:
        """Run the ``@loom.signal`` handler of ``name`` on the running step's instance, as a
        task of the workflow's loop; it must finish without waiting on anything durable."""
        attribute = self.definition.signal_handlers.get(name)
        if attribute is None or self._instance is None:
            self._finish_failed(
                self._nondeterminism(
                    f"the history delivers signal {name!r} to a handler, but the code has no "
                    f"@loom.signal({name!r}) handler"
                ),
                step=self.current_step,
            )
            return
        handler = getattr(self._instance, attribute)
        task = self._loop.create_task(
            _call_handler(handler, WorkflowContext(cast("WorkflowExecution", self)), thaw(payload)),
            name=f"signal {name}",
        )
        self._loop.run_until_idle()
        if task.done() and not task.cancelled() and task.exception() is None:
            return
        if not task.done():
            task.cancel()
            self._loop.run_until_idle()
            error: BaseException = ConfigurationError(
                f"the @loom.signal({name!r}) handler {attribute}() of workflow "
                f"{self.workflow_id!r} waited on a durable call; a handler only changes the "
                "state (ctx.state.set/update): do the work in a step that waits for the change "
                "with ctx.wait_until(...)"
            )
        else:
            error = task.exception() or asyncio.CancelledError()
        self._finish_failed(error, step=self.current_step)


async def _call_handler(handler: Callable[..., Any], ctx: Any, payload: Any) -> None:
    result = handler(ctx, payload)
    if asyncio.iscoroutine(result):
        await result
