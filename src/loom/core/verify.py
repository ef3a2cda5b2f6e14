"""Whether the current code reproduces a recorded history: the check behind ``loom replay``
(``Database.check_replay``) and ``loom.testing.Replayer``.

Every step is replayed from the start (``full``), no activity runs, nothing is written: the
code's decisions are matched one by one against the history exactly as a worker matches them
after a crash, so a mismatch is the very :class:`~loom.errors.NonDeterminismError` a worker
would record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loom.core.history import Event
from loom.core.replay import WorkflowExecution
from loom.definitions import WorkflowDefinition
from loom.errors import NonDeterminismError
from loom.status import WorkflowStatus


@dataclass(frozen=True, slots=True)
class Verdict:
    """What replaying a history found."""

    nondeterminism: NonDeterminismError | None
    """The code decided something other than what the history records."""
    overrun: str | None
    """The code goes on past the recorded end of a finished run (what it would do next)."""
    status: WorkflowStatus
    """Where the replayed code stands at the end of the history."""
    state: dict[str, Any]

    @property
    def problem(self) -> str | None:
        """Why the code does not reproduce the history, or None when it does."""
        if self.nondeterminism is not None:
            return str(self.nondeterminism)
        return self.overrun


def verify(
    definition: WorkflowDefinition,
    workflow_id: str,
    history: Sequence[Event],
    recorded: WorkflowStatus,
) -> Verdict:
    """Replay ``history`` (a run whose status is ``recorded``) with ``definition``'s code."""
    execution = WorkflowExecution(
        definition, workflow_id, history, now=history[-1].timestamp, full=True
    )
    try:
        new = execution.take_new_events()
        overrun = None
        if execution.nondeterminism is None and new and recorded is not WorkflowStatus.RUNNING:
            kinds = ", ".join(e.type.value for e in new)
            overrun = f"the code goes on past the recorded end ({recorded.value}): {kinds}"
        return Verdict(execution.nondeterminism, overrun, execution.status, dict(execution.state))
    finally:
        execution.close()


__all__ = ["Verdict", "verify"]
