"""Where an activity ran: each recorded attempt names its worker (history, ``loom inspect``, the
API), and a routed attempt in flight shows as waiting for a worker of its queue, then running
on the worker holding its task. On both backends, with in-process workers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import httpx

import loom
from loom.activity_view import activity_rows
from loom.core.history import Event, EventType
from loom.payload_codecs import AesGcmCodec, CodecChain
from loom.store.base import TaskInFlight
from loom.testing import Replayer
from loom.web import create_app
from routing_workload import Hold, Render, seen
from support import eventually
from support.workers import SRC_DIR, TESTS_DIR, of_type, worker


async def cli(db_url: str, *args: str) -> str:
    """``loom ARGS`` against ``db_url``, run from this tree's sources."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LOOM_DATABASE_URL": db_url,
        "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(TESTS_DIR)]),
        "COLUMNS": "200",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "loom.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def api(db: loom.Database) -> httpx.AsyncClient:
    app = create_app(database=db, poll_interval=0.05)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


async def test_each_recorded_attempt_names_the_worker_that_ran_it(
    db: loom.Database, db_url: str
) -> None:
    key = AesGcmCodec.generate_key()
    async with loom.Database(db.url, codec=CodecChain(AesGcmCodec({"k1": key}))) as coded:
        handle = await coded.start_workflow(
            Render, workflow_id="w1", workflow_input={"frame": 1, "fail_times": 1}
        )
        async with (
            worker(coded, queues=["default"], worker_id="cpu-1"),
            worker(coded, queues=["gpu"], worker_id="gpu-1"),
        ):
            await handle.result(timeout=20)
        events = await handle.events()
    ran = [
        (e.payload["name"], e.payload["attempt"], e.type, e.payload.get("worker"))
        for e in events
        if e.type in (EventType.ACTIVITY_COMPLETED, EventType.ACTIVITY_FAILED)
    ]
    assert ran == [
        ("routing_prepare", 1, EventType.ACTIVITY_COMPLETED, "cpu-1"),  # where it was driven
        ("routing_render", 1, EventType.ACTIVITY_FAILED, "gpu-1"),  # routed
        ("routing_render", 2, EventType.ACTIVITY_COMPLETED, "gpu-1"),
    ]
    # The history still replays against the code (the field is not part of any decision).
    document = await coded_export(db.url, key, "w1")
    Replayer([Render]).replay(document)

    prepare, render = await db.get_workflow("w1").activities()
    assert (prepare.activity, prepare.status, prepare.worker) == (
        "routing_prepare",
        "completed",
        "cpu-1",
    )
    assert (render.status, render.attempt, render.where) == ("completed", 2, "ran on gpu-1")
    assert [(a.attempt, a.outcome, a.worker) for a in render.attempts] == [
        (1, "failed", "gpu-1"),
        (2, "completed", "gpu-1"),
    ]
    async with (
        loom.Database(db.url, codec=CodecChain(AesGcmCodec({"k1": key}))) as coded,
        api(coded) as client,
    ):
        answer = (await client.get("/api/workflows/w1/activities")).json()
        page = (await client.get("/api/workflows/w1/events")).json()
    assert [a["where"] for a in answer["activities"]] == ["ran on cpu-1", "ran on gpu-1"]
    assert [t["worker"] for t in answer["activities"][1]["attempts"]] == ["gpu-1", "gpu-1"]
    assert [
        e["payload"]["worker"] for e in page["events"] if e["type"] == "ACTIVITY_COMPLETED"
    ] == ["cpu-1", "gpu-1"]
    shown = json.loads(await cli(db_url, "inspect", "w1", "--json"))
    assert [(a["activity"], a["worker"]) for a in shown["activities"]] == [
        ("routing_prepare", "cpu-1"),
        ("routing_render", "gpu-1"),
    ]
    table = await cli(db_url, "inspect", "w1")
    assert "Activities (2)" in table and "ran on gpu-1" in table and "ran on cpu-1" in table


async def coded_export(url: str, key: bytes, wid: str) -> dict[str, Any]:
    async with loom.Database(url, codec=CodecChain(AesGcmCodec({"k1": key}))) as coded:
        return await coded.get_workflow(wid).export_history()


async def test_a_routed_attempt_in_flight_shows_where_it_stands(
    db: loom.Database, db_url: str
) -> None:
    seen.pop("w2", None)  # of the run on the other backend
    handle = await db.start_workflow(Hold, workflow_id="w2", workflow_input={"seconds": 30})
    async with worker(db, queues=["default"], worker_id="cpu-2"):

        async def waiting() -> bool:
            rows = await handle.activities()
            return bool(rows) and rows[0].status == "waiting"

        await eventually(waiting, 20, what="the routed attempt to wait for a worker")
        [row] = await handle.activities()
        assert (row.queue, row.worker, row.where) == (
            "gpu",
            None,
            "waiting for a worker of queue 'gpu'",
        )
        shown_text = await cli(db_url, "inspect", "w2")
        assert "waiting for a worker of queue 'gpu'" in shown_text
        # Parked with nothing due, it waits for its routed activity, not for a signal.
        assert "waiting for activity routing_hold" in shown_text
        assert "waiting for a signal" not in shown_text
        async with worker(db, queues=["gpu"], worker_id="gpu-2"):
            await eventually(lambda: "started" in seen.get("w2", []), 20, what="the attempt")
            [row] = await handle.activities()
            assert (row.status, row.worker, row.where) == ("running", "gpu-2", "running on gpu-2")
            shown = json.loads(await cli(db_url, "inspect", "w2", "--json"))
            assert shown["activities"][0]["where"] == "running on gpu-2"
            assert shown["steps"][0]["in_flight"] == ["routing_hold running on gpu-2"]
            assert "running on gpu-2" in await cli(db_url, "inspect", "w2")
            async with api(db) as client:
                answer = (await client.get("/api/workflows/w2/activities")).json()
            assert answer["activities"][0]["status"] == "running"
            assert answer["activities"][0]["worker"] == "gpu-2"
            await handle.cancel("seen enough")
            await eventually(lambda: "canceled" in seen["w2"], 10, what="the attempt to stop")
    [row] = await handle.activities()
    assert (row.status, row.where) == ("abandoned", "-")  # awaited when the workflow ended
    assert of_type(await handle.events(), EventType.ACTIVITY_COMPLETED) == []


def test_activity_rows_read_old_histories_and_every_task_state() -> None:
    """Pure: a history written before workers were recorded, a local retry awaited, and a
    routed task done, leased, or leased by a worker whose lease ran out."""

    def scheduled(seq: int, name: str) -> Event:
        return Event(seq, EventType.ACTIVITY_SCHEDULED, {"name": name, "step": "s"}, 1.0)

    def task(seq: int, state: str, worker: str | None, expires: float | None) -> TaskInFlight:
        return TaskInFlight("w", seq, 1, f"a{seq}", "gpu", state, worker, None, expires, 1.0)

    events = [
        scheduled(1, "old"),
        Event(2, EventType.ACTIVITY_COMPLETED, {"scheduled": 1, "attempt": 1, "result": 1}, 2.0),
        scheduled(3, "retried"),
        Event(
            4,
            EventType.ACTIVITY_FAILED,
            {"scheduled": 3, "attempt": 1, "error": {"type": "E"}, "retry_at": 9.0, "worker": "c"},
            3.0,
        ),
        scheduled(5, "a5"),
        scheduled(6, "a6"),
        scheduled(7, "a7"),
    ]
    tasks = [
        task(5, "done", "g1", None),
        task(6, "leased", "g2", 50.0),
        task(7, "leased", "g3", 5.0),
    ]
    rows = activity_rows(events, tasks, running=True, now=10.0)
    assert [(r.seq, r.status, r.attempt, r.worker, r.where) for r in rows] == [
        (1, "completed", 1, None, "-"),  # no worker in the history: not known
        (3, "pending", 2, "c", "runs where its workflow runs"),
        (5, "done", 1, "g1", "ran on g1"),
        (6, "running", 1, "g2", "running on g2"),
        (7, "waiting", 1, None, "waiting for a worker of queue 'gpu'"),  # its holder died
    ]
    assert rows[1].attempts[0].error_type == "E"
    ended = activity_rows(events, tasks, running=False, now=10.0)
    assert [r.status for r in ended] == ["completed", "abandoned", "done", "abandoned", "abandoned"]


def test_inspect_says_what_a_parked_workflow_waits_for() -> None:
    from datetime import UTC, datetime

    from loom.activity_view import ActivityRow
    from loom.cli.inspect_command import _awaited

    now = datetime.now(UTC)

    def child(status: loom.WorkflowStatus) -> loom.WorkflowSummary:
        return loom.WorkflowSummary("c", "Child", "1", status, None, now, now, "p")

    routed = ActivityRow(5, "render", "run", 0.0, status="waiting", queue="gpu")
    local_done = ActivityRow(3, "prepare", "run", 0.0, status="completed", worker="cpu-1")
    assert _awaited([local_done, routed], []) == (
        "waiting for activity render (waiting for a worker of queue 'gpu')"
    )
    assert _awaited([local_done], [child(loom.WorkflowStatus.RUNNING)]) == (
        "waiting for 1 child workflow(s)"
    )
    assert _awaited([local_done], [child(loom.WorkflowStatus.COMPLETED)]) == (
        "waiting for a signal"
    )
