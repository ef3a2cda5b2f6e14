"""Workflows whose recorded histories are kept in ``tests/golden/`` and replayed by test_golden.py.

A stored history must keep replaying against this code: renaming an activity, reordering or
renaming a step, or replacing one kind of durable call by another breaks it on purpose. The
``*V0`` classes are earlier versions of a workflow, kept so that a history they recorded can
prove the current code rejects it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

# Whether the hotel accepts reservations; golden_Booking fails while it does not.
HOTEL = {"open": True}


# ---------------------------------------------------------------------------- golden_Order


@loom.activity(name="golden_charge_card")
async def charge_card(order_id: str, amount: int) -> dict[str, Any]:
    return {"charge_id": f"ch-{order_id}", "amount": amount}


@loom.activity(name="golden_bill_card")
async def bill_card(order_id: str, amount: int) -> dict[str, Any]:
    return {"charge_id": f"bill-{order_id}", "amount": amount}


@loom.activity(name="golden_ship_parcel")
async def ship_parcel(order_id: str, charge_id: str) -> str:
    return f"TRACK-{order_id}-{charge_id}"


@loom.workflow(name="golden_Order")
class GoldenOrder(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        charge = await ctx.activity(charge_card, ctx.input["order_id"], ctx.input["amount"])
        await ctx.state.set("charge_id", charge["charge_id"])
        await ctx.state.update(charged=lambda total: (total or 0) + charge["amount"])

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        tracking = await ctx.activity(ship_parcel, ctx.input["order_id"], ctx.state["charge_id"])
        await ctx.state.set("tracking", tracking)
        await ctx.state.set("reference", str(ctx.uuid4()))


@loom.workflow(name="golden_OrderV0", version="0.9.0")
class GoldenOrderV0(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """golden_Order before its first step switched from ``golden_bill_card`` to charge_card."""

    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        charge = await ctx.activity(bill_card, ctx.input["order_id"], ctx.input["amount"])
        await ctx.state.set("charge_id", charge["charge_id"])
        await ctx.state.update(charged=lambda total: (total or 0) + charge["amount"])

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        tracking = await ctx.activity(ship_parcel, ctx.input["order_id"], ctx.state["charge_id"])
        await ctx.state.set("tracking", tracking)
        await ctx.state.set("reference", str(ctx.uuid4()))


# ---------------------------------------------------------------------- golden_Procurement


@loom.activity(name="golden_quote_fast")
async def quote_fast(item: str) -> dict[str, Any]:
    return {"supplier": "fast", "item": item, "price": 12}


@loom.activity(name="golden_quote_slow")
async def quote_slow(item: str) -> dict[str, Any]:
    await asyncio.sleep(0.1)  # the slow supplier answers after the fast one
    return {"supplier": "slow", "item": item, "price": 10}


@loom.workflow(name="golden_Procurement")
class GoldenProcurement(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def quote(self, ctx: Ctx) -> None:
        slow, fast = await asyncio.gather(
            ctx.activity(quote_slow, ctx.input["item"]),
            ctx.activity(quote_fast, ctx.input["item"]),
        )
        best = min((slow, fast), key=lambda q: q["price"])
        await ctx.state.set("best", best)

    @loom.step
    async def cool_off(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=0.05)
        await ctx.state.set("cooled_off_at", ctx.now().isoformat())

    @loom.step
    async def approval(self, ctx: Ctx) -> None:
        decision = await ctx.wait_for_signal("approve")
        await ctx.state.set("approved_by", decision["by"])
        try:
            note = await ctx.wait_for_signal("note", timeout=0.05)
        except TimeoutError:
            note = None
        await ctx.state.set("note", note)
        await ctx.state.set("order_number", ctx.random().randint(10_000, 99_999))


@loom.workflow(name="golden_ProcurementV0", version="0.9.0")
class GoldenProcurementV0(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """golden_Procurement before the approval step came after a cooling-off period."""

    @loom.step
    async def quote(self, ctx: Ctx) -> None:
        slow, fast = await asyncio.gather(
            ctx.activity(quote_slow, ctx.input["item"]),
            ctx.activity(quote_fast, ctx.input["item"]),
        )
        best = min((slow, fast), key=lambda q: q["price"])
        await ctx.state.set("best", best)

    @loom.step
    async def approval(self, ctx: Ctx) -> None:
        decision = await ctx.wait_for_signal("approve")
        await ctx.state.set("approved_by", decision["by"])


# -------------------------------------------------------------------------- golden_Booking


@loom.activity(name="golden_reserve_room")
async def reserve_room(booking_id: str) -> str:
    if not HOTEL["open"]:
        raise RuntimeError("no rooms left")
    return f"room-{booking_id}"


@loom.workflow(name="golden_Booking")
class GoldenBooking(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def hold(self, ctx: Ctx) -> None:
        await ctx.state.set("held_at", ctx.now().timestamp())

    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        await ctx.state.set("reserving_since", ctx.now().timestamp())
        try:
            room = await ctx.activity(reserve_room, ctx.input["booking_id"])
        except loom.ActivityFailedError as exc:
            await ctx.state.set("last_error", exc.error_message)
            raise
        await ctx.state.set("room", room)


# ------------------------------------------------------------------------- golden_Escalation
# Races and handlers: a signal handler, a wait_until whose timer is withdrawn, a signal wait
# that loses a race to an activity, and a TaskGroup that withdraws a sibling activity.


@loom.activity(name="golden_page_oncall")
async def page_oncall(team: str) -> str:
    return f"paged {team}"


@loom.activity(name="golden_lookup_runbook")
async def lookup_runbook(team: str) -> str:
    await asyncio.sleep(30)  # withdrawn long before it ends
    return "runbook"


@loom.activity(name="golden_fail_fast")
async def fail_fast() -> None:
    raise RuntimeError("escalation service down")


@loom.workflow(name="golden_Escalation")
class GoldenEscalation(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.signal("ack")
    async def ack(self, ctx: Ctx, payload: Any) -> None:
        await ctx.state.set("acked_by", payload["by"])

    @loom.step
    async def wait_for_ack(self, ctx: Ctx) -> None:
        await ctx.wait_until(lambda: "acked_by" in ctx.state, timeout=3600)

    @loom.step
    async def page(self, ctx: Ctx) -> None:
        paging = asyncio.ensure_future(ctx.activity(page_oncall, ctx.input["team"]))
        reply = asyncio.ensure_future(ctx.wait_for_signal("reply"))
        await asyncio.wait([paging, reply], return_when=asyncio.FIRST_COMPLETED)
        reply.cancel()
        await ctx.state.set("paged", paging.result())

    @loom.step
    async def escalate(self, ctx: Ctx) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(ctx.activity(lookup_runbook, ctx.input["team"]))
                group.create_task(ctx.activity(fail_fast))
        except* loom.ActivityFailedError:
            await ctx.state.set("escalation", "failed fast")


# ---------------------------------------------------------------------------- golden_Household
# Children: one awaited for its final state, one that fails and is caught, one withdrawn.


@loom.workflow(name="golden_Chore")
class GoldenChore(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def do(self, ctx: Ctx) -> None:
        if ctx.input.get("refuse"):
            raise RuntimeError(f"nobody wants to {ctx.input['chore']}")
        if ctx.input.get("forever"):
            await ctx.wait_for_signal("never")
        await ctx.state.set("done", ctx.input["chore"])


@loom.workflow(name="golden_Household")
class GoldenHousehold(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def delegate(self, ctx: Ctx) -> None:
        dishes = await ctx.child(GoldenChore, {"chore": "dishes"})
        await ctx.state.set("dishes", dishes["done"])
        try:
            await ctx.child(GoldenChore, {"chore": "laundry", "refuse": True})
        except loom.ChildWorkflowFailedError as exc:
            await ctx.state.set("laundry", exc.error_message)
        waiting = ctx.start_child(GoldenChore, {"chore": "garden", "forever": True})
        timer = asyncio.ensure_future(ctx.sleep(0.1))
        await asyncio.wait([waiting.task, timer], return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        await ctx.state.set("garden", "withdrawn")


# ------------------------------------------------------------------------ golden_Subscription
# Continue-as-new: two runs of one workflow id.


@loom.workflow(name="golden_Subscription")
class GoldenSubscription(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def month(self, ctx: Ctx) -> None:
        await ctx.state.set("billed", ctx.input["month"])
        if ctx.input["month"] < 2:
            await ctx.continue_as_new({"month": ctx.input["month"] + 1})


# ----------------------------------------------------------------------------- golden_Receipt
# ctx.patched: a history recorded before the change (by the V0 class) and one recorded after it
# both replay against the current code.


@loom.workflow(name="golden_Receipt")
class GoldenReceipt(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("paid", await ctx.activity(charge_card, "R-7", 7))
        if ctx.patched("email-receipt"):
            await ctx.state.set("receipt", "emailed")


@loom.workflow(name="golden_ReceiptV0", version="0.9.0")
class GoldenReceiptV0(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("paid", await ctx.activity(charge_card, "R-7", 7))
