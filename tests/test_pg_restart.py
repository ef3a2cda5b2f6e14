"""Database restart tolerance: PostgreSQL restarts in the middle of a run, and every workflow
still completes, each activity result recorded exactly once.

The test creates its own throwaway cluster (initdb into a temporary directory, pg_ctl on a free
port; as the ``postgres`` OS user when running as root, since initdb refuses root), so the
shared server is never disturbed. Two workers run against it: one in this process and one
worker process (tests/fencing_workload.py). Without the PostgreSQL server binaries the test is
skipped loudly; under ``CI=true`` it fails instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest

import fencing_workload
import loom
from fencing_workload import FencingPipeline, expected_state
from loom import EventType, WorkflowStatus
from support import eventually
from support.cluster import Cluster, ClusterUnavailable, throwaway_cluster
from support.pg import unavailable

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.postgres]

WORKFLOWS = 50
LEASE_SECONDS = 2.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    stack = contextlib.ExitStack()
    try:
        running = stack.enter_context(throwaway_cluster("loom-pg-restart-"))
    except ClusterUnavailable as exc:
        unavailable(f"a throwaway PostgreSQL cluster: {exc}")
    with stack:
        yield running


async def server_started_at(url: str) -> float:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        started = await conn.fetchval("SELECT extract(epoch FROM pg_postmaster_start_time())")
        return float(started)
    finally:
        await conn.close()


async def count_completed(database: loom.Database) -> int:
    """How many workflows have completed; -1 while the database cannot be reached."""
    try:
        return len(await database.list_workflows(status=WorkflowStatus.COMPLETED, limit=-1))
    except loom.StoreError:
        return -1


async def completed_at_least(database: loom.Database, n: int, timeout: float) -> int:
    """Wait until at least ``n`` workflows have completed; returns how many have."""
    done = -1

    async def enough() -> bool:
        nonlocal done
        done = await count_completed(database)
        return done >= n

    await eventually(enough, timeout, what=lambda: f"{n} completed workflows (only {done})")
    return done


async def test_workflows_complete_across_a_postgres_restart(
    cluster: Cluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loom.worker")
    activity_log = tmp_path / "activities.log"
    stderr_path = tmp_path / "worker-process.stderr"
    async with loom.Database(cluster.url) as db:
        await db.migrate_up()
        handles = [
            await db.start_workflow(
                FencingPipeline,
                workflow_input={"n": n, "log": str(activity_log), "step_ms": 60, "slow_ms": 150},
                workflow_id=f"restart-{n:02d}",
            )
            for n in range(WORKFLOWS)
        ]
        first_start = await server_started_at(cluster.url)

        process = await fencing_workload.spawn(
            cluster.url, stderr_path, "--concurrency", "4", "--lease-seconds", str(LEASE_SECONDS)
        )
        try:
            async with loom.Worker(
                db, concurrency=4, poll_interval=0.05, lease_seconds=LEASE_SECONDS
            ) as worker:
                done = await completed_at_least(db, 8, timeout=20)
                assert done < WORKFLOWS // 2, "the run ended too early to be interrupted"

                await asyncio.to_thread(cluster.pg_ctl, "restart", "-m", "fast")

                await completed_at_least(db, WORKFLOWS, timeout=25)
            stats = await fencing_workload.stop(process)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

        assert await server_started_at(cluster.url) > first_start  # it really restarted
        # Both workers noticed the outage and carried on.
        for text in (caplog.text, stderr_path.read_text()):
            assert "the database is unavailable" in text or "database error" in text
        assert worker.stats.completed > 0 and stats["completed"] > 0  # both shared the run

        for n, handle in enumerate(handles):
            assert await handle.status() is WorkflowStatus.COMPLETED
            assert await handle.state() == expected_state(n)
            events = await handle.events()
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            scheduled = [e.seq for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
            completed = [
                e.payload["scheduled"] for e in events if e.type is EventType.ACTIVITY_COMPLETED
            ]
            assert len(scheduled) == 3
            assert sorted(completed) == scheduled, handle.workflow_id
            assert [e.type for e in events].count(EventType.WORKFLOW_COMPLETED) == 1


async def test_an_idle_worker_hears_new_work_again_after_a_restart(cluster: Cluster) -> None:
    """With a one-minute poll interval, only a LISTEN re-established after the restart can
    wake the idle worker for work started afterwards."""
    async with loom.Database(cluster.url) as db, loom.Database(cluster.url) as client:
        await db.migrate_up()
        # The worker's own Database is not told of starts made through `client`: only a NOTIFY
        # reaches it.
        async with loom.Worker(db, poll_interval=60, lease_seconds=LEASE_SECONDS):
            await asyncio.to_thread(cluster.pg_ctl, "restart", "-m", "fast")
            deadline = time.monotonic() + 20
            handle = None
            while handle is None:  # the pool reconnects on first use after the restart
                try:
                    handle = await client.start_workflow(
                        FencingPipeline,
                        workflow_input={"n": 1, "log": os.devnull, "step_ms": 1, "slow_ms": 1},
                    )
                except loom.StoreError:
                    assert time.monotonic() < deadline, "PostgreSQL did not come back"
                    await asyncio.sleep(0.05)
            assert await handle.result(timeout=15) == expected_state(1)
