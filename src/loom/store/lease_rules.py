"""The store's rules for what a held lease allows: a claim's settling of the cancel or reset
requested before it (:func:`settle_claimed`; the claim itself is ``queue_rules.claim``),
renewing and releasing leases (:func:`held`), and activity heartbeats, fenced by the lease like
commits (:func:`record_heartbeat`) and deleted with their workflow's end (``commit_rules``,
``cancel_rules``).
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from loom.status import WorkflowStatus
from loom.store.base import CommitOutcome, HeartbeatRow
from loom.store.cancel_rules import cancel_now
from loom.store.commit_rules import fences, lock_fences
from loom.store.common import Row
from loom.store.reset_rules import reset_now, reset_of
from loom.store.statements import Dialect, EventRow, Op, Rule, events, rows, run


def requested(row: Row) -> bool:
    """Whether a claimed row (``queue_rules.claim``) carries a cancel or reset request."""
    return row["cancel_requested"] is not None or row["reset_requested"] is not None


def settle_claimed(d: Dialect, claimed: Sequence[Row], now: float) -> Rule[list[str]]:
    """A claimed workflow whose cancel was requested is never run again: end it as CANCELED;
    one whose reset was requested is reset (and ready for the next claim). Unless the claim's
    lease ``claimed`` (rows of ``queue_rules.claim``) moved on meanwhile. Returns the names of
    the workflows it ended as CANCELED."""
    fenced = fences((yield lock_fences(d, [r["id"] for r in claimed])))
    written: list[EventRow] = []
    ended: list[str] = []
    for r in claimed:
        fence = fenced.get(r["id"])
        if (
            fence is None
            or fence.epoch != r["lease_epoch"]
            or fence.status != WorkflowStatus.RUNNING
        ):
            continue
        if fence.cancel_requested is not None:
            reason = orjson.loads(fence.cancel_requested)
            yield from cancel_now(d, r["id"], reason, fence.last_seq, now, written)
            ended.append(str(r["name"]))
        elif fence.reset_requested is not None:
            yield from reset_now(d, r["id"], reset_of(fence.reset_requested), now, written)
    if written:
        yield events(written)
    return ended


# -- leases ---------------------------------------------------------------------------------
def held(d: Dialect, assign: str, value: float, owner: str, workflow_ids: list[str]) -> Op:
    """Set ``assign`` on the workflows of ``workflow_ids`` still leased to ``owner``; rows
    are locked in id order, like a commit batch, so the two never deadlock."""
    where, args = d.among("id", workflow_ids)
    return rows(
        f"UPDATE workflows SET {assign} WHERE id IN (SELECT id FROM workflows WHERE {where} "
        f"AND lease_owner = ? AND status = 'RUNNING' ORDER BY id{d.lock}) "
        "RETURNING id, (cancel_requested IS NOT NULL OR reset_requested IS NOT NULL) AS stop",
        value,
        *args,
        owner,
    )


# -- heartbeats -----------------------------------------------------------------------------
RECORD_HEARTBEAT = (
    "INSERT INTO activity_heartbeats (workflow_id, seq, activity, attempt, details, beat_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, seq) DO UPDATE SET "
    "details = CASE WHEN excluded.details IS NULL "
    "AND activity_heartbeats.activity = excluded.activity THEN activity_heartbeats.details "
    "ELSE excluded.details END, "
    "activity = excluded.activity, attempt = excluded.attempt, beat_at = excluded.beat_at"
)
"""A heartbeat without details keeps the details recorded before for the same activity."""


def record_heartbeat(
    d: Dialect, workflow_id: str, lease_epoch: int, beat: HeartbeatRow
) -> Rule[CommitOutcome]:
    """Record a heartbeat, fenced like a commit: only while the workflow is RUNNING under
    ``lease_epoch``, so a worker that lost its lease cannot overwrite what the new holder's
    attempt records. CANCELED when the workflow was canceled, or its cancel requested (the beat
    is written then): its worker stops it."""
    fence = fences((yield lock_fences(d, [workflow_id]))).get(workflow_id)
    if fence is not None and fence.status == WorkflowStatus.CANCELED:
        return CommitOutcome.CANCELED
    if fence is None or fence.epoch != lease_epoch or fence.status != WorkflowStatus.RUNNING:
        return CommitOutcome.FENCED
    yield run(RECORD_HEARTBEAT, workflow_id, *beat)
    return CommitOutcome.OK if fence.cancel_requested is None else CommitOutcome.CANCELED
