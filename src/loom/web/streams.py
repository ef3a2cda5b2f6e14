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

A stream holds at most one page of history (:data:`PAGE` events) at a time, however slowly its
client reads, and an event whose payload is above ``max_event_bytes`` is sent without it: the
message says so and links to the JSON API, which returns the event. A stream ends after
``lifetime`` seconds (when set); the client's ``EventSource`` reconnects and resumes from its
``Last-Event-ID``, so no event is lost, and no connection lives forever.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson

from loom.client import Database, WorkflowRecord
from loom.core.history import Event
from loom.web import serialize

LOOKBACK = 2.0
PAGE = 500
MAX_PAGE = 5000
"""The most events one page of the JSON history may ask for."""
STREAM_EVENT_BYTES = 64 * 1024
"""Default: the largest payload (as JSON) a history stream sends inline."""


async def history_page(
    db: Database, workflow_id: str, after_seq: int, limit: int
) -> tuple[list[Event], bool]:
    """At most ``limit`` events after ``after_seq``, and whether more follow.

    Only this page is read: neither the database nor the caller ever holds more than
    ``limit + 1`` events, whatever the length of the history.
    """
    events = await db.history(workflow_id, after_seq=after_seq, limit=limit + 1)
    more = len(events) > limit
    del events[limit:]
    return events, more


def event_href(workflow_id: str, seq: int) -> str:
    """Where the JSON API returns the one event ``seq`` of a workflow."""
    return f"/api/workflows/{quote(workflow_id, safe='')}/events?after_seq={seq - 1}&limit=1"


def streamed_event(workflow_id: str, item: Event, max_bytes: int) -> dict[str, Any]:
    """The event as a stream sends it: without its payload when that is above ``max_bytes``."""
    data = serialize.event(item)
    size = len(orjson.dumps(item.payload))
    if size > max_bytes:
        data["payload"] = None
        data["payload_omitted"] = True
        data["payload_bytes"] = size
        data["href"] = event_href(workflow_id, item.seq)
    return data


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

    def expired(self, lifetime: float | None, started: float) -> bool:
        return lifetime is not None and time.monotonic() - started >= lifetime

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
    lifetime: float | None = None,
    max_event_bytes: int = STREAM_EVENT_BYTES,
) -> AsyncIterator[str]:
    pacer = Pacer(db, poll_interval, heartbeat)
    started = time.monotonic()
    cursor = after_seq
    await db.follow_changes()  # before the first read, so no change falls between the two
    yield "retry: 1000\n\n"
    while not await disconnected() and not pacer.expired(lifetime, started):
        seen = db.workflow_changed.version
        more = True
        while more:
            page, more = await history_page(db, workflow_id, cursor, PAGE)
            for item in page:
                cursor = item.seq
                data = streamed_event(workflow_id, item, max_event_bytes)
                yield message(data, event="history", id=str(item.seq))
            del page
            if more and await disconnected():
                return
        if pacer.beat_due():
            yield ": heartbeat\n\n"
        await pacer.pause(seen)


async def changed_since(db: Database, after: float) -> list[WorkflowRecord]:
    """Workflows updated after ``after``, oldest change first (an indexed read, page by page)."""
    found: list[WorkflowRecord] = []
    after_id = ""
    while True:
        page = await db.changed_since(after, PAGE, after_id)
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
    lifetime: float | None = None,
) -> AsyncIterator[str]:
    pacer = Pacer(db, poll_interval, heartbeat)
    started = time.monotonic()
    cursor = time.time() if after is None else after
    sent: dict[str, float] = {}  # workflow id -> the ``updated`` last sent, within the window
    await db.follow_changes()  # before the first read, so no change falls between the two
    yield "retry: 1000\n\n"
    while not await disconnected() and not pacer.expired(lifetime, started):
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
