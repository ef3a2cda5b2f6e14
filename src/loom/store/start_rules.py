"""The store's rules for starting workflows: a new workflow's row (:func:`new_values`, what
every start inserts: a client's, a schedule's, a backend's own single start) and the bulk start
(:func:`create_many`), all or nothing. Shared by both dialects, like every ``*_rules`` module
(see ``statements``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from loom.core.history import Event
from loom.errors import WorkflowAlreadyExistsError
from loom.store.base import NewWorkflow, SameInput
from loom.store.common import Row, dump, equal_input
from loom.store.statements import Dialect, Rule, event_rows, events, many, rows

NEW_COLUMNS_BASE = (
    "id, name, version, status, input, state, created_at, updated_at, last_seq, ready_at, run_id"
)


# -- starts ---------------------------------------------------------------------------------
NEW_COLUMNS = f"{NEW_COLUMNS_BASE}, queue, priority"
NEW_MARKS = ", ".join("?" * len(NEW_COLUMNS.split(",")))


def new_values(new: NewWorkflow, first: Event) -> tuple[Any, ...]:
    """The values of :data:`NEW_COLUMNS` for a new workflow: RUNNING, and ready at once."""
    now = new.now
    return (
        new.workflow_id,
        new.name,
        new.version,
        "RUNNING",
        dump(new.input),
        dump(new.state),
        now,
        now,
        first.seq,
        now,
        new_run_id(),
        new.queue,
        new.priority,
    )


INSERT_TAG = "INSERT INTO workflow_tags (workflow_id, key, value) VALUES (?, ?, ?)"


def new_run_id() -> str:
    return uuid.uuid4().hex


NEW_KINDS = ("text",) * 6 + ("float8", "float8", "bigint", "float8", "text", "text", "int4")
"""The PostgreSQL array type of each of :data:`NEW_COLUMNS`, for a bulk insert (``unnest``)."""
PAGE_OF_IDS = 500
"""Ids looked up per statement (SQLite binds one parameter per id)."""


def create_many(
    d: Dialect, new: Sequence[tuple[NewWorkflow, Event]], same_input: SameInput | None = None
) -> Rule[int]:
    """Insert every new workflow of ``new`` with its first event, all or nothing (a bulk
    start). An id taken by the same workflow (name, and input by ``same_input``) is kept as it
    is; one taken by another raises ``WorkflowAlreadyExistsError``, which rolls the whole
    transaction back."""
    same = same_input or equal_input

    def check_same(item: NewWorkflow, existing: Row) -> None:
        if existing["name"] != item.name:
            raise WorkflowAlreadyExistsError(
                item.workflow_id, f"as a {existing['name']!r} workflow"
            )
        if not same(item, orjson.loads(existing["input"])):
            raise WorkflowAlreadyExistsError(item.workflow_id, "with a different input")

    by_id = {item.workflow_id: (item, first) for item, first in new}
    ids = list(by_id)
    for at in range(0, len(ids), PAGE_OF_IDS):
        where, args = d.among("id", ids[at : at + PAGE_OF_IDS])
        found = yield rows(f"SELECT id, name, input FROM workflows WHERE {where}", *args)
        for r in found:
            check_same(by_id.pop(r["id"])[0], r)
    if not by_id:
        return 0
    # In id order: two batches that share ids then take their row locks in the same order, and
    # one waits for the other instead of both deadlocking.
    values = [new_values(item, first) for _, (item, first) in sorted(by_id.items())]
    if d.list_param:
        # One statement over arrays; another transaction may insert one of these ids meanwhile,
        # so what it inserted is what it returns.
        casts = ", ".join(f"?::{kind}[]" for kind in NEW_KINDS)
        inserted = yield rows(
            f"INSERT INTO workflows ({NEW_COLUMNS}) SELECT * FROM unnest({casts}) "
            "ON CONFLICT (id) DO NOTHING RETURNING id",
            *(list(column) for column in zip(*values, strict=True)),
        )
        raced = set(by_id) - {r["id"] for r in inserted}
        if raced:
            where, args = d.among("id", sorted(raced))
            for r in (yield rows(f"SELECT id, name, input FROM workflows WHERE {where}", *args)):
                check_same(by_id.pop(r["id"])[0], r)
    else:  # the write lock is this transaction's: every id not found is inserted
        yield many(f"INSERT INTO workflows ({NEW_COLUMNS}) VALUES ({NEW_MARKS})", values)
    yield events(
        [row for item, first in by_id.values() for row in event_rows(item.workflow_id, [first])]
    )
    tags = [(item.workflow_id, k, v) for item, _ in by_id.values() for k, v in item.tags]
    if tags:
        yield many(INSERT_TAG, tags)
    return len(by_id)
