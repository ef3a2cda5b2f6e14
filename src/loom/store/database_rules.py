"""The store's rules for the database as a whole rather than one workflow: its schema
(:func:`migrate`, the numbered migration files applied once each, under a lock) and its figures
(:func:`stats`, read without scanning the events).
"""

from __future__ import annotations

import time

from loom.status import WorkflowStatus
from loom.store.base import ActivityTaskCounts, QueueTasks, StoreStats
from loom.store.common import STATS_MINUTES, migrations, minute_buckets, split_sql
from loom.store.statements import Dialect, Rule, rows, run


def migrate(d: Dialect) -> Rule[list[str]]:
    if d.migration_lock:
        yield run(d.migration_lock)
    yield run(
        "CREATE TABLE IF NOT EXISTS loom_migrations (version INTEGER PRIMARY KEY, "
        "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
    )
    done = {r["version"] for r in (yield rows("SELECT version FROM loom_migrations"))}
    applied = []
    for version, name, sql in migrations(d.name):
        if version in done:
            continue
        for statement in split_sql(sql):
            yield run(statement)
        yield run("INSERT INTO loom_migrations VALUES (?, ?, ?)", version, name, time.time())
        applied.append(name)
    return applied


def stats(d: Dialect, now: float) -> Rule[StoreStats]:
    by_status = yield rows("SELECT status, COUNT(*) AS n FROM workflows GROUP BY status")
    # The number of events is the sum of every workflow's last sequence number: no scan of the
    # (much larger) events table.
    per_queue = yield rows(
        "SELECT queue, COUNT(CASE WHEN ready_at <= ? AND lease_owner IS NULL THEN 1 END) AS ready, "
        "MIN(CASE WHEN ready_at <= ? AND lease_owner IS NULL THEN ready_at END) AS oldest, "
        "COUNT(CASE WHEN lease_owner IS NOT NULL AND ready_at > ? THEN 1 END) AS leased, "
        "COUNT(CASE WHEN lease_owner IS NULL AND ready_at > ? THEN 1 END) AS sleeping, "
        "COUNT(CASE WHEN status = 'RUNNING' AND ready_at IS NULL THEN 1 END) AS waiting, "
        "COALESCE(SUM(last_seq), 0) AS events FROM workflows GROUP BY queue ORDER BY queue",
        now,
        now,
        now,
        now,
    )
    by_queue = {
        str(r["queue"]): QueueTasks(
            ready=int(r["ready"]),
            leased=int(r["leased"]),
            sleeping=int(r["sleeping"]),
            waiting=int(r["waiting"]),
            oldest_ready_age=None if r["oldest"] is None else max(0.0, now - r["oldest"]),
        )
        for r in per_queue
    }
    ages = [q.oldest_ready_age for q in by_queue.values() if q.oldest_ready_age is not None]
    [signals] = yield rows("SELECT COUNT(*) AS n FROM signals")
    ended = minute_buckets(
        (
            yield rows(
                f"SELECT status, {d.minutes_ago} AS minute, COUNT(*) AS n FROM workflows "
                "WHERE updated_at > ? AND status IN ('COMPLETED', 'FAILED') GROUP BY 1, 2",
                now,
                now - 60 * STATS_MINUTES,
            )
        )
    )
    per_minute = ended[WorkflowStatus.COMPLETED]
    tasks = yield rows(
        "SELECT queue, COUNT(CASE WHEN state <> 'done' AND ready_at <= ? THEN 1 END) AS ready, "
        "COUNT(CASE WHEN state = 'ready' AND ready_at > ? THEN 1 END) AS sleeping, "
        "COUNT(CASE WHEN state = 'leased' AND lease_expires > ? THEN 1 END) AS leased, "
        "COUNT(CASE WHEN state = 'done' THEN 1 END) AS done "
        "FROM activity_tasks GROUP BY queue ORDER BY queue",
        now,
        now,
        now,
    )
    return StoreStats(
        by_status={str(r["status"]): int(r["n"]) for r in by_status},
        ready=sum(q.ready for q in by_queue.values()),
        leased=sum(q.leased for q in by_queue.values()),
        sleeping=sum(q.sleeping for q in by_queue.values()),
        waiting=sum(q.waiting for q in by_queue.values()),
        oldest_ready_age=max(ages) if ages else None,
        events=sum(int(r["events"]) for r in per_queue),
        signals_pending=int(signals["n"]),
        completed_last_minute=per_minute[0],
        completed_per_minute=per_minute,
        failed_per_minute=ended[WorkflowStatus.FAILED],
        by_queue=by_queue,
        activity_tasks={
            str(r["queue"]): ActivityTaskCounts(
                int(r["ready"]), int(r["sleeping"]), int(r["leased"]), int(r["done"])
            )
            for r in tasks
        },
    )
