"""The rules of copying whole workflows between databases (``loom migrate``): a page out, a
batch in (see ``statements``). A workflow goes with everything stored for it: history, earlier
runs, buffered signals, tags, heartbeats and activity tasks (see ``base.DumpedTask``)."""

from __future__ import annotations

from collections.abc import Sequence

from loom.errors import StoreError
from loom.store.base import WorkflowDump
from loom.store.common import (
    COPY_COLUMNS,
    EVENT_COLUMNS,
    TASK_DUMP_COLUMNS,
    WORKFLOW_COLUMNS,
    Row,
    workflow_dump,
)
from loom.store.signal_rules import INSERT_SIGNAL
from loom.store.statements import Dialect, Rule, events, many, rows


def read_dumps(d: Dialect, found: Sequence[Row]) -> Rule[list[WorkflowDump]]:
    """The dumps of the ``workflows`` rows ``found`` (:data:`WORKFLOW_COLUMNS`, in id order)."""
    if not found:
        return []
    where, args = d.among("workflow_id", [r["id"] for r in found])
    events: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            f"SELECT workflow_id, {EVENT_COLUMNS} FROM events WHERE {where} "
            "ORDER BY workflow_id, seq",
            *args,
        )
    ):
        events.setdefault(r["workflow_id"], []).append(r)
    signals: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            f"SELECT workflow_id, name, payload, created_at FROM signals WHERE {where} "
            "ORDER BY workflow_id, id",
            *args,
        )
    ):
        signals.setdefault(r["workflow_id"], []).append(r)
    earlier: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            f"SELECT workflow_id, run_id, {EVENT_COLUMNS} FROM run_events WHERE {where} "
            "ORDER BY workflow_id, run_id, seq",
            *args,
        )
    ):
        earlier.setdefault(r["workflow_id"], []).append(r)
    tags: dict[str, list[Row]] = {}
    for r in (
        yield rows(f"SELECT workflow_id, key, value FROM workflow_tags WHERE {where}", *args)
    ):
        tags.setdefault(r["workflow_id"], []).append(r)
    beats: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            "SELECT workflow_id, seq, activity, attempt, details, beat_at "
            f"FROM activity_heartbeats WHERE {where} ORDER BY workflow_id, seq",
            *args,
        )
    ):
        beats.setdefault(r["workflow_id"], []).append(r)
    tasks: dict[str, list[Row]] = {}
    for r in (
        yield rows(
            f"SELECT workflow_id, {TASK_DUMP_COLUMNS} FROM activity_tasks WHERE {where} "
            "ORDER BY workflow_id, seq, attempt",
            *args,
        )
    ):
        tasks.setdefault(r["workflow_id"], []).append(r)
    return [
        workflow_dump(
            r,
            events.get(r["id"], []),
            signals.get(r["id"], []),
            earlier.get(r["id"], []),
            tags.get(r["id"], []),
            beats.get(r["id"], []),
            tasks.get(r["id"], []),
        )
        for r in found
    ]


def export_page(d: Dialect, after_id: str | None, limit: int) -> Rule[list[WorkflowDump]]:
    after, args = ("", ()) if after_id is None else ("WHERE id > ? ", (after_id,))
    found = yield rows(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows {after}ORDER BY id LIMIT ?", *args, limit
    )
    return (yield from read_dumps(d, found))


def import_batch(d: Dialect, dumps: Sequence[WorkflowDump], where: str) -> Rule[list[WorkflowDump]]:
    """Insert the workflows of ``dumps`` not yet present; one present with other contents fails
    the whole batch. Returns those inserted."""
    # Lock what is there in id order, as commits do, so nothing changes meanwhile.
    ids, params = d.among("id", sorted({x.workflow_id for x in dumps}))
    present = yield rows(
        f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE {ids} ORDER BY id{d.lock}", *params
    )
    existing = {x.workflow_id: x for x in (yield from read_dumps(d, present))}
    new: list[WorkflowDump] = []
    for x in dumps:
        there = existing.get(x.workflow_id)
        if there is None:
            new.append(x)
            existing[x.workflow_id] = x  # the same id twice in one batch: once
            continue
        differ = there.differences(x)
        if differ:
            raise StoreError(
                f"workflow {x.workflow_id!r} already exists in {where} with different "
                f"contents ({', '.join(differ)}); nothing of this batch was written"
            )
    if not new:
        return []
    marks = ", ".join("?" * len(WorkflowDump.COPIED_FIELDS))
    yield many(
        f"INSERT INTO workflows ({COPY_COLUMNS}) VALUES ({marks})",
        [x.insert_values() for x in new],
    )
    yield events([(x.workflow_id, *e) for x in new for e in x.events])
    signals = [(x.workflow_id, *s) for x in new for s in x.signals]
    if signals:  # in order: ids are handed out in the dumps' order
        yield many(INSERT_SIGNAL, signals)
    earlier = [(x.workflow_id, *e) for x in new for e in x.run_events]
    if earlier:
        yield many(
            "INSERT INTO run_events (workflow_id, run_id, seq, type, payload, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            earlier,
        )
    tags = [(x.workflow_id, k, v) for x in new for k, v in x.tags]
    if tags:
        yield many("INSERT INTO workflow_tags (workflow_id, key, value) VALUES (?, ?, ?)", tags)
    beats = [(x.workflow_id, *h) for x in new for h in x.heartbeats]
    if beats:
        yield many(
            "INSERT INTO activity_heartbeats (workflow_id, seq, activity, attempt, details, "
            "beat_at) VALUES (?, ?, ?, ?, ?, ?)",
            beats,
        )
    tasks = [(x.workflow_id, *t) for x in new for t in x.tasks]
    if tasks:
        yield many(
            "INSERT INTO activity_tasks (workflow_id, seq, attempt, run_id, queue, priority, "
            "activity, state, ready_at, lease_epoch, outcome, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            tasks,
        )
    return new
