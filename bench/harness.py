"""Engine-neutral pieces of the benchmark: runner arguments, workloads, statistics, output.

Every engine runner builds an :class:`Engine` adapter (start one workflow, wait for one
result) and hands it to :func:`run_workload`, so both engines are timed by the same code.
A new workload is one ``async`` function plus one :class:`Workload` entry in ``WORKLOADS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

RESULTS = Path(__file__).resolve().parent / "results"
"""Where every benchmark writes its JSON; ``python -m bench.summary`` reads them all."""

RESULT_PREFIX = "BENCH_RESULT "
"""Marks the one stdout line of a runner that carries its JSON result."""

SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class Engine(Protocol):
    """The two operations every workload is built from."""

    async def start(self) -> Any:
        """Start one 3-activity workflow and return its handle."""
        ...

    async def wait(self, handle: Any) -> Any:
        """Wait until the workflow behind ``handle`` has finished; return its result."""
        ...


@dataclass(frozen=True)
class RunnerArgs:
    workload: str
    mode: str
    n: int
    latency_runs: int
    concurrency: int
    poll_interval: float
    warmup: int
    clients: int = 16


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    higher_is_better: bool


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    metrics: tuple[Metric, ...]
    measure: Callable[[Engine, RunnerArgs], Awaitable[dict[str, Any]]]


async def _warm_up(engine: Engine, count: int) -> None:
    """Run a few workflows first so lazy start-up costs stay out of the figures."""
    for _ in range(count):
        await engine.wait(await engine.start())


async def measure_serial_throughput(engine: Engine, args: RunnerArgs) -> dict[str, Any]:
    """Start ``n`` workflows back to back from one client, then wait for all; first start to
    last result. Every start waits for its own durable write before the next is made."""
    await _warm_up(engine, args.warmup)
    t0 = time.perf_counter()
    handles = [await engine.start() for _ in range(args.n)]
    started = time.perf_counter()
    for handle in handles:
        await engine.wait(handle)
    elapsed = time.perf_counter() - t0
    return {
        "n": args.n,
        "elapsed_s": round(elapsed, 4),
        "start_phase_s": round(started - t0, 4),
        "wf_per_s": round(args.n / elapsed, 2),
    }


async def measure_throughput(engine: Engine, args: RunnerArgs) -> dict[str, Any]:
    """``n`` workflows started by ``clients`` concurrent clients (as a web service's requests
    would), then every result awaited."""
    return {
        **await measure_concurrent_throughput(engine, args, args.clients),
        "clients": args.clients,
    }


async def measure_concurrent_throughput(
    engine: Engine, args: RunnerArgs, clients: int
) -> dict[str, Any]:
    """Start ``n`` workflows with ``clients`` starts in flight at once, then wait for each in
    order; the figure is ``n`` over the time from the first start to the last result."""
    await _warm_up(engine, args.warmup)
    gate = asyncio.Semaphore(clients)

    async def start() -> Any:
        async with gate:
            return await engine.start()

    t0 = time.perf_counter()
    handles = await asyncio.gather(*(start() for _ in range(args.n)))
    started = time.perf_counter()
    for handle in handles:
        await engine.wait(handle)
    elapsed = time.perf_counter() - t0
    return {
        "n": args.n,
        "elapsed_s": round(elapsed, 4),
        "start_phase_s": round(started - t0, 4),
        "wf_per_s": round(args.n / elapsed, 2),
    }


async def measure_latency(engine: Engine, args: RunnerArgs) -> dict[str, Any]:
    """Start one workflow and wait for its result, one at a time, on an otherwise idle worker."""
    await _warm_up(engine, args.warmup)
    samples: list[float] = []
    for _ in range(args.latency_runs):
        t0 = time.perf_counter()
        await engine.wait(await engine.start())
        samples.append((time.perf_counter() - t0) * 1000.0)
    return {"runs": len(samples), **latency_summary(samples)}


def latency_summary(samples_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    if len(ordered) > 1:
        p95 = statistics.quantiles(ordered, n=100, method="inclusive")[94]
    else:
        p95 = ordered[0]
    return {
        "p50_ms": round(statistics.median(ordered), 3),
        "p95_ms": round(p95, 3),
        "mean_ms": round(statistics.fmean(ordered), 3),
        "min_ms": round(ordered[0], 3),
        "max_ms": round(ordered[-1], 3),
    }


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload(
            name="throughput",
            description="N workflows x 3 no-op activities, started by concurrent clients, "
            "first start to last result",
            metrics=(Metric("wf_per_s", "workflows/s", higher_is_better=True),),
            measure=measure_throughput,
        ),
        Workload(
            name="serial",
            description="the same, started back to back by one client",
            metrics=(Metric("wf_per_s", "workflows/s", higher_is_better=True),),
            measure=measure_serial_throughput,
        ),
        Workload(
            name="latency",
            description="one 3-activity workflow, start to result, on an idle worker, repeated",
            metrics=(
                Metric("p50_ms", "p50 ms", higher_is_better=False),
                Metric("p95_ms", "p95 ms", higher_is_better=False),
            ),
            measure=measure_latency,
        ),
    )
}


async def run_workload(engine: Engine, args: RunnerArgs) -> dict[str, Any]:
    return await WORKLOADS[args.workload].measure(engine, args)


def parse_runner_args(argv: Sequence[str] | None, modes: Sequence[str]) -> RunnerArgs:
    parser = argparse.ArgumentParser(description="Run one benchmark workload on one engine.")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--mode", choices=list(modes), default=modes[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    ns = parser.parse_args(argv)
    return RunnerArgs(
        workload=ns.workload,
        mode=ns.mode,
        n=ns.n,
        latency_runs=ns.latency_runs,
        concurrency=ns.concurrency,
        poll_interval=ns.poll_interval,
        warmup=ns.warmup,
        clients=ns.clients,
    )


def emit(result: dict[str, Any]) -> None:
    """Write the runner's result as one JSON line on stdout, for the parent to collect."""
    sys.stdout.write(RESULT_PREFIX + json.dumps(result, sort_keys=True) + "\n")
    sys.stdout.flush()


def sqlite_file_pragmas(path: Path) -> dict[str, str]:
    """journal_mode as persisted in the database file (WAL is a property of the file)."""
    if not path.exists():
        return {"journal_mode": "missing"}
    conn = sqlite3.connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    return {"journal_mode": str(mode).upper()}


def save_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    stamped = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **payload}
    path.write_text(json.dumps(stamped, indent=2, sort_keys=True) + "\n")
