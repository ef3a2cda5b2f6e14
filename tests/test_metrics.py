"""Prometheus metrics: a known run, scraped from the dashboard's ``/metrics`` and from the
endpoint a worker serves, on both backends; the endpoint against odd requests; the missing
extra."""

from __future__ import annotations

import asyncio
import collections
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import loom
from loom.errors import DatabaseUnavailableError
from loom.web import create_app
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
tries: collections.Counter[str] = collections.Counter()
ODD_NAME = 'met_"Quoted" \\ naïve ✓'


class Refused(Exception):
    pass


@loom.activity(name="met_charge", retry_count=1, retry_delay=0.01)
async def charge(order: str) -> str:
    tries[order] += 1
    if tries[order] == 1:
        raise ConnectionError("try again")
    return "charged"


@loom.activity(name="met_refuse", non_retryable=(Refused,))
def refuse() -> None:
    raise Refused("no")


@loom.workflow(name="met_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("paid", await ctx.activity(charge, ctx.workflow_id))


@loom.workflow(name="met_Broken")
class Broken(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def fail(self, ctx: Ctx) -> None:
        await ctx.activity(refuse)


@loom.workflow(name=ODD_NAME)
class Waiter(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("go")


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of a scrape, by name and labels (parsed by prometheus-client itself)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


@pytest.fixture
async def dashboard(db: loom.Database) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(database=db, poll_interval=0.05))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


async def test_the_dashboard_and_a_worker_serve_the_figures_of_a_known_run(
    db: loom.Database, dashboard: httpx.AsyncClient
) -> None:
    for _ in range(2):
        await db.start_workflow(Order)
    broken = await db.start_workflow(Broken)
    posted = await dashboard.post("/api/workflows", json={"name": ODD_NAME})  # the API's start
    assert posted.status_code in (200, 201), posted.text
    waiter = db.get_workflow(posted.json()["workflow_id"])
    canceled = await db.start_workflow(Waiter)
    await canceled.cancel("changed my mind")  # no worker holds it: canceled at once, here

    async with worker(db), db.serve_metrics(port=0) as endpoint:

        async def settled() -> bool:
            counts = (await db.stats()).by_status
            waiting = of_type(await waiter.events(), loom.EventType.SIGNAL_WAIT_STARTED)
            return counts.get("COMPLETED") == 2 and counts.get("FAILED") == 1 and bool(waiting)

        await eventually(settled, 15, what="the orders done, the broken one failed")
        await eventually(lambda: _parked(waiter), 5, what="the waiter parked")
        async with httpx.AsyncClient(timeout=5) as http:
            scraped = await http.get(f"http://127.0.0.1:{endpoint.port}/metrics")
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    served = await dashboard.get("/metrics")
    assert served.status_code == 200
    assert (await broken.status()) is loom.WorkflowStatus.FAILED

    for text in (scraped.text, served.text):
        found = samples(text)
        assert value(found, "loom_workflows_started_total", workflow="met_Order") == 2
        assert value(found, "loom_workflows_started_total", workflow="met_Broken") == 1
        assert value(found, "loom_workflows_started_total", workflow=ODD_NAME) == 2
        assert value(found, "loom_workflows_completed_total", workflow="met_Order") == 2
        assert value(found, "loom_workflows_failed_total", workflow="met_Broken") == 1
        assert value(found, "loom_workflows_canceled_total", workflow=ODD_NAME) == 1
        assert value(found, "loom_workflows_completed_total", workflow=ODD_NAME) is None
        assert value(found, "loom_activity_attempts_total", activity="met_charge") == 4
        assert value(found, "loom_activity_failures_total", activity="met_charge") == 2
        assert value(found, "loom_activity_attempts_total", activity="met_refuse") == 1
        assert value(found, "loom_activity_failures_total", activity="met_refuse") == 1
        assert value(found, "loom_activity_duration_seconds_count", activity="met_charge") == 4
        # One observation per claim: each order at least once (when it was started; a worker
        # may wait out the short retry delay itself or park the order and claim it again).
        claims = value(
            found, "loom_task_latency_seconds_count", queue="default", workflow="met_Order"
        )
        assert claims is not None and claims >= 2
        waiting = {"queue": "default", "state": "waiting"}
        assert value(found, "loom_tasks", **waiting) == 1
        for state in ("ready", "leased", "sleeping"):
            assert value(found, "loom_tasks", queue="default", state=state) == 0
        assert value(found, "loom_database_up") == 1
        assert any(name.startswith("process_") for name, _ in found)


async def _parked(handle: loom.WorkflowHandle[Any]) -> bool:
    return not (await handle.describe()).leased


async def test_a_scrape_while_the_database_is_down_serves_the_counters_without_the_queue(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    db.enable_metrics()
    await db.start_workflow(Order)
    assert value(samples((await db.scrape_metrics()).decode()), "loom_database_up") == 1

    async def down() -> Any:
        raise DatabaseUnavailableError("connection refused")

    monkeypatch.setattr(db, "stats", down)
    found = samples((await db.scrape_metrics()).decode())
    assert value(found, "loom_database_up") == 0
    assert not [name for name, _ in found if name == "loom_tasks"]  # withdrawn, not stale
    assert value(found, "loom_workflows_started_total", workflow="met_Order") == 1


async def test_nothing_is_recorded_unless_metrics_are_enabled(db: loom.Database) -> None:
    handle = await db.start_workflow(Order)
    async with worker(db):
        await handle.result(timeout=15)
    assert db.metrics is None


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_the_worker_endpoint_answers_only_get_metrics_and_survives_nonsense(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loom.metrics, "REQUEST_TIMEOUT", 2.0)
    async with db.serve_metrics(port=0) as endpoint:
        port = endpoint.port
        assert (await _raw(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        answer = await _raw(port, b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 405") and b"Allow: GET, HEAD" in answer
        head = await _raw(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and head.endswith(b"\r\n\r\n")
        assert await _raw(port, b"\x00\xff nonsense\r\n\r\n") == b""
        assert await _raw(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 40_000) == b""
        # A request never finished is dropped after a while; others are answered meanwhile.
        slow = asyncio.ensure_future(_raw(port, b"GET /metrics HTTP/1.1\r\nHost: x"))
        good = await _raw(port, b"GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not slow.done()
        assert await slow == b""
        assert good.startswith(b"HTTP/1.1 200")
        assert b"loom_database_up 1.0" in good


async def test_the_same_port_twice_raises_os_error(db: loom.Database) -> None:
    async with db.serve_metrics(port=0) as first:
        with pytest.raises(OSError):
            await db.serve_metrics(port=first.port).start()


async def test_without_the_metrics_extra_enabling_them_says_which_to_install(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # as if not installed
    with pytest.raises(loom.MissingExtraError, match=r"pip install 'loom-core\[metrics\]'"):
        loom.Database(db.url, metrics=True)
    with pytest.raises(loom.MissingExtraError) as caught:
        db.serve_metrics(port=0)
    assert caught.value.extra == "metrics"
    assert isinstance(caught.value, ImportError)
    transport = httpx.ASGITransport(app=create_app(database=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        answer = await client.get("/metrics")
        assert answer.status_code == 501
        assert "pip install 'loom-core[metrics]'" in answer.json()["error"]
        assert (await client.get("/charts")).status_code == 200  # the rest works as ever
        assert (await client.get("/api/stats")).status_code == 200


def test_the_queue_gauges_take_one_series_per_queue() -> None:
    """Today every task is in the ``default`` queue; the gauges and the latency histogram are
    labelled by queue, so figures per queue need no new metric."""
    from loom.metrics import Metrics
    from loom.store.base import StoreStats

    metrics = Metrics()

    def stats(ready: int) -> StoreStats:
        return StoreStats({}, ready, 0, 0, 0, None, 0, 0, 0)

    busy, idle = stats(3), stats(0)
    metrics.queues({"default": busy, "emails": idle})
    metrics.claimed("met_Order", ready_since=100.0, now=100.5, queue="emails")
    found = samples(metrics.render().decode())
    assert value(found, "loom_tasks", queue="default", state="ready") == 3
    assert value(found, "loom_tasks", queue="emails", state="ready") == 0
    assert (
        value(found, "loom_task_latency_seconds_count", queue="emails", workflow="met_Order") == 1
    )
    metrics.queues({"default": idle})  # a queue no longer reported is dropped
    found = samples(metrics.render().decode())
    assert value(found, "loom_tasks", queue="emails", state="ready") is None
    assert value(found, "loom_tasks", queue="default", state="ready") == 0


async def test_a_cancel_a_claim_carries_out_for_a_dead_worker_is_counted(db: loom.Database) -> None:
    """Its cancel was requested while a worker held it, and that worker died: the next claim
    ends it as CANCELED instead of running it, and that claim's process counts it."""
    metrics = db.enable_metrics()
    handle = await db.start_workflow(Order)
    [held] = await db.store.claim("a-worker-that-dies", ["met_Order"], 1, 0.3, time.time())
    assert held.workflow_id == handle.workflow_id
    assert await handle.cancel("changed my mind") is loom.client.CancelOutcome.REQUESTED
    async with worker(db):
        with pytest.raises(loom.WorkflowCanceledError):
            await handle.result(timeout=15)
    found = samples(metrics.render().decode())
    assert value(found, "loom_workflows_canceled_total", workflow="met_Order") == 1
    assert value(found, "loom_activity_attempts_total", activity="met_charge") is None  # never ran


@loom.workflow(name="met_Mail", queue="met-emails")
class Mail(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def send(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("sent", True)


async def test_the_task_gauges_and_latency_are_per_queue(db: loom.Database) -> None:
    """Ready work of two queues, scraped before a worker runs; then the claims' latency is
    labelled by the queue each came from."""
    db.enable_metrics()
    mails = [await db.start_workflow(Mail, workflow_input={}) for _ in range(2)]
    urgent = await db.start_workflow(Mail, workflow_input={}, queue="met-urgent")
    found = samples((await db.scrape_metrics()).decode())
    assert value(found, "loom_tasks", queue="met-emails", state="ready") == 2
    assert value(found, "loom_tasks", queue="met-urgent", state="ready") == 1
    assert value(found, "loom_tasks", queue="default", state="ready") is None  # holds nothing
    async with worker(db):
        for handle in [*mails, urgent]:
            await handle.result(timeout=10)
    found = samples((await db.scrape_metrics()).decode())
    assert value(found, "loom_tasks", queue="met-emails", state="ready") == 0
    count = "loom_task_latency_seconds_count"
    assert value(found, count, queue="met-emails", workflow="met_Mail") == 2
    assert value(found, count, queue="met-urgent", workflow="met_Mail") == 1


async def test_routed_activity_tasks_have_their_own_gauge(db: loom.Database) -> None:
    """A task waiting for a worker of its queue, then running on one; loom_tasks still counts
    workflows only."""
    from routing_workload import Hold, seen

    db.enable_metrics()
    seen.pop("met-hold", None)
    handle = await db.start_workflow(Hold, workflow_id="met-hold", workflow_input={"seconds": 30})

    async def gauge(state: str, queue: str = "gpu") -> float | None:
        found = samples((await db.scrape_metrics()).decode())
        return value(found, "loom_activity_tasks", queue=queue, state=state)

    async with worker(db, queues=["default"]):
        await eventually(lambda: _is(gauge("ready"), 1), 20, what="the task to be counted ready")
        found = samples((await db.scrape_metrics()).decode())
        assert value(found, "loom_activity_tasks", queue="gpu", state="leased") == 0
        assert value(found, "loom_activity_tasks", queue="default", state="ready") == 0
        assert value(found, "loom_tasks", queue="gpu", state="ready") is None  # no workflow
        assert value(found, "loom_tasks", queue="default", state="waiting") == 1  # parked
        async with worker(db, queues=["gpu"], lease_seconds=0.6):
            await eventually(lambda: "started" in seen.get("met-hold", []), 20, what="a start")
            assert await gauge("leased") == 1 and await gauge("ready") == 0
            await handle.cancel("counted")
            # Its queue then holds nothing: its series go, as a workflow queue's do.
            await eventually(lambda: _is(gauge("leased"), None), 10, what="the task to go")


async def _is(reading: Any, expected: float | None) -> bool:
    return bool(await reading == expected)
