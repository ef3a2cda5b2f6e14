"""The scheduler every :class:`~loom.worker.Worker` runs beside its claim loop.

When the worker starts, it writes the schedules its registry declares (``loom.schedule``) to the
database. Then, whenever one of the schedules of the workflows it has registered is due, it asks
the store for a pass (``Store.fire_schedules``): one transaction that starts the due slots' runs
and advances their schedules, so any number of workers (in any number of processes) can run
schedulers on one database and each slot still starts once. It sleeps until the next slot is
due, at most ``check_interval`` (schedules created or resumed by another process are found that
late; one created in this process wakes it at once), and every ``check_interval`` while a
schedule holds a buffered slot, to see whether the run before it has ended.

A database outage is ridden out like the claim loop's: back off, log once, try again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from loom.clock import WALL_CLOCK, Clock
from loom.definitions import Registry
from loom.outage import OUTAGE_ERRORS, Backoff, OutageLog
from loom.store.base import RunTarget, Store
from loom.tasks import cancel_and_wait

log = logging.getLogger("loom.scheduler")

PASS_LIMIT = 50
"""The most schedules one pass (one transaction) takes; a busier moment takes several."""

ERROR_PAUSE = 5.0
"""How long the scheduler waits after an error that is not an outage (logged each time)."""


class Scheduler:
    """Fires the due schedules of the workflows in ``registry``; ``started`` hears of the
    workflows each pass started (so the worker claims them at once)."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        worker_id: str,
        check_interval: float,
        started: Callable[[list[str]], None],
        outages: OutageLog,
        clock: Clock = WALL_CLOCK,
    ) -> None:
        self.store = store
        self.clock = clock
        self.registry = registry
        self.worker_id = worker_id
        self.check_interval = check_interval
        self._started = started
        self._outages = outages
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._synced = False
        self._held_check = 0.0
        self.next_due: float | None = None
        """When the next schedule of its workflows is due, as of the last pass (None: none);
        a test clock's skip stops there too."""

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    def wake(self) -> None:
        """A schedule was created, resumed or changed in this process: look again now."""
        self._wake.set()

    async def sync(self) -> None:
        """Write the schedules the registry declares to the database (create or update). An
        outage is retried; any other error is logged once, and the other schedules still fire."""
        try:
            for spec in self.registry.schedules():
                await self.store.save_schedule(spec, self.clock.now(), replace=True)
        except OUTAGE_ERRORS:
            raise
        except Exception as exc:
            log.error(
                "%s: cannot write the schedules declared in code: %s: %s",
                self.worker_id,
                type(exc).__name__,
                exc,
            )
        self._synced = True

    async def _loop(self) -> None:
        outage = Backoff("firing schedules", self._outages)
        while True:
            self._wake.clear()
            try:
                if not self._synced:
                    await self.sync()
                wait = await self.run_pass()
            except OUTAGE_ERRORS as exc:
                wait = outage.failed(exc)
            except Exception as exc:  # not the database's health: say so, and try again later
                log.error(
                    "%s: scheduler pass failed: %s: %s", self.worker_id, type(exc).__name__, exc
                )
                wait = ERROR_PAUSE
            else:
                outage.succeeded()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.001))

    async def run_pass(self) -> float:
        """Fire what is due now; return how long to wait before the next look."""
        # A new run takes the newest registered version of its workflow and the queue it
        # declares, as a start does.
        targets = {}
        for d in self.registry.workflows():
            newest = self.registry.workflow(d.name)
            targets[d.name] = RunTarget(newest.version, newest.queue)
        if not targets:
            return self.check_interval
        names = list(targets)
        due, held = await self.store.next_schedule_due(names)
        self.next_due = due
        now = self.clock.now()
        fire = due is not None and due <= now
        # Whether a buffered slot's run ended is looked at every check_interval of real time
        # (a test clock may stand still meanwhile).
        if fire or (held and time.monotonic() >= self._held_check):
            if held:
                self._held_check = time.monotonic() + self.check_interval
            started = await self.store.fire_schedules(targets, now, PASS_LIMIT)
            if started:
                log.info("%s: schedules started %s", self.worker_id, ", ".join(started))
                self._started(started)
            if fire:
                return 0.01  # look again: more may be due than one pass takes
        wait = self.check_interval
        left = None if due is None else self.clock.seconds_until(due)
        if left is not None:
            wait = min(wait, left)
        if held:
            wait = min(wait, self._held_check - time.monotonic())
        return wait
