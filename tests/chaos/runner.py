"""Run the chaos workload on one or both backends, check it, and summarise it in one line."""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import loom
from chaos import checker, driver
from chaos.cluster import ClusterUnavailable, throwaway_cluster


@dataclass
class Result:
    options: driver.Options
    clients: list[driver.Client]
    chaos: driver.Chaos
    verdict: checker.Verdict


def full_options(backend: str, workflows: int, seed: int, workdir: Path) -> driver.Options:
    """``make chaos``: 4 worker processes on PostgreSQL (restarted twice), 2 on SQLite."""
    postgres = backend == "postgres"
    return driver.Options(
        backend=backend,
        workflows=workflows,
        seed=seed,
        workdir=workdir / backend,
        processes=4 if postgres else 2,
        start_seconds=max(10.0, workflows / (20 if postgres else 15)),  # about their pace
        pg_restarts=2 if postgres else 0,
        patience=45.0,
        drain_seconds=180.0,
    )


def short_options(backend: str, workflows: int, seed: int, workdir: Path) -> driver.Options:
    """The pytest form: a few hundred workflows, fewer kills, one PostgreSQL restart."""
    return replace(
        full_options(backend, workflows, seed, workdir),
        start_seconds=max(6.0, workflows / 30),
        pg_restarts=1 if backend == "postgres" else 0,
        patience=20.0,
        drain_seconds=60.0,
    )


async def _run(
    url: str,
    options: driver.Options,
    restart_db: Callable[[int], None] | None,
    say: Callable[[str], None],
) -> Result:
    async with loom.Database(url) as db:
        await db.migrate_up()
        clients, chaos = await driver.run(db, options, restart_db, say)
        say(
            f"{options.backend}: {chaos.kills} kills, {chaos.pg_restarts} restarts in "
            f"{chaos.seconds:.0f} s ({'all ended' if chaos.drained else 'NOT all ended'}); checking"
        )
        verdict = await checker.check(db, clients, options.workdir / "executions")
        checker.check_idle_workers(chaos.idle_cpu, verdict)
    return Result(options, clients, chaos, verdict)


def run_backend(options: driver.Options, say: Callable[[str], None]) -> Result:
    """Run one backend's workload under chaos and check it. Raises ClusterUnavailable when a
    PostgreSQL run cannot have a throwaway cluster."""
    options.workdir.mkdir(parents=True, exist_ok=True)
    if options.backend == "sqlite":
        url = f"sqlite:///{options.workdir / 'loom.db'}"
        return asyncio.run(_run(url, options, None, say))
    with throwaway_cluster() as cluster:

        def restart(n: int) -> None:  # a clean restart, then a crash-like one
            cluster.pg_ctl("restart", "-m", "fast" if n % 2 == 0 else "immediate")

        return asyncio.run(_run(cluster.url, options, restart, say))


def summary_line(seed: int, results: list[Result], seconds: float) -> str:
    statuses: collections.Counter[str] = collections.Counter()
    kinds: collections.Counter[str] = collections.Counter()
    for r in results:
        statuses.update(r.verdict.statuses)
        kinds.update(r.verdict.by_kind())
    per = ", ".join(f"{r.options.backend} {r.options.workflows}" for r in results)
    kills = ", ".join(f"{r.options.backend} {r.chaos.kills}" for r in results)
    reruns = sum(r.verdict.reruns for r in results)
    executions = sum(r.verdict.executions for r in results)
    anomalies = sum(kinds.values())
    by_kind = ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"
    errors = sum(sum(r.chaos.client_errors.values()) for r in results)
    return (
        f"chaos seed {seed}: workflows {sum(r.options.workflows for r in results)} ({per}; "
        + ", ".join(f"{s.lower()} {n}" for s, n in sorted(statuses.items()))
        + f"), kills {sum(r.chaos.kills for r in results)} ({kills}), "
        f"PostgreSQL restarts {sum(r.chaos.pg_restarts for r in results)}, activity re-runs "
        f"{reruns} of {executions} executions, client retries {errors}, "
        f"anomalies {anomalies} ({by_kind}), {seconds:.0f} s"
    )


def details(results: list[Result], limit: int = 6) -> str:
    """The first ``limit`` anomalous workflows of each backend, each with what is wrong."""
    lines = []
    for r in results:
        ids = r.verdict.anomalous_workflows()
        if not ids:
            continue
        lines.append(f"{r.options.backend}: {len(ids)} anomalous workflows; the first {limit}:")
        for wid in ids[:limit]:
            lines += [a.render() for a in r.verdict.anomalies if a.workflow_id == wid]
    return "\n".join(lines)


def coverage(result: Result) -> str:
    counts = sorted(result.verdict.coverage.items())
    idle = ", ".join(f"{share:.0%}" for share in result.chaos.idle_cpu.values())
    return (
        f"{result.options.backend} covered: "
        + ", ".join(f"{k} {n}" for k, n in counts)
        + f"; kills right after a requested cancel {result.chaos.kills_after_cancel}"
        + f"; workers that exited on their own {result.chaos.exited}"
        + f"; idle workers' CPU: {idle or 'not measured'}"
        + "; the latest timer fired {:.1f} s late ({})".format(*result.verdict.latest_timer)
    )


def write_report(results: list[Result], path: Path) -> None:
    with path.open("w") as out:
        for r in results:
            out.write(f"== {r.options.backend}: client errors {dict(r.chaos.client_errors)}\n")
            out.write(coverage(r) + "\n")
            for a in r.verdict.anomalies:
                out.write(a.render() + "\n")
            for wid, lines in r.verdict.histories.items():
                out.write(f"-- history of {wid}\n" + "".join(f"   {x}\n" for x in lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos", description="Loom under chaos: kills, restarts, checks."
    )
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--workflows", type=int, default=2000, help="per backend")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--short", action="store_true", help="the pytest form's timings")
    parser.add_argument("--workdir", type=Path, help="kept afterwards (default: a temporary one)")
    args = parser.parse_args(argv)

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through every cleanup

    signal.signal(signal.SIGTERM, stop)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="loom-chaos-"))
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    make = short_options if args.short else full_options
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(  # the client's own warnings (outages) go to a file, not the console
        filename=workdir / "client.log",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.WARNING,
    )

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {text}", file=sys.stderr, flush=True)

    results = []
    try:
        for backend in backends:
            options = make(backend, args.workflows, args.seed, workdir)
            try:
                results.append(run_backend(options, say))
            except ClusterUnavailable as exc:
                print(f"chaos: cannot run on PostgreSQL: {exc}", file=sys.stderr)
                return 2
        write_report(results, workdir / "anomalies.txt")
        for r in results:
            say(coverage(r))
        print(summary_line(args.seed, results, time.monotonic() - began), flush=True)
        text = details(results)
        if text:
            print(text)
            print(f"all anomalies: {workdir / 'anomalies.txt'}")
            return 1
        return 0
    finally:
        driver._kill_leftovers()
        if args.workdir is None and not any(r.verdict.anomalies for r in results):
            shutil.rmtree(workdir, ignore_errors=True)
