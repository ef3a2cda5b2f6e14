"""Driving one claimed workflow, from its claim until it parks or ends.

A :class:`WorkflowDriver` is made for each claim. It rebuilds the workflow (from the worker's
:class:`~loom.cache.ExecutionCache` when its history has not moved, else by replay), then turns
it over (:meth:`WorkflowDriver.drive`) until it has nothing to do now. Each turn:

1. deliver inputs: fire a due timer or hand over a buffered signal the workflow waits for, the
   earliest first (in the order they happened);
2. start the activities that are due;
3. run inline: short activities run before their scheduling is written. For up to the worker's
   ``inline_window`` after the last write, an activity starts at once and its scheduling is
   committed together with its outcome and the decisions that follow, so a workflow of quick
   activities costs one write;
4. checkpoint: once the window is used up, or before waiting any longer, what the workflow
   decided is committed, so state is durable whenever the workflow pauses;
5. wait for progress: an activity's end, a due timer, a signal or a cancel;
6. deliver outcomes of the activities that ended.

Each attempt runs under an :class:`~loom.activity_context.AttemptControl` made by the driver's
:class:`~loom.heartbeats.HeartbeatKeeper`: its heartbeats are recorded (throttled, fenced) and
handed to the next attempt. Whatever interrupts an attempt (a cancel of the workflow, a lost
lease, :meth:`WorkflowDriver.cancel_activity`) cancels its control first, with the reason, so a
sync activity, which cannot be interrupted, sees ``is_cancelled()`` and its ``heartbeat()``
raise.

When nothing is left to run now, the workflow is parked (committed with its next wake-up time)
and its lease given back. A crash before a write loses only work that is then done again:
activities run at least once, and each result is recorded once. Every write carries the lease
epoch, so a driver whose worker lost the lease can never record anything (fencing): it raises
:class:`Abort` and the worker drops the workflow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Coroutine
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any, TypeVar

from loom.activities import AttemptOutcome, run_attempt
from loom.activity_context import AttemptControl
from loom.core.calls import ActivityRun
from loom.core.history import CHILD_OUTCOME, EventType
from loom.core.replay import WorkflowExecution
from loom.failures import describe_error
from loom.heartbeats import HeartbeatKeeper
from loom.outage import OUTAGE_ERRORS, Backoff, OutageLog
from loom.status import WorkflowStatus
from loom.store.base import Claim, Commit, CommitOutcome, Dispatch, Signal
from loom.telemetry import TRACE_KEY, RunTrace, current_span

if TYPE_CHECKING:
    from loom.core.history import Event
    from loom.worker import Worker

T = TypeVar("T")

NO_SEQS: frozenset[int] = frozenset()
"""The one empty set of seqs every driver starts with (``frozenset()`` makes a new object)."""

CHILD_DECISIONS = frozenset({EventType.CHILD_WORKFLOW_STARTED, EventType.CHILD_WORKFLOW_CANCELED})

# The driver is part of the worker: its messages go where the worker's go.
log = logging.getLogger("loom.worker")


# Why running attempts were cancelled, as they see it (ActivityCancelledError.reason).
CANCELED = "its workflow was canceled"
LEASE_LOST = "its worker lost the workflow's lease"


class Abort(Exception):
    """The workflow left this worker (lease lost or canceled); stop driving it."""


def base_exception_outcome(exc: BaseException) -> AttemptOutcome:
    """An attempt that raised a BaseException (``sys.exit()``, ``KeyboardInterrupt``): a failure of
    that attempt, not retried, instead of the end of the worker."""
    error = describe_error(exc)
    error["message"] = (
        f"the activity raised {error['type']}({error['message']}); a BaseException is not retried"
    )
    return AttemptOutcome(False, error=error)


class WriteHealth:
    """Whether the database takes this worker's writes, shared by all its drivers.

    While writes fail (an outage, a full disk), no activity runs before its scheduling is
    recorded (no inline window), and the worker claims nothing new until the retry delay is
    over: activities are not run again and again for progress that cannot be recorded."""

    def __init__(self, outages: OutageLog) -> None:
        self.failing = False
        self.resume_at = 0.0
        """When (monotonic) to try writing again, while ``failing``."""
        self._backoff = Backoff(
            "recording workflow progress (no new work is started meanwhile)", outages
        )

    def failed(self, exc: BaseException) -> None:
        self.failing = True
        self.resume_at = time.monotonic() + self._backoff.failed(exc)

    def recovered(self) -> None:
        self.failing = False
        self._backoff.succeeded()


def _appended(items: list[T] | tuple[()], item: T) -> list[T]:
    """``items`` with ``item`` added: a list from the first item on."""
    if isinstance(items, list):
        items.append(item)
        return items
    return [item]


def _any_done(running: dict[int, asyncio.Task[AttemptOutcome]]) -> bool:
    # Not any() over a generator: this runs on every turn of every workflow.
    for task in running.values():  # noqa: SIM110
        if task.done():
            return True
    return False


class WorkflowDriver:
    """Drives one workflow its worker claimed, while the worker holds its lease.

    Besides driving, it is where news about the workflow reaches it while it waits on
    activities: :meth:`interrupt` (a cancel, a lost lease) and :meth:`recheck_signals`."""

    __slots__ = (
        "_releases",
        "awaits_signal",
        "awaits_tasks",
        "beats",
        "began",
        "cancel_requested",
        "claim",
        "consumed",
        "dispatched",
        "dispatches",
        "inbox",
        "lease_lost",
        "nudge",
        "outcomes_stale",
        "queued",
        "running",
        "settled",
        "settled_tasks",
        "trace",
        "waits_seen",
        "withdrawn",
        "withdrawn_tasks",
        "worker",
    )

    def __init__(self, worker: Worker, claim: Claim) -> None:
        self.worker = worker
        self.claim = claim
        self.running: dict[int, asyncio.Task[AttemptOutcome]] = {}
        """Its activities running now, by seq."""
        # The sets below are empty for nearly every workflow: each starts as NO_SEQS and is
        # replaced (not changed in place) on the rare change.
        self.queued: AbstractSet[int] = NO_SEQS
        """Those of ``running`` (by seq) that wait for their queue to let them start."""
        self.cancel_requested = False
        self.lease_lost = False
        self.inbox: list[Signal] | None = None
        """Its buffered signals as last read (less those delivered since); None: read them again."""
        self.waits_seen: frozenset[int] = NO_SEQS
        """The signal waits (by seq) the inbox was read for: a new wait reads it again."""
        self.nudge: asyncio.Event | None = None
        """Set when something arrives for it (a signal, a cancel) while it waits on activities
        (made by its first wait: news before then is seen without it)."""
        self.awaits_signal = False
        """It waits for a signal while its activities run: another process's changes wake it."""
        self.awaits_tasks = False
        """It waits for routed activities while its own run: another process's changes (one
        may have recorded a routed outcome) wake it."""
        # The lists below stay the empty tuple until their first item: most drivers add none.
        self.consumed: list[int] | tuple[()] = ()
        """Ids of the signals delivered since the last write (the next write consumes them)."""
        self._releases: set[asyncio.Task[None]] | None = None
        """Slot releases in flight (kept referenced until done)."""
        self.settled = False
        """It waits on its running activities: nothing of it moves until one ends, something
        arrives or the clock moves."""
        self.began = time.time()
        self.trace: RunTrace | None = None
        """The spans of this run-through, when the database traces workflows."""
        self.withdrawn: AbstractSet[int] = NO_SEQS
        """Activities (by seq) canceled by :meth:`cancel_activity`, whose cancel the workflow
        has not been handed yet."""
        self.dispatched: dict[int, int] = {}
        """Routed activities awaited (seq: the attempt dispatched in this claim): those of a
        queue this worker does not serve run on a worker that does (``loom.activity_tasks``)."""
        self.dispatches: list[Dispatch] | tuple[()] = ()
        """Activity tasks for the next write to insert."""
        self.settled_tasks: list[tuple[int, int]] | tuple[()] = ()
        """(seq, attempt) of the done tasks whose outcomes were delivered since the last write:
        the write that records them deletes them."""
        self.withdrawn_tasks: list[int] | tuple[()] = ()
        """Routed activities no longer awaited since the last write: their tasks are stopped."""
        self.outcomes_stale = True
        """Routed outcomes may have arrived since the last read (every claim reads them once)."""
        self.beats = HeartbeatKeeper(
            worker.store,
            claim.workflow_id,
            claim.lease_epoch,
            first_claim=claim.lease_epoch == 1,  # nothing ran before: no details to read
            max_bytes=worker.database.max_payload_bytes,
            interrupt=worker.interrupt,
            now=worker.clock.now,
            run_id=claim.run_id,
        )

    # -- news from outside ----------------------------------------------------------------
    def wake(self) -> None:
        """Something arrived for it: end its wait on activities, if it waits."""
        if self.nudge is not None:
            self.nudge.set()

    def interrupt(self, *, lease_lost: bool) -> None:
        """A cancel was requested (or the lease is lost): running activities are interrupted;
        the next write, which the store turns into the cancellation, ends the workflow."""
        self.lease_lost |= lease_lost
        self.cancel_requested |= not lease_lost
        self.beats.cancel_all(LEASE_LOST if lease_lost else CANCELED)
        for task in self.running.values():
            task.cancel()
        self.wake()

    def cancel_activity(self, seq: int) -> bool:
        """Cancel activity ``seq`` (the seq of its ACTIVITY_SCHEDULED event) for the workflow's
        code, which no longer awaits it; True if an attempt of it was running.

        A running attempt is interrupted: an async activity gets ``CancelledError`` where it
        awaits; a sync one sees ``activity_info().is_cancelled()`` turn true and its next
        ``heartbeat()`` raise ``ActivityCancelledError`` (its thread runs on until the function
        returns). Running or not, the activity is not started again: once the interrupted
        attempt ends (an async one may clean up first), the workflow is handed a failure that
        is not retried (``ACTIVITY_FAILED`` with an ``ActivityCancelledError``), whatever the
        attempt returned."""
        self.withdrawn = {*self.withdrawn, seq}
        self.beats.cancel(seq, "canceled by its workflow")
        task = self.running.get(seq)
        if task is not None:
            task.cancel()
        self.wake()
        return task is not None

    def worker_stopping(self) -> None:
        """The worker stops: the activities still waiting for their queue to let them start
        are withdrawn (they run again wherever the workflow is claimed next), so the stop
        waits only for those that began, never for a queue's slot or rate window."""
        for seq in self.queued:
            task = self.running.get(seq)
            if task is not None:
                task.cancel()

    def outcome_arrived(self) -> None:
        """A routed activity of this workflow ended (in this process): read the outcomes of its
        activity tasks again at once."""
        self.outcomes_stale = True
        self.wake()

    def recheck_signals(self) -> None:
        """A signal may have been buffered for it: read its signals again at once."""
        self.inbox = None
        self.wake()

    def cancel_activities(self) -> None:
        """Interrupt whatever still runs: the workflow leaves this worker."""
        self.beats.cancel_all("the workflow left this worker")
        for task in self.running.values():
            task.cancel()
        self.beats.close()

    # -- rebuilding -----------------------------------------------------------------------
    async def execution(self) -> WorkflowExecution:
        """The workflow, live: from the cache when its history has not moved, else by replay."""
        claim, worker = self.claim, self.worker
        cached = worker.cache.take(claim.workflow_id, claim.last_seq, claim.run_id)
        if cached is not None:
            self._begin_trace(cached.trace)
            return cached
        if len(claim.history) == claim.last_seq:
            history: list[Event] | tuple[Event, ...] = claim.history
        else:
            history = await worker.store.load_history(claim.workflow_id)
        definition = worker.registry.workflow(claim.name, claim.workflow_id, claim.version)
        trace = self._begin_trace(history[0].payload.get(TRACE_KEY))
        if trace is None:
            return WorkflowExecution(
                definition,
                claim.workflow_id,
                history,
                now=self.worker.clock.now(),
                run_id=claim.run_id,
            )
        try:
            # The code's first run happens here: its logs name the run-through's span.
            with current_span(trace.run):
                return WorkflowExecution(
                    definition,
                    claim.workflow_id,
                    history,
                    now=self.worker.clock.now(),
                    run_id=claim.run_id,
                )
        except BaseException as exc:
            trace.end(exc)
            raise

    def _begin_trace(self, started: Any) -> RunTrace | None:
        """The span of this run-through (a child of the context its start recorded), when the
        database traces workflows."""
        tracer = self.worker.database.tracing.tracer()
        if tracer is None:
            return None
        claim = self.claim
        self.trace = RunTrace(
            tracer,
            workflow_id=claim.workflow_id,
            name=claim.name,
            run_id=claim.run_id,
            worker_id=self.worker.worker_id,
            started=started,
            began=self.began,
            last_seq=claim.last_seq,
        )
        return self.trace

    # -- driving --------------------------------------------------------------------------
    def drive(self, ex: WorkflowExecution) -> Coroutine[Any, Any, None]:
        """Run the workflow until it has nothing to do now, then park it (or record its end),
        within a span of its run-through when the database traces workflows."""
        if self.trace is None:  # the coroutine itself: no layer of its own for each workflow
            if ex.log_fields:
                ex.log_fields = {}
            return self._drive(ex)
        return self._drive_traced(ex, self.trace)

    async def _drive_traced(self, ex: WorkflowExecution, trace: RunTrace) -> None:
        trace.resume(ex.current_step, ex.new_events)
        ex.log_fields = trace.log_fields()
        try:
            await self._drive(ex)
        except BaseException as exc:
            trace.end(None if isinstance(exc, Abort) else exc)
            raise
        trace.end(parked=not ex.finished)

    async def _drive(self, ex: WorkflowExecution) -> None:
        """Each turn: deliver what happened (timers and signals, in the order they happened),
        start the activities that are due, and wait for one of them, a signal or a cancel."""
        worker = self.worker
        running = self.running
        last_write = time.monotonic()  # the claim
        while not ex.finished and not self.cancel_requested:
            if running:
                self._stop_withdrawn(ex)
            # The awaits are guarded: a workflow of activities only has nothing to read here, and
            # makes no coroutine for it on every turn.
            if (
                self._deliver_withdrawn(ex)
                or (
                    self.outcomes_stale
                    and worker.queues is not None
                    and await self._deliver_task_outcomes(ex)
                )
                or (ex.awaits_inputs() and await self._deliver_inputs(ex))
            ):
                continue
            due = self._due_activities(ex)
            if not due and not running:
                break
            # While writes fail, nothing runs before its scheduling is recorded.
            window = 0.0 if worker.writes.failing else worker.inline_window
            if due and last_write + window <= time.monotonic():
                # The inline window is used up: what the workflow decided so far, these
                # activities' scheduling included, becomes durable before they begin.
                last_write = await self._checkpoint(ex)
            if self.trace is not None:
                self.trace.observe(ex.new_events)  # the step span the activities run in
            if due:
                await self._start(due)
            left = last_write + window - time.monotonic()
            if due and left > 0:
                # Short activities run inline: their scheduling is written with their outcome.
                await asyncio.wait(
                    running.values(), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            if not _any_done(running):
                # Pause: what the workflow decided so far becomes durable before it waits any
                # longer; this write also learns of a cancel request or a lost lease.
                last_write = await self._checkpoint(ex)
                await self._wait_for_progress(ex)
            if self.lease_lost:
                raise Abort
            self._deliver_outcomes(ex)
        await self._commit(ex, release=True)

    def _due_activities(self, ex: WorkflowExecution) -> list[ActivityRun]:
        """The activities to start now: scheduled, not running, past their retry delay, of a
        queue this worker serves. One of a queue it does not serve is dispatched instead (see
        :meth:`_dispatch`), whatever its retry delay. None while the worker stops: the workflow
        parks and another worker runs them."""
        worker = self.worker
        if worker.stopping:
            return []
        now = worker.clock.now()
        running, withdrawn, served = self.running, self.withdrawn, worker.queues
        if served is None:  # every queue: nothing is routed, and this costs nothing more
            return [
                run
                for run in ex.activity_runs()
                if run.seq not in running and run.not_before <= now and run.seq not in withdrawn
            ]
        due = []
        for run in ex.activity_runs():
            if run.seq in running or run.seq in withdrawn:
                continue
            if (run.definition.queue or self.claim.queue) not in served:
                self._dispatch(run, now)
            elif run.not_before <= now:
                due.append(run)
        return due

    def _dispatch(self, run: ActivityRun, now: float) -> None:
        """Send this attempt of ``run`` to the workers of its queue with the next write (the
        park, at the latest). Every claim dispatches what it awaits once: the store ignores a
        task that is there already, so a crash between two writes loses no task."""
        if self.dispatched.get(run.seq, 0) >= run.attempt:
            return
        self.dispatched[run.seq] = run.attempt
        name, queue = run.definition.name, run.definition.queue or self.claim.queue
        dispatch = Dispatch(run.seq, run.attempt, name, queue, run.not_before or now)
        self.dispatches = _appended(self.dispatches, dispatch)

    async def _deliver_task_outcomes(self, ex: WorkflowExecution) -> bool:
        """Hand the workflow the outcomes of its routed activities that ended, as a local
        attempt's are handed (a failure carries its retry decision). The next write deletes
        their tasks while recording them: each outcome is recorded once. True if one was."""
        if not self.outcomes_stale or self.worker.queues is None:
            return False
        self.outcomes_stale = False
        served = self.worker.queues
        routed = {
            r.seq: r
            for r in ex.activity_runs()
            if (r.definition.queue or self.claim.queue) not in served
        }
        if not routed:
            return False
        delivered: set[int] = set()
        now = self.worker.clock.now()
        for outcome in await self.worker.store.read_task_outcomes(ex.workflow_id):
            self.settled_tasks = _appended(self.settled_tasks, (outcome.seq, outcome.attempt))
            run = routed.get(outcome.seq)
            if run is None or run.attempt != outcome.attempt or outcome.seq in self.withdrawn:
                continue  # recorded already, or no longer awaited: the task only goes
            self.worker.stats.activities += 1
            if outcome.ok:
                ex.activity_completed(outcome.seq, outcome.result, now, outcome.worker)
            else:
                assert outcome.error is not None
                ex.activity_failed(
                    outcome.seq, outcome.error, outcome.retry_at, now, outcome.worker
                )
            delivered.add(outcome.seq)
        for seq, run in routed.items():
            # What it awaits is known from the claim on, so a withdrawal or an end in this
            # claim stops the task, whatever claim dispatched it. (A retry of one just
            # delivered is dispatched as the next attempt, by _due_activities.)
            if seq not in delivered and seq not in self.withdrawn:
                self._dispatch(run, now)
        return bool(delivered)

    def _stop_withdrawn(self, ex: WorkflowExecution) -> None:
        """Stop the activities the workflow withdrew (it cancelled the task awaiting them):
        their outcome would not be delivered."""
        for seq in [seq for seq in self.running if not ex.has_activity(seq)]:
            self.beats.cancel(seq, "withdrawn by its workflow")
            self.running.pop(seq).cancel()

    async def _start(self, due: list[ActivityRun]) -> None:
        if not self.beats.loaded:
            await self.beats.load()  # what earlier runs recorded, for their next attempt
        loop = asyncio.get_running_loop()
        # Neither timed nor spanned: one coroutine less per attempt.
        plain = self.trace is None and self.worker.database.metrics is None
        for run in due:
            control = self.beats.control(run)
            attempt = self._outcome(run, control) if plain else self._attempt(run, control)
            self.running[run.seq] = loop.create_task(attempt)

    async def _attempt(self, run: ActivityRun, control: AttemptControl) -> AttemptOutcome:
        """One attempt, in its own task: timed for the metrics and spanned for the trace when
        those are on (its logs carry its ids through ``control``: ``loom.logs``)."""
        metrics = self.worker.database.metrics
        trace = self.trace
        if trace is None and metrics is None:
            return await self._outcome(run, control)
        name = run.definition.name
        began = time.monotonic()
        if trace is None:
            outcome = await self._outcome(run, control)
        else:
            span = trace.attempt(name, run.attempt, run.step)
            try:
                with current_span(span):
                    outcome = await self._outcome(run, control)
            except BaseException:
                trace.attempt_ended(span, None, None, interrupted=True)
                raise
            trace.attempt_ended(span, outcome.error, outcome.retry_at)
        if metrics is not None:
            metrics.activity_attempt(name, time.monotonic() - began, failed=not outcome.ok)
        return outcome

    async def _outcome(self, run: ActivityRun, control: AttemptControl) -> AttemptOutcome:
        worker = self.worker
        runnable = worker.registry.runnable(run.definition)
        if runnable is not run.definition:  # replaced (loom.testing's mock_activity)
            run = dataclasses.replace(run, definition=runnable)
        queue = run.definition.queue or self.claim.queue
        slot = queue != self.claim.queue  # on its workflow's queue, the workflow's slot covers it
        began = False
        try:
            if slot and not await self._slot(queue, run.seq):
                raise asyncio.CancelledError  # the worker stops first: it never began
            began = True
            outcome = await run_attempt(run, worker.clock.now, worker.activity_pool, control)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if not began or task is None or task.cancelling():
                self.beats.drop(run.seq)
                if slot:
                    self._give_back(run.seq)
                # Interrupted (a cancel, the workflow left, the worker stops before it began):
                # it runs again later.
                raise
            # Raised by the activity itself, nobody cancelled it: a failure of the attempt,
            # else it would be started again at once, forever.
            outcome = base_exception_outcome(exc)
        except BaseException as exc:  # sys.exit() in an activity fails the attempt
            outcome = base_exception_outcome(exc)
        if slot:
            self._give_back(run.seq)
        if outcome.ok:
            self.beats.succeeded(run.seq)
        else:
            # Its last heartbeat is written before the workflow hears of the failure.
            await self.beats.finish(run.seq, failed=True)
        return outcome

    async def _slot(self, queue: str, seq: int) -> bool:
        """Wait until ``queue``'s limits let activity ``seq`` start (it runs on another queue
        than its workflow's): a slot counted against the queue's concurrency, and a start
        against its rate. Asked again after a growing pause, up to the worker's poll
        interval, while the workflow's lease is renewed as usual. False when the worker stops
        first (:meth:`worker_stopping` cuts the wait short)."""
        worker = self.worker
        pause = 0.01
        self.queued = {*self.queued, seq}
        try:
            while not worker.stopping:
                if await worker.store.acquire_slot(
                    queue,
                    self.claim.workflow_id,
                    seq,
                    worker.worker_id,
                    worker.clock.now() + worker.lease_seconds,
                    worker.clock.now(),
                ):
                    return True
                await asyncio.sleep(pause)
                pause = min(pause * 2, worker.poll_interval)
            return False
        finally:
            self.queued = self.queued - {seq}

    def _give_back(self, seq: int) -> None:
        """Release the slot of activity ``seq`` without holding up its outcome; should that
        fail (an outage), the slot frees itself when the lease it follows runs out."""
        store, wid = self.worker.store, self.claim.workflow_id

        async def release() -> None:
            with contextlib.suppress(Exception):
                await store.release_slot(wid, seq)

        task = asyncio.get_running_loop().create_task(release())
        if self._releases is None:
            self._releases = set()
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _wait_for_progress(self, ex: WorkflowExecution) -> None:
        """Wait until an activity ends, a timer is due, or (when the workflow waits for one) a
        signal or a routed activity's outcome may have arrived: at once when it came from this
        process, else within ``signal_check_interval`` (or at PostgreSQL's announcement of a
        change), so code racing a routed activity against one of its own sees which ended
        first."""
        clock = self.worker.clock
        wake = ex.next_wakeup()
        timeout = None if wake is None else clock.seconds_until(wake)
        waits_for_signal = ex.awaits_inputs() and bool(ex.signal_waits() or ex.child_waits())
        waits_for_tasks = bool(self.dispatched) and any(
            seq not in self.withdrawn and ex.has_activity(seq) for seq in self.dispatched
        )
        if waits_for_signal or waits_for_tasks:
            check = self.worker.signal_check_interval
            timeout = check if timeout is None else min(timeout, check)
        if self.nudge is None:
            self.nudge = asyncio.Event()
        else:
            self.nudge.clear()
        self.awaits_signal = waits_for_signal
        self.awaits_tasks = waits_for_tasks
        nudged = asyncio.get_running_loop().create_task(self.nudge.wait())
        self.settled = True
        clock.settling()
        try:
            await asyncio.wait(
                [*self.running.values(), nudged],
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            self.settled = False
            nudged.cancel()
            self.awaits_signal = self.awaits_tasks = False
        if waits_for_signal:
            self.inbox = None  # look again: a signal may have come from another process
        if waits_for_tasks:
            self.outcomes_stale = True  # and so may a routed outcome

    def _deliver_outcomes(self, ex: WorkflowExecution) -> None:
        """Hand the workflow the outcome of every activity that finished (interrupted ones have
        none: they run again later)."""
        stats, worker_id = self.worker.stats, self.worker.worker_id
        now = self.worker.clock.now
        for seq, task in list(self.running.items()):
            if not task.done():
                continue
            del self.running[seq]
            if seq in self.withdrawn:
                continue  # handed over as canceled by _deliver_withdrawn, whatever it returned
            if task.cancelled() or not ex.has_activity(seq):
                continue
            outcome = task.result()
            stats.activities += 1
            if outcome.ok:
                ex.activity_completed(seq, outcome.result, now(), worker_id)
            else:
                assert outcome.error is not None
                ex.activity_failed(seq, outcome.error, outcome.retry_at, now(), worker_id)

    def _deliver_withdrawn(self, ex: WorkflowExecution) -> bool:
        """Hand the workflow the cancel of each activity :meth:`cancel_activity` withdrew and
        that no longer runs: a failure, not retried. True if one was handed over."""
        if not self.withdrawn:
            return False
        gone = [seq for seq in self.withdrawn if seq not in self.running]
        if not gone:
            return False
        pending = {run.seq: run for run in ex.activity_runs()}
        self.withdrawn = self.withdrawn - set(gone)
        for seq in gone:
            run = pending.get(seq)
            if run is not None:
                error = {
                    "type": "ActivityCancelledError",
                    "message": f"activity {run.definition.name!r} was canceled by its workflow",
                    "traceback": None,
                    "cause": None,
                }
                ex.activity_failed(seq, error, None, self.worker.clock.now())
        return any(seq in pending for seq in gone)

    # -- inputs: timers and signals ---------------------------------------------------------
    async def _deliver_inputs(self, ex: WorkflowExecution) -> bool:
        """Deliver the earliest thing that happened and that the workflow waits for: a due
        timer (at its time) or a buffered signal (at the time it was sent). A signal sent
        before a wait's deadline is delivered even when the worker only runs after it; one sent
        after the deadline stays buffered for a later wait. True if something was delivered."""
        now = self.worker.clock.now()
        waits = ex.signal_waits()
        children = ex.child_waits()
        found: list[tuple[float, int, int, Signal | None]] = []  # (when, timer last, seq, signal)
        if waits or children:
            wait_seqs = frozenset(seq for seq, _ in waits) | frozenset(children.values())
            if self.inbox is None or wait_seqs != self.waits_seen:
                self.waits_seen = wait_seqs
                await self._read_inbox(ex.workflow_id)
            self._match_signals(waits, found)
            self._match_children(children, found)
        for seq, at in ex.deadlines():
            if at <= now:
                found.append((at, 1, seq, None))
        if not found:
            return False
        _, _, seq, signal = min(found, key=lambda f: (f[0], f[1], f[2]))
        if self.trace is not None and (signal is None or signal.name != CHILD_OUTCOME):
            waiting = ex.waiting(seq)
            if waiting is not None:
                self.trace.waited(*waiting, timed_out=signal is None)
        if signal is None:
            ex.fire_timer(seq, now)
        else:
            assert self.inbox is not None
            self.inbox.remove(signal)
            self.consumed = _appended(self.consumed, signal.id)
            if signal.name == CHILD_OUTCOME:
                ex.child_finished(seq, signal.payload, now)
            else:
                ex.receive_signal(seq, signal.name, signal.payload, now)
        return True

    async def _read_inbox(self, workflow_id: str) -> None:
        """Read its buffered signals, less those delivered but not yet written as consumed."""
        consumed = self.consumed
        signals = await self.worker.store.read_signals(workflow_id)
        self.inbox = [s for s in signals if s.id not in consumed]

    def _match_signals(
        self,
        waits: list[tuple[int, str]],
        found: list[tuple[float, int, int, Signal | None]],
    ) -> None:
        """Add to ``found`` the signal each wait would take: the oldest wait takes the oldest
        matching signal."""
        assert self.inbox is not None
        taken: set[int] = set()
        for seq, name in waits:
            match = next((s for s in self.inbox if s.name == name and s.id not in taken), None)
            if match is not None:
                taken.add(match.id)
                found.append((match.sent_at, 0, seq, match))

    def _match_children(
        self, children: dict[str, int], found: list[tuple[float, int, int, Signal | None]]
    ) -> None:
        """Add to ``found`` the end of each child the workflow awaits, as its end left it.

        The end of a child it no longer awaits (withdrawn, left unawaited, or started by steps
        a reset discarded) is consumed with the next write: left buffered, it would make the
        parked workflow ready again and again while it awaits another child."""
        assert self.inbox is not None
        if not children:
            return
        for s in list(self.inbox):
            if s.name == CHILD_OUTCOME and isinstance(s.payload, dict):
                seq = children.get(s.payload.get("workflow_id"))  # type: ignore[arg-type]
                if seq is not None:
                    found.append((s.sent_at, 0, seq, s))
                else:
                    self.inbox.remove(s)
                    self.consumed = _appended(self.consumed, s.id)

    # -- writes ---------------------------------------------------------------------------
    async def _checkpoint(self, ex: WorkflowExecution) -> float:
        """Write what the workflow decided so far (it keeps its lease); when, monotonic."""
        await self._commit(ex, release=False)
        self.consumed = ()
        return time.monotonic()

    async def _commit(self, ex: WorkflowExecution, *, release: bool) -> None:
        """Write the workflow's new events and state; ``release``: park it (or record its end)
        and give back its lease. Raises :class:`Abort` when the write was fenced or canceled."""
        events = ex.take_new_events()
        if (
            not events
            and not self.consumed
            and not release
            and not self.dispatches
            and not self.settled_tasks
        ):
            return
        if self.trace is not None:
            self.trace.observe(events)  # before the write: a child's start records its context
        worker = self.worker
        now = worker.clock.now()
        commit = self._commit_of(ex, events, release, now)
        writes = worker.writes
        try:
            outcome = await worker.store.commit(commit, now)
        except OUTAGE_ERRORS as exc:
            writes.failed(exc)
            raise
        if writes.failing:
            writes.recovered()
        if outcome is CommitOutcome.FENCED:
            worker.stats.lease_lost += 1
            log.warning("workflow %s: lease lost; its writes were rejected", ex.workflow_id)
            self.beats.cancel_all(LEASE_LOST)
            raise Abort
        if outcome is CommitOutcome.CANCELED:
            worker.stats.canceled += 1
            self.beats.cancel_all(CANCELED)
            if worker.database.metrics is not None:
                worker.database.metrics.canceled.labels(ex.definition.name).inc()
            raise Abort
        if outcome is CommitOutcome.RESET:  # ready again at once, from the step it names
            worker.database.work_available.notify()
            raise Abort
        if commit.dispatches or commit.withdrawn_tasks:
            self._tasks_sent()
        self.dispatches, self.settled_tasks, self.withdrawn_tasks = (), (), ()
        if events:
            self._tell_relatives(ex, events)
            if worker.database.metrics is not None:
                for e in events:
                    if e.type is EventType.CHILD_WORKFLOW_STARTED:
                        worker.database.metrics.started.labels(str(e.payload.get("name"))).inc()
        if release:
            self._released(ex, commit)
        else:
            worker.database.workflow_changed.notify()  # live views see a step's progress

    def _commit_of(
        self, ex: WorkflowExecution, events: list[Event], release: bool, now: float
    ) -> Commit:
        """The write of what the workflow decided, its state and the signals it consumed; the
        lease is extended, or given back with the time to wake it (``release``)."""
        status = ex.status
        if self.dispatched:
            for seq in [seq for seq in self.dispatched if not ex.has_activity(seq)]:
                del self.dispatched[seq]  # withdrawn (or ended by a cancel): its task stops
                self.withdrawn_tasks = _appended(self.withdrawn_tasks, seq)
        return Commit(
            workflow_id=ex.workflow_id,
            lease_epoch=self.claim.lease_epoch,
            events=events,
            status=status,
            state=ex.state,
            current_step=ex.current_step,
            lease_until=now + self.worker.lease_seconds,
            release=release,
            ready_at=self._park_time(ex, now) if release and not ex.finished else None,
            wait_signals=self._wait_signals(ex),
            consumed_signals=tuple(self.consumed),
            result=ex.state if status is WorkflowStatus.COMPLETED else None,
            error=ex.error if status is WorkflowStatus.FAILED else None,
            continue_as_new=ex.continued_as_new,
            children=ex.started_children,
            # A routed attempt's heartbeats are written by the worker that ran it; and a worker
            # of chosen queues cannot know whether one that routes differently dispatched
            # tasks for this workflow in an earlier claim: its end drops them all.
            heartbeats=self.beats.stored or bool(self.dispatched) or self._may_route,
            dispatches=tuple(self.dispatches),
            settled_tasks=tuple(self.settled_tasks),
            withdrawn_tasks=tuple(self.withdrawn_tasks),
            routed=bool(self.dispatched) or self._may_route,
        )

    @property
    def _may_route(self) -> bool:
        """Its workflow may have activity tasks from an earlier claim: workers of chosen queues
        route activities that name a queue (a worker of every queue never does, nor does a
        registry whose activities name none: they pay nothing for routing)."""
        worker = self.worker
        return worker.queues is not None and any(
            a.queue is not None for a in worker.registry.activities()
        )

    def _tasks_sent(self) -> None:
        """Activity tasks were dispatched (or asked to stop): this process's workers serving
        their queues look for them at once (other processes hear PostgreSQL's announcement,
        or look within their poll interval)."""
        for worker in list(self.worker.database.workers):
            worker.tasks.wake()

    @staticmethod
    def _wait_signals(ex: WorkflowExecution) -> tuple[str, ...]:
        """The buffered messages that make the parked workflow ready: the signals it waits for
        and, while it awaits children, their ends."""
        if not ex.awaits_inputs():
            return ()
        names = {name for _, name in ex.signal_waits()}
        if ex.child_waits():
            names.add(CHILD_OUTCOME)
        return tuple(sorted(names))

    def _tell_relatives(self, ex: WorkflowExecution, events: list[Event]) -> None:
        """A write that started or withdrew a child, or ended a child, made work for others:
        wake this process's idle workers, and the parent's driver if it runs here."""
        database = self.worker.database
        for e in events:  # a plain loop: this runs on every write
            if e.type in CHILD_DECISIONS:
                database.work_available.notify()
                break
        if ex.finished and ex.parent_id is not None:
            database.work_available.notify()
            for worker in list(database.workers):
                worker.signal_arrived(ex.parent_id)

    def _released(self, ex: WorkflowExecution, commit: Commit) -> None:
        """The workflow left this worker by a write: it ended (its execution is closed) or it
        is parked (its execution is kept, so claiming it again skips replay)."""
        worker = self.worker
        metrics = worker.database.metrics
        if ex.continued_as_new is not None:  # its next run is ready at once
            worker.stats.parked += 1
            worker.cache.evict(ex.workflow_id, ex)
            worker.database.work_available.notify()
            if metrics is not None:
                metrics.continued.labels(ex.definition.name).inc()
        elif ex.finished:
            if ex.status is WorkflowStatus.COMPLETED:
                worker.stats.completed += 1
                if metrics is not None:
                    metrics.completed.labels(ex.definition.name).inc()
            else:
                worker.stats.failed += 1
                if metrics is not None:
                    metrics.failed.labels(ex.definition.name).inc()
            worker.cache.evict(ex.workflow_id, ex)
        else:
            worker.stats.parked += 1
            worker.cache.remember(ex)
            if commit.ready_at is not None:
                worker.database.work_available.notify()

    def _park_time(self, ex: WorkflowExecution, now: float) -> float | None:
        """When to wake the parked workflow: its next timer, timeout or retry. A routed
        activity is none of these: its task wakes the workflow when it ends."""
        dispatched = self.dispatched
        if not dispatched:
            if self.worker.stopping and ex.activity_runs():
                return now  # hand the unfinished activity to another worker at once
            return ex.next_wakeup()
        local = [run for run in ex.activity_runs() if run.seq not in dispatched]
        if self.worker.stopping and local:
            return now
        times = [at for _, at in ex.deadlines()]
        times += [run.not_before for run in local if run.not_before > 0]
        return min(times, default=None)
