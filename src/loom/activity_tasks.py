"""A worker's activity tasks: the activities of its queues that other workers dispatched.

A workflow's driver runs an activity itself when its worker serves the activity's queue; when
it does not, it dispatches the attempt (``store.task_rules``): a row written in the same
transaction as its scheduling. A :class:`TaskRunner`, one per worker, claims the tasks of the
queues its worker serves and the activities it has registered (within each queue's limits),
runs each attempt as a driver would (:func:`~loom.activities.run_attempt`, the worker's thread
pool, an :class:`~loom.activity_context.AttemptControl`, so ``activity_info()``, ``heartbeat()``
and ``is_cancelled()`` work, its heartbeats recorded and handed to the next attempt), renews
the leases of those it runs, and records each outcome under the task's lease; the workflow is
then made ready, and its next write records the outcome and deletes the task.

It looks for tasks when told (a dispatch in this process; PostgreSQL's work announcement, once
it has found a task in this database) and otherwise once per poll interval. A worker that dies
mid-attempt stops renewing: the task is claimed again when its lease runs out (at-least-once,
like a local attempt), and the dead holder's late writes are fenced out by the task's lease
epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loom import telemetry
from loom.activities import AttemptOutcome, run_attempt
from loom.activity_context import AttemptControl
from loom.core.calls import ActivityRun
from loom.core.history import EventType
from loom.driver import CANCELED, LEASE_LOST, base_exception_outcome
from loom.heartbeats import HeartbeatKeeper
from loom.outage import OUTAGE_ERRORS
from loom.store.base import ActivityTask, TaskOutcome
from loom.store.task_rules import key_of

if TYPE_CHECKING:
    from loom.worker import Worker

log = logging.getLogger("loom.worker")

TaskKey = tuple[str, int, int]


@dataclass(slots=True)
class _Held:
    """A task this worker runs: its attempt's task, and why it was stopped, if it was."""

    task: ActivityTask
    attempt: asyncio.Task[AttemptOutcome] | None = None
    beats: HeartbeatKeeper | None = None
    stopped: str | None = None
    """LEASE_LOST (nothing more is written) or CANCELED (the task is deleted)."""
    lost: bool = False

    def stop(self, reason: str, *, lost: bool) -> None:
        if self.stopped is not None:
            return
        self.stopped, self.lost = reason, lost
        if self.beats is not None:
            self.beats.cancel_all(reason)
        if self.attempt is not None:
            self.attempt.cancel()


class TaskRunner:
    """Claims, runs, renews and completes one worker's activity tasks (see the module)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.running: dict[TaskKey, _Held] = {}
        self._wanted = True
        """Told of a dispatch (or a slot freed) since the last look: look at once."""
        self._looked = float("-inf")
        """When (monotonic) it last looked for tasks."""
        self._found_any = False
        """It has claimed a task before: this database routes activities to its queues."""
        self._jobs: set[asyncio.Task[None]] = set()
        self._keeper: asyncio.Task[None] | None = None

    def wake(self) -> None:
        """Tasks may have been dispatched: look at the next poll."""
        self._wanted = True
        self.worker.database.work_available.notify()

    def heard(self) -> None:
        """Another process announced work (PostgreSQL): it may be a dispatch. Looked for at
        the next poll once this worker has found a task before; until then, a database that
        routes nothing costs no more than a look per poll interval."""
        if self._found_any:
            self._wanted = True

    def _activities(self) -> list[str]:
        """The activities whose tasks this worker takes: those it has that name a queue it
        serves (one that names none runs where its workflow runs: it is never routed)."""
        served = self.worker.queues
        return [
            a.name
            for a in self.worker.registry.activities()
            if a.queue is not None and (served is None or a.queue in served)
        ]

    async def poll(self) -> None:
        """Claim what there is room for, when told of tasks or once per poll interval."""
        worker = self.worker
        free = worker.concurrency - len(self.running)
        if free <= 0 or worker.stopping:
            return
        if not self._wanted and time.monotonic() - self._looked < worker.poll_interval:
            return
        names = self._activities()
        if not names:
            return
        self._wanted, self._looked = False, time.monotonic()
        tasks = await worker.store.claim_tasks(
            worker.worker_id, names, free, worker.lease_seconds, worker.clock.now(), worker.queues
        )
        loop = asyncio.get_running_loop()
        self._found_any |= bool(tasks)
        for task in tasks:
            held = _Held(task)
            self.running[key_of(task)] = held
            job = loop.create_task(self._run(held))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)
        if tasks and self._keeper is None:
            self._keeper = loop.create_task(self._keep())
        if len(tasks) == free:
            self._wanted = True  # there may be more: look again when room comes

    async def drain(self) -> None:
        """Let the attempts running finish and record their outcomes (a stopping worker)."""
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)

    # -- one task -------------------------------------------------------------------------
    async def _run(self, held: _Held) -> None:
        task, worker = held.task, self.worker
        try:
            outcome = await self._attempt(held)
            if held.lost:
                return  # another worker has it now: nothing of this attempt is written
            await self._complete(held, outcome)
        except Exception as exc:  # a task must never take the worker down
            log.error(
                "activity task %s/%d (attempt %d): %s: %s; it runs again when its lease ends",
                task.workflow_id,
                task.seq,
                task.attempt,
                type(exc).__name__,
                exc,
            )
        finally:
            if held.beats is not None:
                held.beats.close()
            self.running.pop(key_of(task), None)
            self._wanted = True  # a slot came back
            worker.database.work_available.notify()

    async def _attempt(self, held: _Held) -> TaskOutcome | None:
        """Run the attempt; its outcome, or None when there is nothing to record (stopped, or
        the task no longer matches its workflow's history)."""
        task, worker = held.task, self.worker
        definition = next(
            (a for a in worker.registry.activities() if a.name == task.activity), None
        )
        found = await worker.store.load_history(task.workflow_id, task.seq - 1, 1)
        if (
            definition is None
            or not found
            or found[0].type is not EventType.ACTIVITY_SCHEDULED
            or found[0].payload.get("name") != task.activity
        ):
            return None
        scheduled = found[0].payload
        run = ActivityRun(
            task.seq,
            worker.registry.runnable(definition),
            list(scheduled.get("args") or []),
            dict(scheduled.get("kwargs") or {}),
            scheduled.get("step"),
            task.attempt,
        )
        beats = HeartbeatKeeper(
            worker.store,
            task.workflow_id,
            task.lease_epoch,
            first_claim=False,
            max_bytes=worker.database.max_payload_bytes,
            interrupt=functools.partial(self._interrupted, held),
            now=worker.clock.now,
            run_id=task.run_id,
            record=functools.partial(worker.store.record_task_heartbeat, task),
        )
        held.beats = beats
        await beats.load()  # the details of the attempt before, wherever it ran
        control = beats.control(run)
        span = await self._span(task, scheduled.get("step"))
        await self._still_wanted(held)
        if held.stopped is not None:  # asked while it was being set up: it never began
            if span is not None:
                telemetry.attempt_ended(span, None, None, interrupted=True)
            return None
        began = time.monotonic()
        try:
            with contextlib.nullcontext() if span is None else telemetry.current_span(span):
                # Created inside: the attempt's task copies the context, its span current.
                held.attempt = asyncio.get_running_loop().create_task(self._guarded(run, control))
            outcome = await held.attempt
        except asyncio.CancelledError:
            if span is not None:
                telemetry.attempt_ended(span, None, None, interrupted=True)
            if held.stopped is None:
                raise  # this job itself was cancelled
            beats.drop(task.seq)
            return None
        if span is not None:
            telemetry.attempt_ended(span, outcome.error, outcome.retry_at)
        metrics = worker.database.metrics
        if metrics is not None:
            metrics.activity_attempt(task.activity, time.monotonic() - began, failed=not outcome.ok)
        if outcome.ok:
            beats.succeeded(task.seq)
        else:
            await beats.finish(task.seq, failed=True)  # the next attempt starts from it
        worker.stats.activities += 1
        return TaskOutcome(
            task.seq,
            task.attempt,
            outcome.ok,
            outcome.result,
            outcome.error,
            outcome.retry_at,
            worker.worker_id,
        )

    async def _still_wanted(self, held: _Held) -> None:
        """Renew the task's lease just before its attempt begins, and stop it there if its lease
        moved on or its stop was asked since the claim. This write takes the task's row as the
        cancel, reset or withdrawal that drops it does, so one that committed first is seen:
        no attempt begins once its workflow's cancel is final (a claim alone would not do:
        setting the attempt up takes a while)."""
        worker, key = self.worker, key_of(held.task)
        lost, stop = await worker.store.renew_tasks(
            worker.worker_id, [held.task], worker.clock.now() + worker.lease_seconds
        )
        if key in lost:
            held.stop(LEASE_LOST, lost=True)
        elif key in stop:
            held.stop(CANCELED, lost=False)

    async def _guarded(self, run: ActivityRun, control: AttemptControl) -> AttemptOutcome:
        """The attempt, as a driver runs a local one: a BaseException it raises (``sys.exit()``,
        a ``CancelledError`` of its own while nobody cancelled it) is the attempt's failure, not
        retried. Caught inside the task that runs it: asyncio would carry a ``SystemExit``
        ending a task out of the event loop, and an attempt that "cancels" itself would run
        again at every lease's end, forever."""
        worker = self.worker
        try:
            return await run_attempt(run, worker.clock.now, worker.activity_pool, control)
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # stopped (the task lost or canceled), or the worker stops
            return base_exception_outcome(exc)
        except BaseException as exc:
            return base_exception_outcome(exc)

    async def _span(self, task: ActivityTask, step: str | None) -> Any:
        """The attempt's span when this database traces workflows (None otherwise): parented
        to the context its workflow's start recorded, read from the history's first event."""
        worker = self.worker
        tracer = worker.database.tracing.tracer()
        if tracer is None:
            return None
        first = await worker.store.load_history(task.workflow_id, 0, 1)
        started = first[0].payload.get(telemetry.TRACE_KEY) if first else None
        return telemetry.routed_attempt(
            tracer,
            started,
            workflow_id=task.workflow_id,
            run_id=task.run_id,
            activity=task.activity,
            attempt=task.attempt,
            step=step,
            queue=task.queue,
            worker_id=worker.worker_id,
        )

    def _interrupted(self, held: _Held, workflow_id: str, *, lease_lost: bool) -> None:
        """A heartbeat's write found the task lost, or its stop asked."""
        held.stop(LEASE_LOST if lease_lost else CANCELED, lost=lease_lost)

    async def _complete(self, held: _Held, outcome: TaskOutcome | None) -> None:
        """Record the outcome (None: the task goes) under the task's lease; through an outage,
        again after a growing pause until written or the lease is lost."""
        task, worker = held.task, self.worker
        pause = 0.05
        while True:
            try:
                written = await worker.store.complete_task(
                    task, worker.worker_id, outcome, worker.clock.now()
                )
                break
            except OUTAGE_ERRORS:
                if held.lost:
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, worker.poll_interval)
        if not written:
            log.warning(
                "activity task %s/%d (attempt %d): its lease moved on; its outcome is not recorded",
                task.workflow_id,
                task.seq,
                task.attempt,
            )
            return
        if outcome is not None:
            database = worker.database
            for other in list(database.workers):
                other.outcome_arrived(task.workflow_id)
            database.work_available.notify()
            database.workflow_changed.notify()

    # -- leases -----------------------------------------------------------------------------
    async def _keep(self) -> None:
        """Renew the leases of the tasks running, a third of a lease apart; a task lost or
        asked to stop is stopped. Ends when none runs."""
        worker = self.worker
        try:
            while self.running:
                await asyncio.sleep(worker.lease_seconds / 3)
                held = list(self.running.values())
                if not held:
                    break
                with contextlib.suppress(*OUTAGE_ERRORS):
                    lost, stop = await worker.store.renew_tasks(
                        worker.worker_id,
                        [h.task for h in held],
                        worker.clock.now() + worker.lease_seconds,
                    )
                    for h in held:
                        key = key_of(h.task)
                        if key in lost:
                            h.stop(LEASE_LOST, lost=True)
                        elif key in stop:
                            h.stop(CANCELED, lost=False)
        finally:
            self._keeper = None


__all__ = ["TaskRunner"]
