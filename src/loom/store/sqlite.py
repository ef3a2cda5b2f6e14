"""The embedded SQLite store.

One connection, driven from one dedicated thread so the event loop never blocks on disk. WAL
mode with ``synchronous=FULL`` (configurable) makes every commit durable; writes open with
``BEGIN IMMEDIATE`` and a busy timeout, so several processes can share one file safely. Commits
that arrive while a transaction is being written are queued and written together in the next
one: many workflows' progress for the price of one fsync.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from loom.core.history import Event, EventType, decided_before_cancel
from loom.errors import (
    ConfigurationError,
    StoreError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from loom.status import WorkflowStatus
from loom.store import sqlite_transfer
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

T = TypeVar("T")

SMALL_BATCH = 8
"""A batch smaller than this waits two turns of the event loop for company before it is written."""


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(
        self, url: str, path: str, *, synchronous: str = "FULL", create: bool = True
    ) -> None:
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
            raise ConfigurationError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.url = url
        self.path = path
        self.synchronous = synchronous.upper()
        self.create = create
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._queue: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]] = []
        self._flushing: asyncio.Task[None] | None = None

    # -- plumbing ---------------------------------------------------------------------------
    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loom-sqlite")
        try:
            await self._run(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> None:
        if self.path != ":memory:":
            if not self.create and not Path(self.path).is_file():
                raise StoreError(f"no database at {self.path!r}; create it with `loom init`")
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._conn = conn

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        while self._flushing is not None:
            await self._flushing
        conn, self._conn = self._conn, None
        if conn is not None:
            executor.submit(conn.close).result()
        executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("the database is closed; use `async with loom.Database(...)`")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (on the store thread)."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite could not start a write on {self.path!r}: {exc}") from exc
        try:
            result = fn(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        return self._conn.execute(sql, params).fetchall()

    # -- schema ---------------------------------------------------------------------------
    async def migrate(self) -> list[str]:
        return await self._run(self._write, self._migrate)

    def _migrate(self, conn: sqlite3.Connection) -> list[str]:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS loom_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
        )
        done = {row[0] for row in conn.execute("SELECT version FROM loom_migrations")}
        applied = []
        for version, name, sql in migrations("sqlite"):
            if version in done:
                continue
            for statement in split_sql(sql):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO loom_migrations VALUES (?, ?, strftime('%s','now'))", (version, name)
            )
            applied.append(name)
        return applied

    async def schema_version(self) -> int:
        def read() -> int:
            try:
                rows = self._read("SELECT MAX(version) FROM loom_migrations")
            except sqlite3.OperationalError:
                return 0
            return int(rows[0][0] or 0)

        return await self._run(read)

    # -- workflows --------------------------------------------------------------------------
    async def create_workflow(self, new: NewWorkflow, first: Event) -> WorkflowRecord | None:
        def write(conn: sqlite3.Connection) -> WorkflowRecord | None:
            row = conn.execute(
                f"SELECT {RECORD_COLUMNS} FROM workflows WHERE id = ?", (new.workflow_id,)
            ).fetchone()
            if row is not None:
                return record(row)
            conn.execute(
                "INSERT INTO workflows (id, name, version, status, input, state, created_at, "
                "updated_at, last_seq, ready_at) VALUES (?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?)",
                (
                    new.workflow_id,
                    new.name,
                    new.version,
                    dump(new.input),
                    dump(new.state),
                    new.now,
                    new.now,
                    first.seq,
                    new.now,
                ),
            )
            self._insert_events(conn, new.workflow_id, [first])
            return None

        return await self._batched(write)

    @staticmethod
    def _insert_events(conn: sqlite3.Connection, workflow_id: str, events: list[Event]) -> None:
        conn.executemany(
            "INSERT INTO events (workflow_id, seq, type, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(workflow_id, e.seq, e.type.value, dump(e.payload), e.timestamp) for e in events],
        )

    async def claim(
        self, owner: str, names: list[str], limit: int, lease_seconds: float, now: float
    ) -> list[Claim]:
        if not names or limit <= 0:
            return []
        marks = ",".join("?" * len(names))

        def write(conn: sqlite3.Connection) -> list[Claim]:
            rows = conn.execute(
                "UPDATE workflows SET lease_owner = ?, lease_epoch = lease_epoch + 1, "
                "ready_at = ? WHERE id IN (SELECT id FROM workflows WHERE ready_at <= ? "
                f"AND name IN ({marks}) ORDER BY ready_at LIMIT ?) "
                "RETURNING id, name, lease_epoch, last_seq",
                (owner, now + lease_seconds, now, *names, limit),
            ).fetchall()
            fresh = [r[0] for r in rows if r[3] == 1]
            started: dict[str, Event] = {}
            if fresh:
                for r in conn.execute(
                    "SELECT workflow_id, type, payload, created_at FROM events WHERE seq = 1 "
                    f"AND workflow_id IN ({','.join('?' * len(fresh))})",
                    fresh,
                ):
                    started[r[0]] = Event(1, EVENT_TYPES[r[1]], orjson.loads(r[2]), r[3])
            return [
                Claim(r[0], r[1], r[2], r[3], (started[r[0]],) if r[0] in started else ())
                for r in rows
            ]

        return await self._batched(write)

    async def load_history(self, workflow_id: str, after_seq: int = 0) -> list[Event]:
        rows = await self._run(
            self._read,
            "SELECT seq, type, payload, created_at FROM events WHERE workflow_id = ? AND seq > ? "
            "ORDER BY seq",
            (workflow_id, after_seq),
        )
        return [Event(r[0], EVENT_TYPES[r[1]], orjson.loads(r[2]), r[3]) for r in rows]

    # -- group commit ---------------------------------------------------------------------
    async def _batched(self, job: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``job`` in the next write transaction, shared with every job queued meanwhile.

        Each job runs under its own savepoint, so one job's error undoes only that job.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((job, future))
        if self._flushing is None:
            self._flushing = asyncio.get_running_loop().create_task(self._flush())
        return await future  # type: ignore[no-any-return]

    async def _flush(self) -> None:
        try:
            while self._queue:
                if len(self._queue) < SMALL_BATCH:
                    # A small batch: let the tasks that are ready run first, so what they are
                    # about to write (often the next start of a client that was waiting for
                    # the previous one) joins this transaction instead of waiting for the next.
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                batch, self._queue = self._queue, []
                try:
                    outcomes = await self._run(
                        self._write, functools.partial(self._run_jobs, jobs=[j for j, _ in batch])
                    )
                except BaseException as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if ok:
                        future.set_result(value)
                    else:
                        future.set_exception(value)
        finally:
            self._flushing = None

    @staticmethod
    def _run_jobs(
        conn: sqlite3.Connection, jobs: list[Callable[[sqlite3.Connection], Any]]
    ) -> list[tuple[bool, Any]]:
        outcomes: list[tuple[bool, Any]] = []
        for job in jobs:
            conn.execute("SAVEPOINT job")
            try:
                outcomes.append((True, job(conn)))
            except Exception as exc:
                conn.execute("ROLLBACK TO job")
                outcomes.append((False, exc))
            conn.execute("RELEASE job")
        return outcomes

    async def commit(self, commit: Commit, now: float) -> CommitOutcome:
        return await self._batched(functools.partial(self._commit_one, c=commit, now=now))

    def _commit_one(self, conn: sqlite3.Connection, c: Commit, now: float) -> CommitOutcome:
        row = conn.execute(
            "SELECT lease_epoch, status, cancel_requested, last_seq FROM workflows WHERE id = ?",
            (c.workflow_id,),
        ).fetchone()
        if row is None or row[0] != c.lease_epoch or row[1] != WorkflowStatus.RUNNING:
            return CommitOutcome.FENCED
        last_seq = row[3]
        if row[2] is not None:
            decided = decided_before_cancel(c.events, last_seq)
            self._cancel_now(conn, c.workflow_id, orjson.loads(row[2]), last_seq, now, decided)
            return CommitOutcome.CANCELED
        if not c.events:
            new_last = last_seq
        else:
            if c.events[0].seq != last_seq + 1:
                return CommitOutcome.FENCED
            self._insert_events(conn, c.workflow_id, c.events)
            new_last = c.events[-1].seq
        if c.consumed_signals:
            conn.executemany("DELETE FROM signals WHERE id = ?", [(i,) for i in c.consumed_signals])
        lease_owner_sql = "lease_owner"
        if c.status is not WorkflowStatus.RUNNING:
            ready_at = None
            lease_owner_sql = "NULL"
            if c.status is WorkflowStatus.COMPLETED:  # a FAILED one keeps them for a retry
                conn.execute("DELETE FROM signals WHERE workflow_id = ?", (c.workflow_id,))
        elif c.release:
            ready_at = c.ready_at
            lease_owner_sql = "NULL"
            if c.wait_signals:
                marks = ",".join("?" * len(c.wait_signals))
                waiting = conn.execute(
                    f"SELECT 1 FROM signals WHERE workflow_id = ? AND name IN ({marks}) LIMIT 1",
                    (c.workflow_id, *c.wait_signals),
                ).fetchone()
                if waiting is not None:
                    ready_at = now
        else:
            ready_at = c.lease_until
        conn.execute(
            f"UPDATE workflows SET status = ?, state = ?, result = ?, error = ?, "
            f"current_step = ?, updated_at = ?, last_seq = ?, ready_at = ?, "
            f"lease_owner = {lease_owner_sql} WHERE id = ?",
            (
                c.status.value,
                dump(c.state),
                None if c.result is None else dump(c.result),
                None if c.error is None else dump(c.error),
                c.current_step,
                now,
                new_last,
                ready_at,
                c.workflow_id,
            ),
        )
        return CommitOutcome.OK

    def _cancel_now(
        self,
        conn: sqlite3.Connection,
        workflow_id: str,
        reason: Any,
        last_seq: int,
        now: float,
        decided: Sequence[Event] = (),
    ) -> None:
        """End the workflow as CANCELED, after ``decided`` (see ``decided_before_cancel``)."""
        (state_json,) = conn.execute(
            "SELECT state FROM workflows WHERE id = ?", (workflow_id,)
        ).fetchone()
        state = state_after(state_json, decided)
        seq = last_seq + len(decided) + 1
        self._insert_events(
            conn,
            workflow_id,
            [*decided, Event(seq, EventType.WORKFLOW_CANCELED, {"reason": reason}, now)],
        )
        conn.execute(
            "UPDATE workflows SET status = 'CANCELED', ready_at = NULL, lease_owner = NULL, "
            "lease_epoch = lease_epoch + 1, cancel_requested = NULL, last_seq = ?, "
            "updated_at = ?, error = ?, state = ? WHERE id = ?",
            (seq, now, dump({"type": "Canceled", "message": reason}), state, workflow_id),
        )
        conn.execute("DELETE FROM signals WHERE workflow_id = ?", (workflow_id,))

    # -- leases -----------------------------------------------------------------------------
    async def renew(
        self, owner: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        if not workflow_ids:
            return set(), set()

        def write(conn: sqlite3.Connection) -> tuple[set[str], set[str]]:
            marks = ",".join("?" * len(workflow_ids))
            rows = conn.execute(
                f"UPDATE workflows SET ready_at = ? WHERE lease_owner = ? AND status = 'RUNNING' "
                f"AND id IN ({marks}) RETURNING id, cancel_requested IS NOT NULL",
                (lease_until, owner, *workflow_ids),
            ).fetchall()
            held = {r[0] for r in rows}
            return set(workflow_ids) - held, {r[0] for r in rows if r[1]}

        return await self._batched(write)

    async def release(self, owner: str, workflow_ids: list[str], now: float) -> None:
        if not workflow_ids:
            return

        def write(conn: sqlite3.Connection) -> None:
            marks = ",".join("?" * len(workflow_ids))
            conn.execute(
                f"UPDATE workflows SET lease_owner = NULL, ready_at = ? WHERE lease_owner = ? "
                f"AND status = 'RUNNING' AND id IN ({marks})",
                (now, owner, *workflow_ids),
            )

        await self._batched(write)

    # -- client reads and requests --------------------------------------------------------
    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        rows = await self._run(
            self._read, f"SELECT {RECORD_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,)
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
            where.append("status = ?")
            params.append(WorkflowStatus(status).value)
        if name is not None:
            where.append("name = ?")
            params.append(name)
        if id_contains:
            where.append("instr(lower(id), ?) > 0")
            params.append(id_contains.casefold())
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = await self._run(
            self._read,
            f"SELECT {RECORD_COLUMNS} FROM workflows {clause} "
            "ORDER BY created_at DESC, id LIMIT ? OFFSET ?",
            (*params, limit, offset),
        )
        return [record(r) for r in rows]

    async def changed_since(
        self, after: float, limit: int, after_id: str = ""
    ) -> list[WorkflowRecord]:
        rows = await self._run(
            self._read,
            f"SELECT {RECORD_COLUMNS} FROM workflows WHERE (updated_at, id) > (?, ?) "
            "ORDER BY updated_at, id LIMIT ?",
            (after, after_id, limit),
        )
        return [record(r) for r in rows]

    async def read_signals(self, workflow_id: str) -> list[Signal]:
        rows = await self._run(
            self._read,
            "SELECT id, name, payload, created_at FROM signals WHERE workflow_id = ? ORDER BY id",
            (workflow_id,),
        )
        return [Signal(r[0], r[1], orjson.loads(r[2]), float(r[3])) for r in rows]

    def _running_row(
        self, conn: sqlite3.Connection, workflow_id: str, action: str
    ) -> tuple[Any, ...]:
        row = conn.execute(
            "SELECT status, lease_owner, ready_at, last_seq FROM workflows WHERE id = ?",
            (workflow_id,),
        ).fetchone()
        if row is None:
            raise WorkflowNotFoundError(workflow_id)
        if row[0] != WorkflowStatus.RUNNING:
            raise WorkflowNotRunningError(workflow_id, row[0], action)
        return tuple(row)

    async def send_signal(self, workflow_id: str, name: str, payload: Any, now: float) -> None:
        data = dump(payload)

        def write(conn: sqlite3.Connection) -> None:
            _, lease_owner, ready_at, _ = self._running_row(conn, workflow_id, "signal")
            conn.execute(
                "INSERT INTO signals (workflow_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
                (workflow_id, name, data, now),
            )
            if lease_owner is None and (ready_at is None or ready_at > now):
                conn.execute("UPDATE workflows SET ready_at = ? WHERE id = ?", (now, workflow_id))

        await self._batched(write)

    async def cancel(self, workflow_id: str, reason: str | None, now: float) -> CancelOutcome:
        def write(conn: sqlite3.Connection) -> CancelOutcome:
            _, lease_owner, ready_at, last_seq = self._running_row(conn, workflow_id, "cancel")
            if lease_owner is not None and ready_at is not None and ready_at > now:
                conn.execute(
                    "UPDATE workflows SET cancel_requested = ? WHERE id = ?",
                    (dump(reason), workflow_id),
                )
                return CancelOutcome.REQUESTED
            self._cancel_now(conn, workflow_id, reason, last_seq, now)
            return CancelOutcome.CANCELED

        return await self._batched(write)

    async def retry(
        self, workflow_id: str, now: float, resend: Sequence[tuple[str, Any]] = ()
    ) -> None:
        resent = [(name, dump(payload)) for name, payload in resend]

        def write(conn: sqlite3.Connection) -> None:
            row = conn.execute(
                "SELECT status, last_seq, current_step FROM workflows WHERE id = ?",
                (workflow_id,),
            ).fetchone()
            if row is None:
                raise WorkflowNotFoundError(workflow_id)
            if row[0] != WorkflowStatus.FAILED:
                raise WorkflowNotRunningError(
                    workflow_id, row[0], "retry", "only FAILED workflows can be retried"
                )
            seq = row[1] + 1
            self._insert_events(
                conn,
                workflow_id,
                [Event(seq, EventType.WORKFLOW_RETRIED, {"step": row[2]}, now)],
            )
            conn.execute(
                "UPDATE workflows SET status = 'RUNNING', error = NULL, ready_at = ?, "
                "lease_owner = NULL, lease_epoch = lease_epoch + 1, last_seq = ?, updated_at = ? "
                "WHERE id = ?",
                (now, seq, now, workflow_id),
            )
            # Signals the failed attempt consumed are delivered again, before those still
            # buffered, keeping the order in which they were sent.
            buffered = conn.execute(
                "SELECT name, payload FROM signals WHERE workflow_id = ? ORDER BY id",
                (workflow_id,),
            ).fetchall()
            conn.execute("DELETE FROM signals WHERE workflow_id = ?", (workflow_id,))
            conn.executemany(
                "INSERT INTO signals (workflow_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
                [(workflow_id, name, data, now) for name, data in [*resent, *buffered]],
            )

        await self._batched(write)

    async def next_due(self, names: list[str]) -> float | None:
        if not names:
            return None
        marks = ",".join("?" * len(names))
        rows = await self._run(
            self._read,
            f"SELECT MIN(ready_at) FROM workflows WHERE ready_at IS NOT NULL AND name IN ({marks})",
            tuple(names),
        )
        return rows[0][0] if rows else None

    async def stats(self, now: float) -> StoreStats:
        def read() -> StoreStats:
            by_status = dict(self._read("SELECT status, COUNT(*) FROM workflows GROUP BY status"))
            ready, oldest = self._read(
                "SELECT COUNT(*), MIN(ready_at) FROM workflows WHERE ready_at <= ? "
                "AND lease_owner IS NULL",
                (now,),
            )[0]
            leased = self._read(
                "SELECT COUNT(*) FROM workflows WHERE lease_owner IS NOT NULL AND ready_at > ?",
                (now,),
            )[0][0]
            sleeping = self._read(
                "SELECT COUNT(*) FROM workflows WHERE lease_owner IS NULL AND ready_at > ?",
                (now,),
            )[0][0]
            waiting = self._read(
                "SELECT COUNT(*) FROM workflows WHERE status = 'RUNNING' AND ready_at IS NULL"
            )[0][0]
            events = self._read("SELECT COUNT(*) FROM events")[0][0]
            signals = self._read("SELECT COUNT(*) FROM signals")[0][0]
            ended = minute_buckets(
                self._read(
                    "SELECT status, CAST((? - updated_at) / 60 AS INTEGER), COUNT(*) "
                    "FROM workflows WHERE updated_at > ? AND status IN ('COMPLETED', 'FAILED') "
                    "GROUP BY 1, 2",
                    (now, now - 60 * STATS_MINUTES),
                )
            )
            per_minute = ended[WorkflowStatus.COMPLETED]
            recent = per_minute[0]
            return StoreStats(
                by_status={str(k): int(v) for k, v in by_status.items()},
                ready=int(ready),
                leased=int(leased),
                sleeping=int(sleeping),
                waiting=int(waiting),
                oldest_ready_age=None if oldest is None else max(0.0, now - oldest),
                events=int(events),
                signals_pending=int(signals),
                completed_last_minute=int(recent),
                completed_per_minute=per_minute,
                failed_per_minute=ended[WorkflowStatus.FAILED],
            )

        return await self._run(read)

    # -- copying between databases (``loom migrate``): see ``sqlite_transfer`` --------------
    async def export_rows(self, after_id: str | None, limit: int) -> list[WorkflowDump]:
        if limit <= 0:
            return []

        def read() -> list[WorkflowDump]:
            conn = self._conn
            assert conn is not None
            conn.execute("BEGIN")  # one snapshot for the rows, their events and signals
            try:
                return sqlite_transfer.export_page(conn, after_id, limit)
            finally:
                conn.execute("COMMIT")

        return await self._run(read)

    async def import_rows(self, dumps: Sequence[WorkflowDump]) -> int:
        if not dumps:
            return 0
        batch = list(dumps)
        return await self._batched(
            functools.partial(sqlite_transfer.import_batch, dumps=batch, url=self.url)
        )
