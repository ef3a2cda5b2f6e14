"""Scale-out proof: 4 worker processes (standing in for 4 machines) against one PostgreSQL run
1,000 workflows of 3 activities to completion with zero duplicate recorded results.

Four ``loom worker`` processes (the installed console script) share one fresh PostgreSQL
database; this process starts the workflows and waits for them. Every activity execution is
also written to a per-process file outside Loom (tests/scaleout_workload.py), which shows that
every process did part of the work and that no activity ran twice.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import loom
import scaleout_workload
from loom import EventType, WorkflowStatus
from support import eventually, pg

pytestmark = [pytest.mark.processes, pytest.mark.slow, pytest.mark.postgres]

WORKFLOWS = 1000
PROCESSES = 4
WORKERS_PER_PROCESS = 16
DEADLINE_S = 60.0

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"  # the installed console script


class WorkerProcess:
    """One ``loom worker`` process; its log (stderr) goes to a file the test reads."""

    def __init__(self, url: str, cwd: Path, log: Path) -> None:
        env = {
            k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")
        }
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [
                str(LOOM),
                "worker",
                "-d",
                url,
                "-m",
                "scaleout_workload",
                "--workers",
                str(WORKERS_PER_PROCESS),
                "--poll-interval",
                "0.1",
                "--lease-seconds",
                "10",
            ],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self._out,
        )

    def output(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def processes() -> Iterator[list[WorkerProcess]]:
    """Worker processes started by the test; any still alive at the end are killed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.close()


async def test_four_worker_processes_run_1000_workflows_with_no_duplicate_results(
    tmp_path: Path, processes: list[WorkerProcess]
) -> None:
    pg.require_pg()
    trace = tmp_path / "trace"
    trace.mkdir()
    async with pg.fresh_database() as url, loom.Database(url) as db:
        await db.migrate_up()
        for n in range(PROCESSES):
            processes.append(WorkerProcess(url, tmp_path, tmp_path / f"worker{n}.log"))

        async def all_ready() -> bool:
            for worker in processes:
                if worker.proc.poll() is not None:
                    pytest.fail(f"worker exited with {worker.proc.returncode}:\n{worker.output()}")
            return all("ready on" in w.output() for w in processes)

        await eventually(all_ready, 20, what="the 4 workers to report ready", interval=0.1)

        ids = [f"so-{i:04d}" for i in range(WORKFLOWS)]
        await asyncio.gather(
            *(
                db.start_workflow(
                    scaleout_workload.Three,
                    workflow_input={"trace": str(trace), "id": wid},
                    workflow_id=wid,
                )
                for wid in ids
            )
        )

        async def all_finished() -> bool:
            stats = await db.stats()
            return stats.by_status.get("RUNNING", 0) == 0

        await eventually(
            all_finished, DEADLINE_S, what=f"{WORKFLOWS} workflows to finish", interval=0.1
        )

        for worker in processes:
            worker.proc.send_signal(signal.SIGTERM)
        for worker in processes:
            assert worker.proc.wait(timeout=15) == 0, worker.output()
            assert "stopped: completed" in worker.output(), worker.output()

        summaries = await db.list_workflows(limit=WORKFLOWS * 2)
        assert sorted(s.workflow_id for s in summaries) == ids
        assert {s.status for s in summaries} == {WorkflowStatus.COMPLETED}
        histories = await asyncio.gather(*(db.get_workflow(wid).events() for wid in ids))
        finals = await asyncio.gather(*(db.get_workflow(wid).state() for wid in ids))

    for wid, events, final in zip(ids, histories, finals, strict=True):
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), wid
        scheduled = [e.seq for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
        completed = [
            e.payload["scheduled"] for e in events if e.type is EventType.ACTIVITY_COMPLETED
        ]
        assert len(scheduled) == 3, wid
        assert sorted(completed) == scheduled, f"{wid}: not exactly one result per activity"
        assert not [e for e in events if e.type is EventType.ACTIVITY_FAILED], wid
        assert events[-1].type is EventType.WORKFLOW_COMPLETED, wid
        assert final == {"a": 10, "b": 20, "c": 30}, wid

    # The executions the worker processes recorded, outside Loom.
    executions: collections.Counter[tuple[str, int]] = collections.Counter()
    by_pid: collections.Counter[int] = collections.Counter()
    for path in trace.glob("*.log"):
        for line in path.read_text().splitlines():
            wid, call = line.split()
            executions[(wid, int(call))] += 1
            by_pid[int(path.stem)] += 1
    assert set(executions) == {(wid, call) for wid in ids for call in (1, 2, 3)}
    assert [k for k, n in executions.items() if n != 1] == [], "activities executed twice"
    assert set(by_pid) == {w.proc.pid for w in processes}, f"work per process: {dict(by_pid)}"
