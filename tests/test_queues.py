"""Task queues, limits and priority: what a user sees, on both backends.

Workers serve the queues they name (or every queue), take the smallest priority first, and stay
within each queue's limits, which live in the database and hold across workers and processes.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import loom
import queue_workload
from loom.queues import Rate
from loom.store.queue_rules import due_statement
from loom.store.sql import SqlStore
from queue_workload import Fetch, Report, Send, most_at_once
from support import eventually
from support.workers import spawn_loom_worker, worker

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"


async def finished(db: loom.Database, ids: list[str], timeout: float = 30) -> list[Any]:
    async def done() -> bool:
        for wid in ids:
            if (await db.get_workflow(wid).describe()).status is not loom.WorkflowStatus.COMPLETED:
                return False
        return True

    await eventually(done, timeout, what=f"{len(ids)} workflows to complete")
    return [(await db.get_workflow(wid).describe()).state["held"] for wid in ids]


# -- declaring ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"concurrency": 0}, loom.ConfigurationError, "concurrency must be a whole number >= 1"),
        ({"concurrency": True}, loom.ConfigurationError, "concurrency"),
        ({"rate": "fast"}, loom.ConfigurationError, "rate 'fast' is not a rate"),
        ({"rate": "0/m"}, loom.ConfigurationError, "at least 1 start"),
        # Both databases store the limits as 32-bit integers.
        ({"concurrency": 2**31}, loom.ConfigurationError, "<= 2147483647"),
        ({"concurrency": 2**63}, loom.ConfigurationError, "<= 2147483647"),
        ({"rate": "2147483648/s"}, loom.ConfigurationError, "count must be a whole number"),
        ({"rate": "99999999999999999999/m"}, loom.ConfigurationError, "from 1 to 2147483647"),
        ({"rate": Rate(1.5, 1.0)}, loom.ConfigurationError, "count must be a whole"),
        ({"rate": Rate("5", 1.0)}, loom.ConfigurationError, "count must be a whole"),  # type: ignore[arg-type]
        # A window that never ends, or ends before the next claim: no rate either way.
        ({"rate": "1/0s"}, loom.ConfigurationError, "period must be from 0.001 seconds"),
        ({"rate": "1/" + "9" * 400 + "d"}, loom.ConfigurationError, "rate 1/infs: the period"),
        ({"rate": "1/0.0000001s"}, loom.ConfigurationError, "to 3650 days"),
        ({"rate": "1/9999d"}, loom.ConfigurationError, "to 3650 days"),
        ({"rate": Rate(1, math.inf)}, loom.ConfigurationError, "period"),
        ({"rate": Rate(1, math.nan)}, loom.ConfigurationError, "period"),
        ({"rate": Rate(1, True)}, loom.ConfigurationError, "period"),
        ({"name": ""}, loom.LoomError, "queue name"),
        ({"name": "a\nb"}, loom.LoomError, "queue name"),
        ({"name": ".."}, loom.LoomError, "queue name '..' cannot be addressed in a URL"),
    ],
)
def test_bad_limits_are_refused_with_what_is_wrong(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    name = options.pop("name", "q")
    with pytest.raises(error, match=message):
        loom.queue(name, registry=loom.Registry(), **options)


async def test_limits_out_of_range_store_nothing_on_either_database(db: loom.Database) -> None:
    await db.set_queue("emails", concurrency=2**31 - 1, rate="2147483647/d")
    kept = await db.queue_limits()
    for options in ({"concurrency": 2**31}, {"concurrency": 2**70}, {"rate": "2147483648/s"}):
        with pytest.raises(loom.ConfigurationError, match="2147483647"):
            await db.set_queue("emails", **options)  # type: ignore[arg-type]
    assert await db.queue_limits() == kept
    assert kept[0].rate == Rate(2**31 - 1, 86400.0)


def test_rates_read_as_starts_per_period() -> None:
    assert str(loom.queue("q", rate="100/m", registry=loom.Registry()).rate) == "100/m"
    limits = loom.queue("q", concurrency=3, rate="10/30s", registry=loom.Registry())
    assert limits.rate is not None and (limits.rate.count, limits.rate.period) == (10, 30.0)
    assert limits.concurrency == 3


def test_a_bad_queue_name_on_a_workflow_or_activity_fails_at_import() -> None:
    with pytest.raises(loom.DefinitionError, match="queue name"):

        @loom.workflow(name="queue_Bad", queue="", registry=loom.Registry())
        class Bad(loom.Workflow[Any, Any]):
            @loom.step
            async def s(self, ctx: Any) -> None: ...

    with pytest.raises(loom.DefinitionError, match="queue name"):

        @loom.activity(queue="tab\there", registry=loom.Registry())
        async def act() -> None: ...


async def test_a_start_names_its_queue_and_priority_or_is_refused(db: loom.Database) -> None:
    default = await db.start_workflow(Send, workflow_id="own", workflow_input={})
    other = await db.start_workflow(
        Send, workflow_id="moved", workflow_input={}, queue="bulk", priority=-3
    )
    assert (await default.describe()).queue == "emails"
    moved = await other.describe()
    assert (moved.queue, moved.priority) == ("bulk", -3)
    assert (await db.start_workflow(Report, workflow_id="r")).workflow_id == "r"
    assert (await db.get_workflow("r").describe()).queue == "default"
    with pytest.raises(loom.ConfigurationError, match="priority must be a whole number"):
        await db.start_workflow(Send, workflow_id="bad", priority="high")  # type: ignore[arg-type]
    with pytest.raises(loom.ConfigurationError, match="priority"):
        await db.start_workflow(Send, workflow_id="bad", priority=2**40)
    with pytest.raises(loom.LoomError, match="queue name"):
        await db.start_workflow(Send, workflow_id="bad", queue="")
    with pytest.raises(loom.WorkflowNotFoundError):
        await db.get_workflow("bad").describe()


# -- serving --------------------------------------------------------------------------------


async def test_a_worker_serves_only_its_queues(db: loom.Database) -> None:
    await db.start_workflow(Send, workflow_id="e", workflow_input={})
    await db.start_workflow(Report, workflow_id="r", workflow_input={})
    async with worker(db, queues=["emails"]):
        await finished(db, ["e"])
        await asyncio.sleep(0.3)  # a poll or more: the report is not this worker's
        assert (await db.get_workflow("r").describe()).status is loom.WorkflowStatus.RUNNING
    async with worker(db):  # every queue
        await finished(db, ["r"])
    with pytest.raises(loom.LoomError, match="at least one queue"):
        loom.Worker(db, queues=[])


async def test_ready_work_runs_smallest_priority_first(db: loom.Database) -> None:
    ids = []
    for i, priority in enumerate([5, 0, -10, 0, 3]):
        wid = f"p{i}"
        await db.start_workflow(Report, workflow_id=wid, workflow_input={}, priority=priority)
        ids.append(wid)
    async with worker(db, concurrency=1):
        held = await finished(db, ids)
    order = [wid for _, wid in sorted(zip((h["start"] for h in held), ids, strict=True))]
    assert order == ["p2", "p1", "p3", "p4", "p0"]  # -10, the two 0s oldest first, 3, 5


async def test_a_concurrency_limit_holds_across_workers(db: loom.Database) -> None:
    await db.set_queue("emails", concurrency=2)
    ids = [f"c{i}" for i in range(8)]
    for wid in ids:
        await db.start_workflow(Send, workflow_id=wid, workflow_input={"seconds": 0.2})
    async with worker(db, concurrency=4), worker(db, concurrency=4, queues=["emails"]):

        async def seen_full() -> bool:
            [q] = [q for q in await db.queues() if q.name == "emails"]
            return q.running == 2 and q.depth > 0

        await eventually(seen_full, 20, what="the queue to be seen at its limit")
        held = await finished(db, ids)
    assert most_at_once([(h["start"], h["end"]) for h in held]) <= 2


async def test_limits_declared_in_code_are_written_when_a_worker_starts(
    db: loom.Database,
) -> None:
    registry = loom.Registry()
    for definition in loom.default_registry.workflows():
        registry.add_workflow(definition)
    for act in loom.default_registry.activities():
        registry.add_activity(act)
    loom.queue("emails", concurrency=1, rate="1000/m", registry=registry)
    for wid in ("d1", "d2", "d3"):
        await db.start_workflow(Send, workflow_id=wid, workflow_input={"seconds": 0.1})
    async with worker(db, registry=registry, concurrency=4):
        held = await finished(db, ["d1", "d2", "d3"])
    assert most_at_once([(h["start"], h["end"]) for h in held]) == 1
    assert [(q.name, q.concurrency, str(q.rate)) for q in await db.queue_limits()] == [
        ("emails", 1, "1000/m")
    ]


async def test_a_rate_limit_spaces_out_starts(db: loom.Database) -> None:
    await db.set_queue("emails", rate="2/s")
    ids = [f"r{i}" for i in range(5)]
    for wid in ids:
        await db.start_workflow(Send, workflow_id=wid, workflow_input={"seconds": 0})
    began = time.time()
    async with worker(db, concurrency=8):
        held = await finished(db, ids)
    starts = sorted(h["start"] for h in held)
    # 2 in the first window, 2 in the next, 1 in the third: at least two windows later.
    assert starts[-1] - began >= 2.0 - 0.1
    [q] = [q for q in await db.queues() if q.name == "emails"]
    assert str(q.rate) == "2/s"


async def test_an_activity_counts_against_its_own_queue(db: loom.Database) -> None:
    """Workflows of the default queue call an activity of queue "api", limited to 1 at once:
    the activities take turns though the workflows run side by side."""
    await db.set_queue("api", concurrency=1, rate="1000/m")
    ids = [f"f{i}" for i in range(4)]
    for wid in ids:
        await db.start_workflow(Fetch, workflow_id=wid, workflow_input={"seconds": 0.2})
    async with worker(db, concurrency=4), worker(db, concurrency=4):

        async def seen_busy() -> bool:
            found = {q.name: q for q in await db.queues()}
            return "api" in found and found["api"].running == 1

        await eventually(seen_busy, 20, what="an activity to hold queue api's slot")
        held = await finished(db, ids)
    assert most_at_once([(h["start"], h["end"]) for h in held]) == 1
    [api] = [q for q in await db.queues() if q.name == "api"]
    assert api.running == 0 and api.started_in_window == 4


async def test_a_stopping_worker_does_not_wait_for_a_queue_to_let_an_activity_start(
    db: loom.Database,
) -> None:
    """Stopping waits for the activities that began, never for a queue's rate window (here a
    day) or slot: an activity still waiting for its queue is withdrawn, its workflow parked
    ready at once, and it runs later, once."""
    await db.set_queue("api", rate="1/d")
    first = await db.start_workflow(Fetch, workflow_id="first", workflow_input={"seconds": 0})
    w = worker(db, concurrency=2, poll_interval=0.05)
    async with w:
        assert (await first.result(timeout=10))["held"]  # the day's one start
        second = await db.start_workflow(Fetch, workflow_id="second", workflow_input={"seconds": 0})

        async def scheduled() -> bool:  # written before it waits: it waits for the queue now
            return any(e.type is loom.EventType.ACTIVITY_SCHEDULED for e in await second.events())

        await eventually(scheduled, 10, what="the second activity to wait for its queue")
        stopping = asyncio.get_running_loop().create_task(w.stop_and_wait())
        done, _ = await asyncio.wait({stopping}, timeout=5)
        if not done:
            await db.set_queue("api")  # let it end, then fail
            await stopping
            pytest.fail("the stop waited for the queue's rate window")
    record = await db.store.get_workflow("second")
    assert record is not None and record.status is loom.WorkflowStatus.RUNNING
    assert not record.leased and "held" not in record.state
    assert record.ready_at is not None and record.ready_at <= time.time()
    await db.set_queue("api")  # no limit: it runs now
    async with worker(db):
        assert (await second.result(timeout=10))["held"]
    [api] = [q for q in await db.queues() if q.name == "api"]
    assert api.running == 0


# -- the claim reads an index ---------------------------------------------------------------


async def test_a_claim_reads_the_queue_index_in_priority_order(db: loom.Database) -> None:
    store = db.store.inner  # the backend behind the codec layer
    assert isinstance(store, SqlStore)
    for i in range(300):
        await db.start_workflow(
            Report if i % 3 else Send, workflow_id=f"w{i}", workflow_input={}, priority=i % 5
        )
    if store.dialect == "postgres":  # PostgreSQL reads a small table whole: give it a backlog
        await store._rows(
            "WITH t AS (INSERT INTO workflows (id, name, version, status, input, state, "
            "created_at, updated_at, last_seq, ready_at, queue, priority) SELECT 'x' || g, "
            "'queue_Report', '1.0.0', 'RUNNING', 'null', '{}', 0, 0, 1, g, "
            "'q' || (g % 50), g % 7 FROM generate_series(1, 50000) AS g RETURNING 1) "
            "SELECT COUNT(*) FROM t"
        )
        await store._rows("ANALYZE workflows")
    names = ["queue_Report\x1f1.0.0", "queue_Send\x1f1.0.0"]
    for queues, index in (
        (["emails"], "workflows_queue_ready"),
        (None, "workflows_priority_ready"),
    ):
        _, sql, args = due_statement(store.sql, names, 10, time.time(), queues)
        if store.dialect == "sqlite":
            plan = " ".join(
                str(tuple(r)) for r in await store._rows(f"EXPLAIN QUERY PLAN {sql}", *args)
            )
            assert index in plan, plan
            assert "TEMP B-TREE" not in plan, plan  # ordered by the index, not sorted
        else:
            plan = " ".join(r[0] for r in await store._rows(f"EXPLAIN {sql}", *args))
            assert index in plan, plan
            assert "Seq Scan on workflows" not in plan, plan


# -- the CLI and the API --------------------------------------------------------------------


def cli(db_url: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["LOOM_DATABASE_URL"] = db_url
    return subprocess.run(
        [str(LOOM), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


@pytest.mark.processes
@pytest.mark.slow
async def test_the_cli_sets_and_shows_queues(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    def ok(*args: str) -> str:
        done = cli(db_url, *args, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "concurrency 5, rate 100/m" in ok(
        "queue", "set", "emails", "--concurrency", "5", "--rate", "100/m"
    )
    ok("queue", "set", "emails", "--rate", "none")  # the concurrency is kept
    assert await db.queue_limits() == [loom.QueueLimits("emails", 5, None)]
    ok("start", "queue_Send", "-m", "queue_workload", "--id", "s1", "--queue", "bulk",
       "--priority", "-2", "-i", "{}")  # fmt: skip
    [bulk] = [q for q in json.loads(ok("queue", "list", "--json")) if q["name"] == "bulk"]
    assert (bulk["depth"], bulk["running"], bulk["concurrency"]) == (1, 0, None)
    assert bulk["oldest_waiting_age"] >= 0
    stats = json.loads(ok("stats", "--json"))
    assert {q["name"] for q in stats["queues"]} == {"bulk", "emails"}
    table = ok("queue", "list")
    assert "emails" in table and "bulk" in table and "OLDEST WAITING" in table
    assert "Queues" in ok("stats")
    bad = cli(db_url, "queue", "set", "emails", "--rate", "lots", cwd=tmp_path)
    assert bad.returncode != 0 and "rate 'lots' is not a rate" in bad.stderr
    bad = cli(db_url, "queue", "set", "emails", "--concurrency", "0", cwd=tmp_path)
    assert bad.returncode != 0 and "concurrency must be a whole number" in bad.stderr


async def test_the_api_lists_and_sets_queues(db: loom.Database) -> None:
    import httpx

    from loom.web.app import create_app

    await db.start_workflow(Send, workflow_id="a1", workflow_input={})
    app = create_app(database=db, poll_interval=0.05)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as http:
        put = await http.put("/api/queues/emails", json={"concurrency": 3, "rate": "10/s"})
        assert put.status_code == 200, put.text
        assert put.json()["concurrency"] == 3 and put.json()["rate"] == "10/s"
        [emails] = (await http.get("/api/queues")).json()["queues"]
        assert (emails["name"], emails["depth"], emails["running"]) == ("emails", 1, 0)
        assert emails["oldest_waiting_age_seconds"] >= 0
        bad = await http.put("/api/queues/emails", json={"rate": "soon"})
        assert bad.status_code == 422 and "not a rate" in bad.json()["error"]
        for body, fragment in (
            ({"concurrency": 2**31}, "<= 2147483647"),
            ({"concurrency": 2**70}, "<= 2147483647"),
            ({"concurrency": 0}, "concurrency must be a whole number >= 1"),
            ({"concurrency": True}, "valid integer"),
            ({"rate": "2147483648/s"}, "count must be a whole number"),
            ({"rate": "1/" + "9" * 45 + "d"}, "period must be from"),
        ):
            bad = await http.put("/api/queues/emails", json=body)
            assert bad.status_code == 422 and fragment in bad.json()["error"], bad.text
        assert await db.queue_limits() == [loom.QueueLimits("emails", 3, Rate(10, 1.0))]
        started = await http.post(
            "/api/workflows",
            json={"name": "queue_Send", "id": "a2", "queue": "bulk", "priority": 4},
        )
        assert started.status_code == 201, started.text
        assert (started.json()["queue"], started.json()["priority"]) == ("bulk", 4)
        page = await http.get("/queues")
        assert page.status_code == 200 and 'id="view-queues"' in page.text


# -- several worker processes ---------------------------------------------------------------


def spawn_worker(db_url: str, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """A `loom worker` process serving queues "emails" and "default"; its log goes to ``log``."""
    options = ["-m", "queue_workload", "--workers", "4", "--queue", "emails"]
    return spawn_loom_worker(
        db_url, log, cwd, *options, "--queue", "default", "--poll-interval", "0.05"
    )


@pytest.mark.processes
@pytest.mark.slow
async def test_a_concurrency_limit_holds_across_worker_processes(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    """Two `loom worker` processes serve queue "emails", limited to 2 at once: never more than
    2 of its workflows run at the same instant, whichever process runs them."""
    set_limit = cli(db_url, "queue", "set", "emails", "--concurrency", "2", cwd=tmp_path)
    assert set_limit.returncode == 0, set_limit.stderr
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    procs = [spawn_worker(db_url, log, tmp_path) for log in logs]
    try:

        async def ready() -> bool:
            for p, log in zip(procs, logs, strict=True):
                if p.poll() is not None:
                    pytest.fail(f"worker exited with {p.returncode}:\n{log.read_text()}")
            return all("ready on" in log.read_text() for log in logs)

        await eventually(ready, 30, what="both workers to be ready")
        assert "queues: default, emails" in logs[0].read_text()
        ids = [f"m{i}" for i in range(12)]
        for wid in ids:
            await db.start_workflow(Send, workflow_id=wid, workflow_input={"seconds": 0.3})
        held = await finished(db, ids, timeout=60)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert most_at_once([(h["start"], h["end"]) for h in held]) <= 2
    assert {h["pid"] for h in held} <= {p.pid for p in procs}


@pytest.mark.processes
@pytest.mark.slow
async def test_the_store_never_counts_more_in_progress_than_the_limit_nor_starts_above_the_rate(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    """Two `loom worker` processes on queue "emails", at most 2 at once and 4 starts a second:
    what the database counts in progress, sampled all along, never passes 2; no second holds
    more starts than two windows allow, and 16 starts take at least three windows."""
    await db.set_queue("emails", concurrency=2, rate="4/s")
    logs = [tmp_path / f"worker{n}.log" for n in range(2)]
    procs = [spawn_worker(db_url, log, tmp_path) for log in logs]
    try:

        async def ready() -> bool:
            for p, log in zip(procs, logs, strict=True):
                if p.poll() is not None:
                    pytest.fail(f"worker exited with {p.returncode}:\n{log.read_text()}")
            return all("ready on" in log.read_text() for log in logs)

        await eventually(ready, 30, what="both workers to be ready")
        ids = [f"m{i}" for i in range(16)]
        for wid in ids:
            await db.start_workflow(Send, workflow_id=wid, workflow_input={"seconds": 0.2})
        counted: list[int] = []

        async def sample() -> None:
            while True:
                [emails] = [q for q in await db.queues() if q.name == "emails"]
                counted.append(emails.running)
                await asyncio.sleep(0.01)

        sampler = asyncio.ensure_future(sample())
        try:
            held = await finished(db, ids, timeout=60)
        finally:
            sampler.cancel()
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert len(counted) > 20 and max(counted) <= 2
    assert most_at_once([(h["start"], h["end"]) for h in held]) <= 2
    starts = sorted(h["start"] for h in held)
    assert max(sum(1 for t in starts if s <= t < s + 1.0) for s in starts) <= 8
    assert starts[-1] - starts[0] >= 3.0 - 0.1
    assert {h["pid"] for h in held} <= {p.pid for p in procs}


def test_the_workload_counts_overlaps() -> None:
    assert most_at_once([(0, 1), (1, 2), (0.5, 1.5)]) == 2
    assert most_at_once([]) == 0
    assert queue_workload.Send.__name__ == "Send"


async def test_loom_migrate_copies_queues_priorities_and_limits(
    db: loom.Database, tmp_path: Path
) -> None:
    from loom.transfer import copy_database

    await db.set_queue("emails", concurrency=4, rate="5/s")
    await db.start_workflow(Send, workflow_id="t1", workflow_input={}, priority=7)
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    report = await copy_database(db.url, target)
    assert report.workflows == 1
    async with loom.Database(target) as copy:
        moved = await copy.get_workflow("t1").describe()
        assert (moved.queue, moved.priority) == ("emails", 7)
        assert await copy.queue_limits() == await db.queue_limits()
