"""The worker: claim ready workflows under a lease, drive them, commit what they decide.

Where things are, for a newcomer:

- this module, :class:`Worker`: its lifecycle (start, stop, drain), the claim loop and the idle
  wait, and what happens when driving a workflow fails (back off, give up after
  ``max_handling_failures``);
- :mod:`loom.driver`, :class:`~loom.driver.WorkflowDriver`: drives one claimed workflow until it
  parks or ends (deliver timers and signals, run activities inline or after a checkpoint, wait,
  commit);
- :mod:`loom.lease`, :class:`~loom.lease.LeaseKeeper`: renews the leases of the workflows held;
- :mod:`loom.cache`, :class:`~loom.cache.ExecutionCache`: parked executions kept in memory, so a
  workflow claimed again carries on without replay;
- :mod:`loom.scheduler`, :class:`~loom.scheduler.Scheduler`: fires the due schedules of the
  workflows the worker has registered, beside the claim loop.

A lease is renewed while the worker lives; a worker that dies simply stops renewing and another
claims the workflow once the lease runs out. Every write carries the lease epoch, so a worker that
lost its lease can never record anything (fencing).

A worker outlives database outages: failed polls are retried with exponential backoff and logged
once per outage; a workflow whose write failed is given back (or its lease simply runs out) and
is claimed again later, from what was durably recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from loom.activities import ActivityPool
from loom.activity_tasks import TaskRunner
from loom.cache import ExecutionCache
from loom.clock import Clock
from loom.core.history import Event, EventType
from loom.core.replay import WorkflowExecution
from loom.definitions import Registry
from loom.driver import Abort, WorkflowDriver, WriteHealth
from loom.errors import DatabaseCorruptError, LoomError, PayloadDecodeError
from loom.lease import LeaseKeeper
from loom.outage import OUTAGE_ERRORS, Backoff, OutageLog
from loom.queues import check_queue
from loom.retention import Retention, period_seconds
from loom.scheduler import Scheduler
from loom.status import WorkflowStatus
from loom.store.base import Claim, Commit, CommitOutcome
from loom.store.queue_rules import kind_key
from loom.tasks import wait_ended

if TYPE_CHECKING:
    from loom.client import Database

log = logging.getLogger("loom.worker")


@dataclass
class WorkerStats:
    """Counters a status line or dashboard can show."""

    claimed: int = 0
    completed: int = 0
    failed: int = 0
    canceled: int = 0
    parked: int = 0
    activities: int = 0
    lease_lost: int = 0
    handling_errors: int = 0
    activity_threads_stuck: int = 0
    """Activity threads held right now by timed-out sync activities that have not returned."""
    activity_pool_exhausted: int = 0
    """Times every activity thread was held by a timed-out sync activity (no sync activity
    could start until one returned)."""
    started_at: float = field(default_factory=time.time)


def _text(value: object) -> str:
    """``str(value)`` that never raises and never carries NUL (which PostgreSQL refuses)."""
    try:
        text = str(value)
    except BaseException:  # describing must never fail
        try:
            text = f"<unprintable {type(value).__name__}>"
        except BaseException:
            text = "<unprintable>"
    return text.replace("\x00", "\\x00")


class Worker:
    """Runs workflows from one database.

    ``concurrency`` is how many workflows are driven at once; ``poll_interval`` bounds how long
    an idle worker waits before looking for work started by another process (work started in
    this process, and due timers, wake it at once). ``lease_seconds`` is how long a workflow
    stays with a worker that stopped renewing: a dead worker's workflows are taken over after it.
    ``inline_window`` is how long a workflow's activities may run before their scheduling is
    written (0: each is written before it starts); quicker ones cost no write of their own.
    ``signal_check_interval`` is how often a workflow that waits for a signal while its
    activities run looks for signals sent from other processes (signals sent through this
    process's ``Database`` reach it at once).
    ``activity_threads`` is how many sync activities run at once, on the worker's own threads
    (default ``max(8, 4 * concurrency)``); a timed-out sync activity holds its thread until the
    function returns, since a thread cannot be stopped.
    ``schedules`` runs the scheduler (see :mod:`loom.scheduler`): the worker writes the
    schedules its registry declares and fires the due ones of the workflows it has; it looks
    for schedules changed by other processes every ``schedule_check_interval`` seconds.
    ``queues`` names the task queues this worker serves (None, the default: every queue); it
    takes work from them within each queue's limits, which live in the database. The limits
    declared in code (``loom.queue``) are written there when the worker starts. An activity of
    a queue it does not serve is sent to the workers serving that queue (an activity task),
    and it runs those sent to its own queues, up to ``concurrency`` at once (see
    :mod:`loom.activity_tasks`).
    ``retention`` (seconds or a timedelta; default None: keep everything) has the running worker
    delete, every minute and a few hundred per transaction, the finished workflows that ended
    longer ago than that (see :mod:`loom.retention`).
    ``clock`` is where it reads the time of day (default: its database's).
    """

    max_handling_failures = 5
    """Consecutive errors in this worker's own handling of one workflow (describing an error,
    encoding a value, a write the database refuses for that workflow) before the workflow is
    marked FAILED; each one backs the workflow off first. ``loom retry`` resumes it. A payload
    this worker cannot decode (``PayloadDecodeError``: no codec, a key it does not hold, a wrong
    key, altered data) never counts: the fault is this worker's configuration or the stored
    bytes, not the workflow, so it is only backed off, with nothing written, and left for a
    worker that holds the key."""

    handling_backoff = 0.5
    """The first back-off after such an error, in seconds; it doubles with each one after."""

    def __init__(
        self,
        database: Database,
        *,
        concurrency: int = 4,
        poll_interval: float = 0.5,
        lease_seconds: float = 10.0,
        registry: Registry | None = None,
        cache_size: int = 1000,
        worker_id: str | None = None,
        inline_window: float = 0.05,
        signal_check_interval: float = 0.2,
        activity_threads: int | None = None,
        schedules: bool = True,
        schedule_check_interval: float = 1.0,
        queues: Sequence[str] | None = None,
        retention: float | timedelta | None = None,
        clock: Clock | None = None,
    ) -> None:
        if concurrency < 1:
            raise LoomError("concurrency must be >= 1")
        if poll_interval <= 0 or lease_seconds <= 0 or signal_check_interval <= 0:
            raise LoomError("poll_interval, lease_seconds and signal_check_interval must be > 0")
        if inline_window < 0:
            raise LoomError("inline_window must be >= 0")
        if not schedule_check_interval > 0:
            raise LoomError("schedule_check_interval must be > 0")
        if activity_threads is not None and activity_threads < 1:
            raise LoomError("activity_threads must be >= 1")
        self.queues: list[str] | None = (
            None if queues is None else sorted({check_queue(q) for q in queues})
        )
        if self.queues == []:
            raise LoomError("queues must name at least one queue (None: every queue)")
        self._declared = False
        self._starved = 0.0
        """How long the last idle wait was while due work could not be claimed (a queue at its
        limit): it grows, so a worker held back by a limit polls gently."""
        self.database = database
        self.clock: Clock = clock or database.clock
        self.store = database.store
        self.registry = registry or database.registry
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.inline_window = inline_window
        self.signal_check_interval = signal_check_interval
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.stats = WorkerStats()
        self.activity_pool = ActivityPool(
            activity_threads or max(8, 4 * concurrency), stats=self.stats, owner=self.worker_id
        )
        database.register_worker(self)
        self._cache: collections.OrderedDict[str, WorkflowExecution] = collections.OrderedDict()
        self.cache = ExecutionCache(cache_size, self._cache)
        """Parked executions, so a workflow claimed again carries on without replay (``_cache``
        holds them, by workflow id, least recently parked first)."""
        self.stopping = False
        """:meth:`stop` was called and the worker has not stopped yet: claim nothing more, park
        what is in flight. Cleared once it has stopped (the end of :meth:`run` and of
        :meth:`stop_and_wait`), never when a run begins: a stop made before the run's task got
        to run (``async with`` a body that never awaits, a signal at startup) must still end
        that run."""
        self._held: dict[str, WorkflowDriver] = {}
        """The workflows this worker drives now (it holds their leases), by id."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: asyncio.Task[None] | None = None
        self._in_run = False
        """:meth:`run` is going on (in whatever task)."""
        self._failures: dict[str, int] = {}
        """Consecutive handling errors per workflow id (see ``max_handling_failures``)."""
        self._outages = OutageLog(self.worker_id)
        self.writes = WriteHealth(self._outages)
        """Whether the database takes this worker's writes (shared by its drivers)."""
        self.tasks = TaskRunner(self)
        """The activities of its queues that workers of other queues dispatched (see
        :mod:`loom.activity_tasks`): up to ``concurrency`` run at once, beside its workflows."""
        self._leases = LeaseKeeper(
            self.store,
            self.worker_id,
            lease_seconds,
            self._held,
            self.interrupt,
            self._outages,
            self.clock,
        )
        self.scheduler: Scheduler | None = None
        """Fires due schedules while the worker runs (None with ``schedules=False``)."""
        if schedules:
            self.scheduler = Scheduler(
                self.store,
                self.registry,
                self.worker_id,
                schedule_check_interval,
                self._schedules_started,
                self._outages,
                self.clock,
            )
        self.retention = (
            None
            if retention is None
            else Retention(
                self.store, period_seconds(retention), self.worker_id, now=self.clock.now
            )
        )
        """The sweep of old finished workflows :meth:`run` keeps going, if any."""

    @property
    def in_flight(self) -> int:
        """Workflows this worker is driving right now."""
        return len(self._held)

    # -- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Worker:
        self._running = asyncio.get_running_loop().create_task(self.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_and_wait()

    def stop(self) -> None:
        """Stop claiming; workflows in flight park after the activities that began (one still
        waiting for its queue's slot or rate is withdrawn, and runs wherever its workflow is
        claimed next). A run that has not begun yet ends as soon as it begins."""
        self.stopping = True
        for driver in self._held.values():
            driver.worker_stopping()
        self.database.work_available.notify()

    async def stop_and_wait(self) -> None:
        """Stop, and return once the run and every workflow in flight have ended; the worker
        can then be run again."""
        self.stop()
        if self._running is not None:
            await wait_ended(self._running)
            self._running = None
        await self._drain()
        self.activity_pool.shutdown()
        if not self._in_run:  # stopped (a run going on clears it when it ends)
            self.stopping = False

    async def run(self) -> None:
        """Claim and drive workflows until :meth:`stop` is called.

        Raises :class:`~loom.errors.DatabaseCorruptError` when the database file is damaged:
        no retry can help then, so the worker stops instead of spinning.
        """
        self._in_run = True
        try:
            await self._run()
        finally:
            self._in_run = False
            self.stopping = False  # stopped: a later run() runs

    async def _run(self) -> None:
        self._leases.ensure_running()
        wake = self._work_elsewhere
        try:
            await self.store.listen(wake)
            await self.store.listen(self._changes_elsewhere, topic="changes")
        except Exception:  # wake-ups are an optimisation: polling finds the work regardless
            log.warning("%s: cannot listen for new work; polling only", self.worker_id)
        if self.scheduler is not None:
            self.scheduler.start()
        outage = Backoff("looking for work", self._outages)
        sweeping = None
        if self.retention is not None:
            sweeping = asyncio.get_running_loop().create_task(self.retention.run())
        try:
            while not self.stopping:
                try:
                    await self._poll()
                except DatabaseCorruptError as exc:
                    log.error("%s: %s; stopping", self.worker_id, exc)
                    raise
                except Exception as exc:
                    # An outage, or a driver error nobody foresaw: a long-running worker backs
                    # off and tries again rather than dying with work still to do.
                    if not self.database.is_open:
                        raise  # closed under a running worker: not an outage, nothing to wait for
                    await self._pause(outage.failed(exc))
                else:
                    outage.succeeded()
        finally:
            if self.scheduler is not None:
                await self.scheduler.stop()
            if sweeping is not None:
                sweeping.cancel()
                await asyncio.gather(sweeping, return_exceptions=True)
            await self._drain()
            await self.store.unlisten(wake)
            await self.store.unlisten(self._changes_elsewhere, topic="changes")

    async def run_once(self) -> bool:
        """Claim one ready workflow and drive it until it parks or ends. False if none."""
        self._leases.ensure_running()
        await self._declare_queues()
        claims = await self._claim(1)
        if not claims:
            return False
        await self._advance(claims[0])
        return True

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tasks.drain()
        if not self._held:
            await self._leases.stop()

    # -- claiming -------------------------------------------------------------------------
    def _names(self) -> list[str]:
        """What this worker claims: each workflow name at each version it has."""
        return [kind_key(d.name, d.version) for d in self.registry.workflows()]

    async def _declare_queues(self) -> None:
        """Write the queue limits declared in code (``loom.queue``) to the database, once,
        before the first claim; only those that differ from what is stored are written. (A
        failure is an outage like any other: the next poll tries again.)"""
        if self._declared:
            return
        declared = self.registry.queues()
        if declared:
            stored = {q.name: q for q in await self.store.queue_limits()}
            for limits in declared:
                if stored.get(limits.name) != limits:
                    await self.store.set_queue(limits, self.clock.now())
        self._declared = True

    async def _claim(self, limit: int) -> list[Claim]:
        now = self.clock.now()
        claims = await self.store.claim(
            self.worker_id, self._names(), limit, self.lease_seconds, now, self.queues
        )
        self.stats.claimed += len(claims)
        metrics = self.database.metrics
        if metrics is not None:
            for claim in claims:
                metrics.claimed(claim.name, claim.ready_since, now, claim.queue)
        return claims

    def _spawn(self, claim: Claim) -> None:
        task = asyncio.get_running_loop().create_task(self._advance(claim))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self.database.work_available.notify()

    async def _poll(self) -> None:
        """Claim what this worker has room for; when nothing more is ready, wait for work.

        While the database refuses writes (a full disk, say), nothing new is claimed until the
        retry delay is over, and then one workflow at a time, as a probe: activities are not
        run again and again for progress that cannot be recorded."""
        if self.writes.failing:
            if self._tasks or time.monotonic() < self.writes.resume_at:
                await self._pause(
                    max(self.writes.resume_at - time.monotonic(), self.signal_check_interval)
                )
                return
            free = 1
        else:
            free = self.concurrency - len(self._tasks)
            await self.tasks.poll()
        if free > 0:
            await self._declare_queues()
            claims = await self._claim(free)
            if claims:
                self._starved = 0.0
            for claim in claims:
                self._spawn(claim)
            if len(claims) == free:
                return
        await self._idle(full=len(self._tasks) >= self.concurrency)

    async def _pause(self, seconds: float) -> None:
        """Sleep out a retry delay; only :meth:`stop` cuts it short (new work cannot be claimed
        from a database that is down)."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            await self.database.work_available.wait(left)

    async def _idle(self, *, full: bool) -> None:
        # Read the wake-up counter before looking, so that work announced (or stop() called)
        # while next_due() is in flight ends the wait at once instead of being missed.
        seen = self.database.work_available.version
        due = None
        timeout = self.poll_interval
        if not full:
            due = await self.store.next_due(self._names(), self.queues)
            wait = None if due is None else self.clock.seconds_until(due)
            if wait is not None and wait <= 0:
                # Due work this worker could not take: a queue at its limit (or another worker
                # took it first). Wait a little, longer each time in a row, up to a poll.
                self._starved = min(self.poll_interval, max(0.01, self._starved * 2))
                timeout = self._starved
            else:
                self._starved = 0.0
                if wait is not None:
                    timeout = min(timeout, wait)
        if self.stopping:
            return
        if seen == self.database.work_available.version:
            # Nothing more to claim and no news: a test clock may jump to what is due next.
            held = bool(self._tasks) or bool(self.tasks.running)
            if self.scheduler is not None and self.scheduler.next_due is not None:
                # A schedule's next slot is a time to stop at too.
                due = self.scheduler.next_due if due is None else min(due, self.scheduler.next_due)
            to = self.clock.skip_target(due, held=held, settled=self._settled())
            if to is not None:
                await self._skip_time(to)
                return
        if timeout > 0:
            await self.database.work_available.wait(timeout, since=seen)

    def _settled(self) -> bool:
        """Every workflow this worker drives waits on its running activities."""
        held = self._held
        if self.tasks.running:
            return False  # a routed activity runs here: time stands still for it too
        return len(held) == len(self._tasks) and all(d.settled for d in held.values())

    async def _skip_time(self, to: float) -> None:
        """Jump the (test) clock to ``to``: the leases held are kept past it first, then what
        waits on time wakes (the workflows driven here and this worker's next look)."""
        if self._held:
            await self._leases.renew(to + self.lease_seconds)
        self.clock.skip_to(to)
        if self.scheduler is not None:
            self.scheduler.wake()
        for driver in self._held.values():
            driver.wake()
        self.database.work_available.notify()

    def interrupt(self, workflow_id: str, *, lease_lost: bool = False) -> None:
        """Stop driving ``workflow_id`` if this worker holds it: a cancel was requested (or its
        lease is lost). Its running activities are interrupted; the next write, which the store
        turns into the cancellation, ends it."""
        driver = self._held.get(workflow_id)
        if driver is not None:
            if lease_lost:
                # Found by renewal (this worker was paused or cut off past its lease): it stops
                # without writing; were it to write, fencing would reject it.
                self.stats.lease_lost += 1
                log.warning(
                    "workflow %s: lease lost to another worker; stopped it without writing",
                    workflow_id,
                )
            driver.interrupt(lease_lost=lease_lost)

    def cancel_activity(self, workflow_id: str, seq: int) -> bool:
        """Cancel activity ``seq`` of ``workflow_id`` if this worker holds the workflow (see
        :meth:`~loom.driver.WorkflowDriver.cancel_activity`); True if an attempt was running."""
        driver = self._held.get(workflow_id)
        return driver is not None and driver.cancel_activity(seq)

    def outcome_arrived(self, workflow_id: str) -> None:
        """A routed activity of ``workflow_id`` ended: if this worker holds it, it reads the
        outcomes of its activity tasks again at once."""
        driver = self._held.get(workflow_id)
        if driver is not None:
            driver.outcome_arrived()

    def signal_arrived(self, workflow_id: str) -> None:
        """A signal was buffered for ``workflow_id``: if this worker holds it, it reads its
        signals again at once (it may be waiting for one while its activities run)."""
        driver = self._held.get(workflow_id)
        if driver is not None:
            driver.recheck_signals()

    def schedules_changed(self) -> None:
        """A schedule was created, resumed or changed in this process: its scheduler looks
        again at once."""
        if self.scheduler is not None:
            self.scheduler.wake()

    def _schedules_started(self, workflow_ids: list[str]) -> None:
        self.database.work_available.notify()
        self.database.workflow_changed.notify()

    def _work_elsewhere(self) -> None:
        """Another process announced ready work (PostgreSQL): look for it, and for activity
        tasks it may have dispatched."""
        self.tasks.heard()
        self.database.work_available.notify()

    def _changes_elsewhere(self) -> None:
        """Another process changed some workflow (PostgreSQL announces it): one that waits for a
        signal (or a routed activity) while its activities run reads its signals (or its
        routed outcomes) again, in case one came."""
        for driver in self._held.values():
            if driver.awaits_signal:
                driver.recheck_signals()
            if driver.awaits_tasks:
                driver.outcome_arrived()

    # -- driving one workflow ---------------------------------------------------------------
    async def _advance(self, claim: Claim) -> None:
        """Drive one claimed workflow (see :class:`~loom.driver.WorkflowDriver`) and decide what
        an error while doing so means: the workflow left (dropped), an outage (given back), a
        damaged database (the worker stops), or a failure of this worker (backed off)."""
        driver = WorkflowDriver(self, claim)
        wid = claim.workflow_id
        self._held[wid] = driver
        execution: WorkflowExecution | None = None
        try:
            execution = await driver.execution()
            await driver.drive(execution)
        except Abort:
            self.cache.evict(wid, execution)
        except asyncio.CancelledError:
            self.cache.evict(wid, execution)
            raise
        except DatabaseCorruptError:
            self.cache.evict(wid, execution)
            raise
        except OUTAGE_ERRORS as exc:
            # The database is away (or full): the workflow is given back, or its lease runs
            # out, and it resumes later from what was durably recorded, so it is never lost.
            # The outage itself is logged once (see loom.outage), not once per workflow.
            log.debug("workflow %s: database unavailable, retried later: %s", wid, exc)
            self.cache.evict(wid, execution)
            with contextlib.suppress(Exception):
                await self.store.release(self.worker_id, [wid], self.clock.now())
        except BaseException as exc:  # a workflow must never take the worker down
            self.cache.evict(wid, execution)
            await self._handling_failed(claim, exc)
        else:
            self._failures.pop(wid, None)
        finally:
            driver.cancel_activities()
            self._held.pop(wid, None)
            self.database.workflow_changed.notify()

    async def _handling_failed(self, claim: Claim, exc: BaseException) -> None:
        """This worker failed while handling one workflow (not an outage): back the workflow off,
        and after ``max_handling_failures`` in a row mark it FAILED, so that a workflow this
        worker cannot handle never re-runs its activities in a tight loop."""
        wid = claim.workflow_id
        self.stats.handling_errors += 1
        count = self._failures.get(wid, 0) + 1
        self._failures[wid] = count
        undecodable = isinstance(exc, PayloadDecodeError)
        if count >= self.max_handling_failures and not undecodable:
            self._failures.pop(wid, None)
            try:
                await self._give_up(claim, exc, count)
                return
            except Exception as again:
                log.error("workflow %s: could not record its failure either: %s", wid, _text(again))
        delay = min(self.handling_backoff * 2 ** (count - 1), 30.0)
        if undecodable:
            log.error(
                "workflow %s: cannot read its payloads (%d), nothing written, retried in %.1f s: "
                "%s: %s",
                wid,
                count,
                delay,
                type(exc).__name__,
                _text(exc),
            )
        else:
            log.error(
                "workflow %s: worker error %d/%d, retried in %.1f s: %s: %s",
                wid,
                count,
                self.max_handling_failures,
                delay,
                _text(type(exc).__name__),
                _text(exc),
                exc_info=exc if count == 1 else None,
            )
        with contextlib.suppress(Exception):
            await self.store.release(self.worker_id, [wid], self.clock.now() + delay)

    async def _give_up(self, claim: Claim, exc: BaseException, count: int) -> None:
        """Mark the workflow FAILED after the worker failed to handle it ``count`` times: only a
        WORKFLOW_FAILED event is written after what is stored (what the failing attempts decided
        is dropped), so ``loom retry`` resumes it from the step it was in."""
        wid = claim.workflow_id
        record = await self.store.get_workflow(wid)
        if record is None or record.status is not WorkflowStatus.RUNNING:
            return
        tb = "".join(traceback.format_exception(exc, limit=20))
        error = {
            "type": "WorkerError",
            "message": (
                f"the worker failed {count} times in a row while handling this workflow, last "
                f"with {_text(type(exc).__name__)}: {_text(exc)}; fix the cause, then "
                f"`loom retry {wid}`"
            )[:4000],
            "step": record.current_step,
            "traceback": _text(tb[-8000:]),
        }
        now = self.clock.now()
        commit = Commit(
            workflow_id=wid,
            lease_epoch=claim.lease_epoch,
            events=[Event(record.last_seq + 1, EventType.WORKFLOW_FAILED, {"error": error}, now)],
            status=WorkflowStatus.FAILED,
            state=record.state,
            current_step=record.current_step,
            lease_until=now,
            release=True,
            error=error,
        )
        outcome = await self.store.commit(commit, now)
        if outcome is CommitOutcome.OK:
            self.stats.failed += 1
            if self.database.metrics is not None:
                self.database.metrics.failed.labels(claim.name).inc()
            log.error("workflow %s: marked FAILED: %s", wid, error["message"])


__all__ = ["Worker", "WorkerStats"]
