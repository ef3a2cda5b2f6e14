"""What every SQL dialect shares: row decoding, payload encoding, the migration files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import orjson

from loom import codec
from loom.core.history import Event, EventType, apply_state
from loom.status import WorkflowStatus
from loom.store.base import WorkflowRecord

RECORD_COLUMNS = (
    "id, name, version, status, input, state, result, error, current_step, created_at, "
    "updated_at, last_seq, ready_at, lease_owner, cancel_requested"
)
"""The columns :func:`record` decodes, in its order."""

EVENT_TYPES = {t.value: t for t in EventType}

STATS_MINUTES = 30
"""How many one-minute buckets of completions and failures ``stats`` reports."""


def dump(value: Any) -> str:
    """A payload as stored: JSON text."""
    return codec.dumps(value).decode()


def state_after(state_json: str | bytes, events: Sequence[Event]) -> str:
    """The stored state ``state_json`` with the state changes among ``events`` applied."""
    if not any(e.type in (EventType.STATE_SET, EventType.STATE_UPDATE) for e in events):
        return state_json if isinstance(state_json, str) else state_json.decode()
    state = orjson.loads(state_json)
    for event in events:
        apply_state(state, event)
    return dump(state)


def minute_buckets(rows: Iterable[Any]) -> dict[WorkflowStatus, list[int]]:
    """``(status, minutes ago, count)`` rows as per-minute counts, newest minute first, for
    COMPLETED and FAILED over the last :data:`STATS_MINUTES` minutes."""
    buckets = {s: [0] * STATS_MINUTES for s in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED)}
    for status, minute, count in rows:
        if 0 <= minute < STATS_MINUTES:
            buckets[WorkflowStatus(status)][minute] = int(count)
    return buckets


def record(row: Any) -> WorkflowRecord:
    """A ``workflows`` row selected with :data:`RECORD_COLUMNS`."""
    return WorkflowRecord(
        workflow_id=row[0],
        name=row[1],
        version=row[2],
        status=WorkflowStatus(row[3]),
        input=orjson.loads(row[4]),
        state=orjson.loads(row[5]),
        result=None if row[6] is None else orjson.loads(row[6]),
        error=None if row[7] is None else orjson.loads(row[7]),
        current_step=row[8],
        created=row[9],
        updated=row[10],
        last_seq=row[11],
        ready_at=row[12],
        leased=row[13] is not None,
        cancel_requested=row[14] is not None,
    )


def migrations(dialect: str) -> list[tuple[int, str, str]]:
    """(version, name, sql) of every numbered migration file of ``dialect``, in order."""
    folder = resources.files("loom.store.migrations").joinpath(dialect)
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text()))
    return sorted(found)


def split_sql(sql: str) -> list[str]:
    """The statements of a migration file (``--`` comments removed, split on ``;``)."""
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [s.strip() for s in code.split(";") if s.strip()]
