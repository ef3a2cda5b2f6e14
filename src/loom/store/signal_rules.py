"""The store's rules for the signal buffer: a signal is buffered in ``signals`` until the
commit that delivers it deletes it (:func:`send_signal` makes a parked workflow ready at once);
a retry or reset buffers the discarded attempt's signals again (:func:`rebuffer`). The ends of
child workflows travel through the same buffer (``cancel_rules.child_ended``).
"""

from __future__ import annotations

from collections.abc import Sequence

from loom.errors import WorkflowNotFoundError, WorkflowNotRunningError
from loom.status import WorkflowStatus
from loom.store.common import Row
from loom.store.statements import Dialect, Rule, many, rows, run, wake_parked


def running_row(d: Dialect, workflow_id: str, action: str) -> Rule[Row]:
    found = yield rows(
        f"SELECT status, lease_owner, ready_at, last_seq FROM workflows WHERE id = ?{d.lock}",
        workflow_id,
    )
    if not found:
        raise WorkflowNotFoundError(workflow_id)
    if found[0]["status"] != WorkflowStatus.RUNNING:
        raise WorkflowNotRunningError(workflow_id, found[0]["status"], action)
    return found[0]  # type: ignore[no-any-return]


INSERT_SIGNAL = "INSERT INTO signals (workflow_id, name, payload, created_at) VALUES (?, ?, ?, ?)"


def send_signal(d: Dialect, workflow_id: str, name: str, data: str, now: float) -> Rule[bool]:
    """Buffer the signal; a workflow parked (not leased, not yet due) is made ready at once.
    True when it was."""
    row = yield from running_row(d, workflow_id, "signal")
    yield run(INSERT_SIGNAL, workflow_id, name, data, now)
    return (yield from wake_parked(row, workflow_id, now))


def rebuffer(workflow_id: str, resent: Sequence[tuple[str, str]], now: float) -> Rule[None]:
    """Buffer ``resent`` (name, payload JSON) again, ahead of the signals still buffered,
    keeping the order in which they were sent."""
    if not resent:
        return
    buffered = yield rows(
        "DELETE FROM signals WHERE workflow_id = ? RETURNING id, name, payload", workflow_id
    )
    again = [*resent, *((r["name"], r["payload"]) for r in sorted(buffered, key=lambda r: r["id"]))]
    yield many(INSERT_SIGNAL, [(workflow_id, name, data, now) for name, data in again])
