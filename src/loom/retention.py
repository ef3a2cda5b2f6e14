"""Retention: deleting finished workflows once they are older than a period, so that the
database of a long-running deployment stays bounded.

Nothing is deleted unless asked: ``loom.Worker(db, retention=timedelta(days=30))`` (``loom
worker --retention 30d``) sweeps every :data:`SWEEP_INTERVAL` seconds, and ``loom gc
--older-than 30d`` (``Database.delete_finished``) once. A sweep deletes the workflows that
ended (COMPLETED, FAILED or CANCELED, by default all three) before the cutoff, with their
histories, earlier runs and buffered signals, in batches of a few hundred, each its own short
transaction (``loom.store.retention``), with a pause between batches: workers' writes are
never held up for long, and several workers sweeping at once on PostgreSQL skip each other's
rows. "Ended" is the workflow's last update (``updated_at``): for a finished workflow, its end.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from datetime import timedelta

from loom.errors import ConfigurationError, DatabaseCorruptError
from loom.status import WorkflowStatus
from loom.store.base import Store

log = logging.getLogger("loom.worker")

FINISHED = (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED)
BATCH = 200
"""Workflows deleted per transaction."""
PAUSE = 0.2
"""Seconds between two batches of one sweep."""
SWEEP_INTERVAL = 60.0
"""Seconds between two sweeps of a worker."""
LONGEST = 100 * 365.25 * 86400
"""The longest period accepted (a hundred years)."""


def period_seconds(value: float | timedelta, what: str = "retention") -> float:
    """``value`` (seconds or a timedelta) as a number of seconds, or ``ConfigurationError``
    for one that is not a positive, finite period of at most a hundred years."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"{what} must be a number of seconds or a timedelta")
    if not (math.isfinite(seconds) and 0 < seconds <= LONGEST):
        raise ConfigurationError(
            f"{what} must be a positive period of at most a hundred years, got {value!r}"
        )
    return float(seconds)


def finished_statuses(statuses: Iterable[WorkflowStatus | str] | None) -> list[WorkflowStatus]:
    """The statuses to delete (default: every finished one); RUNNING is refused."""
    if statuses is None:
        return list(FINISHED)
    chosen: list[WorkflowStatus] = []
    for status in statuses:
        try:
            value = WorkflowStatus(str(status).upper())
        except ValueError:
            value = None
        if value not in FINISHED:
            raise ConfigurationError(
                f"cannot delete {status!r} workflows: only finished ones are deleted "
                f"({', '.join(s.value for s in FINISHED)})"
            )
        if value not in chosen:
            chosen.append(value)
    if not chosen:
        raise ConfigurationError("name at least one status to delete")
    return chosen


async def sweep(
    store: Store,
    before: float,
    statuses: list[WorkflowStatus],
    *,
    batch: int = BATCH,
    pause: float = PAUSE,
    stopping: Callable[[], bool] = lambda: False,
    deleted_batch: Callable[[int], None] | None = None,
) -> int:
    """Delete the finished workflows of ``statuses`` last updated before ``before``, ``batch``
    at a time with ``pause`` seconds between batches, until none is left (or ``stopping()``);
    return how many were deleted. ``deleted_batch`` hears of each batch that deleted any as it
    is committed (a sweep stopped in its pause has reported what it did)."""
    total = 0
    while True:
        deleted = await store.delete_finished(before, statuses, batch)
        total += deleted
        if deleted and deleted_batch is not None:
            deleted_batch(deleted)
        if deleted < batch or stopping():
            return total
        await asyncio.sleep(pause)


class Retention:
    """A worker's periodic sweep of the workflows that ended more than ``period`` seconds
    ago."""

    def __init__(
        self,
        store: Store,
        period: float,
        owner: str,
        *,
        batch: int = BATCH,
        pause: float = PAUSE,
        interval: float = SWEEP_INTERVAL,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.now = now
        """Where the cutoff's time of day is read (the worker's clock)."""
        self.period = period
        self.owner = owner
        self.batch = batch
        self.pause = pause
        self.interval = interval
        self.deleted = 0
        """How many workflows this worker's sweeps deleted."""
        self.stopping = False

    async def run(self) -> None:
        """Sweep now, then every ``interval`` seconds, until cancelled. A sweep that fails (the
        database is away) is logged and tried again at the next one."""
        while not self.stopping:
            try:
                await sweep(
                    self.store,
                    self.now() - self.period,
                    list(FINISHED),
                    batch=self.batch,
                    pause=self.pause,
                    stopping=lambda: self.stopping,
                    deleted_batch=self._deleted,
                )
            except DatabaseCorruptError:
                raise
            except Exception as exc:
                log.warning("%s: retention sweep failed, tried again later: %s", self.owner, exc)
            await asyncio.sleep(self.interval)

    def _deleted(self, n: int) -> None:
        self.deleted += n
        log.info(
            "%s: retention deleted %d finished workflow(s) that ended more than %s ago",
            self.owner,
            n,
            describe_period(self.period),
        )


def describe_period(seconds: float) -> str:
    """``30d``, ``12h``, ``90s``: the largest whole unit, else seconds."""
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
