"""The embedded SQLite store: the rules of ``sql``, driven on one connection.

One connection, driven from one dedicated thread so the event loop never blocks on disk. WAL
mode with ``synchronous=FULL`` (configurable) makes every commit durable; writes open with
``BEGIN IMMEDIATE`` and a busy timeout, so several processes can share one file safely. Writes
that arrive while a transaction is being written are queued and written together in the next
one: many workflows' progress for the price of one fsync.

A database the process may not write (a read-only file or directory) is opened read-only, so
it can still be inspected; a write to it is a :class:`~loom.errors.StoreError` saying so.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from loom.core.history import Event
from loom.errors import (
    ConfigurationError,
    DatabaseCorruptError,
    DatabaseUnavailableError,
    StoreError,
)
from loom.store import commit_rules, lease_rules, start_rules
from loom.store.base import Commit, CommitOutcome, NewWorkflow, WorkflowRecord
from loom.store.commit_rules import Prepared
from loom.store.common import EVENT_COLUMNS, WORKFLOW_COLUMNS, Row, event, record
from loom.store.sql import SqlStore
from loom.store.statements import Dialect, Op, Rule, event_rows, events, many, rows, run

T = TypeVar("T")

SMALL_BATCH = 8
"""A batch smaller than this waits two turns of the event loop for company before it is written."""

DIALECT = Dialect(
    name="sqlite",
    lock="",  # BEGIN IMMEDIATE already holds the database's one write lock
    skip_locked="",
    list_param=False,
    contains="instr(lower(id), ?) > 0",
    minutes_ago="CAST((? - updated_at) / 60 AS INTEGER)",
    no_limit=-1,
)

INSERT_EVENTS = (
    "INSERT INTO events (workflow_id, seq, type, payload, created_at) VALUES (?, ?, ?, ?, ?)"
)

# Primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``).
_READONLY, _CORRUPT, _CANTOPEN, _FULL, _NOTADB = 8, 11, 14, 13, 26
_BUSY, _LOCKED, _NOMEM, _IOERR, _PROTOCOL = 5, 6, 7, 10, 15
_OUTAGES = (_BUSY, _LOCKED, _NOMEM, _IOERR, _PROTOCOL)
"""Result codes that say the file cannot be written now (locked past the busy timeout, out of
memory, an I/O error): an outage, which a retry may get past, not a fault of the operation."""


class SqliteStore(SqlStore):
    dialect = "sqlite"
    sql = DIALECT

    def __init__(
        self, url: str, path: str, *, synchronous: str = "FULL", create: bool = True
    ) -> None:
        if synchronous.upper() not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
            raise ConfigurationError(f"unknown SQLite synchronous mode {synchronous!r}")
        self.url = url
        self.path = path
        self.synchronous = synchronous.upper()
        self.create = create
        self.read_only = False
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
        memory = self.path == ":memory:"
        if not memory:
            if not self.create and not Path(self.path).is_file():
                raise StoreError(f"no database at {self.path!r}; create it with `loom init`")
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        try:
            conn = self._open_connection(f"file:{quote(self.path)}" if not memory else self.path)
            conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            code = exc.sqlite_errorcode & 0xFF
            if memory or code not in (_READONLY, _CANTOPEN) or not Path(self.path).is_file():
                raise self.failure(exc, "cannot open") from exc
            conn = self._open_read_only()
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        self._conn = conn

    def _open_connection(self, uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(
            uri, isolation_level=None, check_same_thread=False, timeout=30.0, uri=True
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    def _open_read_only(self) -> sqlite3.Connection:
        """The file or its directory cannot be written: open the database for reading only.

        A WAL database needs its shared-memory file beside it; where that cannot be made, the
        file is read as it stands (``immutable``), which is right for a database nobody can
        write there."""
        self.read_only = True
        base = f"file:{quote(self.path)}?mode=ro"
        try:
            conn = self._open_connection(base)
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
            return conn
        except sqlite3.Error:
            pass
        try:
            conn = self._open_connection(f"{base}&immutable=1")
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
            return conn
        except sqlite3.Error as exc:
            raise self.failure(exc, "cannot open") from exc

    def failure(self, exc: sqlite3.Error, doing: str = "failed on") -> StoreError:
        """``exc`` as the :class:`StoreError` that says what happened and what to do."""
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in (_CORRUPT, _NOTADB):
            return DatabaseCorruptError(self.path, str(exc), doing)
        if code == _FULL:
            return DatabaseUnavailableError(
                f"the disk holding the SQLite database {self.path!r} is full: free some space "
                "(or move the database to a larger disk), then try again; the operation that "
                "failed wrote nothing"
            )
        if code == _READONLY or (code == _CANTOPEN and self.read_only):
            return StoreError(
                f"the SQLite database {self.path!r} is read-only (its file or its directory "
                "cannot be written): reads work, but to write, make both writable or copy the "
                "database to a writable location"
            )
        if code in _OUTAGES:
            return DatabaseUnavailableError(f"{doing} SQLite database {self.path!r}: {exc}")
        return StoreError(f"{doing} SQLite database {self.path!r}: {exc}")

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            while self._flushing is not None:
                # Shielded: a cancel of the close must not cancel the writes in flight, or the
                # commits queued behind them would wait for an answer forever.
                await asyncio.shield(self._flushing)
        finally:
            conn, self._conn = self._conn, None
            if conn is not None:  # after the write in flight, on the store's thread
                await asyncio.wrap_future(executor.submit(conn.close))
            executor.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StoreError("the database is closed; use `async with loom.Database(...)`")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise self.failure(exc) from exc

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one ``BEGIN IMMEDIATE`` transaction (on the store thread)."""
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.failure(exc, "could not start a write on") from exc
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return result

    @staticmethod
    def _drive(conn: sqlite3.Connection, rule: Rule[T]) -> T:
        try:
            kind, text, args = next(rule)
            while True:  # _execute, inlined: this loop runs every statement of every commit
                if kind == "rows":
                    answer = conn.execute(text, args).fetchall()
                elif kind == "run":
                    conn.execute(text, args)
                    answer = None
                else:
                    answer = _execute(conn, (kind, text, args))
                kind, text, args = rule.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _transact(self, rule: Rule[T]) -> Coroutine[Any, Any, T]:
        # Plain functions handing on the coroutine (here and in commit, create_workflow): a
        # coroutine per layer on every write is work the event loop does for nothing.
        return self._batched(functools.partial(self._drive, rule=rule))

    async def _read(self, rule: Rule[T], *, snapshot: bool = False) -> T:
        def read() -> T:
            conn = self._conn
            assert conn is not None
            if not snapshot:
                return self._drive(conn, rule)
            conn.execute("BEGIN")  # one snapshot for every read of the rule
            try:
                return self._drive(conn, rule)
            finally:
                conn.execute("COMMIT")

        return await self._run(read)

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
                    elif isinstance(value, sqlite3.Error):
                        future.set_exception(self.failure(value))
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

    # -- the hot path ---------------------------------------------------------------------
    async def schema_version(self) -> int:
        def read() -> int:
            assert self._conn is not None
            try:
                rows = self._conn.execute("SELECT MAX(version) FROM loom_migrations").fetchall()
            except sqlite3.OperationalError as exc:
                if "no such table" not in str(exc):
                    raise
                return 0
            return int(rows[0][0] or 0)

        return await self._run(read)

    def create_workflow(
        self, new: NewWorkflow, first: Event
    ) -> Coroutine[Any, Any, WorkflowRecord | None]:
        return self._transact(_create(new, first))

    async def _lease(
        self, claim: Rule[list[Row]], now: float
    ) -> tuple[list[Row], dict[str, Event], list[str]]:
        def write(conn: sqlite3.Connection) -> tuple[list[Row], dict[str, Event], list[str]]:
            claimed: list[Row] = self._drive(conn, claim)
            settled = [r for r in claimed if lease_rules.requested(r)]
            ended: list[str] = []
            if settled:  # finalised in this same transaction
                ended = self._drive(conn, lease_rules.settle_claimed(DIALECT, settled, now))
            fresh = [r["id"] for r in claimed if r["last_seq"] == 1]
            started: dict[str, Event] = {}
            if fresh:
                where, args = DIALECT.among("workflow_id", fresh)
                for r in conn.execute(
                    f"SELECT workflow_id, {EVENT_COLUMNS} FROM events WHERE seq = 1 AND {where}",
                    args,
                ):
                    started[r["workflow_id"]] = event(r)
            return claimed, started, ended

        return await self._batched(write)

    def commit(self, commit: Commit, now: float) -> Coroutine[Any, Any, CommitOutcome]:
        return self._batched(functools.partial(self._commit_one, commit, now))

    def _commit_one(self, commit: Commit, now: float, conn: sqlite3.Connection) -> CommitOutcome:
        # Encoded here, on the store's thread, not on the event loop's.
        rule = commit_rules.commit_batch(DIALECT, [Prepared.of(commit, now)])
        [(outcome, _)] = self._drive(conn, rule)
        return outcome


def _create(new: NewWorkflow, first: Event) -> Rule[WorkflowRecord | None]:
    """Insert the workflow, ready at once, with its first event; or read the one with its id."""
    found = yield rows(f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", new.workflow_id)
    if found:
        return record(found[0])
    yield run(
        f"INSERT INTO workflows ({start_rules.NEW_COLUMNS}) VALUES ({start_rules.NEW_MARKS})",
        *start_rules.new_values(new, first),
    )
    yield events(event_rows(new.workflow_id, [first]))
    if new.tags:
        yield many(start_rules.INSERT_TAG, [(new.workflow_id, k, v) for k, v in new.tags])
    return None


def _execute(conn: sqlite3.Connection, op: Op) -> Any:
    kind, text, args = op
    if kind == "rows":
        return conn.execute(text, args).fetchall()
    if kind == "run":
        conn.execute(text, args)
    elif args:
        conn.executemany(INSERT_EVENTS if kind == "events" else text, args)
    return None
