"""``EncodedStore``: a store that encodes every payload on its way in and decodes it on its way out.

It wraps the backend's store and implements the same contract by delegating, so neither the
engine nor the backends know of codecs: the client, the worker and the driver see plain values,
the backend sees envelopes where payloads are (:mod:`loom.store.payloads` says where). Every
path into the store passes here: a start (row and first event), a commit (events, state,
result, error, the next run of a continue-as-new), an activity's heartbeat details, a signal,
a cancel's reason, a retry's re-sent signals; and every path out: records, histories (current
and earlier runs), claims, heartbeats and buffered signals. Tags are lookup keys (the store
filters on them): they stay plain, like ids and names. What ``loom migrate`` copies
(``export_rows``/``import_rows``) passes through as stored: encoded data is copied verbatim,
and reads need the same keys there.

Without a codec nothing is encoded and writes go straight through; reads still look for
envelopes, so a database encoded elsewhere gives a clear ``PayloadDecodeError`` (or the
placeholder) instead of envelopes posing as values.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from loom.core.history import Event
from loom.errors import PayloadDecodeError
from loom.queues import QueueLimits, QueueStats
from loom.schedule_spec import ScheduleSpec
from loom.status import WorkflowStatus
from loom.store.base import (
    ActivityHeartbeat,
    ActivityTask,
    CancelOutcome,
    Claim,
    Commit,
    CommitOutcome,
    HeartbeatRow,
    NewWorkflow,
    ResetOutcome,
    ResetRequest,
    RunSummary,
    RunTarget,
    SameInput,
    ScheduleRecord,
    Signal,
    Store,
    StoreStats,
    TaskInFlight,
    TaskOutcome,
    WorkflowDump,
    WorkflowRecord,
)
from loom.store.common import equal_input
from loom.store.payloads import RECORD_FIELDS, Payloads, Unreadable, unreadable


class EncodedStore(Store):
    """``inner`` with its payloads encoded and decoded by ``payloads``."""

    def __init__(self, inner: Store, payloads: Payloads) -> None:
        self.inner = inner
        self.payloads = payloads
        self.url = inner.url
        self.dialect = inner.dialect

    def __getattr__(self, name: str) -> Any:
        # A backend's own attributes (its path, its dialect's statements) stay reachable.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def reading(self, *, placeholders: bool) -> EncodedStore:
        """The same store, reading with (or without) placeholders for what cannot be decoded.
        It shares the backend: open and close this one only."""
        return EncodedStore(self.inner, self.payloads.reading(placeholders=placeholders))

    # -- decoding ---------------------------------------------------------------------------
    def _event(self, workflow_id: str, event: Event) -> Event:
        try:
            return self.payloads.read_event(event)
        except Unreadable as exc:
            raise unreadable(exc, workflow_id) from None

    def _events(self, workflow_id: str, events: Sequence[Event]) -> list[Event]:
        read = self.payloads.read_event
        try:
            return [read(e) for e in events]
        except Unreadable as exc:
            raise unreadable(exc, workflow_id) from None

    def decoded(self, record: WorkflowRecord) -> WorkflowRecord:
        """``record`` as read from the backend (``inner``), with its payloads decoded: what
        :meth:`get_workflow` returns for that row, without reading it again."""
        return self._record(record)

    def _record(self, record: WorkflowRecord) -> WorkflowRecord:
        try:
            fields = self.payloads.read_fields(
                {name: getattr(record, name) for name, _ in RECORD_FIELDS}, RECORD_FIELDS
            )
        except Unreadable as exc:
            exc.where = f"the {exc.where}"
            raise unreadable(exc, record.workflow_id) from None
        if all(fields[name] is getattr(record, name) for name, _ in RECORD_FIELDS):
            return record
        return replace(record, **fields)

    # -- encoding ---------------------------------------------------------------------------
    def _commit(self, commit: Commit) -> Commit:
        p = self.payloads
        following = commit.continue_as_new
        if following is not None:
            following = {
                **following,
                "input": p.value(following.get("input")),
                "state": p.state(following.get("state") or {}),
            }
        return replace(
            commit,
            events=[p.event(e) for e in commit.events],
            state=p.state(commit.state),
            result=None if commit.result is None else p.value(commit.result),
            error=p.error(commit.error),
            continue_as_new=following,
        )

    # -- the contract -----------------------------------------------------------------------
    async def open(self) -> None:
        await self.inner.open()

    async def close(self) -> None:
        await self.inner.close()

    async def migrate(self) -> list[str]:
        return await self.inner.migrate()

    async def schema_version(self) -> int:
        return await self.inner.schema_version()

    async def create_workflow(self, new: NewWorkflow, first: Event) -> WorkflowRecord | None:
        if self.payloads.chain is not None:
            p = self.payloads
            new = replace(new, input=p.value(new.input), state=p.state(new.state))
            first = p.event(first)
        existing = await self.inner.create_workflow(new, first)
        return None if existing is None else self._record(existing)

    async def create_workflows(
        self, new: Sequence[tuple[NewWorkflow, Event]], same_input: SameInput | None = None
    ) -> int:
        if self.payloads.chain is None:
            return await self.inner.create_workflows(new, same_input)
        # An encoded input differs from one encoding to the next: an id already stored is
        # compared, in the bulk start's transaction, as given with its stored input decoded.
        p = self.payloads
        same = same_input or equal_input
        given = {item.workflow_id: item for item, _ in new}

        def same_decoded(item: NewWorkflow, stored: Any) -> bool:
            try:
                decoded = p.read_value(stored)
            except Unreadable as exc:
                exc.where = "the input"
                raise unreadable(exc, item.workflow_id) from None
            return same(given[item.workflow_id], decoded)

        encoded = [
            (replace(item, input=p.value(item.input), state=p.state(item.state)), p.event(first))
            for item, first in new
        ]
        return await self.inner.create_workflows(encoded, same_decoded)

    async def workflow_ids(
        self,
        *,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        id_contains: str | None = None,
        tags: Sequence[tuple[str, str]] = (),
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[str]:
        return await self.inner.workflow_ids(
            status=status,
            name=name,
            id_contains=id_contains,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
        )

    async def count_finished(self, before: float, statuses: Sequence[WorkflowStatus]) -> int:
        return await self.inner.count_finished(before, statuses)

    async def delete_finished(
        self, before: float, statuses: Sequence[WorkflowStatus], limit: int
    ) -> int:
        return await self.inner.delete_finished(before, statuses, limit)

    async def reset(self, workflow_id: str, request: ResetRequest, now: float) -> ResetOutcome:
        if self.payloads.chain is not None:
            p = self.payloads
            request = replace(
                request,
                state=p.state(request.state),
                resend=tuple((name, p.value(payload)) for name, payload in request.resend),
                reason=p.text(request.reason),
            )
        return await self.inner.reset(workflow_id, request, now)

    async def claim(
        self,
        owner: str,
        names: list[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Claim]:
        claims = await self.inner.claim(owner, names, limit, lease_seconds, now, queues)
        return [self._claim(c) if c.history else c for c in claims]

    def _claim(self, claim: Claim) -> Claim:
        """The claim with its history decoded; without it when that fails, so the worker reads
        the history itself, and fails on that one workflow instead of on the whole claim."""
        read = self.payloads.read_event
        try:
            history = tuple(read(e) for e in claim.history)
        except Unreadable:
            return replace(claim, history=())
        if all(a is b for a, b in zip(history, claim.history, strict=True)):
            return claim  # nothing was encoded (every claim passes here: no copy made)
        return replace(claim, history=history)

    async def load_history(
        self, workflow_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        events = await self.inner.load_history(workflow_id, after_seq, limit)
        return self._events(workflow_id, events)

    async def list_runs(self, workflow_id: str) -> list[RunSummary]:
        return await self.inner.list_runs(workflow_id)

    async def load_run_history(self, workflow_id: str, run_id: str) -> list[Event]:
        events = await self.inner.load_run_history(workflow_id, run_id)
        return self._events(workflow_id, events)

    def commit(self, commit: Commit, now: float) -> Coroutine[Any, Any, CommitOutcome]:
        # A plain function handing on the backend's coroutine: no layer of its own per write.
        if self.payloads.chain is not None:
            commit = self._commit(commit)
        return self.inner.commit(commit, now)

    async def record_heartbeat(
        self, workflow_id: str, lease_epoch: int, beat: HeartbeatRow
    ) -> CommitOutcome:
        if self.payloads.chain is not None and beat.details is not None:
            beat = beat._replace(details=self.payloads.json_text(beat.details))
        return await self.inner.record_heartbeat(workflow_id, lease_epoch, beat)

    async def read_heartbeats(self, workflow_id: str) -> list[ActivityHeartbeat]:
        beats = await self.inner.read_heartbeats(workflow_id)
        read = self.payloads.read_value
        decoded = []
        for beat in beats:
            try:
                details = read(beat.details)
            except Unreadable as exc:
                exc.where = f"the heartbeat details of activity {beat.activity!r} (seq {beat.seq})"
                raise unreadable(exc, workflow_id) from None
            decoded.append(beat if details is beat.details else replace(beat, details=details))
        return decoded

    async def renew(
        self, owner: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        return await self.inner.renew(owner, workflow_ids, lease_until)

    async def release(self, owner: str, workflow_ids: list[str], now: float) -> None:
        await self.inner.release(owner, workflow_ids, now)

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        record = await self.inner.get_workflow(workflow_id)
        return None if record is None else self._record(record)

    async def list_workflows(
        self,
        *,
        status: WorkflowStatus | None = None,
        name: str | None = None,
        id_contains: str | None = None,
        limit: int = 50,
        offset: int = 0,
        parent_id: str | None = None,
        tags: Sequence[tuple[str, str]] = (),
        created_after: float | None = None,
        created_before: float | None = None,
    ) -> list[WorkflowRecord]:
        records = await self.inner.list_workflows(
            status=status,
            name=name,
            id_contains=id_contains,
            limit=limit,
            offset=offset,
            parent_id=parent_id,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
        )
        return [self._record(r) for r in records]

    async def tags(self, workflow_id: str) -> dict[str, str]:
        return await self.inner.tags(workflow_id)  # lookup keys: stored plain, never encoded

    async def changed_since(
        self, after: float, limit: int, after_id: str = ""
    ) -> list[WorkflowRecord]:
        records = await self.inner.changed_since(after, limit, after_id)
        return [self._record(r) for r in records]

    async def read_signals(self, workflow_id: str) -> list[Signal]:
        signals = await self.inner.read_signals(workflow_id)
        read = self.payloads.read_signal
        try:
            return [replace(s, payload=read(s.name, s.payload)) for s in signals]
        except Unreadable as exc:
            raise unreadable(exc, workflow_id) from None

    async def send_signal(self, workflow_id: str, name: str, payload: Any, now: float) -> None:
        if self.payloads.chain is not None:
            payload = self.payloads.value(payload)
        await self.inner.send_signal(workflow_id, name, payload, now)

    async def cancel(self, workflow_id: str, reason: Any, now: float) -> CancelOutcome:
        if self.payloads.chain is not None:
            reason = self.payloads.text(reason)
        return await self.inner.cancel(workflow_id, reason, now)

    async def retry(
        self, workflow_id: str, now: float, resend: Sequence[tuple[str, Any]] = ()
    ) -> None:
        if self.payloads.chain is not None:
            resend = [(name, self.payloads.value(payload)) for name, payload in resend]
        await self.inner.retry(workflow_id, now, resend)

    async def next_due(self, names: list[str], queues: Sequence[str] | None = None) -> float | None:
        return await self.inner.next_due(names, queues)

    # Queue names and limits are plain lookup keys, never payloads: passed through as they are.
    async def set_queue(
        self, limits: QueueLimits, now: float, keep: Collection[str] = ()
    ) -> QueueLimits:
        return await self.inner.set_queue(limits, now, keep)

    async def queue_limits(self) -> list[QueueLimits]:
        return await self.inner.queue_limits()

    async def queue_stats(self, now: float) -> list[QueueStats]:
        return await self.inner.queue_stats(now)

    async def acquire_slot(
        self, queue: str, workflow_id: str, seq: int, owner: str, lease_until: float, now: float
    ) -> bool:
        return await self.inner.acquire_slot(queue, workflow_id, seq, owner, lease_until, now)

    async def release_slot(self, workflow_id: str, seq: int) -> None:
        await self.inner.release_slot(workflow_id, seq)

    # -- activity tasks: a routed attempt's outcome is a payload, its heartbeat's details too --
    async def claim_tasks(
        self,
        owner: str,
        activities: list[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[ActivityTask]:
        return await self.inner.claim_tasks(owner, activities, limit, lease_seconds, now, queues)

    async def renew_tasks(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: float
    ) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
        return await self.inner.renew_tasks(owner, tasks, lease_until)

    async def complete_task(
        self, task: ActivityTask, owner: str, outcome: TaskOutcome | None, now: float
    ) -> bool:
        if self.payloads.chain is not None and outcome is not None:
            p = self.payloads
            outcome = replace(
                outcome,
                result=None if outcome.result is None else p.value(outcome.result),
                error=p.error(outcome.error),
            )
        return await self.inner.complete_task(task, owner, outcome, now)

    async def read_task_outcomes(self, workflow_id: str) -> list[TaskOutcome]:
        p = self.payloads
        decoded = []
        for outcome in await self.inner.read_task_outcomes(workflow_id):
            try:
                result, error = p.read_value(outcome.result), p.read_error(outcome.error)
            except Unreadable as exc:
                exc.where = f"the outcome of activity seq {outcome.seq}"
                raise unreadable(exc, workflow_id) from None
            decoded.append(replace(outcome, result=result, error=error))
        return decoded

    async def read_tasks(self, workflow_id: str) -> list[TaskInFlight]:
        return await self.inner.read_tasks(workflow_id)  # nothing of a task's row is a payload

    async def record_task_heartbeat(self, task: ActivityTask, beat: HeartbeatRow) -> CommitOutcome:
        if self.payloads.chain is not None and beat.details is not None:
            beat = beat._replace(details=self.payloads.json_text(beat.details))
        return await self.inner.record_task_heartbeat(task, beat)

    async def stats(self, now: float) -> StoreStats:
        return await self.inner.stats(now)

    async def listen(self, callback: Callable[[], None], topic: str = "work") -> None:
        await self.inner.listen(callback, topic)

    async def unlisten(self, callback: Callable[[], None], topic: str = "work") -> None:
        await self.inner.unlisten(callback, topic)

    async def export_rows(self, after_id: str | None, limit: int) -> list[WorkflowDump]:
        return await self.inner.export_rows(after_id, limit)

    async def import_rows(self, dumps: Sequence[WorkflowDump]) -> int:
        return await self.inner.import_rows(dumps)

    # -- schedules: the input is a payload, stored encoded and copied as it is to each run ----
    def _schedule(self, record: ScheduleRecord) -> ScheduleRecord:
        try:
            value = self.payloads.read_value(record.spec.input)
        except Unreadable as exc:
            cause = exc.cause
            raise PayloadDecodeError(
                f"cannot decode the input of schedule {record.spec.name!r}: {cause}",
                codec=cause.codec,
                key=cause.key,
            ) from None
        if value is record.spec.input:
            return record
        return replace(record, spec=replace(record.spec, input=value))

    async def save_schedule(
        self, spec: ScheduleSpec, now: float, *, replace: bool = False, paused: bool = False
    ) -> ScheduleRecord:
        if self.payloads.chain is None:
            return self._schedule(
                await self.inner.save_schedule(spec, now, replace=replace, paused=paused)
            )
        if replace:  # the same definition again (every worker's start): nothing to write
            old = await self.inner.get_schedule(spec.name)
            if old is not None and self._schedule(old).spec == spec:
                return self._schedule(old)
        encoded = _with_input(spec, self.payloads.value(spec.input))
        saved = await self.inner.save_schedule(encoded, now, replace=replace, paused=paused)
        return self._schedule(saved)

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        found = await self.inner.get_schedule(name)
        return None if found is None else self._schedule(found)

    async def list_schedules(self) -> list[ScheduleRecord]:
        return [self._schedule(r) for r in await self.inner.list_schedules()]

    async def pause_schedule(self, name: str, paused: bool, now: float) -> ScheduleRecord:
        return self._schedule(await self.inner.pause_schedule(name, paused, now))

    async def delete_schedule(self, name: str) -> None:
        await self.inner.delete_schedule(name)

    async def fire_schedules(
        self, targets: Mapping[str, RunTarget], now: float, limit: int
    ) -> list[str]:
        return await self.inner.fire_schedules(targets, now, limit)

    async def trigger_schedule(self, name: str, target: RunTarget, now: float) -> str:
        return await self.inner.trigger_schedule(name, target, now)

    async def schedule_runs(self, name: str, limit: int) -> list[WorkflowRecord]:
        return [self._record(r) for r in await self.inner.schedule_runs(name, limit)]

    async def import_schedules(self, records: Sequence[ScheduleRecord]) -> int:
        return await self.inner.import_schedules(records)

    async def next_schedule_due(self, names: list[str]) -> tuple[float | None, bool]:
        return await self.inner.next_schedule_due(names)


def _with_input(spec: ScheduleSpec, value: Any) -> ScheduleSpec:
    return replace(spec, input=value)
