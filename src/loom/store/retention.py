"""The rules of retention (``loom gc``, ``loom worker --retention``): counting and deleting
finished workflows that ended before a cutoff (see ``statements``).

A deletion is one short transaction of at most ``limit`` workflows, oldest first, so that it
never holds the database long: on PostgreSQL it skips the rows another transaction holds
(``SKIP LOCKED``) and locks those it deletes, so a concurrent retry or reset of one of them
waits and then finds it gone; on SQLite it is one more small write among the workers' commits.
A workflow's row, its history, the histories of its earlier runs, its buffered signals, its
activity tasks, its activities' heartbeats and queue slots, and its tags go together
(:data:`OWNED_TABLES`).
Children are rows of their own: one is deleted only when it is finished and old too.
"""

from __future__ import annotations

from collections.abc import Sequence

from loom.errors import ConfigurationError
from loom.status import WorkflowStatus
from loom.store.statements import Dialect, Rule, rows, run

OWNED_TABLES = (
    "events",
    "run_events",
    "signals",
    "activity_tasks",  # before the heartbeats: the order a routed heartbeat locks them in
    "activity_heartbeats",
    "activity_slots",  # a slot left by a worker that died expires, but is a row all the same
    "workflow_tags",
)
"""Every table whose rows belong to one workflow (by ``workflow_id``): a deleted workflow
leaves none behind. A child is a ``workflows`` row of its own (``parent_id``), deleted only
when it is finished and old itself."""


def _finished(d: Dialect, statuses: Sequence[WorkflowStatus]) -> tuple[str, tuple[object, ...]]:
    if not statuses or WorkflowStatus.RUNNING in statuses:
        raise ConfigurationError(
            "only finished workflows (COMPLETED, FAILED, CANCELED) can be deleted"
        )
    return d.among("status", sorted({WorkflowStatus(s).value for s in statuses}))


def count_finished(d: Dialect, before: float, statuses: Sequence[WorkflowStatus]) -> Rule[int]:
    where, args = _finished(d, statuses)
    [found] = yield rows(
        f"SELECT COUNT(*) AS n FROM workflows WHERE {where} AND updated_at < ?", *args, before
    )
    return int(found["n"])


def delete_finished(
    d: Dialect, before: float, statuses: Sequence[WorkflowStatus], limit: int
) -> Rule[int]:
    where, args = _finished(d, statuses)
    found = yield rows(
        f"SELECT id FROM workflows WHERE {where} AND updated_at < ? "
        f"ORDER BY updated_at, id LIMIT ?{d.skip_locked}",
        *args,
        before,
        limit,
    )
    ids = [r["id"] for r in found]
    if not ids:
        return 0
    of, ids_args = d.among("workflow_id", ids)
    for table in OWNED_TABLES:
        yield run(f"DELETE FROM {table} WHERE {of}", *ids_args)
    which, ids_args = d.among("id", ids)
    yield run(f"DELETE FROM workflows WHERE {which}", *ids_args)
    return len(ids)
