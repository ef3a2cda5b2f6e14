"""The workflow context's helpers are deterministic on replay: ``ctx.now``, ``ctx.random``,
``ctx.uuid4`` give the recorded values, ``is_replaying`` and the logger know they are replaying.

Every test builds a history by hand (``support.replay.History``) or drives the core live to
record one, constructs a ``WorkflowExecution`` from it and checks what the workflow decides next.
"""

from __future__ import annotations

import gc
import logging
import weakref
from datetime import UTC, datetime

import pytest

from loom import EventType, WorkflowStatus
from support.replay import (
    OBSERVED,
    RECEIPT,
    T0,
    History,
    ReplayChatty,
    ReplayDice,
    execute,
    only_run,
)

# ------------------------------------------------------------- determinism of ctx helpers


def test_now_random_and_uuid4_are_identical_on_replay(wid: str) -> None:
    h = History(workflow="replay_Dice")
    ex = execute(ReplayDice, wid, h.events, now=T0 + 1)
    ex.activity_completed(only_run(ex).seq, None, T0 + 9)
    history = h.events + ex.take_new_events()
    assert ex.status is WorkflowStatus.COMPLETED
    live = OBSERVED.pop(wid)
    assert [(o[0], o[1], o[2]) for o in live] == [
        ("before", False, datetime.fromtimestamp(T0 + 1, UTC)),
        ("after", False, datetime.fromtimestamp(T0 + 9, UTC)),
    ]
    assert all(o[4].version == 4 for o in live)

    # Full replay long afterwards, and a resume from the middle of the step, see the same values.
    execute(ReplayDice, wid, history, now=T0 + 10_000, full=True)
    replayed = OBSERVED.pop(wid)
    assert [o[0:1] + o[2:] for o in replayed] == [o[0:1] + o[2:] for o in live]
    assert [o[1] for o in replayed] == [True, True]

    cut = next(i for i, e in enumerate(history) if e.type is EventType.ACTIVITY_SCHEDULED) + 1
    resumed = execute(ReplayDice, wid, history[:cut], now=T0 + 20_000)
    resumed.activity_completed(only_run(resumed).seq, None, T0 + 9)
    assert [o[0:1] + o[2:] for o in OBSERVED.pop(wid)] == [o[0:1] + o[2:] for o in live]

    # The values come from the workflow id, not from a constant.
    other = execute(ReplayDice, f"{wid}-other", h.events, now=T0 + 1)
    other.activity_completed(only_run(other).seq, None, T0 + 9)
    other_seen = OBSERVED.pop(f"{wid}-other")
    assert other_seen[0][3] != live[0][3]
    assert other_seen[0][4] != live[0][4]


def test_is_replaying_is_true_only_while_re_running_recorded_events(wid: str) -> None:
    h = History(workflow="replay_Dice")
    h.step("roll", 0)
    seq = h.activity("replay_notify", "rolling", step="roll")

    ex = execute(ReplayDice, wid, h.events)
    assert not ex.is_replaying
    ex.activity_completed(seq, None, h.time + 1)

    assert [(o[0], o[1]) for o in OBSERVED.pop(wid)] == [("before", True), ("after", False)]


def test_logger_is_silent_while_replaying(wid: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="loom.workflow")

    def messages() -> list[str]:
        found = [
            r.getMessage()
            for r in caplog.records
            if r.name == "loom.workflow" and getattr(r, "workflow_id", None) == wid
        ]
        caplog.clear()
        return found

    h = History({"amount": 30}, workflow="replay_Chatty")
    ex = execute(ReplayChatty, wid, h.events, now=T0 + 1)
    assert messages() == [f"[{wid}] charging 30"]
    ex.activity_completed(only_run(ex).seq, RECEIPT, T0 + 2)
    assert messages() == [f"[{wid}] charged receipt rcpt-7"]
    history = h.events + ex.take_new_events()

    # Resuming after the result was recorded: the part before it is replayed, so not logged again.
    cut = next(i for i, e in enumerate(history) if e.type is EventType.ACTIVITY_COMPLETED) + 1
    execute(ReplayChatty, wid, history[:cut])
    assert messages() == [f"[{wid}] charged receipt rcpt-7"]

    # A full replay of the finished history logs nothing.
    replayed = execute(ReplayChatty, wid, history, full=True)
    assert replayed.status is WorkflowStatus.COMPLETED
    assert messages() == []


@pytest.mark.parametrize("finished", [True, False], ids=["finished", "closed-while-waiting"])
def test_a_closed_execution_is_freed_at_once(wid: str, finished: bool) -> None:
    """Nothing an execution makes (its context, the context's logger) holds it in a reference
    cycle: a worker's closed executions are freed as soon as it drops them, not by the garbage
    collector's pauses on the worker's event loop."""
    h = History({"amount": 30}, workflow="replay_Chatty")
    gc.collect()
    gc.disable()
    try:
        ex = execute(ReplayChatty, wid, h.events, now=T0 + 1)
        if finished:
            ex.activity_completed(only_run(ex).seq, RECEIPT, T0 + 2)
            assert ex.status is WorkflowStatus.COMPLETED
        ex.close()
        freed = weakref.ref(ex)
        del ex
        assert freed() is None
    finally:
        gc.enable()
