"""Throughput on PostgreSQL with K worker processes, for Loom or DBOS; one JSON result line.

    python -m bench.pg_runner --engine loom --processes 4 --n 2000

A fresh database is created on the server (see ``bench/pg.py``), K executor processes are
started against it (Loom: the ``loom worker`` console script; DBOS: ``bench.dbos_worker_proc``,
each a DBOS application dequeuing from the same queue), and this process only starts the
workflows (Loom: ``Database.start_workflow``; DBOS: ``DBOSClient.enqueue_async``) and awaits
their results. The database is dropped afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import pg
from bench.harness import RunnerArgs, emit, measure_concurrent_throughput, measure_latency
from bench.loom_runner import LoomEngine

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LOOM_SCRIPT = Path(sys.executable).parent / "loom"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
RESULT_TIMEOUT_S = 300.0
ENGINES = ("loom", "dbos")


class Proc:
    """One executor process; its stdout and stderr go to files read for its ready line."""

    def __init__(self, cmd: list[str], log_dir: Path, index: int, ready: str) -> None:
        self.out = log_dir / f"proc{index}.out"
        self.err = log_dir / f"proc{index}.err"
        self.ready = ready
        env = dict(os.environ)
        env.pop("LOOM_DATABASE_URL", None)
        env.pop("LOOM_MODULES", None)
        with self.out.open("w") as out, self.err.open("w") as err:
            self.proc = subprocess.Popen(cmd, cwd=PROJECT_ROOT, env=env, stdout=out, stderr=err)

    def logs(self) -> str:
        return self.out.read_text() + self.err.read_text()

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while self.ready not in self.logs():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}: {self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready after {READY_TIMEOUT_S}s: {self.tail()}")
            await asyncio.sleep(0.05)

    def tail(self) -> str:
        lines = self.logs().strip().splitlines()
        return lines[-1] if lines else "no output"

    async def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(self.proc.wait, STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


def _loom_cmd(url: str, args: RunnerArgs) -> list[str]:
    return [
        str(LOOM_SCRIPT),
        "worker",
        "-d",
        url,
        "-m",
        "bench.loom_workflows",
        "--workers",
        str(args.concurrency),
        "--poll-interval",
        str(args.poll_interval),
    ]


def _dbos_cmd(url: str, args: RunnerArgs) -> list[str]:
    return [
        sys.executable,
        "-m",
        "bench.dbos_worker_proc",
        url,
        f"--concurrency={args.concurrency}",
        f"--poll-interval={args.poll_interval}",
    ]


class DbosClient:
    def __init__(self, client: Any, poll_interval: float) -> None:
        self._client = client
        self._poll = poll_interval

    async def start(self) -> Any:
        from bench.dbos_runner import QUEUE_NAME

        options = {"queue_name": QUEUE_NAME, "workflow_name": "bench3"}
        return await self._client.enqueue_async(options)

    async def wait(self, handle: Any) -> Any:
        return await handle.get_result(polling_interval_sec=self._poll)


async def _workload(engine: Any, args: RunnerArgs) -> dict[str, Any]:
    if args.workload == "pg_latency":
        return await measure_latency(engine, args)
    return await measure_concurrent_throughput(engine, args, args.clients)


async def _measure(engine: str, url: str, args: RunnerArgs, clients: int) -> dict[str, Any]:
    cmd = _loom_cmd if engine == "loom" else _dbos_cmd
    ready = "ready on" if engine == "loom" else "ready"
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory(prefix="pg-bench-") as tmp:
        try:
            if engine == "loom":
                import loom

                async with loom.Database(url) as db:
                    await db.migrate_up()
            # The first process creates DBOS's schema; the others start once it is there.
            for index in range(int(args.mode)):
                procs.append(Proc(cmd(url, args), Path(tmp), index, ready))
                if index == 0:
                    await procs[0].wait_ready()
            for proc in procs:
                await proc.wait_ready()
            if engine == "loom":
                import loom
                from bench.loom_workflows import Bench3

                async with loom.Database(f"{url}?pool_max={clients}") as db:
                    metrics = await _workload(LoomEngine(db, Bench3, RESULT_TIMEOUT_S), args)
            else:
                from dbos import DBOSClient

                client = DBOSClient(system_database_url=url, system_database_pool_size=clients)
                try:
                    metrics = await _workload(DbosClient(client, args.poll_interval), args)
                finally:
                    client.destroy()
        finally:
            exits = [await proc.stop() for proc in procs]
    metrics["worker_exit_codes"] = exits
    return metrics


async def run(engine: str, args: RunnerArgs, clients: int) -> dict[str, Any]:
    settings = await pg.server_settings()
    async with pg.fresh_database() as url:
        metrics = await _measure(engine, url, args, clients)
    return {
        "metrics": metrics,
        "config": {
            "path": "loom worker processes" if engine == "loom" else "DBOS queue, K processes",
            "processes": int(args.mode),
            "worker_concurrency": args.concurrency,
            "poll_interval_s": args.poll_interval,
            "starting_clients": clients,
            "database": "PostgreSQL, fresh database per run",
            "observed": settings,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument(
        "--workload", choices=("pg_throughput", "pg_latency"), default="pg_throughput"
    )
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--poll-interval", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16, help="starts in flight at once")
    ns = parser.parse_args(argv)
    args = RunnerArgs(
        workload=ns.workload,
        mode=str(ns.processes),
        n=ns.n,
        latency_runs=ns.latency_runs,
        concurrency=ns.concurrency,
        poll_interval=ns.poll_interval,
        warmup=ns.warmup,
        clients=ns.clients,
    )
    dist = "loom-core" if ns.engine == "loom" else "dbos"
    base: dict[str, Any] = {"engine": ns.engine, "workload": args.workload, "mode": args.mode}
    try:
        base["version"] = metadata.version(dist)
    except metadata.PackageNotFoundError:
        base["version"] = "unknown"
    try:
        result = asyncio.run(run(ns.engine, args, ns.clients))
    except Exception as exc:
        traceback.print_exc()
        emit({**base, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({**base, "ok": True, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
