"""Run one workload on DBOS (the peer) and print one JSON result line.

    python -m bench.dbos_runner --workload throughput --mode queue --n 500

Modes:
  queue   enqueue on a DBOS queue; DBOS's queue worker thread dequeues and runs the workflows
          (the closest analogue to Loom's background worker).
  direct  DBOS.start_workflow_async: the workflow starts at once on the caller's event loop.

The system database is a SQLite file in WAL mode with synchronous=FULL on every connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import traceback
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig

from bench.harness import (
    SYNCHRONOUS_NAMES,
    RunnerArgs,
    emit,
    parse_runner_args,
    run_workload,
    sqlite_file_pragmas,
)

QUEUE_NAME = "bench"
MODES = ("queue", "direct")


@DBOS.step()
async def noop_step(i: int) -> int:
    return i


@DBOS.workflow()
async def bench3() -> dict[str, Any]:
    await noop_step(1)
    await noop_step(2)
    await noop_step(3)
    return {}


_observed_connections: list[dict[str, str]] = []


def _durable_sqlite(dbapi_conn: Any, _record: Any) -> None:
    """On every new SQLite connection of any engine: synchronous=FULL, and note what it got."""
    if not isinstance(dbapi_conn, sqlite3.Connection):
        return
    dbapi_conn.execute("PRAGMA synchronous=FULL")
    journal = dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0]
    sync = dbapi_conn.execute("PRAGMA synchronous").fetchone()[0]
    _observed_connections.append(
        {
            "journal_mode": str(journal).upper(),
            "synchronous": SYNCHRONOUS_NAMES.get(sync, str(sync)),
        }
    )


def _create_wal_database(path: Path) -> None:
    """WAL is persistent in the file, so every connection DBOS opens later uses it."""
    conn = sqlite3.connect(path)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RuntimeError(f"could not put {path} in WAL mode (got {mode!r})")
    finally:
        conn.close()


class DbosEngine:
    def __init__(self, mode: str, poll_interval: float) -> None:
        self._mode = mode
        self._poll = poll_interval

    async def start(self) -> Any:
        if self._mode == "queue":
            return await DBOS.enqueue_workflow_async(QUEUE_NAME, bench3)
        return await DBOS.start_workflow_async(bench3)

    async def wait(self, handle: Any) -> Any:
        return await handle.get_result(polling_interval_sec=self._poll)


async def _launch_and_measure(args: RunnerArgs) -> dict[str, Any]:
    DBOS.launch()
    try:
        if args.mode == "queue":
            await DBOS.register_queue_async(
                QUEUE_NAME,
                worker_concurrency=args.concurrency,
                polling_interval_sec=args.poll_interval,
            )
        return await run_workload(DbosEngine(args.mode, args.poll_interval), args)
    finally:
        DBOS.destroy(workflow_completion_timeout_sec=0)


def run(args: RunnerArgs) -> dict[str, Any]:
    sa.event.listen(sa.engine.Engine, "connect", _durable_sqlite)
    with tempfile.TemporaryDirectory(prefix="dbos-bench-") as tmp:
        path = Path(tmp) / "dbos_sys.db"
        _create_wal_database(path)
        config: DBOSConfig = {
            "name": "loom-bench",
            "system_database_url": f"sqlite:///{path}",
            "log_level": "WARNING",
        }
        DBOS(config=config)
        metrics = asyncio.run(_launch_and_measure(args))
        file_pragmas = sqlite_file_pragmas(path)
    per_connection = sorted({tuple(sorted(c.items())) for c in _observed_connections})
    return {
        "metrics": metrics,
        "config": {
            "path": "DBOS queue" if args.mode == "queue" else "DBOS.start_workflow_async",
            "worker_concurrency": args.concurrency if args.mode == "queue" else None,
            "poll_interval_s": args.poll_interval,
            "workflow": "async @DBOS.workflow with 3 async @DBOS.step calls",
            "database": "SQLite system database, WAL, PRAGMA synchronous=FULL per connection",
            "observed": {
                **file_pragmas,
                "connections": [dict(c) for c in per_connection],
                "connection_count": len(_observed_connections),
            },
        },
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_runner_args(argv, modes=MODES)
    base: dict[str, Any] = {
        "engine": "dbos",
        "workload": args.workload,
        "mode": args.mode,
        "version": metadata.version("dbos"),
    }
    try:
        result = run(args)
    except Exception as exc:
        traceback.print_exc()
        emit({**base, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    emit({**base, "ok": True, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
