"""The worker: claim ready workflows under a lease, drive them, commit what they decide.

Driving one workflow (:meth:`Worker._drive`): rebuild it (from the in-memory cache when its
history has not moved, else by replay), fire due timers, hand it buffered signals it waits for,
and run the activities it scheduled. Short activities run inline: for up to ``inline_window``
after the last write, an activity starts at once and its scheduling is committed together with
its outcome and the decisions that follow, so a workflow of quick activities costs one write.
Once the window is used up, what the workflow decided is committed before anything else runs or
is waited for, so state is durable whenever the workflow pauses. When nothing is left to run
now, the workflow is parked with its next wake-up time and its lease is given back. A crash
before a write loses only work that is then done again: activities run at least once, and each
result is recorded once.

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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loom.activities import ActivityPool, AttemptOutcome, run_attempt
from loom.core.history import Event, EventType
from loom.core.replay import ActivityRun, WorkflowExecution
from loom.definitions import Registry
from loom.errors import DatabaseCorruptError, LoomError
from loom.failures import describe_error
from loom.outage import OUTAGE_ERRORS, Backoff, OutageLog
from loom.status import WorkflowStatus
from loom.store.base import Claim, Commit, CommitOutcome, Signal

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


@dataclass
class _Held:
    """A workflow this worker holds the lease of, while it drives it."""

    claim: Claim
    running: dict[int, asyncio.Task[AttemptOutcome]] = field(default_factory=dict)
    cancel_requested: bool = False
    lease_lost: bool = False
    inbox: list[Signal] | None = None
    """Its buffered signals as last read (less those delivered since); None: read them again."""
    waits_seen: frozenset[int] = frozenset()
    """The signal waits (by seq) the inbox was read for: a new wait reads it again."""
    nudge: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when something arrives for it (a signal, a cancel) while it waits on activities."""
    awaits_signal: bool = False
    """It waits for a signal while its activities run: another process's changes wake it."""


class _Abort(Exception):
    """The workflow left this worker (lease lost or canceled); stop driving it."""


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


def _base_exception_outcome(exc: BaseException) -> AttemptOutcome:
    """An attempt that raised a BaseException (``sys.exit()``, ``KeyboardInterrupt``): a failure of
    that attempt, not retried, instead of the end of the worker."""
    error = describe_error(exc)
    error["message"] = (
        f"the activity raised {error['type']}({error['message']}); a BaseException is not retried"
    )
    return AttemptOutcome(False, error=error)


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
    """

    max_handling_failures = 5
    """Consecutive errors in this worker's own handling of one workflow (describing an error,
    encoding a value, a write the database refuses for that workflow) before the workflow is
    marked FAILED; each one backs the workflow off first. ``loom retry`` resumes it."""

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
    ) -> None:
        if concurrency < 1:
            raise LoomError("concurrency must be >= 1")
        if poll_interval <= 0 or lease_seconds <= 0 or signal_check_interval <= 0:
            raise LoomError("poll_interval, lease_seconds and signal_check_interval must be > 0")
        if inline_window < 0:
            raise LoomError("inline_window must be >= 0")
        if activity_threads is not None and activity_threads < 1:
            raise LoomError("activity_threads must be >= 1")
        self.database = database
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
        self._cache_size = cache_size
        self._held: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._running: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._failures: dict[str, int] = {}
        """Consecutive handling errors per workflow id (see ``max_handling_failures``)."""
        self._outages = OutageLog(self.worker_id)
        self._writes = Backoff(
            "recording workflow progress (no new work is started meanwhile)", self._outages
        )
        self._writes_failing = False
        self._writes_resume_at = 0.0

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
        """Stop claiming; workflows in flight park after their current activity."""
        self._stopping = True
        self.database.work_available.notify()

    async def stop_and_wait(self) -> None:
        self.stop()
        if self._running is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._running
            self._running = None
        await self._drain()
        self.activity_pool.shutdown()

    async def run(self) -> None:
        """Claim and drive workflows until :meth:`stop` is called.

        Raises :class:`~loom.errors.DatabaseCorruptError` when the database file is damaged:
        no retry can help then, so the worker stops instead of spinning.
        """
        self._stopping = False
        self._ensure_renewer()
        wake = self.database.work_available.notify
        try:
            await self.store.listen(wake)
            await self.store.listen(self._changes_elsewhere, topic="changes")
        except Exception:  # wake-ups are an optimisation: polling finds the work regardless
            log.warning("%s: cannot listen for new work; polling only", self.worker_id)
        outage = Backoff("looking for work", self._outages)
        try:
            while not self._stopping:
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
            await self._drain()
            await self.store.unlisten(wake)
            await self.store.unlisten(self._changes_elsewhere, topic="changes")

    async def run_once(self) -> bool:
        """Claim one ready workflow and drive it until it parks or ends. False if none."""
        self._ensure_renewer()
        claims = await self._claim(1)
        if not claims:
            return False
        await self._advance(claims[0])
        return True

    async def _drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._renewer is not None and not self._held:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None

    def _ensure_renewer(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    # -- claiming -------------------------------------------------------------------------
    def _names(self) -> list[str]:
        return [d.name for d in self.registry.workflows()]

    async def _claim(self, limit: int) -> list[Claim]:
        claims = await self.store.claim(
            self.worker_id, self._names(), limit, self.lease_seconds, time.time()
        )
        self.stats.claimed += len(claims)
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
        if self._writes_failing:
            if self._tasks or time.monotonic() < self._writes_resume_at:
                await self._pause(
                    max(self._writes_resume_at - time.monotonic(), self.signal_check_interval)
                )
                return
            free = 1
        else:
            free = self.concurrency - len(self._tasks)
        if free > 0:
            claims = await self._claim(free)
            for claim in claims:
                self._spawn(claim)
            if len(claims) == free:
                return
        await self._idle(full=len(self._tasks) >= self.concurrency)

    async def _pause(self, seconds: float) -> None:
        """Sleep out a retry delay; only :meth:`stop` cuts it short (new work cannot be claimed
        from a database that is down)."""
        deadline = time.monotonic() + seconds
        while not self._stopping and (left := deadline - time.monotonic()) > 0:
            await self.database.work_available.wait(left)

    async def _idle(self, *, full: bool) -> None:
        # Read the wake-up counter before looking, so that work announced (or stop() called)
        # while next_due() is in flight ends the wait at once instead of being missed.
        seen = self.database.work_available.version
        if full:
            timeout = self.poll_interval
        else:
            due = await self.store.next_due(self._names())
            timeout = (
                self.poll_interval if due is None else min(self.poll_interval, due - time.time())
            )
        if timeout > 0 and not self._stopping:
            await self.database.work_available.wait(timeout, since=seen)

    async def _renew_loop(self) -> None:
        """Extend held leases every third of a lease. A renewal that fails is simply tried again
        at the next tick: if the database stays away longer than the lease, the leases run out
        and fencing makes sure this worker's late writes are rejected."""
        outage = Backoff("lease renewal", self._outages)
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not self._held:
                continue
            try:
                lost, cancel = await self.store.renew(
                    self.worker_id, list(self._held), time.time() + self.lease_seconds
                )
            except Exception as exc:
                outage.failed(exc)
                continue
            outage.succeeded()
            for wid in lost | cancel:
                self.interrupt(wid, lease_lost=wid in lost)

    def interrupt(self, workflow_id: str, *, lease_lost: bool = False) -> None:
        """Stop driving ``workflow_id`` if this worker holds it: a cancel was requested (or its
        lease is lost). Its running activities are interrupted; the next write, which the store
        turns into the cancellation, ends it."""
        held = self._held.get(workflow_id)
        if held is None:
            return
        held.lease_lost |= lease_lost
        held.cancel_requested |= not lease_lost
        for task in held.running.values():
            task.cancel()
        held.nudge.set()

    def signal_arrived(self, workflow_id: str) -> None:
        """A signal was buffered for ``workflow_id``: if this worker holds it, it reads its
        signals again at once (it may be waiting for one while its activities run)."""
        held = self._held.get(workflow_id)
        if held is not None:
            held.inbox = None
            held.nudge.set()

    def _changes_elsewhere(self) -> None:
        """Another process changed some workflow (PostgreSQL announces it): one that waits for a
        signal while its activities run reads its signals again, in case it was sent one."""
        for held in self._held.values():
            if held.awaits_signal:
                held.inbox = None
                held.nudge.set()

    # -- driving one workflow -------------------------------------------------------------
    async def _advance(self, claim: Claim) -> None:
        held = _Held(claim)
        wid = claim.workflow_id
        self._held[wid] = held
        execution: WorkflowExecution | None = None
        try:
            execution = await self._execution_for(claim)
            await self._drive(held, execution)
        except _Abort:
            self._evict(wid, execution)
        except asyncio.CancelledError:
            self._evict(wid, execution)
            raise
        except DatabaseCorruptError:
            self._evict(wid, execution)
            raise
        except OUTAGE_ERRORS as exc:
            # The database is away (or full): the workflow is given back, or its lease runs
            # out, and it resumes later from what was durably recorded, so it is never lost.
            # The outage itself is logged once (see loom.outage), not once per workflow.
            log.debug("workflow %s: database unavailable, retried later: %s", wid, exc)
            self._evict(wid, execution)
            with contextlib.suppress(Exception):
                await self.store.release(self.worker_id, [wid], time.time())
        except BaseException as exc:  # a workflow must never take the worker down
            self._evict(wid, execution)
            await self._handling_failed(held, exc)
        else:
            self._failures.pop(wid, None)
        finally:
            for task in held.running.values():
                task.cancel()
            self._held.pop(wid, None)
            self.database.workflow_changed.notify()

    async def _handling_failed(self, held: _Held, exc: BaseException) -> None:
        """This worker failed while handling one workflow (not an outage): back the workflow off,
        and after ``max_handling_failures`` in a row mark it FAILED, so that a workflow this
        worker cannot handle never re-runs its activities in a tight loop."""
        wid = held.claim.workflow_id
        self.stats.handling_errors += 1
        count = self._failures.get(wid, 0) + 1
        self._failures[wid] = count
        if count >= self.max_handling_failures:
            self._failures.pop(wid, None)
            try:
                await self._give_up(held, exc, count)
                return
            except Exception as again:
                log.error("workflow %s: could not record its failure either: %s", wid, _text(again))
        delay = min(self.handling_backoff * 2 ** (count - 1), 30.0)
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
            await self.store.release(self.worker_id, [wid], time.time() + delay)

    async def _give_up(self, held: _Held, exc: BaseException, count: int) -> None:
        """Mark the workflow FAILED after the worker failed to handle it ``count`` times: only a
        WORKFLOW_FAILED event is written after what is stored (what the failing attempts decided
        is dropped), so ``loom retry`` resumes it from the step it was in."""
        wid = held.claim.workflow_id
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
        now = time.time()
        commit = Commit(
            workflow_id=wid,
            lease_epoch=held.claim.lease_epoch,
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
            log.error("workflow %s: marked FAILED: %s", wid, error["message"])

    async def _execution_for(self, claim: Claim) -> WorkflowExecution:
        cached = self._cache.pop(claim.workflow_id, None)
        if cached is not None and cached.last_seq == claim.last_seq and not cached.finished:
            return cached
        if cached is not None:
            cached.close()
        if len(claim.history) == claim.last_seq:
            history: list[Event] | tuple[Event, ...] = claim.history
        else:
            history = await self.store.load_history(claim.workflow_id)
        definition = self.registry.workflow(claim.name, claim.workflow_id)
        return WorkflowExecution(definition, claim.workflow_id, history, now=time.time())

    def _evict(self, workflow_id: str, execution: WorkflowExecution | None) -> None:
        self._cache.pop(workflow_id, None)
        if execution is not None:
            with contextlib.suppress(BaseException):
                execution.close()

    async def _drive(self, held: _Held, ex: WorkflowExecution) -> None:
        """Run the workflow until it has nothing to do now, then park it (or record its end).

        Each turn: deliver what happened (timers and signals, in the order they happened),
        start the activities that are due, and wait for one of them, a signal or a cancel."""
        consumed: list[int] = []
        last_write = time.monotonic()  # the claim
        while not ex.finished and not held.cancel_requested:
            if await self._deliver_inputs(held, ex, consumed):
                continue
            now = time.time()
            due = (
                []
                if self._stopping
                else [
                    run
                    for run in ex.activity_runs()
                    if run.seq not in held.running and run.not_before <= now
                ]
            )
            if not due and not held.running:
                break
            # While writes fail, nothing runs before its scheduling is recorded.
            window = 0.0 if self._writes_failing else self.inline_window
            if due and last_write + window <= time.monotonic():
                # The inline window is used up: what the workflow decided so far, these
                # activities' scheduling included, becomes durable before they begin.
                last_write = await self._checkpoint(held, ex, consumed)
            for run in due:
                held.running[run.seq] = asyncio.get_running_loop().create_task(self._attempt(run))
            left = last_write + window - time.monotonic()
            if due and left > 0:
                # Short activities run inline: their scheduling is written with their outcome.
                await asyncio.wait(
                    held.running.values(), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            if not any(task.done() for task in held.running.values()):
                # Pause: what the workflow decided so far becomes durable before it waits any
                # longer; this write also learns of a cancel request or a lost lease.
                last_write = await self._checkpoint(held, ex, consumed)
                await self._wait_for_progress(held, ex)
            if held.lease_lost:
                raise _Abort
            self._deliver_outcomes(held, ex)
        await self._commit(held, ex, consumed, release=True)

    async def _attempt(self, run: ActivityRun) -> AttemptOutcome:
        try:
            return await run_attempt(run, time.time, self.activity_pool)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # sys.exit() in an activity fails the attempt
            return _base_exception_outcome(exc)

    async def _wait_for_progress(self, held: _Held, ex: WorkflowExecution) -> None:
        """Wait until an activity ends, a timer is due, or (when the workflow waits for one) a
        signal may have arrived: at once when sent in this process, else within
        ``signal_check_interval``."""
        wake = ex.next_wakeup()
        timeout = None if wake is None else max(0.0, wake - time.time())
        waits_for_signal = bool(ex.signal_waits())
        if waits_for_signal:
            check = self.signal_check_interval
            timeout = check if timeout is None else min(timeout, check)
        held.nudge.clear()
        held.awaits_signal = waits_for_signal
        nudged = asyncio.get_running_loop().create_task(held.nudge.wait())
        try:
            await asyncio.wait(
                [*held.running.values(), nudged],
                timeout=timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            nudged.cancel()
            held.awaits_signal = False
        if waits_for_signal:
            held.inbox = None  # look again: a signal may have come from another process

    async def _checkpoint(self, held: _Held, ex: WorkflowExecution, consumed: list[int]) -> float:
        """Write what the workflow decided so far (it keeps its lease); when, monotonic."""
        await self._commit(held, ex, consumed, release=False)
        consumed.clear()
        return time.monotonic()

    def _deliver_outcomes(self, held: _Held, ex: WorkflowExecution) -> None:
        """Hand the workflow the outcome of every activity that finished (interrupted ones have
        none: they run again later)."""
        for seq, task in list(held.running.items()):
            if not task.done():
                continue
            del held.running[seq]
            if task.cancelled():
                continue
            outcome = task.result()
            self.stats.activities += 1
            if outcome.ok:
                ex.activity_completed(seq, outcome.result, time.time())
            else:
                assert outcome.error is not None
                ex.activity_failed(seq, outcome.error, outcome.retry_at, time.time())

    async def _deliver_inputs(
        self, held: _Held, ex: WorkflowExecution, consumed: list[int]
    ) -> bool:
        """Deliver the earliest thing that happened and that the workflow waits for: a due
        timer (at its time) or a buffered signal (at the time it was sent). A signal sent
        before a wait's deadline is delivered even when the worker only runs after it; one sent
        after the deadline stays buffered for a later wait. True if something was delivered."""
        now = time.time()
        waits = ex.signal_waits()
        found: list[tuple[float, int, int, Signal | None]] = []  # (when, timer last, seq, signal)
        if waits:
            wait_seqs = frozenset(seq for seq, _ in waits)
            if held.inbox is None or wait_seqs != held.waits_seen:
                held.waits_seen = wait_seqs
                held.inbox = [
                    s for s in await self.store.read_signals(ex.workflow_id) if s.id not in consumed
                ]
            taken: set[int] = set()
            for seq, name in waits:  # the oldest wait takes the oldest matching signal
                match = next((s for s in held.inbox if s.name == name and s.id not in taken), None)
                if match is not None:
                    taken.add(match.id)
                    found.append((match.sent_at, 0, seq, match))
        for seq, at in ex.deadlines():
            if at <= now:
                found.append((at, 1, seq, None))
        if not found:
            return False
        _, _, seq, signal = min(found, key=lambda f: (f[0], f[1], f[2]))
        if signal is None:
            ex.fire_timer(seq, now)
        else:
            assert held.inbox is not None
            held.inbox.remove(signal)
            consumed.append(signal.id)
            ex.receive_signal(seq, signal.name, signal.payload, now)
        return True

    async def _commit(
        self, held: _Held, ex: WorkflowExecution, consumed: list[int], *, release: bool
    ) -> None:
        events = ex.take_new_events()
        if not events and not consumed and not release:
            return
        now = time.time()
        park = release and not ex.finished
        commit = Commit(
            workflow_id=ex.workflow_id,
            lease_epoch=held.claim.lease_epoch,
            events=events,
            status=ex.status,
            state=ex.state,
            current_step=ex.current_step,
            lease_until=now + self.lease_seconds,
            release=release,
            ready_at=self._park_time(ex, now) if park else None,
            wait_signals=tuple(sorted({name for _, name in ex.signal_waits()})),
            consumed_signals=tuple(consumed),
            result=ex.state if ex.status is WorkflowStatus.COMPLETED else None,
            error=ex.error if ex.status is WorkflowStatus.FAILED else None,
        )
        try:
            outcome = await self.store.commit(commit, now)
        except OUTAGE_ERRORS as exc:
            self._writes_failing = True
            self._writes_resume_at = time.monotonic() + self._writes.failed(exc)
            raise
        if self._writes_failing:
            self._writes_failing = False
            self._writes.succeeded()
        if outcome is CommitOutcome.FENCED:
            self.stats.lease_lost += 1
            log.warning("workflow %s: lease lost; its writes were rejected", ex.workflow_id)
            raise _Abort
        if outcome is CommitOutcome.CANCELED:
            self.stats.canceled += 1
            raise _Abort
        if not release:
            self.database.workflow_changed.notify()  # live views see a step's progress
            return
        if ex.finished:
            if ex.status is WorkflowStatus.COMPLETED:
                self.stats.completed += 1
            else:
                self.stats.failed += 1
            self._evict(ex.workflow_id, ex)
        else:
            self.stats.parked += 1
            self._remember(ex)
            if commit.ready_at is not None:
                self.database.work_available.notify()

    def _park_time(self, ex: WorkflowExecution, now: float) -> float | None:
        if self._stopping and ex.activity_runs():
            return now  # hand the unfinished activity to another worker at once
        return ex.next_wakeup()

    def _remember(self, ex: WorkflowExecution) -> None:
        self._cache[ex.workflow_id] = ex
        while len(self._cache) > self._cache_size:
            _, old = self._cache.popitem(last=False)
            old.close()


async def run_once(database: Database | None = None) -> bool:
    """Execute one ready workflow task; True if there was one.

    Uses ``database``, else the database open in this event loop (the ``loom.Database`` the
    program opened, or the default one ``Workflow.start`` opened), else ``$LOOM_DATABASE_URL``.
    Raises ``ConfigurationError`` if that is ambiguous (several open) or there is none. Call it
    in a loop until it returns False to run everything that is ready now.
    """
    if database is None:
        from loom.client import open_database

        database = await open_database()
    return await database.default_worker().run_once()


__all__ = ["Worker", "WorkerStats", "run_once"]
