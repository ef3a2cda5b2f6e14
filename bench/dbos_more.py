"""DBOS's figures for the workloads beyond throughput and latency, measured as Loom's are.

    python -m bench.dbos_more                  # all three, each in its own process
    python -m bench.dbos_more --what timers    # one, printing one JSON result line

On a SQLite system database in WAL mode with ``synchronous=FULL`` (as in ``bench.dbos_runner``),
workflows started with ``DBOS.start_workflow_async``:

* ``timers``: a workflow notes when its durable ``DBOS.sleep_async`` is due (in a step), sleeps,
  and notes when it resumed (in a step): lateness = resumed - due. Idle (one at a time) and a
  crowd all due at the same instant, like ``bench.timers``.
* ``memory``: ``--n`` workflows asleep at once in one DBOS process; its resident memory before
  and at its peak (DBOS runs workflows in the process that starts them, so this one process is
  both the starter and the executor).
* ``history``: one workflow of ``--activities`` no-op steps in a row; the mean time per step over
  the first 500 and the last 500, from times the steps record.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import RESULT_PREFIX, RESULTS, emit, latency_summary, save_json
from bench.history import WINDOW
from bench.memory import rss_mb

WHAT = ("timers", "memory", "history")
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _register() -> dict[str, Any]:
    """Define the DBOS workflows (only in the measuring process, where dbos is imported)."""
    from dbos import DBOS

    @DBOS.step()
    async def due_in(seconds: float) -> float:
        return time.time() + seconds

    @DBOS.step()
    async def now() -> float:
        return time.time()

    @DBOS.workflow()
    async def nap(seconds: float) -> float:
        due = await due_in(seconds)
        await DBOS.sleep_async(seconds)
        woke = await now()
        return (woke - due) * 1000.0

    @DBOS.workflow()
    async def long_sleep(seconds: float) -> None:
        await DBOS.sleep_async(seconds)

    @DBOS.workflow()
    async def many_steps(count: int) -> list[float]:
        return [await now() for _ in range(count)]

    return {"nap": nap, "long_sleep": long_sleep, "many_steps": many_steps}


async def _timers(flows: dict[str, Any], ns: argparse.Namespace) -> dict[str, Any]:
    from dbos import DBOS

    idle = []
    for _ in range(ns.runs):
        handle = await DBOS.start_workflow_async(flows["nap"], ns.sleep)
        idle.append(await handle.get_result())
    gate = asyncio.Semaphore(16)

    async def start() -> Any:
        async with gate:
            return await DBOS.start_workflow_async(flows["nap"], ns.sleep * 5)

    handles = await asyncio.gather(*(start() for _ in range(ns.crowd)))
    crowd = [await h.get_result() for h in handles]
    return {"idle": latency_summary(idle), "crowd": latency_summary(crowd), "sleep_s": ns.sleep}


async def _memory(flows: dict[str, Any], ns: argparse.Namespace) -> dict[str, Any]:
    from dbos import DBOS

    baseline = rss_mb(os.getpid())
    gate = asyncio.Semaphore(16)
    t0 = time.perf_counter()

    async def start() -> Any:
        async with gate:
            return await DBOS.start_workflow_async(flows["long_sleep"], 3600.0)

    peak = baseline
    handles = []
    for _ in range(0, ns.n, 500):
        chunk = min(500, ns.n - len(handles))
        handles += await asyncio.gather(*(start() for _ in range(chunk)))
        peak = max(peak, rss_mb(os.getpid()))
    started = time.perf_counter() - t0
    await asyncio.sleep(1.0)  # every workflow has reached its sleep
    peak = max(peak, rss_mb(os.getpid()), rss_mb(os.getpid(), "VmHWM"))
    return {
        "n": ns.n,
        "baseline_mb": round(baseline, 1),
        "peak_mb": round(peak, 1),
        "start_phase_s": round(started, 2),
        "note": "starter and executor are one process; the workflows were left asleep",
    }


async def _history(flows: dict[str, Any], ns: argparse.Namespace) -> dict[str, Any]:
    from dbos import DBOS

    handle = await DBOS.start_workflow_async(flows["many_steps"], ns.activities)
    stamps = await handle.get_result()
    first = [b - a for a, b in itertools.pairwise(stamps[: WINDOW + 1])]
    last = [b - a for a, b in itertools.pairwise(stamps[-WINDOW - 1 :])]
    return {
        "activities": ns.activities,
        "first_ms": round(statistics.fmean(first) * 1000, 4),
        "last_ms": round(statistics.fmean(last) * 1000, 4),
    }


def measure(ns: argparse.Namespace) -> dict[str, Any]:
    import sqlalchemy as sa

    from bench.dbos_runner import _create_wal_database, _durable_sqlite

    if ns.backend == "postgres":
        from bench import pg

        async def with_server() -> dict[str, Any]:
            async with pg.fresh_database() as url:
                return await asyncio.to_thread(_launch_and_run, ns, url)

        return asyncio.run(with_server())
    sa.event.listen(sa.engine.Engine, "connect", _durable_sqlite)
    with tempfile.TemporaryDirectory(prefix="dbos-more-") as tmp:
        path = Path(tmp) / "dbos_sys.db"
        _create_wal_database(path)
        return _launch_and_run(ns, f"sqlite:///{path}")


def _launch_and_run(ns: argparse.Namespace, url: str) -> dict[str, Any]:
    from dbos import DBOS, DBOSConfig

    flows = _register()
    jobs = {"timers": _timers, "memory": _memory, "history": _history}
    config: DBOSConfig = {
        "name": "loom-bench-more",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    async def go() -> dict[str, Any]:
        DBOS.launch()
        try:
            return await jobs[ns.what](flows, ns)
        finally:
            DBOS.destroy(workflow_completion_timeout_sec=0)

    return asyncio.run(go())


def run_all(ns: argparse.Namespace) -> int:
    from bench import pg

    results: dict[str, Any] = {"version": metadata.version("dbos")}
    plan = [(what, "sqlite") for what in WHAT]
    if asyncio.run(pg.unavailable_reason()) is None:
        plan.append(("timers", "postgres"))
    for what, backend in plan:
        key = what if backend == "sqlite" else f"{what}_{backend}"
        print(f"running dbos {what} ({backend}) ...", end=" ", flush=True)
        cmd = [
            sys.executable, "-m", "bench.dbos_more", f"--what={what}", f"--runs={ns.runs}",
            f"--sleep={ns.sleep}", f"--crowd={ns.crowd}", f"--n={ns.n}",
            f"--activities={ns.activities}", f"--backend={backend}",
        ]  # fmt: skip
        proc = subprocess.run(
            cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800, check=False
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if lines:
            results[key] = json.loads(lines[-1][len(RESULT_PREFIX) :])
        else:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            results[key] = {"ok": False, "error": f"exit {proc.returncode}: {tail}"}
        print(json.dumps(results[key].get("metrics", results[key])), flush=True)
    save_json(ns.json, results)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DBOS's timer, memory and history figures.")
    parser.add_argument("--what", choices=WHAT)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--sleep", type=float, default=0.1)
    parser.add_argument("--crowd", type=int, default=200)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--activities", type=int, default=5000)
    parser.add_argument("--json", type=Path, default=RESULTS / "dbos_more.json")
    parser.add_argument(
        "--save", action="store_true", help="with --what: also update its entry in --json"
    )
    ns = parser.parse_args(argv)
    if ns.what is None:
        return run_all(ns)
    try:
        result: dict[str, Any] = {"ok": True, "metrics": measure(ns)}
    except Exception as exc:
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    emit(result)
    if ns.save:  # run alone: update this workload's entry in the saved results
        saved = json.loads(ns.json.read_text()) if ns.json.exists() else {}
        saved.pop("generated_at", None)
        key = ns.what if ns.backend == "sqlite" else f"{ns.what}_{ns.backend}"
        save_json(ns.json, {**saved, key: result})
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
