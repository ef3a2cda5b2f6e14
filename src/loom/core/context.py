"""``WorkflowContext``: what a step sees, and the only door from workflow code to the world.

Every durable call (activity, sleep, signal wait, state change) becomes a decision event with a
sequence number. On replay the same call must produce the same kind of event with the same name,
or :class:`~loom.errors.NonDeterminismError` is raised naming both. ``now()``, ``random()`` and
``uuid4()`` are derived from the history, so they return the same values on every replay.

``ctx.input`` and the values read from ``ctx.state`` are read-only views (loom.frozen): an
in-place change would live only in this worker's memory, and a replay would not see it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random as _random
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar, overload

from loom import codec, limits
from loom.core.history import EventType
from loom.definitions import activity_definition, workflow_definition
from loom.errors import ConfigurationError, ReadOnlyError
from loom.frozen import freeze, thaw
from loom.queues import DEFAULT_QUEUE

if TYPE_CHECKING:
    from loom.core.replay import WorkflowExecution

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")
P = ParamSpec("P")
R = TypeVar("R")

_log = logging.getLogger("loom.workflow")


_MAX_YEARS = 100
MAX_DURATION = _MAX_YEARS * 365.25 * 86400.0
"""The longest durable wait (sleep or signal timeout) accepted, in seconds."""


class WorkflowLogger(logging.LoggerAdapter[logging.Logger]):
    """Silent while the workflow replays; stamps ``workflow_id``, ``run_id`` and ``step`` on
    every record (and, when the worker traces the run, its ``trace_id`` and ``span_id``), the
    fields ``loom worker --log-format json`` writes, so its lines join traces and the
    dashboard's ids."""

    def __init__(self, execution: WorkflowExecution) -> None:
        # The execution, not the context: a context holding a logger that holds it would be a
        # reference cycle, and every finished execution would wait for the garbage collector.
        super().__init__(_log, {})
        self._execution = execution

    def isEnabledFor(self, level: int) -> bool:
        return not self._execution.is_replaying and self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            msg, kwargs = self.process(msg, kwargs)
            self.logger.log(level, msg, *args, stacklevel=2, **kwargs)

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(kwargs.get("extra") or {})
        execution = self._execution
        extra.setdefault("workflow_id", execution.workflow_id)
        extra.setdefault("run_id", execution.run_id)
        extra.setdefault("step", execution.current_step)
        for key, value in execution.log_fields.items():
            extra.setdefault(key, value)
        kwargs["extra"] = extra
        return f"[{self._execution.workflow_id}] {msg}", kwargs


_STATE_HINT = (
    "the workflow state changes only through `await ctx.state.set(key, value)` or "
    "`await ctx.state.update(key=lambda current: ...)`, which record it durably"
)
_INPUT_HINT = (
    "the workflow input is part of the history; keep what you derive from it in local "
    "variables or in ctx.state (`await ctx.state.set(key, value)`)"
)


_SAME: Any = object()  # continue_as_new() without an input: this run's input


class StateProxy(Mapping[str, Any], Generic[StateT]):
    """Read the workflow state like a dict; change it only through ``await set`` / ``update``.

    Each change is one durable event (``STATE_SET`` or ``STATE_UPDATE``), visible to
    ``handle.state()`` as soon as the workflow next pauses. Values read from it are read-only
    (a list or dict raises ``ReadOnlyError`` if changed in place); ``to_dict()`` and
    ``copy.deepcopy`` give mutable copies.
    """

    def __init__(self, execution: WorkflowExecution) -> None:
        self._execution = execution

    def __getitem__(self, key: str) -> Any:
        return freeze(self._execution.state[key], f"ctx.state[{key!r}]", _STATE_HINT)

    def __contains__(self, key: object) -> bool:
        return key in self._execution.state

    def __setitem__(self, key: str, value: Any) -> None:
        raise ReadOnlyError(f"ctx.state is read-only: {_STATE_HINT}")

    __delitem__ = __setitem__

    def __iter__(self) -> Iterator[str]:
        return iter(self._execution.state)

    def __len__(self) -> int:
        return len(self._execution.state)

    def __repr__(self) -> str:
        return f"StateProxy({self._execution.state!r})"

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the current state: changing it changes nothing durable."""
        return thaw(self._execution.state)  # type: ignore[no-any-return]

    async def set(self, key: str, value: Any) -> None:
        """Set one key: one ``STATE_SET`` event."""
        if not isinstance(key, str):
            raise ConfigurationError(f"state keys are strings, got {key!r}")
        stored = codec.to_json(
            value, what=f"state value for key {key!r}", root=f"state[{str(key)!r}]"
        )
        event = self._execution.decide(EventType.STATE_SET, {"key": key, "value": stored})
        self._execution.state[key] = event.payload["value"]

    async def update(self, **updaters: Callable[[Any], Any]) -> None:
        """Compute several keys from their current values; one atomic ``STATE_UPDATE`` event.

        Each updater receives the key's current value (``None`` if unset) and returns the new
        value, or an awaitable of it, as in ``update(count=lambda c: asyncio.sleep(0, c + 1))``.
        """
        values: dict[str, Any] = {}
        for key, updater in updaters.items():
            if not callable(updater):
                raise ConfigurationError(
                    f"state.update({key}=...) takes a function of the current value, "
                    f"got {updater!r}; use state.set() for a plain value"
                )
            new = updater(self[key] if key in self._execution.state else None)
            if isinstance(new, Awaitable):
                new = await new
            values[key] = codec.to_json(
                new, what=f"state value for key {key!r}", root=f"state[{key!r}]"
            )
        event = self._execution.decide(EventType.STATE_UPDATE, {"values": values})
        self._execution.state.update(event.payload["values"])


class WorkflowContext(Generic[InputT, StateT]):
    """Passed to every step: the workflow's input, its state, and its durable operations."""

    def __init__(self, execution: WorkflowExecution) -> None:
        self._execution = execution
        self._state: StateProxy[StateT] = StateProxy(execution)
        self._logger = WorkflowLogger(execution)

    # -- read-only facts -------------------------------------------------------------------
    @property
    def input(self) -> InputT:
        """The workflow input, as given to ``start`` (read-only: it is part of the history).

        A dict or list input is a read-only view: changing it raises ``ReadOnlyError``.
        """
        return freeze(self._execution.input, "ctx.input", _INPUT_HINT)  # type: ignore[no-any-return]

    @property
    def state(self) -> StateProxy[StateT]:
        return self._state

    @property
    def workflow_id(self) -> str:
        return self._execution.workflow_id

    @property
    def step(self) -> str | None:
        """The name of the step now running."""
        return self._execution.current_step

    @property
    def is_replaying(self) -> bool:
        """True while the code re-runs through events already in the history."""
        return self._execution.is_replaying

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return self._logger

    # -- deterministic replacements for clock and randomness -------------------------------
    def now(self) -> datetime:
        """The time of the latest event the workflow has seen; identical on replay."""
        return datetime.fromtimestamp(self._execution.now, UTC)

    def random(self) -> _random.Random:
        """A random generator seeded from the workflow id and step: identical on replay."""
        return self._execution.rng

    def uuid4(self) -> uuid.UUID:
        """A random-looking UUID that replay reproduces."""
        return uuid.UUID(int=self._execution.rng.getrandbits(128), version=4)

    def patched(self, patch_id: str) -> bool:
        """Whether to take the new code path of a change made under running workflows, as
        Temporal's ``patched``: True for new runs and for replays of histories that took it,
        False for replays of histories recorded before the change::

            if ctx.patched("send-receipt"):
                await ctx.activity(send_receipt, order)   # new code
            # else: the old path, for runs that started before the change

        True holds for the rest of the run; False (an old history) for the rest of the step: a
        later step asks again, and takes the new path once it runs live.

        Once no run of the old code is left, remove the ``else`` branch and keep the call (or
        remove it too: its recorded PATCH_APPLIED events are passed over).
        """
        if not isinstance(patch_id, str) or not patch_id:
            raise ConfigurationError("patch ids are non-empty strings")
        return self._execution.patched(patch_id)

    # -- durable operations ----------------------------------------------------------------
    @overload
    async def activity(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    @overload
    async def activity(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R: ...

    async def activity(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run an ``@loom.activity`` durably and return its result.

        Arguments are checked before anything runs: a value that cannot be stored raises
        ``PayloadError`` here. If the activity fails after its retries, ``ActivityFailedError``
        is raised here, where the step can catch it and compensate.
        """
        definition = activity_definition(fn)
        what = f"an argument of activity {definition.name!r}"
        payload = {
            "name": definition.name,
            "args": codec.to_json(list(args), what=what, root="args"),
            "kwargs": codec.to_json(kwargs, what=what, root="kwargs"),
            "step": self._execution.current_step,
        }
        event = self._execution.decide(EventType.ACTIVITY_SCHEDULED, payload)
        # What _withdrawable does, inline: one coroutine less for every activity.
        try:
            result = await self._execution.schedule_activity(event, definition)
        except asyncio.CancelledError:
            self._execution.withdraw(event)
            raise
        returned = f"the result of activity {definition.name!r}"
        # A private copy: the recorded result must not change if the step edits what it got.
        return codec.convert(thaw(result), definition.return_annotation, what=returned)

    async def sleep(
        self,
        delta: timedelta | float | None = None,
        *,
        seconds: float | None = None,
        until: datetime | None = None,
    ) -> None:
        """Sleep durably. The workflow holds no worker and no memory while it sleeps.

        Give exactly one of ``delta`` (a timedelta or seconds), ``seconds=`` or ``until=`` (an
        aware datetime).
        """
        given = [x for x in (delta, seconds, until) if x is not None]
        if len(given) != 1:
            raise ConfigurationError("ctx.sleep() takes exactly one of delta=, seconds= or until=")
        fire_at = deadline_after(self._execution.now, delta, seconds, until)
        event = self._execution.decide(EventType.TIMER_SCHEDULED, {"fire_at": fire_at})
        await self._withdrawable(event, self._execution.schedule_timer(event))

    async def wait_for_signal(self, name: str, timeout: timedelta | float | None = None) -> Any:
        """Wait until signal ``name`` arrives and return its payload.

        Signals are buffered: one sent before the workflow waits is delivered when it does, in
        the order sent. With ``timeout`` (seconds or timedelta), raises ``TimeoutError`` if no
        such signal arrives in time.
        """
        if not isinstance(name, str) or not name:
            raise ConfigurationError("signal names are non-empty strings")
        handler = self._execution.definition.signal_handlers.get(name)
        if handler is not None:
            raise ConfigurationError(
                f"signal {name!r} is taken by the @loom.signal handler {handler}(); wait for "
                "the change it makes with `await ctx.wait_until(lambda: ...)` instead"
            )
        deadline = (
            None if timeout is None else deadline_after(self._execution.now, timeout, None, None)
        )
        event = self._execution.decide(
            EventType.SIGNAL_WAIT_STARTED, {"name": name, "deadline": deadline}
        )
        # A private copy: the recorded payload must not change if the step edits what it got.
        return thaw(await self._withdrawable(event, self._execution.wait_signal(event)))

    async def child(
        self,
        workflow: type[Any],
        input: Any = None,
        *,
        workflow_id: str | None = None,
        initial_state: Mapping[str, Any] | None = None,
        parent_close_policy: str = "cancel",
    ) -> Any:
        """Start a child workflow durably, wait for it to end and return its final state.

        Raises :class:`~loom.errors.ChildWorkflowFailedError` (the child's error as its
        ``__cause__``) when the child fails or is canceled. See :meth:`start_child`.
        """
        handle = self.start_child(
            workflow,
            input,
            workflow_id=workflow_id,
            initial_state=initial_state,
            parent_close_policy=parent_close_policy,
        )
        return await handle

    def start_child(
        self,
        workflow: type[Any],
        input: Any = None,
        *,
        workflow_id: str | None = None,
        initial_state: Mapping[str, Any] | None = None,
        parent_close_policy: str = "cancel",
    ) -> ChildHandle:
        """Start a child workflow durably and return a handle to await (``await handle``)
        later, e.g. to fan out with ``asyncio.gather``.

        The child is recorded with the parent's next write and started in the same transaction,
        so it starts exactly once whatever crashes. Without ``workflow_id`` its id is derived
        from the parent's id and the call's place in the history (``<parent id>/<seq>``), so a
        replayed parent never starts a second child. ``parent_close_policy``: ``"cancel"`` (the
        child is canceled when the parent ends while it runs; the step must await it) or
        ``"abandon"`` (it runs on; the step may leave it unawaited).
        """
        definition = workflow_definition(workflow)
        if parent_close_policy not in ("cancel", "abandon"):
            raise ConfigurationError(
                f"parent_close_policy must be 'cancel' or 'abandon', got {parent_close_policy!r}"
            )
        if workflow_id is not None:
            limits.check_id(workflow_id, "child workflow id")
        what = f"the input of child workflow {definition.name!r}"
        state = codec.to_json(dict(initial_state or {}), what=what, root="initial_state")
        payload = {
            "name": definition.name,
            "version": definition.version,
            "workflow_id": workflow_id,
            "input": codec.to_json(input, what=what, root="input"),
            "state": state,
            "parent_close_policy": parent_close_policy,
        }
        if definition.queue != DEFAULT_QUEUE:  # the child runs on its class's queue
            payload["queue"] = definition.queue
        event = self._execution.decide(EventType.CHILD_WORKFLOW_STARTED, payload)
        future = self._execution.start_child(event)
        task = asyncio.ensure_future(self._withdrawable(event, future))
        self._execution.child_task(event.seq, task)
        return ChildHandle(str(event.payload["workflow_id"]), definition.name, task)

    async def continue_as_new(
        self, input: Any = _SAME, *, initial_state: Mapping[str, Any] | None = None
    ) -> NoReturn:
        """End this run and start a fresh one of the same workflow, under the same id, with a
        new run id and an empty history: a workflow that loops forever keeps its history small.

        ``input`` defaults to this run's input; ``initial_state`` to an empty state (pass
        ``ctx.state.to_dict()`` to carry it over). Signals still buffered are kept for the new
        run; the children it started with the "cancel" policy are canceled. Nothing after this
        call runs.
        """
        what = "the input of the next run"
        carried = self._execution.input if input is _SAME else input
        payload = {
            "input": codec.to_json(carried, what=what, root="input"),
            "state": codec.to_json(dict(initial_state or {}), what=what, root="initial_state"),
        }
        raise ContinueAsNew(payload)

    async def wait_until(
        self, condition: Callable[[], object], timeout: timedelta | float | None = None
    ) -> None:
        """Resume once ``condition()`` is true, as Temporal's ``wait_condition``.

        The condition (a function of ``ctx.state``, usually) is checked now and again each
        time something is delivered to the workflow: a signal its ``@loom.signal`` handler
        applies, an activity's outcome in a concurrent task, a timer. Nothing is polled and
        nothing is recorded but the timeout's timer: with ``timeout``, raises ``TimeoutError``
        when the condition is still false after it.
        """
        if not callable(condition):
            raise ConfigurationError(f"wait_until() takes a function, got {condition!r}")
        if condition():
            return
        met = self._execution.wait_condition(condition)
        if timeout is None:
            await met
            return
        timer = asyncio.ensure_future(self.sleep(timeout))
        try:
            await asyncio.wait([met, timer], return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not timer.done():
                timer.cancel()  # withdraws the timer: TIMER_CANCELED
                await asyncio.wait([timer])
            if not met.done():
                met.cancel()
        if met.cancelled():
            if timer.done() and not timer.cancelled():
                timer.result()  # the sleep's own error, if any
            raise TimeoutError(f"the condition was still false after the timeout ({timeout})")
        met.result()

    async def _withdrawable(self, event: Any, call: Awaitable[Any]) -> Any:
        """Await a durable call; when the awaiting task is cancelled (a race's loser, a
        ``TaskGroup`` closing), the call is withdrawn as a recorded decision and the
        cancellation goes on to the code, which may catch it."""
        try:
            return await call
        except asyncio.CancelledError:
            self._execution.withdraw(event)
            raise


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new`` to end the run; a BaseException, so that a step's
    ``except Exception`` does not swallow it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        super().__init__("the workflow continues as a new run")
        self.payload = payload


class ChildHandle:
    """A child workflow started by :meth:`WorkflowContext.start_child`: ``await`` it for its
    final state; cancelling the awaiting task withdraws the child (it is canceled)."""

    def __init__(self, workflow_id: str, name: str, task: asyncio.Future[Any]) -> None:
        self.workflow_id = workflow_id
        self.name = name
        self.task = task
        """The task awaiting the child, for ``asyncio.wait([child.task, ...])`` races."""

    def __await__(self) -> Any:
        return self.task.__await__()

    async def result(self) -> Any:
        return await self.task

    def cancel(self) -> None:
        """Withdraw the child: it is canceled (with the parent's next write)."""
        self.task.cancel()


def deadline_after(
    now: float, delta: timedelta | float | None, seconds: float | None, until: datetime | None
) -> float:
    """When a durable wait that starts at ``now`` ends: after ``delta`` or ``seconds``, or at
    ``until``. The one rule for durations (finite, not negative, under 100 years), also applied
    to a test clock's moves."""
    if until is not None:
        if not isinstance(until, datetime):
            raise ConfigurationError(f"until= takes a datetime, got {until!r}")
        if until.tzinfo is None or until.utcoffset() is None:
            raise ConfigurationError(
                "until= needs an aware datetime (e.g. datetime.now(UTC) + ...); a naive one is "
                "ambiguous across machines"
            )
        fire_at = until.timestamp()
        if fire_at - now > MAX_DURATION:
            raise ConfigurationError(
                f"until={until.isoformat()} is more than {_MAX_YEARS} years away; a durable wait "
                "that long is almost certainly a unit mistake"
            )
        return fire_at
    amount = seconds if seconds is not None else delta
    if isinstance(amount, timedelta):
        amount = amount.total_seconds()
    if not isinstance(amount, int | float) or isinstance(amount, bool):
        raise ConfigurationError(f"a duration must be a timedelta or seconds, got {amount!r}")
    if isinstance(amount, float) and not math.isfinite(amount):
        raise ConfigurationError(
            f"a duration must be a finite number of seconds, got {amount!r}; to wait with no "
            "limit, call wait_for_signal() without a timeout"
        )
    if amount < 0:
        raise ConfigurationError(f"a duration cannot be negative, got {amount!r}")
    if amount > MAX_DURATION:
        raise ConfigurationError(
            f"a duration of {amount!r} seconds is more than {_MAX_YEARS} years; a durable wait "
            "that long is almost certainly a unit mistake"
        )
    return now + float(amount)
