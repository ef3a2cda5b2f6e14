"""Run one workload on Loom, through its background worker, and print one JSON result line.

python -m bench.loom_runner --workload throughput --n 500
"""

from __future__ import annotations

import asyncio
import tempfile
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import RunnerArgs, emit, parse_runner_args, run_workload, sqlite_file_pragmas

RESULT_TIMEOUT_S = 120.0


class LoomEngine:
    def __init__(self, db: Any, workflow: type, timeout: float = RESULT_TIMEOUT_S) -> None:
        self._db = db
        self._workflow = workflow
        self._timeout = timeout

    async def start(self) -> Any:
        return await self._db.start_workflow(self._workflow, workflow_input={}, initial_state={})

    async def wait(self, handle: Any) -> Any:
        return await handle.result(timeout=self._timeout)


async def run(args: RunnerArgs) -> dict[str, Any]:
    import loom
    from bench.loom_workflows import Bench3

    with tempfile.TemporaryDirectory(prefix="loom-bench-") as tmp:
        path = Path(tmp) / "loom.db"
        async with loom.Database(f"sqlite:///{path}") as db:
            await db.migrate_up()
            worker = loom.Worker(db, concurrency=args.concurrency, poll_interval=args.poll_interval)
            async with worker:
                metrics = await run_workload(LoomEngine(db, Bench3), args)
        pragmas = sqlite_file_pragmas(path)
    return {
        "metrics": metrics,
        "config": {
            "path": "background worker",
            "workflow": "Bench3: 1 step awaiting 3 no-op activities",
            "worker_concurrency": args.concurrency,
            "poll_interval_s": args.poll_interval,
            "database": "SQLite file, engine's own settings",
            "observed": pragmas,
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_runner_args(argv, modes=("worker",))
    base: dict[str, Any] = {"engine": "loom", "workload": args.workload, "mode": args.mode}
    try:
        base["version"] = metadata.version("loom-core")
    except metadata.PackageNotFoundError:
        base["version"] = "unknown"
    try:
        result = asyncio.run(run(args))
    except Exception as exc:
        traceback.print_exc()
        emit({**base, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({**base, "ok": True, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
