"""The store's rules, decided once for every SQL database (see ``statements``).

Where each rule lives: fencing, cancel-on-commit and a park's ``ready_at`` (a buffered signal it
waits for makes it ready at once) in :func:`commit_batch` and :func:`commit_one`; ending a
workflow as CANCELED in :func:`cancel_now` (a commit, a cancel, a claim); a new workflow's row
in :func:`new_values`; a claim's lease in ``queue_rules.claim`` and its finalising of a
requested cancel or reset in :func:`settle_claimed`; renewing and releasing leases in :func:`held`;
signal delivery in :func:`send_signal`; cancel, retry and reset in :func:`cancel`, :func:`retry`
and :func:`reset` (a reset of a held workflow is carried out by :func:`commit_one` and
:func:`settle_claimed`, like a cancel); the schema in :func:`migrate`; the figures of
:func:`stats`; activity heartbeats, fenced like commits, in :func:`record_heartbeat`, and deleted
with their workflow's end (:func:`commit_batch`, :func:`cancel_now`). Copying (``loom migrate``)
is in ``copying``.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from loom.core.history import CHILD_OUTCOME, Event, EventType, decided_before_cancel
from loom.errors import WorkflowAlreadyExistsError, WorkflowNotFoundError, WorkflowNotRunningError
from loom.queues import DEFAULT_QUEUE
from loom.status import WorkflowStatus
from loom.store import task_rules
from loom.store.base import (
    CancelOutcome,
    Commit,
    CommitOutcome,
    HeartbeatRow,
    HistoryMoved,
    NewWorkflow,
    QueueTasks,
    ResetOutcome,
    ResetRequest,
    SameInput,
    StoreStats,
)
from loom.store.common import (
    STATS_MINUTES,
    Row,
    dump,
    equal_input,
    migrations,
    minute_buckets,
    split_sql,
    state_after,
)
from loom.store.statements import (
    Dialect,
    EventRow,
    Op,
    Rule,
    event_rows,
    events,
    many,
    rows,
    run,
    wake_parked,
)

NEW_COLUMNS_BASE = (
    "id, name, version, status, input, state, created_at, updated_at, last_seq, ready_at, run_id"
)
CHILD_MARKS = ", ".join("?" * (len(NEW_COLUMNS_BASE.split(",")) + 3))


# -- commits --------------------------------------------------------------------------------
@dataclass(slots=True)
class Fence:
    """A locked workflow row as a commit batch sees it, kept current as the batch applies."""

    epoch: int
    status: str
    cancel_requested: str | None
    last_seq: int
    parent_id: str | None = None
    reset_requested: str | None = None


@dataclass(slots=True)
class Prepared:
    """A commit with its payloads encoded (done before the transaction, outside its lock)."""

    commit: Commit
    now: float
    events: list[EventRow]
    state: str
    result: str | None
    error: str | None

    @classmethod
    def of(cls, commit: Commit, now: float) -> Prepared:
        return cls(
            commit,
            now,
            event_rows(commit.workflow_id, commit.events),
            dump(commit.state),
            None if commit.result is None else dump(commit.result),
            None if commit.error is None else dump(commit.error),
        )


def lock_fences(d: Dialect, ids: Sequence[str]) -> Op:
    """Lock the rows of ``ids`` in id order (so two batches never deadlock), reading their
    :func:`fences`."""
    where, args = d.among("id", sorted(set(ids)) if len(ids) > 1 else ids)
    return rows(
        "SELECT id, lease_epoch, status, cancel_requested, last_seq, parent_id, reset_requested "
        f"FROM workflows WHERE {where} ORDER BY id{d.lock}",
        *args,
    )


def fences(locked: Sequence[Row]) -> dict[str, Fence]:
    """The rows read by :func:`lock_fences`, by id."""
    return {
        r["id"]: Fence(
            r["lease_epoch"],
            r["status"],
            r["cancel_requested"],
            r["last_seq"],
            r["parent_id"],
            r["reset_requested"],
        )
        for r in locked
    }


def commit_batch(d: Dialect, batch: Sequence[Prepared]) -> Rule[list[tuple[CommitOutcome, Any]]]:
    """Record every commit of ``batch`` (or fence it); each outcome comes with the ``ready_at``
    of a workflow the commit released (for announcing work), else None."""
    fenced = fences((yield lock_fences(d, [p.commit.workflow_id for p in batch])))
    written: list[EventRow] = []
    outcomes = []
    for p in batch:
        outcomes.append((yield from commit_one(d, p, fenced, written)))
    if written:
        yield events(written)
    ended = [
        p.commit.workflow_id
        for p, (outcome, _) in zip(batch, outcomes, strict=True)
        if outcome is CommitOutcome.OK
        and p.commit.status is not WorkflowStatus.RUNNING
        and p.commit.heartbeats
    ]
    if ended:  # one statement for the batch (canceled ones: in cancel_now)
        for p, (outcome, _) in zip(batch, outcomes, strict=True):
            # Its tasks go before its heartbeats: the order a routed attempt's heartbeat
            # locks them in (``task_rules.heartbeat``), so the two never deadlock.
            if p.commit.routed and outcome is CommitOutcome.OK and p.commit.workflow_id in ended:
                yield from task_rules.drop(d, p.commit.workflow_id)
        where, args = d.among("workflow_id", ended)
        yield run(f"DELETE FROM activity_heartbeats WHERE {where}", *args)
    return outcomes


def commit_one(
    d: Dialect, p: Prepared, fenced: dict[str, Fence], written: list[EventRow]
) -> Rule[tuple[CommitOutcome, Any]]:
    c, now = p.commit, p.now
    fence = fenced.get(c.workflow_id)
    if fence is None or fence.epoch != c.lease_epoch or fence.status != WorkflowStatus.RUNNING:
        return CommitOutcome.FENCED, None  # the lease moved on (or the workflow ended)
    if fence.cancel_requested is not None:  # a cancel request wins over what was decided
        decided = decided_before_cancel(c.events, fence.last_seq)
        reason = orjson.loads(fence.cancel_requested)
        yield from cancel_now(d, c.workflow_id, reason, fence.last_seq, now, written, decided)
        fence.status, fence.epoch, fence.cancel_requested = "CANCELED", fence.epoch + 1, None
        return CommitOutcome.CANCELED, now
    if fence.reset_requested is not None:  # so does a reset: nothing of the commit is kept
        yield from reset_now(d, c.workflow_id, reset_of(fence.reset_requested), now, written)
        fence.epoch, fence.last_seq = fence.epoch + 1, fence.last_seq + 1
        fence.reset_requested = None
        return CommitOutcome.RESET, now
    new_last = fence.last_seq
    if c.events:
        if c.events[0].seq != fence.last_seq + 1:
            return CommitOutcome.FENCED, None
        new_last = c.events[-1].seq
    if c.consumed_signals:
        where, args = d.among("id", c.consumed_signals, "bigint")
        yield run(f"DELETE FROM signals WHERE {where}", *args)
    if c.settled_tasks:  # their outcomes are among the events written: recorded once
        yield task_rules.settle(c.workflow_id, c.settled_tasks)
    if c.withdrawn_tasks:
        yield from task_rules.drop(d, c.workflow_id, c.withdrawn_tasks)
    # Children start before the park below looks for buffered messages: a child whose id was
    # taken leaves its failure there, for the parent to take at once.
    woke = yield from children_of(d, c.workflow_id, c.events, now, written)
    if c.continue_as_new is not None and c.events:  # the run ends; the next begins in its place
        yield events(p.events)  # before the run's history is put away
        yield from continue_as_new(d, c, fence, now, written)
        return CommitOutcome.OK, now
    written.extend(p.events)
    release = True
    if c.status is not WorkflowStatus.RUNNING:
        ready_at = None
        if c.status is WorkflowStatus.COMPLETED:  # a FAILED one keeps them for a retry
            yield run("DELETE FROM signals WHERE workflow_id = ?", c.workflow_id)
    elif c.release:
        ready_at = c.ready_at
        if c.routed and ready_at != now and (yield task_rules.any_done(c.workflow_id)):
            ready_at = now  # a routed activity ended while it was held (task_rules.complete)
        if c.wait_signals and ready_at != now:  # one it waits for is buffered: ready at once
            where, args = d.among("name", c.wait_signals)
            if (
                yield rows(
                    f"SELECT 1 FROM signals WHERE workflow_id = ? AND {where} LIMIT 1",
                    c.workflow_id,
                    *args,
                )
            ):
                ready_at = now
    else:
        ready_at, release = c.lease_until, False  # still held: ready again when the lease ends
    if c.dispatches and c.status is WorkflowStatus.RUNNING:
        yield task_rules.dispatch(c.workflow_id, c.dispatches, now)
    yield run(
        _RELEASE if release else _KEEP,
        c.status.value,
        p.state,
        p.result,
        p.error,
        c.current_step,
        now,
        new_last,
        ready_at,
        c.workflow_id,
    )
    fence.status, fence.last_seq = c.status.value, new_last
    if c.status is not WorkflowStatus.RUNNING:  # it ended: its children and parent are told
        if c.children:
            woke |= yield from parent_close(d, c.workflow_id, now, written)
        if fence.parent_id is not None:
            outcome: dict[str, Any] = {"workflow_id": c.workflow_id, "status": c.status.value}
            if c.status is WorkflowStatus.COMPLETED:
                outcome["result"] = c.result
            else:
                outcome["error"] = c.error
            woke |= yield from child_ended(d, fence.parent_id, outcome, now)
    if woke or c.dispatches:  # a child started, a parent or child was woken, or tasks sent
        return CommitOutcome.OK, now
    return CommitOutcome.OK, ready_at if release else None


_UPDATE = (
    "UPDATE workflows SET status = ?, state = ?, result = ?, error = ?, current_step = ?, "
    "updated_at = ?, last_seq = ?, ready_at = ?, lease_owner = {} WHERE id = ?"
)
_RELEASE, _KEEP = _UPDATE.format("NULL"), _UPDATE.format("lease_owner")


def cancel_now(
    d: Dialect,
    workflow_id: str,
    reason: Any,
    last_seq: int,
    now: float,
    written: list[EventRow],
    decided: Sequence[Event] = (),
) -> Rule[None]:
    """End the workflow as CANCELED after ``decided`` (see ``decided_before_cancel``); its
    events are added to ``written``, for the caller to insert. The children it started are
    started, then (the "cancel" ones still running) canceled, and its parent is told."""
    found = yield rows("SELECT state, parent_id FROM workflows WHERE id = ?", workflow_id)
    state = state_after(found[0]["state"], decided)
    seq = last_seq + len(decided) + 1
    canceled = Event(seq, EventType.WORKFLOW_CANCELED, {"reason": reason}, now)
    written.extend(event_rows(workflow_id, [*decided, canceled]))
    yield run(
        "UPDATE workflows SET status = 'CANCELED', ready_at = NULL, lease_owner = NULL, "
        "lease_epoch = lease_epoch + 1, cancel_requested = NULL, reset_requested = NULL, "
        "last_seq = ?, "
        "updated_at = ?, error = ?, state = ? WHERE id = ?",
        seq,
        now,
        dump(canceled_error(reason)),
        state,
        workflow_id,
    )
    yield run("DELETE FROM signals WHERE workflow_id = ?", workflow_id)
    yield from task_rules.drop(d, workflow_id)  # before the heartbeats: see commit_batch
    yield run("DELETE FROM activity_heartbeats WHERE workflow_id = ?", workflow_id)
    yield from children_of(d, workflow_id, decided, now, written)
    yield from parent_close(d, workflow_id, now, written)
    parent_id = found[0]["parent_id"]
    if parent_id is not None:
        ended = {"workflow_id": workflow_id, "status": "CANCELED", "error": canceled_error(reason)}
        yield from child_ended(d, parent_id, ended, now)


def canceled_error(reason: Any) -> dict[str, Any]:
    return {"type": "Canceled", "message": reason}


# -- continue-as-new ------------------------------------------------------------------------
def continue_as_new(
    d: Dialect, c: Commit, fence: Fence, now: float, written: list[EventRow]
) -> Rule[None]:
    """Put the ended run's history away (``run_events``, under its run id) and begin the next
    run in the workflow's row: a new run id, the given input and state, a first event, ready at
    once and leased to nobody. Buffered signals stay for the new run; the run's "cancel"
    children are canceled; a child's next run keeps its parent."""
    assert c.continue_as_new is not None
    wid = c.workflow_id
    [row] = yield rows("SELECT run_id, name, version FROM workflows WHERE id = ?", wid)
    [started] = yield rows("SELECT payload FROM events WHERE workflow_id = ? AND seq = 1", wid)
    old_run = row["run_id"] or new_run_id()
    yield run(
        "INSERT INTO run_events (workflow_id, run_id, seq, type, payload, created_at) "
        "SELECT workflow_id, ?, seq, type, payload, created_at FROM events WHERE workflow_id = ?",
        old_run,
        wid,
    )
    yield run("DELETE FROM events WHERE workflow_id = ?", wid)
    # The next run numbers its activities afresh: no heartbeat or task of this run may reach
    # them.
    if c.routed:
        yield from task_rules.drop(d, wid)
    yield run("DELETE FROM activity_heartbeats WHERE workflow_id = ?", wid)
    yield from parent_close(d, wid, now, written)
    run_id = new_run_id()
    first: dict[str, Any] = {
        "name": row["name"],
        "version": row["version"],
        "input": c.continue_as_new.get("input"),
        "state": c.continue_as_new.get("state") or {},
        "continued_from": old_run,
    }
    begun = orjson.loads(started["payload"])
    for inherited in ("parent", "trace"):  # a child's next run keeps its parent; the trace goes on
        if begun.get(inherited) is not None:
            first[inherited] = begun[inherited]
    written.extend(event_rows(wid, [Event(1, EventType.WORKFLOW_STARTED, first, now)]))
    yield run(
        "UPDATE workflows SET run_id = ?, input = ?, state = ?, status = 'RUNNING', result = NULL, "
        "error = NULL, current_step = NULL, updated_at = ?, last_seq = 1, ready_at = ?, "
        "lease_owner = NULL, lease_epoch = lease_epoch + 1 WHERE id = ?",
        run_id,
        dump(first["input"]),
        dump(first["state"]),
        now,
        now,
        wid,
    )
    fence.status, fence.last_seq, fence.epoch = "RUNNING", 1, fence.epoch + 1


# -- child workflows ------------------------------------------------------------------------
def children_of(
    d: Dialect, parent_id: str, decided: Sequence[Event], now: float, written: list[EventRow]
) -> Rule[bool]:
    """Start the children that ``decided`` starts and cancel those it withdraws, in the
    parent's transaction (so a child starts exactly when its start is recorded). True when
    it started or woke any."""
    acted = False
    for e in decided:
        if e.type is EventType.CHILD_WORKFLOW_STARTED:
            yield from start_child(d, parent_id, e, now, written)
            acted = True
        elif e.type is EventType.CHILD_WORKFLOW_CANCELED:
            child = yield rows(
                "SELECT id FROM workflows WHERE id = ? AND parent_id = ? AND status = 'RUNNING'",
                str(e.payload.get("workflow_id")),
                parent_id,
            )
            if child:
                yield from cancel(d, child[0]["id"], "withdrawn by its parent", now)
                acted = True
    return acted


CHILD_COLUMNS = f"{NEW_COLUMNS_BASE}, parent_id, parent_close_policy, queue"


def start_child(
    d: Dialect, parent_id: str, e: Event, now: float, written: list[EventRow]
) -> Rule[None]:
    """Insert the child the parent's ``e`` (CHILD_WORKFLOW_STARTED) starts, ready at once. When
    its id is taken, the parent is told at once that the child failed."""
    p = e.payload
    child = str(p["workflow_id"])
    first = Event(
        1,
        EventType.WORKFLOW_STARTED,
        {
            "name": p["name"],
            "version": p["version"],
            "input": p.get("input"),
            "state": p.get("state") or {},
            "parent": {"workflow_id": parent_id, "seq": e.seq},
        },
        now,
    )
    if p.get("trace") is not None:  # the context of the parent's step that started it
        first.payload["trace"] = p["trace"]
    inserted = yield rows(
        f"INSERT INTO workflows ({CHILD_COLUMNS}) VALUES ({CHILD_MARKS}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        child,
        p["name"],
        p["version"],
        "RUNNING",
        dump(p.get("input")),
        dump(p.get("state") or {}),
        now,
        now,
        1,
        now,
        new_run_id(),
        parent_id,
        p.get("parent_close_policy") or "cancel",
        p.get("queue") or DEFAULT_QUEUE,
    )
    if inserted:
        written.extend(event_rows(child, [first]))
        return
    taken = {
        "workflow_id": child,
        "status": "FAILED",
        "error": {
            "type": "WorkflowAlreadyExistsError",
            "message": f"a workflow with id {child!r} exists already; give the child another id",
        },
    }
    yield run(INSERT_SIGNAL, parent_id, CHILD_OUTCOME, dump(taken), now)


def child_ended(d: Dialect, parent_id: str, outcome: dict[str, Any], now: float) -> Rule[bool]:
    """Leave the end of a child in its RUNNING parent's signal buffer and make the parent
    ready if it is parked; True when it was woken. (The parent's row is locked first, so a
    parent being parked meanwhile sees the message: no wake-up is lost.)"""
    found = yield rows(
        f"SELECT status, lease_owner, ready_at FROM workflows WHERE id = ?{d.lock}", parent_id
    )
    if not found or found[0]["status"] != WorkflowStatus.RUNNING:
        return False
    yield run(INSERT_SIGNAL, parent_id, CHILD_OUTCOME, dump(outcome), now)
    return (yield from wake_parked(found[0], parent_id, now))


def parent_close(d: Dialect, parent_id: str, now: float, written: list[EventRow]) -> Rule[bool]:
    """The parent ended: cancel its children still running whose policy is "cancel"."""
    running = yield rows(
        "SELECT id FROM workflows WHERE parent_id = ? AND status = 'RUNNING' "
        "AND parent_close_policy = 'cancel' ORDER BY id",
        parent_id,
    )
    for r in running:
        yield from cancel(d, r["id"], f"its parent {parent_id!r} ended", now)
    return bool(running)


# -- starts ---------------------------------------------------------------------------------
NEW_COLUMNS = f"{NEW_COLUMNS_BASE}, queue, priority"
NEW_MARKS = ", ".join("?" * len(NEW_COLUMNS.split(",")))


def new_values(new: NewWorkflow, first: Event) -> tuple[Any, ...]:
    """The values of :data:`NEW_COLUMNS` for a new workflow: RUNNING, and ready at once."""
    now = new.now
    return (
        new.workflow_id,
        new.name,
        new.version,
        "RUNNING",
        dump(new.input),
        dump(new.state),
        now,
        now,
        first.seq,
        now,
        new_run_id(),
        new.queue,
        new.priority,
    )


INSERT_TAG = "INSERT INTO workflow_tags (workflow_id, key, value) VALUES (?, ?, ?)"


def new_run_id() -> str:
    return uuid.uuid4().hex


NEW_KINDS = ("text",) * 6 + ("float8", "float8", "bigint", "float8", "text", "text", "int4")
"""The PostgreSQL array type of each of :data:`NEW_COLUMNS`, for a bulk insert (``unnest``)."""
PAGE_OF_IDS = 500
"""Ids looked up per statement (SQLite binds one parameter per id)."""


def create_many(
    d: Dialect, new: Sequence[tuple[NewWorkflow, Event]], same_input: SameInput | None = None
) -> Rule[int]:
    """Insert every new workflow of ``new`` with its first event, all or nothing (a bulk
    start). An id taken by the same workflow (name, and input by ``same_input``) is kept as it
    is; one taken by another raises ``WorkflowAlreadyExistsError``, which rolls the whole
    transaction back."""
    same = same_input or equal_input

    def check_same(item: NewWorkflow, existing: Row) -> None:
        if existing["name"] != item.name:
            raise WorkflowAlreadyExistsError(
                item.workflow_id, f"as a {existing['name']!r} workflow"
            )
        if not same(item, orjson.loads(existing["input"])):
            raise WorkflowAlreadyExistsError(item.workflow_id, "with a different input")

    by_id = {item.workflow_id: (item, first) for item, first in new}
    ids = list(by_id)
    for at in range(0, len(ids), PAGE_OF_IDS):
        where, args = d.among("id", ids[at : at + PAGE_OF_IDS])
        found = yield rows(f"SELECT id, name, input FROM workflows WHERE {where}", *args)
        for r in found:
            check_same(by_id.pop(r["id"])[0], r)
    if not by_id:
        return 0
    # In id order: two batches that share ids then take their row locks in the same order, and
    # one waits for the other instead of both deadlocking.
    values = [new_values(item, first) for _, (item, first) in sorted(by_id.items())]
    if d.list_param:
        # One statement over arrays; another transaction may insert one of these ids meanwhile,
        # so what it inserted is what it returns.
        casts = ", ".join(f"?::{kind}[]" for kind in NEW_KINDS)
        inserted = yield rows(
            f"INSERT INTO workflows ({NEW_COLUMNS}) SELECT * FROM unnest({casts}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            *(list(column) for column in zip(*values, strict=True)),
        )
        raced = set(by_id) - {r["id"] for r in inserted}
        if raced:
            where, args = d.among("id", sorted(raced))
            for r in (yield rows(f"SELECT id, name, input FROM workflows WHERE {where}", *args)):
                check_same(by_id.pop(r["id"])[0], r)
    else:  # the write lock is this transaction's: every id not found is inserted
        yield many(f"INSERT INTO workflows ({NEW_COLUMNS}) VALUES ({NEW_MARKS})", values)
    yield events(
        [row for item, first in by_id.values() for row in event_rows(item.workflow_id, [first])]
    )
    tags = [(item.workflow_id, k, v) for item, _ in by_id.values() for k, v in item.tags]
    if tags:
        yield many(INSERT_TAG, tags)
    return len(by_id)


# -- claims ---------------------------------------------------------------------------------
KIND_SEPARATOR = "\x1f"
"""Between a workflow's name and version in a claim's ``names`` entry (``Order\x1f2``): a worker
claims only the versions it has. (Names and versions never hold control characters.)"""


def kind_key(name: str, version: str) -> str:
    return f"{name}{KIND_SEPARATOR}{version}"


def kinds(d: Dialect, names: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """The condition that a workflow is of one of ``names``: a plain name (any version) or a
    :func:`kind_key` (that version only)."""
    keys = [n for n in names if KIND_SEPARATOR in n]
    plain = [n for n in names if KIND_SEPARATOR not in n]
    parts: list[str] = []
    args: list[Any] = []
    if plain:
        where, found = d.among("name", plain)
        parts.append(where)
        args.extend(found)
    if keys:
        where, found = d.among("(name || ? || version)", keys)
        parts.append(where)
        args.extend((KIND_SEPARATOR, *found))
    return (parts[0] if len(parts) == 1 else f"({' OR '.join(parts)})"), tuple(args)


def requested(row: Row) -> bool:
    """Whether a claimed row (``queue_rules.claim``) carries a cancel or reset request."""
    return row["cancel_requested"] is not None or row["reset_requested"] is not None


def settle_claimed(d: Dialect, claimed: Sequence[Row], now: float) -> Rule[list[str]]:
    """A claimed workflow whose cancel was requested is never run again: end it as CANCELED;
    one whose reset was requested is reset (and ready for the next claim). Unless the claim's
    lease ``claimed`` (rows of ``queue_rules.claim``) moved on meanwhile. Returns the names of
    the workflows it ended as CANCELED."""
    fenced = fences((yield lock_fences(d, [r["id"] for r in claimed])))
    written: list[EventRow] = []
    ended: list[str] = []
    for r in claimed:
        fence = fenced.get(r["id"])
        if (
            fence is None
            or fence.epoch != r["lease_epoch"]
            or fence.status != WorkflowStatus.RUNNING
        ):
            continue
        if fence.cancel_requested is not None:
            reason = orjson.loads(fence.cancel_requested)
            yield from cancel_now(d, r["id"], reason, fence.last_seq, now, written)
            ended.append(str(r["name"]))
        elif fence.reset_requested is not None:
            yield from reset_now(d, r["id"], reset_of(fence.reset_requested), now, written)
    if written:
        yield events(written)
    return ended


# -- leases ---------------------------------------------------------------------------------
def held(d: Dialect, assign: str, value: float, owner: str, workflow_ids: list[str]) -> Op:
    """Set ``assign`` on the workflows of ``workflow_ids`` still leased to ``owner``; rows
    are locked in id order, like a commit batch, so the two never deadlock."""
    where, args = d.among("id", workflow_ids)
    return rows(
        f"UPDATE workflows SET {assign} WHERE id IN (SELECT id FROM workflows WHERE {where} "
        f"AND lease_owner = ? AND status = 'RUNNING' ORDER BY id{d.lock}) "
        "RETURNING id, (cancel_requested IS NOT NULL OR reset_requested IS NOT NULL) AS stop",
        value,
        *args,
        owner,
    )


# -- heartbeats -----------------------------------------------------------------------------
RECORD_HEARTBEAT = (
    "INSERT INTO activity_heartbeats (workflow_id, seq, activity, attempt, details, beat_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, seq) DO UPDATE SET "
    "details = CASE WHEN excluded.details IS NULL "
    "AND activity_heartbeats.activity = excluded.activity THEN activity_heartbeats.details "
    "ELSE excluded.details END, "
    "activity = excluded.activity, attempt = excluded.attempt, beat_at = excluded.beat_at"
)
"""A heartbeat without details keeps the details recorded before for the same activity."""


def record_heartbeat(
    d: Dialect, workflow_id: str, lease_epoch: int, beat: HeartbeatRow
) -> Rule[CommitOutcome]:
    """Record a heartbeat, fenced like a commit: only while the workflow is RUNNING under
    ``lease_epoch``, so a worker that lost its lease cannot overwrite what the new holder's
    attempt records. CANCELED when the workflow was canceled, or its cancel requested (the beat
    is written then): its worker stops it."""
    fence = fences((yield lock_fences(d, [workflow_id]))).get(workflow_id)
    if fence is not None and fence.status == WorkflowStatus.CANCELED:
        return CommitOutcome.CANCELED
    if fence is None or fence.epoch != lease_epoch or fence.status != WorkflowStatus.RUNNING:
        return CommitOutcome.FENCED
    yield run(RECORD_HEARTBEAT, workflow_id, *beat)
    return CommitOutcome.OK if fence.cancel_requested is None else CommitOutcome.CANCELED


# -- requests -------------------------------------------------------------------------------
def running_row(d: Dialect, workflow_id: str, action: str) -> Rule[Row]:
    found = yield rows(
        f"SELECT status, lease_owner, ready_at, last_seq FROM workflows WHERE id = ?{d.lock}",
        workflow_id,
    )
    if not found:
        raise WorkflowNotFoundError(workflow_id)
    if found[0]["status"] != WorkflowStatus.RUNNING:
        raise WorkflowNotRunningError(workflow_id, found[0]["status"], action)
    return found[0]  # type: ignore[no-any-return]


INSERT_SIGNAL = "INSERT INTO signals (workflow_id, name, payload, created_at) VALUES (?, ?, ?, ?)"


def send_signal(d: Dialect, workflow_id: str, name: str, data: str, now: float) -> Rule[bool]:
    """Buffer the signal; a workflow parked (not leased, not yet due) is made ready at once.
    True when it was."""
    row = yield from running_row(d, workflow_id, "signal")
    yield run(INSERT_SIGNAL, workflow_id, name, data, now)
    return (yield from wake_parked(row, workflow_id, now))


def cancel(d: Dialect, workflow_id: str, reason: str | None, now: float) -> Rule[CancelOutcome]:
    """Cancel at once, unless a worker holds a live lease: then request it, for that worker's
    next write (or the next claim, should that worker die) to carry out."""
    row = yield from running_row(d, workflow_id, "cancel")
    if row["lease_owner"] is not None and row["ready_at"] is not None and row["ready_at"] > now:
        yield run(
            "UPDATE workflows SET cancel_requested = ?, reset_requested = NULL WHERE id = ?",
            dump(reason),
            workflow_id,
        )
        return CancelOutcome.REQUESTED
    written: list[EventRow] = []
    yield from cancel_now(d, workflow_id, reason, row["last_seq"], now, written)
    yield events(written)
    return CancelOutcome.CANCELED


def retry(d: Dialect, workflow_id: str, now: float, resent: list[tuple[str, str]]) -> Rule[None]:
    found = yield rows(
        f"SELECT status, last_seq, current_step FROM workflows WHERE id = ?{d.lock}", workflow_id
    )
    if not found:
        raise WorkflowNotFoundError(workflow_id)
    status, last_seq, step = found[0]["status"], found[0]["last_seq"], found[0]["current_step"]
    if status != WorkflowStatus.FAILED:
        raise WorkflowNotRunningError(
            workflow_id, status, "retry", "only FAILED workflows can be retried"
        )
    retried = Event(last_seq + 1, EventType.WORKFLOW_RETRIED, {"step": step}, now)
    yield events(event_rows(workflow_id, [retried]))
    yield run(
        "UPDATE workflows SET status = 'RUNNING', error = NULL, ready_at = ?, "
        "lease_owner = NULL, lease_epoch = lease_epoch + 1, last_seq = ?, updated_at = ? "
        "WHERE id = ?",
        now,
        retried.seq,
        now,
        workflow_id,
    )
    # Signals the failed attempt consumed are delivered again, before those still buffered.
    yield from rebuffer(workflow_id, resent, now)
    # A task left by a worker that gave up on it is not this resumption's to run.
    yield from task_rules.drop(d, workflow_id)


def rebuffer(workflow_id: str, resent: Sequence[tuple[str, str]], now: float) -> Rule[None]:
    """Buffer ``resent`` (name, payload JSON) again, ahead of the signals still buffered,
    keeping the order in which they were sent."""
    if not resent:
        return
    buffered = yield rows(
        "DELETE FROM signals WHERE workflow_id = ? RETURNING id, name, payload", workflow_id
    )
    again = [*resent, *((r["name"], r["payload"]) for r in sorted(buffered, key=lambda r: r["id"]))]
    yield many(INSERT_SIGNAL, [(workflow_id, name, data, now) for name, data in again])


# -- resets ---------------------------------------------------------------------------------
def reset(d: Dialect, workflow_id: str, request: ResetRequest, now: float) -> Rule[ResetOutcome]:
    """Reset at once, unless a worker holds a live lease: then request it, for that worker's
    next write (or lease renewal, or the next claim should it die) to carry out."""
    found = yield rows(
        "SELECT status, lease_owner, ready_at, last_seq, run_id FROM workflows "
        f"WHERE id = ?{d.lock}",
        workflow_id,
    )
    if not found:
        raise WorkflowNotFoundError(workflow_id)
    row = found[0]
    moved = request.run_id is not None and row["run_id"] != request.run_id
    if moved or row["last_seq"] != request.last_seq:
        raise HistoryMoved(workflow_id)
    held = row["lease_owner"] is not None and row["ready_at"] is not None and row["ready_at"] > now
    if row["status"] == WorkflowStatus.RUNNING and held:
        yield run(
            "UPDATE workflows SET reset_requested = ?, cancel_requested = NULL WHERE id = ?",
            dump(dataclasses.asdict(request)),
            workflow_id,
        )
        return ResetOutcome.REQUESTED
    written: list[EventRow] = []
    yield from reset_now(d, workflow_id, request, now, written)
    yield events(written)
    return ResetOutcome.RESET


def reset_of(stored: str) -> ResetRequest:
    """A reset request as :func:`reset` stored it."""
    data = orjson.loads(stored)
    data["resend"] = tuple((name, payload) for name, payload in data["resend"])
    return ResetRequest(**data)


def reset_now(
    d: Dialect, workflow_id: str, request: ResetRequest, now: float, written: list[EventRow]
) -> Rule[None]:
    """Record WORKFLOW_RESET after the history (``request.last_seq``; its event is added to
    ``written``), make the workflow RUNNING from ``request.to_step`` with ``request.state``,
    ready at once under a new lease epoch, cancel its running "cancel" children (the discarded
    steps started them), drop the ends of children it no longer awaits and buffer the
    discarded steps' signals again."""
    payload: dict[str, Any] = {"to_step": request.to_step, "index": request.index}
    if request.reason is not None:
        payload["reason"] = request.reason
    seq = request.last_seq + 1
    written.extend(event_rows(workflow_id, [Event(seq, EventType.WORKFLOW_RESET, payload, now)]))
    yield run(
        "UPDATE workflows SET status = 'RUNNING', state = ?, result = NULL, error = NULL, "
        "current_step = ?, updated_at = ?, last_seq = ?, ready_at = ?, lease_owner = NULL, "
        "lease_epoch = lease_epoch + 1, cancel_requested = NULL, reset_requested = NULL "
        "WHERE id = ?",
        dump(request.state),
        request.to_step,
        now,
        seq,
        now,
        workflow_id,
    )
    yield from parent_close(d, workflow_id, now, written)
    yield from task_rules.drop(d, workflow_id)  # the steps that awaited them are discarded
    # The kept steps' activities completed and the discarded ones' will not resume: no
    # heartbeat of the workflow is of use (tasks first: see commit_batch).
    yield run("DELETE FROM activity_heartbeats WHERE workflow_id = ?", workflow_id)
    yield run("DELETE FROM signals WHERE workflow_id = ? AND name = ?", workflow_id, CHILD_OUTCOME)
    yield from rebuffer(workflow_id, [(n, dump(p)) for n, p in request.resend], now)


def migrate(d: Dialect) -> Rule[list[str]]:
    if d.migration_lock:
        yield run(d.migration_lock)
    yield run(
        "CREATE TABLE IF NOT EXISTS loom_migrations (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    done = {r["version"] for r in (yield rows("SELECT version FROM loom_migrations"))}
    applied = []
    for version, name, sql in migrations(d.name):
        if version in done:
            continue
        for statement in split_sql(sql):
            yield run(statement)
        yield run("INSERT INTO loom_migrations VALUES (?, ?, ?)", version, name, time.time())
        applied.append(name)
    return applied


def stats(d: Dialect, now: float) -> Rule[StoreStats]:
    by_status = yield rows("SELECT status, COUNT(*) AS n FROM workflows GROUP BY status")
    # The number of events is the sum of every workflow's last sequence number: no scan of the
    # (much larger) events table.
    per_queue = yield rows(
        "SELECT queue, COUNT(CASE WHEN ready_at <= ? AND lease_owner IS NULL THEN 1 END) AS ready, "
        "MIN(CASE WHEN ready_at <= ? AND lease_owner IS NULL THEN ready_at END) AS oldest, "
        "COUNT(CASE WHEN lease_owner IS NOT NULL AND ready_at > ? THEN 1 END) AS leased, "
        "COUNT(CASE WHEN lease_owner IS NULL AND ready_at > ? THEN 1 END) AS sleeping, "
        "COUNT(CASE WHEN status = 'RUNNING' AND ready_at IS NULL THEN 1 END) AS waiting, "
        "COALESCE(SUM(last_seq), 0) AS events FROM workflows GROUP BY queue ORDER BY queue",
        now,
        now,
        now,
        now,
    )
    by_queue = {
        str(r["queue"]): QueueTasks(
            ready=int(r["ready"]),
            leased=int(r["leased"]),
            sleeping=int(r["sleeping"]),
            waiting=int(r["waiting"]),
            oldest_ready_age=None if r["oldest"] is None else max(0.0, now - r["oldest"]),
        )
        for r in per_queue
    }
    ages = [q.oldest_ready_age for q in by_queue.values() if q.oldest_ready_age is not None]
    [signals] = yield rows("SELECT COUNT(*) AS n FROM signals")
    ended = minute_buckets(
        (
            yield rows(
                f"SELECT status, {d.minutes_ago} AS minute, COUNT(*) AS n FROM workflows "
                "WHERE updated_at > ? AND status IN ('COMPLETED', 'FAILED') GROUP BY 1, 2",
                now,
                now - 60 * STATS_MINUTES,
            )
        )
    )
    per_minute = ended[WorkflowStatus.COMPLETED]
    return StoreStats(
        by_status={str(r["status"]): int(r["n"]) for r in by_status},
        ready=sum(q.ready for q in by_queue.values()),
        leased=sum(q.leased for q in by_queue.values()),
        sleeping=sum(q.sleeping for q in by_queue.values()),
        waiting=sum(q.waiting for q in by_queue.values()),
        oldest_ready_age=max(ages) if ages else None,
        events=sum(int(r["events"]) for r in per_queue),
        signals_pending=int(signals["n"]),
        completed_last_minute=per_minute[0],
        completed_per_minute=per_minute,
        failed_per_minute=ended[WorkflowStatus.FAILED],
        by_queue=by_queue,
    )
