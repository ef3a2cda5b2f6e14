"""Schedules in the client API: the methods ``loom.Database`` gets from :class:`ScheduleMethods`,
and what they return (:class:`ScheduleInfo`, :class:`ScheduleDescription`).

The CLI (``loom schedule ...``) and the dashboard (``/api/schedules``) act through these
methods only. Workers fire the schedules (``loom.scheduler``); these methods define, show and
steer them.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from loom.clock import Clock
from loom.definitions import Registry
from loom.errors import ConfigurationError, InvalidScheduleError, ScheduleNotFoundError
from loom.schedule_spec import every_text
from loom.scheduling import check_name, make_spec
from loom.store.base import RunTarget, ScheduleRecord, Store, WorkflowRecord

if TYPE_CHECKING:
    from loom.client import Notifier, WorkflowHandle
    from loom.worker import Worker


def _count(value: Any, what: str, high: int) -> int:
    """``value`` as a count from 0 to ``high`` (more is ``high``); a value that is no whole
    number raises ``ConfigurationError`` (a database would refuse it, or take 1.5 as 2)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"{what} must be a whole number, got {value!r}")
    return max(0, min(value, high))


def _at(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


@dataclass(frozen=True, slots=True)
class ScheduleInfo:
    """One schedule: its definition and where it stands. Times are aware UTC datetimes."""

    name: str
    workflow: str
    cron: str | None
    every: str | None
    """The interval, written shortest (``"1m30s"``); None for a cron schedule."""
    timezone: str
    input: Any
    overlap: str
    catch_up: str
    catch_up_limit: int
    paused: bool
    next_run: datetime | None
    """The next slot (None while paused, or when the timing matches no date any more)."""
    buffered_run: datetime | None
    """A slot held until the last run ends (overlap ``buffer_one``)."""
    last_run_id: str | None
    created_at: datetime
    updated_at: datetime

    @property
    def spec(self) -> str:
        """How the timing reads: ``cron */5 * * * * (Europe/Paris)``, ``every 30s``."""
        if self.every is not None:
            return f"every {self.every}"
        zone = "" if self.timezone == "UTC" else f" ({self.timezone})"
        return f"cron {self.cron}{zone}"

    @classmethod
    def of(cls, record: ScheduleRecord) -> ScheduleInfo:
        spec, timing = record.spec, record.spec.timing
        return cls(
            name=spec.name,
            workflow=spec.workflow,
            cron=timing.cron,
            every=None if timing.every is None else every_text(timing.every),
            timezone=timing.timezone,
            input=spec.input,
            overlap=spec.overlap.value,
            catch_up=spec.catch_up.value,
            catch_up_limit=spec.catch_up_limit,
            paused=record.paused,
            next_run=None if record.paused else _at(record.next_at),
            buffered_run=_at(record.buffered_at),
            last_run_id=record.last_run_id,
            created_at=datetime.fromtimestamp(record.created, UTC),
            updated_at=datetime.fromtimestamp(record.updated, UTC),
        )


@dataclass(frozen=True, slots=True)
class ScheduleDescription:
    """``describe_schedule``: the schedule, its next run times and its latest runs (the
    workflows whose id begins ``schedule:<name>:``, latest first)."""

    schedule: ScheduleInfo
    upcoming: list[datetime]
    recent_runs: list[WorkflowRecord]


class ScheduleMethods:
    """The schedule methods of ``loom.Database`` (a mixin: it uses the database's store,
    registry, payload limit and workers)."""

    store: Store
    _shown: Store
    """What is shown is read through this store: with placeholders for inputs this process
    cannot decode when the database was opened with ``placeholders=True``."""
    registry: Registry
    clock: Clock
    max_payload_bytes: int
    workers: weakref.WeakSet[Worker]
    work_available: Notifier

    def get_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        raise NotImplementedError  # the Database's

    def _schedules_changed(self, started: bool = False) -> None:
        for worker in list(self.workers):
            worker.schedules_changed()
        if started:
            self.work_available.notify()

    async def create_schedule(
        self,
        name: str,
        workflow: Any,
        *,
        cron: str | None = None,
        every: str | None = None,
        timezone: str | None = None,
        input: Any = None,
        overlap: str = "skip",
        catch_up: str = "latest",
        catch_up_limit: int = 10,
        paused: bool = False,
    ) -> ScheduleInfo:
        """Create a schedule that starts ``workflow`` (a ``@loom.workflow`` class, or the name
        of one registered in this process) with ``input`` at every slot of ``cron`` (a cron
        expression, read in ``timezone``, an IANA name, default UTC) or of ``every`` (``"30s"``,
        ``"5m"``, ``"2h"``, ``"1d"``, counted from the Unix epoch). ``overlap``: ``skip``
        (default), ``buffer_one`` or ``allow_all``; ``catch_up``: ``skip``, ``latest``
        (default) or ``all`` (at most ``catch_up_limit`` slots). Raises
        ``InvalidScheduleError``, ``UnknownWorkflowTypeError`` or
        ``ScheduleAlreadyExistsError``; nothing is stored then."""
        if not isinstance(paused, bool):
            raise InvalidScheduleError(f"paused must be True or False, got {paused!r}")
        spec = make_spec(
            name,
            workflow,
            cron=cron,
            every=every,
            timezone=timezone,
            input=input,
            overlap=overlap,
            catch_up=catch_up,
            catch_up_limit=catch_up_limit,
            max_payload_bytes=self.max_payload_bytes,
        )
        if isinstance(workflow, str):  # a name: refuse a typo (UnknownWorkflowTypeError)
            self.registry.workflow(spec.workflow)
        record = await self.store.save_schedule(spec, self.clock.now(), paused=paused)
        self._schedules_changed()
        return ScheduleInfo.of(record)

    async def sync_schedules(self, registry: Registry | None = None) -> list[ScheduleInfo]:
        """Write the schedules declared in code (``loom.schedule``, in ``registry``, default
        this database's) to the database: created, or their definition brought up to date
        (their pause state and progress kept). Workers do this when they start."""
        saved = []
        for spec in (registry or self.registry).schedules():
            saved.append(await self.store.save_schedule(spec, self.clock.now(), replace=True))
        self._schedules_changed()
        return [ScheduleInfo.of(r) for r in saved]

    async def list_schedules(self) -> list[ScheduleInfo]:
        """Every schedule, by name."""
        return [ScheduleInfo.of(r) for r in await self._shown.list_schedules()]

    async def _schedule(self, name: str) -> ScheduleRecord:
        record = await self._shown.get_schedule(check_name(name))
        if record is None:
            raise ScheduleNotFoundError(name)
        return record

    async def get_schedule(self, name: str) -> ScheduleInfo:
        """One schedule; ``ScheduleNotFoundError`` if there is none of that name."""
        return ScheduleInfo.of(await self._schedule(name))

    async def describe_schedule(
        self, name: str, *, upcoming: int = 5, runs: int = 10
    ) -> ScheduleDescription:
        """The schedule, its next ``upcoming`` run times from now on (none while paused) and
        its latest ``runs`` runs."""
        upcoming, runs = _count(upcoming, "upcoming", 100), _count(runs, "runs", 1000)
        record = await self._schedule(name)
        times: list[float] = []
        if not record.paused and record.next_at is not None:
            after = max(record.next_at, self.clock.now())
            times = record.spec.timing.upcoming(after, upcoming)
        recent = await self._shown.schedule_runs(record.spec.name, runs)
        # The page is the latest by id; a trigger's id (to the millisecond) sorts before the
        # slot of the same second, so the page is shown in the order the runs began.
        recent.sort(key=lambda r: (r.created, r.workflow_id), reverse=True)
        return ScheduleDescription(
            ScheduleInfo.of(record), [datetime.fromtimestamp(t, UTC) for t in times], recent
        )

    async def pause_schedule(self, name: str) -> ScheduleInfo:
        """Stop firing the schedule (its runs in progress go on); ``resume_schedule`` resumes."""
        record = await self._shown.pause_schedule(check_name(name), True, self.clock.now())
        return ScheduleInfo.of(record)

    async def resume_schedule(self, name: str) -> ScheduleInfo:
        """Fire the schedule again from its first slot after now: the slots that came while it
        was paused are not caught up."""
        record = await self._shown.pause_schedule(check_name(name), False, self.clock.now())
        self._schedules_changed()
        return ScheduleInfo.of(record)

    async def trigger_schedule(
        self, name: str, *, registry: Registry | None = None
    ) -> WorkflowHandle[Any]:
        """Start a run of the schedule now, whatever its slots, pause or overlap policy; its
        id is ``schedule:<name>:<now, to the millisecond>``. The schedule's workflow must be
        registered in this process (in ``registry``, default this database's:
        ``UnknownWorkflowTypeError``), as for a start by name."""
        record = await self._schedule(name)
        definition = (registry or self.registry).workflow(record.spec.workflow)
        workflow_id = await self.store.trigger_schedule(
            record.spec.name, RunTarget(definition.version, definition.queue), self.clock.now()
        )
        self._schedules_changed(started=True)
        return self.get_workflow(workflow_id)

    async def delete_schedule(self, name: str) -> None:
        """Delete the schedule; its runs (finished or not) stay."""
        await self.store.delete_schedule(check_name(name))
