"""Server-sent event streams: one workflow's history, and every workflow change.

Both streams send everything after a cursor, then follow: they wake when
``Database.workflow_changed`` fires, which it does for changes made in this process and, on
PostgreSQL, for those of every other process (LISTEN on the store's ``changes`` channel); they
also poll every ``poll_interval`` seconds, which is what finds other processes' changes on
SQLite. A comment line is sent every ``heartbeat`` seconds so proxies keep the connection
open. Each message carries an ``id``; a client that reconnects with ``Last-Event-ID``
(browsers do this by themselves) resumes after it.

* ``/api/workflows/{id}/events/stream``: the cursor is the event ``seq``; each message is one
  history event (``event: history``), exactly once and in order.
* ``/api/events/stream``: the cursor is the newest ``updated`` time sent so far (ids never
  decrease); each message is the summary of a workflow that changed (``event: workflow``).
  Writers stamp ``updated`` just before they commit, so a change can become visible slightly
  after a later-stamped one: the stream re-reads a window of :data:`LOOKBACK` seconds behind
  its cursor so it does not skip such a change. Delivery is at least once: after a reconnect,
  changes from that window may repeat (each message is a full summary, so applying one twice
  is harmless). Without a cursor the stream starts with the changes of that window.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

import orjson

from loom.client import Database
from loom.store.base import WorkflowRecord
from loom.web import serialize

LOOKBACK = 2.0
PAGE = 500


def message(data: object, *, event: str, id: str) -> str:
    return f"id: {id}\nevent: {event}\ndata: {orjson.dumps(data).decode()}\n\n"


class Pacer:
    """Sleeps until the next change or poll, and says when a heartbeat is due."""

    def __init__(self, db: Database, poll_interval: float, heartbeat: float) -> None:
        self.db = db
        self.poll_interval = poll_interval
        self.heartbeat = heartbeat
        self.last_beat = time.monotonic()

    def beat_due(self) -> bool:
        now = time.monotonic()
        if now - self.last_beat >= self.heartbeat:
            self.last_beat = now
            return True
        return False

    async def pause(self, since: int) -> None:
        """Wait for a change noticed after ``since`` (a ``workflow_changed.version``), a poll,
        or the next heartbeat, whichever comes first."""
        left = self.heartbeat - (time.monotonic() - self.last_beat)
        await self.db.workflow_changed.wait(max(0.0, min(self.poll_interval, left)), since)


async def workflow_history(
    db: Database,
    workflow_id: str,
    after_seq: int,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_interval: float,
    heartbeat: float,
) -> AsyncIterator[str]:
    pacer = Pacer(db, poll_interval, heartbeat)
    cursor = after_seq
    await db.follow_changes()  # before the first read, so no change falls between the two
    yield "retry: 1000\n\n"
    while not await disconnected():
        seen = db.workflow_changed.version
        for item in await db.store.load_history(workflow_id, after_seq=cursor):
            cursor = item.seq
            yield message(serialize.event(item), event="history", id=str(item.seq))
        if pacer.beat_due():
            yield ": heartbeat\n\n"
        await pacer.pause(seen)


async def changed_since(db: Database, after: float) -> list[WorkflowRecord]:
    """Workflows updated after ``after``, oldest change first (an indexed read, page by page)."""
    found: list[WorkflowRecord] = []
    after_id = ""
    while True:
        page = await db.store.changed_since(after, PAGE, after_id)
        found.extend(page)
        if len(page) < PAGE:
            return found
        after, after_id = page[-1].updated, page[-1].workflow_id


async def all_changes(
    db: Database,
    after: float | None,
    disconnected: Callable[[], Awaitable[bool]],
    *,
    poll_interval: float,
    heartbeat: float,
) -> AsyncIterator[str]:
    pacer = Pacer(db, poll_interval, heartbeat)
    cursor = time.time() if after is None else after
    sent: dict[str, float] = {}  # workflow id -> the ``updated`` last sent, within the window
    await db.follow_changes()  # before the first read, so no change falls between the two
    yield "retry: 1000\n\n"
    while not await disconnected():
        seen = db.workflow_changed.version
        for record in await changed_since(db, cursor - LOOKBACK):
            if sent.get(record.workflow_id) == record.updated:
                continue
            sent[record.workflow_id] = record.updated
            cursor = max(cursor, record.updated)
            yield message(serialize.summary(record), event="workflow", id=f"{cursor:.6f}")
        horizon = cursor - LOOKBACK
        for wid in [w for w, updated in sent.items() if updated <= horizon]:
            del sent[wid]
        if pacer.beat_due():
            yield ": heartbeat\n\n"
        await pacer.pause(seen)
