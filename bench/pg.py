"""The PostgreSQL server the PostgreSQL workloads run on: fresh databases, and its settings.

The server is ``$LOOM_BENCH_PG_URL`` (a maintenance database URL), else the local one at
``postgresql://postgres@127.0.0.1:5432/postgres``. Every run gets its own database, named
``loom_bench_<pid>_<random>``, dropped when the run ends.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit, urlunsplit

import asyncpg  # type: ignore[import-untyped]

ADMIN_URL = os.environ.get("LOOM_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def url_for(database: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{database}", query=""))


async def unavailable_reason() -> str | None:
    """None when the server answers; otherwise why not."""
    try:
        conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    except Exception as exc:
        return f"no PostgreSQL server at {ADMIN_URL} ({type(exc).__name__}: {exc})"
    await conn.close()
    return None


async def server_settings() -> dict[str, str]:
    """The durability settings and version every run on this server used."""
    conn = await asyncpg.connect(ADMIN_URL, timeout=3)
    try:
        return {
            name: str(await conn.fetchval(f"SHOW {name}"))
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
        }
    finally:
        await conn.close()


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """A new empty database for the block; its URL. Dropped (WITH FORCE) afterwards."""
    name = f"loom_bench_{os.getpid()}_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(ADMIN_URL, timeout=5)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    finally:
        await conn.close()
    try:
        yield url_for(name)
    finally:
        conn = await asyncpg.connect(ADMIN_URL, timeout=5)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
