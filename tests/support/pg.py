"""PostgreSQL test databases: a fresh, empty database for each test, dropped afterwards.

The server is ``$LOOM_TEST_PG_URL`` (a maintenance database URL), else the local one at
``postgresql://postgres@127.0.0.1:5432/postgres``. Each database is named
``loom_test_<pid>_<random>``. Every database a test creates, whichever way (the ``db_url`` and
``pg_db_url`` fixtures, :func:`pg_url`, :func:`create_database`), is dropped (``WITH (FORCE)``)
when that test ends: ``tests/conftest.py`` calls :func:`drop_created_since` after each test, so
a long run does not pile up hundreds of databases. Whatever a crash left behind is dropped at
process exit, and leftovers of test processes that died are dropped the first time this
process creates a database.

Without a server the tests that need one are skipped, loudly; under ``CI=true`` they fail.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import functools
import os
import secrets
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
    if in_ci():
        pytest.fail(f"required in CI: {needed}", pytrace=False)
    pytest.skip(f"SKIPPING, no {needed}")


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


async def _create() -> str:
    global _swept
    name = PREFIX + secrets.token_hex(4)
    conn = await _admin()
    try:
        if not _swept:
            _swept = True
            for (stale,) in await conn.fetch(
                "SELECT datname FROM pg_database WHERE datname LIKE 'loom\\_test\\_%'"
            ):
                pid = stale.split("_")[2]
                if pid.isdigit() and not _alive(int(pid)):
                    with contextlib.suppress(asyncpg.ObjectInUseError):
                        await conn.execute(f'DROP DATABASE IF EXISTS "{stale}"')
        try:
            # FILE_COPY (PostgreSQL 15+) copies the template's files instead of logging every
            # page to the WAL: several times quicker for a test's small database.
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        except asyncpg.PostgresSyntaxError:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    _created.add(name)
    return name


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
    return url_for(_blocking(_create))


def existing(names: list[str]) -> list[str]:
    """Which of ``names`` are databases on the server now."""

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


def created() -> frozenset[str]:
    """The databases of this process that exist now (not yet dropped)."""
    return frozenset(_created)


def drop_created_since(before: frozenset[str]) -> None:
    """Drop every database created since :func:`created` returned ``before``: a test's own."""
    names = sorted(_created - before)
    if names:
        _blocking(lambda: _drop(names))


@atexit.register
def _drop_all() -> None:
    if _created:  # no event loop runs any more: run the drop on a new one
        with contextlib.suppress(Exception):  # the server is gone: its databases went with it
            asyncio.run(_drop(sorted(_created)))


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A fresh empty database for the duration of the block; dropped afterwards."""
    require_pg()
    name = await _create()
    try:
        yield url_for(name)
    finally:
        await _drop([name])


@pytest.fixture
async def pg_db_url() -> AsyncIterator[str]:
    """Pytest fixture: the URL of a fresh, empty PostgreSQL database for this test."""
    async with fresh_database() as url:
        yield url
