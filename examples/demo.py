"""A tour of Loom on the embedded SQLite store: run with ``make demo``.

An order workflow charges a card (the payment service fails once, so Loom retries it), reserves
stock for every line in parallel, sleeps durably, waits for a "shipped" signal, and records its
progress in durable state. The demo then prints the workflow's history: every event Loom stored,
which is all it needs to resume the workflow after a crash.
"""

from __future__ import annotations

import asyncio
import os
from datetime import timedelta

from rich.console import Console
from rich.table import Table

import loom
from loom.schemas.state import Input, State

console = Console()
_payment_calls = 0


class OrderInput(Input):
    order_id: str
    lines: list[str]


class OrderState(State):
    charged: bool | None
    reserved: list[str] | None
    tracking: str | None


@loom.activity(name="charge_card", retry_count=3, retry_delay=0.2, timeout_seconds=5)
async def charge_card(order_id: str) -> str:
    global _payment_calls
    _payment_calls += 1
    if _payment_calls == 1:
        raise ConnectionError("payment service unavailable (simulated)")
    return f"ch_{order_id.lower()}"


@loom.activity(name="reserve_stock")
async def reserve_stock(sku: str) -> str:
    await asyncio.sleep(0.05)
    return f"{sku}:reserved"


@loom.workflow(name="DemoOrder", version="1.0.0", description="Charge, reserve, wait, ship.")
class DemoOrder(loom.Workflow[OrderInput, OrderState]):
    @loom.step(name="charge")
    async def charge(self, ctx: loom.WorkflowContext[OrderInput, OrderState]) -> None:
        charge_id = await ctx.activity(charge_card, ctx.input["order_id"])
        ctx.logger.info("charged %s", charge_id)
        await ctx.state.set("charged", True)

    @loom.step(name="reserve")
    async def reserve(self, ctx: loom.WorkflowContext[OrderInput, OrderState]) -> None:
        reserved = await asyncio.gather(
            *(ctx.activity(reserve_stock, sku) for sku in ctx.input["lines"])
        )
        await ctx.state.set("reserved", list(reserved))

    @loom.step(name="cool_off")
    async def cool_off(self, ctx: loom.WorkflowContext[OrderInput, OrderState]) -> None:
        await ctx.sleep(delta=timedelta(milliseconds=300))

    @loom.step(name="ship")
    async def ship(self, ctx: loom.WorkflowContext[OrderInput, OrderState]) -> None:
        tracking = await ctx.wait_for_signal("shipped", timeout=timedelta(seconds=30))
        await ctx.state.set("tracking", tracking)


def _describe(event: loom.Event) -> str:
    p = event.payload
    kind = event.type
    if kind is loom.EventType.ACTIVITY_FAILED:
        retry = "retrying" if p.get("retry_at") else "giving up"
        return f"{p['name']} attempt {p['attempt']}: {p['error']['message']} ({retry})"
    if kind is loom.EventType.ACTIVITY_COMPLETED:
        return f"{p['name']} attempt {p['attempt']} -> {p['result']!r}"
    if kind is loom.EventType.ACTIVITY_SCHEDULED:
        return f"{p['name']}({', '.join(map(repr, p['args']))})"
    if kind in (loom.EventType.STEP_STARTED, loom.EventType.STEP_COMPLETED):
        return str(p["step"])
    if kind is loom.EventType.STATE_SET:
        return f"{p['key']} = {p['value']!r}"
    if kind is loom.EventType.TIMER_SCHEDULED:
        return "durable sleep"
    if kind is loom.EventType.SIGNAL_WAIT_STARTED:
        return f"waiting for signal {p['name']!r}"
    if kind is loom.EventType.SIGNAL_RECEIVED:
        return f"{p['name']!r} = {p['payload']!r}"
    if kind is loom.EventType.WORKFLOW_STARTED:
        return f"input {p['input']!r}"
    return ""


async def main() -> None:
    url = os.environ.get("LOOM_DATABASE_URL", "sqlite:///demo.db")
    console.rule("[bold]Loom demo[/bold]")
    console.print(f"database: [cyan]{url}[/cyan] (embedded SQLite, WAL, synchronous=FULL)")
    async with loom.Database(url) as db:
        applied = await db.migrate_up()
        console.print(f"schema: {', '.join(applied) or 'already up to date'}")
        async with loom.Worker(db, concurrency=4, poll_interval=0.1):
            handle = await db.start_workflow(
                DemoOrder,
                workflow_input=OrderInput(order_id="ORD-42", lines=["apple", "pear", "fig"]),
                initial_state=OrderState(charged=False, reserved=None, tracking=None),
                workflow_id="demo-order-42",
            )
            console.print(f"started workflow [bold]{handle.workflow_id}[/bold]")
            with console.status("running: charge (fails once, retried), reserve, sleep ..."):
                while (await handle.state()).get("reserved") is None:
                    await db.workflow_changed.wait(0.05)
            console.print(f"state mid-run: {await handle.state()}")
            with console.status("waiting for the durable sleep to end and the signal wait"):
                while not any(
                    e.type is loom.EventType.SIGNAL_WAIT_STARTED for e in await handle.events()
                ):
                    await db.workflow_changed.wait(0.05)
            console.print("sending signal [bold]shipped[/bold] = 'TRACK-9000'")
            await handle.signal("shipped", "TRACK-9000")
            final = await handle.result(timeout=30)

        events = await handle.events()
        table = Table(title=f"History of {handle.workflow_id}: {len(events)} events")
        table.add_column("seq", justify="right")
        table.add_column("+ms", justify="right")
        table.add_column("event")
        table.add_column("detail")
        t0 = events[0].created_at
        for event in events:
            ms = (event.created_at - t0).total_seconds() * 1000
            table.add_row(str(event.seq), f"{ms:.0f}", event.type.value, _describe(event))
        console.print(table)
        console.print(f"status: [bold green]{await handle.status()}[/bold green]")
        console.print(f"final state: {final}")
        stats = await db.stats()
        console.print(f"database: {stats.by_status} workflows, {stats.events} events stored")
    console.print(
        "Every event above is durable: kill the process at any point and a new worker "
        "resumes from this history."
    )


if __name__ == "__main__":
    asyncio.run(main())
