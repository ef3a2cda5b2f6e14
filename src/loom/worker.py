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
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from loom.activities import AttemptOutcome, run_attempt
from loom.core.history import Event
from loom.core.replay import WorkflowExecution
from loom.definitions import Registry
from loom.errors import LoomError, StoreError
from loom.status import WorkflowStatus
from loom.store.base import Claim, Commit, CommitOutcome

if TYPE_CHECKING:
    from loom.client import Database

log = logging.getLogger("loom.worker")

OUTAGE_ERRORS: tuple[type[Exception], ...] = (StoreError, OSError, TimeoutError)
"""What a database outage looks like to a worker: the stores report a lost or refused connection
as StoreError; OSError and TimeoutError can still escape while a connection is being made."""


class _Backoff:
    """Retry pacing for one kind of database call during an outage.

    Delays start at ``first`` and double up to ``limit``; a success resets them. Only the first
    failure of an outage is logged (with its traceback), and the recovery once, so a long outage
    does not flood the log.
    """

    first = 0.1
    limit = 5.0

    def __init__(self, what: str) -> None:
        self.what = what
        self._next: float | None = None  # None: no outage in progress

    def failed(self, exc: BaseException) -> float:
        """Note a failure; return how long to wait before trying again."""
        if self._next is None:
            log.warning(
                "%s failed; retrying until the database is back: %s", self.what, exc, exc_info=exc
            )
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.limit)
        return delay

    def succeeded(self) -> None:
        if self._next is not None:
            log.warning("%s works again", self.what)
        self._next = None


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
    started_at: float = field(default_factory=time.time)


@dataclass
class _Held:
    claim: Claim
    running: dict[int, asyncio.Task[AttemptOutcome]] = field(default_factory=dict)
    cancel_requested: bool = False
    lease_lost: bool = False


class _Abort(Exception):
    """The workflow left this worker (lease lost or canceled); stop driving it."""


class Worker:
    """Runs workflows from one database.

    ``concurrency`` is how many workflows are driven at once; ``poll_interval`` bounds how long
    an idle worker waits before looking for work started by another process (work started in
    this process, and due timers, wake it at once). ``lease_seconds`` is how long a workflow
    stays with a worker that stopped renewing: a dead worker's workflows are taken over after it.
    ``inline_window`` is how long a workflow's activities may run before their scheduling is
    written (0: each is written before it starts); quicker ones cost no write of their own.
    """

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
    ) -> None:
        if concurrency < 1:
            raise LoomError("concurrency must be >= 1")
        if poll_interval <= 0 or lease_seconds <= 0:
            raise LoomError("poll_interval and lease_seconds must be > 0")
        if inline_window < 0:
            raise LoomError("inline_window must be >= 0")
        self.database = database
        self.store = database.store
        self.registry = registry or database.registry
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease_seconds = lease_seconds
        self.inline_window = inline_window
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:12]}"
        self.stats = WorkerStats()
        database.workers.add(self)
        self._cache: collections.OrderedDict[str, WorkflowExecution] = collections.OrderedDict()
        self._cache_size = cache_size
        self._held: dict[str, _Held] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._running: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None

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

    async def run(self) -> None:
        """Claim and drive workflows until :meth:`stop` is called."""
        self._stopping = False
        self._ensure_renewer()
        wake = self.database.work_available.notify
        try:
            await self.store.listen(wake)
        except Exception:  # wake-ups are an optimisation: polling finds the work regardless
            log.warning("%s: cannot listen for new work; polling only", self.worker_id)
        outage = _Backoff(f"{self.worker_id}: looking for work")
        try:
            while not self._stopping:
                try:
                    await self._poll()
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
        """Claim what this worker has room for; when nothing more is ready, wait for work."""
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
        if full:
            timeout = self.poll_interval
        else:
            due = await self.store.next_due(self._names())
            timeout = (
                self.poll_interval if due is None else min(self.poll_interval, due - time.time())
            )
        if timeout > 0:
            await self.database.work_available.wait(timeout)

    async def _renew_loop(self) -> None:
        """Extend held leases every third of a lease. A renewal that fails is simply tried again
        at the next tick: if the database stays away longer than the lease, the leases run out
        and fencing makes sure this worker's late writes are rejected."""
        outage = _Backoff(f"{self.worker_id}: lease renewal")
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

    # -- driving one workflow -------------------------------------------------------------
    async def _advance(self, claim: Claim) -> None:
        held = _Held(claim)
        self._held[claim.workflow_id] = held
        execution: WorkflowExecution | None = None
        try:
            execution = await self._execution_for(claim)
            await self._drive(held, execution)
        except _Abort:
            self._evict(claim.workflow_id, execution)
        except Exception as exc:
            # The workflow is given back, or its lease runs out if the database is away: it is
            # claimed again later and resumes from what was durably recorded, so it is never lost.
            if isinstance(exc, OUTAGE_ERRORS):
                log.warning(
                    "workflow %s: database error, retried later: %s", claim.workflow_id, exc
                )
            else:
                log.exception("workflow %s: worker error; releasing it", claim.workflow_id)
            self._evict(claim.workflow_id, execution)
            with contextlib.suppress(Exception):
                await self.store.release(self.worker_id, [claim.workflow_id], time.time())
        finally:
            for task in held.running.values():
                task.cancel()
            self._held.pop(claim.workflow_id, None)
            self.database.workflow_changed.notify()

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
            execution.close()

    async def _drive(self, held: _Held, ex: WorkflowExecution) -> None:
        consumed: list[int] = []
        signals_seen: frozenset[int] = frozenset()
        last_write = time.monotonic()  # the claim
        while not ex.finished and not held.cancel_requested:
            now = time.time()
            progressed = False
            for seq, at in ex.deadlines():
                if at <= now:
                    ex.fire_timer(seq, now)
                    progressed = True
            waits = ex.signal_waits()
            wait_seqs = frozenset(seq for seq, _ in waits)
            if waits and wait_seqs != signals_seen:
                signals_seen = wait_seqs
                progressed |= await self._deliver_signals(ex, waits, consumed)
            if progressed:
                continue
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
            if due and last_write + self.inline_window <= time.monotonic():
                # The inline window is used up: what the workflow decided so far, these
                # activities' scheduling included, becomes durable before they begin.
                last_write = await self._checkpoint(held, ex, consumed)
            for run in due:
                held.running[run.seq] = asyncio.get_running_loop().create_task(
                    run_attempt(run, time.time)
                )
            left = last_write + self.inline_window - time.monotonic()
            if due and left > 0:
                # Short activities run inline: their scheduling is written with their outcome.
                await asyncio.wait(
                    held.running.values(), timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            if not any(task.done() for task in held.running.values()):
                # Pause: what the workflow decided so far becomes durable before it waits any
                # longer; this write also learns of a cancel request or a lost lease.
                last_write = await self._checkpoint(held, ex, consumed)
                wake = ex.next_wakeup()
                timeout = None if wake is None else max(0.0, wake - time.time())
                await asyncio.wait(
                    held.running.values(), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
            if held.lease_lost:
                raise _Abort
            self._deliver_outcomes(held, ex)
        await self._commit(held, ex, consumed, release=True)

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

    async def _deliver_signals(
        self, ex: WorkflowExecution, waits: list[tuple[int, str]], consumed: list[int]
    ) -> bool:
        inbox = [s for s in await self.store.read_signals(ex.workflow_id) if s.id not in consumed]
        delivered = False
        for seq, name in waits:
            match = next((s for s in inbox if s.name == name), None)
            if match is None:
                continue
            inbox.remove(match)
            consumed.append(match.id)
            ex.receive_signal(seq, name, match.payload, time.time())
            delivered = True
        return delivered

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
        outcome = await self.store.commit(commit, now)
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
