"""PostgreSQL wake-ups: announcing new work and changes, and listening for them.

Two channels: ``loom_work`` (a workflow became ready: idle workers claim at once) and
``loom_changes`` (some workflow changed: waiters on results and the dashboard's streams read
again). Both are optimisations over polling, so a failure here is logged and otherwise ignored.

Announcing: a ``NOTIFY`` makes its transaction take a database-wide lock through its commit, so
one per start or commit would queue them all behind each other's disk flushes. Instead at most
one announcement per store is in flight, sent after the writes it covers were committed, in a
transaction of its own that does not wait for the disk; whatever is committed meanwhile is
covered by the next one.

Listening: one dedicated connection per store, outside the pool, listens on both channels. If
the server goes away it is reopened in the background as soon as the server is back, and every
listener is woken once then, since announcements may have been missed meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg  # type: ignore[import-untyped]

from loom.errors import ConfigurationError, StoreError

log = logging.getLogger("loom.store.postgres")

WORK = "loom_work"
CHANGES = "loom_changes"
CHANNELS = {"work": WORK, "changes": CHANGES}
"""Listening topic -> channel."""


class Wakeups:
    def __init__(
        self,
        dsn: str,
        connect_timeout: float,
        transaction: Callable[[], AbstractAsyncContextManager[Any]],
    ) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout
        self._transaction = transaction
        self._open = True
        self._listener: Any = None
        self._relisten: asyncio.Task[None] | None = None
        self._callbacks: list[tuple[str, Callable[[], None]]] = []
        self._announcing: asyncio.Task[None] | None = None
        self._pending: set[str] = set()

    # -- announcing -----------------------------------------------------------------------
    def announce(self, *channels: str) -> None:
        """Announce, soon, on ``channels`` (default: both)."""
        self._pending.update(channels or (WORK, CHANGES))
        if self._announcing is None:
            self._announcing = asyncio.get_running_loop().create_task(self._announce_loop())

    async def _announce_loop(self) -> None:
        try:
            while self._pending:
                channels, self._pending = self._pending, set()
                async with self._transaction() as conn:
                    await conn.execute("SET LOCAL synchronous_commit = off")  # holds no data
                    for channel in sorted(channels):
                        await conn.execute(f"NOTIFY {channel}")
        except Exception as exc:
            log.debug("could not announce new work: %s", exc)
        finally:
            self._announcing = None

    # -- listening ------------------------------------------------------------------------
    async def listen(self, callback: Callable[[], None], topic: str) -> None:
        if topic not in CHANNELS:
            raise ConfigurationError(f"unknown notification topic {topic!r}")
        self._callbacks.append((topic, callback))
        if self._listener is None and self._relisten is None:
            try:
                self._listener = await self._open_listener()
            except StoreError:  # unreachable now: keep trying in the background, poll meanwhile
                self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def unlisten(self, callback: Callable[[], None], topic: str) -> None:
        with contextlib.suppress(ValueError):
            self._callbacks.remove((topic, callback))
        if not self._callbacks and self._listener is not None:
            listener, self._listener = self._listener, None
            with contextlib.suppress(Exception):
                await listener.close(timeout=5)

    async def _open_listener(self) -> Any:
        conn = None
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._connect_timeout)
            for channel in CHANNELS.values():
                await conn.add_listener(channel, self._notified)
        except (
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            asyncpg.InternalClientError,
            OSError,
            TimeoutError,
        ) as exc:
            if conn is not None:
                conn.terminate()
            raise StoreError(f"cannot LISTEN on PostgreSQL: {type(exc).__name__}") from exc
        conn.add_termination_listener(self._listener_lost)
        return conn

    def _listener_lost(self, conn: Any) -> None:
        """The server went away: listen again as soon as it is back (polling covers the gap)."""
        if conn is not self._listener or not self._open:
            return
        self._listener = None
        self._relisten = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        delay = 0.1
        try:
            while self._callbacks and self._open:
                try:
                    self._listener = await self._open_listener()
                except StoreError:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                for channel in CHANNELS.values():  # announced while nobody listened, maybe
                    self._notified(None, None, channel)
                return
        finally:
            self._relisten = None

    def _notified(self, _conn: object, _pid: object, channel: str, *_: object) -> None:
        for topic, callback in list(self._callbacks):
            if CHANNELS[topic] == channel:
                callback()

    # -- closing --------------------------------------------------------------------------
    async def finish_announcing(self) -> None:
        """Wait for the announcement in flight (before the pool it uses closes)."""
        if self._announcing is not None:
            with contextlib.suppress(Exception):
                await self._announcing

    async def close(self) -> None:
        self._open = False
        listener, self._listener = self._listener, None
        self._callbacks.clear()
        if self._relisten is not None:
            self._relisten.cancel()
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=5)
