"""Which events of a history a replay runs through, decided before any code runs.

A history is not replayed as stored: what a retry or a reset discarded no longer counts
(:func:`kept_events`, :func:`reset_cut`), and the steps that completed are not run again, their
state changes folded into the state the next step starts with (:func:`plan_replay`). A reset
(``loom.core.reset``) and a retry (which buffers again the signals the failed attempt consumed,
:func:`discarded_signals`) plan with the same cuts, so all three agree on what was discarded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loom.core.history import Event, EventType, apply_state
from loom.definitions import WorkflowDefinition
from loom.errors import NonDeterminismError


def plan_replay(
    definition: WorkflowDefinition, workflow_id: str, history: Sequence[Event], *, full: bool
) -> tuple[int, dict[str, Any], list[Event]]:
    """Split a history into (first step to run, state before it, events to replay through it).

    What retries and resets discarded is dropped first (:func:`kept_events`). Then, unless
    ``full``, everything up to the last completed step is folded into the state, so completed
    steps never re-run.
    """
    cleaned = kept_events(workflow_id, history)
    state = dict(history[0].payload.get("state") or {})
    if full:
        return 0, state, cleaned
    first_step = 0
    cut = 0
    for i, event in enumerate(cleaned):
        if event.type is EventType.STEP_COMPLETED:
            index = int(event.payload["index"])
            if (
                index >= len(definition.steps)
                or definition.steps[index].name != event.payload["step"]
            ):
                expected = (
                    definition.steps[index].name if index < len(definition.steps) else "nothing"
                )
                raise NonDeterminismError(
                    workflow_id,
                    f"the history completed step {event.payload['step']!r} at position {index}, "
                    f"where the code now has {expected!r}",
                )
            first_step = index + 1
            cut = i + 1
    for event in cleaned[:cut]:
        apply_state(state, event)
    return first_step, state, cleaned[cut:]


def kept_events(workflow_id: str, history: Sequence[Event]) -> list[Event]:
    """The events after WORKFLOW_STARTED that still count, in order.

    A WORKFLOW_RETRIED drops the failed attempt before it (everything after the last completed
    step); a WORKFLOW_RESET to step ``index`` drops everything after the completion of the step
    before it (all of it for step 0), so the steps from ``index`` on run again and their state
    changes no longer apply.
    """
    if not history or history[0].type is not EventType.WORKFLOW_STARTED:
        raise NonDeterminismError(workflow_id, "the history does not begin with WORKFLOW_STARTED")
    cleaned: list[Event] = []
    attempt_begin = 0
    for event in history[1:]:
        if event.type is EventType.WORKFLOW_RETRIED:
            del cleaned[attempt_begin:]
        elif event.type is EventType.WORKFLOW_RESET:
            del cleaned[reset_cut(workflow_id, cleaned, event) :]
        else:
            cleaned.append(event)
            if event.type is EventType.STEP_COMPLETED:
                attempt_begin = len(cleaned)
            continue
        attempt_begin = len(cleaned)
    return cleaned


def reset_cut(workflow_id: str, kept: Sequence[Event], reset: Event) -> int:
    """Where the WORKFLOW_RESET ``reset`` cuts the events ``kept`` before it: just after the
    completion of the step before the one it restarts from."""
    index = int(reset.payload.get("index", 0))
    if index <= 0:
        return 0
    for i in range(len(kept) - 1, -1, -1):
        event = kept[i]
        if event.type is EventType.STEP_COMPLETED and event.payload.get("index") == index - 1:
            return i + 1
    raise NonDeterminismError(
        workflow_id,
        f"the history resets to step {reset.payload.get('to_step')!r} (seq {reset.seq}), but "
        f"the step before it (position {index - 1}) never completed",
    )


def discarded_signals(history: Sequence[Event]) -> list[tuple[str, Any]]:
    """(name, payload) of the signals consumed by the attempt a retry will discard.

    That attempt is everything after the last completed step (or the last retry or reset).
    """
    start = 0
    for i, event in enumerate(history):
        if event.type in (
            EventType.STEP_COMPLETED,
            EventType.WORKFLOW_RETRIED,
            EventType.WORKFLOW_RESET,
        ):
            start = i + 1
    return signals_in(history[start:])


def signals_in(events: Sequence[Event]) -> list[tuple[str, Any]]:
    """(name, payload) of the signals ``events`` received, in order."""
    return [
        (str(e.payload["name"]), e.payload.get("payload"))
        for e in events
        if e.type is EventType.SIGNAL_RECEIVED
    ]
