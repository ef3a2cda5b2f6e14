"""The state a workflow execution's parts share, and how it fails.

:class:`~loom.core.replay.WorkflowExecution` is built from parts, one per concern (the
decisions the code makes, the inputs fed back to it, the sandbox that keeps it durable); each
part works on the state declared here. Failing is common to all of them: a divergence from the
history becomes one :class:`~loom.errors.NonDeterminismError`, and any failure ends the
execution with a WORKFLOW_FAILED event (:meth:`ExecutionState._finish_failed`).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from typing import Any

from loom.core.calls import Pending
from loom.core.history import Event, EventType
from loom.core.loop import DeterministicLoop
from loom.definitions import WorkflowDefinition
from loom.errors import LoomError, NonDeterminismError, WorkflowSandboxError
from loom.failures import describe_error
from loom.status import WorkflowStatus


def error_payload(exc: BaseException, step: str | None) -> dict[str, Any]:
    """What WORKFLOW_FAILED records (never raises, even for an exception that cannot be
    printed): type, message, step, and the traceback's tail."""
    described = describe_error(exc)
    return {
        "type": described["type"],
        "message": described["message"],
        "step": step,
        "traceback": described["traceback"],
    }


class ExecutionState:
    """What every part of a :class:`~loom.core.replay.WorkflowExecution` reads and changes
    (set by its constructor), and how the execution fails."""

    definition: WorkflowDefinition
    workflow_id: str
    state: dict[str, Any]
    status: WorkflowStatus
    error: dict[str, Any] | None
    current_step: str | None
    now: float
    started_children: bool
    _clock: float
    _next_seq: int
    _new: list[Event]
    _pending: dict[int, Pending]
    _loop: DeterministicLoop
    _main: asyncio.Task[None]
    _failure: NonDeterminismError | None
    _spinning: WorkflowSandboxError | None
    _stream: collections.deque[Event]
    _tearing_down: bool
    _conditions: list[tuple[Callable[[], object], asyncio.Future[None]]]
    _instance: Any
    _detached: set[int]
    _patches: dict[str, bool]

    @property
    def finished(self) -> bool:
        return self.status is not WorkflowStatus.RUNNING

    def _skip_retired_patches(self) -> None:
        """A PATCH_APPLIED the code no longer asks about (the patch's old path was removed once
        no run needed it) is passed over: the code now always takes the new path."""
        while self._stream and self._stream[0].type is EventType.PATCH_APPLIED:
            self._stream.popleft()

    def _waiting_on(self) -> str:
        """What the code is blocked on, by kind, name and seq, for determinism errors."""
        parts = []
        for seq, p in self._pending.items():
            name = p.run.definition.name if p.run is not None else p.name
            if p.child_id is not None:
                name = f"{p.name} {p.child_id}"
            label = f"{p.kind.value} {name!r}" if name else p.kind.value
            parts.append(f"{label} (seq {seq})")
        return ", ".join(parts) or "nothing"

    def _nondeterminism(self, detail: str) -> NonDeterminismError:
        if self._failure is None:
            self._failure = NonDeterminismError(self.workflow_id, detail)
        return self._failure

    def _finish_failed(self, exc: BaseException, *, step: str | None) -> None:
        """Fail with a new WORKFLOW_FAILED event at the end of the history."""
        if self.finished and self.error is not None:
            return
        self._stream.clear()
        self.error = error_payload(exc, step)
        if isinstance(exc, LoomError):
            self.error["traceback"] = None
        self.status = WorkflowStatus.FAILED
        self._new.append(
            Event(self._next_seq, EventType.WORKFLOW_FAILED, {"error": self.error}, self._clock)
        )
        self._next_seq += 1
        for pending in self._pending.values():
            pending.future.cancel()
        self._pending.clear()
