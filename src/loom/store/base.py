"""The storage contract: the one narrow interface every backend implements.

The engine never writes SQL; it asks a :class:`Store` for a few whole operations, each one
transaction: create a workflow, claim ready workflows under a lease, commit what a worker decided
(fenced by the lease epoch), and the client's reads and requests. ``commit`` takes a *batch*, so a
backend can record many workflows' progress in one durable transaction (group commit).

Scheduling uses a single column, ``ready_at``: a workflow is claimable when ``ready_at <= now``.
A parked workflow's ``ready_at`` is its next timer (or NULL when it only waits for a signal); a
claimed one's is its lease expiry, so a workflow whose worker died becomes claimable again by the
same test, with no separate reaper. Every claim increments ``lease_epoch``; a commit carrying an
older epoch is rejected, so a worker that lost its lease can never record anything.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

from loom.core.history import Event
from loom.queues import DEFAULT_QUEUE, QueueLimits, QueueStats
from loom.schedule_spec import ScheduleSpec
from loom.status import WorkflowStatus


@dataclass(frozen=True, slots=True)
class NewWorkflow:
    workflow_id: str
    name: str
    version: str
    input: Any
    state: dict[str, Any]
    now: float
    tags: tuple[tuple[str, str], ...] = ()
    """(key, value) pairs, stored with the row in the same transaction."""
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    """Smaller runs first among the ready work of its queue."""


SameInput = Callable[[NewWorkflow, Any], bool]
"""Whether a workflow to create (as it would be written) and the input stored under its id (as
read from the row) are the same input: how a bulk start tells a repeat from a clash, inside its
transaction. A codec's store decodes the stored input first (an encoding differs each time)."""


@dataclass(frozen=True, slots=True)
class RunTarget:
    """What a schedule's run of a workflow starts as: the version a start would take (the
    newest registered) and the queue its workflow declares."""

    version: str
    queue: str = DEFAULT_QUEUE


@dataclass(frozen=True, slots=True)
class WorkflowRecord:
    """A workflow's row: what ``list`` and ``inspect`` show without reading the history."""

    workflow_id: str
    name: str
    version: str
    status: WorkflowStatus
    input: Any
    state: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    current_step: str | None
    created: float
    updated: float
    last_seq: int
    ready_at: float | None
    leased: bool
    cancel_requested: bool
    parent_id: str | None = None
    """The workflow that started this one as its child (``ctx.child``), if one did."""
    run_id: str | None = None
    """The current run's id (a new one after each ``ctx.continue_as_new``)."""
    queue: str = DEFAULT_QUEUE
    """The task queue it runs on."""
    priority: int = 0
    """Smaller runs first among the ready work of its queue."""
    reset_requested: bool = False
    """A reset waits for the worker holding the workflow (see :meth:`Store.reset`)."""

    @property
    def created_at(self) -> datetime:
        return datetime.fromtimestamp(self.created, UTC)

    @property
    def updated_at(self) -> datetime:
        return datetime.fromtimestamp(self.updated, UTC)


@dataclass(frozen=True, slots=True)
class ScheduleRecord:
    """A schedule's row: its definition and its progress."""

    spec: ScheduleSpec
    paused: bool
    next_at: float | None
    """The next slot (epoch seconds); None when the timing matches no date any more."""
    buffered_at: float | None
    """A slot held until the last run ends (overlap ``buffer_one``)."""
    last_slot_at: float | None
    """The latest slot that started a run."""
    last_run_id: str | None
    """The workflow of the last run started (a slot's or a trigger's)."""
    created: float
    updated: float


@dataclass(frozen=True, slots=True)
class RunSummary:
    """One earlier run of a workflow id, ended by ``ctx.continue_as_new``."""

    run_id: str
    started: float
    ended: float
    events: int


@dataclass(frozen=True, slots=True)
class Claim:
    """A workflow leased to one worker. ``history`` is its whole history when the store read it
    along with the claim (a workflow that has not run yet: its WORKFLOW_STARTED event), which
    spares the worker a separate read; otherwise empty."""

    workflow_id: str
    name: str
    lease_epoch: int
    last_seq: int
    history: tuple[Event, ...] = ()
    run_id: str | None = None
    """The run claimed: a cached execution of an earlier run of the same id is not it."""
    version: str | None = None
    """The workflow's version: its run stays on the code of the version it started with."""
    ready_since: float | None = None
    """When it became due (its ``ready_at`` before the claim): the start of its task latency."""
    queue: str = DEFAULT_QUEUE
    """Its task queue: an activity of another queue takes a slot of that queue to run."""


@dataclass(frozen=True, slots=True)
class Signal:
    """A buffered signal; ``sent_at`` is when it was sent (epoch seconds), so a worker can
    order it against its timers' deadlines."""

    id: int
    name: str
    payload: Any
    sent_at: float


@dataclass(slots=True)
class Commit:
    """What one worker decided for one workflow, recorded atomically (or not at all)."""

    workflow_id: str
    lease_epoch: int
    events: list[Event]
    status: WorkflowStatus
    state: dict[str, Any]
    current_step: str | None
    lease_until: float
    release: bool = False
    ready_at: float | None = None
    wait_signals: tuple[str, ...] = ()
    consumed_signals: tuple[int, ...] = ()
    result: Any = None
    error: dict[str, Any] | None = None
    continue_as_new: dict[str, Any] | None = None
    """The next run's ``input`` and ``state``: the run ends (its last event is
    WORKFLOW_CONTINUED_AS_NEW) and the next begins under the same workflow id."""
    children: bool = True
    """False when the run never started a child: its end then skips the look for running
    children to cancel (a statement saved on every workflow that has none)."""
    heartbeats: bool = True
    """False when no heartbeat of the workflow can be stored: its end then skips deleting
    them. True whenever that is not known for sure."""
    dispatches: tuple[Dispatch, ...] = ()
    """Activity tasks for workers of other queues, inserted with the events that schedule
    them (a task already there is left as it is: dispatching again is harmless)."""
    settled_tasks: tuple[tuple[int, int], ...] = ()
    """(seq, attempt) of the done tasks whose outcomes ``events`` record: deleted with them."""
    withdrawn_tasks: tuple[int, ...] = ()
    """Seqs of routed activities the workflow no longer awaits: a task not running is deleted,
    a running one is asked to stop."""
    routed: bool = False
    """The workflow awaits routed activities: a park with a done task among them makes it
    ready at once, and its end deletes its tasks. (False costs those statements nothing.)"""


@dataclass(frozen=True, slots=True)
class Dispatch:
    """One attempt of an activity sent to the workers serving ``queue``: claimable from
    ``ready_at`` (the attempt's retry time, or at once)."""

    seq: int
    attempt: int
    activity: str
    queue: str
    ready_at: float


@dataclass(frozen=True, slots=True)
class ActivityTask:
    """An activity task leased to a worker serving its queue (see :class:`Dispatch`). Every
    claim raises ``lease_epoch``: the completion and heartbeats of an earlier holder are
    fenced out."""

    workflow_id: str
    seq: int
    attempt: int
    run_id: str | None
    queue: str
    activity: str
    lease_epoch: int


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """How a routed attempt ended, as its worker recorded it, for its workflow to record:
    ``retry_at`` is the engine's retry decision, made where it ran (like a local attempt's)."""

    seq: int
    attempt: int
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    worker: str | None = None


class HeartbeatRow(NamedTuple):
    """One heartbeat to record: the activity (``seq``, name), the attempt that sent it, its
    details as stored (JSON text; None keeps those recorded before for the same activity) and
    when it was sent (epoch seconds)."""

    seq: int
    activity: str
    attempt: int
    details: str | None
    at: float


@dataclass(frozen=True, slots=True)
class ActivityHeartbeat:
    """The last heartbeat recorded for one activity of a running workflow (``loom.heartbeat``):
    which activity (``seq``: its ACTIVITY_SCHEDULED event), the attempt that sent it, its
    details (the last ones sent, JSON; None if none were) and when it was sent (epoch seconds).
    """

    workflow_id: str
    seq: int
    activity: str
    attempt: int
    details: Any
    at: float

    @property
    def sent_at(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


@dataclass(frozen=True, slots=True)
class TaskInFlight:
    """An activity task of a workflow as an operator sees it: ``state`` ``ready`` (waiting for
    a worker of ``queue``; claimable from ``ready_at``), ``leased`` (running on ``worker``
    until ``lease_expires`` unless renewed) or ``done`` (its outcome not yet recorded by the
    workflow; ``worker`` ran it)."""

    workflow_id: str
    seq: int
    attempt: int
    activity: str
    queue: str
    state: str
    worker: str | None
    ready_at: float | None
    lease_expires: float | None
    created_at: float


class CommitOutcome(StrEnum):
    OK = "OK"
    FENCED = "FENCED"  # the lease moved on; nothing was written
    CANCELED = "CANCELED"  # a cancel request won; the workflow is now CANCELED
    RESET = "RESET"  # a reset request won: nothing of the commit was written, the reset was


class ResetOutcome(StrEnum):
    RESET = "RESET"
    REQUESTED = "REQUESTED"  # a worker holds it; the reset happens at that worker's next write


class HistoryMoved(Exception):
    """The history grew, or its run continued as new, since a reset was planned from it;
    nothing was written."""


@dataclass(frozen=True, slots=True)
class ResetRequest:
    """A reset as planned from the history (``loom.core.reset.ResetPlan``): it applies only if
    the history still ends at ``last_seq`` in the run ``run_id`` (a run continued as new
    begins its history again, and may reach the same length)."""

    to_step: str
    index: int
    state: dict[str, Any]
    resend: tuple[tuple[str, Any], ...]
    last_seq: int
    reason: str | None = None
    run_id: str | None = None


class CancelOutcome(StrEnum):
    CANCELED = "CANCELED"
    REQUESTED = "REQUESTED"  # a worker holds it; it becomes CANCELED at that worker's next write


@dataclass(frozen=True, slots=True)
class QueueTasks:
    """The workflow tasks of one queue by state (see :class:`StoreStats`)."""

    ready: int
    leased: int
    sleeping: int
    waiting: int
    oldest_ready_age: float | None


@dataclass(frozen=True, slots=True)
class ActivityTaskCounts:
    """The activity tasks (routed activities) of one queue by state: ``ready`` (claimable now:
    waiting for a worker of the queue, or its holder's lease ran out), ``sleeping`` (a retry
    not due yet), ``leased`` (running on a worker) and ``done`` (its outcome waiting for its
    workflow to record it)."""

    ready: int
    sleeping: int
    leased: int
    done: int


@dataclass(frozen=True, slots=True)
class StoreStats:
    by_status: dict[str, int]
    ready: int
    leased: int
    sleeping: int
    waiting: int
    oldest_ready_age: float | None
    events: int
    signals_pending: int
    completed_last_minute: int
    completed_per_minute: list[int] = field(default_factory=list)  # newest minute first
    failed_per_minute: list[int] = field(default_factory=list)  # newest minute first
    extra: dict[str, Any] = field(default_factory=dict)
    by_queue: dict[str, QueueTasks] = field(default_factory=dict)
    """The same task counts per queue (the queues that hold a workflow)."""
    activity_tasks: dict[str, ActivityTaskCounts] = field(default_factory=dict)
    """The activity tasks per queue (the queues that hold one)."""


class DumpedEvent(NamedTuple):
    """One ``events`` row as stored: the payload is the stored JSON text, not decoded."""

    seq: int
    type: str
    payload: str
    created_at: float


class DumpedRunEvent(NamedTuple):
    """One event of an earlier run, as stored."""

    run_id: str
    seq: int
    type: str
    payload: str
    created_at: float


class DumpedHeartbeat(NamedTuple):
    """The last heartbeat of a running activity (``activity_heartbeats``), details as stored."""

    seq: int
    activity: str
    attempt: int
    details: str | None
    beat_at: float


class DumpedTask(NamedTuple):
    """An activity task (``activity_tasks``) as a copy writes it: never leased (a task a worker
    held is ready again when that lease would have run out, as if the worker had died: the
    attempt runs again, at least once); ``outcome`` as stored, for a done one."""

    seq: int
    attempt: int
    run_id: str | None
    queue: str
    priority: int
    activity: str
    state: str
    ready_at: float | None
    lease_epoch: int
    outcome: str | None
    created_at: float


class DumpedSignal(NamedTuple):
    """One buffered signal as stored, without its id: a target numbers signals anew, in order."""

    name: str
    payload: str
    created_at: float


@dataclass(frozen=True, slots=True)
class WorkflowDump:
    """A workflow's whole stored row, its history and its buffered signals, for copying between
    databases (``loom migrate``). Payload columns are the stored JSON text, copied verbatim.

    ``lease_owner`` is what the source said; it is never written to a target (see
    :meth:`Store.import_rows`) and is not part of :meth:`differences`.
    """

    workflow_id: str
    name: str
    version: str
    status: str
    input: str
    state: str
    result: str | None
    error: str | None
    current_step: str | None
    created_at: float
    updated_at: float
    last_seq: int
    ready_at: float | None
    lease_owner: str | None
    lease_epoch: int
    cancel_requested: str | None
    events: tuple[DumpedEvent, ...]
    signals: tuple[DumpedSignal, ...]
    parent_id: str | None = None
    parent_close_policy: str | None = None
    run_id: str | None = None
    run_events: tuple[DumpedRunEvent, ...] = ()
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    """The histories of its earlier runs (continued as new), by run id and seq."""
    reset_requested: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    """Its tags as (key, value) pairs, sorted."""
    heartbeats: tuple[DumpedHeartbeat, ...] = ()
    """The last heartbeats of its running activities, by seq."""
    tasks: tuple[DumpedTask, ...] = ()
    """Its activity tasks (routed activities in flight, or done and not yet recorded), by seq
    and attempt, as a copy writes them (see :class:`DumpedTask`; one asked to stop is left
    out: its workflow no longer awaits it)."""

    COPIED_FIELDS = (
        "workflow_id",
        "name",
        "version",
        "status",
        "input",
        "state",
        "result",
        "error",
        "current_step",
        "created_at",
        "updated_at",
        "last_seq",
        "ready_at",
        "lease_epoch",
        "cancel_requested",
        "parent_id",
        "parent_close_policy",
        "run_id",
        "queue",
        "priority",
        "reset_requested",
    )
    """What a copy carries over and :meth:`differences` compares: every field of the row but
    the lease owner."""

    def insert_values(self) -> tuple[Any, ...]:
        """The values of :attr:`COPIED_FIELDS`, in order: what a copy writes."""
        return tuple(getattr(self, name) for name in self.COPIED_FIELDS)

    def differences(self, other: WorkflowDump) -> list[str]:
        """What differs from ``other`` (empty when they hold the same workflow), e.g.
        ``["state", "events (first at seq 4)"]``."""
        found = [f for f in self.COPIED_FIELDS if getattr(self, f) != getattr(other, f)]
        if self.events != other.events:
            mine = {e.seq: e for e in self.events}
            theirs = {e.seq: e for e in other.events}
            seqs = sorted(s for s in mine.keys() | theirs.keys() if mine.get(s) != theirs.get(s))
            found.append(f"events (first at seq {seqs[0]})" if seqs else "events (order)")
        if self.signals != other.signals:
            found.append(f"signals ({len(self.signals)} vs {len(other.signals)})")
        if self.run_events != other.run_events:
            found.append(f"earlier runs ({len(self.run_events)} vs {len(other.run_events)} events)")
        if self.tags != other.tags:
            found.append("tags")
        if self.heartbeats != other.heartbeats:
            found.append("heartbeats")
        if self.tasks != other.tasks:
            found.append(f"activity tasks ({len(self.tasks)} vs {len(other.tasks)})")
        return found


class Store(abc.ABC):
    """Every backend implements exactly these operations; each is one transaction."""

    url: str
    dialect: str
    claim_canceled: Callable[[str], None] | None = None
    """Told the name of each workflow a claim ended as CANCELED instead of leasing it (its
    cancel was requested while a worker that then died held it), so that ``Database.metrics``
    counts every cancel; None: nobody asks."""
    """The migrations folder and test name of the backend: ``sqlite``, ``postgres``."""

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending migrations; return the names applied (empty when up to date)."""

    @abc.abstractmethod
    async def schema_version(self) -> int: ...

    @abc.abstractmethod
    async def create_workflow(self, new: NewWorkflow, first: Event) -> WorkflowRecord | None:
        """Insert the workflow with its first event and make it ready.

        Returns None when created, or the existing record when the id is taken.
        """

    @abc.abstractmethod
    async def claim(
        self,
        owner: str,
        names: list[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[Claim]:
        """Lease up to ``limit`` ready workflows whose type is in ``names`` and whose queue is in
        ``queues`` (None: any queue), smallest priority first, then oldest due first, within
        the limits of their queues (concurrency: live leases on the queue; rate: claims in the
        queue's current window).

        An entry is a workflow name (any version) or ``name + "\x1f" + version`` (that version
        only: ``queue_rules.kind_key``), as a worker that serves exactly the versions it has
        asks."""

    @abc.abstractmethod
    async def load_history(
        self, workflow_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The events after ``after_seq`` in seq order: all of them, or the first ``limit``
        (a page: the dashboard streams a long history without holding it whole)."""

    @abc.abstractmethod
    async def list_runs(self, workflow_id: str) -> list[RunSummary]:
        """The earlier runs of ``workflow_id`` (those continued as new), oldest first."""

    @abc.abstractmethod
    async def load_run_history(self, workflow_id: str, run_id: str) -> list[Event]:
        """The history of one earlier run, in seq order (empty for an unknown run)."""

    @abc.abstractmethod
    async def commit(self, commit: Commit, now: float) -> CommitOutcome:
        """Record one decision; concurrent calls may share one transaction (group commit)."""

    @abc.abstractmethod
    async def record_heartbeat(
        self, workflow_id: str, lease_epoch: int, beat: HeartbeatRow
    ) -> CommitOutcome:
        """Record the latest heartbeat of an activity, fenced like a commit: FENCED, and nothing
        written, unless the workflow is RUNNING under ``lease_epoch``; CANCELED when it was
        canceled or its cancel is requested (then its worker should stop it). A workflow's
        heartbeats are deleted when it ends."""

    @abc.abstractmethod
    async def read_heartbeats(self, workflow_id: str) -> list[ActivityHeartbeat]:
        """The last heartbeat of each activity of ``workflow_id`` that sent one, by seq."""

    @abc.abstractmethod
    async def renew(
        self, owner: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        """Extend the leases still held; return (ids whose lease was lost, ids to cancel)."""

    @abc.abstractmethod
    async def release(self, owner: str, workflow_ids: list[str], now: float) -> None:
        """Give leases back so another worker may claim them at once."""

    @abc.abstractmethod
    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None: ...

    @abc.abstractmethod
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
        """Newest created first. ``id_contains`` keeps ids containing it, ignoring case;
        ``parent_id`` keeps the children of that workflow; ``tags`` those with every one of
        these (key, value) tags; ``created_after``/``created_before`` a time range (epoch
        seconds, the first included). Each filter is answered by an index."""

    @abc.abstractmethod
    async def tags(self, workflow_id: str) -> dict[str, str]:
        """The tags the workflow was started with."""

    @abc.abstractmethod
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
        """The ids of every workflow :meth:`list_workflows` would list with these filters, in
        its order (the selection of a bulk action)."""

    @abc.abstractmethod
    async def create_workflows(
        self, new: Sequence[tuple[NewWorkflow, Event]], same_input: SameInput | None = None
    ) -> int:
        """Insert every workflow of ``new`` (each with its first event, made ready) in one
        transaction, all or nothing; return how many were created. An id that exists already
        is kept when it holds the same workflow (name and input: ``same_input``, by default
        equal JSON values); otherwise ``WorkflowAlreadyExistsError`` names it and nothing is
        written."""

    @abc.abstractmethod
    async def count_finished(self, before: float, statuses: Sequence[WorkflowStatus]) -> int:
        """How many workflows of ``statuses`` (finished ones) were last updated before
        ``before`` (epoch seconds): what :meth:`delete_finished` would delete."""

    @abc.abstractmethod
    async def delete_finished(
        self, before: float, statuses: Sequence[WorkflowStatus], limit: int
    ) -> int:
        """Delete up to ``limit`` of the workflows :meth:`count_finished` counts, oldest first,
        with their history, earlier runs and buffered signals, in one short transaction that
        skips rows another transaction holds; return how many were deleted."""

    @abc.abstractmethod
    async def changed_since(
        self, after: float, limit: int, after_id: str = ""
    ) -> list[WorkflowRecord]:
        """Up to ``limit`` workflows after the cursor ``(after, after_id)`` in the order of
        ``(updated, id)``: what a stream of changes reads next. Page on with the last one's."""

    @abc.abstractmethod
    async def read_signals(self, workflow_id: str) -> list[Signal]: ...

    @abc.abstractmethod
    async def send_signal(self, workflow_id: str, name: str, payload: Any, now: float) -> None:
        """Buffer a signal and wake the workflow; raises if it is unknown or finished."""

    @abc.abstractmethod
    async def cancel(self, workflow_id: str, reason: str | None, now: float) -> CancelOutcome: ...

    @abc.abstractmethod
    async def retry(
        self, workflow_id: str, now: float, resend: Sequence[tuple[str, Any]] = ()
    ) -> None:
        """Make a FAILED workflow RUNNING again from the step that failed.

        ``resend`` are the (name, payload) signals that the failed attempt consumed; they are
        buffered again, ahead of any still buffered, so the new attempt receives them too.
        """

    @abc.abstractmethod
    async def set_queue(
        self, limits: QueueLimits, now: float, keep: Collection[str] = ()
    ) -> QueueLimits:
        """Store the limits of a queue (replacing those it had; None: no limit), but for those
        named in ``keep`` (``"concurrency"``, ``"rate"``), left as stored, in the same
        statement: a change of one limit never undoes another made meanwhile. Returns the
        limits now stored. Every worker reads them in its next claim."""

    @abc.abstractmethod
    async def acquire_slot(
        self, queue: str, workflow_id: str, seq: int, owner: str, lease_until: float, now: float
    ) -> bool:
        """Let activity ``seq`` of ``workflow_id`` (leased to ``owner``) start on ``queue``
        if its limits allow: True, holding a slot until :meth:`release_slot` or
        ``lease_until`` (renewed by :meth:`renew` with the workflow's lease); False: not now."""

    @abc.abstractmethod
    async def release_slot(self, workflow_id: str, seq: int) -> None:
        """Give back the slot of activity ``seq`` of ``workflow_id`` (none held: nothing)."""

    # -- activity tasks: activities run by the workers serving their queue -------------------
    @abc.abstractmethod
    async def claim_tasks(
        self,
        owner: str,
        activities: list[str],
        limit: int,
        lease_seconds: float,
        now: float,
        queues: Sequence[str] | None = None,
    ) -> list[ActivityTask]:
        """Lease up to ``limit`` due activity tasks of ``activities`` on ``queues`` (None:
        any), smallest priority first, within each queue's limits (a task counts like a
        workflow held on its queue); of running workflows only."""

    @abc.abstractmethod
    async def renew_tasks(
        self, owner: str, tasks: Sequence[ActivityTask], lease_until: float
    ) -> tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]:
        """Extend the leases of ``tasks`` still held by ``owner``: (keys lost, keys whose stop
        was asked), a key being (workflow_id, seq, attempt)."""

    @abc.abstractmethod
    async def complete_task(
        self, task: ActivityTask, owner: str, outcome: TaskOutcome | None, now: float
    ) -> bool:
        """Record ``outcome`` (None: the attempt was stopped, the task goes) under the task's
        lease, and make its workflow ready if it is parked. False when the lease moved on (or
        the task went): nothing is written."""

    @abc.abstractmethod
    async def read_task_outcomes(self, workflow_id: str) -> list[TaskOutcome]:
        """The outcomes of the workflow's done activity tasks, not yet recorded by it."""

    @abc.abstractmethod
    async def read_tasks(self, workflow_id: str) -> list[TaskInFlight]:
        """The activity tasks of ``workflow_id``, by seq and attempt: where its routed
        activities stand (waiting for a worker, running on one, done)."""

    @abc.abstractmethod
    async def record_task_heartbeat(self, task: ActivityTask, beat: HeartbeatRow) -> CommitOutcome:
        """Record a routed attempt's heartbeat, fenced by its task's lease (FENCED when lost;
        CANCELED when its stop was asked)."""

    @abc.abstractmethod
    async def queue_limits(self) -> list[QueueLimits]:
        """The limits stored for each queue, by name."""

    @abc.abstractmethod
    async def queue_stats(self, now: float) -> list[QueueStats]:
        """Each queue that holds work or has limits: depth, running, limits, oldest waiting."""

    @abc.abstractmethod
    async def reset(self, workflow_id: str, request: ResetRequest, now: float) -> ResetOutcome:
        """Restart the workflow (any status) from step ``request.index``, appending a
        WORKFLOW_RESET event: its state becomes ``request.state``, the signals of
        ``request.resend`` are buffered again ahead of those still buffered, it is made ready
        and its running "cancel" children are canceled. A workflow a worker holds is reset at
        that worker's next write or lease renewal instead (REQUESTED; what it did since its last
        write is dropped); should it die first, the next claim resets it.

        Raises ``WorkflowNotFoundError``, and :class:`HistoryMoved` when its history no longer
        ends at ``request.last_seq`` (nothing was written: plan again from the new history).
        """

    @abc.abstractmethod
    async def next_due(self, names: list[str], queues: Sequence[str] | None = None) -> float | None:
        """The earliest ``ready_at`` of any workflow (of ``queues``), for an idle worker's
        sleep."""

    @abc.abstractmethod
    async def stats(self, now: float) -> StoreStats: ...

    # -- schedules ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def save_schedule(
        self, spec: ScheduleSpec, now: float, *, replace: bool = False, paused: bool = False
    ) -> ScheduleRecord:
        """Create the schedule, its first slot the first after ``now``; an existing name raises
        ``ScheduleAlreadyExistsError``, unless ``replace``: then its definition is updated and
        its progress kept (its next slot too, unless the timing changed; its pause state)."""

    @abc.abstractmethod
    async def get_schedule(self, name: str) -> ScheduleRecord | None: ...

    @abc.abstractmethod
    async def list_schedules(self) -> list[ScheduleRecord]:
        """Every schedule, by name."""

    @abc.abstractmethod
    async def pause_schedule(self, name: str, paused: bool, now: float) -> ScheduleRecord:
        """Pause or resume; a resumed schedule's next slot is the first after ``now`` (the
        slots of the pause are not caught up). ``ScheduleNotFoundError`` for an unknown one."""

    @abc.abstractmethod
    async def delete_schedule(self, name: str) -> None:
        """Delete the schedule (its runs stay); ``ScheduleNotFoundError`` for an unknown one."""

    @abc.abstractmethod
    async def fire_schedules(
        self, targets: Mapping[str, RunTarget], now: float, limit: int
    ) -> list[str]:
        """One scheduler pass over up to ``limit`` due schedules of the workflows in
        ``targets`` (name: what its runs start as): start the runs of their due slots, by
        their catch-up and overlap policies, and advance them, in one transaction; schedules
        another pass holds are passed by. Returns the ids of the workflows started."""

    @abc.abstractmethod
    async def trigger_schedule(self, name: str, target: RunTarget, now: float) -> str:
        """Start a run of the schedule now, whatever its slots, pause and overlap policy; its
        id is ``schedule:<name>:<now to the millisecond>``. Returns that id."""

    @abc.abstractmethod
    async def schedule_runs(self, name: str, limit: int) -> list[WorkflowRecord]:
        """The schedule's latest runs (the workflows whose id begins ``schedule:<name>:``),
        latest slot first."""

    @abc.abstractmethod
    async def import_schedules(self, records: Sequence[ScheduleRecord]) -> int:
        """Insert ``records`` verbatim (definition and progress: ``loom migrate``), in one
        transaction; return how many were inserted. A name already present is skipped when it
        holds the same schedule; when it differs, nothing is written and
        :class:`~loom.errors.StoreError` names it."""

    @abc.abstractmethod
    async def next_schedule_due(self, names: list[str]) -> tuple[float | None, bool]:
        """The earliest next slot of the unpaused schedules of ``names``, and whether any of
        them holds a buffered slot (waiting for its last run to end)."""

    async def listen(self, callback: Callable[[], None], topic: str = "work") -> None:
        """Call ``callback`` whenever another process announces ready work (``topic="work"``)
        or a change to some workflow (``"changes"``).

        Backends without cross-process notifications (SQLite) do nothing: workers then find
        such work by polling, at most ``poll_interval`` late, and readers poll for changes.
        """
        return None

    async def unlisten(self, callback: Callable[[], None], topic: str = "work") -> None:
        """Stop calling ``callback``."""
        return None

    # -- copying between databases (``loom migrate``) ----------------------------------------
    @abc.abstractmethod
    async def export_rows(self, after_id: str | None, limit: int) -> list[WorkflowDump]:
        """Up to ``limit`` whole workflows whose id sorts after ``after_id`` (all when None),
        in id order (bytewise, the same on every backend), read from one consistent snapshot.

        Page through a database with ``after_id = page[-1].workflow_id``.
        """

    @abc.abstractmethod
    async def import_rows(self, dumps: Sequence[WorkflowDump]) -> int:
        """Insert ``dumps`` verbatim, all in one transaction; return how many were inserted.

        Leases are not copied: ``lease_owner`` is written as NULL, so a RUNNING workflow is
        claimable on this database at its ``ready_at`` (a workflow leased in the source at
        ``ready_at``, its lease expiry, as if that worker had died). Every other column, the
        events and the buffered signals (renumbered, in the same order) are kept.

        A workflow id already present here is skipped when it holds exactly the same workflow
        (so copying again after an interrupted copy completes it); when it differs, nothing of
        the batch is written and :class:`~loom.errors.StoreError` names the workflow.
        """
