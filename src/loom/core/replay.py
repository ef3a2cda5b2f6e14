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
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from loom.core import loop as loop_module
from loom.core.context import WorkflowContext
from loom.core.history import (
    DECISIONS,
    INPUTS,
    Event,
    EventType,
    apply_state,
    decision_key,
)
from loom.core.loop import DeterministicLoop
from loom.definitions import ActivityDefinition, WorkflowDefinition, activity_definition
from loom.errors import (
    ActivityFailedError,
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


def plan_replay(
    definition: WorkflowDefinition, workflow_id: str, history: Sequence[Event], *, full: bool
) -> tuple[int, dict[str, Any], list[Event]]:
    """Split a history into (first step to run, state before it, events to replay through it).

    Failed attempts that a retry discarded are dropped first. Then, unless ``full``, everything
    up to the last completed step is folded into the state, so completed steps never re-run.
    """
    if not history or history[0].type is not EventType.WORKFLOW_STARTED:
        raise NonDeterminismError(workflow_id, "the history does not begin with WORKFLOW_STARTED")
    cleaned: list[Event] = []
    attempt_begin = 0
    for event in history[1:]:
        if event.type is EventType.WORKFLOW_RETRIED:
            del cleaned[attempt_begin:]
        else:
            cleaned.append(event)
            if event.type is EventType.STEP_COMPLETED:
                attempt_begin = len(cleaned)
            continue
        attempt_begin = len(cleaned)
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


def discarded_signals(history: Sequence[Event]) -> list[tuple[str, Any]]:
    """(name, payload) of the signals consumed by the attempt a retry will discard.

    That attempt is everything after the last completed step (or the last retry).
    """
    start = 0
    for i, event in enumerate(history):
        if event.type in (EventType.STEP_COMPLETED, EventType.WORKFLOW_RETRIED):
            start = i + 1
    return [
        (str(e.payload["name"]), e.payload.get("payload"))
        for e in history[start:]
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
        try:
            self._first_step, self.state, stream = plan_replay(
                definition, workflow_id, history, full=full
            )
        except NonDeterminismError as exc:
            self._failure = exc
            self._finish_failed(exc, step=None)
            return
        self._stream.extend(stream)
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
        """(seq, signal name) of every signal wait, oldest first."""
        return [
            (seq, p.name)
            for seq, p in self._pending.items()
            if p.kind is EventType.SIGNAL_WAIT_STARTED and p.name is not None
        ]

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

    def receive_signal(self, seq: int, name: str, payload: Any, now: float) -> None:
        self._deliver(
            EventType.SIGNAL_RECEIVED, {"scheduled": seq, "name": name, "payload": payload}, now
        )

    def close(self) -> None:
        """Drop the code's coroutines; the execution must not be used afterwards."""
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

    # -- internals ------------------------------------------------------------------------
    def _register(self, event: Event, **fields: Any) -> asyncio.Future[Any]:
        future = self._loop.create_future()
        self._pending[event.seq] = _Pending(event.type, future, step=self.current_step, **fields)
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
                # A new instance per step: attributes are not a channel between steps, with or
                # without the worker's cache (steps share only ctx.state).
                self._loop.take_tasks()
                instance = self.definition.cls()
                await getattr(instance, step.attribute)(ctx)
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
        for _ in range(100):  # a step may catch the error and get stuck again
            if self.finished or self._pending or self._main.done():
                return
            stuck = _stuck_futures(self._loop)
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
        for task in self._loop.pending_tasks():
            task.cancel()
        if not self._loop.run_until_idle() and not self.finished:
            self._finish_failed(self._spinning, step=self.current_step)  # it ignored the cancel

    def _replay_inputs(self) -> None:
        """Feed recorded inputs back in order, running the code until idle after each."""
        while self._stream and not self.finished:
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
        elif pending.kind is EventType.SIGNAL_WAIT_STARTED:
            pending.future.set_exception(
                TimeoutError(f"no signal {pending.name!r} arrived before the timeout")
            )
        else:
            pending.future.set_result(None)

    def _waiting_on(self) -> str:
        """What the code is blocked on, by kind, name and seq, for determinism errors."""
        parts = []
        for seq, p in self._pending.items():
            name = p.run.definition.name if p.run is not None else p.name
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
            found.append((waiter, _awaited(task)))
    return found


def _awaited(task: asyncio.Task[Any]) -> str:
    """What the innermost coroutine of ``task`` awaits, as ``Event.wait()`` or a future."""
    coro: Any = task.get_coro()
    while True:
        inner = getattr(coro, "cr_await", None)
        if inner is None or not hasattr(inner, "cr_await"):
            break
        coro = inner
    name = getattr(coro, "__qualname__", None) or "?"
    code = getattr(coro, "cr_code", None)
    if code is not None and code.co_filename.startswith(_ASYNCIO_DIR):
        return f"{name}() (asyncio)"
    return f"a bare asyncio future (e.g. loop.create_future()) in {name}()"


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


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)
