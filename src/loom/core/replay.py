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
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from loom.core import loop as loop_module
from loom.core.context import ContinueAsNew, WorkflowContext
from loom.core.history import (
    DECISIONS,
    INPUTS,
    WITHDRAWALS,
    Event,
    EventType,
    apply_state,
    decision_key,
)
from loom.core.loop import DeterministicLoop
from loom.definitions import ActivityDefinition, WorkflowDefinition, activity_definition
from loom.errors import (
    ActivityFailedError,
    ChildWorkflowFailedError,
    ConfigurationError,
    LoomError,
    NonDeterminismError,
    UnawaitedCallError,
    WorkflowSandboxError,
)
from loom.failures import describe_error
from loom.frozen import thaw
from loom.status import WorkflowStatus


@dataclass(frozen=True, slots=True)
class ActivityRun:
    """An activity attempt the worker must run: ``seq`` is its ACTIVITY_SCHEDULED event."""

    seq: int
    definition: ActivityDefinition
    args: list[Any]
    kwargs: dict[str, Any]
    step: str | None
    attempt: int = 1
    not_before: float = 0.0


@dataclass(slots=True)
class _Pending:
    kind: EventType
    future: asyncio.Future[Any]
    name: str | None = None
    deadline: float | None = None
    run: ActivityRun | None = None
    step: str | None = None
    child_id: str | None = None
    abandon: bool = False
    task: asyncio.Future[Any] | None = None
    since: float = 0.0


def plan_replay(
    definition: WorkflowDefinition, workflow_id: str, history: Sequence[Event], *, full: bool
) -> tuple[int, dict[str, Any], list[Event]]:
    """Split a history into (first step to run, state before it, events to replay through it).

    What retries and resets discarded is dropped first (:func:`kept_events`). Then, unless
    ``full``, everything up to the last completed step is folded into the state, so completed
    steps never re-run.
    """
    cleaned = kept_events(workflow_id, history)
    state = dict(history[0].payload.get("state") or {})
    if full:
        return 0, state, cleaned
    first_step = 0
    cut = 0
    for i, event in enumerate(cleaned):
        if event.type is EventType.STEP_COMPLETED:
            index = int(event.payload["index"])
            if (
                index >= len(definition.steps)
                or definition.steps[index].name != event.payload["step"]
            ):
                expected = (
                    definition.steps[index].name if index < len(definition.steps) else "nothing"
                )
                raise NonDeterminismError(
                    workflow_id,
                    f"the history completed step {event.payload['step']!r} at position {index}, "
                    f"where the code now has {expected!r}",
                )
            first_step = index + 1
            cut = i + 1
    for event in cleaned[:cut]:
        apply_state(state, event)
    return first_step, state, cleaned[cut:]


def kept_events(workflow_id: str, history: Sequence[Event]) -> list[Event]:
    """The events after WORKFLOW_STARTED that still count, in order.

    A WORKFLOW_RETRIED drops the failed attempt before it (everything after the last completed
    step); a WORKFLOW_RESET to step ``index`` drops everything after the completion of the step
    before it (all of it for step 0), so the steps from ``index`` on run again and their state
    changes no longer apply.
    """
    if not history or history[0].type is not EventType.WORKFLOW_STARTED:
        raise NonDeterminismError(workflow_id, "the history does not begin with WORKFLOW_STARTED")
    cleaned: list[Event] = []
    attempt_begin = 0
    for event in history[1:]:
        if event.type is EventType.WORKFLOW_RETRIED:
            del cleaned[attempt_begin:]
        elif event.type is EventType.WORKFLOW_RESET:
            del cleaned[reset_cut(workflow_id, cleaned, event) :]
        else:
            cleaned.append(event)
            if event.type is EventType.STEP_COMPLETED:
                attempt_begin = len(cleaned)
            continue
        attempt_begin = len(cleaned)
    return cleaned


def reset_cut(workflow_id: str, kept: Sequence[Event], reset: Event) -> int:
    """Where the WORKFLOW_RESET ``reset`` cuts the events ``kept`` before it: just after the
    completion of the step before the one it restarts from."""
    index = int(reset.payload.get("index", 0))
    if index <= 0:
        return 0
    for i in range(len(kept) - 1, -1, -1):
        event = kept[i]
        if event.type is EventType.STEP_COMPLETED and event.payload.get("index") == index - 1:
            return i + 1
    raise NonDeterminismError(
        workflow_id,
        f"the history resets to step {reset.payload.get('to_step')!r} (seq {reset.seq}), but "
        f"the step before it (position {index - 1}) never completed",
    )


def discarded_signals(history: Sequence[Event]) -> list[tuple[str, Any]]:
    """(name, payload) of the signals consumed by the attempt a retry will discard.

    That attempt is everything after the last completed step (or the last retry or reset).
    """
    start = 0
    for i, event in enumerate(history):
        if event.type in (
            EventType.STEP_COMPLETED,
            EventType.WORKFLOW_RETRIED,
            EventType.WORKFLOW_RESET,
        ):
            start = i + 1
    return signals_in(history[start:])


def signals_in(events: Sequence[Event]) -> list[tuple[str, Any]]:
    """(name, payload) of the signals ``events`` received, in order."""
    return [
        (str(e.payload["name"]), e.payload.get("payload"))
        for e in events
        if e.type is EventType.SIGNAL_RECEIVED
    ]


def _error_payload(exc: BaseException, step: str | None) -> dict[str, Any]:
    """What WORKFLOW_FAILED records (never raises, even for an exception that cannot be
    printed): type, message, step, and the traceback's tail."""
    described = describe_error(exc)
    return {
        "type": described["type"],
        "message": described["message"],
        "step": step,
        "traceback": described["traceback"],
    }


class WorkflowExecution:
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
        self._pending: dict[int, _Pending] = {}
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
    def finished(self) -> bool:
        return self.status is not WorkflowStatus.RUNNING

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

    # -- live deliveries (the worker) ----------------------------------------------------
    def activity_completed(self, seq: int, result: Any, now: float) -> None:
        run = self._pending[seq].run
        attempt = run.attempt if run else 1
        self._deliver(
            EventType.ACTIVITY_COMPLETED,
            {
                "scheduled": seq,
                "name": run and run.definition.name,
                "attempt": attempt,
                "result": result,
            },
            now,
        )

    def activity_failed(
        self, seq: int, error: dict[str, Any], retry_at: float | None, now: float
    ) -> None:
        run = self._pending[seq].run
        self._deliver(
            EventType.ACTIVITY_FAILED,
            {
                "scheduled": seq,
                "name": run and run.definition.name,
                "attempt": run.attempt if run else 1,
                "error": error,
                "retry_at": retry_at,
            },
            now,
        )

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

    # -- the context's door (loom.core.context) -----------------------------------------
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

    # -- internals ------------------------------------------------------------------------
    def _register(self, event: Event, **fields: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._pending[event.seq] = _Pending(
            event.type, future, step=self.current_step, since=event.timestamp, **fields
        )
        return future

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
                self.error = _error_payload(exc, self.current_step)
                self.decide(EventType.WORKFLOW_FAILED, {"error": self.error})
                self.status = WorkflowStatus.FAILED
            except NonDeterminismError as nd:
                self._finish_failed(nd, step=self.current_step)

    def _detach_abandoned(self, step: str) -> None:
        """Children started with the "abandon" policy that the step did not await run on by
        themselves: the step stops waiting for them (nothing is recorded)."""
        for seq, pending in list(self._pending.items()):
            if pending.abandon and pending.step == step:
                self._detached.add(seq)
                del self._pending[seq]
                if pending.task is not None:
                    pending.task.cancel()

    async def _let_cancelled_tasks_end(self) -> None:
        """A step that cancels a task (the loser of a race) may return before that task has
        run its cancellation; let it run, so the withdrawal is recorded within the step."""
        for _ in range(1000):
            if not any(t.cancelling() for t in self._loop.pending_tasks() if t is not self._main):
                return
            await asyncio.sleep(0)

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

    def _check_step_settled(self, step: str) -> None:
        orphans = [task for task in self._loop.take_tasks() if not task.done()]
        if orphans or any(p.step == step for p in self._pending.values()):
            what = ", ".join([_describe_task(t) for t in orphans] + [self._waiting_on()])
            for task in orphans:  # they must not run on, into the next step's history
                task.cancel()
            raise UnawaitedCallError(
                f"step {step!r} of workflow {self.workflow_id!r} returned while work it started "
                f"was still pending ({what.removesuffix(', nothing')}); await every "
                "ctx.activity, ctx.sleep and ctx.wait_for_signal, and every task created with "
                "asyncio.create_task, within the step that makes it"
            )

    def _run_code(self) -> None:
        """Run the workflow code until idle; fail a step stuck on something not durable.

        The code is stuck when nothing is runnable, it has not finished, and no durable call
        is pending: no event Loom could deliver would ever wake it. The futures it waits on
        are failed with WorkflowSandboxError, raised where they are awaited in the step.
        """
        self._run_until_idle()
        while self._check_conditions():
            self._run_until_idle()
        for _ in range(100):  # a step may catch the error and get stuck again
            if self.finished or self._pending or self._main.done():
                return
            if self._conditions and self.definition.signal_handlers:
                return  # a signal's handler may make the condition true
            waiting = {id(f) for _, f in self._conditions}
            stuck = [(f, a) for f, a in _stuck_futures(self._loop) if id(f) not in waiting]
            if not stuck and self._conditions:
                for _, future in self._conditions:
                    future.set_exception(
                        WorkflowSandboxError(
                            f"step {self.current_step!r} of workflow {self.workflow_id!r} waits "
                            "until a condition that nothing can make true: no durable call is "
                            "pending and the workflow has no @loom.signal handler to change "
                            "its state"
                        )
                    )
                self._conditions = []
                self._run_until_idle()
                continue
            if not stuck:
                break
            for future, awaited in stuck:
                future.set_exception(
                    WorkflowSandboxError(
                        f"step {self.current_step!r} of workflow {self.workflow_id!r} awaits "
                        f"{awaited}, which nothing durable can complete: Loom neither records "
                        "nor replays it, so the step would wait forever; use "
                        "`await ctx.activity(fn, ...)` for I/O and threads, "
                        "`await ctx.sleep(...)` to wait, and "
                        "`await ctx.wait_for_signal(name)` to wait for the outside world"
                    )
                )
            self._run_until_idle()
        if not (self.finished or self._pending or self._main.done()):
            self._finish_failed(
                WorkflowSandboxError(
                    f"step {self.current_step!r} of workflow {self.workflow_id!r} keeps waiting "
                    "on something that is not durable; use ctx.activity, ctx.sleep and "
                    "ctx.wait_for_signal"
                ),
                step=self.current_step,
            )

    def _check_conditions(self) -> bool:
        """Resolve the waits whose condition now holds; True if any did. A condition that
        raises fails its wait with the error."""
        if not self._conditions:
            return False
        kept, resolved = [], False
        for condition, future in self._conditions:
            if future.done():
                continue
            try:
                holds = bool(condition())
            except Exception as exc:
                future.set_exception(exc)
                resolved = True
                continue
            if holds:
                future.set_result(None)
                resolved = True
            else:
                kept.append((condition, future))
        self._conditions = kept
        return resolved

    def _run_until_idle(self) -> None:
        """Run the code until idle; a step that spins instead fails with WorkflowSandboxError.

        Spinning (``while not done: await asyncio.sleep(0)``) would hold the worker's thread,
        and every workflow on it, forever. Its tasks are cancelled, and the step's failure is
        recorded as the sandbox error, not as a cancellation.
        """
        if self._loop.run_until_idle():
            return
        self._spinning = WorkflowSandboxError(
            f"step {self.current_step!r} of workflow {self.workflow_id!r} ran "
            f"{loop_module.SPIN_LIMIT} callbacks without waiting on anything durable: it is "
            "spinning (e.g. a loop around asyncio.sleep(0) polling for a change), which would "
            "hold the worker forever; wait "
            "with `await ctx.sleep(...)` or `await ctx.wait_for_signal(name)` instead"
        )
        self._tearing_down = True
        for task in self._loop.pending_tasks():
            task.cancel()
        if not self._loop.run_until_idle() and not self.finished:
            self._finish_failed(self._spinning, step=self.current_step)  # it ignored the cancel

    def _skip_retired_patches(self) -> None:
        """A PATCH_APPLIED the code no longer asks about (the patch's old path was removed once
        no run needed it) is passed over: the code now always takes the new path."""
        while self._stream and self._stream[0].type is EventType.PATCH_APPLIED:
            self._stream.popleft()

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
            _call_handler(handler, WorkflowContext(self), thaw(payload)), name=f"signal {name}"
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

    def _waiting_on(self) -> str:
        """What the code is blocked on, by kind, name and seq, for determinism errors."""
        parts = []
        for seq, p in self._pending.items():
            name = p.run.definition.name if p.run is not None else p.name
            if p.child_id is not None:
                name = f"{p.name} {p.child_id}"
            label = f"{p.kind.value} {name!r}" if name else p.kind.value
            parts.append(f"{label} (seq {seq})")
        return ", ".join(parts) or "nothing"

    def _nondeterminism(self, detail: str) -> NonDeterminismError:
        if self._failure is None:
            self._failure = NonDeterminismError(self.workflow_id, detail)
        return self._failure

    def _finish_failed(self, exc: BaseException, *, step: str | None) -> None:
        """Fail with a new WORKFLOW_FAILED event at the end of the history."""
        if self.finished and self.error is not None:
            return
        self._stream.clear()
        self.error = _error_payload(exc, step)
        if isinstance(exc, LoomError):
            self.error["traceback"] = None
        self.status = WorkflowStatus.FAILED
        self._new.append(
            Event(self._next_seq, EventType.WORKFLOW_FAILED, {"error": self.error}, self._clock)
        )
        self._next_seq += 1
        for pending in self._pending.values():
            pending.future.cancel()
        self._pending.clear()


def child_id(parent_id: str, seq: int) -> str:
    """The id of the child a parent starts at ``seq`` without naming one: ``<parent>/<seq>``,
    or, when that would break the id rule's 200 characters, a digest of the parent id."""
    derived = f"{parent_id}/{seq}"
    if len(derived) <= 200:
        return derived
    digest = hashlib.sha256(parent_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{parent_id[:120]}~{digest}/{seq}"


async def _call_handler(handler: Callable[..., Any], ctx: Any, payload: Any) -> None:
    result = handler(ctx, payload)
    if asyncio.iscoroutine(result):
        await result


def _stuck_futures(loop: DeterministicLoop) -> list[tuple[asyncio.Future[Any], str]]:
    """(future, what awaits it) for every plain future a pending task of ``loop`` waits on.

    Tasks and ``gather`` futures are skipped: they complete when what they wait on does.
    """
    found = []
    for task in loop.pending_tasks():
        waiter = getattr(task, "_fut_waiter", None)
        if (
            isinstance(waiter, asyncio.Future)
            and not isinstance(waiter, asyncio.Task)
            and not waiter.done()
            and type(waiter).__name__ != "_GatheringFuture"
        ):
            found.append((waiter, loop_module.awaited(task)))
    return found


def _describe_task(task: asyncio.Task[Any]) -> str:
    """``a task running ctx.activity('charge')`` or ``a task running helper()``."""
    coro: Any = task.get_coro()
    name = getattr(coro, "__qualname__", None) or task.get_name()
    frame = getattr(coro, "cr_frame", None)
    if name == "WorkflowContext.activity" and frame is not None:
        fn = frame.f_locals.get("fn")
        try:
            activity = activity_definition(fn).name
        except LoomError:
            activity = getattr(fn, "__name__", "?")
        return f"a task running ctx.activity({activity!r})"
    return f"a task running {name}()"
