import asyncio

import loom


@loom.activity
async def charge(order_id: str) -> str:
    return f"receipt-{order_id}"


@loom.activity
async def ship(order_id: str) -> str:
    return f"parcel-{order_id}"


@loom.workflow(name="Fulfil")
class Fulfil(loom.Workflow[dict, dict]):
    @loom.step
    async def pay(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("receipt", await ctx.activity(charge, ctx.input["order"]))

    @loom.step
    async def send(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.update(parcels=lambda sent: (sent or 0) + 1)
        await ctx.state.set("parcel", await ctx.activity(ship, ctx.input["order"]))


async def main() -> None:
    async with loom.Database() as db:
        await db.migrate_up()
        # Bulk start: one transaction for the whole batch, each id idempotent.
        batch = [
            loom.StartRequest(Fulfil, {"order": f"A-{n}"}, workflow_id=f"order-{n}")
            for n in range(100)
        ]
        handles = await db.start_workflows(batch)
        async with loom.Worker(db, concurrency=20):
            for handle in handles:
                await handle.result(timeout=60)
            # Reset: the parcel was lost; "pay" is kept, "send" runs again.
            lost = db.get_workflow("order-7")
            await lost.reset("send", reason="parcel lost")
            print(await lost.result(timeout=10))
        # Retention: delete what ended more than a second ago (loom gc --older-than 1s).
        await asyncio.sleep(1.1)
        print("deleted", await db.delete_finished(older_than=1))


asyncio.run(main())
