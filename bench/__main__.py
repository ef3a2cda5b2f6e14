"""Loom beside DBOS on this machine, in one run: ``python -m bench`` (or ``make bench``).

Each (engine, workload, path) runs in a fresh subprocess with its own temporary SQLite
database; this process only collects the JSON lines, prints the table and saves the JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import pg
from bench.harness import RESULT_PREFIX, WORKLOADS
from bench.report import DBOS_MODE_LABELS, build_pg_rows, build_rows, print_table, write_json

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
RUNNER_TIMEOUT_S = 900


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Run the same workloads on Loom and on DBOS."
    )
    parser.add_argument("--n", type=int, default=2000, help="workflows per throughput run")
    parser.add_argument("--latency-runs", type=int, default=50, help="samples for latency")
    parser.add_argument("--concurrency", type=int, default=64, help="worker concurrency")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=0.05,
        help="seconds; Loom worker poll, DBOS queue poll and DBOS result poll",
    )
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured workflows first")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"subset of {','.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--dbos-modes", default="queue,direct", help="DBOS paths to measure: queue,direct"
    )
    parser.add_argument("--engines", default="loom,dbos", help="subset of loom,dbos")
    parser.add_argument(
        "--backends",
        default=None,
        help="subset of sqlite,postgres (default: both when the PostgreSQL server answers)",
    )
    parser.add_argument(
        "--pg-processes", default="1,2,4", help="worker process counts for PostgreSQL"
    )
    parser.add_argument("--pg-n", type=int, default=3000, help="workflows per PostgreSQL run")
    parser.add_argument(
        "--clients", type=int, default=16, help="starts in flight at once (throughput runs)"
    )
    parser.add_argument(
        "--json", type=Path, default=BENCH_DIR / "results" / "latest.json", help="output file"
    )
    return parser.parse_args(argv)


def _split(value: str, allowed: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in items if v not in allowed]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return items


def run_runner(engine: str, workload: str, mode: str, ns: argparse.Namespace) -> dict[str, Any]:
    """Run one runner subprocess and return its JSON result (or a failure record)."""
    if workload in ("pg_throughput", "pg_latency"):
        cmd = [
            sys.executable,
            "-m",
            "bench.pg_runner",
            f"--workload={workload}",
            f"--latency-runs={ns.latency_runs}",
            f"--engine={engine}",
            f"--processes={mode}",
            f"--n={ns.pg_n}",
            f"--concurrency={ns.concurrency}",
            f"--poll-interval={ns.poll_interval}",
            f"--warmup={ns.warmup}",
            f"--clients={ns.clients}",
        ]
        return _run(cmd, engine, workload, mode)
    cmd = [
        sys.executable,
        "-m",
        f"bench.{engine}_runner",
        f"--workload={workload}",
        f"--mode={mode}",
        f"--n={ns.n}",
        f"--latency-runs={ns.latency_runs}",
        f"--concurrency={ns.concurrency}",
        f"--poll-interval={ns.poll_interval}",
        f"--warmup={ns.warmup}",
        f"--clients={ns.clients}",
    ]
    return _run(cmd, engine, workload, mode)


def _run(cmd: list[str], engine: str, workload: str, mode: str) -> dict[str, Any]:
    paths = [str(PROJECT_ROOT), *_pythonpath(), str(PROJECT_ROOT / "src")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    failure: dict[str, Any] = {"engine": engine, "workload": workload, "mode": mode, "ok": False}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            cwd=PROJECT_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=RUNNER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {**failure, "error": f"timed out after {RUNNER_TIMEOUT_S}s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**failure, "error": f"exit {proc.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_PREFIX) :])
    result["wall_s"] = round(time.perf_counter() - t0, 2)
    return result


def _pythonpath() -> list[str]:
    current = os.environ.get("PYTHONPATH", "")
    return [p for p in current.split(os.pathsep) if p]


def machine_info() -> dict[str, Any]:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu_count": os.cpu_count(),
        "usable_cores": usable,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def _summary(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        return f"FAILED ({result.get('error', 'unknown error')})"
    metrics = result.get("metrics", {})
    return ", ".join(f"{k}={v}" for k, v in sorted(metrics.items()))


def durability_notes(results: Sequence[dict[str, Any]]) -> list[str]:
    notes = []
    for engine in ("loom", "dbos"):
        observed = [
            r["config"]["observed"]
            for r in results
            if r["engine"] == engine and r["ok"] and r["workload"] in WORKLOADS
        ]
        if not observed:
            continue
        journals = sorted({o.get("journal_mode", "?") for o in observed})
        text = f"{engine}: database file journal_mode={'/'.join(journals)}"
        conns = [c for o in observed for c in o.get("connections", [])]
        if conns:
            syncs = sorted({c["synchronous"] for c in conns})
            text += f", synchronous={'/'.join(syncs)} on every connection"
        else:
            text += ", synchronous as set by the engine (not observable from outside)"
        notes.append(text)
    return notes


def _backends(ns: argparse.Namespace) -> tuple[list[str], str | None]:
    """The backends to run, and the server's settings (None without PostgreSQL)."""
    reason = asyncio.run(pg.unavailable_reason())
    if ns.backends is None:
        if reason is not None:
            print(f"{reason}: running the SQLite workloads only")
            return ["sqlite"], None
        backends = ["sqlite", "postgres"]
    else:
        backends = _split(ns.backends, ["sqlite", "postgres"], "backend")
        if "postgres" in backends and reason is not None:
            raise SystemExit(f"--backends postgres: {reason}")
    settings = asyncio.run(pg.server_settings()) if "postgres" in backends else None
    return backends, settings


def pg_notes(ns: argparse.Namespace, settings: dict[str, str]) -> list[str]:
    return [
        f"Server: PostgreSQL {settings['server_version']} at {pg.ADMIN_URL.rsplit('/', 1)[0]}, "
        f"same machine; one fresh database per run, dropped afterwards",
        f"Durability: synchronous_commit={settings['synchronous_commit']}, "
        f"fsync={settings['fsync']}, wal_sync_method={settings['wal_sync_method']} (SHOW)",
        f"Settings: n={ns.pg_n} per run, {ns.clients} starts in flight from the benchmark "
        f"process, concurrency={ns.concurrency} per worker process, "
        f"poll interval={ns.poll_interval}s, warm-up={ns.warmup}",
        "Loom: K `loom worker` processes; DBOS: K DBOS processes dequeuing one queue "
        "(worker_concurrency per process), workflows enqueued with DBOSClient",
        "Loom/DBOS above 1 means Loom's figure is larger (better).",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    ns = parse_args(argv)
    backends, pg_settings = _backends(ns)
    pg_processes = [int(k) for k in ns.pg_processes.split(",") if k.strip()]
    workloads = _split(ns.workloads, list(WORKLOADS), "workload")
    if "sqlite" not in backends:
        workloads = []
    engines = _split(ns.engines, ["loom", "dbos"], "engine")
    dbos_modes = _split(ns.dbos_modes, list(DBOS_MODE_LABELS), "DBOS mode")
    machine = machine_info()

    if "dbos" in engines and importlib.util.find_spec("dbos") is None:
        print(
            "DBOS is not installed (pip install 'dbos>=3.4', or `make bench`); "
            "showing Loom's figures alone."
        )
        engines.remove("dbos")
    if "dbos" not in engines:
        dbos_modes = []

    plan = [
        (engine, workload, mode)
        for workload in workloads
        for engine, modes in (("loom", ["worker"]), ("dbos", dbos_modes))
        if engine in engines
        for mode in modes
    ]
    if "postgres" in backends:
        plan += [
            (engine, "pg_throughput", str(k))
            for k in pg_processes
            for engine in ("loom", "dbos")
            if engine in engines
        ]
        plan += [(engine, "pg_latency", "1") for engine in ("loom", "dbos") if engine in engines]
    results = []
    for engine, workload, mode in plan:
        label = f"{mode} process(es)" if workload.startswith("pg_") else mode
        print(f"running {engine:<4} {workload:<13} ({label}) ...", end=" ", flush=True)
        result = run_runner(engine, workload, mode, ns)
        print(_summary(result), flush=True)
        results.append(result)

    settings = {
        "n": ns.n,
        "latency_runs": ns.latency_runs,
        "warmup": ns.warmup,
        "concurrency": ns.concurrency,
        "poll_interval_s": ns.poll_interval,
        "sqlite_durability": "journal_mode=WAL, synchronous=FULL",
    }
    notes = [
        f"Machine: {machine['cpu_count']} cores ({machine['usable_cores']} usable), "
        f"{machine['platform']}, Python {machine['python']}, SQLite {machine['sqlite']}",
        "Durability: SQLite journal_mode=WAL, synchronous=FULL, one fresh database per run",
        *(f"  {n}" for n in durability_notes(results)),
        f"Settings: n={ns.n}, latency runs={ns.latency_runs}, warm-up={ns.warmup}, "
        f"concurrency={ns.concurrency}, poll interval={ns.poll_interval}s",
        "Loom/DBOS above 1 means Loom's figure is larger: good for workflows/s, bad for ms.",
    ]
    if pg_settings is not None:
        settings["postgres"] = {**pg_settings, "processes": pg_processes, "n": ns.pg_n}
    rows = []
    if workloads:
        rows = build_rows(results, workloads, dbos_modes)
        print()
        print_table(rows, "Loom vs DBOS on SQLite: workflows of 3 no-op activities", notes)
    if pg_settings is not None:
        pg_rows = build_pg_rows(results, pg_processes)
        rows += pg_rows
        print()
        print_table(pg_rows, "Loom vs DBOS on one PostgreSQL server", pg_notes(ns, pg_settings))
    for r in results:
        if not r.get("ok"):
            print(f"{r['engine']} {r['workload']} ({r['mode']}) failed: {r.get('error')}")

    payload = {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine,
        "settings": settings,
        "results": results,
    }
    write_json(ns.json, payload, rows)
    print(f"results written to {ns.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
