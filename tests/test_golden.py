"""Golden histories: histories recorded by real runs, kept in ``tests/golden/``, replayed here.

Each file is ``{"workflow", "workflow_id", "expect", "events"}`` where ``workflow`` is the
registered name whose current code must replay the events. ``expect`` is ``"ok"`` (the code
reproduces the history exactly, all steps re-run) or ``"nondeterminism"`` (the history was
recorded by an earlier version of the workflow and must be rejected; ``mismatch`` then names the
code's side and the history's side that the error must both mention).

The histories are real output of the engine. To record them again (only when the stored format
changes on purpose; old histories must keep replaying), run::

    cd tests && ../.venv/bin/python test_golden.py
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest

import golden_workflows as gw
import loom
from loom import Event, EventType, NonDeterminismError, WorkflowStatus
from loom.core.replay import WorkflowExecution

GOLDEN = Path(__file__).parent / "golden"
FILES = sorted(GOLDEN.glob("*.json"))

TERMINAL_STATUS = {
    EventType.WORKFLOW_CONTINUED_AS_NEW: WorkflowStatus.COMPLETED,  # the run ended
    EventType.WORKFLOW_COMPLETED: WorkflowStatus.COMPLETED,
    EventType.WORKFLOW_FAILED: WorkflowStatus.FAILED,
    EventType.WORKFLOW_CANCELED: WorkflowStatus.CANCELED,
}


def load(path: Path) -> tuple[dict[str, Any], list[Event]]:
    doc = json.loads(path.read_text())
    events = [
        Event(int(e["seq"]), EventType(e["type"]), e["payload"], float(e["created_at"]))
        for e in doc["events"]
    ]
    return doc, events


def expecting(outcome: str) -> list[Any]:
    return [pytest.param(p, id=p.stem) for p in FILES if load(p)[0]["expect"] == outcome]


def replay(doc: dict[str, Any], events: list[Event], *, full: bool) -> WorkflowExecution:
    definition = loom.default_registry.workflow(doc["workflow"])
    return WorkflowExecution(
        definition, doc["workflow_id"], events, now=events[-1].timestamp + 1, full=full
    )


def test_the_golden_set_covers_the_engine() -> None:
    docs = [load(p) for p in FILES]
    ok = [events for doc, events in docs if doc["expect"] == "ok"]
    rejected = [doc for doc, _ in docs if doc["expect"] == "nondeterminism"]
    assert len(ok) >= 3
    assert len(rejected) >= 1
    assert {doc["expect"] for doc, _ in docs} <= {"ok", "nondeterminism"}
    recorded = {e.type for events in ok for e in events}
    assert {
        EventType.STATE_SET,
        EventType.STATE_UPDATE,
        EventType.ACTIVITY_COMPLETED,
        EventType.ACTIVITY_FAILED,
        EventType.TIMER_FIRED,
        EventType.SIGNAL_RECEIVED,
        EventType.WORKFLOW_RETRIED,
        EventType.WORKFLOW_COMPLETED,
        EventType.ACTIVITY_CANCELED,
        EventType.TIMER_CANCELED,
        EventType.SIGNAL_WAIT_CANCELED,
        EventType.CHILD_WORKFLOW_STARTED,
        EventType.CHILD_WORKFLOW_COMPLETED,
        EventType.CHILD_WORKFLOW_FAILED,
        EventType.CHILD_WORKFLOW_CANCELED,
        EventType.WORKFLOW_CONTINUED_AS_NEW,
        EventType.PATCH_APPLIED,
    } <= recorded
    handled = [
        e
        for events in ok
        for e in events
        if e.type is EventType.SIGNAL_RECEIVED and e.payload["scheduled"] is None
    ]
    assert handled, "no signal delivered to a @loom.signal handler"
    for doc, events in docs:
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), doc["workflow_id"]
        assert events[0].type is EventType.WORKFLOW_STARTED
        assert events[-1].type in TERMINAL_STATUS
        loom.default_registry.workflow(doc["workflow"])  # raises if the name is unknown


@pytest.mark.parametrize("path", expecting("ok"))
@pytest.mark.parametrize("full", [True, False], ids=["full", "resume"])
def test_golden_history_replays_exactly(path: Path, full: bool) -> None:
    doc, events = load(path)

    ex = replay(doc, events, full=full)
    try:
        assert ex.nondeterminism is None, str(ex.nondeterminism)
        assert ex.take_new_events() == []
        terminal = events[-1]
        assert ex.status is TERMINAL_STATUS[terminal.type]
        if terminal.type is EventType.WORKFLOW_COMPLETED:
            assert ex.state == terminal.payload["state"]
        assert ex.activity_runs() == []
        assert ex.deadlines() == []
        assert ex.signal_waits() == []
    finally:
        ex.close()


@pytest.mark.parametrize("path", expecting("nondeterminism"))
def test_golden_history_of_changed_code_is_rejected(path: Path) -> None:
    doc, events = load(path)

    ex = replay(doc, events, full=True)
    try:
        assert ex.status is WorkflowStatus.FAILED
        assert isinstance(ex.nondeterminism, NonDeterminismError)
        (failed,) = ex.take_new_events()
        assert (failed.seq, failed.type) == (events[-1].seq + 1, EventType.WORKFLOW_FAILED)
        message = failed.payload["error"]["message"]
        assert failed.payload["error"]["type"] == "NonDeterminismError"
        assert f"'{doc['mismatch']['code']}'" in message, message
        assert f"'{doc['mismatch']['history']}'" in message, message
        assert doc["workflow_id"] in message
    finally:
        ex.close()


# ------------------------------------------------------------------------ recording them


async def _record(
    handle: loom.WorkflowHandle[Any],
    name: str,
    *,
    workflow: str,
    expect: str = "ok",
    mismatch: dict[str, str] | None = None,
) -> None:
    events = await handle.events()
    # A history recorded by an earlier version is stored as that workflow's own history.
    started = events[0]
    events[0] = Event(
        started.seq, started.type, {**started.payload, "name": workflow}, started.timestamp
    )
    doc: dict[str, Any] = {
        "workflow": workflow,
        "workflow_id": handle.workflow_id,
        "expect": expect,
    }
    if mismatch is not None:
        doc["mismatch"] = mismatch
    doc["events"] = [
        {"seq": e.seq, "type": e.type.value, "payload": e.payload, "created_at": e.timestamp}
        for e in events
    ]
    (GOLDEN / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")


async def regenerate_golden_histories(db: loom.Database) -> None:
    """Record tests/golden/*.json again from real runs: ``cd tests && python test_golden.py``."""
    GOLDEN.mkdir(exist_ok=True)
    order_input = {"order_id": "A-1001", "amount": 42}
    async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
        order = await db.start_workflow(
            gw.GoldenOrder,
            workflow_input=order_input,
            initial_state={"charged": 0},
            workflow_id="golden-order-1",
        )
        await order.result(timeout=10)
        await _record(order, "order", workflow="golden_Order")

        old_order = await db.start_workflow(
            gw.GoldenOrderV0,
            workflow_input=order_input,
            initial_state={"charged": 0},
            workflow_id="golden-order-v0",
        )
        await old_order.result(timeout=10)
        await _record(
            old_order,
            "order_v0_bill_card",
            workflow="golden_Order",
            expect="nondeterminism",
            mismatch={"code": "golden_charge_card", "history": "golden_bill_card"},
        )

        procurement = await db.start_workflow(
            gw.GoldenProcurement, workflow_input={"item": "desk"}, workflow_id="golden-buy-1"
        )
        await procurement.signal("approve", {"by": "alice"})
        await procurement.result(timeout=10)
        await _record(procurement, "procurement", workflow="golden_Procurement")

        old_procurement = await db.start_workflow(
            gw.GoldenProcurementV0, workflow_input={"item": "desk"}, workflow_id="golden-buy-v0"
        )
        await old_procurement.signal("approve", {"by": "bob"})
        await old_procurement.result(timeout=10)
        await _record(
            old_procurement,
            "procurement_v0_no_cool_off",
            workflow="golden_Procurement",
            expect="nondeterminism",
            mismatch={"code": "cool_off", "history": "approval"},
        )

        gw.HOTEL["open"] = False
        try:
            booking = await db.start_workflow(
                gw.GoldenBooking, workflow_input={"booking_id": "B-7"}, workflow_id="golden-book-1"
            )
            with pytest.raises(loom.WorkflowFailedError):
                await booking.result(timeout=10)
        finally:
            gw.HOTEL["open"] = True
        await booking.retry()
        await booking.result(timeout=10)
        await _record(booking, "booking_failed_then_retried", workflow="golden_Booking")
        await record_escalation(db)
        await record_household(db)
        await record_subscription(db)
        await record_receipts(db)


async def record_escalation(db: loom.Database) -> None:
    """Record tests/golden/escalation.json alone: ``python test_golden.py escalation``."""
    async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
        escalation = await db.start_workflow(
            gw.GoldenEscalation, workflow_input={"team": "payments"}, workflow_id="golden-esc-1"
        )
        await escalation.signal("ack", {"by": "carol"})
        await escalation.result(timeout=10)
        await _record(escalation, "escalation", workflow="golden_Escalation")


async def record_household(db: loom.Database) -> None:
    """Record tests/golden/household.json alone: ``python test_golden.py household``."""
    async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
        household = await db.start_workflow(gw.GoldenHousehold, workflow_id="golden-home-1")
        await household.result(timeout=10)
        await _record(household, "household", workflow="golden_Household")


async def record_subscription(db: loom.Database) -> None:
    """Record tests/golden/subscription_run_1.json (a run that continued as new) alone:
    ``python test_golden.py subscription``."""
    async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
        handle = await db.start_workflow(
            gw.GoldenSubscription, workflow_input={"month": 1}, workflow_id="golden-sub-1"
        )
        await handle.result(timeout=10)
        first = (await handle.runs())[0]
    events = await handle.events(run_id=first.run_id)
    doc = {
        "workflow": "golden_Subscription",
        "workflow_id": handle.workflow_id,
        "expect": "ok",
        "events": [
            {"seq": e.seq, "type": e.type.value, "payload": e.payload, "created_at": e.timestamp}
            for e in events
        ],
    }
    (GOLDEN / "subscription_run_1.json").write_text(json.dumps(doc, indent=2) + "\n")


async def record_receipts(db: loom.Database) -> None:
    """Record tests/golden/receipt_*.json alone: ``python test_golden.py receipts``."""
    async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
        patched = await db.start_workflow(gw.GoldenReceipt, workflow_id="golden-receipt-1")
        await patched.result(timeout=10)
        await _record(patched, "receipt_patched", workflow="golden_Receipt")
        before = await db.start_workflow(gw.GoldenReceiptV0, workflow_id="golden-receipt-v0")
        await before.result(timeout=10)
        await _record(before, "receipt_before_the_patch", workflow="golden_Receipt")


async def _regenerate(only: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with loom.Database(f"sqlite:///{tmp}/golden.db") as db:
            await db.migrate_up()
            if only == "escalation":
                await record_escalation(db)
            elif only == "household":
                await record_household(db)
            elif only == "subscription":
                await record_subscription(db)
            elif only == "receipts":
                await record_receipts(db)
            else:
                await regenerate_golden_histories(db)


if __name__ == "__main__":
    import sys

    asyncio.run(_regenerate(sys.argv[1] if len(sys.argv) > 1 else None))
