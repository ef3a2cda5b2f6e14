"""Durable timer precision: how late a ``ctx.sleep`` fires, read from the stored history.

python -m bench.timers [--backends sqlite,postgres] [--runs 50] [--sleep 0.1] [--crowd 200]

For each run the lateness is ``TIMER_FIRED.created_at - TIMER_SCHEDULED.fire_at``, both
recorded by the engine, so the figure includes claiming the parked workflow, replaying or
reusing it, and committing the firing. Two situations:

* ``idle``: one workflow at a time sleeps on an otherwise idle worker (the worker must wake by
  itself at the due time; its poll interval is set to 5 s so polling cannot help it);
* ``crowd``: ``--crowd`` workflows all due at the same instant.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import loom
from bench.harness import RESULTS, latency_summary, save_json


@loom.workflow(name="BenchSleep")
class BenchSleep(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def nap(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.sleep(seconds=float(ctx.input["seconds"]))


async def lateness_ms(handle: loom.WorkflowHandle[Any]) -> float:
    events = await handle.events()
    scheduled = next(e for e in events if e.type is loom.EventType.TIMER_SCHEDULED)
    fired = next(e for e in events if e.type is loom.EventType.TIMER_FIRED)
    return (fired.timestamp - float(scheduled.payload["fire_at"])) * 1000.0


async def measure(url: str, runs: int, sleep: float, crowd: int) -> dict[str, Any]:
    async with loom.Database(url) as db:
        await db.migrate_up()
        async with loom.Worker(db, concurrency=64, poll_interval=5.0):
            idle = []
            for _ in range(runs):
                handle = await db.start_workflow(BenchSleep, workflow_input={"seconds": sleep})
                await handle.result(timeout=30)
                idle.append(await lateness_ms(handle))
            handles = await asyncio.gather(
                *(
                    db.start_workflow(BenchSleep, workflow_input={"seconds": sleep * 5})
                    for _ in range(crowd)
                )
            )
            for handle in handles:
                await handle.result(timeout=60)
            crowded = [await lateness_ms(h) for h in handles]
    return {"idle": latency_summary(idle), "crowd": latency_summary(crowded)}


async def main_async(
    backends: Sequence[str], runs: int, sleep: float, crowd: int, out: Path | None = None
) -> int:
    print(f"Durable sleep of {sleep:g} s: how late it fires (ms), from the stored history")
    print(f"{'backend':<10} {'situation':<22} {'p50':>8} {'p95':>8} {'max':>8}")
    saved: dict[str, Any] = {"sleep_s": sleep, "crowd": crowd, "runs": runs}
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="loom-timers-") as tmp:
                result = await measure(f"sqlite:///{tmp}/t.db", runs, sleep, crowd)
        else:
            from bench.pg import fresh_database

            async with fresh_database() as url:
                result = await measure(url, runs, sleep, crowd)
        saved[backend] = result
        for situation, label in (("idle", "idle worker"), ("crowd", f"{crowd} due at once")):
            s = result[situation]
            print(
                f"{backend:<10} {label:<22} {s['p50_ms']:>8.2f} {s['p95_ms']:>8.2f} "
                f"{s['max_ms']:>8.2f}"
            )
    print(f"Machine: {os.cpu_count()} cores; worker poll interval 5 s (timers wake it, not polls)")
    if out is not None:
        save_json(out, saved)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--sleep", type=float, default=0.1)
    parser.add_argument("--crowd", type=int, default=200)
    parser.add_argument("--json", type=Path, default=RESULTS / "timers.json")
    ns = parser.parse_args(argv)
    backends = [b.strip() for b in ns.backends.split(",") if b.strip()]
    return asyncio.run(main_async(backends, ns.runs, ns.sleep, ns.crowd, ns.json))


if __name__ == "__main__":
    sys.exit(main())
