"""The replay core and waiting: timers become deadlines, signal waits (with or without a
timeout) resume with what was received, and a pending wait is rebuilt from history.

Every test builds a history by hand (``support.replay.History``) or drives the core live to
record one, constructs a ``WorkflowExecution`` from it and checks what the workflow decides next.
"""

from __future__ import annotations

from loom import Event, EventType, WorkflowStatus
from loom.core.replay import WorkflowExecution
from support.replay import (
    T0,
    History,
    ReplayApproval,
    ReplayNap,
    assert_replays_from_every_prefix,
    execute,
    kinds,
    shape,
)

# --------------------------------------------------------------------------- timers


def test_timer_becomes_a_deadline_and_firing_it_continues_the_step(wid: str) -> None:
    h = History(workflow="replay_Nap")
    ex = execute(ReplayNap, wid, h.events, now=T0 + 1)

    first = ex.take_new_events()
    assert shape(first) == [
        (2, EventType.STEP_STARTED, {"step": "nap", "index": 0}),
        (3, EventType.TIMER_SCHEDULED, {"fire_at": T0 + 61}),
    ]
    assert ex.deadlines() == [(3, T0 + 61)]
    assert ex.next_wakeup() == T0 + 61
    assert ex.activity_runs() == []

    ex.fire_timer(3, T0 + 62)
    second = ex.take_new_events()
    assert shape(second) == [
        (4, EventType.TIMER_FIRED, {"scheduled": 3}),
        (5, EventType.STATE_SET, {"key": "woke_at", "value": T0 + 62}),
        (6, EventType.TIMER_SCHEDULED, {"fire_at": T0 + 92}),
    ]
    assert ex.deadlines() == [(6, T0 + 92)]

    # Rebuilt from the stored history, the same timer is pending and nothing is re-decided.
    replayed = execute(ReplayNap, wid, h.events + first + second, now=T0 + 70)
    assert replayed.take_new_events() == []
    assert replayed.deadlines() == [(6, T0 + 92)]
    assert replayed.state == {"woke_at": T0 + 62}

    replayed.fire_timer(6, T0 + 100)
    assert kinds(replayed.take_new_events()) == [
        EventType.TIMER_FIRED,
        EventType.STATE_SET,
        EventType.STEP_COMPLETED,
        EventType.WORKFLOW_COMPLETED,
    ]
    assert replayed.state == {"woke_at": T0 + 62, "woke_again_at": T0 + 100}
    assert replayed.deadlines() == []
    assert replayed.status is WorkflowStatus.COMPLETED


# -------------------------------------------------------------------------- signals


def approval_until_confirm(workflow_id: str) -> tuple[WorkflowExecution, list[Event], int]:
    """Drive replay_Approval live through 'approve'; return it waiting in 'confirm'."""
    h = History(workflow="replay_Approval")
    ex = execute(ReplayApproval, workflow_id, h.events, now=T0 + 1)
    ((approve_seq, name),) = ex.signal_waits()
    assert name == "approve"
    assert ex.deadlines() == []  # no timeout: it waits for ever
    ex.receive_signal(approve_seq, "approve", {"by": "alice"}, T0 + 5)
    history = h.events + ex.take_new_events()
    ((confirm_seq, name),) = ex.signal_waits()
    assert name == "confirm"
    return ex, history, confirm_seq


def test_signal_wait_without_timeout_resumes_with_the_payload(wid: str) -> None:
    ex, history, confirm_seq = approval_until_confirm(wid)

    received = next(e for e in history if e.type is EventType.SIGNAL_RECEIVED)
    assert received.payload == {"scheduled": 3, "name": "approve", "payload": {"by": "alice"}}
    assert ex.state == {"decision": {"by": "alice"}}
    wait = history[-1]
    assert (wait.seq, wait.type) == (confirm_seq, EventType.SIGNAL_WAIT_STARTED)
    assert wait.payload == {"name": "confirm", "deadline": T0 + 5 + 30}
    assert ex.deadlines() == [(confirm_seq, T0 + 35)]

    ex.receive_signal(confirm_seq, "confirm", "yes", T0 + 6)
    history += ex.take_new_events()
    assert ex.status is WorkflowStatus.COMPLETED
    assert ex.state == {"decision": {"by": "alice"}, "confirmation": "yes"}
    assert ex.deadlines() == []
    assert_replays_from_every_prefix(ReplayApproval, wid, history)


def test_signal_wait_timeout_raises_timeout_error_in_the_step(wid: str) -> None:
    ex, history, confirm_seq = approval_until_confirm(wid)

    ex.fire_timer(confirm_seq, T0 + 35)
    new = ex.take_new_events()
    assert new[0].type is EventType.TIMER_FIRED
    assert new[0].payload == {"scheduled": confirm_seq}
    assert ex.status is WorkflowStatus.COMPLETED
    assert ex.state["confirmation"] == "timed out"
    assert ex.signal_waits() == []

    history += new
    replayed = execute(ReplayApproval, wid, history, full=True)
    assert replayed.take_new_events() == []
    assert replayed.state == {"decision": {"by": "alice"}, "confirmation": "timed out"}
    assert_replays_from_every_prefix(ReplayApproval, wid, history)


def test_pending_signal_wait_is_rebuilt_from_history(wid: str) -> None:
    _, history, confirm_seq = approval_until_confirm(wid)

    ex = execute(ReplayApproval, wid, history, now=T0 + 20)

    assert ex.take_new_events() == []
    assert ex.signal_waits() == [(confirm_seq, "confirm")]
    assert ex.deadlines() == [(confirm_seq, T0 + 35)]
    assert ex.state == {"decision": {"by": "alice"}}
