"""Planning a reset: from which step a workflow restarts, with which state and signals.

``handle.reset(to_step=...)`` restarts a workflow of any status from a named step. The plan is
made here, from the history alone (pure: no I/O), and recorded by the store as a
``WORKFLOW_RESET`` event that replay then honours (:func:`loom.core.replay_plan.kept_events`): the
steps before ``to_step`` keep their completed work and state changes, everything after the
completion of the step before it is discarded, and the signals the discarded part consumed are
buffered again, so the steps that run again receive them as the first run did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loom.core.history import Event, EventType, apply_state
from loom.core.replay_plan import kept_events, reset_cut, signals_in
from loom.errors import UnknownStepError


@dataclass(frozen=True, slots=True)
class ResetPlan:
    """What a reset records: the step it restarts from (``to_step`` at position ``index``), the
    state that step starts with, and the signals to buffer again (in the order received)."""

    to_step: str
    index: int
    state: dict[str, Any]
    resend: list[tuple[str, Any]]
    last_seq: int
    """The last seq of the history planned on: the reset applies only if nothing was added."""


def plan_reset(
    workflow_id: str,
    workflow_name: str,
    history: Sequence[Event],
    to_step: str,
    steps: Sequence[str] | None = None,
) -> ResetPlan:
    """Plan the reset of the workflow whose ``history`` is given to step ``to_step``.

    A workflow can be reset to any step that completed, and to the step after the last one
    that did (the one it was running, failed or was canceled in): the steps before must have
    completed. ``steps`` are the step names of its class, when it is registered here (the next
    step of a workflow that never started it is known from them only). Anything else raises
    :class:`~loom.errors.UnknownStepError` listing the steps it can be reset to.
    """
    kept = kept_events(workflow_id, history)
    reachable: dict[str, int] = {}
    following: tuple[int, str] | None = None
    for event in kept:
        if event.type is EventType.STEP_COMPLETED:
            index = int(event.payload.get("index", 0))
            reachable.setdefault(str(event.payload.get("step")), index)
            following = None
        elif event.type is EventType.STEP_STARTED:
            following = (int(event.payload.get("index", 0)), str(event.payload.get("step")))
    next_index = len(reachable)
    if following is None:
        following = _step_restarted(history, next_index)
    if steps is not None and next_index < len(steps):
        following = (next_index, steps[next_index])
    if following is not None and following[0] == next_index:
        reachable.setdefault(following[1], following[0])
    if to_step not in reachable:
        raise UnknownStepError(
            workflow_id, workflow_name, to_step, list(reachable), list(steps or []) or None
        )
    index = reachable[to_step]
    marker = Event(0, EventType.WORKFLOW_RESET, {"to_step": to_step, "index": index}, 0.0)
    cut = reset_cut(workflow_id, kept, marker)
    state = dict(history[0].payload.get("state") or {})
    for event in kept[:cut]:
        apply_state(state, event)
    return ResetPlan(to_step, index, state, signals_in(kept[cut:]), history[-1].seq)


def _step_restarted(history: Sequence[Event], next_index: int) -> tuple[int, str] | None:
    """The step a reset or retry that has not run yet restarts from: its own events were
    discarded, the marker alone names it (the class, which lists the steps, may not be here)."""
    for event in reversed(history):
        if event.type is EventType.WORKFLOW_RESET:
            return int(event.payload.get("index", 0)), str(event.payload.get("to_step"))
        if event.type is EventType.WORKFLOW_RETRIED and event.payload.get("step"):
            return next_index, str(event.payload["step"])
        if event.type in (EventType.STEP_STARTED, EventType.STEP_COMPLETED):
            return None  # the workflow ran on since: its steps name themselves
    return None
