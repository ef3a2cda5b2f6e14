"""SQLite: whole workflows out and in, for ``loom migrate``.

These run on the store's connection, on its thread: an export page inside one read
transaction (one snapshot), an import batch inside one write transaction (all or nothing).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from loom.errors import StoreError
from loom.store.base import WorkflowDump


def read_dumps(
    conn: sqlite3.Connection, where: str, params: tuple[Any, ...], limit: int = -1
) -> list[WorkflowDump]:
    """The dumps of the workflows matching ``where``, in id order."""
    rows = conn.execute(
        f"SELECT {WorkflowDump.ROW_COLUMNS} FROM workflows WHERE {where} ORDER BY id LIMIT ?",
        (*params, limit),
    ).fetchall()
    if not rows:
        return []
    first, last = rows[0][0], rows[-1][0]
    events: dict[str, list[Any]] = {}
    for r in conn.execute(
        "SELECT workflow_id, seq, type, payload, created_at FROM events "
        "WHERE workflow_id >= ? AND workflow_id <= ? ORDER BY workflow_id, seq",
        (first, last),
    ):
        events.setdefault(r[0], []).append(r[1:])
    signals: dict[str, list[Any]] = {}
    for r in conn.execute(
        "SELECT workflow_id, name, payload, created_at FROM signals "
        "WHERE workflow_id >= ? AND workflow_id <= ? ORDER BY workflow_id, id",
        (first, last),
    ):
        signals.setdefault(r[0], []).append(r[1:])
    return [
        WorkflowDump.of_row(row, events.get(row[0], []), signals.get(row[0], [])) for row in rows
    ]


def export_page(conn: sqlite3.Connection, after_id: str | None, limit: int) -> list[WorkflowDump]:
    if after_id is None:
        return read_dumps(conn, "1", (), limit)
    return read_dumps(conn, "id > ?", (after_id,), limit)


def import_batch(conn: sqlite3.Connection, dumps: list[WorkflowDump], url: str) -> int:
    """Insert the workflows of ``dumps`` not yet present; one present with other contents
    fails the whole batch. Returns how many were inserted."""
    inserted = 0
    for d in dumps:
        present = read_dumps(conn, "id = ?", (d.workflow_id,))
        if present:
            differ = present[0].differences(d)
            if differ:
                raise StoreError(
                    f"workflow {d.workflow_id!r} already exists in {url} with "
                    f"different contents ({', '.join(differ)}); nothing of this batch "
                    "was written"
                )
            continue
        try:
            marks = ", ".join("?" * len(WorkflowDump.COPIED_FIELDS))
            conn.execute(
                f"INSERT INTO workflows ({WorkflowDump.INSERT_COLUMNS}) VALUES ({marks})",
                d.insert_values(),
            )
            conn.executemany(
                "INSERT INTO events (workflow_id, seq, type, payload, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                [(d.workflow_id, *e) for e in d.events],
            )
            conn.executemany(
                "INSERT INTO signals (workflow_id, name, payload, created_at) VALUES (?, ?, ?, ?)",
                [(d.workflow_id, *sig) for sig in d.signals],
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot import workflow {d.workflow_id!r} into {url}: {exc}; "
                "nothing of this batch was written"
            ) from exc
        inserted += 1
    return inserted
