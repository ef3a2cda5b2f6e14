"""The PostgreSQL store: the rules of ``sql``, driven on a pool, for many workers on many
machines.

A bounded asyncpg pool serves every operation. Timestamps are epoch seconds (DOUBLE PRECISION)
and payloads JSON text, as in SQLite, so both backends store and return the same values.
Workers claim with ``FOR UPDATE SKIP LOCKED``, so concurrent claimers never wait on each other
nor get the same workflow. Commits that arrive while a commit transaction is in flight are
queued and written together in the next one (group commit); that transaction first locks the
batch's workflow rows in id order, so two batches can never deadlock. Work that becomes ready
is announced with ``NOTIFY`` so listening workers wake at once (``pg_wakeups``).

Error messages never name the server, the user or the database: they may reach web clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

from loom.core.history import Event
from loom.errors import ConfigurationError, DatabaseUnavailableError, StoreError
from loom.store import commit_rules, lease_rules, start_rules
from loom.store.base import Commit, CommitOutcome, NewWorkflow, WorkflowRecord
from loom.store.commit_rules import Prepared
from loom.store.common import EVENT_COLUMNS, WORKFLOW_COLUMNS, Row, dump, event, record
from loom.store.pg_wakeups import CHANGES, WORK, Wakeups
from loom.store.sql import SqlStore
from loom.store.statements import Dialect, Op, Rule

T = TypeVar("T")

_OPTIONS = {"pool_min", "pool_max", "connect_timeout"}

DIALECT = Dialect(
    name="postgres",
    lock=" FOR UPDATE",
    skip_locked=" FOR UPDATE SKIP LOCKED",
    list_param=True,
    contains="strpos(lower(id), ?) > 0",
    minutes_ago="trunc((? - updated_at) / 60)::int",
    no_limit=None,
    migration_lock="SELECT pg_advisory_xact_lock(1819242349)",  # 0x6C6F6F6D, "loom"
)

_NOISE = "Failed to restore the pool connection floor"


class _QuietPoolFloor(logging.Filter):
    """asyncpg logs a traceback each time it fails to reopen the pool's idle connections while
    the server is down (every restart); the store already reports the outage where it matters."""

    def filter(self, rec: logging.LogRecord) -> bool:
        return not str(rec.msg).startswith(_NOISE)


_QUIET = _QuietPoolFloor()


@functools.lru_cache(maxsize=1024)
def numbered(text: str) -> str:
    """A statement with ``?`` placeholders as PostgreSQL spells them: ``$1``, ``$2``, ..."""
    parts = text.split("?")
    return "".join(f"{p}${i}" for i, p in enumerate(parts[:-1], 1)) + parts[-1]


class _Rejected(StoreError):
    """PostgreSQL reported an error: the transaction was rolled back and wrote nothing."""


_OUTAGE_CLASSES = ("08", "40", "53", "57", "58")
"""SQLSTATE classes that say the server cannot do the work now, whatever the work: connection
exceptions, rollbacks a retry resolves (serialization, deadlock), insufficient resources (disk
full, out of memory, too many connections), operator intervention (shutdown, restart) and
system errors. Any other error is about the operation itself."""


def _is_outage(exc: BaseException) -> bool:
    state = str(getattr(exc, "sqlstate", "") or "")
    return state[:2] in _OUTAGE_CLASSES or state == "55P03"  # 55P03: lock not available


class PostgresStore(SqlStore):
    """``postgresql://user:password@host:port/db``; options ``pool_min`` (1), ``pool_max`` (10),
    ``connect_timeout`` (10 s); any other query parameter goes to asyncpg (``sslmode``, ...).

    Parks whose ``ready_at`` falls within ``notify_horizon`` seconds are announced on the
    ``loom_work`` channel; later ones are found by an idle worker's ``next_due``.
    """

    dialect = "postgres"
    sql = DIALECT
    nul_in_ids = False

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
        hidden = (parts.hostname, parts.username, parts.password, str(parts.port or 5432))
        secrets = sorted({s for s in (*hidden, unquote(parts.path.strip("/"))) if s})
        self._secrets = re.compile(
            "|".join(rf"(?<![\w.-]){re.escape(s)}(?![\w-])" for s in secrets)
        )
        self._pool: Any = None
        self._queue: list[tuple[Prepared, asyncio.Future[CommitOutcome]]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._wakeups: Wakeups | None = None

    @property
    def label(self) -> str:
        return "the PostgreSQL database"

    def _scrub(self, exc: BaseException) -> str:
        """The driver's message with the server, user, password and database name hidden."""
        return self._secrets.sub("…", str(exc) or type(exc).__name__)

    # -- plumbing ---------------------------------------------------------------------------
    async def open(self) -> None:
        if self._pool is not None:
            return
        logging.getLogger("asyncpg.pool").addFilter(_QUIET)  # once: filters are a set
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=self.pool_min,
                max_size=self.pool_max,
                timeout=self.connect_timeout,
            )
        except asyncpg.InvalidCatalogNameError as exc:
            raise StoreError(
                "no PostgreSQL database of the name in the database URL: create it "
                "(CREATE DATABASE), then `loom init`"
            ) from exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            kind = (
                StoreError
                if isinstance(exc, asyncpg.PostgresError) and not _is_outage(exc)
                else DatabaseUnavailableError  # not reachable now: it may be later
            )
            raise kind(
                f"cannot connect to PostgreSQL: {self._scrub(exc)}; check that the server is "
                "running and the database URL"
            ) from exc
        self._wakeups = Wakeups(self._dsn, self.connect_timeout, self._transaction)

    async def close(self) -> None:
        if self._pool is None:
            return
        try:
            while self._flushing is not None:  # commits already queued are written first
                # Shielded: a cancel of the close must not cancel the writes in flight, or the
                # commits queued behind them would wait for an answer forever.
                await asyncio.shield(self._flushing)
        finally:
            await self._shut()

    async def _shut(self) -> None:
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
            if _is_outage(exc):
                raise DatabaseUnavailableError(
                    f"PostgreSQL cannot serve requests now: {self._scrub(exc)}"
                ) from exc
            raise _Rejected(f"PostgreSQL refused an operation: {self._scrub(exc)}") from exc
        except (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError) as exc:
            raise DatabaseUnavailableError(
                f"lost the PostgreSQL connection: {self._scrub(exc)}"
            ) from exc

    @contextlib.asynccontextmanager
    async def _transaction(self, **options: Any) -> AsyncIterator[Any]:
        async with self._connection() as conn, conn.transaction(**options):
            yield conn

    @staticmethod
    async def _drive(conn: Any, rule: Rule[T]) -> T:
        try:
            op = next(rule)
            while True:
                op = rule.send(await _execute(conn, op))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _transact(self, rule: Rule[T]) -> T:
        async with self._transaction() as conn:
            return await self._drive(conn, rule)

    async def _read(self, rule: Rule[T], *, snapshot: bool = False) -> T:
        if snapshot:
            async with self._transaction(isolation="repeatable_read", readonly=True) as conn:
                return await self._drive(conn, rule)
        async with self._connection() as conn:
            return await self._drive(conn, rule)

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

    def _changed(self, work: bool = False) -> None:
        if self._wakeups is not None:
            self._wakeups.announce(*((WORK, CHANGES) if work else (CHANGES,)))

    # -- the hot path ---------------------------------------------------------------------
    async def schema_version(self) -> int:
        async with self._connection() as conn:
            if await conn.fetchval("SELECT to_regclass('loom_migrations')") is None:
                return 0
            return int(await conn.fetchval("SELECT MAX(version) FROM loom_migrations") or 0)

    async def create_workflow(self, new: NewWorkflow, first: Event) -> WorkflowRecord | None:
        self._check_id(new.workflow_id)
        # One statement, so one round trip and an implicit transaction: the row and its first
        # event are written together, or neither when the id is taken.
        # Tags, when given, go in with them (a data-modifying CTE of the same statement).
        tagged = (
            ", t AS (INSERT INTO workflow_tags (workflow_id, key, value) "
            "SELECT w.id, k, v FROM w, unnest(?::text[], ?::text[]) AS x(k, v)) "
            if new.tags
            else " "
        )
        tag_args = ([k for k, _ in new.tags], [v for _, v in new.tags]) if new.tags else ()
        created = await self._rows(
            f"WITH w AS (INSERT INTO workflows ({start_rules.NEW_COLUMNS}) "
            f"VALUES ({start_rules.NEW_MARKS}) "
            f"ON CONFLICT (id) DO NOTHING RETURNING id){tagged}"
            "INSERT INTO events (workflow_id, seq, type, payload, created_at) "
            "SELECT id, ?, ?, ?, ? FROM w RETURNING workflow_id",
            *start_rules.new_values(new, first),
            *tag_args,
            first.seq,
            first.type.value,
            dump(first.payload),
            first.timestamp,
        )
        if created:
            self._changed(work=True)
            return None
        found = await self._rows(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?", new.workflow_id
        )
        if not found:
            raise StoreError(f"workflow {new.workflow_id!r} was neither created nor found")
        return record(found[0])

    async def _lease(
        self, claim: Rule[list[Row]], now: float
    ) -> tuple[list[Row], dict[str, Event], list[str]]:
        async with self._transaction() as conn:  # a limited queue's row stays locked till done
            claimed: list[Row] = await self._drive(conn, claim)
        settled = [r for r in claimed if lease_rules.requested(r)]
        ended: list[str] = []
        if settled:
            # Leased to this claim, so nobody else runs them: finalised under that lease's
            # fence right after (should this process die first, the next claim does it).
            ended = await self._transact(lease_rules.settle_claimed(DIALECT, settled, now))
            self._changed(work=any(r["reset_requested"] is not None for r in settled))
        fresh = [r["id"] for r in claimed if r["last_seq"] == 1]
        started: dict[str, Event] = {}
        if fresh:
            where, args = DIALECT.among("workflow_id", fresh)
            for r in await self._rows(
                f"SELECT workflow_id, {EVENT_COLUMNS} FROM events WHERE seq = 1 AND {where}",
                *args,
            ):
                started[r["workflow_id"]] = event(r)
        return claimed, started, ended

    async def commit(self, commit: Commit, now: float) -> CommitOutcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommitOutcome] = loop.create_future()
        self._queue.append((Prepared.of(commit, now), future))
        if self._flushing is None:
            self._flushing = loop.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    outcomes: list[CommitOutcome] | BaseException = await self._commit_batch(
                        [p for p, _ in batch]
                    )
                except _Rejected as exc:
                    if len(batch) > 1:
                        # The whole batch was rolled back: write each alone, so only the commit
                        # at fault gets the error.
                        for p, future in batch:
                            try:
                                [outcome] = await self._commit_batch([p])
                                _settle(future, outcome)
                            except Exception as single:
                                _settle(future, single)
                        continue
                    outcomes = exc
                except BaseException as exc:
                    for _, future in batch:
                        _settle(future, exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for i, (_, future) in enumerate(batch):
                    _settle(
                        future, outcomes if isinstance(outcomes, BaseException) else outcomes[i]
                    )
        finally:
            self._flushing = None

    async def _commit_batch(self, batch: list[Prepared]) -> list[CommitOutcome]:
        results = await self._transact(commit_rules.commit_batch(DIALECT, batch))
        due = [
            at <= p.now + self.notify_horizon
            for p, (_, at) in zip(batch, results, strict=True)
            if at is not None
        ]
        self._changed(work=any(due))
        return [outcome for outcome, _ in results]


def _settle(future: asyncio.Future[CommitOutcome], outcome: CommitOutcome | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


async def _execute(conn: Any, op: Op) -> Any:
    kind, text, args = op
    if kind == "rows":
        return await conn.fetch(numbered(text), *args)
    if kind == "run":
        await (conn.execute(numbered(text), *args) if args else conn.execute(text))
    elif kind == "many":
        await conn.executemany(numbered(text), args)
    elif args:  # events: one statement, one round trip, whatever their number
        await conn.execute(
            "INSERT INTO events (workflow_id, seq, type, payload, created_at) SELECT * FROM "
            "unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[])",
            *(list(column) for column in zip(*args, strict=True)),
        )
    return None
