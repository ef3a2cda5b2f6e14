"""The PostgreSQL store: the same contract and the same semantics as the SQLite one, for many
workers on many machines.

A bounded asyncpg pool serves every operation. Timestamps are epoch seconds (DOUBLE PRECISION)
and payloads JSON text, as in SQLite, so both backends store and return the same values.
Workers claim with ``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on each other
nor get the same workflow. Commits that arrive while a commit transaction is in flight are
queued and written together in the next one (group commit); that transaction first locks the
batch's workflow rows in id order, so two batches can never deadlock. Work that becomes ready
is announced with ``NOTIFY`` so listening workers wake at once (``pg_wakeups``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import orjson

from loom.core.history import Event, EventType, decided_before_cancel
from loom.errors import (
    ConfigurationError,
    StoreError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from loom.status import WorkflowStatus
from loom.store import pg_transfer
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
    EVENT_TYPES,
    RECORD_COLUMNS,
    STATS_MINUTES,
    dump,
    migrations,
    minute_buckets,
    record,
    split_sql,
    state_after,
)
from loom.store.pg_transfer import EventRow, event_rows, insert_events
from loom.store.pg_wakeups import CHANGES, WORK, Wakeups

_MIGRATION_LOCK = 0x6C6F6F6D  # pg_advisory_xact_lock key that serializes concurrent migrations
_OPTIONS = {"pool_min", "pool_max", "connect_timeout"}


class _Rejected(StoreError):
    """PostgreSQL reported an error: the transaction was rolled back and wrote nothing."""


@dataclass(slots=True)
class _Row:
    """A locked workflow row as a commit batch sees it, kept current as the batch applies."""

    epoch: int
    status: str
    cancel_requested: str | None
    last_seq: int


@dataclass(slots=True)
class _Pending:
    commit: Commit
    now: float
    events: list[EventRow]
    state: str
    result: str | None
    error: str | None
    future: asyncio.Future[CommitOutcome]


class PostgresStore(Store):
    """``postgresql://user:password@host:port/db``; options ``pool_min`` (1), ``pool_max`` (10),
    ``connect_timeout`` (10 s); any other query parameter goes to asyncpg (``sslmode``, ...).

    Parks whose ``ready_at`` falls within ``notify_horizon`` seconds are announced on the
    ``loom_work`` channel; later ones are found by an idle worker's ``next_due``.
    """

    dialect = "postgres"

    notify_horizon = 60.0

    def __init__(self, url: str, *, create: bool = True) -> None:
        parts = urlsplit(url)
        options: dict[str, str] = {}
        passed: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query):
            if key in _OPTIONS:
                options[key] = value
            else:
                passed.append((key, value))
        try:
            self.pool_min = int(options.get("pool_min", 1))
            self.pool_max = int(options.get("pool_max", 10))
            self.connect_timeout = float(options.get("connect_timeout", 10))
        except ValueError as exc:
            raise ConfigurationError(f"bad PostgreSQL URL option in {url!r}: {exc}") from exc
        if not 0 <= self.pool_min <= self.pool_max or self.pool_max < 1:
            raise ConfigurationError(
                "PostgreSQL URL needs 0 <= pool_min <= pool_max, pool_max >= 1"
            )
        if not parts.path.strip("/"):
            raise ConfigurationError(f"bad PostgreSQL URL {url!r}: no database name")
        self.url = url
        self.create = create  # PostgreSQL databases are created by their administrator
        self._dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(passed)))
        host = parts.hostname or "localhost"
        self._where = f"{host}:{parts.port or 5432}/{parts.path.strip('/')}"  # no password
        self._pool: Any = None
        self._queue: list[_Pending] = []
        self._flushing: asyncio.Task[None] | None = None
        self._wakeups: Wakeups | None = None

    # -- plumbing ---------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.connect_timeout,
            )
        except asyncpg.InvalidCatalogNameError as exc:
            raise StoreError(
                f"no PostgreSQL database at {self._where}: create it (CREATE DATABASE), "
                "then `loom init`"
            ) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise StoreError(f"cannot connect to PostgreSQL at {self._where}: {exc}") from exc
        self._wakeups = Wakeups(self._dsn, self._where, self.connect_timeout, self._transaction)

    async def close(self) -> None:
        if self._pool is None:
            return
        while self._flushing is not None:  # commits already queued are written first
            await self._flushing
        wakeups, self._wakeups = self._wakeups, None
        if wakeups is not None:
            await wakeups.finish_announcing()
        pool, self._pool = self._pool, None
        if wakeups is not None:
            await wakeups.close()
        try:
            await asyncio.wait_for(pool.close(), timeout=10)
        except TimeoutError:
            pool.terminate()

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        pool = self._pool
        if pool is None:
            raise StoreError("the database is closed; use `async with loom.Database(...)`")
        try:
            async with pool.acquire() as conn:
                try:
                    yield conn
                except asyncpg.InternalClientError:
                    # A connection left half-way through a protocol exchange (the server went
                    # away mid-operation): never hand it out again.
                    conn.terminate()
                    raise
        except asyncpg.PostgresError as exc:
            raise _Rejected(f"PostgreSQL at {self._where} refused an operation: {exc}") from exc
        except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
            raise StoreError(f"lost the PostgreSQL connection to {self._where}: {exc}") from exc

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._connection() as conn:
            return list(await conn.fetch(sql, *args))

    # -- wake-ups -------------------------------------------------------------------------
    async def listen(self, callback: Callable[[], None], topic: str = "work") -> None:
        """Call ``callback`` (on the event loop) whenever any process announces ready work
        (``topic="work"``) or a change to some workflow (``"changes"``): see ``pg_wakeups``."""
        if self._pool is None or self._wakeups is None:
            raise StoreError("the database is closed; use `async with loom.Database(...)`")
        await self._wakeups.listen(callback, topic)

    async def unlisten(self, callback: Callable[[], None], topic: str = "work") -> None:
        if self._wakeups is not None:
            await self._wakeups.unlisten(callback, topic)

    def _announce(self, *channels: str) -> None:
        if self._wakeups is not None:
            self._wakeups.announce(*channels)

    # -- schema ---------------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        async with self._transaction() as conn:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS loom_migrations (version INTEGER PRIMARY KEY, "
                "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
            )
            done = {row[0] for row in await conn.fetch("SELECT version FROM loom_migrations")}
            applied = []
            for version, name, sql in migrations("postgres"):
                if version in done:
                    continue
                for statement in split_sql(sql):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO loom_migrations VALUES ($1, $2, "
                    "extract(epoch FROM clock_timestamp()))",
                    version,
                    name,
                )
                applied.append(name)
            return applied

    async def schema_version(self) -> int:
        async with self._connection() as conn:
            if await conn.fetchval("SELECT to_regclass('loom_migrations')") is None:
                return 0
            return int(await conn.fetchval("SELECT MAX(version) FROM loom_migrations") or 0)

    # -- workflows --------------------------------------------------------------------------
    async def create_workflow(self, new: NewWorkflow, first: Event) -> WorkflowRecord | None:
        # One statement, so one round trip and an implicit transaction: the row and its first
        # event are written together, or neither when the id is taken.
        created = await self._fetch(
            "WITH w AS (INSERT INTO workflows (id, name, version, status, input, state, "
            "created_at, updated_at, last_seq, ready_at) VALUES ($1, $2, $3, 'RUNNING', $4, $5, "
            "$6, $6, $7, $6) ON CONFLICT (id) DO NOTHING RETURNING id) "
            "INSERT INTO events (workflow_id, seq, type, payload, created_at) "
            "SELECT id, $7, $8, $9, $10 FROM w RETURNING workflow_id",
            new.workflow_id,
            new.name,
            new.version,
            dump(new.input),
            dump(new.state),
            new.now,
            first.seq,
            first.type.value,
            dump(first.payload),
            first.timestamp,
        )
        if created:
            self._announce()
            return None
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM workflows WHERE id = $1", new.workflow_id
        )
        if not rows:
            raise StoreError(f"workflow {new.workflow_id!r} was neither created nor found")
        return record(rows[0])

    async def claim(
        self, owner: str, names: list[str], limit: int, lease_seconds: float, now: float
    ) -> list[Claim]:
        if not names or limit <= 0:
            return []
        # A workflow that has not run yet comes with its one event, sparing a history read.
        rows = await self._fetch(
            "WITH claimed AS (UPDATE workflows SET lease_owner = $1, "
            "lease_epoch = lease_epoch + 1, ready_at = $2 WHERE id IN (SELECT id FROM workflows "
            "WHERE ready_at <= $3 AND name = ANY($4::text[]) ORDER BY ready_at LIMIT $5 "
            "FOR UPDATE SKIP LOCKED) RETURNING id, name, lease_epoch, last_seq) "
            "SELECT c.id, c.name, c.lease_epoch, c.last_seq, e.type, e.payload, e.created_at "
            "FROM claimed c LEFT JOIN events e ON c.last_seq = 1 AND e.workflow_id = c.id "
            "AND e.seq = 1",
            owner,
            now + lease_seconds,
            now,
            names,
            limit,
        )
        return [
            Claim(
                r[0],
                r[1],
                r[2],
                r[3],
                () if r[4] is None else (Event(1, EVENT_TYPES[r[4]], orjson.loads(r[5]), r[6]),),
            )
            for r in rows
        ]

    async def load_history(self, workflow_id: str, after_seq: int = 0) -> list[Event]:
        rows = await self._fetch(
            "SELECT seq, type, payload, created_at FROM events WHERE workflow_id = $1 "
            "AND seq > $2 ORDER BY seq",
            workflow_id,
            after_seq,
        )
        return [Event(r[0], EVENT_TYPES[r[1]], orjson.loads(r[2]), r[3]) for r in rows]

    # -- group commit ---------------------------------------------------------------------
    async def commit(self, commit: Commit, now: float) -> CommitOutcome:
        loop = asyncio.get_running_loop()
        pending = _Pending(
            commit,
            now,
            event_rows(commit.workflow_id, commit.events),
            dump(commit.state),
            None if commit.result is None else dump(commit.result),
            None if commit.error is None else dump(commit.error),
            loop.create_future(),
        )
        self._queue.append(pending)
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return await pending.future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes = await self._commit_batch(batch)
                except _Rejected as exc:
                    if len(batch) == 1:
                        self._settle(batch, exc)
                        continue
                    # The whole batch was rolled back: write each alone, so only the commit
                    # at fault gets the error.
                    for pending in batch:
                        try:
                            self._settle([pending], await self._commit_batch([pending]))
                        except Exception as single:
                            self._settle([pending], single)
                    continue
                except BaseException as exc:
                    self._settle(batch, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                self._settle(batch, outcomes)
        finally:
            self._flushing = None

    @staticmethod
    def _settle(batch: list[_Pending], outcome: list[CommitOutcome] | BaseException) -> None:
        for i, pending in enumerate(batch):
            if pending.future.done():
                continue
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome[i])

    async def _commit_batch(self, batch: list[_Pending]) -> list[CommitOutcome]:
        ids = sorted({p.commit.workflow_id for p in batch})
        async with self._transaction() as conn:
            locked = await conn.fetch(
                "SELECT id, lease_epoch, status, cancel_requested, last_seq FROM workflows "
                "WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                ids,
            )
            rows = {r[0]: _Row(r[1], r[2], r[3], r[4]) for r in locked}
            events: list[EventRow] = []
            outcomes, wake = [], False
            for pending in batch:
                outcome, ready = await self._commit_one(conn, pending, rows, events)
                outcomes.append(outcome)
                wake |= ready
            await insert_events(conn, events)
        if wake:
            self._announce(WORK, CHANGES)
        else:
            self._announce(CHANGES)
        return outcomes

    async def _commit_one(
        self, conn: Any, p: _Pending, rows: dict[str, _Row], events: list[EventRow]
    ) -> tuple[CommitOutcome, bool]:
        c, now = p.commit, p.now
        row = rows.get(c.workflow_id)
        if row is None or row.epoch != c.lease_epoch or row.status != WorkflowStatus.RUNNING:
            return CommitOutcome.FENCED, False
        if row.cancel_requested is not None:
            reason = orjson.loads(row.cancel_requested)
            decided = decided_before_cancel(c.events, row.last_seq)
            await self._cancel_now(conn, c.workflow_id, reason, row.last_seq, now, events, decided)
            row.status, row.epoch, row.cancel_requested = (
                WorkflowStatus.CANCELED,
                row.epoch + 1,
                None,
            )
            row.last_seq += len(decided) + 1
            return CommitOutcome.CANCELED, False
        new_last = row.last_seq
        if c.events:
            if c.events[0].seq != row.last_seq + 1:
                return CommitOutcome.FENCED, False
            events.extend(p.events)
            new_last = c.events[-1].seq
        if c.consumed_signals:
            await conn.execute(
                "DELETE FROM signals WHERE id = ANY($1::bigint[])", list(c.consumed_signals)
            )
        release = True
        if c.status is not WorkflowStatus.RUNNING:
            ready_at = None
            if c.status is WorkflowStatus.COMPLETED:  # a FAILED one keeps them for a retry
                await conn.execute("DELETE FROM signals WHERE workflow_id = $1", c.workflow_id)
        elif c.release:
            ready_at = c.ready_at
            if c.wait_signals and await conn.fetchval(
                "SELECT 1 FROM signals WHERE workflow_id = $1 AND name = ANY($2::text[]) LIMIT 1",
                c.workflow_id,
                list(c.wait_signals),
            ):
                ready_at = now
        else:
            ready_at, release = c.lease_until, False
        await conn.execute(
            "UPDATE workflows SET status = $1, state = $2, result = $3, error = $4, "
            "current_step = $5, updated_at = $6, last_seq = $7, ready_at = $8, "
            "lease_owner = CASE WHEN $9::boolean THEN NULL ELSE lease_owner END WHERE id = $10",
            c.status.value,
            p.state,
            p.result,
            p.error,
            c.current_step,
            now,
            new_last,
            ready_at,
            release,
            c.workflow_id,
        )
        row.status, row.last_seq = c.status.value, new_last
        wake = release and ready_at is not None and ready_at <= now + self.notify_horizon
        return CommitOutcome.OK, wake

    @staticmethod
    async def _cancel_now(
        conn: Any,
        workflow_id: str,
        reason: Any,
        last_seq: int,
        now: float,
        events: list[EventRow],
        decided: Sequence[Event] = (),
    ) -> None:
        """End the workflow as CANCELED, after ``decided`` (see ``decided_before_cancel``)."""
        state = state_after(
            await conn.fetchval("SELECT state FROM workflows WHERE id = $1", workflow_id), decided
        )
        seq = last_seq + len(decided) + 1
        cancel = Event(seq, EventType.WORKFLOW_CANCELED, {"reason": reason}, now)
        events.extend(event_rows(workflow_id, [*decided, cancel]))
        await conn.execute(
            "UPDATE workflows SET status = 'CANCELED', ready_at = NULL, lease_owner = NULL, "
            "lease_epoch = lease_epoch + 1, cancel_requested = NULL, last_seq = $1, "
            "updated_at = $2, error = $3, state = $4 WHERE id = $5",
            seq,
            now,
            dump({"type": "Canceled", "message": reason}),
            state,
            workflow_id,
        )
        await conn.execute("DELETE FROM signals WHERE workflow_id = $1", workflow_id)

    # -- leases -----------------------------------------------------------------------------
    # Rows are locked in id order, like a commit batch, so the two never deadlock.
    _HELD = (
        "id IN (SELECT id FROM workflows WHERE id = ANY($3::text[]) AND lease_owner = $2 "
        "AND status = 'RUNNING' ORDER BY id FOR UPDATE)"
    )

    async def renew(
        self, owner: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        if not workflow_ids:
            return set(), set()
        rows = await self._fetch(
            f"UPDATE workflows SET ready_at = $1 WHERE {self._HELD} "
            "RETURNING id, cancel_requested IS NOT NULL",
            lease_until,
            owner,
            workflow_ids,
        )
        held = {r[0] for r in rows}
        return set(workflow_ids) - held, {r[0] for r in rows if r[1]}

    async def release(self, owner: str, workflow_ids: list[str], now: float) -> None:
        if not workflow_ids:
            return
        async with self._transaction() as conn:
            released = await conn.fetch(
                f"UPDATE workflows SET lease_owner = NULL, ready_at = $1 WHERE {self._HELD} "
                "RETURNING id",
                now,
                owner,
                workflow_ids,
            )
            if released:
                await conn.execute(f"NOTIFY {WORK}")

    # -- client reads and requests --------------------------------------------------------
    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM workflows WHERE id = $1", workflow_id
        )
        return record(rows[0]) if rows else None

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
            params.append(WorkflowStatus(status).value)
            where.append(f"status = ${len(params)}")
        if name is not None:
            params.append(name)
            where.append(f"name = ${len(params)}")
        if id_contains:
            params.append(id_contains.casefold())
            where.append(f"strpos(lower(id), ${len(params)}) > 0")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        n = len(params)
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM workflows {clause} "
            f"ORDER BY created_at DESC, id LIMIT ${n + 1} OFFSET ${n + 2}",
            *params,
            None if limit < 0 else limit,  # a negative limit means none, as in SQLite
            max(offset, 0),
        )
        return [record(r) for r in rows]

    async def changed_since(
        self, after: float, limit: int, after_id: str = ""
    ) -> list[WorkflowRecord]:
        rows = await self._fetch(
            f"SELECT {RECORD_COLUMNS} FROM workflows WHERE (updated_at, id) > ($1, $2) "
            "ORDER BY updated_at, id LIMIT $3",
            after,
            after_id,
            limit,
        )
        return [record(r) for r in rows]

    async def read_signals(self, workflow_id: str) -> list[Signal]:
        rows = await self._fetch(
            "SELECT id, name, payload, created_at FROM signals WHERE workflow_id = $1 ORDER BY id",
            workflow_id,
        )
        return [Signal(r[0], r[1], orjson.loads(r[2]), float(r[3])) for r in rows]

    @staticmethod
    async def _running_row(conn: Any, workflow_id: str, action: str) -> Any:
        row = await conn.fetchrow(
            "SELECT status, lease_owner, ready_at, last_seq FROM workflows WHERE id = $1 "
            "FOR UPDATE",
            workflow_id,
        )
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        if row[0] != WorkflowStatus.RUNNING:
            raise WorkflowNotRunningError(workflow_id, row[0], action)
        return row

    async def send_signal(self, workflow_id: str, name: str, payload: Any, now: float) -> None:
        data = dump(payload)
        wake = False
        async with self._transaction() as conn:
            _, lease_owner, ready_at, _ = await self._running_row(conn, workflow_id, "signal")
            await conn.execute(
                "INSERT INTO signals (workflow_id, name, payload, created_at) "
                "VALUES ($1, $2, $3, $4)",
                workflow_id,
                name,
                data,
                now,
            )
            if lease_owner is None and (ready_at is None or ready_at > now):
                await conn.execute(
                    "UPDATE workflows SET ready_at = $1 WHERE id = $2", now, workflow_id
                )
                wake = True
        if wake:
            self._announce(WORK, CHANGES)
        else:
            self._announce(CHANGES)

    async def cancel(self, workflow_id: str, reason: str | None, now: float) -> CancelOutcome:
        outcome = await self._cancel(workflow_id, reason, now)
        self._announce(CHANGES)
        return outcome

    async def _cancel(self, workflow_id: str, reason: str | None, now: float) -> CancelOutcome:
        async with self._transaction() as conn:
            _, lease_owner, ready_at, last_seq = await self._running_row(
                conn, workflow_id, "cancel"
            )
            if lease_owner is not None and ready_at is not None and ready_at > now:
                await conn.execute(
                    "UPDATE workflows SET cancel_requested = $1 WHERE id = $2",
                    dump(reason),
                    workflow_id,
                )
                return CancelOutcome.REQUESTED
            events: list[EventRow] = []
            await self._cancel_now(conn, workflow_id, reason, last_seq, now, events)
            await insert_events(conn, events)
            return CancelOutcome.CANCELED

    async def retry(
        self, workflow_id: str, now: float, resend: Sequence[tuple[str, Any]] = ()
    ) -> None:
        resent = [(name, dump(payload)) for name, payload in resend]
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "SELECT status, last_seq, current_step FROM workflows WHERE id = $1 FOR UPDATE",
                workflow_id,
            )
            if row is None:
                raise WorkflowNotFoundError(workflow_id)
            if row[0] != WorkflowStatus.FAILED:
                raise WorkflowNotRunningError(
                    workflow_id, row[0], "retry", "only FAILED workflows can be retried"
                )
            seq = row[1] + 1
            retried = Event(seq, EventType.WORKFLOW_RETRIED, {"step": row[2]}, now)
            await insert_events(conn, event_rows(workflow_id, [retried]))
            await conn.execute(
                "UPDATE workflows SET status = 'RUNNING', error = NULL, ready_at = $1, "
                "lease_owner = NULL, lease_epoch = lease_epoch + 1, last_seq = $2, "
                "updated_at = $1 WHERE id = $3",
                now,
                seq,
                workflow_id,
            )
            # Signals the failed attempt consumed are delivered again, before those still
            # buffered, keeping the order in which they were sent.
            buffered = await conn.fetch(
                "DELETE FROM signals WHERE workflow_id = $1 RETURNING id, name, payload",
                workflow_id,
            )
            again = [*resent, *((r[1], r[2]) for r in sorted(buffered, key=lambda r: r[0]))]
            if again:
                await conn.executemany(
                    "INSERT INTO signals (workflow_id, name, payload, created_at) "
                    "VALUES ($1, $2, $3, $4)",
                    [(workflow_id, name, data, now) for name, data in again],
                )
        self._announce(WORK, CHANGES)

    async def next_due(self, names: list[str]) -> float | None:
        if not names:
            return None
        rows = await self._fetch(
            "SELECT MIN(ready_at) FROM workflows WHERE ready_at IS NOT NULL "
            "AND name = ANY($1::text[])",
            names,
        )
        return rows[0][0] if rows else None

    async def stats(self, now: float) -> StoreStats:
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            by_status = await conn.fetch("SELECT status, COUNT(*) FROM workflows GROUP BY status")
            ready, oldest, leased, sleeping, waiting = await conn.fetchrow(
                "SELECT COUNT(*) FILTER (WHERE ready_at <= $1 AND lease_owner IS NULL), "
                "MIN(ready_at) FILTER (WHERE ready_at <= $1 AND lease_owner IS NULL), "
                "COUNT(*) FILTER (WHERE lease_owner IS NOT NULL AND ready_at > $1), "
                "COUNT(*) FILTER (WHERE lease_owner IS NULL AND ready_at > $1), "
                "COUNT(*) FILTER (WHERE status = 'RUNNING' AND ready_at IS NULL) FROM workflows",
                now,
            )
            events = await conn.fetchval("SELECT COUNT(*) FROM events")
            signals = await conn.fetchval("SELECT COUNT(*) FROM signals")
            ended = minute_buckets(
                await conn.fetch(
                    "SELECT status, trunc(($1 - updated_at) / 60)::int, COUNT(*) FROM workflows "
                    "WHERE updated_at > $2 AND status IN ('COMPLETED', 'FAILED') GROUP BY 1, 2",
                    now,
                    now - 60 * STATS_MINUTES,
                )
            )
            per_minute = ended[WorkflowStatus.COMPLETED]
        return StoreStats(
            by_status={str(k): int(v) for k, v in by_status},
            ready=int(ready),
            leased=int(leased),
            sleeping=int(sleeping),
            waiting=int(waiting),
            oldest_ready_age=None if oldest is None else max(0.0, now - oldest),
            events=int(events),
            signals_pending=int(signals),
            completed_last_minute=per_minute[0],
            completed_per_minute=per_minute,
            failed_per_minute=ended[WorkflowStatus.FAILED],
        )

    # -- copying between databases (``loom migrate``): see ``pg_transfer`` ------------------
    async def export_rows(self, after_id: str | None, limit: int) -> list[WorkflowDump]:
        if limit <= 0:
            return []
        async with (
            self._connection() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            return await pg_transfer.export_page(conn, after_id, limit)

    async def import_rows(self, dumps: Sequence[WorkflowDump]) -> int:
        if not dumps:
            return 0
        async with self._transaction() as conn:
            return await pg_transfer.import_batch(conn, dumps, self._where)
