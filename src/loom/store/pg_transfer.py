"""PostgreSQL: whole workflows out and in, for ``loom migrate``; and the events insert the
store shares.

Everything here runs on a connection the store opened, inside its transaction: an export page
is read from one snapshot (repeatable read), an import batch is written all or nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loom.core.history import Event
from loom.errors import StoreError
from loom.status import WorkflowStatus
from loom.store.base import WorkflowDump
from loom.store.common import dump
from loom.store.pg_wakeups import WORK

EventRow = tuple[str, int, str, str, float]
"""One ``events`` row to insert: (workflow_id, seq, type, payload JSON, created_at)."""


def event_rows(workflow_id: str, events: Sequence[Event]) -> list[EventRow]:
    return [(workflow_id, e.seq, e.type.value, dump(e.payload), e.timestamp) for e in events]


async def insert_events(conn: Any, rows: list[EventRow]) -> None:
    """Insert many events in one statement (one round trip, whatever their number)."""
    if rows:
        await conn.execute(
            "INSERT INTO events (workflow_id, seq, type, payload, created_at) SELECT * FROM "
            "unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::float8[])",
            *(list(column) for column in zip(*rows, strict=True)),
        )


async def read_dumps(conn: Any, rows: list[Any]) -> list[WorkflowDump]:
    """The dumps of the ``workflows`` rows ``rows`` (in id order), read on ``conn``."""
    if not rows:
        return []
    ids = [r[0] for r in rows]
    events: dict[str, list[Any]] = {}
    for r in await conn.fetch(
        "SELECT workflow_id, seq, type, payload, created_at FROM events "
        "WHERE workflow_id = ANY($1::text[]) ORDER BY workflow_id, seq",
        ids,
    ):
        events.setdefault(r[0], []).append(tuple(r)[1:])
    signals: dict[str, list[Any]] = {}
    for r in await conn.fetch(
        "SELECT workflow_id, name, payload, created_at FROM signals "
        "WHERE workflow_id = ANY($1::text[]) ORDER BY workflow_id, id",
        ids,
    ):
        signals.setdefault(r[0], []).append(tuple(r)[1:])
    return [
        WorkflowDump.of_row(tuple(row), events.get(row[0], []), signals.get(row[0], []))
        for row in rows
    ]


async def export_page(conn: Any, after_id: str | None, limit: int) -> list[WorkflowDump]:
    if after_id is None:
        rows = await conn.fetch(
            f"SELECT {WorkflowDump.ROW_COLUMNS} FROM workflows ORDER BY id LIMIT $1", limit
        )
    else:
        rows = await conn.fetch(
            f"SELECT {WorkflowDump.ROW_COLUMNS} FROM workflows WHERE id > $1 ORDER BY id LIMIT $2",
            after_id,
            limit,
        )
    return await read_dumps(conn, list(rows))


async def import_batch(conn: Any, dumps: Sequence[WorkflowDump], where: str) -> int:
    """Insert the workflows of ``dumps`` not yet present; one present with other contents
    fails the whole batch. Returns how many were inserted."""
    # Lock what is there in id order, as commits do, so nothing changes meanwhile.
    present = await conn.fetch(
        f"SELECT {WorkflowDump.ROW_COLUMNS} FROM workflows WHERE id = ANY($1::text[]) "
        "ORDER BY id FOR UPDATE",
        sorted({d.workflow_id for d in dumps}),
    )
    existing = {d.workflow_id: d for d in await read_dumps(conn, list(present))}
    new: list[WorkflowDump] = []
    for d in dumps:
        there = existing.get(d.workflow_id)
        if there is None:
            new.append(d)
            existing[d.workflow_id] = d  # the same id twice in one batch: once
            continue
        differ = there.differences(d)
        if differ:
            raise StoreError(
                f"workflow {d.workflow_id!r} already exists in {where} with different "
                f"contents ({', '.join(differ)}); nothing of this batch was written"
            )
    if not new:
        return 0
    marks = ", ".join(f"${n}" for n in range(1, len(WorkflowDump.COPIED_FIELDS) + 1))
    await conn.executemany(
        f"INSERT INTO workflows ({WorkflowDump.INSERT_COLUMNS}) VALUES ({marks})",
        [d.insert_values() for d in new],
    )
    await insert_events(conn, [(d.workflow_id, *e) for d in new for e in d.events])
    signals = [(d.workflow_id, *sig) for d in new for sig in d.signals]
    if signals:  # one at a time, in order: ids are handed out in the dumps' order
        await conn.executemany(
            "INSERT INTO signals (workflow_id, name, payload, created_at) VALUES ($1, $2, $3, $4)",
            signals,
        )
    if any(d.status == WorkflowStatus.RUNNING and d.ready_at is not None for d in new):
        await conn.execute(f"NOTIFY {WORK}")
    return len(new)
