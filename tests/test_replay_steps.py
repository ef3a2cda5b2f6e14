"""The replay core resumes a workflow from its history: completed steps are skipped and their
state rebuilt, pending work is not scheduled twice, gathers and retries replay as recorded.

Every test builds a history by hand (``support.replay.History``) or drives the core live to
record one, constructs a ``WorkflowExecution`` from it and checks what the workflow decides next.
"""

from __future__ import annotations

import pytest

from loom import Event, EventType, NonDeterminismError, WorkflowStatus
from loom.core.history import INPUTS
from loom.core.replay_plan import plan_replay
from support.replay import (
    CARRIER_DOWN,
    ORDER,
    RECEIPT,
    RUNS,
    T0,
    History,
    ReplayFanout,
    ReplayOrder,
    assert_replays_from_every_prefix,
    charged_order,
    execute,
    kinds,
    only_run,
    order_live,
    shape,
)

# ------------------------------------------------------------------------- fresh & resume


def test_fresh_start_starts_the_first_step_and_schedules_its_activity(wid: str) -> None:
    h = History({"amount": 30})
    ex = execute(ReplayOrder, wid, h.events, now=T0 + 10)

    new = ex.take_new_events()
    assert shape(new) == [
        (2, EventType.STEP_STARTED, {"step": "charge", "index": 0}),
        (
            3,
            EventType.ACTIVITY_SCHEDULED,
            {"name": "replay_charge_card", "args": [30], "kwargs": {}, "step": "charge"},
        ),
    ]
    assert all(e.timestamp == T0 + 10 for e in new)
    run = only_run(ex)
    assert (run.seq, run.attempt, run.not_before) == (3, 1, 0.0)
    assert (run.definition.name, run.args, run.kwargs, run.step) == (
        "replay_charge_card",
        [30],
        {},
        "charge",
    )
    assert ex.status is WorkflowStatus.RUNNING
    assert ex.current_step == "charge"
    assert not ex.is_replaying
    assert ex.take_new_events() == []
    assert RUNS[wid, "charge"] == 1


def test_partial_history_resumes_with_the_pending_activity_not_rescheduled(wid: str) -> None:
    h = History({"amount": 30})
    h.step("charge", 0)
    scheduled = h.activity("replay_charge_card", 30, step="charge")

    ex = execute(ReplayOrder, wid, h.events)

    assert ex.take_new_events() == []
    assert only_run(ex).seq == scheduled
    assert not ex.is_replaying
    # The result arrives live: numbering continues after the stored history.
    ex.activity_completed(scheduled, RECEIPT, h.time + 5)
    new = ex.take_new_events()
    assert [e.seq for e in new] == list(range(scheduled + 1, scheduled + 1 + len(new)))
    assert kinds(new) == [
        EventType.ACTIVITY_COMPLETED,
        EventType.STATE_SET,
        EventType.STATE_UPDATE,
        EventType.STEP_COMPLETED,
        EventType.STEP_STARTED,
        EventType.STATE_SET,
        EventType.ACTIVITY_SCHEDULED,
    ]
    assert new[0].payload == {
        "scheduled": scheduled,
        "name": "replay_charge_card",
        "attempt": 1,
        "result": RECEIPT,
    }
    assert new[-1].payload["name"] == "replay_ship_parcel"
    assert only_run(ex).seq == new[-1].seq


def test_completed_steps_are_not_run_again(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5})
    charged_order(h)
    h.step("ship", 1)
    h.set("shipping", True)
    ship_seq = h.activity("replay_ship_parcel", "rcpt-7", step="ship")

    ex = execute(ReplayOrder, wid, h.events)

    assert ex.take_new_events() == []
    assert RUNS[wid, "charge"] == 0
    assert RUNS[wid, "ship"] == 1
    # The charge activity of the completed step is not handed out again; only ship's is.
    run = only_run(ex)
    assert (run.seq, run.definition.name, run.args) == (ship_seq, "replay_ship_parcel", ["rcpt-7"])


def test_state_is_rebuilt_from_the_completed_steps(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5, "note": "gift"})
    h.step("charge", 0)
    seq = h.activity("replay_charge_card", 30, step="charge")
    receipt = {"id": "rcpt-from-history", "amount": 30}
    h.completed(seq, receipt, name="replay_charge_card")
    h.set("receipt", receipt)
    h.update(total=35)
    h.step_done("charge", 0)

    ex = execute(ReplayOrder, wid, h.events)

    assert ex.state == {"total": 35, "note": "gift", "receipt": receipt, "shipping": True}
    # The running step reads that state: ship is called with the receipt id from the history.
    assert only_run(ex).args == ["rcpt-from-history"]


def test_crash_mid_step_replays_the_step_against_its_recorded_decisions(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5})
    h.step("charge", 0)
    scheduled = h.activity("replay_charge_card", 30, step="charge")
    h.completed(scheduled, RECEIPT, name="replay_charge_card")
    h.set("receipt", RECEIPT)  # ... and the process died before the STATE_UPDATE

    ex = execute(ReplayOrder, wid, h.events, now=h.time + 100)

    assert RUNS[wid, "charge"] == 1
    new = ex.take_new_events()
    # The recorded decisions are matched, not repeated: the step goes on from where it stopped.
    assert shape(new[:3]) == [
        (6, EventType.STATE_UPDATE, {"values": {"total": 35}}),
        (7, EventType.STEP_COMPLETED, {"step": "charge", "index": 0}),
        (8, EventType.STEP_STARTED, {"step": "ship", "index": 1}),
    ]
    assert EventType.STATE_SET not in kinds(new[:3])
    assert [r.definition.name for r in ex.activity_runs()] == ["replay_ship_parcel"]
    assert ex.state["total"] == 35


def test_crash_after_any_event_of_an_order_reproduces_the_same_history(wid: str) -> None:
    history = order_live(wid)
    assert history[-1].type is EventType.WORKFLOW_COMPLETED
    assert_replays_from_every_prefix(ReplayOrder, wid, history)


def test_full_replay_runs_every_step_and_reproduces_the_history(wid: str) -> None:
    history = order_live(wid)
    RUNS.clear()

    resumed = execute(ReplayOrder, wid, history)
    assert (RUNS[wid, "charge"], RUNS[wid, "ship"]) == (0, 0)
    assert resumed.status is WorkflowStatus.COMPLETED

    ex = execute(ReplayOrder, wid, history, full=True)
    assert (RUNS[wid, "charge"], RUNS[wid, "ship"]) == (1, 1)
    assert ex.take_new_events() == []
    assert ex.status is WorkflowStatus.COMPLETED
    assert ex.nondeterminism is None
    assert ex.state == history[-1].payload["state"]
    assert ex.state["total"] == 35
    assert ex.activity_runs() == []


def test_plan_replay_folds_completed_steps_into_the_state(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5})
    charged_order(h)
    resume_at = h.step("ship", 1)
    h.set("shipping", True)

    first, state, stream = plan_replay(ORDER, wid, h.events, full=False)
    assert first == 1
    assert state == {"total": 35, "receipt": RECEIPT}
    assert [e.seq for e in stream] == [resume_at, resume_at + 1]

    first, state, stream = plan_replay(ORDER, wid, h.events, full=True)
    assert (first, state) == (0, {"total": 5})
    assert shape(stream) == shape(h.events[1:])


def test_a_history_without_workflow_started_is_rejected(wid: str) -> None:
    h = History({"amount": 30})
    h.step("charge", 0)
    with pytest.raises(NonDeterminismError, match="WORKFLOW_STARTED"):
        plan_replay(ORDER, wid, h.events[1:], full=False)


def test_a_canceled_history_stays_canceled(wid: str) -> None:
    h = History({"amount": 30})
    h.step("charge", 0)
    h.activity("replay_charge_card", 30, step="charge")
    h.add(EventType.WORKFLOW_CANCELED, {"reason": "customer changed their mind"})

    ex = execute(ReplayOrder, wid, h.events)

    assert ex.status is WorkflowStatus.CANCELED
    assert ex.take_new_events() == []


# ------------------------------------------------------------------------------- gather


def fanout_live(workflow_id: str, *, b_first: bool) -> tuple[list[Event], int]:
    """Run the 'fetch' step live with the two results arriving in the given order.

    Returns the history and the number of its events up to the second result."""
    h = History(workflow="replay_Fanout")
    ex = execute(ReplayFanout, workflow_id, h.events, now=T0 + 1)
    runs = {r.definition.name: r for r in ex.activity_runs()}
    assert set(runs) == {"replay_fetch_a", "replay_fetch_b"}
    order = (
        ["replay_fetch_b", "replay_fetch_a"] if b_first else ["replay_fetch_a", "replay_fetch_b"]
    )
    ex.activity_completed(runs[order[0]].seq, 10 if order[0].endswith("a") else 20, T0 + 2)
    assert [r.definition.name for r in ex.activity_runs()] == [order[1]]
    ex.activity_completed(runs[order[1]].seq, 10 if order[1].endswith("a") else 20, T0 + 3)
    history = h.events + ex.take_new_events()
    both = 1 + max(i for i, e in enumerate(history) if e.type is EventType.ACTIVITY_COMPLETED)
    return history, both


def test_gather_decides_the_same_whichever_activity_completes_first(wid: str) -> None:
    b_first, cut_b = fanout_live(wid, b_first=True)
    a_first, cut_a = fanout_live(wid, b_first=False)
    assert cut_a == cut_b

    # Only the order of the two results differs; what the step decides after them does not.
    assert shape(b_first[cut_b:]) == shape(a_first[cut_a:])
    assert b_first[cut_b].payload == {"key": "pair", "value": [10, 20]}
    completions = [e.payload["name"] for e in b_first[:cut_b] if e.type in INPUTS]
    assert completions == ["replay_fetch_b", "replay_fetch_a"]

    # Replaying the history where the second activity finished first makes those decisions again.
    ex = execute(ReplayFanout, wid, b_first[:cut_b])
    assert shape(ex.take_new_events()) == shape(b_first[cut_b:])
    assert [r.definition.name for r in ex.activity_runs()] == ["replay_notify"]
    assert ex.state["pair"] == [10, 20]


def test_first_completed_race_replays_with_the_recorded_winner(wid: str) -> None:
    h = History(workflow="replay_Fanout")
    h.step("fetch", 0)
    a = h.activity("replay_fetch_a", 1, step="fetch")
    b = h.activity("replay_fetch_b", 2, step="fetch")
    h.completed(a, 10, name="replay_fetch_a")
    h.completed(b, 20, name="replay_fetch_b")
    h.set("pair", [10, 20])
    n = h.activity("replay_notify", "10+20", step="fetch")
    h.completed(n, None, name="replay_notify")
    h.step_done("fetch", 0)
    h.step("race", 1)
    race_a = h.activity("replay_fetch_a", 3, step="race")
    race_b = h.activity("replay_fetch_b", 4, step="race")

    for winner_seq, loser_seq, winner in ((race_b, race_a, "b"), (race_a, race_b, "a")):
        ex = execute(ReplayFanout, f"{wid}-{winner}", h.events)
        deliver_at = h.time + 1
        ex.activity_completed(winner_seq, 1, deliver_at)
        assert ex.state["winner"] == winner
        live = h.events + ex.take_new_events()
        ex.activity_completed(loser_seq, 2, deliver_at + 1)
        ex.activity_completed(only_run(ex).seq, None, deliver_at + 2)
        live += ex.take_new_events()
        assert ex.status is WorkflowStatus.COMPLETED

        replayed = execute(ReplayFanout, f"{wid}-{winner}", live, full=True)
        assert replayed.take_new_events() == []
        assert replayed.status is WorkflowStatus.COMPLETED
        assert replayed.state["winner"] == winner
        assert_replays_from_every_prefix(ReplayFanout, f"{wid}-{winner}", live)


# ---------------------------------------------------------------------- failures & retries


def test_final_activity_failure_is_raised_into_the_step(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5})
    charged_order(h)
    h.step("ship", 1)
    h.set("shipping", True)
    seq = h.activity("replay_ship_parcel", "rcpt-7", step="ship")
    h.failed(seq, "carrier down", name="replay_ship_parcel", attempt=4)

    ex = execute(ReplayOrder, wid, h.events, now=h.time + 1)

    # The step caught ActivityFailedError (it recorded what it saw) and re-raised it.
    assert ex.state["ship_error"] == {
        "activity": "replay_ship_parcel",
        "step": "ship",
        "attempts": 4,
        "type": "ConnectionError",
        "message": "carrier down",
    }
    assert ex.status is WorkflowStatus.FAILED
    new = ex.take_new_events()
    assert kinds(new) == [EventType.STATE_SET, EventType.WORKFLOW_FAILED]
    error = new[-1].payload["error"]
    assert error["type"] == "ActivityFailedError"
    assert error["step"] == "ship"
    assert "replay_ship_parcel" in error["message"]
    assert "carrier down" in error["message"]
    assert ex.error == error
    assert ex.activity_runs() == []


def test_failed_attempt_with_retry_at_schedules_the_next_attempt(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5})
    charged_order(h)
    h.step("ship", 1)
    h.set("shipping", True)
    seq = h.activity("replay_ship_parcel", "rcpt-7", step="ship")

    ex = execute(ReplayOrder, wid, h.events)
    assert only_run(ex).attempt == 1
    retry_at = h.time + 30
    ex.activity_failed(seq, CARRIER_DOWN, retry_at, h.time + 2)

    (failed,) = ex.take_new_events()
    assert shape([failed]) == [
        (
            seq + 1,
            EventType.ACTIVITY_FAILED,
            {
                "scheduled": seq,
                "name": "replay_ship_parcel",
                "attempt": 1,
                "error": CARRIER_DOWN,
                "retry_at": retry_at,
            },
        )
    ]
    run = only_run(ex)
    assert (run.seq, run.attempt, run.not_before) == (seq, 2, retry_at)
    assert ex.next_wakeup() == retry_at
    assert ex.status is WorkflowStatus.RUNNING
    assert "ship_error" not in ex.state

    # The same after a crash: the next attempt is rebuilt from the recorded failure.
    replayed = execute(ReplayOrder, wid, [*h.events, failed])
    assert replayed.take_new_events() == []
    run = only_run(replayed)
    assert (run.seq, run.attempt, run.not_before) == (seq, 2, retry_at)

    # A later success records the attempt that succeeded.
    replayed.activity_completed(seq, "TRACK-7", retry_at + 1)
    completed = replayed.take_new_events()[0]
    assert completed.payload["attempt"] == 2
    assert replayed.status is WorkflowStatus.COMPLETED


def test_retry_restarts_the_failed_step_fresh_without_its_state_changes(wid: str) -> None:
    failed = order_live(wid, ship_fails=True)
    assert failed[-1].type is EventType.WORKFLOW_FAILED
    assert any(e.type is EventType.STATE_SET and e.payload["key"] == "ship_error" for e in failed)
    retried = [
        *failed,
        Event(failed[-1].seq + 1, EventType.WORKFLOW_RETRIED, {"step": "ship"}, T0 + 50),
    ]
    RUNS.clear()

    ex = execute(ReplayOrder, wid, retried, now=T0 + 60)

    new = ex.take_new_events()
    assert shape(new) == [
        (retried[-1].seq + 1, EventType.STEP_STARTED, {"step": "ship", "index": 1}),
        (retried[-1].seq + 2, EventType.STATE_SET, {"key": "shipping", "value": True}),
        (
            retried[-1].seq + 3,
            EventType.ACTIVITY_SCHEDULED,
            {"name": "replay_ship_parcel", "args": ["rcpt-7"], "kwargs": {}, "step": "ship"},
        ),
    ]
    assert (RUNS[wid, "charge"], RUNS[wid, "ship"]) == (0, 1)
    assert ex.state == {"total": 35, "receipt": RECEIPT, "shipping": True}
    run = only_run(ex)
    assert (run.seq, run.attempt) == (new[-1].seq, 1)

    ex.activity_completed(run.seq, "TRACK-7", T0 + 61)
    history = retried + new + ex.take_new_events()
    assert ex.status is WorkflowStatus.COMPLETED
    assert "ship_error" not in history[-1].payload["state"]

    again = execute(ReplayOrder, wid, history, full=True)
    assert again.take_new_events() == []
    assert again.status is WorkflowStatus.COMPLETED
    assert again.state == history[-1].payload["state"]


def test_retry_of_the_first_step_twice_keeps_only_the_last_attempt(wid: str) -> None:
    h = History({"amount": 30}, {"total": 5})
    for _ in range(2):
        h.step("charge", 0)
        seq = h.activity("replay_charge_card", 30, step="charge")
        h.failed(seq, "card declined", name="replay_charge_card")
        h.add(EventType.WORKFLOW_FAILED, {"error": {"type": "ActivityFailedError"}})
        h.add(EventType.WORKFLOW_RETRIED, {"step": "charge"})

    ex = execute(ReplayOrder, wid, h.events)

    new = ex.take_new_events()
    assert kinds(new) == [EventType.STEP_STARTED, EventType.ACTIVITY_SCHEDULED]
    assert new[0].seq == h.events[-1].seq + 1
    assert only_run(ex).seq == new[1].seq
    assert ex.state == {"total": 5}
    assert ex.status is WorkflowStatus.RUNNING
