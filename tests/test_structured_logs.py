"""Structured logs: ``ctx.logger``, ``loom.activity_logger`` and any logger used inside an
activity carry the workflow's ids, and ``loom.JsonFormatter`` writes them one JSON object per
line (with the trace's ids when the workflow is traced)."""

from __future__ import annotations

import collections
import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import loom
from support import worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
calls: collections.Counter[str] = collections.Counter()
shop_log = logging.getLogger("log_shop")


@loom.activity(name="log_charge", retry_count=1, retry_delay=0.01)
async def charge(order: str) -> str:
    calls[order] += 1
    loom.activity_logger.info("charging %s, try %d", order, calls[order])
    if calls[order] == 1:
        raise ConnectionError("down")
    return "ok"


@loom.activity(name="log_pack")
def pack(order: str) -> dict[str, Any]:
    """Sync (on a thread): a plain logger of the user's carries the ids all the same."""
    shop_log.warning("packing %s", order)
    info = loom.activity_info()
    return {
        "activity": info.activity_name,
        "attempt": info.attempt,
        "step": info.step,
        "run_id": info.run_id,
    }


@loom.workflow(name="log_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        ctx.logger.info("paying for %s", ctx.input["order"])
        await ctx.activity(charge, ctx.input["order"])

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        await ctx.state.set("info", await ctx.activity(pack, ctx.input["order"]))
        ctx.logger.warning("shipped \x1b[31m%s\u202e", "naïve ✓")


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """What a JSON handler on the root logger writes while the test runs."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(loom.JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield out
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    lines = out.getvalue().splitlines()
    assert all(line.isascii() for line in lines)  # nothing a terminal could act on
    return [json.loads(line) for line in lines]


async def test_workflow_and_activity_logs_carry_the_workflow_s_ids(
    db: loom.Database, json_lines: io.StringIO
) -> None:
    order = f"A-{uuid.uuid4().hex[:6]}"
    handle = await db.start_workflow(Order, workflow_input={"order": order})
    async with worker(db):
        state = await handle.result(timeout=15)
    run_id = (await handle.runs())[0].run_id
    records = [r for r in parsed(json_lines) if r["workflow_id"] == handle.workflow_id]

    assert state["info"] == {"activity": "log_pack", "attempt": 1, "step": "ship", "run_id": run_id}
    for r in records:
        assert set(r) >= {"time", "level", "logger", "message", "workflow_id", "run_id", "step"}
        assert set(r) >= {"activity", "attempt"}
        assert r["run_id"] == run_id
        assert r["time"].endswith("+00:00")
    paying = [r for r in records if r["logger"] == "loom.workflow" and r["step"] == "pay"]
    assert [r["message"] for r in paying] == [f"paying for {order}"]  # once: silent on replay
    assert paying[0]["activity"] is None and paying[0]["level"] == "INFO"
    charging = [r for r in records if r["logger"] == "loom.activity"]
    assert [(r["message"], r["attempt"], r["step"]) for r in charging] == [
        (f"charging {order}, try 1", 1, "pay"),
        (f"charging {order}, try 2", 2, "pay"),
    ]
    assert all(r["activity"] == "log_charge" for r in charging)
    [packing] = [r for r in records if r["logger"] == "log_shop"]
    assert packing["activity"] == "log_pack" and packing["attempt"] == 1
    assert packing["step"] == "ship" and packing["level"] == "WARNING"
    [shipped] = [r for r in records if r["message"].startswith("shipped")]
    assert shipped["message"] == "shipped \x1b[31mnaïve ✓\u202e"  # escaped on the line, kept


async def test_a_traced_workflow_s_logs_name_its_trace(
    db_url: str, json_lines: io.StringIO
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with loom.Database(db_url, tracer_provider=provider) as db:
        await db.migrate_up()
        handle = await db.start_workflow(Order, workflow_input={"order": db_url})
        async with worker(db):
            await handle.result(timeout=15)
    spans = {f"{s.context.span_id:016x}": s for s in exporter.get_finished_spans() if s.context}
    records = [r for r in parsed(json_lines) if r["workflow_id"] == handle.workflow_id]
    [trace_id] = {f"{s.context.trace_id:032x}" for s in spans.values() if s.context}
    assert records and all(r["trace_id"] == trace_id for r in records)
    for r in records:
        expected = "RunWorkflow:" if r["logger"] == "loom.workflow" else "RunActivity:"
        assert spans[r["span_id"]].name.startswith(expected), r


def test_a_record_json_cannot_hold_is_still_one_json_line(json_lines: io.StringIO) -> None:
    log = logging.getLogger("log_odd")
    log.info("postgresql://loom:s3cret@db/loom is down", extra={"attempt": float("nan")})
    cycle: list[Any] = []
    cycle.append(cycle)
    log.info("cycle", extra={"step": cycle})
    try:
        raise ValueError("password=hunter2")
    except ValueError:
        log.exception("with a traceback\x00")
    first, second, third = parsed(json_lines)
    # Arguments that do not fit the message (formatted directly: pytest's own log capture
    # fails the test on such a record before any other handler sees it).
    unfit = log.makeRecord("log_odd", logging.INFO, __file__, 1, "%d orders", ("many",), None)
    fourth = json.loads(loom.JsonFormatter().format(unfit))
    assert fourth["message"].startswith("%d orders (arguments not shown")
    assert first["message"] == "postgresql://loom:***@db/loom is down"
    assert first["attempt"] == "nan" and first["workflow_id"] is None
    assert second["step"] == "[[...]]"
    assert third["message"] == "with a traceback\x00"
    assert "ValueError: password=***" in third["exception"]
    assert "hunter2" not in json_lines.getvalue()


def test_the_activity_logger_outside_an_activity_adds_nothing(json_lines: io.StringIO) -> None:
    loom.activity_logger.info("no activity here")
    [record] = parsed(json_lines)
    assert record["logger"] == "loom.activity" and record["activity"] is None
    assert "trace_id" not in record
    assert sys.modules.get("opentelemetry.trace") is not None  # imported, yet no span here
