"""Does a long history make each further task slower?

python -m bench.history [--activities 5000] [--backend sqlite|postgres]

One workflow runs ``--activities`` no-op activities one after another in one step; each adds two
events, so 5,000 activities make a history of about 10,000 events. Three variants: the workflow
never parks; it parks after every 100 activities (a durable 1 ms sleep) and is resumed from the
worker's cache; and the same with the cache off, so every resume replays the whole history (the
fallback after a crash or an eviction). From the stored timestamps, the mean time per activity
is compared over the first 500 and the last 500 activities (each window spans several writes
and parks, so one slow disk flush does not decide the figure).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import loom
from bench.harness import RESULTS, save_json
from bench.loom_workflows import noop

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


WINDOW = 500
"""Activities at each end of the run over which the mean time per activity is taken."""


@loom.workflow(name="BenchLongHistory")
class LongHistory(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        for i in range(int(ctx.input["activities"])):
            await ctx.activity(noop, i)
            if ctx.input["park_every"] and (i + 1) % ctx.input["park_every"] == 0:
                await ctx.sleep(seconds=0.001)


def per_activity_ms(events: Sequence[loom.Event], window: int) -> tuple[float, float]:
    done = [e.timestamp for e in events if e.type is loom.EventType.ACTIVITY_COMPLETED]
    first = [b - a for a, b in itertools.pairwise(done[: window + 1])]
    last = [b - a for a, b in itertools.pairwise(done[-window - 1 :])]
    return statistics.fmean(first) * 1000, statistics.fmean(last) * 1000


@contextlib.asynccontextmanager
async def database_url(backend: str) -> AsyncIterator[str]:
    if backend == "postgres":
        from bench.pg import fresh_database

        async with fresh_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="loom-history-") as tmp:
            yield f"sqlite:///{tmp}/h.db"


async def run(activities: int, backend: str, out: Path | None = None) -> None:
    print(f"{activities} activities in one workflow ({backend}); mean ms per activity")
    print(f"{'variant':<36} {'events':>7} {'first 500':>10} {'last 500':>10}")
    variants = (
        (0, 1000, "stays in memory"),
        (100, 1000, "parks every 100 (cached)"),
        (100, 0, "parks every 100, no cache: replays"),
    )
    saved: dict[str, Any] = {"activities": activities, "backend": backend, "variants": {}}
    async with database_url(backend) as url, loom.Database(url) as db:
        await db.migrate_up()
        for park_every, cache_size, label in variants:
            async with loom.Worker(db, concurrency=4, poll_interval=0.05, cache_size=cache_size):
                handle = await db.start_workflow(
                    LongHistory,
                    workflow_input={"activities": activities, "park_every": park_every},
                )
                await handle.result(timeout=600)
            events = await handle.events()
            first, last = per_activity_ms(events, WINDOW)
            print(f"{label:<36} {len(events):>7} {first:>10.3f} {last:>10.3f}")
            saved["variants"][label] = {
                "events": len(events),
                "first_ms": round(first, 4),
                "last_ms": round(last, 4),
            }
    if out is not None:
        save_json(out, saved)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cost of a task as the history grows.")
    parser.add_argument("--activities", type=int, default=5000)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--json", type=Path, default=RESULTS / "history.json")
    ns = parser.parse_args(argv)
    asyncio.run(run(ns.activities, ns.backend, ns.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
