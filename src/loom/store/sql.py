"""The store's rules, decided once for every SQL database.

Each operation is a *rule*: a generator that yields the SQL statements it needs (:class:`Op`,
written with ``?`` placeholders) and receives each statement's rows back, deciding from them what
to write next. A rule never touches a connection, so the same rule runs on SQLite's dedicated
thread with blocking calls and on PostgreSQL's pool with ``await``: each backend only drives
rules (:meth:`SqlStore._transact`, :meth:`SqlStore._read`) and spells what differs between the
dialects (:class:`Dialect`: list parameters, row locks, a few functions).

Where each rule lives: fencing, cancel-on-commit and the park's ``ready_at`` in
:func:`commit_batch`; ending a workflow as CANCELED in :func:`cancel_now` (used by a commit, a
cancel and a claim); a claim's lease and its finalising of a requested cancel in
:func:`claim_statement` and :func:`cancel_claimed`; signal delivery in
:meth:`SqlStore.send_signal`; copying in :func:`read_dumps` and :func:`import_batch`.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from loom.core.history import Event, EventType, decided_before_cancel
from loom.errors import (
    DatabaseCorruptError,
    StoreError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from loom.status import WorkflowStatus
from loom.store.base import (
    CancelOutcome,
    Claim,
    Commit,
    CommitOutcome,
    NewWorkflow,
    Signal,
    Store,
    StoreStats,
    WorkflowDump,
    WorkflowRecord,
)
from loom.store.common import (
    COPY_COLUMNS,
    EVENT_COLUMNS,
    STATS_MINUTES,
    WORKFLOW_COLUMNS,
    Row,
    dump,
    event,
    migrations,
    minute_buckets,
    record,
    split_sql,
    state_after,
    workflow_dump,
)

T = TypeVar("T")

EventRow = tuple[str, int, str, str, float]
"""One ``events`` row to insert: (workflow_id, seq, type, payload JSON, created_at)."""


Op = tuple[str, str, Sequence[Any]]
"""One statement of a rule: (kind, SQL, arguments). Kind ``rows`` answers the rows read,
``run`` nothing, ``many`` runs the statement once per tuple of the arguments, ``events``
inserts the arguments, :data:`EventRow` tuples (the dialect picks the fastest bulk insert).
Plain tuples: a commit yields a few of them, on the hot path."""

Rule = Generator[Op, Any, T]


def rows(sql: str, *args: Any) -> Op:
    return ("rows", sql, args)


def run(sql: str, *args: Any) -> Op:
    return ("run", sql, args)


def many(sql: str, args: Sequence[Any]) -> Op:
    return ("many", sql, args)


def events(written: Sequence[EventRow]) -> Op:
    return ("events", "", written)


def one(op: Op) -> Rule[Any]:
    """A rule of one statement."""
    return (yield op)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells what the rules need."""

    name: str
    """The migrations folder: ``sqlite``, ``postgres``."""
    lock: str
    """Appended to a SELECT to lock the rows it reads until the transaction ends."""
    skip_locked: str
    """Appended to a claim's SELECT so concurrent claimers pass each other's rows by."""
    list_param: bool
    """A list is one array parameter (``= ANY(?)``), else one parameter a value (``IN``)."""
    contains: str
    """``id`` contains the (lower-case) parameter, ignoring case."""
    minutes_ago: str
    """Whole minutes from ``updated_at`` to the parameter."""
    no_limit: Any
    """The LIMIT parameter meaning none."""
    migration_lock: str | None = None
    """A statement that serialises concurrent migrations (beyond the write transaction)."""

    def among(
        self, column: str, values: Sequence[Any], kind: str = "text"
    ) -> tuple[str, tuple[Any, ...]]:
        """``column`` is one of ``values``: the condition and its parameters."""
        if self.list_param:
            return f"{column} = ANY(?::{kind}[])", (list(values),)
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)


# -- commits --------------------------------------------------------------------------------
@dataclass(slots=True)
class Fence:
    """A locked workflow row as a commit batch sees it, kept current as the batch applies."""

    epoch: int
    status: str
    cancel_requested: str | None
    last_seq: int


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


def event_rows(workflow_id: str, events: Sequence[Event]) -> list[EventRow]:
    return [(workflow_id, e.seq, e.type.value, dump(e.payload), e.timestamp) for e in events]


def lock_fences(d: Dialect, ids: Sequence[str]) -> Op:
    """Lock the rows of ``ids`` in id order (so two batches never deadlock), reading their
    :func:`fences`."""
    where, args = d.among("id", sorted(set(ids)) if len(ids) > 1 else ids)
    return rows(
        "SELECT id, lease_epoch, status, cancel_requested, last_seq FROM workflows "
        f"WHERE {where} ORDER BY id{d.lock}",
        *args,
    )


def fences(locked: Sequence[Row]) -> dict[str, Fence]:
    """The rows read by :func:`lock_fences`, by id."""
    return {
        r["id"]: Fence(r["lease_epoch"], r["status"], r["cancel_requested"], r["last_seq"])
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
        yield from cancel_now(c.workflow_id, reason, fence.last_seq, now, written, decided)
        fence.status, fence.epoch, fence.cancel_requested = "CANCELED", fence.epoch + 1, None
        return CommitOutcome.CANCELED, None
    new_last = fence.last_seq
    if c.events:
        if c.events[0].seq != fence.last_seq + 1:
            return CommitOutcome.FENCED, None
        written.extend(p.events)
        new_last = c.events[-1].seq
    if c.consumed_signals:
        where, args = d.among("id", c.consumed_signals, "bigint")
        yield run(f"DELETE FROM signals WHERE {where}", *args)
    release = True
    if c.status is not WorkflowStatus.RUNNING:
        ready_at = None
        if c.status is WorkflowStatus.COMPLETED:  # a FAILED one keeps them for a retry
            yield run("DELETE FROM signals WHERE workflow_id = ?", c.workflow_id)
    elif c.release:
        ready_at = c.ready_at
        if c.wait_signals:  # one it waits for is buffered already: ready at once
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
    return CommitOutcome.OK, ready_at if release else None


_UPDATE = (
    "UPDATE workflows SET status = ?, state = ?, result = ?, error = ?, current_step = ?, "
    "updated_at = ?, last_seq = ?, ready_at = ?, lease_owner = {} WHERE id = ?"
)
_RELEASE, _KEEP = _UPDATE.format("NULL"), _UPDATE.format("lease_owner")


def cancel_now(
    workflow_id: str,
    reason: Any,
    last_seq: int,
    now: float,
    written: list[EventRow],
    decided: Sequence[Event] = (),
) -> Rule[None]:
    """End the workflow as CANCELED after ``decided`` (see ``decided_before_cancel``); its
    events are added to ``written``, for the caller to insert."""
    found = yield rows("SELECT state FROM workflows WHERE id = ?", workflow_id)
    state = state_after(found[0]["state"], decided)
    seq = last_seq + len(decided) + 1
    canceled = Event(seq, EventType.WORKFLOW_CANCELED, {"reason": reason}, now)
    written.extend(event_rows(workflow_id, [*decided, canceled]))
    yield run(
        "UPDATE workflows SET status = 'CANCELED', ready_at = NULL, lease_owner = NULL, "
        "lease_epoch = lease_epoch + 1, cancel_requested = NULL, last_seq = ?, "
        "updated_at = ?, error = ?, state = ? WHERE id = ?",
        seq,
        now,
        dump({"type": "Canceled", "message": reason}),
        state,
        workflow_id,
    )
    yield run("DELETE FROM signals WHERE workflow_id = ?", workflow_id)


# -- starts ---------------------------------------------------------------------------------
NEW_COLUMNS = "id, name, version, status, input, state, created_at, updated_at, last_seq, ready_at"
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
    )


# -- claims ---------------------------------------------------------------------------------
def claim_statement(
    d: Dialect, owner: str, names: list[str], limit: int, lease_seconds: float, now: float
) -> Op:
    """Lease up to ``limit`` due workflows of ``names``, oldest due first: a new epoch each, and
    ``ready_at`` at the lease's end, so a dead worker's workflow is claimable again then."""
    where, args = d.among("name", names)
    return rows(
        "UPDATE workflows SET lease_owner = ?, lease_epoch = lease_epoch + 1, ready_at = ? "
        f"WHERE id IN (SELECT id FROM workflows WHERE ready_at <= ? AND {where} "
        f"ORDER BY ready_at LIMIT ?{d.skip_locked}) "
        "RETURNING id, name, lease_epoch, last_seq, cancel_requested",
        owner,
        now + lease_seconds,
        now,
        *args,
        limit,
    )


def cancel_claimed(d: Dialect, claimed: Sequence[Row], now: float) -> Rule[None]:
    """A claimed workflow whose cancel was requested is never run again: end it as CANCELED,
    unless the claim's lease ``claimed`` (rows of :func:`claim_statement`) moved on meanwhile."""
    fenced = fences((yield lock_fences(d, [r["id"] for r in claimed])))
    written: list[EventRow] = []
    for r in claimed:
        fence = fenced.get(r["id"])
        if (
            fence is not None
            and fence.epoch == r["lease_epoch"]
            and fence.status == WorkflowStatus.RUNNING
            and fence.cancel_requested is not None
        ):
            reason = orjson.loads(fence.cancel_requested)
            yield from cancel_now(r["id"], reason, fence.last_seq, now, written)
    if written:
        yield events(written)


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
    if row["lease_owner"] is None and (row["ready_at"] is None or row["ready_at"] > now):
        yield run("UPDATE workflows SET ready_at = ? WHERE id = ?", now, workflow_id)
        return True
    return False


def cancel(d: Dialect, workflow_id: str, reason: str | None, now: float) -> Rule[CancelOutcome]:
    """Cancel at once, unless a worker holds a live lease: then request it, for that worker's
    next write (or the next claim, should that worker die) to carry out."""
    row = yield from running_row(d, workflow_id, "cancel")
    if row["lease_owner"] is not None and row["ready_at"] is not None and row["ready_at"] > now:
        yield run(
            "UPDATE workflows SET cancel_requested = ? WHERE id = ?", dump(reason), workflow_id
        )
        return CancelOutcome.REQUESTED
    written: list[EventRow] = []
    yield from cancel_now(workflow_id, reason, row["last_seq"], now, written)
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
    # Signals the failed attempt consumed are delivered again, before those still buffered,
    # keeping the order in which they were sent.
    buffered = yield rows(
        "DELETE FROM signals WHERE workflow_id = ? RETURNING id, name, payload", workflow_id
    )
    again = [*resent, *((r["name"], r["payload"]) for r in sorted(buffered, key=lambda r: r["id"]))]
    if again:
        yield many(INSERT_SIGNAL, [(workflow_id, name, data, now) for name, data in again])


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
    [totals] = yield rows(
        "SELECT COUNT(CASE WHEN ready_at <= ? AND lease_owner IS NULL THEN 1 END) AS ready, "
        "MIN(CASE WHEN ready_at <= ? AND lease_owner IS NULL THEN ready_at END) AS oldest, "
        "COUNT(CASE WHEN lease_owner IS NOT NULL AND ready_at > ? THEN 1 END) AS leased, "
        "COUNT(CASE WHEN lease_owner IS NULL AND ready_at > ? THEN 1 END) AS sleeping, "
        "COUNT(CASE WHEN status = 'RUNNING' AND ready_at IS NULL THEN 1 END) AS waiting, "
        "COALESCE(SUM(last_seq), 0) AS events FROM workflows",
        now,
        now,
        now,
        now,
    )
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
    oldest = totals["oldest"]
    return StoreStats(
        by_status={str(r["status"]): int(r["n"]) for r in by_status},
        ready=int(totals["ready"]),
        leased=int(totals["leased"]),
        sleeping=int(totals["sleeping"]),
        waiting=int(totals["waiting"]),
        oldest_ready_age=None if oldest is None else max(0.0, now - oldest),
        events=int(totals["events"]),
        signals_pending=int(signals["n"]),
        completed_last_minute=per_minute[0],
        completed_per_minute=per_minute,
        failed_per_minute=ended[WorkflowStatus.FAILED],
    )


# -- copying between databases (``loom migrate``) --------------------------------------------
def read_dumps(d: Dialect, found: Sequence[Row]) -> Rule[list[WorkflowDump]]:
    """The dumps of the ``workflows`` rows ``found`` (:data:`WORKFLOW_COLUMNS`, in id order)."""
    if not found:
        return []
    where, args = d.among("workflow_id", [r["id"] for r in found])
    events: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            f"SELECT workflow_id, {EVENT_COLUMNS} FROM events WHERE {where} "
            "ORDER BY workflow_id, seq",
            *args,
        )
    ):
        events.setdefault(r["workflow_id"], []).append(r)
    signals: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            f"SELECT workflow_id, name, payload, created_at FROM signals WHERE {where} "
            "ORDER BY workflow_id, id",
            *args,
        )
    ):
        signals.setdefault(r["workflow_id"], []).append(r)
    return [workflow_dump(r, events.get(r["id"], []), signals.get(r["id"], [])) for r in found]


def export_page(d: Dialect, after_id: str | None, limit: int) -> Rule[list[WorkflowDump]]:
    after, args = ("", ()) if after_id is None else ("WHERE id > ? ", (after_id,))
    found = yield rows(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows {after}ORDER BY id LIMIT ?", *args, limit
    )
    return (yield from read_dumps(d, found))


def import_batch(d: Dialect, dumps: Sequence[WorkflowDump], where: str) -> Rule[list[WorkflowDump]]:
    """Insert the workflows of ``dumps`` not yet present; one present with other contents fails
    the whole batch. Returns those inserted."""
    # Lock what is there in id order, as commits do, so nothing changes meanwhile.
    ids, params = d.among("id", sorted({x.workflow_id for x in dumps}))
    present = yield rows(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE {ids} ORDER BY id{d.lock}", *params
    )
    existing = {x.workflow_id: x for x in (yield from read_dumps(d, present))}
    new: list[WorkflowDump] = []
    for x in dumps:
        there = existing.get(x.workflow_id)
        if there is None:
            new.append(x)
            existing[x.workflow_id] = x  # the same id twice in one batch: once
            continue
        differ = there.differences(x)
        if differ:
            raise StoreError(
                f"workflow {x.workflow_id!r} already exists in {where} with different "
                f"contents ({', '.join(differ)}); nothing of this batch was written"
            )
    if not new:
        return []
    marks = ", ".join("?" * len(WorkflowDump.COPIED_FIELDS))
    yield many(
        f"INSERT INTO workflows ({COPY_COLUMNS}) VALUES ({marks})",
        [x.insert_values() for x in new],
    )
    yield events([(x.workflow_id, *e) for x in new for e in x.events])
    signals = [(x.workflow_id, *s) for x in new for s in x.signals]
    if signals:  # in order: ids are handed out in the dumps' order
        yield many(INSERT_SIGNAL, signals)
    return new


# -- the store ------------------------------------------------------------------------------
class SqlStore(Store):
    """Every operation of the contract, as rules; a backend supplies the plumbing below."""

    sql: Dialect
    nul_in_ids = True
    """Whether the database can store a workflow id holding a NUL character."""

    # -- plumbing a backend provides ------------------------------------------------------
    async def _transact(self, rule: Rule[T]) -> T:
        """Run ``rule`` in one write transaction (all of it or nothing)."""
        raise NotImplementedError

    async def _read(self, rule: Rule[T], *, snapshot: bool = False) -> T:
        """Run the reads of ``rule``; with ``snapshot``, all from one consistent snapshot."""
        raise NotImplementedError

    async def _lease(self, claim: Op, now: float) -> tuple[list[Row], dict[str, Event]]:
        """Run ``claim`` (:func:`claim_statement`) and :func:`cancel_claimed` on its rows with a
        cancel requested; return the rows leased and the first event of those with no other."""
        raise NotImplementedError

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
        return await self._transact(migrate(self.sql))

    async def claim(
        self, owner: str, names: list[str], limit: int, lease_seconds: float, now: float
    ) -> list[Claim]:
        if not names or limit <= 0:
            return []
        statement = claim_statement(self.sql, owner, names, limit, lease_seconds, now)
        claimed, started = await self._lease(statement, now)
        # A workflow with a cancel requested was ended instead: it is never run again.
        return [
            Claim(
                r["id"],
                r["name"],
                r["lease_epoch"],
                r["last_seq"],
                (started[r["id"]],) if r["id"] in started else (),
            )
            for r in claimed
            if r["cancel_requested"] is None
        ]

    async def load_history(self, workflow_id: str, after_seq: int = 0) -> list[Event]:
        self._check_id(workflow_id)
        found = await self._rows(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE workflow_id = ? AND seq > ? ORDER BY seq",
            workflow_id,
            after_seq,
        )
        return [event(r) for r in found]

    async def renew(
        self, owner: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        if not workflow_ids:
            return set(), set()
        held = await self._transact(
            one(self._held("ready_at = ?", lease_until, owner, workflow_ids))
        )
        kept = {r["id"] for r in held}
        return set(workflow_ids) - kept, {r["id"] for r in held if r["cancel_requested"]}

    async def release(self, owner: str, workflow_ids: list[str], now: float) -> None:
        if not workflow_ids:
            return
        op = self._held("lease_owner = NULL, ready_at = ?", now, owner, workflow_ids)
        if await self._transact(one(op)):
            self._changed(work=True)

    def _held(self, assign: str, value: float, owner: str, workflow_ids: list[str]) -> Op:
        """Set ``assign`` on the workflows of ``workflow_ids`` still leased to ``owner``; rows
        are locked in id order, like a commit batch, so the two never deadlock."""
        where, args = self.sql.among("id", workflow_ids)
        return rows(
            f"UPDATE workflows SET {assign} WHERE id IN (SELECT id FROM workflows WHERE {where} "
            f"AND lease_owner = ? AND status = 'RUNNING' ORDER BY id{self.sql.lock}) "
            "RETURNING id, cancel_requested IS NOT NULL AS cancel_requested",
            value,
            *args,
            owner,
        )

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
    ) -> list[WorkflowRecord]:
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            where.append("status = ?")
            params.append(WorkflowStatus(status).value)
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if id_contains:
            where.append(self.sql.contains)
            params.append(id_contains.casefold())
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        found = await self._rows(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows {clause} "
            "ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            *params,
            self.sql.no_limit if limit < 0 else limit,  # a negative limit means none
            max(offset, 0),
        )
        return [record(r) for r in found]

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
        woke = await self._transact(send_signal(self.sql, workflow_id, name, dump(payload), now))
        self._changed(work=woke)

    async def cancel(self, workflow_id: str, reason: str | None, now: float) -> CancelOutcome:
        self._check_id(workflow_id)
        outcome = await self._transact(cancel(self.sql, workflow_id, reason, now))
        self._changed()
        return outcome

    async def retry(
        self, workflow_id: str, now: float, resend: Sequence[tuple[str, Any]] = ()
    ) -> None:
        self._check_id(workflow_id)
        resent = [(name, dump(payload)) for name, payload in resend]
        await self._transact(retry(self.sql, workflow_id, now, resent))
        self._changed(work=True)

    async def next_due(self, names: list[str]) -> float | None:
        if not names:
            return None
        where, args = self.sql.among("name", names)
        found = await self._rows(
            f"SELECT MIN(ready_at) AS due FROM workflows WHERE ready_at IS NOT NULL AND {where}",
            *args,
        )
        return found[0]["due"] if found else None

    async def stats(self, now: float) -> StoreStats:
        return await self._read(stats(self.sql, now), snapshot=True)

    async def export_rows(self, after_id: str | None, limit: int) -> list[WorkflowDump]:
        if limit <= 0:
            return []
        return await self._read(export_page(self.sql, after_id, limit), snapshot=True)

    async def import_rows(self, dumps: Sequence[WorkflowDump]) -> int:
        if not dumps:
            return 0
        for x in dumps:
            self._check_id(x.workflow_id)
        try:
            new = await self._transact(import_batch(self.sql, dumps, self.label))
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
