"""A rolling deploy with two `loom worker` processes on one database, on both backends: the old
process has version 1 only, the new one versions 1 and 2. A run stays on the version it started
with wherever it resumes; version 2 waits for a worker that has it, never run or failed by one
that does not."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import loom
from loom import WorkflowStatus
from support import eventually
from support.workers import spawn_loom_worker
from version_v2 import DeployV1, DeployV2

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def spawn(db_url: str, module: str, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return spawn_loom_worker(db_url, log, cwd, "-m", module, "--poll-interval", "0.05")


async def started(proc: subprocess.Popen[bytes], log: Path) -> None:
    def ready() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"worker exited with {proc.returncode}:\n{log.read_text()}")
        return "ready on" in log.read_text()

    await eventually(ready, 30, what=f"the worker of {log.stem} to be ready")


async def waiting(handle: loom.WorkflowHandle[object]) -> bool:
    record = await handle.describe()
    return (
        record.status is WorkflowStatus.RUNNING
        and record.current_step == "first"
        and (not record.leased)
    )


async def test_a_rolling_deploy_keeps_each_run_on_its_version(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    old_log, new_log = tmp_path / "v1.log", tmp_path / "v2.log"
    old = spawn(db_url, "version_v1", old_log, tmp_path)
    new: subprocess.Popen[bytes] | None = None
    try:
        await started(old, old_log)
        parked = await db.start_workflow(DeployV1, workflow_input={"wait": True}, version="1")
        await eventually(lambda: waiting(parked), 30, what="the version 1 run to wait")
        early = await db.start_workflow(DeployV2, workflow_input={}, version="2")
        # Only the old process runs: version 2 is left for a worker that has it.
        done_v1 = await db.start_workflow(DeployV1, workflow_input={}, version="1")
        assert (await done_v1.result(timeout=30))["version"] == "1"
        record = await early.describe()
        assert (record.status, record.last_seq, record.leased) == (
            WorkflowStatus.RUNNING,
            1,
            False,
        )

        new = spawn(db_url, "version_v2", new_log, tmp_path)
        await started(new, new_log)
        assert await early.result(timeout=30) == {"first_pid": new.pid, "version": "2"}
        old.kill()  # the old process goes away mid-deploy
        old.wait()
        await parked.signal("go")
        result = await parked.result(timeout=60)
    finally:
        for proc in (old, new):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    # Started on the old process, resumed on the new one, still on version 1's code.
    assert result == {"first_pid": old.pid, "second_pid": new.pid, "version": "1"}
    assert (await parked.describe()).version == "1"
