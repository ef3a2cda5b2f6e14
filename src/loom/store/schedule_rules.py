"""The store's rules for schedules, decided once for every SQL database (see ``statements``).

Firing (:func:`fire_due`) is the rule that matters: in one transaction it takes the due
schedules (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so concurrent passes pass each other's by;
SQLite's write lock serialises them), decides each one's pass (``schedule_spec.plan``: catch-up,
then overlap, from the status of its last run), inserts the workflow of every slot it starts
with its ``WORKFLOW_STARTED`` event, and advances the schedule. A slot's workflow id is derived
from the schedule and the slot (``schedule:<name>:<slot>``, inserted ``ON CONFLICT DO
NOTHING``), and the schedule moves past the slot in the same transaction: whatever crashes and
however many workers run, a slot starts one run at most, and a committed pass never repeats.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from loom.core.history import Event, EventType
from loom.errors import ScheduleAlreadyExistsError, ScheduleNotFoundError, StoreError
from loom.schedule_spec import (
    ScheduleSpec,
    Timing,
    catch_up_policy,
    overlap_policy,
    plan,
    run_id,
    run_prefix,
    slot_iso,
    trigger_iso,
)
from loom.status import WorkflowStatus
from loom.store import start_rules
from loom.store.base import NewWorkflow, RunTarget, ScheduleRecord
from loom.store.common import Row, dump
from loom.store.statements import Dialect, EventRow, Rule, event_rows, events, rows, run

DEFINITION_COLUMNS = (
    "workflow_name, cron, every_seconds, timezone, input, overlap, catch_up, catch_up_limit"
)
SCHEDULE_COLUMNS = (
    f"name, {DEFINITION_COLUMNS}, paused, next_at, buffered_at, last_slot_at, last_run_id, "
    "created_at, updated_at"
)
_ASSIGN_DEFINITION = ", ".join(f"{c.strip()} = ?" for c in DEFINITION_COLUMNS.split(","))


def schedule_record(row: Row) -> ScheduleRecord:
    """A ``schedules`` row selected with :data:`SCHEDULE_COLUMNS`."""
    every = row["every_seconds"]
    spec = ScheduleSpec(
        name=row["name"],
        workflow=row["workflow_name"],
        timing=Timing(
            cron=row["cron"], every=None if every is None else int(every), timezone=row["timezone"]
        ),
        input=orjson.loads(row["input"]),
        overlap=overlap_policy(row["overlap"]),
        catch_up=catch_up_policy(row["catch_up"]),
        catch_up_limit=int(row["catch_up_limit"]),
    )
    return ScheduleRecord(
        spec=spec,
        paused=bool(row["paused"]),
        next_at=row["next_at"],
        buffered_at=row["buffered_at"],
        last_slot_at=row["last_slot_at"],
        last_run_id=row["last_run_id"],
        created=row["created_at"],
        updated=row["updated_at"],
    )


def _definition(spec: ScheduleSpec) -> tuple[Any, ...]:
    t = spec.timing
    return (
        spec.workflow,
        t.cron,
        t.every,
        t.timezone,
        dump(spec.input),
        spec.overlap.value,
        spec.catch_up.value,
        spec.catch_up_limit,
    )


def _locked(d: Dialect, name: str) -> Rule[ScheduleRecord]:
    found = yield rows(f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?{d.lock}", name)
    if not found:
        raise ScheduleNotFoundError(name)
    return schedule_record(found[0])


# -- definitions ------------------------------------------------------------------------------
def save(
    d: Dialect, spec: ScheduleSpec, now: float, replace_existing: bool, paused: bool
) -> Rule[ScheduleRecord]:
    """Create the schedule, or (``replace_existing``) bring an existing one's definition up to
    date, keeping its progress and pause state; see ``Store.save_schedule``."""
    next_at = spec.timing.next_after(now)
    inserted = yield rows(
        f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, ?) "
        "ON CONFLICT (name) DO NOTHING RETURNING name",
        spec.name,
        *_definition(spec),
        int(paused),
        next_at,
        now,
        now,
    )
    if inserted:
        return ScheduleRecord(spec, paused, next_at, None, None, None, now, now)
    if not replace_existing:
        raise ScheduleAlreadyExistsError(spec.name)
    old = yield from _locked(d, spec.name)
    if old.spec == spec:
        return old
    if old.spec.timing == spec.timing:
        next_at = old.next_at
    yield run(
        f"UPDATE schedules SET {_ASSIGN_DEFINITION}, next_at = ?, updated_at = ? WHERE name = ?",
        *_definition(spec),
        next_at,
        now,
        spec.name,
    )
    return replace(old, spec=spec, next_at=next_at, updated=now)


def set_paused(d: Dialect, name: str, paused: bool, now: float) -> Rule[ScheduleRecord]:
    """Pause, or resume from the first slot after ``now``."""
    old = yield from _locked(d, name)
    if old.paused == paused:
        return old
    next_at = old.next_at if paused else old.spec.timing.next_after(now)
    yield run(
        "UPDATE schedules SET paused = ?, next_at = ?, updated_at = ? WHERE name = ?",
        int(paused),
        next_at,
        now,
        name,
    )
    return replace(old, paused=paused, next_at=next_at, updated=now)


def delete(d: Dialect, name: str) -> Rule[None]:
    gone = yield rows("DELETE FROM schedules WHERE name = ? RETURNING name", name)
    if not gone:
        raise ScheduleNotFoundError(name)


# -- runs -------------------------------------------------------------------------------------
SCHEDULE_TAG = "loom.schedule"
"""The tag every run carries, naming its schedule (``loom list --tag loom.schedule=NAME``)."""


def start_run(
    spec: ScheduleSpec,
    target: RunTarget,
    workflow_id: str,
    label: str,
    now: float,
    written: list[EventRow],
) -> Rule[bool]:
    """Insert the run ``workflow_id`` of ``spec`` (ready at once on its workflow's queue, its
    first event added to ``written``, tagged :data:`SCHEDULE_TAG`) unless that id exists; True
    when it was inserted. Its ``WORKFLOW_STARTED`` names the schedule and the slot
    (``label``)."""
    version = target.version
    first = Event(
        1,
        EventType.WORKFLOW_STARTED,
        {
            "name": spec.workflow,
            "version": version,
            "input": spec.input,
            "state": {},
            "schedule": {"name": spec.name, "slot": label},
        },
        now,
    )
    new = NewWorkflow(workflow_id, spec.workflow, version, spec.input, {}, now, queue=target.queue)
    inserted = yield rows(
        f"INSERT INTO workflows ({start_rules.NEW_COLUMNS}) VALUES ({start_rules.NEW_MARKS}) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        *start_rules.new_values(new, first),
    )
    if inserted:
        written.extend(event_rows(workflow_id, [first]))
        yield run(start_rules.INSERT_TAG, workflow_id, SCHEDULE_TAG, spec.name)
    return bool(inserted)


def _running(workflow_id: str | None) -> Rule[bool]:
    if workflow_id is None:
        return False
    found = yield rows("SELECT status FROM workflows WHERE id = ?", workflow_id)
    return bool(found) and found[0]["status"] == WorkflowStatus.RUNNING


def fire_due(
    d: Dialect, targets: Mapping[str, RunTarget], now: float, limit: int
) -> Rule[list[str]]:
    """One scheduler pass (see the module docstring); the ids of the workflows started."""
    where, args = d.among("workflow_name", list(targets))
    due = yield rows(
        f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE paused = 0 "
        f"AND (next_at <= ? OR buffered_at IS NOT NULL) AND {where} "
        f"ORDER BY name LIMIT ?{d.skip_locked}",
        now,
        *args,
        limit,
    )
    started: list[str] = []
    written: list[EventRow] = []
    for row in due:
        s = schedule_record(row)
        spec = s.spec
        decided = plan(
            spec.timing,
            spec.overlap,
            spec.catch_up,
            spec.catch_up_limit,
            next_at=s.next_at,
            buffered=s.buffered_at,
            running=(yield from _running(s.last_run_id)),
            now=now,
        )
        if (decided.starts, decided.buffered, decided.next_at) == ([], s.buffered_at, s.next_at):
            continue  # a held slot whose last run still runs: nothing changes
        last_run, last_slot = s.last_run_id, s.last_slot_at
        for slot in decided.starts:
            last_run, last_slot = run_id(spec.name, slot), slot
            target = targets[spec.workflow]
            if (yield from start_run(spec, target, last_run, slot_iso(slot), now, written)):
                started.append(last_run)
        yield run(
            "UPDATE schedules SET next_at = ?, buffered_at = ?, last_slot_at = ?, "
            "last_run_id = ?, updated_at = ? WHERE name = ?",
            decided.next_at,
            decided.buffered,
            last_slot,
            last_run,
            now,
            spec.name,
        )
    if written:
        yield events(written)
    return started


def trigger(d: Dialect, name: str, target: RunTarget, now: float) -> Rule[str]:
    """Start a run now (see ``Store.trigger_schedule``); it becomes the schedule's last run."""
    s = yield from _locked(d, name)
    label = trigger_iso(now)
    workflow_id = run_prefix(name) + label
    written: list[EventRow] = []
    yield from start_run(s.spec, target, workflow_id, label, now, written)
    yield run(
        "UPDATE schedules SET last_run_id = ?, updated_at = ? WHERE name = ?",
        workflow_id,
        now,
        name,
    )
    if written:
        yield events(written)
    return workflow_id


def import_records(d: Dialect, records: Sequence[ScheduleRecord], label: str) -> Rule[int]:
    """Insert ``records`` as they are (``loom migrate``); see ``Store.import_schedules``."""
    inserted = 0
    for r in records:
        done = yield rows(
            f"INSERT INTO schedules ({SCHEDULE_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO NOTHING RETURNING name",
            r.spec.name,
            *_definition(r.spec),
            int(r.paused),
            r.next_at,
            r.buffered_at,
            r.last_slot_at,
            r.last_run_id,
            r.created,
            r.updated,
        )
        if done:
            inserted += 1
            continue
        [row] = yield rows(f"SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE name = ?", r.spec.name)
        if schedule_record(row) != r:
            raise StoreError(
                f"schedule {r.spec.name!r} already exists in {label} with another definition "
                "or progress; delete it there (`loom schedule delete`) and copy again"
            )
    return inserted


def due(d: Dialect, names: list[str]) -> Rule[tuple[float | None, bool]]:
    where, args = d.among("workflow_name", names)
    [found] = yield rows(
        "SELECT MIN(next_at) AS due, COUNT(buffered_at) AS held FROM schedules "
        f"WHERE paused = 0 AND {where}",
        *args,
    )
    return found["due"], bool(found["held"])
