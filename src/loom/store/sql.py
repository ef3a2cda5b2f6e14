"""The store every SQL database shares: each operation of the contract runs a rule (the ``*_rules``
modules, ``copying``); a backend supplies only the plumbing: how a rule is run in a write
transaction or read (:meth:`SqlStore._transact`, :meth:`SqlStore._read`), how a claim is run, how
listeners are told, and its :class:`~loom.store.statements.Dialect`.
"""

from __future__ import annotations

import abc
from collections.abc import Collection, Mapping, Sequence
from typing import Any, TypeVar

import orjson

from loom.core.history import Event
from loom.errors import DatabaseCorruptError, StoreError
from loom.queues import QueueLimits, QueueStats
from loom.schedule_spec import ScheduleSpec, run_prefix
from loom.status import WorkflowStatus
from loom.store import (
    cancel_rules,
    copying,
    database_rules,
    lease_rules,
    queue_rules,
    reset_rules,
    retention,
    schedule_rules,
    signal_rules,
    start_rules,
    task_rules,
)
from loom.store.base import (
    ActivityHeartbeat,
    ActivityTask,
    CancelOutcome,
    Claim,
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
from loom.store.common import EVENT_COLUMNS, WORKFLOW_COLUMNS, Row, dump, event, record
from loom.store.statements import Dialect, Rule, one, rows, run

T = TypeVar("T")


class SqlStore(Store):
    """Every operation of the contract, as rules; a backend supplies the plumbing below."""

    sql: Dialect
    _slots_held = False
    """An activity of this process took a queue slot once: renewals extend slots too."""
    nul_in_ids = True
    """Whether the database can store a workflow id holding a NUL character."""

    # -- plumbing a backend provides ------------------------------------------------------
    @abc.abstractmethod
    async def _transact(self, rule: Rule[T]) -> T:
        """Run ``rule`` in one write transaction (all of it or nothing)."""

    @abc.abstractmethod
    async def _read(self, rule: Rule[T], *, snapshot: bool = False) -> T:
        """Run the reads of ``rule``; with ``snapshot``, all from one consistent snapshot."""

    @abc.abstractmethod
    async def _lease(
        self, claim: Rule[list[Row]], now: float
    ) -> tuple[list[Row], dict[str, Event], list[str]]:
        """Run ``claim`` (``queue_rules.claim``) in one write transaction, and
        ``lease_rules.settle_claimed`` on its rows with a cancel or reset requested; return the
        rows leased (with ``ready_since``), the first event of those with no other, and the names
        of the workflows ended as CANCELED instead."""

    def _changed(self, work: bool = False) -> None:
        """A transaction changed some workflow (``work``: made one ready): tell who listens."""

    @property
    def label(self) -> str:
        """How messages name this database (never a password, host or server)."""
        return self.url

    def _check_id(self, workflow_id: str) -> None:
        if not self.nul_in_ids and "\x00" in workflow_id:
            raise StoreError(
                f"workflow {workflow_id!r}: its id contains a NUL character, which "
                f"{self.sql.name} cannot store; use an id without one"
            )

    async def _rows(self, sql: str, *args: Any) -> list[Row]:
        return await self._read(one(rows(sql, *args)))

    # -- operations -----------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        return await self._transact(database_rules.migrate(self.sql))

    async def claim(
        self,
        owner: str,
        names: list[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Claim]:
        if not names or limit <= 0 or (queues is not None and not queues):
            return []
        rule = queue_rules.claim(self.sql, owner, names, limit, lease_seconds, now, queues)
        claimed, started, canceled = await self._lease(rule, now)
        if canceled and self.claim_canceled is not None:
            for name in canceled:
                self.claim_canceled(name)
        # A workflow with a cancel requested was ended instead: it is never run again; one with
        # a reset requested was reset, and is ready for the next claim.
        return [
            Claim(
                r["id"],
                r["name"],
                r["lease_epoch"],
                r["last_seq"],
                (started[r["id"]],) if r["id"] in started else (),
                r["run_id"],
                r["version"],
                r["ready_since"],
                r["queue"],
            )
            for r in claimed
            if not lease_rules.requested(r)
        ]

    async def load_history(
        self, workflow_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        self._check_id(workflow_id)
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq"
        if limit is None:
            found = await self._rows(sql, workflow_id, after_seq)
        else:
            found = await self._rows(f"{sql} LIMIT ?", workflow_id, after_seq, max(0, limit))
        return [event(r) for r in found]

    async def tags(self, workflow_id: str) -> dict[str, str]:
        self._check_id(workflow_id)
        found = await self._rows(
            "SELECT key, value FROM workflow_tags WHERE workflow_id = ? ORDER BY key", workflow_id
        )
        return {r["key"]: r["value"] for r in found}

    async def list_runs(self, workflow_id: str) -> list[RunSummary]:
        self._check_id(workflow_id)
        found = await self._rows(
            "SELECT run_id, MIN(created_at) AS started, MAX(created_at) AS ended, "
            "COUNT(*) AS n FROM run_events WHERE workflow_id = ? GROUP BY run_id "
            "ORDER BY started, run_id",
            workflow_id,
        )
        return [RunSummary(r["run_id"], r["started"], r["ended"], int(r["n"])) for r in found]

    async def load_run_history(self, workflow_id: str, run_id: str) -> list[Event]:
        self._check_id(workflow_id)
        found = await self._rows(
            f"SELECT {EVENT_COLUMNS} FROM run_events WHERE workflow_id = ? AND run_id = ? "
            "ORDER BY seq",
            workflow_id,
            run_id,
        )
        return [event(r) for r in found]

    async def record_heartbeat(
        self, workflow_id: str, lease_epoch: int, beat: HeartbeatRow
    ) -> CommitOutcome:
        return await self._transact(
            lease_rules.record_heartbeat(self.sql, workflow_id, lease_epoch, beat)
        )

    async def read_heartbeats(self, workflow_id: str) -> list[ActivityHeartbeat]:
        self._check_id(workflow_id)
        found = await self._rows(
            "SELECT seq, activity, attempt, details, beat_at FROM activity_heartbeats "
            "WHERE workflow_id = ? ORDER BY seq",
            workflow_id,
        )
        return [
            ActivityHeartbeat(
                workflow_id,
                r["seq"],
                r["activity"],
                r["attempt"],
                None if r["details"] is None else orjson.loads(r["details"]),
                r["beat_at"],
            )
            for r in found
        ]

    async def renew(
        self, owner: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        if not workflow_ids:
            return set(), set()
        held = await self._transact(self._renewal(owner, workflow_ids, lease_until))
        kept = {r["id"] for r in held}
        return set(workflow_ids) - kept, {r["id"] for r in held if r["stop"]}

    def _renewal(self, owner: str, workflow_ids: list[str], lease_until: float) -> Rule[list[Row]]:
        """Renew the leases, and the activity slots held under them (``queue_rules``)."""
        held: list[Row] = yield lease_rules.held(
            self.sql, "ready_at = ?", lease_until, owner, workflow_ids
        )
        if held and self._slots_held:
            where, args = self.sql.among("workflow_id", [r["id"] for r in held])
            yield run(
                f"UPDATE activity_slots SET lease_until = ? WHERE owner = ? AND {where}",
                lease_until,
                owner,
                *args,
            )
        return held

    async def acquire_slot(
        self, queue: str, workflow_id: str, seq: int, owner: str, lease_until: float, now: float
    ) -> bool:
        self._slots_held = True
        return await self._transact(
            queue_rules.acquire_slot(self.sql, queue, workflow_id, seq, owner, lease_until, now)
        )

    async def release_slot(self, workflow_id: str, seq: int) -> None:
        await self._transact(
            one(
                run(
                    "DELETE FROM activity_slots WHERE workflow_id = ? AND seq = ?",
                    workflow_id,
                    seq,
                )
            )
        )
        self._changed(work=True)  # a slot came back: work waiting for it may start

    # -- activity tasks ---------------------------------------------------------------------
    async def claim_tasks(
        self,
        owner: str,
        activities: list[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[ActivityTask]:
        if not activities or limit <= 0 or (queues is not None and not queues):
            return []
        rule = queue_rules.claim(
            self.sql, owner, activities, limit, lease_seconds, now, queues, queue_rules.take_tasks
        )
        return [task_rules.task_of(r) for r in await self._transact(rule)]

    async def renew_tasks(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: float
    ) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
        if not tasks:
            return set(), set()

        def renewal() -> Rule[tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]]:
            lost, stop = set(), set()
            for task in tasks:
                held = yield task_rules.renew(task, owner, lease_until)
                if not held:
                    lost.add(task_rules.key_of(task))
                elif held[0]["cancel_requested"]:
                    stop.add(task_rules.key_of(task))
            return lost, stop

        return await self._transact(renewal())

    async def complete_task(
        self, task: ActivityTask, owner: str, outcome: TaskOutcome | None, now: float
    ) -> bool:
        data = None if outcome is None else task_rules.outcome_json(outcome)
        written, woke = await self._transact(task_rules.complete(self.sql, task, owner, data, now))
        if written:
            self._changed(work=woke)
        return written

    async def read_task_outcomes(self, workflow_id: str) -> list[TaskOutcome]:
        found = await self._rows(
            "SELECT seq, attempt, outcome FROM activity_tasks "
            "WHERE workflow_id = ? AND state = 'done' ORDER BY seq, attempt",
            workflow_id,
        )
        return [task_rules.outcome_of(r) for r in found]

    async def read_tasks(self, workflow_id: str) -> list[TaskInFlight]:
        self._check_id(workflow_id)
        found = await self._rows(
            "SELECT seq, attempt, activity, queue, state, lease_owner, outcome, ready_at, "
            "lease_expires, created_at FROM activity_tasks WHERE workflow_id = ? "
            "ORDER BY seq, attempt",
            workflow_id,
        )
        return [task_rules.in_flight(workflow_id, r) for r in found]

    async def record_task_heartbeat(self, task: ActivityTask, beat: HeartbeatRow) -> CommitOutcome:
        return await self._transact(
            task_rules.heartbeat(self.sql, task, beat, lease_rules.RECORD_HEARTBEAT)
        )

    async def release(self, owner: str, workflow_ids: list[str], now: float) -> None:
        if not workflow_ids:
            return
        op = lease_rules.held(
            self.sql, "lease_owner = NULL, ready_at = ?", now, owner, workflow_ids
        )
        if await self._transact(one(op)):
            self._changed(work=True)

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        self._check_id(workflow_id)
        found = await self._rows(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", workflow_id
        )
        return record(found[0]) if found else None

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
        clause, params = self._filter(
            status, name, id_contains, parent_id, tags, created_after, created_before
        )
        found = await self._rows(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows {clause} "
            "ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            *params,
            self.sql.no_limit if limit < 0 else limit,  # a negative limit means none
            max(offset, 0),
        )
        return [record(r) for r in found]

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
        clause, params = self._filter(
            status, name, id_contains, None, tags, created_after, created_before
        )
        found = await self._rows(
            f"SELECT id FROM workflows {clause} ORDER BY created_at DESC, id", *params
        )
        return [r["id"] for r in found]

    def _filter(
        self,
        status: WorkflowStatus | None,
        name: str | None,
        id_contains: str | None,
        parent_id: str | None,
        tags: Sequence[tuple[str, str]],
        created_after: float | None,
        created_before: float | None,
    ) -> tuple[str, list[Any]]:
        """The WHERE clause (empty when nothing is filtered) of a listing, and its values."""
        where: list[str] = []
        params: list[Any] = []
        for key, value in tags:
            where.append(
                "id IN (SELECT workflow_id FROM workflow_tags WHERE key = ? AND value = ?)"
            )
            params.extend((key, value))
        if created_after is not None:
            where.append("created_at >= ?")
            params.append(created_after)
        if created_before is not None:
            where.append("created_at < ?")
            params.append(created_before)
        if parent_id is not None:
            where.append("parent_id = ?")
            params.append(parent_id)
        if status is not None:
            where.append("status = ?")
            params.append(WorkflowStatus(status).value)
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if id_contains:
            where.append(self.sql.contains)
            params.append(id_contains.casefold())
        return (f"WHERE {' AND '.join(where)}" if where else ""), params

    async def create_workflows(
        self, new: Sequence[tuple[NewWorkflow, Event]], same_input: SameInput | None = None
    ) -> int:
        for item, _ in new:
            self._check_id(item.workflow_id)
        if not new:
            return 0
        created = await self._transact(start_rules.create_many(self.sql, new, same_input))
        if created:
            self._changed(work=True)
        return created

    async def count_finished(self, before: float, statuses: Sequence[WorkflowStatus]) -> int:
        return await self._read(retention.count_finished(self.sql, before, statuses))

    async def delete_finished(
        self, before: float, statuses: Sequence[WorkflowStatus], limit: int
    ) -> int:
        if limit <= 0:
            return 0
        deleted = await self._transact(retention.delete_finished(self.sql, before, statuses, limit))
        if deleted:
            self._changed()
        return deleted

    async def changed_since(
        self, after: float, limit: int, after_id: str = ""
    ) -> list[WorkflowRecord]:
        found = await self._rows(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE (updated_at, id) > (?, ?) "
            "ORDER BY updated_at, id LIMIT ?",
            after,
            after_id,
            limit,
        )
        return [record(r) for r in found]

    async def read_signals(self, workflow_id: str) -> list[Signal]:
        self._check_id(workflow_id)
        found = await self._rows(
            "SELECT id, name, payload, created_at FROM signals WHERE workflow_id = ? ORDER BY id",
            workflow_id,
        )
        return [
            Signal(r["id"], r["name"], orjson.loads(r["payload"]), r["created_at"]) for r in found
        ]

    async def send_signal(self, workflow_id: str, name: str, payload: Any, now: float) -> None:
        self._check_id(workflow_id)
        woke = await self._transact(
            signal_rules.send_signal(self.sql, workflow_id, name, dump(payload), now)
        )
        self._changed(work=woke)

    async def cancel(self, workflow_id: str, reason: str | None, now: float) -> CancelOutcome:
        self._check_id(workflow_id)
        outcome = await self._transact(cancel_rules.cancel(self.sql, workflow_id, reason, now))
        self._changed()
        return outcome

    async def retry(
        self, workflow_id: str, now: float, resend: Sequence[tuple[str, Any]] = ()
    ) -> None:
        self._check_id(workflow_id)
        resent = [(name, dump(payload)) for name, payload in resend]
        await self._transact(reset_rules.retry(self.sql, workflow_id, now, resent))
        self._changed(work=True)

    async def reset(self, workflow_id: str, request: ResetRequest, now: float) -> ResetOutcome:
        self._check_id(workflow_id)
        outcome = await self._transact(reset_rules.reset(self.sql, workflow_id, request, now))
        self._changed(work=outcome is ResetOutcome.RESET)
        return outcome

    async def next_due(self, names: list[str], queues: Sequence[str] | None = None) -> float | None:
        if not names or (queues is not None and not queues):
            return None
        where, args = queue_rules.kinds(self.sql, names)
        if queues is not None:
            among, served = self.sql.among("queue", queues)
            where, args = f"{among} AND {where}", (*served, *args)
        found = await self._rows(
            f"SELECT MIN(ready_at) AS due FROM workflows WHERE ready_at IS NOT NULL AND {where}",
            *args,
        )
        return found[0]["due"] if found else None

    async def set_queue(
        self, limits: QueueLimits, now: float, keep: Collection[str] = ()
    ) -> QueueLimits:
        return await self._transact(queue_rules.set_queue(limits, now, keep))
        self._changed(work=True)  # a raised limit may let waiting work start

    async def queue_limits(self) -> list[QueueLimits]:
        found = await self._rows(f"SELECT {queue_rules.LIMIT_COLUMNS} FROM queues ORDER BY name")
        return [queue_rules.limits_of(r) for r in found]

    async def queue_stats(self, now: float) -> list[QueueStats]:
        return await self._read(queue_rules.queue_stats(self.sql, now), snapshot=True)

    async def stats(self, now: float) -> StoreStats:
        return await self._read(database_rules.stats(self.sql, now), snapshot=True)

    # -- schedules ------------------------------------------------------------------------
    async def save_schedule(
        self, spec: ScheduleSpec, now: float, *, replace: bool = False, paused: bool = False
    ) -> ScheduleRecord:
        return await self._transact(schedule_rules.save(self.sql, spec, now, replace, paused))

    async def get_schedule(self, name: str) -> ScheduleRecord | None:
        found = await self._rows(
            f"SELECT {schedule_rules.SCHEDULE_COLUMNS} FROM schedules WHERE name = ?", name
        )
        return schedule_rules.schedule_record(found[0]) if found else None

    async def list_schedules(self) -> list[ScheduleRecord]:
        found = await self._rows(
            f"SELECT {schedule_rules.SCHEDULE_COLUMNS} FROM schedules ORDER BY name"
        )
        return [schedule_rules.schedule_record(r) for r in found]

    async def pause_schedule(self, name: str, paused: bool, now: float) -> ScheduleRecord:
        return await self._transact(schedule_rules.set_paused(self.sql, name, paused, now))

    async def delete_schedule(self, name: str) -> None:
        await self._transact(schedule_rules.delete(self.sql, name))

    async def fire_schedules(
        self, targets: Mapping[str, RunTarget], now: float, limit: int
    ) -> list[str]:
        if not targets or limit <= 0:
            return []
        started = await self._transact(schedule_rules.fire_due(self.sql, targets, now, limit))
        if started:
            self._changed(work=True)
        return started

    async def trigger_schedule(self, name: str, target: RunTarget, now: float) -> str:
        workflow_id = await self._transact(schedule_rules.trigger(self.sql, name, target, now))
        self._changed(work=True)
        return workflow_id

    async def schedule_runs(self, name: str, limit: int) -> list[WorkflowRecord]:
        prefix = run_prefix(name)  # ends with ":"; ";" is the next character
        found = await self._rows(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id >= ? AND id < ? "
            "ORDER BY id DESC LIMIT ?",
            prefix,
            prefix[:-1] + ";",
            max(0, limit),
        )
        return [record(r) for r in found]

    async def import_schedules(self, records: Sequence[ScheduleRecord]) -> int:
        if not records:
            return 0
        return await self._transact(schedule_rules.import_records(self.sql, records, self.label))

    async def next_schedule_due(self, names: list[str]) -> tuple[float | None, bool]:
        if not names:
            return None, False
        return await self._read(schedule_rules.due(self.sql, names))

    async def export_rows(self, after_id: str | None, limit: int) -> list[WorkflowDump]:
        if limit <= 0:
            return []
        return await self._read(copying.export_page(self.sql, after_id, limit), snapshot=True)

    async def import_rows(self, dumps: Sequence[WorkflowDump]) -> int:
        if not dumps:
            return 0
        for x in dumps:
            self._check_id(x.workflow_id)
        try:
            new = await self._transact(copying.import_batch(self.sql, dumps, self.label))
        except StoreError as exc:
            if "already exists" in str(exc) or isinstance(exc, DatabaseCorruptError):
                raise
            first, last = min(x.workflow_id for x in dumps), max(x.workflow_id for x in dumps)
            which = f"workflow {first!r}" if first == last else f"workflows {first!r} to {last!r}"
            raise StoreError(
                f"cannot import {which} into {self.label}: {exc}; nothing of this batch was written"
            ) from exc
        if any(x.status == WorkflowStatus.RUNNING and x.ready_at is not None for x in new):
            self._changed(work=True)
        return len(new)
