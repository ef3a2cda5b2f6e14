# ruff: noqa
# fmt: off
# The README's "Queries" example, exactly as printed there. Run as a script it starts a cart,
# runs it until it waits for payment, asks it two queries and prints the answers.

import asyncio
import loom


@loom.workflow(name="Cart")
class Cart(loom.Workflow[dict, dict]):
    @loom.step
    async def fill(self, ctx):
        await ctx.state.set("items", ctx.input["items"])

    @loom.step
    async def checkout(self, ctx):
        await ctx.state.set("paid_by", await ctx.wait_for_signal("pay"))

    @loom.query
    def total(self, ctx: loom.QueryContext[dict, dict]) -> float:
        return sum(item["price"] for item in ctx.state.get("items", []))

    @loom.query(name="has")
    async def contains(self, ctx: loom.QueryContext[dict, dict], name: str) -> bool:
        return any(item["name"] == name for item in ctx.state.get("items", []))


async def main():
    async with loom.Database("sqlite:///cart.db") as db:
        await db.migrate_up()
        items = [{"name": "mug", "price": 12.5}, {"name": "lamp", "price": 40}]
        cart = await db.start_workflow(Cart, workflow_input={"items": items}, workflow_id="cart-1")
        while await loom.run_once(db):        # runs the cart until it waits for "pay"
            pass
        print(await cart.query("total"))      # 52.5
        print(await cart.query("has", "lamp"))  # True
        print(await cart.status())            # RUNNING: asking woke nothing

if __name__ == "__main__":
    asyncio.run(main())
