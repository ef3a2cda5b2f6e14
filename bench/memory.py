"""Worker memory with many workflows asleep at once.

python -m bench.memory [--n 10000] [--sleep 3] [--backend sqlite|postgres]

Starts one ``loom worker`` process, then ``n`` workflows that each sleep ``--sleep`` seconds,
all at once, and waits until every one has completed. Reports the worker's resident memory
before any work, its peak while all slept, and the time to complete them all. A parked workflow
holds no lease and no worker slot; only the bounded in-memory cache keeps some of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import loom
from bench.harness import RESULTS, save_json
from bench.timers import BenchSleep

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


@contextlib.asynccontextmanager
async def database_url(backend: str) -> AsyncIterator[str]:
    if backend == "postgres":
        from bench.pg import fresh_database

        async with fresh_database() as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="loom-memory-") as tmp:
            yield f"sqlite:///{tmp}/m.db"


async def run(n: int, sleep: float, backend: str, out: Path | None = None) -> None:
    async with database_url(backend) as url, loom.Database(url) as db:
        await db.migrate_up()
        loom_cli = Path(sys.executable).with_name("loom")
        worker = await asyncio.create_subprocess_exec(
            str(loom_cli), "worker", "-d", url, "-m", "bench.timers", "--workers", "64",
            "--quiet", cwd=ROOT, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await asyncio.sleep(1.0)  # the worker imports its modules and starts polling
            baseline = rss_mb(worker.pid)
            t0 = time.perf_counter()
            handles = await asyncio.gather(
                *(
                    db.start_workflow(BenchSleep, workflow_input={"seconds": sleep})
                    for _ in range(n)
                )
            )
            peak = baseline
            pending = list(handles)
            while pending:
                peak = max(peak, rss_mb(worker.pid))
                status = await pending[-1].status()
                if status is loom.WorkflowStatus.COMPLETED:
                    pending = [
                        h for h in pending
                        if await h.status() is not loom.WorkflowStatus.COMPLETED
                    ]  # fmt: skip
                else:
                    await asyncio.sleep(0.2)
            elapsed = time.perf_counter() - t0
            high_water = rss_mb(worker.pid, "VmHWM")
        finally:
            worker.send_signal(signal.SIGTERM)
            await worker.wait()
    print(f"{n} workflows sleeping {sleep:g} s at once, one worker process ({backend})")
    print(f"  worker RSS before work: {baseline:.1f} MB")
    print(f"  worker RSS peak (sampled): {peak:.1f} MB; high-water mark: {high_water:.1f} MB")
    print(f"  all {n} completed in {elapsed:.1f} s")
    print(f"Machine: {os.cpu_count()} cores")
    if out is not None:
        save_json(
            out,
            {
                "n": n,
                "sleep_s": sleep,
                "backend": backend,
                "baseline_mb": round(baseline, 1),
                "peak_mb": round(max(peak, high_water), 1),
                "completed": n,
                "elapsed_s": round(elapsed, 2),
            },
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Worker memory with many sleeping workflows.")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=3.0)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--json", type=Path, default=RESULTS / "memory.json")
    ns = parser.parse_args(argv)
    asyncio.run(run(ns.n, ns.sleep, ns.backend, ns.json))
    return 0


if __name__ == "__main__":
    sys.exit(main())
