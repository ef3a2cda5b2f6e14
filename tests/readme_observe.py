# ruff: noqa
# fmt: off
# The README's "Traces, metrics and logs" example, exactly as printed there. Run as a script it
# runs one traced checkout, prints its result and the completed counter it scraped, writes its
# spans to spans.json and its logs, as JSON lines, to stderr.

import asyncio
import logging
import urllib.request

import loom
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

provider = TracerProvider()  # in production, an OTLP exporter to your collector
provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=open("spans.json", "w"))))
trace.set_tracer_provider(provider)

handler = logging.StreamHandler()  # stderr: one JSON object per line
handler.setFormatter(loom.JsonFormatter())
logging.basicConfig(level=logging.INFO, handlers=[handler])


@loom.activity(retry_count=2)
async def charge(order_id: str) -> str:
    loom.activity_logger.info("charging %s", order_id)  # + workflow_id, run_id, step, activity, attempt
    return "ch_1"


@loom.workflow
class Checkout(loom.Workflow[dict, dict]):
    @loom.step
    async def pay(self, ctx):
        ctx.logger.info("paying")  # + workflow_id, run_id, step, trace_id, span_id
        await ctx.state.set("charge", await ctx.activity(charge, ctx.input["order_id"]))


def completed(url):
    with urllib.request.urlopen(url) as answer:
        lines = answer.read().decode().splitlines()
    return [line for line in lines if line.startswith("loom_workflows_completed_total")]


async def main():
    async with loom.Database("sqlite:///shop.db", metrics=True) as db:
        await db.migrate_up()
        # Prometheus scrapes http://127.0.0.1:PORT/metrics (port 0: any free one)
        async with loom.Worker(db), db.serve_metrics(port=0) as endpoint:
            with trace.get_tracer("shop").start_as_current_span("POST /checkout"):  # your request
                handle = await db.start_workflow(Checkout, workflow_input={"order_id": "A-1"})
            print(await handle.result(timeout=10))
            print(*await asyncio.to_thread(completed, f"http://127.0.0.1:{endpoint.port}/metrics"))
    provider.shutdown()  # flushes the spans

asyncio.run(main())
