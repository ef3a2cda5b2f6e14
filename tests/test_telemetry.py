"""OpenTelemetry traces: one trace from the caller of start_workflow to the last activity, carried
through the history across worker restarts, into child workflows and the runs that continue as
new; and nothing at all when no tracer provider is configured. Spans are read from the SDK's
in-memory exporter."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

import loom
from loom import EventType
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
attempts: collections.Counter[str] = collections.Counter()


@loom.activity(name="otel_charge", retry_count=1, retry_delay=0.01)
async def charge(order: str) -> str:
    attempts[order] += 1
    if attempts[order] == 1:
        raise ConnectionError("the card service is down")
    return f"ch-{order}"


@loom.activity(name="otel_notify")
def notify(order: str) -> str:
    """A sync activity (it runs on a thread): the id of the span current where it runs."""
    return f"{trace.get_current_span().get_span_context().span_id:016x}"


@loom.workflow(name="otel_Parcel")
class Parcel(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pack(self, ctx: Ctx) -> None:
        await ctx.activity(notify, ctx.input["order"] + "/parcel")


@loom.workflow(name="otel_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("charge", await ctx.activity(charge, ctx.input["order"]))

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        await ctx.sleep(0.01)
        await ctx.child(Parcel, {"order": ctx.input["order"]})
        await ctx.wait_for_signal("shipped")

    @loom.step
    async def tell(self, ctx: Ctx) -> None:
        await ctx.state.set("span_seen", await ctx.activity(notify, ctx.input["order"]))


@loom.workflow(name="otel_Monthly")
class Monthly(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def bill(self, ctx: Ctx) -> None:
        await ctx.activity(notify, f"month {ctx.input['month']}")
        if ctx.input["month"] < 2:
            await ctx.continue_as_new({"month": ctx.input["month"] + 1})


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def hex_id(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.span_id:016x}"


def lineage(span: ReadableSpan, spans: list[ReadableSpan]) -> Iterator[ReadableSpan]:
    """``span``, its parent, its parent's parent ... as far as the exporter has them."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    current: ReadableSpan | None = span
    while current is not None:
        yield current
        current = by_id.get(current.parent.span_id) if current.parent is not None else None


def names_up(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    return [s.name for s in lineage(span, spans)]


async def test_one_trace_from_the_request_to_the_last_activity_across_a_worker_restart(
    db_url: str, provider: TracerProvider, exporter: InMemorySpanExporter, wid: str
) -> None:
    async with loom.Database(db_url, tracer_provider=provider) as db:
        await db.migrate_up()
        with provider.get_tracer("shop").start_as_current_span("POST /orders") as request:
            handle = await db.start_workflow(Order, workflow_input={"order": wid}, workflow_id=wid)

        async with worker(db) as first:  # pays (the card service fails once), ships, waits

            async def waiting() -> bool:
                events = await handle.events()
                return (
                    bool(of_type(events, EventType.SIGNAL_WAIT_STARTED))
                    and not (await handle.describe()).leased
                )

            await eventually(waiting, 15, what="the order waiting for 'shipped'")
        await handle.signal("shipped", {"carrier": "post"})
        async with worker(db) as second:  # a fresh worker: it knows the workflow by its history
            state = await handle.result(timeout=15)
        started = (await handle.events())[0]

    spans = list(exporter.get_finished_spans())
    assert request.context is not None
    assert {s.context.trace_id for s in spans if s.context} == {request.context.trace_id}
    assert all(names_up(s, spans)[-1] == "POST /orders" for s in spans), [
        names_up(s, spans) for s in spans
    ]
    [start] = [s for s in spans if s.name == "StartWorkflow:otel_Order"]
    assert start.parent is not None and start.parent.span_id == request.context.span_id
    assert started.payload["trace"]["traceparent"].split("-")[2] == hex_id(start)

    runs = [s for s in spans if s.name == "RunWorkflow:otel_Order"]
    assert {s.attributes["loom.worker.id"] for s in runs if s.attributes} == {
        first.worker_id,
        second.worker_id,
    }
    assert all(r.parent is not None and r.parent.span_id == start.context.span_id for r in runs)

    tries = sorted(
        (s for s in spans if s.name == "RunActivity:otel_charge"),
        key=lambda s: s.attributes["loom.activity.attempt"] if s.attributes else 0,
    )
    assert [s.attributes["loom.activity.attempt"] for s in tries if s.attributes] == [1, 2]
    assert tries[0].status.status_code is trace.StatusCode.ERROR
    assert tries[0].attributes is not None
    assert tries[0].attributes["error.type"] == "ConnectionError"
    [raised] = [e for e in tries[0].events if e.name == "exception"]
    assert raised.attributes is not None
    assert raised.attributes["exception.message"] == "the card service is down"
    assert "ConnectionError" in str(raised.attributes["exception.stacktrace"])
    assert tries[1].status.status_code is trace.StatusCode.UNSET
    assert names_up(tries[1], spans)[:4] == [
        "RunActivity:otel_charge",
        "Step:pay",
        "RunWorkflow:otel_Order",
        "StartWorkflow:otel_Order",
    ]
    [timer] = [s for s in spans if s.name == "Timer"]
    [wait] = [s for s in spans if s.name == "SignalWait:shipped"]
    assert names_up(timer, spans)[1] == names_up(wait, spans)[1] == "Step:ship"
    assert wait.attributes is not None and wait.attributes["loom.signal.timed_out"] is False

    # The child's trace goes on from the step that started it.
    [child_run] = [s for s in spans if s.name == "RunWorkflow:otel_Parcel"]
    assert names_up(child_run, spans)[1:3] == ["Step:ship", "RunWorkflow:otel_Order"]
    [packed] = [
        s
        for s in spans
        if s.name == "RunActivity:otel_notify"
        and s.attributes
        and s.attributes["loom.workflow.id"] != wid
    ]
    assert names_up(packed, spans)[:3] == ["RunActivity:otel_notify", "Step:pack", child_run.name]

    # The last activity ran, in its thread, inside its own span: the end of the same trace.
    [last] = [
        s
        for s in spans
        if s.name == "RunActivity:otel_notify"
        and s.attributes
        and s.attributes["loom.workflow.id"] == wid
    ]
    assert state["span_seen"] == hex_id(last)
    assert names_up(last, spans)[:2] == ["RunActivity:otel_notify", "Step:tell"]
    assert last.attributes is not None and last.attributes["loom.run.id"]


async def test_a_run_that_continues_as_new_stays_in_its_trace(
    db_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with loom.Database(db_url, tracer_provider=provider) as db:
        await db.migrate_up()
        handle = await db.start_workflow(Monthly, workflow_input={"month": 0})
        async with worker(db):
            await handle.result(timeout=15)
        runs = await handle.runs()

    spans = list(exporter.get_finished_spans())
    [start] = [s for s in spans if s.name == "StartWorkflow:otel_Monthly"]
    bills = [s for s in spans if s.name == "RunActivity:otel_notify"]
    assert len(bills) == 3 == len(runs)
    assert {s.context.trace_id for s in spans if s.context} == {start.context.trace_id}
    assert {s.attributes["loom.run.id"] for s in bills if s.attributes} == {r.run_id for r in runs}
    assert all(names_up(b, spans)[-1] == "StartWorkflow:otel_Monthly" for b in bills)


async def test_without_a_configured_tracer_provider_nothing_is_traced_or_recorded(
    db: loom.Database, exporter: InMemorySpanExporter
) -> None:
    assert db.tracing.tracer() is None  # the global provider was never set in this process
    handle = await db.start_workflow(Parcel, workflow_input={"order": "quiet"})
    async with worker(db):
        await handle.result(timeout=15)
    assert "trace" not in (await handle.events())[0].payload
    assert exporter.get_finished_spans() == ()


async def test_a_globally_configured_provider_is_used_once_it_is_set(
    db: loom.Database,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert db.tracing.tracer() is None
    # What trace.set_tracer_provider(provider) does (which a process can do only once).
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    handle = await db.start_workflow(Parcel, workflow_input={"order": "global"})
    async with worker(db):
        await handle.result(timeout=15)
    assert "traceparent" in (await handle.events())[0].payload["trace"]
    assert "RunActivity:otel_notify" in {s.name for s in exporter.get_finished_spans()}


async def test_a_workflow_started_untraced_gets_a_trace_of_its_own_from_a_traced_worker(
    db: loom.Database, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    handle = await db.start_workflow(Parcel, workflow_input={"order": "late"})
    assert "trace" not in (await handle.events())[0].payload
    db.tracing = loom.telemetry.Tracing(provider)  # the worker's process traces
    async with worker(db):
        await handle.result(timeout=15)
    [run] = [s for s in exporter.get_finished_spans() if s.name == "RunWorkflow:otel_Parcel"]
    assert run.parent is None  # a root: nothing started it in a trace
    assert {s.context.trace_id for s in exporter.get_finished_spans() if s.context} == {
        run.context.trace_id
    }


@pytest.mark.parametrize(
    "junk",
    [None, "00-abc", [1], {"traceparent": 7}, {"traceparent": "00-" + "0" * 51}, {"x": "y"}],
)
def test_a_stored_value_that_is_no_trace_context_is_ignored(junk: Any) -> None:
    from loom.telemetry import parent_context

    assert parent_context(junk) is None


def test_a_tracer_provider_needs_the_otel_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.trace", None)  # as if not installed
    with pytest.raises(loom.MissingExtraError, match=r"pip install 'loom-core\[otel\]'"):
        loom.Database("sqlite:///:memory:", tracer_provider=object())


def test_a_tracer_provider_must_be_one() -> None:
    with pytest.raises(loom.ConfigurationError, match="must be an OpenTelemetry TracerProvider"):
        loom.Database("sqlite:///:memory:", tracer_provider="jaeger")


UNTRACED_RUN = """
import asyncio, sys
import loom
from loom import telemetry

@loom.activity(name="plain_step")
async def plain(x: int) -> int:
    return x + 1

@loom.workflow(name="plain_Flow")
class Flow(loom.Workflow[dict, dict]):
    @loom.step
    async def go(self, ctx):
        await ctx.state.set("n", await ctx.activity(plain, 1))

def no_spans(*args, **kwargs):
    raise AssertionError("a span was made without a tracer provider")

telemetry.RunTrace.__init__ = no_spans

async def main():
    async with loom.Database("sqlite:///" + sys.argv[1]) as db:
        await db.migrate_up()
        handle = await db.start_workflow(Flow)
        async with loom.Worker(db, poll_interval=0.05):
            print((await handle.result(timeout=20))["n"])
        assert db.metrics is None

asyncio.run(main())
loaded = [m for m in sys.modules if m.split(".")[0] in ("opentelemetry", "prometheus_client")]
print(loaded)
"""


def test_an_untraced_process_never_imports_opentelemetry_nor_makes_a_span(tmp_path: Path) -> None:
    """The cost of tracing and metrics when they are off: nothing imported, no span object, no
    metric (each event pays one ``is None`` test)."""
    done = subprocess.run(
        [sys.executable, "-c", UNTRACED_RUN, str(tmp_path / "plain.db")],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["2", "[]"]


@loom.activity(name="otel_render", queue="otel-gpu", retry_count=1, retry_delay=0.01)
def render(order: str) -> str:
    """Routed to queue otel-gpu; fails its first attempt. The span current where it runs."""
    attempts[order] += 1
    if attempts[order] == 1:
        raise RuntimeError("the gpu is warming up")
    return f"{trace.get_current_span().get_span_context().span_id:016x}"


@loom.workflow(name="otel_Render")
class RenderOrder(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def draw(self, ctx: Ctx) -> None:
        await ctx.state.set("span_seen", await ctx.activity(render, ctx.input["order"]))


async def test_a_routed_attempt_is_traced_by_the_worker_that_runs_it(
    db_url: str, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """The gpu worker traces with its own provider, as another process would: its attempts
    are RunActivity spans in the workflow's trace, children of its start."""
    attempts.pop("routed", None)  # of the run on the other backend
    gpu_exporter = InMemorySpanExporter()
    gpu_provider = TracerProvider()
    gpu_provider.add_span_processor(SimpleSpanProcessor(gpu_exporter))
    async with (
        loom.Database(db_url, tracer_provider=provider) as db,
        loom.Database(db_url, tracer_provider=gpu_provider) as gpu_db,
    ):
        await db.migrate_up()
        metrics = gpu_db.enable_metrics()
        handle = await db.start_workflow(
            RenderOrder, workflow_input={"order": "routed"}, workflow_id="otel-routed"
        )
        async with (
            worker(db, queues=["default"]),
            worker(gpu_db, queues=["otel-gpu"], worker_id="gpu-7"),
        ):
            state = await handle.result(timeout=15)
        # Its attempts count in the metrics of the process that ran them.
        counted = {
            sample.name: sample.value
            for family in text_string_to_metric_families(metrics.render().decode())
            for sample in family.samples
            if sample.labels.get("activity") == "otel_render"
        }
        assert counted["loom_activity_attempts_total"] == 2
        assert counted["loom_activity_failures_total"] == 1

    [start] = [s for s in exporter.get_finished_spans() if s.name == "StartWorkflow:otel_Render"]
    assert "RunActivity:otel_render" not in {s.name for s in exporter.get_finished_spans()}
    first, second = sorted(
        (s for s in gpu_exporter.get_finished_spans() if s.name == "RunActivity:otel_render"),
        key=lambda s: s.attributes["loom.activity.attempt"] if s.attributes else 0,
    )
    for span in (first, second):
        assert span.context is not None and start.context is not None
        assert span.context.trace_id == start.context.trace_id
        assert span.parent is not None and span.parent.span_id == start.context.span_id
        assert span.attributes is not None
        assert span.attributes["loom.worker.id"] == "gpu-7"
        assert span.attributes["loom.activity.routed"] is True
        assert span.attributes["loom.activity.queue"] == "otel-gpu"
        assert span.attributes["loom.step"] == "draw"
    assert first.attributes is not None and first.attributes["error.type"] == "RuntimeError"
    assert first.status.status_code is trace.StatusCode.ERROR
    assert second.attributes is not None and second.attributes["loom.activity.attempt"] == 2
    assert state["span_seen"] == hex_id(second)  # current where the activity ran
