"""Starting many workflows: one ``db.start_workflows`` call beside a loop of single starts.

python -m bench.bulk_start [--n 10000] [--backends sqlite,postgres]

The batch job that enqueues its items: ``--n`` workflows (``Bench3``, not run: only the starts
are measured) are started once by a loop of ``await db.start_workflow(...)``, one transaction
each, and once by ``await db.start_workflows([...])``, one transaction for all, each on a fresh
database. The figure is starts per second from the call to the commit; the rows reach
``python -m bench.summary`` through ``bench/results/bulk_start.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import loom
from bench.harness import RESULTS, save_json
from bench.loom_workflows import Bench3


@contextlib.asynccontextmanager
async def database(backend: str, tmp: Path) -> AsyncIterator[loom.Database]:
    if backend == "postgres":
        from bench.pg import fresh_database

        async with fresh_database() as url, loom.Database(url) as db:
            await db.migrate_up()
            yield db
    else:
        path = tmp / f"bulk-{time.monotonic_ns()}.db"
        async with loom.Database(f"sqlite:///{path}") as db:
            await db.migrate_up()
            yield db


async def loop_of_single_starts(db: loom.Database, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        await db.start_workflow(Bench3, workflow_input={"i": i}, workflow_id=f"one-{i}")
    return time.perf_counter() - started


async def one_bulk_start(db: loom.Database, n: int) -> float:
    batch = [loom.StartRequest(Bench3, {"i": i}, workflow_id=f"bulk-{i}") for i in range(n)]
    started = time.perf_counter()
    await db.start_workflows(batch)
    return time.perf_counter() - started


async def measure(backend: str, n: int, tmp: Path) -> dict[str, Any]:
    async with database(backend, tmp) as db:
        single = await loop_of_single_starts(db, n)
    async with database(backend, tmp) as db:
        bulk = await one_bulk_start(db, n)
        assert len(await db.list_workflows(limit=-1)) == n
    return {
        "n": n,
        "loop_starts_per_s": round(n / single, 1),
        "bulk_starts_per_s": round(n / bulk, 1),
        "speedup": round(single / bulk, 2),
    }


async def run(n: int, backends: Sequence[str], out: Path | None) -> dict[str, Any]:
    import tempfile

    print(f"{n} workflows started: a loop of start_workflow beside one start_workflows")
    print(f"{'backend':<10} {'loop /s':>10} {'bulk /s':>10} {'speed-up':>9}")
    saved: dict[str, Any] = {"n": n}
    with tempfile.TemporaryDirectory(prefix="loom-bulk-") as tmp:
        for backend in backends:
            figures = await measure(backend, n, Path(tmp))
            saved[backend] = figures
            print(
                f"{backend:<10} {figures['loop_starts_per_s']:>10,.1f} "
                f"{figures['bulk_starts_per_s']:>10,.1f} {figures['speedup']:>8.1f}x"
            )
    if out is not None:
        save_json(out, saved)
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bulk start beside a loop of single starts.")
    parser.add_argument("--n", type=int, default=10_000, help="workflows started each way")
    parser.add_argument("--backends", default="sqlite,postgres", help="subset of sqlite,postgres")
    parser.add_argument("--json", type=Path, default=RESULTS / "bulk_start.json")
    ns = parser.parse_args(argv)
    backends = [b.strip() for b in ns.backends.split(",") if b.strip()]
    unknown = [b for b in backends if b not in ("sqlite", "postgres")]
    if unknown or ns.n < 1:
        parser.error(f"--backends takes sqlite,postgres and --n at least 1 (got {ns.backends})")
    asyncio.run(run(ns.n, backends, ns.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
