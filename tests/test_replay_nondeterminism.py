"""Code that no longer matches its history fails the workflow with a NonDeterminismError naming
both sides, and event-loop calls that cannot be replayed (``asyncio.sleep``) fail it with a
pointer to the replayable helper.

Every test builds a history by hand (``support.replay.History``) or drives the core live to
record one, constructs a ``WorkflowExecution`` from it and checks what the workflow decides next.
"""

from __future__ import annotations

from typing import Any

import pytest

from loom import EventType, NonDeterminismError, WorkflowStatus
from support.replay import (
    RECEIPT,
    T0,
    History,
    ReplayOrder,
    ReplaySleepy,
    execute,
    kinds,
)

# ---------------------------------------------------------------------- non-determinism


def _renamed_activity() -> History:
    h = History({"amount": 30})
    h.step("charge", 0)
    h.activity("replay_bill_card", 30, step="charge")
    return h


def _other_kind_at_seq() -> History:
    h = History({"amount": 30})
    h.step("charge", 0)
    h.timer(T0 + 3600)
    return h


def _completed_step_renamed() -> History:
    h = History({"amount": 30})
    h.step("bill", 0)
    seq = h.activity("replay_charge_card", 30, step="bill")
    h.completed(seq, RECEIPT, name="replay_charge_card")
    h.step_done("bill", 0)
    h.step("ship", 1)
    return h


def _steps_reordered() -> History:
    h = History({"amount": 30}, {"receipt": RECEIPT})
    h.step("ship", 0)
    h.set("shipping", True)
    seq = h.activity("replay_ship_parcel", "rcpt-7", step="ship")
    h.completed(seq, "TRACK-7", name="replay_ship_parcel")
    h.set("tracking", "TRACK-7")
    h.step_done("ship", 0)
    h.step("charge", 1)
    return h


def _completion_never_scheduled() -> History:
    h = History({"amount": 30})
    h.step("charge", 0)
    h.activity("replay_charge_card", 30, step="charge")
    h.completed(9, {"refunded": True}, name="replay_refund")
    return h


def _history_decides_while_code_waits() -> History:
    h = History({"amount": 30})
    h.step("charge", 0)
    h.activity("replay_charge_card", 30, step="charge")
    h.timer(T0 + 3600)
    return h


NONDETERMINISTIC = [
    pytest.param(
        _renamed_activity,
        False,
        ["ACTIVITY_SCHEDULED 'replay_charge_card'", "ACTIVITY_SCHEDULED 'replay_bill_card'"],
        id="activity-renamed",
    ),
    pytest.param(
        _other_kind_at_seq,
        False,
        ["ACTIVITY_SCHEDULED 'replay_charge_card'", "TIMER_SCHEDULED"],
        id="other-kind-at-seq",
    ),
    pytest.param(_completed_step_renamed, False, ["'bill'", "'charge'"], id="step-renamed"),
    pytest.param(
        _completed_step_renamed,
        True,
        ["STEP_STARTED 'charge'", "STEP_STARTED 'bill'"],
        id="step-renamed-full-replay",
    ),
    pytest.param(_steps_reordered, False, ["'ship'", "'charge'"], id="steps-reordered"),
    pytest.param(
        _completion_never_scheduled,
        False,
        ["ACTIVITY_COMPLETED", "seq 9", "'replay_charge_card'"],
        id="completion-never-scheduled",
    ),
    pytest.param(
        _history_decides_while_code_waits,
        False,
        ["TIMER_SCHEDULED", "ACTIVITY_SCHEDULED"],
        id="history-decides-while-code-waits",
    ),
]


@pytest.mark.parametrize(("build", "full", "named"), NONDETERMINISTIC)
def test_divergence_from_history_fails_with_non_determinism_naming_both_sides(
    wid: str, build: Any, full: bool, named: list[str]
) -> None:
    history = build().events

    ex = execute(ReplayOrder, wid, history, full=full)

    assert ex.status is WorkflowStatus.FAILED
    assert isinstance(ex.nondeterminism, NonDeterminismError)
    (failed,) = ex.take_new_events()
    assert (failed.seq, failed.type) == (history[-1].seq + 1, EventType.WORKFLOW_FAILED)
    error = failed.payload["error"]
    assert error["type"] == "NonDeterminismError"
    assert ex.error == error
    for text in named:
        assert text in error["message"], f"{text!r} not named in: {error['message']}"
    assert wid in error["message"]
    assert ex.activity_runs() == []
    assert ex.deadlines() == []


def test_asyncio_sleep_in_workflow_code_fails_pointing_to_ctx_sleep(wid: str) -> None:
    h = History(workflow="replay_Sleepy")

    ex = execute(ReplaySleepy, wid, h.events)

    assert ex.status is WorkflowStatus.FAILED
    new = ex.take_new_events()
    assert kinds(new) == [EventType.STEP_STARTED, EventType.WORKFLOW_FAILED]
    error = new[-1].payload["error"]
    assert "ctx.sleep" in error["message"]
    assert error["step"] == "doze"
    assert ex.deadlines() == []
