"""What every SQL dialect shares: the table's columns and row decoding (by column name), payload
encoding, the migration files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import orjson

from loom import codec
from loom.core.history import Event, EventType, apply_state
from loom.status import WorkflowStatus
from loom.store.base import (
    DumpedEvent,
    DumpedHeartbeat,
    DumpedRunEvent,
    DumpedSignal,
    DumpedTask,
    NewWorkflow,
    WorkflowDump,
    WorkflowRecord,
)

Row = Mapping[str, Any]
"""A row as both drivers return it (``sqlite3.Row``, ``asyncpg.Record``): read by column name."""

WORKFLOW_COLUMNS = (
    "id, name, version, status, input, state, result, error, current_step, created_at, "
    "updated_at, last_seq, ready_at, lease_owner, lease_epoch, cancel_requested, parent_id, "
    "parent_close_policy, run_id, queue, priority, reset_requested"
)
"""Every column of ``workflows``: what :func:`record` and :func:`workflow_dump` read."""

COLUMN_OF_FIELD = {"workflow_id": "id"}
"""The ``workflows`` column of a :class:`WorkflowDump` field, where the two names differ."""

COPY_COLUMNS = ", ".join(COLUMN_OF_FIELD.get(f, f) for f in WorkflowDump.COPIED_FIELDS)
"""The columns a copy is written with, in the order of ``WorkflowDump.insert_values()``."""

EVENT_COLUMNS = "seq, type, payload, created_at"

EVENT_TYPES = {t.value: t for t in EventType}

STATS_MINUTES = 30
"""How many one-minute buckets of completions and failures ``stats`` reports."""


def dump(value: Any) -> str:
    """A payload as stored: JSON text (which may hold a codec's envelopes)."""
    return codec.dumps(value, envelopes=True).decode()


def canonical(value: Any) -> bytes:
    """``value`` as JSON with sorted keys: equal for equal values, whatever their key order."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def equal_input(new: NewWorkflow, stored: Any) -> bool:
    """The same input, as a workflow is written without a codec: equal JSON values."""
    return canonical(stored) == canonical(new.input)


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def state_after(state_json: str | bytes, events: Sequence[Event]) -> str:
    """The stored state ``state_json`` with the state changes among ``events`` applied."""
    if not any(e.type in (EventType.STATE_SET, EventType.STATE_UPDATE) for e in events):
        return state_json if isinstance(state_json, str) else state_json.decode()
    state = orjson.loads(state_json)
    for event in events:
        apply_state(state, event)
    return dump(state)


def minute_buckets(rows: Iterable[Row]) -> dict[WorkflowStatus, list[int]]:
    """``status, minute`` (minutes ago), ``n`` rows as per-minute counts, newest minute first, for
    COMPLETED and FAILED over the last :data:`STATS_MINUTES` minutes."""
    buckets = {s: [0] * STATS_MINUTES for s in (WorkflowStatus.COMPLETED, WorkflowStatus.FAILED)}
    for row in rows:
        if 0 <= row["minute"] < STATS_MINUTES:
            buckets[WorkflowStatus(row["status"])][row["minute"]] = int(row["n"])
    return buckets


def record(row: Row) -> WorkflowRecord:
    """A ``workflows`` row selected with :data:`WORKFLOW_COLUMNS`."""
    return WorkflowRecord(
        workflow_id=row["id"],
        name=row["name"],
        version=row["version"],
        status=WorkflowStatus(row["status"]),
        input=orjson.loads(row["input"]),
        state=orjson.loads(row["state"]),
        result=_json(row["result"]),
        error=_json(row["error"]),
        current_step=row["current_step"],
        created=row["created_at"],
        updated=row["updated_at"],
        last_seq=row["last_seq"],
        ready_at=row["ready_at"],
        leased=row["lease_owner"] is not None,
        cancel_requested=row["cancel_requested"] is not None,
        parent_id=row["parent_id"],
        run_id=row["run_id"],
        queue=row["queue"],
        priority=int(row["priority"]),
        reset_requested=row["reset_requested"] is not None,
    )


def event(row: Row) -> Event:
    """An ``events`` row selected with :data:`EVENT_COLUMNS`."""
    return Event(
        row["seq"], EVENT_TYPES[row["type"]], orjson.loads(row["payload"]), row["created_at"]
    )


def workflow_dump(
    row: Row,
    events: Sequence[Row],
    signals: Sequence[Row],
    run_events: Sequence[Row] = (),
    tags: Sequence[Row] = (),
    heartbeats: Sequence[Row] = (),
    tasks: Sequence[Row] = (),
) -> WorkflowDump:
    """A dump from a ``workflows`` row (:data:`WORKFLOW_COLUMNS`), its events in seq order and
    its buffered signals in id order, payloads kept as the stored text."""
    ready_at = row["ready_at"]
    return WorkflowDump(
        workflow_id=row["id"],
        name=row["name"],
        version=row["version"],
        status=row["status"],
        input=row["input"],
        state=row["state"],
        result=row["result"],
        error=row["error"],
        current_step=row["current_step"],
        created_at=float(row["created_at"]),
        updated_at=float(row["updated_at"]),
        last_seq=int(row["last_seq"]),
        ready_at=None if ready_at is None else float(ready_at),
        lease_owner=row["lease_owner"],
        lease_epoch=int(row["lease_epoch"]),
        cancel_requested=row["cancel_requested"],
        events=tuple(
            DumpedEvent(int(e["seq"]), e["type"], e["payload"], float(e["created_at"]))
            for e in events
        ),
        signals=tuple(
            DumpedSignal(s["name"], s["payload"], float(s["created_at"])) for s in signals
        ),
        parent_id=row["parent_id"],
        parent_close_policy=row["parent_close_policy"],
        run_id=row["run_id"],
        queue=row["queue"],
        priority=int(row["priority"]),
        reset_requested=row["reset_requested"],
        run_events=tuple(
            DumpedRunEvent(
                e["run_id"], int(e["seq"]), e["type"], e["payload"], float(e["created_at"])
            )
            for e in run_events
        ),
        tags=tuple(sorted((t["key"], t["value"]) for t in tags)),
        heartbeats=tuple(
            DumpedHeartbeat(
                int(h["seq"]), h["activity"], int(h["attempt"]), h["details"], float(h["beat_at"])
            )
            for h in heartbeats
        ),
        tasks=tuple(t for t in (dumped_task(r) for r in tasks) if t is not None),
    )


TASK_DUMP_COLUMNS = (
    "seq, attempt, run_id, queue, priority, activity, state, ready_at, lease_epoch, "
    "cancel_requested, outcome, created_at"
)
"""The columns of an ``activity_tasks`` row :func:`dumped_task` reads."""


def dumped_task(row: Row) -> DumpedTask | None:
    """The task of ``row`` as a copy writes it (see :class:`DumpedTask`): a leased one is ready
    when its lease would have run out (its ``ready_at``); one asked to stop, None (nothing
    would run it: its holder was to delete it)."""
    if row["cancel_requested"]:
        return None
    ready_at = row["ready_at"]
    return DumpedTask(
        int(row["seq"]),
        int(row["attempt"]),
        row["run_id"],
        row["queue"],
        int(row["priority"]),
        row["activity"],
        "ready" if row["state"] == "leased" else row["state"],
        None if ready_at is None else float(ready_at),
        int(row["lease_epoch"]),
        row["outcome"],
        float(row["created_at"]),
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
