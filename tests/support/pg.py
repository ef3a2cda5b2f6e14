"""PostgreSQL test databases: a fresh, empty database for each test, dropped afterwards.

The server is ``$LOOM_TEST_PG_URL`` (a maintenance database URL), else the local one at
``postgresql://postgres@127.0.0.1:5432/postgres``. Each database is named
``loom_test_<pid>_<random>``. Every database a test creates, whichever way (the ``db_url`` and
``pg_db_url`` fixtures, :func:`pg_url`, :func:`create_database`), is dropped (``WITH (FORCE)``)
when that test ends: ``tests/conftest.py`` calls :func:`drop_created_since` after each test, so
a long run does not pile up hundreds of databases. Whatever a crash left behind is dropped at
process exit, and leftovers of test processes that died are dropped the first time this
process creates a database.

Creating a database costs the server a checkpoint (a tenth of a second or more), most of a
PostgreSQL test's setup. So databases are made ahead, a few at a time, by :class:`_Ready` on a
thread of its own while tests run; a test takes one that is ready. Those for the ``db`` fixture
are copies of a template this process migrated once, so the schema is there already.

Without a server the tests that need one are skipped, loudly; under ``CI=true`` they fail.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import os
import queue
import secrets
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]
import pytest

T = TypeVar("T")

ADMIN_URL = os.environ.get("LOOM_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PREFIX = f"loom_test_{os.getpid()}_"
_created: set[str] = set()
_swept = False  # leftovers of dead test processes are dropped once per process


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _blocking(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


async def _admin() -> Any:
    return await asyncpg.connect(ADMIN_URL, timeout=3)


@functools.cache
def _unavailable_reason() -> str | None:
    async def probe() -> None:
        conn = await _admin()
        await conn.close()

    try:
        _blocking(probe)
    except Exception as exc:
        return f"no PostgreSQL server at {ADMIN_URL} ({type(exc).__name__}: {exc})"
    return None


def pg_available() -> bool:
    return _unavailable_reason() is None


def unavailable(needed: str) -> NoReturn:
    """A test cannot have what it needs: under CI=true it fails (CI provides everything a test
    needs); elsewhere it is skipped, loudly."""
    if not in_ci():
        pytest.skip(f"SKIPPING, no {needed}")
    pytest.fail(f"required in CI: {needed}", pytrace=False)


def require_pg() -> None:
    """Skip (loudly) without a PostgreSQL server; fail instead under CI=true."""
    reason = _unavailable_reason()
    if reason is not None:
        unavailable(f"PostgreSQL server: {reason}; start it or set LOOM_TEST_PG_URL")


def url_for(database: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{database}", query=""))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _sweep(conn: Any) -> None:
    """Drop the leftovers of test processes that died (their pid is in the name)."""
    global _swept
    if _swept:
        return
    _swept = True
    for (stale,) in await conn.fetch(
        "SELECT datname FROM pg_database WHERE datname LIKE 'loom\\_test\\_%'"
    ):
        pid = stale.split("_")[2]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(asyncpg.ObjectInUseError):
                await conn.execute(f'DROP DATABASE IF EXISTS "{stale}"')


async def _make(conn: Any, name: str, template: str = "template0") -> None:
    try:
        # FILE_COPY (PostgreSQL 15+) copies the template's files instead of logging every
        # page to the WAL: several times quicker for a test's small database.
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY')
    except asyncpg.PostgresSyntaxError:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')


class _Ready:
    """Databases made ahead on a thread of its own: ``take()`` returns one at once when the
    thread kept up, so the checkpoint a creation costs overlaps the tests that run meanwhile."""

    AHEAD = 6  # of each kind, ready or being made

    def __init__(self) -> None:
        self._queues = {
            False: queue.Queue[str | BaseException](),
            True: queue.Queue[str | BaseException](),
        }
        self._pending = {False: 0, True: 0}
        self._made: set[str] = set()  # made and not yet taken: dropped at exit
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._template: str | None = None
        self._template_lock: asyncio.Lock | None = None
        self._drops: list[concurrent.futures.Future[None]] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def take(self, migrated: bool) -> str:
        """A new database (with Loom's schema when ``migrated``); its name is in ``_created``."""
        with self._lock:
            short = self.AHEAD - self._queues[migrated].qsize() - self._pending[migrated]
            self._pending[migrated] += max(short, 0)
        for _ in range(short):  # each on a connection of its own: the server makes them at once
            asyncio.run_coroutine_threadsafe(self._make_one(migrated), self._loop)
        got = self._queues[migrated].get(timeout=120)
        if isinstance(got, BaseException):
            raise got
        with self._lock:
            self._made.discard(got)
        _created.add(got)
        return got

    async def _make_one(self, migrated: bool) -> None:
        name = PREFIX + secrets.token_hex(4)
        try:
            conn = await _admin()
            try:
                await _sweep(conn)
                template = await self._template_name(conn) if migrated else "template0"
                await _make(conn, name, template)
            finally:
                await conn.close()
        except BaseException as exc:  # the test that takes it fails with the cause
            self._queues[migrated].put(exc)
        else:
            with self._lock:
                self._made.add(name)
            self._queues[migrated].put(name)
        finally:
            with self._lock:
                self._pending[migrated] -= 1

    async def _template_name(self, conn: Any) -> str:
        if self._template_lock is None:
            self._template_lock = asyncio.Lock()
        async with self._template_lock:
            if self._template is None:
                import loom  # the suite's own import: loom is installed wherever tests run

                name = PREFIX + "template"
                await _make(conn, name)
                self._template = name
                async with loom.Database(url_for(name)) as database:
                    await database.migrate_up()
        return self._template

    def drop(self, names: list[str]) -> None:
        """Drop ``names`` on the thread, after the work queued before; :meth:`flush` waits."""
        for name in names:
            _created.discard(name)
        self._drops = [f for f in self._drops if not f.done() or f.exception() is not None]
        self._drops.append(asyncio.run_coroutine_threadsafe(_drop(names), self._loop))

    def flush(self) -> None:
        """Wait for every drop queued so far."""
        while self._drops:
            self._drops.pop(0).result(timeout=60)

    def close(self) -> list[str]:
        """Stop the thread; returns the names it made that no test took."""
        with contextlib.suppress(Exception):
            self.flush()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with self._lock:
            leftovers = sorted(self._made)
        if self._template is not None:
            leftovers.append(self._template)
        return leftovers


_ready: _Ready | None = None


def _take(migrated: bool) -> str:
    global _ready
    if _ready is None:
        _ready = _Ready()
    return _ready.take(migrated)


async def _drop(names: list[str]) -> None:
    conn = await _admin()
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            _created.discard(name)
    finally:
        await conn.close()


def create_database() -> str:
    """A new empty database (no schema); returns its URL."""
    require_pg()
    return url_for(_take(False))


def existing(names: list[str]) -> list[str]:
    """Which of ``names`` are databases on the server now (once the drops queued are done)."""
    if _ready is not None:
        _ready.flush()

    async def query() -> list[str]:
        conn = await _admin()
        try:
            rows = await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names
            )
        finally:
            await conn.close()
        return sorted(row["datname"] for row in rows)

    return _blocking(query)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    _blocking(lambda: _drop([name]))


def pg_url(tmp_path: Path) -> str:
    """URL factory for the contract suite's BACKENDS: a fresh database for every test, dropped
    when the test ends."""
    return create_database()


def ready_database(migrated: bool = False) -> str:
    """A fresh database made ahead of time (with Loom's schema when ``migrated``); its URL.
    Dropped when the test ends, as every database a test creates is."""
    require_pg()
    return url_for(_take(migrated))


def created() -> frozenset[str]:
    """The databases of this process that exist now (not yet dropped)."""
    return frozenset(_created)


def drop_created_since(before: frozenset[str]) -> None:
    """Drop every database created since :func:`created` returned ``before``: a test's own.
    The drop is queued on the thread that makes databases, so the next test need not wait for
    it; :func:`existing` waits for the queued drops before it looks."""
    names = sorted(_created - before)
    if not names:
        return
    if _ready is not None:
        _ready.drop(names)
    else:
        _blocking(lambda: _drop(names))


@atexit.register
def _drop_all() -> None:
    names = sorted(_created) + (_ready.close() if _ready is not None else [])
    if names:  # no event loop runs any more: run the drop on a new one
        with contextlib.suppress(Exception):  # the server is gone: its databases went with it
            asyncio.run(_drop(names))


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A fresh empty database for the duration of the block; dropped afterwards."""
    require_pg()
    name = await asyncio.to_thread(_take, False)
    try:
        yield url_for(name)
    finally:
        await _drop([name])


@pytest.fixture
async def pg_db_url() -> AsyncIterator[str]:
    """Pytest fixture: the URL of a fresh, empty PostgreSQL database for this test."""
    async with fresh_database() as url:
        yield url
