"""The replay executor: history in, new events and pending work out. Pure: no I/O, no clock.

A :class:`WorkflowExecution` is built from a workflow's history. It skips the steps that
completed (their state changes are re-applied), re-runs the current step against the events it
already recorded, and then runs live: the worker delivers each outcome (activity result, timer,
signal) with the time it happened, and collects the new events to store.

Replay is strict. Each decision the code makes must equal the next decision in the history (same
kind, same name), and the recorded inputs are fed back one at a time, in order, with the code run
until idle after each, exactly as they were delivered live. Anything else raises
:class:`~loom.errors.NonDeterminismError`, which fails the workflow with its history kept.

Each step runs on a new instance of the workflow class, so an attribute set in one step is never
seen by the next: whether the execution stayed in a worker's cache or was rebuilt from the history
must not change what the code computes. A step that returns while a task it created is pending
fails with :class:`~loom.errors.UnawaitedCallError`; a step left waiting on something no durable
event can complete (a bare future, an ``asyncio.Event``, a queue) fails with
:class:`~loom.errors.WorkflowSandboxError` instead of hanging.

The execution is assembled from parts, one module each: which events a replay runs through
(``replay_plan``), the decisions the code makes through its context (``decisions``), the inputs
fed back to it (``inputs``), the checks that keep it on durable calls (``sandbox``), the records
of its pending calls (``calls``) and the state they share (``execution_state``). This module
holds the steps themselves, what the worker reads of the execution, and its end.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Callable, Sequence
from typing import Any

from loom.core.calls import ActivityRun, Pending
from loom.core.context import ContinueAsNew, WorkflowContext
from loom.core.decisions import Decisions
from loom.core.execution_state import error_payload
from loom.core.history import Event, EventType
from loom.core.inputs import Inputs
from loom.core.loop import DeterministicLoop
from loom.core.replay_plan import plan_replay
from loom.definitions import WorkflowDefinition
from loom.errors import NonDeterminismError, WorkflowSandboxError
from loom.frozen import thaw
from loom.status import WorkflowStatus


class WorkflowExecution(Inputs, Decisions):
    """One workflow's code, rebuilt from its history and kept runnable between deliveries."""

    def __init__(
        self,
        definition: WorkflowDefinition,
        workflow_id: str,
        history: Sequence[Event],
        *,
        now: float,
        full: bool = False,
        run_id: str | None = None,
    ) -> None:
        self.definition = definition
        self.workflow_id = workflow_id
        started = history[0]
        self.input: Any = started.payload.get("input")
        self.state: dict[str, Any] = {}
        self.status = WorkflowStatus.RUNNING
        self.error: dict[str, Any] | None = None
        self.current_step: str | None = None
        self.now = started.timestamp
        self._rng_seed = workflow_id
        self._rng: random.Random | None = None
        self._clock = now
        self._next_seq = history[-1].seq + 1
        self._new: list[Event] = []
        self._pending: dict[int, Pending] = {}
        self._loop = DeterministicLoop()  # type: ignore[abstract]
        self._failure: NonDeterminismError | None = None
        self._spinning: WorkflowSandboxError | None = None
        self._stream: collections.deque[Event] = collections.deque()
        self._first_step = 0
        self._tearing_down = False  # tasks cancelled by Loom itself withdraw nothing
        self._conditions: list[tuple[Callable[[], object], asyncio.Future[None]]] = []
        self._instance: Any = None  # the running step's instance (signal handlers run on it)
        self._detached: set[int] = set()  # abandoned children the step left unawaited
        self.run_id = run_id
        """The run this execution is of, as the worker claimed it (for its cache and logs)."""
        self.continued_as_new: dict[str, Any] | None = None
        """The next run's input and state, once the code called ``ctx.continue_as_new``."""
        parent = started.payload.get("parent")
        self.parent_id: str | None = parent.get("workflow_id") if isinstance(parent, dict) else None
        """The workflow that started this one as its child, if one did."""
        self.trace: Any = started.payload.get("trace")
        """The trace context its start recorded (W3C ``traceparent``), if it was traced."""
        self.log_fields: dict[str, Any] = {}
        """Fields the worker adds to every ``ctx.logger`` record (its run's trace ids)."""
        try:
            self._first_step, self.state, stream = plan_replay(
                definition, workflow_id, history, full=full
            )
        except NonDeterminismError as exc:
            self._failure = exc
            self._finish_failed(exc, step=None)
            return
        self._stream.extend(stream)
        self.started_children = any(e.type is EventType.CHILD_WORKFLOW_STARTED for e in history)
        """Whether the run ever started a child (if not, its end has none to cancel)."""
        replayed = {e.seq for e in stream}
        self._patches: dict[str, bool] = {
            str(e.payload.get("patch_id")): True
            for e in history
            if e.type is EventType.PATCH_APPLIED and e.seq not in replayed
        }
        self._main = self._loop.create_task(self._run(), name=f"workflow {workflow_id}")
        self._run_code()
        self._replay_inputs()
        self._clock = now  # what follows the replay happens now

    # -- facts for the context and the worker ------------------------------------------
    @property
    def rng(self) -> random.Random:
        """The step's seeded generator, made on first use (seeding costs more than most steps)."""
        if self._rng is None:
            self._rng = random.Random(self._rng_seed)
        return self._rng

    @property
    def is_replaying(self) -> bool:
        return bool(self._stream)

    @property
    def nondeterminism(self) -> NonDeterminismError | None:
        """Set when the code diverged from the history (the workflow is then FAILED)."""
        return self._failure

    @property
    def last_seq(self) -> int:
        return self._next_seq - 1

    @property
    def new_events(self) -> Sequence[Event]:
        """The events produced since the last :meth:`take_new_events`, not yet taken."""
        return self._new

    def waiting(self, seq: int) -> tuple[EventType, str | None, float] | None:
        """The kind, name and start time of the durable wait (timer, signal wait) of ``seq``."""
        pending = self._pending.get(seq)
        if pending is None:
            return None
        return pending.kind, pending.name, pending.since

    def take_new_events(self) -> list[Event]:
        """The events produced since the last call, in order, for the worker to store."""
        new, self._new = self._new, []
        return new

    def activity_runs(self) -> list[ActivityRun]:
        """The activities to run; each with its own copy of the arguments, so an attempt that
        changes them in place changes neither the recorded call nor the next attempt."""
        return [
            ActivityRun(  # not dataclasses.replace: it reads every field's metadata
                seq=r.seq,
                definition=r.definition,
                args=thaw(r.args),
                kwargs=thaw(r.kwargs),
                step=r.step,
                attempt=r.attempt,
                not_before=r.not_before,
            )
            for p in self._pending.values()
            if (r := p.run) is not None
        ]

    def deadlines(self) -> list[tuple[int, float]]:
        """(seq, time) of every timer and signal-wait timeout not yet fired."""
        return [
            (seq, p.deadline)
            for seq, p in self._pending.items()
            if p.deadline is not None and p.run is None
        ]

    def signal_waits(self) -> list[tuple[int, str]]:
        """(seq, signal name) of every signal wait, oldest first; then (0, name) for each
        signal a ``@loom.signal`` handler takes, for as long as the workflow runs."""
        waits = [
            (seq, p.name)
            for seq, p in self._pending.items()
            if p.kind is EventType.SIGNAL_WAIT_STARTED and p.name is not None
        ]
        if self.definition.signal_handlers and not self.finished:
            waits += [(0, name) for name in self.definition.signal_handlers]
        return waits

    def child_waits(self) -> dict[str, int]:
        """The children the code awaits: child workflow id -> seq of its start."""
        return {p.child_id: seq for seq, p in self._pending.items() if p.child_id is not None}

    def awaits_inputs(self) -> bool:
        """Whether an input can be delivered to it: something other than an activity is pending
        (a timer, a signal wait, a child) or a ``@loom.signal`` handler takes signals. When
        not, :meth:`deadlines`, :meth:`signal_waits` and :meth:`child_waits` are all empty."""
        if self.definition.signal_handlers and not self.finished:
            return True
        for pending in self._pending.values():  # noqa: SIM110 (no generator: every turn runs it)
            if pending.run is None:
                return True
        return False

    def has_activity(self, seq: int) -> bool:
        """Whether the activity scheduled at ``seq`` is still awaited (not withdrawn)."""
        pending = self._pending.get(seq)
        return pending is not None and pending.run is not None

    def next_wakeup(self) -> float | None:
        """The earliest time something scheduled becomes due (timer, timeout, retry)."""
        times = [d for _, d in self.deadlines()]
        times += [
            p.run.not_before for p in self._pending.values() if p.run and p.run.not_before > 0
        ]
        return min(times, default=None)

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """Drop the code's coroutines; the execution must not be used afterwards."""
        self._tearing_down = True
        for pending in self._pending.values():
            pending.future.cancel()
        self._pending.clear()
        main = getattr(self, "_main", None)
        if main is not None and not main.done():
            main.cancel()
            self._loop.run_until_idle()
        for task in self._loop.take_tasks():
            task.cancel()
        self._loop.run_until_idle()
        self._loop.close()

    # -- the steps --------------------------------------------------------------------
    async def _run(self) -> None:
        steps = self.definition.steps
        ctx: WorkflowContext[Any, Any] = WorkflowContext(self)
        try:
            for index in range(self._first_step, len(steps)):
                step = steps[index]
                self.current_step = step.name
                started = self.decide(EventType.STEP_STARTED, {"step": step.name, "index": index})
                self._rng_seed, self._rng = f"{self.workflow_id}:{index}:{started.seq}", None
                # The patches a completed step took are in its history; those it did not take
                # are not, and a replay that skips it cannot know them: each step asks anew,
                # whether this execution ran the steps before or skipped them.
                self._patches = {patch: True for patch, took in self._patches.items() if took}
                # A new instance per step: attributes are not a channel between steps, with or
                # without the worker's cache (steps share only ctx.state).
                self._loop.take_tasks()
                instance = self._instance = self.definition.cls()
                await getattr(instance, step.attribute)(ctx)
                self._detach_abandoned(step.name)
                await self._let_cancelled_tasks_end()
                self._check_step_settled(step.name)
                self.decide(EventType.STEP_COMPLETED, {"step": step.name, "index": index})
            self.current_step = None
            self.decide(EventType.WORKFLOW_COMPLETED, {"state": dict(self.state)})
            self.status = WorkflowStatus.COMPLETED
        except BaseException as exc:
            # A step that calls sys.exit() or raises any other BaseException fails like any
            # step: workflow code never takes its worker down. GeneratorExit is the coroutine
            # being closed, not the step failing.
            if isinstance(exc, GeneratorExit):
                raise
            for task in self._loop.take_tasks():  # the failed step's tasks must not run on
                if task is not self._main:
                    task.cancel()
            if isinstance(exc, ContinueAsNew) and self._failure is None:
                self._continue_as_new(exc.payload)
                return
            if isinstance(exc, asyncio.CancelledError) and self._spinning is not None:
                exc = self._spinning
            if self._failure is not None or isinstance(exc, NonDeterminismError):
                self._finish_failed(self._failure or exc, step=self.current_step)
                return
            try:
                self.error = error_payload(exc, self.current_step)
                self.decide(EventType.WORKFLOW_FAILED, {"error": self.error})
                self.status = WorkflowStatus.FAILED
            except NonDeterminismError as nd:
                self._finish_failed(nd, step=self.current_step)

    def _continue_as_new(self, payload: dict[str, Any]) -> None:
        """End the run with WORKFLOW_CONTINUED_AS_NEW; the store starts the next one."""
        self._tearing_down = True  # the run's other calls end with it: nothing is withdrawn
        try:
            self.decide(EventType.WORKFLOW_CONTINUED_AS_NEW, {**payload, "step": self.current_step})
        except NonDeterminismError as nd:
            self._finish_failed(nd, step=self.current_step)
            return
        self.continued_as_new = payload
        self.status = WorkflowStatus.COMPLETED
        for pending in self._pending.values():
            pending.future.cancel()
        self._pending.clear()
