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
import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import asyncpg  # type: ignore[import-untyped]
import pytest

import fencing_workload
import loom
from fencing_workload import FencingPipeline, expected_state
from loom import EventType, WorkflowStatus
from support import eventually, pg

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.postgres]

WORKFLOWS = 50
LEASE_SECONDS = 2.0


def unavailable(reason: str) -> NoReturn:
    """Skip loudly without the means to run a throwaway cluster; fail instead under CI=true."""
    if pg.in_ci():
        pytest.fail(f"a throwaway PostgreSQL cluster is required in CI: {reason}", pytrace=False)
    pytest.skip(f"SKIPPING POSTGRESQL RESTART TEST: {reason}")  # not CI


@dataclass
class Cluster:
    """A PostgreSQL cluster of its own, in a temporary directory, listening on ``port``."""

    bindir: Path
    root: Path
    port: int
    as_user: list[str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/loom"

    def run(self, tool: str, *args: str) -> None:
        cmd = [*self.as_user, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}\n"
                f"{log.read_text() if log.exists() else ''}"
            )

    def pg_ctl(self, action: str, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run(
            "pg_ctl", action, "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-w", "-t", "30", "-o", options, *args,
        )  # fmt: skip


def find_bindir() -> Path | None:
    def version(path: str) -> float:
        with contextlib.suppress(ValueError):
            return float(Path(path).parent.name)
        return 0.0

    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        if all(os.access(Path(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return Path(bindir)
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir = find_bindir()
    if bindir is None:
        unavailable("no initdb/pg_ctl under /usr/lib/postgresql/*/bin")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="loom-pg-restart-"))  # reachable by the postgres user
    try:
        if os.geteuid() == 0:  # initdb refuses to run as root
            runuser = shutil.which("runuser")
            if runuser is None:
                unavailable("running as root and no runuser to become the postgres user")
            try:
                shutil.chown(root, user="postgres")
            except (LookupError, PermissionError) as exc:
                unavailable(f"cannot hand {root} to the postgres OS user: {exc}")
            as_user = [str(runuser), "-u", "postgres", "--"]
        cluster = Cluster(bindir, root, free_port(), as_user)
        try:
            cluster.run(
                "initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--no-sync",
            )  # fmt: skip
            cluster.pg_ctl("start")
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            unavailable(f"cannot start a throwaway cluster: {exc}")
        try:
            asyncio.run(create_database(cluster.port))
            yield cluster
        finally:
            with contextlib.suppress(Exception):
                cluster.pg_ctl("stop", "-m", "immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def create_database(port: int) -> None:
    conn = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", timeout=10)
    try:
        await conn.execute("CREATE DATABASE loom")
    finally:
        await conn.close()


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
