"""The store's rules for task queues: the claim within a queue's limits, setting limits, and
each queue's figures. Shared by both dialects, like every ``*_rules``
module.

A claim reads the limited queues it may take from (``queues`` rows, locked, so two claimers of
one limited queue take turns and each sees the other's leases); with none, it is the one
statement it always was, filtered by queue and ordered by priority. For each limited queue it
counts what is in progress: the rows leased on it whose lease is alive (``lease_owner`` set and
``ready_at`` in the future). A worker that dies stops renewing, its leases run out, and the
slots come back by themselves: no counter a crash could leak. The rate is counted in fixed
windows in the queue's row (``window_start``, ``window_count``): every claim of a workflow task
on the queue is a start.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

from loom.queues import QueueLimits, QueueStats, Rate
from loom.store.common import Row
from loom.store.statements import Dialect, Op, Rule, rows, run

KIND_SEPARATOR = "\x1f"
"""Between a workflow's name and version in a claim's ``names`` entry (``Order\x1f2``): a worker
claims only the versions it has. (Names and versions never hold control characters.)"""


def kind_key(name: str, version: str) -> str:
    return f"{name}{KIND_SEPARATOR}{version}"


def kinds(d: Dialect, names: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
    """The condition that a workflow is of one of ``names``: a plain name (any version) or a
    :func:`kind_key` (that version only)."""
    keys = [n for n in names if KIND_SEPARATOR in n]
    plain = [n for n in names if KIND_SEPARATOR not in n]
    parts: list[str] = []
    args: list[Any] = []
    if plain:
        where, found = d.among("name", plain)
        parts.append(where)
        args.extend(found)
    if keys:
        where, found = d.among("(name || ? || version)", keys)
        parts.append(where)
        args.extend((KIND_SEPARATOR, *found))
    return (parts[0] if len(parts) == 1 else f"({' OR '.join(parts)})"), tuple(args)


CLAIMED_COLUMNS = (
    "id, name, version, lease_epoch, last_seq, cancel_requested, run_id, queue, reset_requested"
)


def on_queues(
    d: Dialect,
    where: str,
    args: tuple[Any, ...],
    queues: Sequence[str] | None,
    exclude: Sequence[str],
) -> tuple[str, tuple[Any, ...]]:
    """``where`` (with ``args``), on ``queues`` (None: any but ``exclude``)."""
    if queues is not None:
        among, found = d.among("queue", queues)
        return f"{among} AND {where}", (*found, *args)
    if exclude:
        among, found = d.among("queue", exclude)
        return f"NOT ({among}) AND {where}", (*found, *args)
    return where, args


def due_statement(
    d: Dialect,
    names: Sequence[str],
    limit: int,
    now: float,
    queues: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> Op:
    """Up to ``limit`` due workflows of ``names`` (see :func:`kinds`) on
    ``queues`` (None: any but ``exclude``), smallest priority first, then oldest due first,
    with when each became due; row-locked, skipping rows another claimer holds (PostgreSQL).
    One queue reads index ``workflows_queue_ready`` in order; any queue,
    ``workflows_priority_ready``."""
    where, args = on_queues(d, *kinds(d, names), queues, exclude)
    return rows(
        f"SELECT id, ready_at FROM workflows WHERE ready_at <= ? AND {where} "
        f"ORDER BY priority, ready_at LIMIT ?{d.skip_locked}",
        now,
        *args,
        limit,
    )


def take(
    d: Dialect,
    owner: str,
    names: Sequence[str],
    limit: int,
    lease_seconds: float,
    now: float,
    queues: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> Rule[list[Row]]:
    """Lease the workflows :func:`due_statement` finds, in the same transaction: a new epoch
    each, and ``ready_at`` at the lease's end, so a dead worker's workflow is claimable again
    then. Each row comes with ``ready_since``, when it became due (the task latency's start)."""
    due = {
        r["id"]: r["ready_at"] for r in (yield due_statement(d, names, limit, now, queues, exclude))
    }
    if not due:
        return []
    where, args = d.among("id", list(due))
    leased = yield rows(
        "UPDATE workflows SET lease_owner = ?, lease_epoch = lease_epoch + 1, ready_at = ? "
        f"WHERE {where} RETURNING {CLAIMED_COLUMNS}",
        owner,
        now + lease_seconds,
        *args,
    )
    # r.keys(): a SQLite row iterates its values, not its keys.
    return [{**{k: r[k] for k in r.keys()}, "ready_since": due[r["id"]]} for r in leased]  # noqa: SIM118


LIMIT_COLUMNS = "name, concurrency, rate_count, rate_period, window_start, window_count"


Take = Callable[..., Rule[list[Row]]]
"""What a claim leases, like :func:`take` (workflows) or :func:`take_tasks` (activity
tasks): ``(d, owner, names, limit, lease_seconds, now, queues, exclude)``."""


def claim(
    d: Dialect,
    owner: str,
    names: Sequence[str],
    limit: int,
    lease_seconds: float,
    now: float,
    queues: Sequence[str] | None = None,
    what: Take = take,
) -> Rule[list[Row]]:
    """Lease up to ``limit`` due workflows of ``names`` (see :func:`take`; ``what``
    :func:`take_tasks`: activity tasks of the activities ``names``) within the limits of their
    queues (see :func:`within_limits`): an activity task counts against its queue's
    concurrency while leased, and its claim is a start in the rate window, like a workflow's."""

    def some(n: int, on: Sequence[str] | None, exclude: Sequence[str]) -> Rule[list[Row]]:
        rule: Rule[list[Row]] = what(d, owner, names, n, lease_seconds, now, on, exclude)
        return rule

    claimed: list[Row] = yield from within_limits(d, some, limit, now, queues)
    return claimed


def take_tasks(
    d: Dialect,
    owner: str,
    activities: Sequence[str],
    limit: int,
    lease_seconds: float,
    now: float,
    queues: Sequence[str] | None,
    exclude: Sequence[str] = (),
) -> Rule[list[Row]]:
    """Lease up to ``limit`` due tasks (``ready_at <= now``: ready, or a dead holder's lease ran
    out) of running workflows, smallest priority first, then oldest due first, read from index
    ``activity_tasks_claim``; row-locked, skipping rows another claimer holds (PostgreSQL)."""
    where, args = on_queues(d, *d.among("activity", activities), queues, exclude)
    due = yield rows(
        "SELECT workflow_id, seq, attempt FROM activity_tasks t WHERE ready_at <= ? "
        f"AND {where} AND cancel_requested = 0 AND EXISTS (SELECT 1 FROM workflows w "
        "WHERE w.id = t.workflow_id AND w.status = 'RUNNING') "
        f"ORDER BY priority, ready_at LIMIT ?{d.skip_locked}",
        now,
        *args,
        limit,
    )
    leased: list[Row] = []
    for r in due:
        leased.extend(
            (
                yield rows(
                    "UPDATE activity_tasks SET state = 'leased', lease_owner = ?, "
                    "lease_epoch = lease_epoch + 1, ready_at = ?, lease_expires = ? "
                    "WHERE workflow_id = ? AND seq = ? AND attempt = ? "
                    "RETURNING workflow_id, seq, attempt, run_id, queue, activity, lease_epoch",
                    owner,
                    now + lease_seconds,
                    now + lease_seconds,
                    r["workflow_id"],
                    r["seq"],
                    r["attempt"],
                )
            )
        )
    return leased


def within_limits(
    d: Dialect, some: Take, limit: int, now: float, queues: Sequence[str] | None
) -> Rule[list[Row]]:
    """Take up to ``limit`` items with ``some`` within the limits of their queues. Several
    named queues are taken from in turn, each from its own index, the queue that comes first
    moving with each claim (so none starves the others)."""
    sql = f"SELECT {LIMIT_COLUMNS} FROM queues WHERE "
    sql += "(concurrency IS NOT NULL OR rate_count IS NOT NULL)"
    args: tuple[Any, ...] = ()
    if queues is not None:
        among, args = d.among("name", queues)
        sql += f" AND {among}"
    limited = yield rows(f"{sql} ORDER BY name{d.lock}", *args)
    by_name = {r["name"]: r for r in limited}
    claimed: list[Row] = []
    order = _rotated(queues, now) if queues is not None else None
    if order is not None and len(order) == 1 and not by_name:
        only: list[Row] = yield from some(limit, order, ())
        return only
    for row in limited if order is None else [by_name[q] for q in order if q in by_name]:
        room = limit - len(claimed)
        if room <= 0:
            break
        allowed, window = yield from _allowance(row, room, now)
        if allowed <= 0:
            continue
        got = yield from some(allowed, [row["name"]], ())
        claimed.extend(got)
        if got and window is not None:
            yield run(
                "UPDATE queues SET window_start = ?, window_count = ? WHERE name = ?",
                window[0],
                window[1] + len(got),
                row["name"],
            )
    if order is None:  # every queue: the unlimited ones in one statement
        room = limit - len(claimed)
        if room > 0:
            claimed.extend((yield from some(room, None, list(by_name))))
        return claimed
    for q in order:
        room = limit - len(claimed)
        if room <= 0:
            break
        if q not in by_name:
            claimed.extend((yield from some(room, [q], ())))
    return claimed


def _rotated(queues: Sequence[str], now: float) -> list[str]:
    unique = sorted(set(queues))
    if len(unique) < 2:
        return unique
    start = int(now * 1000) % len(unique)
    return unique[start:] + unique[:start]


def _allowance(row: Row, room: int, now: float) -> Rule[tuple[int, tuple[float, int] | None]]:
    """How many the limited queue ``row`` may start now (at most ``room``), and its rate window
    (start, count so far) if it has a rate."""
    allowed = room
    if row["concurrency"] is not None:
        busy = yield from in_progress(row["name"], now)
        allowed = min(allowed, int(row["concurrency"]) - busy)
    window = None
    if row["rate_count"] is not None:
        start, count = float(row["window_start"]), int(row["window_count"])
        if now >= start + float(row["rate_period"]):  # a new window begins
            start, count = now, 0
        window = (start, count)
        allowed = min(allowed, int(row["rate_count"]) - count)
    return allowed, window


def in_progress(queue: str, now: float) -> Rule[int]:
    """What is in progress on ``queue``: its workflows held under a live lease, the live slots
    of activities running on it for workflows of other queues, and its activity tasks leased
    under a live lease. (One rule for every claim and slot: nothing counts twice or not at all.)
    """
    [busy] = yield rows(
        "SELECT (SELECT COUNT(*) FROM workflows "
        "WHERE queue = ? AND lease_owner IS NOT NULL AND ready_at > ?) "
        "+ (SELECT COUNT(*) FROM activity_slots WHERE queue = ? AND lease_until > ?) "
        "+ (SELECT COUNT(*) FROM activity_tasks "
        "WHERE queue = ? AND state = 'leased' AND lease_expires > ?) AS n",
        queue,
        now,
        queue,
        now,
        queue,
        now,
    )
    return int(busy["n"])


def acquire_slot(
    d: Dialect,
    queue: str,
    workflow_id: str,
    seq: int,
    owner: str,
    lease_until: float,
    now: float,
) -> Rule[bool]:
    """Let activity ``seq`` of ``workflow_id`` start on ``queue`` if the queue's limits allow:
    a slot (``activity_slots``) held until ``lease_until`` (renewed with the workflow's lease)
    or its release, and a start in the rate window. True when it may start (always, for a
    queue without limits: no slot is taken)."""
    [*found] = yield rows(f"SELECT {LIMIT_COLUMNS} FROM queues WHERE name = ?{d.lock}", queue)
    if not found or (found[0]["concurrency"] is None and found[0]["rate_count"] is None):
        return True
    row = found[0]
    yield run("DELETE FROM activity_slots WHERE queue = ? AND lease_until <= ?", queue, now)
    allowed, window = yield from _allowance(row, 1, now)
    if allowed <= 0:
        return False
    if row["concurrency"] is not None:
        yield run(
            "INSERT INTO activity_slots (workflow_id, seq, queue, owner, lease_until) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (workflow_id, seq) DO UPDATE SET "
            "queue = excluded.queue, owner = excluded.owner, lease_until = excluded.lease_until",
            workflow_id,
            seq,
            queue,
            owner,
            lease_until,
        )
    if window is not None:
        yield run(
            "UPDATE queues SET window_start = ?, window_count = ? WHERE name = ?",
            window[0],
            window[1] + 1,
            queue,
        )
    return True


KEPT_COLUMNS = {"concurrency": ("concurrency",), "rate": ("rate_count", "rate_period")}
"""The columns of each limit a ``set_queue`` may keep as stored."""


def set_queue(limits: QueueLimits, now: float, keep: Collection[str] = ()) -> Rule[QueueLimits]:
    """Store ``limits`` but for the limits named in ``keep`` (a queue with none keeps its row:
    the dashboard lists it), in one upsert, so two changes of different limits both hold;
    the limits stored."""
    unknown = set(keep) - set(KEPT_COLUMNS)
    if unknown:
        raise ValueError(f"unknown limits to keep: {sorted(unknown)}")
    rate = limits.rate
    values = {
        "concurrency": limits.concurrency,
        "rate_count": None if rate is None else rate.count,
        "rate_period": None if rate is None else rate.period,
    }
    kept = {column for limit in keep for column in KEPT_COLUMNS[limit]}
    changed = [c for c in values if c not in kept]
    assigned = "".join(f"{c} = excluded.{c}, " for c in changed)
    [row] = yield rows(
        "INSERT INTO queues (name, concurrency, rate_count, rate_period, updated_at) "
        f"VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET {assigned}"
        f"updated_at = excluded.updated_at RETURNING {LIMIT_COLUMNS}",
        limits.name,
        *(None if c in kept else v for c, v in values.items()),
        now,
    )
    return limits_of(row)


def limits_of(row: Row) -> QueueLimits:
    rate = None
    if row["rate_count"] is not None:
        rate = Rate(int(row["rate_count"]), float(row["rate_period"]))
    concurrency = None if row["concurrency"] is None else int(row["concurrency"])
    return QueueLimits(row["name"], concurrency, rate)


def queue_stats(d: Dialect, now: float) -> Rule[list[QueueStats]]:
    """Each queue that holds live work (ready, leased or sleeping) or has a ``queues`` row."""
    work = yield rows(
        "SELECT queue, "
        "COUNT(CASE WHEN ready_at <= ? THEN 1 END) AS depth, "
        "MIN(CASE WHEN ready_at <= ? THEN ready_at END) AS oldest, "
        "COUNT(CASE WHEN lease_owner IS NOT NULL AND ready_at > ? THEN 1 END) AS running "
        "FROM workflows WHERE ready_at IS NOT NULL GROUP BY queue",
        now,
        now,
        now,
    )
    configured = yield rows(f"SELECT {LIMIT_COLUMNS} FROM queues")
    slots = yield rows(
        "SELECT queue, COUNT(*) AS n FROM activity_slots WHERE lease_until > ? GROUP BY queue",
        now,
    )
    slot_count = {r["queue"]: int(r["n"]) for r in slots}
    # Activity tasks (``task_rules``) count in their queue's figures like its workflows.
    tasks = yield rows(
        "SELECT queue, "
        "COUNT(CASE WHEN state = 'ready' AND ready_at <= ? THEN 1 END) AS depth, "
        "MIN(CASE WHEN state = 'ready' AND ready_at <= ? THEN ready_at END) AS oldest, "
        "COUNT(CASE WHEN state = 'leased' AND lease_expires > ? THEN 1 END) AS running "
        "FROM activity_tasks WHERE state <> 'done' GROUP BY queue",
        now,
        now,
        now,
    )
    task_count = {r["queue"]: r for r in tasks}
    by_name: dict[str, tuple[Row | None, Row | None]] = {}
    for r in work:
        by_name[r["queue"]] = (r, None)
    for q in (*slot_count, *task_count):
        by_name.setdefault(q, (None, None))
    for r in configured:
        by_name[r["name"]] = (by_name.get(r["name"], (None, None))[0], r)
    found = []
    for name in sorted(by_name):
        w, c = by_name[name]
        limits = limits_of(c) if c is not None else QueueLimits(name)
        t = task_count.get(name)
        oldest = min(
            (float(x["oldest"]) for x in (w, t) if x is not None and x["oldest"] is not None),
            default=None,
        )
        in_window = 0
        rated = c is not None and c["rate_count"] is not None
        if rated and c is not None and now < float(c["window_start"]) + float(c["rate_period"]):
            in_window = int(c["window_count"])
        found.append(
            QueueStats(
                name=name,
                depth=sum(int(x["depth"]) for x in (w, t) if x is not None),
                running=sum(int(x["running"]) for x in (w, t) if x is not None)
                + slot_count.get(name, 0),
                concurrency=limits.concurrency,
                rate=limits.rate,
                oldest_waiting_age=None if oldest is None else max(0.0, now - oldest),
                started_in_window=in_window,
            )
        )
    return found
