"""Routed activities survive their workers being SIGKILLed: real `loom worker --queue gpu`
processes run the gpu activities of workflows driven by a worker of the default queue, and are
killed over and over while they run them. Every workflow completes, and each activity's outcome
is recorded exactly once in its history (attempts a dead worker was running run again: at least
once; their outcome is recorded once)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

import loom
from loom.core.history import EventType
from routing_workload import Hold
from support import eventually
from support.workers import of_type, spawn_loom_worker, worker


def spawn_gpu_worker(db_url: str, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A `loom worker` process serving queue "gpu" only, with short leases."""
    options = ["-m", "routing_workload", "--workers", "3", "--queue", "gpu"]
    return spawn_loom_worker(
        db_url, log, cwd, *options, "--poll-interval", "0.05", "--lease-seconds", "1"
    )


@pytest.mark.processes
@pytest.mark.slow
async def test_killed_gpu_workers_lose_no_routed_activity_and_record_each_once(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    ids = [f"k{i}" for i in range(40)]
    for wid in ids:
        await db.start_workflow(Hold, workflow_id=wid, workflow_input={"seconds": 0.5})
    log = tmp_path / "gpu.log"
    procs = [spawn_gpu_worker(db_url, log, tmp_path) for _ in range(2)]
    rng = random.Random(7)
    try:
        async with worker(db, queues=["default"], lease_seconds=2):
            for _ in range(8):  # kill one gpu worker mid-attempt, start another
                await asyncio.sleep(rng.uniform(0.5, 1.0))
                victim = procs.pop(rng.randrange(len(procs)))
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                procs.append(spawn_gpu_worker(db_url, log, tmp_path))

            async def all_done() -> bool:
                for p in procs:
                    if p.poll() is not None:
                        pytest.fail(f"a gpu worker exited with {p.returncode}:\n{log.read_text()}")
                statuses = [(await db.get_workflow(w).describe()).status for w in ids]
                return all(s is loom.WorkflowStatus.COMPLETED for s in statuses)

            await eventually(all_done, 120, what="every workflow to complete")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    pids = set()
    for wid in ids:
        events = await db.get_workflow(wid).events()
        [scheduled] = of_type(events, EventType.ACTIVITY_SCHEDULED)
        completed = of_type(events, EventType.ACTIVITY_COMPLETED)
        assert [e.payload["scheduled"] for e in completed] == [scheduled.seq], wid
        assert of_type(events, EventType.ACTIVITY_FAILED) == [], wid
        pids.add((await db.get_workflow(wid).describe()).state["held"]["pid"])
    assert os.getpid() not in pids  # every one ran in a gpu worker process
    gpu = next((q for q in await db.queues() if q.name == "gpu"), None)
    assert gpu is None or (gpu.depth, gpu.running) == (0, 0)
