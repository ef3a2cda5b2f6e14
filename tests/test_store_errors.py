"""What a store says when the database fails: always a StoreError that names the problem and
the fix, a damaged file told apart (so callers stop instead of retrying), a read-only database
still readable, and nothing of a PostgreSQL server's address or credentials in a message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from loom.core.history import Event, EventType
from loom.errors import DatabaseCorruptError, DatabaseUnavailableError, StoreError
from loom.status import WorkflowStatus
from loom.store import open_store
from loom.store.base import Commit, CommitOutcome, NewWorkflow, Store
from loom.store.sqlite import SqliteStore
from loom.transfer import copy_database
from support import eventually
from support.pg import pg_url

T0 = 1_700_000_000.0


async def create(store: Store, wid: str, payload: object = None) -> None:
    first = Event(1, EventType.WORKFLOW_STARTED, {"input": payload, "state": {}}, T0)
    assert await store.create_workflow(NewWorkflow(wid, "W", "1", payload, {}, T0), first) is None


async def opened(url: str) -> Store:
    store = open_store(url)
    await store.open()
    return store


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


# ------------------------------------------------------------------------------ SQLite


async def test_a_full_disk_is_a_store_error_saying_so(mount_point: Path) -> None:
    store = await opened(f"sqlite:///{mount_point / 'loom.db'}")
    try:
        await store.migrate()
        await create(store, "first")
        with pytest.raises(StoreError) as caught:
            for i in range(1000):
                await create(store, f"wf-{i}", "x" * 20_000)
        # An outage, not a fault of the write: workers wait for space instead of blaming it.
        assert type(caught.value) is DatabaseUnavailableError
        message = str(caught.value)
        assert "is full" in message and "free some space" in message
        assert str(mount_point / "loom.db") in message
        # What was written before is still there, and the store still answers.
        record = await store.get_workflow("first")
        assert record is not None
    finally:
        await store.close()


async def test_a_file_that_is_not_a_database_is_reported_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "loom.db"
    path.write_bytes(b"this is a spreadsheet, not a database" * 200)
    store = open_store(f"sqlite:///{path}")
    with pytest.raises(DatabaseCorruptError) as caught:
        await store.open()
        try:
            await store.migrate()
        finally:
            await store.close()
    assert str(path) in str(caught.value) and "backup" in str(caught.value)


SCHEMA_PAGES = "SELECT pageno FROM dbstat WHERE name = 'sqlite_schema'"


async def test_a_damaged_database_is_reported_as_damaged(tmp_path: Path) -> None:
    path = tmp_path / "loom.db"
    store = await opened(f"sqlite:///{path}")
    await store.migrate()
    for i in range(200):
        await create(store, f"wf-{i:03}", {"filler": "y" * 500})
    await store.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:  # the pages the schema is on
        schema = {1, *(n for (n,) in conn.execute(SCHEMA_PAGES))}
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(data), page):  # keep the schema's pages, scramble the rest
        if start // page + 1 not in schema:
            data[start + 8 : start + 100] = b"\xa5" * 92
    path.write_bytes(bytes(data))

    store = await opened(f"sqlite:///{path}")
    try:
        with pytest.raises(DatabaseCorruptError, match="restore the file from a backup"):
            await store.list_workflows(limit=1000)
    finally:
        await store.close()


async def test_a_database_in_a_read_only_place_can_still_be_read(mount_point: Path) -> None:
    path = mount_point / "loom.db"
    store = await opened(f"sqlite:///{path}")
    await store.migrate()
    await create(store, "kept")
    await store.close()
    remount_read_only(mount_point)

    store = await opened(f"sqlite:///{path}")
    try:
        record = await store.get_workflow("kept")
        assert record is not None and record.workflow_id == "kept"
        assert [r.workflow_id for r in await store.list_workflows()] == ["kept"]
        assert len(await store.load_history("kept")) == 1
        with pytest.raises(StoreError, match="read-only") as caught:
            await create(store, "new")
        assert "writable" in str(caught.value)
    finally:
        await store.close()


# ------------------------------------------------------------------------------ PostgreSQL


async def test_postgres_errors_do_not_reveal_the_server_or_credentials() -> None:
    url = "postgresql://secret_user:hunter2pw@127.0.0.1:59999/private_db?connect_timeout=2"
    store = open_store(url)
    with pytest.raises(StoreError) as caught:
        await store.open()
    message = str(caught.value)
    assert "PostgreSQL" in message
    for secret in ("secret_user", "hunter2pw", "127.0.0.1", "59999", "private_db"):
        assert secret not in message, message


@pytest.mark.postgres
async def test_a_missing_postgres_database_is_not_named_in_the_message(tmp_path: Path) -> None:
    url = pg_url(tmp_path)
    missing = url.rsplit("/", 1)[0] + "/loom_no_such_db_here"
    store = open_store(missing)
    with pytest.raises(StoreError, match="no PostgreSQL database") as caught:
        await store.open()
    parts = urlsplit(missing)
    for secret in ("loom_no_such_db_here", parts.hostname or "", str(parts.port or 5432)):
        assert secret not in str(caught.value)


async def test_a_workflow_id_with_nul_is_a_store_error_naming_it(tmp_path: Path) -> None:
    store = await opened(pg_url(tmp_path))
    try:
        await store.migrate()
        with pytest.raises(StoreError, match=r"workflow 'bad\\x00id'.*NUL"):
            await create(store, "bad\x00id")
        with pytest.raises(StoreError, match=r"workflow 'bad\\x00id'"):
            await store.send_signal("bad\x00id", "go", None, T0)
    finally:
        await store.close()


@pytest.mark.postgres
async def test_copying_a_nul_id_to_postgres_names_the_workflow(tmp_path: Path) -> None:
    source_url = f"sqlite:///{tmp_path / 'source.db'}"
    source = await opened(source_url)
    await source.migrate()
    await create(source, "fine")
    await create(source, "bad\x00id")  # SQLite stores it
    await source.close()
    with pytest.raises(StoreError, match=r"workflow 'bad\\x00id'"):
        await copy_database(source_url, pg_url(tmp_path))


@pytest.mark.postgres
async def test_the_pool_does_not_log_its_floor_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = await opened(pg_url(tmp_path))
    try:
        pool_log = logging.getLogger("asyncpg.pool")
        with caplog.at_level(logging.WARNING, logger="asyncpg.pool"):
            try:
                raise ConnectionRefusedError("server restarting")
            except ConnectionRefusedError:
                pool_log.warning(
                    "Failed to restore the pool connection floor; retrying", exc_info=True
                )
            pool_log.warning("something else")
        assert [r.getMessage() for r in caplog.records] == ["something else"]
    finally:
        await store.close()


# ------------------------------------------------------------------ a canceled close


@contextlib.asynccontextmanager
async def writes_held(store: Any, workflow_id: str) -> AsyncIterator[None]:
    """While inside, the store's writes to ``workflow_id`` wait: another connection holds the
    SQLite write lock, or the workflow's row on PostgreSQL."""
    if isinstance(store, SqliteStore):
        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")
            other.close()
        return
    other = await asyncpg.connect(store._dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT 1 FROM workflows WHERE id = $1 FOR UPDATE", workflow_id)
        try:
            yield
        finally:
            await tx.rollback()
    finally:
        await other.close()


async def test_a_canceled_close_still_answers_every_commit_queued(db_url: str) -> None:
    """A close waits for the commits in flight; canceled meanwhile (a shutdown cut short), it
    must not cancel them, or the commits queued behind them would wait for an answer forever.
    Each gets one: its outcome, or an error saying the database is closed."""
    store: Any = await opened(db_url)
    await store.migrate()
    await create(store, "w")
    commit = Commit("w", 1, [], WorkflowStatus.RUNNING, {}, None, T0 + 10)
    loop = asyncio.get_running_loop()
    async with writes_held(store, "w"):
        first = loop.create_task(store.commit(commit, T0))
        await eventually(lambda: store._flushing is not None and not store._queue)
        second = loop.create_task(store.commit(commit, T0))  # queued behind the one in flight
        await eventually(lambda: len(store._queue) == 1)
        closing = loop.create_task(store.close())
        await asyncio.sleep(0)  # one turn: the close runs up to its wait for the writes
        closing.cancel()
    _, pending = await asyncio.wait({first, second, closing}, timeout=15)
    for task in pending:
        task.cancel()
    assert not pending, "a commit was never answered"
    assert closing.cancelled()
    assert first.result() in set(CommitOutcome)
    error = second.exception()  # written, or refused: the database closed under it
    assert error is None or isinstance(error, StoreError), error
