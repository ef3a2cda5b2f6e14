"""A three-step workflow with a slow middle activity, and a worker process, for the fencing and
database-restart tests.

``fencing_Pipeline`` runs ``prepare``, ``transform`` and ``publish``, one activity per step;
``transform`` takes ``input["slow_ms"]`` milliseconds, the others ``input["step_ms"]`` (default
0). Each activity appends ``start``/``end`` lines, with the pid of the process that ran it, to an
execution log outside Loom, so a test can see which worker was running an activity and whether
it got to finish it.

Run as a worker process::

    python tests/fencing_workload.py worker URL --lease-seconds 1

It prints ``ready`` once its database is open and runs a ``loom.Worker`` until SIGTERM; then it
stops the worker and prints its statistics as one JSON line. ``loom.worker`` warnings (a lease
lost, a database outage) go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import loom
from execution_log import record

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


def mix(label: str, value: int) -> int:
    """What an activity computes: a pure function of its label and argument."""
    return (value * 131 + sum(label.encode())) % 1_000_003


@loom.activity(name="fencing_work", timeout_seconds=60)
async def fencing_work(log: str, workflow_id: str, label: str, value: int, delay_ms: int) -> int:
    record(log, "start", workflow_id, label)
    await asyncio.sleep(delay_ms / 1000)  # the activity's work takes a while
    record(log, "end", workflow_id, label)
    return mix(label, value)


async def _work(ctx: Ctx, label: str, value: int, delay_ms: int | None = None) -> int:
    delay = ctx.input.get("step_ms", 0) if delay_ms is None else delay_ms
    return await ctx.activity(fencing_work, ctx.input["log"], ctx.workflow_id, label, value, delay)


@loom.workflow(name="fencing_Pipeline")
class FencingPipeline(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", await _work(ctx, "prepare", ctx.input["n"]))

    @loom.step
    async def transform(self, ctx: Ctx) -> None:
        value = await _work(ctx, "transform", ctx.state["prepared"], ctx.input["slow_ms"])
        await ctx.state.set("transformed", value)

    @loom.step
    async def publish(self, ctx: Ctx) -> None:
        await ctx.state.set("published", await _work(ctx, "publish", ctx.state["transformed"]))
        await ctx.state.update(runs=lambda runs: (runs or 0) + 1)


def expected_state(n: int) -> dict[str, Any]:
    """The final state fencing_Pipeline must reach, computed without Loom."""
    prepared = mix("prepare", n)
    transformed = mix("transform", prepared)
    return {
        "prepared": prepared,
        "transformed": transformed,
        "published": mix("publish", transformed),
        "runs": 1,
    }


# ------------------------------------------------------------------------ worker process


async def serve(url: str, concurrency: int, lease_seconds: float, poll_interval: float) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with loom.Database(url) as database:
        worker = loom.Worker(
            database,
            concurrency=concurrency,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
        )
        async with worker:
            print("ready", flush=True)
            await stop.wait()
        print(json.dumps(dataclasses.asdict(worker.stats)), flush=True)


async def spawn(url: str, stderr_path: Path, *options: str) -> asyncio.subprocess.Process:
    """Start this module as a worker process (importable from a fresh clone) and wait until it
    is ready; its stderr is appended to ``stderr_path``. Raises RuntimeError if it fails."""
    from support.workers import spawn_worker_script  # the tests' side only

    return await spawn_worker_script(Path(__file__), url, stderr_path, *options)


async def stop(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    """Stop a worker process with SIGTERM; return the statistics it printed."""
    proc.send_signal(signal.SIGTERM)
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"worker process exited with {proc.returncode}")
    stats: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="run fencing_Pipeline workflows until SIGTERM")
    worker.add_argument("url")
    worker.add_argument("--concurrency", type=int, default=1)
    worker.add_argument("--lease-seconds", type=float, default=1.0)
    worker.add_argument("--poll-interval", type=float, default=0.05)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args.url, args.concurrency, args.lease_seconds, args.poll_interval))
    return 0


if __name__ == "__main__":
    sys.exit(main())
