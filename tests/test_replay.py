"""The pure replay core (``loom.core.replay``): a history in, new events and pending work out.

Every test builds a history by hand (or drives the core live to record one), constructs a
``WorkflowExecution`` from it and checks what the workflow decides next. No database, no worker,
no clock: the core must be fully determined by the history it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import loom
from loom import ActivityFailedError, Event, EventType, NonDeterminismError, WorkflowStatus
from loom.core.history import INPUTS
from loom.core.replay import ActivityRun, WorkflowExecution, plan_replay

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
T0 = 1_700_000_000.0

# How many times each step's code ran, per (workflow_id, step): the proof that a completed step
# is skipped on replay and that an interrupted step is run again.
RUNS: defaultdict[tuple[str, str], int] = defaultdict(int)
# What workflow code saw of its deterministic clock and randomness, per workflow id.
OBSERVED: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)


# ------------------------------------------------------------------------------ activities
# The core never runs an activity: it only hands ActivityRun records to the worker.


@loom.activity(name="replay_charge_card")
async def charge_card(amount: int) -> dict[str, Any]:
    return {"id": "rcpt", "amount": amount}


@loom.activity(name="replay_ship_parcel", retry_count=3)
async def ship_parcel(receipt_id: str) -> str:
    return f"TRACK-{receipt_id}"


@loom.activity(name="replay_fetch_a")
async def fetch_a(x: int) -> int:
    return x


@loom.activity(name="replay_fetch_b")
async def fetch_b(x: int) -> int:
    return x


@loom.activity(name="replay_notify")
async def notify(message: str) -> None:
    return None


# ------------------------------------------------------------------------------- workflows


@loom.workflow(name="replay_Order")
class ReplayOrder(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        RUNS[ctx.workflow_id, "charge"] += 1
        receipt = await ctx.activity(charge_card, ctx.input["amount"])
        await ctx.state.set("receipt", receipt)
        await ctx.state.update(total=lambda total: (total or 0) + receipt["amount"])

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        RUNS[ctx.workflow_id, "ship"] += 1
        await ctx.state.set("shipping", True)
        try:
            tracking = await ctx.activity(ship_parcel, ctx.state["receipt"]["id"])
        except ActivityFailedError as exc:
            await ctx.state.set(
                "ship_error",
                {
                    "activity": exc.activity,
                    "step": exc.step,
                    "attempts": exc.attempts,
                    "type": exc.error_type,
                    "message": exc.error_message,
                },
            )
            raise
        await ctx.state.set("tracking", tracking)


@loom.workflow(name="replay_Fanout")
class ReplayFanout(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def fetch(self, ctx: Ctx) -> None:
        a, b = await asyncio.gather(ctx.activity(fetch_a, 1), ctx.activity(fetch_b, 2))
        await ctx.state.set("pair", [a, b])
        await ctx.activity(notify, f"{a}+{b}")

    @loom.step
    async def race(self, ctx: Ctx) -> None:
        first = asyncio.ensure_future(ctx.activity(fetch_a, 3))
        second = asyncio.ensure_future(ctx.activity(fetch_b, 4))
        await asyncio.wait([first, second], return_when=asyncio.FIRST_COMPLETED)
        winner = "a" if first.done() else "b"
        await ctx.state.set("winner", winner)
        await ctx.activity(notify, f"{winner} won")
        await asyncio.gather(first, second)


@loom.workflow(name="replay_Nap")
class ReplayNap(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def nap(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=60)
        await ctx.state.set("woke_at", ctx.now().timestamp())
        await ctx.sleep(until=ctx.now() + timedelta(seconds=30))
        await ctx.state.set("woke_again_at", ctx.now().timestamp())


@loom.workflow(name="replay_Approval")
class ReplayApproval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def approve(self, ctx: Ctx) -> None:
        decision = await ctx.wait_for_signal("approve")
        await ctx.state.set("decision", decision)

    @loom.step
    async def confirm(self, ctx: Ctx) -> None:
        try:
            confirmation = await ctx.wait_for_signal("confirm", timeout=timedelta(seconds=30))
        except TimeoutError:
            confirmation = "timed out"
        await ctx.state.set("confirmation", confirmation)


@loom.workflow(name="replay_Dice")
class ReplayDice(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def roll(self, ctx: Ctx) -> None:
        rng = ctx.random()
        OBSERVED[ctx.workflow_id].append(
            ("before", ctx.is_replaying, ctx.now(), rng.random(), ctx.uuid4())
        )
        await ctx.activity(notify, "rolling")
        OBSERVED[ctx.workflow_id].append(
            ("after", ctx.is_replaying, ctx.now(), ctx.random().randint(1, 10**9), ctx.uuid4())
        )
        await ctx.state.set("rolled", True)


@loom.workflow(name="replay_Chatty")
class ReplayChatty(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        ctx.logger.info("charging %s", ctx.input["amount"])
        receipt = await ctx.activity(charge_card, ctx.input["amount"])
        ctx.logger.info("charged receipt %s", receipt["id"])
        await ctx.state.set("receipt", receipt)


@loom.workflow(name="replay_Sleepy")
class ReplaySleepy(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def doze(self, ctx: Ctx) -> None:
        await asyncio.sleep(1)


ORDER = ReplayOrder.definition()


# -------------------------------------------------------------------------------- helpers


class History:
    """Builds a history event by event, one second apart, starting at ``at``."""

    def __init__(
        self,
        input: Any = None,
        state: dict[str, Any] | None = None,
        *,
        workflow: str = "replay_Order",
        at: float = T0,
    ) -> None:
        self.events: list[Event] = []
        self._at = at - 1
        self.add(
            EventType.WORKFLOW_STARTED,
            {"name": workflow, "version": "1.0.0", "input": input, "state": state or {}},
        )

    @property
    def time(self) -> float:
        return self._at

    def add(self, kind: EventType, payload: dict[str, Any]) -> int:
        self._at += 1
        seq = len(self.events) + 1
        self.events.append(Event(seq, kind, payload, self._at))
        return seq

    def step(self, name: str, index: int) -> int:
        return self.add(EventType.STEP_STARTED, {"step": name, "index": index})

    def step_done(self, name: str, index: int) -> int:
        return self.add(EventType.STEP_COMPLETED, {"step": name, "index": index})

    def set(self, key: str, value: Any) -> int:
        return self.add(EventType.STATE_SET, {"key": key, "value": value})

    def update(self, **values: Any) -> int:
        return self.add(EventType.STATE_UPDATE, {"values": values})

    def activity(self, name: str, *args: Any, step: str) -> int:
        return self.add(
            EventType.ACTIVITY_SCHEDULED,
            {"name": name, "args": list(args), "kwargs": {}, "step": step},
        )

    def completed(self, scheduled: int, result: Any, *, name: str, attempt: int = 1) -> int:
        return self.add(
            EventType.ACTIVITY_COMPLETED,
            {"scheduled": scheduled, "name": name, "attempt": attempt, "result": result},
        )

    def failed(
        self,
        scheduled: int,
        message: str,
        *,
        name: str,
        attempt: int = 1,
        retry_at: float | None = None,
    ) -> int:
        return self.add(
            EventType.ACTIVITY_FAILED,
            {
                "scheduled": scheduled,
                "name": name,
                "attempt": attempt,
                "error": {"type": "ConnectionError", "message": message},
                "retry_at": retry_at,
            },
        )

    def timer(self, fire_at: float) -> int:
        return self.add(EventType.TIMER_SCHEDULED, {"fire_at": fire_at})

    def fired(self, scheduled: int) -> int:
        return self.add(EventType.TIMER_FIRED, {"scheduled": scheduled})

    def wait(self, name: str, deadline: float | None = None) -> int:
        return self.add(EventType.SIGNAL_WAIT_STARTED, {"name": name, "deadline": deadline})

    def signal(self, scheduled: int, name: str, payload: Any) -> int:
        return self.add(
            EventType.SIGNAL_RECEIVED, {"scheduled": scheduled, "name": name, "payload": payload}
        )


def execute(
    workflow: type[loom.Workflow[Any, Any]],
    workflow_id: str,
    history: Sequence[Event],
    *,
    now: float | None = None,
    full: bool = False,
) -> WorkflowExecution:
    when = history[-1].timestamp + 1 if now is None else now
    return WorkflowExecution(workflow.definition(), workflow_id, list(history), now=when, full=full)


def shape(events: Sequence[Event]) -> list[tuple[int, EventType, dict[str, Any]]]:
    """What must be identical between two runs: everything but the wall-clock timestamps."""
    return [(e.seq, e.type, e.payload) for e in events]


def kinds(events: Sequence[Event]) -> list[EventType]:
    return [e.type for e in events]


def only_run(ex: WorkflowExecution) -> ActivityRun:
    runs = ex.activity_runs()
    assert len(runs) == 1, runs
    return runs[0]


def deliver(ex: WorkflowExecution, event: Event) -> None:
    """Hand a recorded input to the execution the way a worker delivers it live."""
    p = event.payload
    if event.type is EventType.ACTIVITY_COMPLETED:
        ex.activity_completed(p["scheduled"], p["result"], event.timestamp)
    elif event.type is EventType.ACTIVITY_FAILED:
        ex.activity_failed(p["scheduled"], p["error"], p["retry_at"], event.timestamp)
    elif event.type is EventType.TIMER_FIRED:
        ex.fire_timer(p["scheduled"], event.timestamp)
    elif event.type is EventType.SIGNAL_RECEIVED:
        ex.receive_signal(p["scheduled"], p["name"], p["payload"], event.timestamp)
    else:
        raise AssertionError(f"not an input: {event}")


RECEIPT = {"id": "rcpt-7", "amount": 30}
CARRIER_DOWN = {"type": "ConnectionError", "message": "carrier down"}


def order_live(workflow_id: str, *, ship_fails: bool = False) -> list[Event]:
    """A complete replay_Order history recorded by driving the core live."""
    h = History({"amount": 30}, {"total": 5})
    ex = WorkflowExecution(ORDER, workflow_id, h.events, now=T0 + 1)
    ex.activity_completed(only_run(ex).seq, RECEIPT, T0 + 2)
    if ship_fails:
        ex.activity_failed(only_run(ex).seq, CARRIER_DOWN, None, T0 + 3)
    else:
        ex.activity_completed(only_run(ex).seq, "TRACK-7", T0 + 3)
    assert ex.finished
    return h.events + ex.take_new_events()


def charged_order(h: History) -> None:
    """Append the complete 'charge' step of replay_Order (amount 30) to ``h``."""
    h.step("charge", 0)
    seq = h.activity("replay_charge_card", 30, step="charge")
    h.completed(seq, RECEIPT, name="replay_charge_card")
    h.set("receipt", RECEIPT)
    h.update(total=35)
    h.step_done("charge", 0)


def assert_replays_from_every_prefix(
    workflow: type[loom.Workflow[Any, Any]], workflow_id: str, history: list[Event]
) -> None:
    """Cut ``history`` after each event, rebuild from the prefix, deliver the recorded inputs
    that follow, and require exactly the original history: a crash anywhere changes nothing."""
    for cut in range(1, len(history) + 1):
        ex = execute(workflow, workflow_id, history[:cut], now=history[cut - 1].timestamp)
        produced = history[:cut] + ex.take_new_events()
        while len(produced) < len(history):
            upcoming = history[len(produced)]
            assert upcoming.type in INPUTS, (
                f"cut after seq {cut}: the replayed code stopped before making "
                f"{upcoming.describe()}; it produced {kinds(produced[cut:])}"
            )
            deliver(ex, upcoming)
            produced += ex.take_new_events()
        assert shape(produced) == shape(history), f"cut after seq {cut}"
        assert ex.status is WorkflowStatus.COMPLETED, f"cut after seq {cut}"


@pytest.fixture
def wid(request: pytest.FixtureRequest) -> str:
    return f"replay-{request.node.name}"


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
