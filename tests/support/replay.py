"""Hand-built histories and the workflows they belong to, for the pure replay-core tests
(``tests/test_replay_*.py``, which test ``loom.core.replay``).

``History`` builds a history event by event; ``execute`` constructs a ``WorkflowExecution``
from one; ``order_live``/``charged_order`` record the replay_Order workflow's history;
``assert_replays_from_every_prefix`` is the crash-anywhere check. No database, no worker, no
clock: the core must be fully determined by the history it is given.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import loom
from loom import ActivityFailedError, Event, EventType, WorkflowStatus
from loom.core.calls import ActivityRun
from loom.core.history import INPUTS
from loom.core.replay import WorkflowExecution

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
        ex.activity_completed(p["scheduled"], p["result"], event.timestamp, p.get("worker"))
    elif event.type is EventType.ACTIVITY_FAILED:
        ex.activity_failed(
            p["scheduled"], p["error"], p["retry_at"], event.timestamp, p.get("worker")
        )
    elif event.type is EventType.TIMER_FIRED:
        ex.fire_timer(p["scheduled"], event.timestamp)
    elif event.type is EventType.SIGNAL_RECEIVED:
        ex.receive_signal(p["scheduled"], p["name"], p["payload"], event.timestamp)
    elif event.type in (EventType.CHILD_WORKFLOW_COMPLETED, EventType.CHILD_WORKFLOW_FAILED):
        ex.child_finished(p["scheduled"], p, event.timestamp)
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


def _timeless(
    shaped: list[tuple[int, EventType, dict[str, Any]]],
) -> list[tuple[int, EventType, dict[str, Any]]]:
    return [
        (seq, kind, {k: v for k, v in payload.items() if k not in ("fire_at", "deadline")})
        for seq, kind, payload in shaped
    ]


def assert_replays_from_every_prefix(
    workflow: type[loom.Workflow[Any, Any]],
    workflow_id: str,
    history: list[Event],
    *,
    times_from_the_clock: bool = False,
) -> None:
    """Cut ``history`` after each event, rebuild from the prefix, deliver the recorded inputs
    that follow, and require exactly the original history: a crash anywhere changes nothing.

    ``times_from_the_clock``: the history was recorded by a worker, whose timers count from
    its wall clock; a decision made again after the cut counts from the cut's time instead, so
    deadlines (``fire_at``, ``deadline``) are left out of the comparison."""
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
        mine, theirs = shape(produced), shape(history)
        if times_from_the_clock:
            mine, theirs = _timeless(mine), _timeless(theirs)
        assert mine == theirs, f"cut after seq {cut}: " + "; ".join(
            f"{a} != {b}" for a, b in zip(mine, theirs, strict=False) if a != b
        )
        assert ex.status is WorkflowStatus.COMPLETED, f"cut after seq {cut}"
