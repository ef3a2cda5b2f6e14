"""Fencing: a worker whose lease ran out while it was paused cannot record a stale decision.

A worker process (tests/fencing_workload.py) with a one-second lease claims a workflow and starts
its slow activity; the test freezes it with SIGSTOP, as a long GC pause or a network partition
would. Once the lease has run out a second worker takes the workflow over and finishes it. Then
the first worker is resumed: it completes its copy of the activity and tries to record it, and
that write must be rejected, leaving the history exactly as the second worker wrote it.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

import fencing_workload
import loom
from fencing_workload import FencingPipeline, expected_state
from loom import EventType, WorkflowStatus
from support import eventually

pytestmark = [pytest.mark.processes, pytest.mark.slow]

LEASE_SECONDS = 1.0
SLOW_MS = 400


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def log_lines(path: Path) -> set[tuple[str, ...]]:
    return {tuple(line.split()) for line in read_text(path).splitlines()}


def check_history(events: list[loom.Event]) -> None:
    """Contiguous seqs, every activity completed exactly once, and the workflow completed."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    scheduled = [e.seq for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
    completed = [e.payload["scheduled"] for e in events if e.type is EventType.ACTIVITY_COMPLETED]
    assert len(scheduled) == 3
    assert sorted(completed) == scheduled
    assert [e.type for e in events].count(EventType.WORKFLOW_COMPLETED) == 1
    assert events[-1].type is EventType.WORKFLOW_COMPLETED


def as_rows(events: list[loom.Event]) -> list[tuple[int, str, Any]]:
    return [(e.seq, e.type.value, e.payload) for e in events]


async def test_worker_paused_past_its_lease_cannot_record_its_stale_result(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    activity_log = tmp_path / "activities.log"
    stderr_path = tmp_path / "paused-worker.stderr"
    handle = await db.start_workflow(
        FencingPipeline,
        workflow_input={"n": 41, "log": str(activity_log), "slow_ms": SLOW_MS},
        workflow_id="fencing-paused",
    )
    wid = handle.workflow_id

    paused = await fencing_workload.spawn(
        db_url, stderr_path, "--lease-seconds", str(LEASE_SECONDS)
    )
    pid = str(paused.pid)
    try:
        await eventually(
            lambda: ("start", wid, "transform", pid) in log_lines(activity_log),
            10,
            what="the first worker to start the slow activity",
            interval=0.01,
        )
        paused.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        assert ("end", wid, "transform", pid) not in log_lines(activity_log)

        async with loom.Worker(db, poll_interval=0.05, lease_seconds=10) as takeover:
            final_state = await handle.result(timeout=20)
        # The workflow could only move on once the paused worker's lease had run out.
        assert time.monotonic() - stopped_at >= LEASE_SECONDS
        assert takeover.stats.completed == 1
        assert final_state == expected_state(41)
        ours = str(os.getpid())
        assert ("end", wid, "transform", ours) in log_lines(activity_log)
        finished_history = as_rows(await handle.events())

        paused.send_signal(signal.SIGCONT)
        # Once resumed, the worker learns it lost the lease in one of two ways, whichever comes
        # first: its activity ends and the write of its result is rejected (fencing), or its
        # lease renewal finds the lease taken and it stops without writing.
        fenced = f"workflow {wid}: lease lost; its writes were rejected"
        dropped = f"workflow {wid}: lease lost to another worker; stopped it without writing"
        await eventually(
            lambda: (
                (
                    ("end", wid, "transform", pid) in log_lines(activity_log)
                    and fenced in read_text(stderr_path)
                )
                or dropped in read_text(stderr_path)
            ),
            10,
            what="the resumed worker to find its lease lost and record nothing",
            interval=0.01,
        )

        stats = await fencing_workload.stop(paused)
        assert stats["lease_lost"] >= 1
        assert stats["completed"] == 0
    finally:
        if paused.returncode is None:
            paused.send_signal(signal.SIGCONT)
            paused.kill()
            await paused.wait()

    # Nothing the resumed worker did reached the history or the workflow's row.
    events = await handle.events()
    assert as_rows(events) == finished_history
    check_history(events)
    assert await handle.status() is WorkflowStatus.COMPLETED
    assert await handle.state() == expected_state(41)
