import asyncio

import loom

loom.queue("emails", concurrency=2, rate="100/m")  # held across every worker and process


@loom.activity
async def send_email(to: str) -> str:
    await asyncio.sleep(0.1)  # talk to the mail server
    return f"sent to {to}"


@loom.workflow(name="Welcome", queue="emails")
class Welcome(loom.Workflow[dict, dict]):
    @loom.step
    async def send(self, ctx: loom.WorkflowContext[dict, dict]) -> None:
        await ctx.state.set("sent", await ctx.activity(send_email, ctx.input["to"]))


async def main() -> None:
    async with loom.Database() as db:
        await db.migrate_up()
        vip = await db.start_workflow(Welcome, workflow_input={"to": "vip"}, priority=-1)
        rest = [
            await db.start_workflow(Welcome, workflow_input={"to": f"user{i}"}) for i in range(4)
        ]
        async with loom.Worker(db, queues=["emails"], concurrency=8):
            for handle in [vip, *rest]:
                print((await handle.result(timeout=30))["sent"])
        [emails] = await db.queues()  # depth, running, limits, oldest waiting
        print(emails.name, emails.depth, emails.running, emails.concurrency, emails.rate)


asyncio.run(main())
