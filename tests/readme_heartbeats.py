import asyncio

import loom


@loom.activity(retry_count=3, retry_delay=0.1, timeout_seconds=3600, heartbeat_timeout=10)
def import_rows(path: str, total: int) -> int:
    info = loom.activity_info()  # workflow_id, activity_name, attempt, deadline, ...
    done = info.heartbeat_details or 0  # where an earlier attempt got to
    print(f"attempt {info.attempt} starts at row {done}")
    while done < total:
        if info.attempt == 1 and done == 600:
            raise ConnectionError("lost the database")  # retried: resumes at row 600
        done += 100  # import the next 100 rows of path
        loom.heartbeat(done)  # alive, and how far it got
    return done


@loom.workflow(name="Import")
class Import(loom.Workflow[dict, dict]):
    @loom.step
    async def load(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        rows = await ctx.activity(import_rows, ctx.input["path"], ctx.input["total"])
        await ctx.state.set("rows", rows)


async def main() -> None:
    async with loom.Database() as db:
        await db.migrate_up()
        async with loom.Worker(db):
            job = {"path": "a.csv", "total": 1000}
            handle = await db.start_workflow(Import, workflow_input=job)
            print(await handle.result(timeout=30))


asyncio.run(main())
