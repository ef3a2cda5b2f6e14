import asyncio
import json
from datetime import timedelta

import loom
from loom.testing import Replayer, WorkflowEnvironment


@loom.activity(retry_count=5, retry_delay=60, retry_backoff=2.0)
async def charge_card(customer: str, cents: int) -> str:
    raise ConnectionError("the real payment service: not in a test")


@loom.workflow(name="Trial")
class Trial(loom.Workflow[dict, dict]):
    @loom.step
    async def wait(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.sleep(timedelta(days=30))  # skipped: nothing else can run meanwhile

    @loom.step
    async def bill(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        receipt = await ctx.activity(charge_card, ctx.input["customer"], 999)
        await ctx.state.set("receipt", receipt)
        await ctx.state.set("billed_on", ctx.now().date().isoformat())


async def main() -> None:
    async with WorkflowEnvironment(start_time=1_900_000_000) as env:  # 2030-03-17
        fails = [ConnectionError("down"), ConnectionError("still down")]

        def fake_charge(customer: str, cents: int) -> str:  # two failures, then a receipt
            if fails:
                raise fails.pop(0)
            return f"r-{customer}-{cents}"

        mock = env.mock_activity(charge_card, fake_charge)
        handle = await env.start_workflow(Trial, workflow_input={"customer": "ann"})
        print(await handle.result(timeout=5))  # 30 days and two retry waits, in milliseconds
        print(len(mock.calls), env.clock.datetime().isoformat())

        history = await handle.export_history()  # as `loom inspect ID --export FILE` does
    save(history, "trial.json")
    print(Replayer([Trial]).replay("trial.json").status)


def save(history: dict, path: str) -> None:
    with open(path, "w") as file:
        json.dump(history, file)


if __name__ == "__main__":
    asyncio.run(main())
