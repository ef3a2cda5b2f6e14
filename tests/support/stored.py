"""What a database holds, read and changed behind Loom's back: for tests that prove nothing
readable reaches it (``stored_bytes``) and that an altered value is detected."""

from __future__ import annotations

import base64
import contextlib
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]


def sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:///"))


async def stored_bytes(url: str) -> bytes:
    """Everything the database holds: the SQLite file with its WAL (free pages and all), or
    every row of every table of the PostgreSQL database as text (found in the catalog, so a
    table added later is scanned too)."""
    if url.startswith("sqlite"):
        path = sqlite_path(url)
        files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
        return b"".join(f.read_bytes() for f in files if f.exists())
    conn = await asyncpg.connect(url)
    try:
        tables = await conn.fetch(
            "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) AS name "
            "FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
        )
        assert {"workflows", "activity_heartbeats", "workflow_tags", "activity_tasks"} <= {
            t["name"].rsplit(".", 1)[-1] for t in tables
        }
        texts = []
        for table in (t["name"] for t in tables):
            texts += [r[0] for r in await conn.fetch(f"SELECT t::text FROM {table} t")]
        return "\n".join(texts).encode()
    finally:
        await conn.close()


def found_in(stored: bytes, texts: list[str]) -> list[str]:
    """Those of ``texts`` that ``stored`` holds in plain text (UTF-8)."""
    return [t for t in texts if t.encode() in stored]


async def event_payload_text(url: str, workflow_id: str, seq: int) -> str:
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as conn, conn:
            [row] = conn.execute(
                "SELECT payload FROM events WHERE workflow_id = ? AND seq = ?", (workflow_id, seq)
            ).fetchall()
            return str(row[0])
    conn = await asyncpg.connect(url)
    try:
        return str(
            await conn.fetchval(
                "SELECT payload FROM events WHERE workflow_id = $1 AND seq = $2", workflow_id, seq
            )
        )
    finally:
        await conn.close()


async def rewrite_event_payload(url: str, workflow_id: str, seq: int, payload: str) -> None:
    """Change a stored event behind Loom's back (as someone with access to the database)."""
    if url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(sqlite_path(url))) as conn, conn:
            conn.execute(
                "UPDATE events SET payload = ? WHERE workflow_id = ? AND seq = ?",
                (payload, workflow_id, seq),
            )
        return
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "UPDATE events SET payload = $1 WHERE workflow_id = $2 AND seq = $3",
            payload,
            workflow_id,
            seq,
        )
    finally:
        await conn.close()


def flip_a_bit(envelope: dict[str, Any]) -> dict[str, Any]:
    """The envelope with one bit of its ciphertext flipped."""
    data = bytearray(base64.b64decode(envelope["data"]))
    data[len(data) // 2] ^= 0x01
    return {**envelope, "data": base64.b64encode(bytes(data)).decode()}
