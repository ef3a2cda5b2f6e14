# ruff: noqa
# fmt: off
# The README's "Schedules" example, exactly as printed there. Run as a script it declares a
# nightly schedule in code, creates a 1-second one, lets a worker fire it twice, then pauses
# it and triggers a run by hand.

import asyncio
from zoneinfo import ZoneInfo
import loom


@loom.workflow(name="SalesReport")
class SalesReport(loom.Workflow[dict, dict]):
    @loom.step
    async def build(self, ctx):
        await ctx.state.set("report", f"sales of {ctx.input['region']}")


# Declared in code: a worker that imports this module creates (or updates) it when it starts.
loom.schedule("nightly-sales", SalesReport, cron="0 3 * * *", timezone="Europe/Paris",
              input={"region": "emea"})


async def main():
    async with loom.Database("sqlite:///reports.db") as db:
        await db.migrate_up()
        await db.create_schedule("pulse", SalesReport, every="1s", input={"region": "test"},
                                 overlap="skip", catch_up="latest")
        async with loom.Worker(db):                     # every worker also fires schedules
            while len((await db.describe_schedule("pulse")).recent_runs) < 2:
                await asyncio.sleep(0.1)
        about = await db.describe_schedule("pulse")
        print(about.schedule.spec, about.recent_runs[0].workflow_id[:15])
        nightly = await db.get_schedule("nightly-sales")
        print(nightly.next_run.astimezone(ZoneInfo("Europe/Paris")).strftime("%H:%M"))
        await db.pause_schedule("pulse")
        handle = await db.trigger_schedule("pulse")     # a run now, paused or not
        print(handle.workflow_id[:15], await handle.status())

if __name__ == "__main__":
    asyncio.run(main())
