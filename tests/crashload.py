"""Workflows for the kill tests, and a worker process that runs them until killed.

``crash_Multi`` has three steps and six activities: a long one that heartbeats its progress
(``crash_scan``), two in sequence with state changes between them, two run together with
``asyncio.gather``, and a last one that races an hour-long durable timer (the activity wins; the
timer is withdrawn, a recorded decision); then it runs a child workflow (``crash_Child``: one
activity, then it continues as new and its second run keeps the result) and keeps its result.
The children run on task queue ``crash-children``, limited to 2 at once (``loom.queue``,
written by every worker that starts): a slot held by a killed worker must come back when its
lease runs out, or the children wait forever.
Every activity appends a line to an execution log outside Loom when it begins and when it has
done its work, so a test can count how often each activity really ran, whatever the history
says. ``crash_scan`` also logs where each run resumed (``resume``, from its last heartbeat's
details) and each chunk it did (``chunk``), so a test can check that details never run ahead of
the work and that they reach a new worker after a kill. ``crash_Resume`` is one long
``crash_scan``, for a test that kills its worker mid-way.

Run as a worker process (the test starts it and kills it with SIGKILL at a random moment)::

    python tests/crashload.py worker sqlite:////tmp/x/loom.db --lease-seconds 0.5

The process prints ``ready`` once its database is open, then runs a ``loom.Worker`` forever.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from typing import Any

import loom
from execution_log import record

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

# Every activity call of crash_Multi, by label, in the order the code makes them: the scan,
# then the crash_compute calls.
COMPUTED = ("reserve.hold", "reserve.confirm", "fan.left", "fan.right", "finish.seal")
LABELS = ("reserve.scan", *COMPUTED)
SCAN_CHUNKS = 5
SCAN_CHUNK_MS = 60


def mix(label: str, value: int) -> int:
    """What an activity computes: a pure function of its label and argument."""
    return (value * 31 + sum(label.encode())) % 1_000_003


@loom.activity(name="crash_compute", timeout_seconds=30)
async def crash_compute(log: str, workflow_id: str, label: str, value: int, delay_ms: int) -> int:
    record(log, "start", workflow_id, label)
    await asyncio.sleep(delay_ms / 1000)  # the activity's work takes a while
    record(log, "end", workflow_id, label)
    return mix(label, value)


def scan_result(label: str, value: int, chunks: int) -> int:
    """What ``crash_scan`` computes, chunk by chunk: a pure function of its arguments."""
    for index in range(chunks):
        value = mix(f"{label}#{index}", value)
    return value


@loom.activity(name="crash_scan", timeout_seconds=60, heartbeat_timeout=1.5)
async def crash_scan(
    log: str, workflow_id: str, label: str, value: int, chunks: int, chunk_ms: int
) -> int:
    """A long job in chunks that heartbeats after each one and resumes from its last details."""
    resumed = loom.activity_info().heartbeat_details or {"next": 0, "acc": value}
    record(log, "start", workflow_id, label)
    position, acc = int(resumed["next"]), int(resumed["acc"])
    record(log, "resume", workflow_id, f"{label}@{position}")
    while position < chunks:
        await asyncio.sleep(chunk_ms / 1000)
        acc = mix(f"{label}#{position}", acc)
        record(log, "chunk", workflow_id, f"{label}#{position}")
        position += 1
        loom.heartbeat({"next": position, "acc": acc})
    record(log, "end", workflow_id, label)
    return acc


async def _scan(ctx: Ctx, label: str, value: int, chunks: int, chunk_ms: int) -> int:
    args = (ctx.input["log"], ctx.workflow_id, label, value, chunks, chunk_ms)
    return await ctx.activity(crash_scan, *args)


async def _compute(ctx: Ctx, label: str, value: int) -> int:
    delay = int(ctx.input["delays"][label])
    return await ctx.activity(crash_compute, ctx.input["log"], ctx.workflow_id, label, value, delay)


@loom.workflow(name="crash_Multi")
class CrashMulti(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        scanned = await _scan(ctx, "reserve.scan", ctx.input["n"], SCAN_CHUNKS, SCAN_CHUNK_MS)
        await ctx.state.set("scanned", scanned)
        held = await _compute(ctx, "reserve.hold", ctx.input["n"])
        await ctx.state.set("held", held)
        confirmed = await _compute(ctx, "reserve.confirm", held)
        await ctx.state.update(total=lambda total: (total or 0) + confirmed)

    @loom.step
    async def fan_out(self, ctx: Ctx) -> None:
        total = ctx.state["total"]
        left, right = await asyncio.gather(
            _compute(ctx, "fan.left", total), _compute(ctx, "fan.right", total + 1)
        )
        await ctx.state.set("pair", [left, right])
        await ctx.state.update(total=lambda t: t + left + right)

    @loom.step
    async def finish(self, ctx: Ctx) -> None:
        sealing = asyncio.ensure_future(_compute(ctx, "finish.seal", ctx.state["total"]))
        timer = asyncio.ensure_future(ctx.sleep(3600))
        await asyncio.wait([sealing, timer], return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()  # withdrawn: TIMER_CANCELED
        seal = sealing.result()
        child = await ctx.child(
            CrashChild,
            {"log": ctx.input["log"], "value": seal, "delay": ctx.input["delays"]["finish.seal"]},
        )
        await ctx.state.set("child", child["worked"])
        await ctx.state.set("seal", seal)
        await ctx.state.update(steps_done=lambda done: (done or 0) + 3)


CHILD_QUEUE = "crash-children"
loom.queue(CHILD_QUEUE, concurrency=2)


@loom.workflow(name="crash_Child", queue=CHILD_QUEUE)
class CrashChild(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        if "worked" in ctx.input:  # the second run: the first continued as new
            await ctx.state.set("worked", ctx.input["worked"])
            return
        worked = await ctx.activity(
            crash_compute,
            ctx.input["log"],
            ctx.workflow_id,
            CHILD_LABEL,
            ctx.input["value"],
            int(ctx.input["delay"]),
        )
        await ctx.continue_as_new({**ctx.input, "worked": worked})


CHILD_LABEL = "child.work"


@loom.workflow(name="crash_Resume")
class CrashResume(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def scan(self, ctx: Ctx) -> None:
        chunks, chunk_ms = ctx.input["chunks"], ctx.input["chunk_ms"]
        await ctx.state.set("scanned", await _scan(ctx, "scan", 0, chunks, chunk_ms))


def expected_result(args: list[Any]) -> int:
    """What the activity called with ``args`` (as recorded in its ACTIVITY_SCHEDULED event)
    must return."""
    label, value = args[2], args[3]
    if label == "reserve.scan":
        return scan_result(label, value, SCAN_CHUNKS)
    return mix(label, value)


def make_input(n: int, log: str, rng: random.Random) -> dict[str, Any]:
    """The input of one crash_Multi: its number, the execution log, and each activity's duration
    in milliseconds."""
    return {"n": n, "log": log, "delays": {label: rng.randint(50, 250) for label in COMPUTED}}


def expected_state(workflow_input: dict[str, Any], initial: dict[str, Any]) -> dict[str, Any]:
    """The final state crash_Multi must reach, computed without Loom."""
    state = dict(initial)
    state["scanned"] = scan_result("reserve.scan", workflow_input["n"], SCAN_CHUNKS)
    held = mix("reserve.hold", workflow_input["n"])
    state["held"] = held
    state["total"] = (state.get("total") or 0) + mix("reserve.confirm", held)
    left = mix("fan.left", state["total"])
    right = mix("fan.right", state["total"] + 1)
    state["pair"] = [left, right]
    state["total"] += left + right
    state["seal"] = mix("finish.seal", state["total"])
    state["child"] = mix(CHILD_LABEL, state["seal"])
    state["steps_done"] = (state.get("steps_done") or 0) + 3
    return state


# ------------------------------------------------------------------------ worker process


async def serve(url: str, concurrency: int, lease_seconds: float, poll_interval: float) -> None:
    async with loom.Database(url) as database:
        print("ready", flush=True)
        async with loom.Worker(
            database,
            concurrency=concurrency,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
        ):
            await asyncio.Event().wait()  # run until killed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run crash_* workflows until killed")
    worker.add_argument("url")
    worker.add_argument("--concurrency", type=int, default=2)
    worker.add_argument("--lease-seconds", type=float, default=0.5)
    worker.add_argument("--poll-interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.url, args.concurrency, args.lease_seconds, args.poll_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
