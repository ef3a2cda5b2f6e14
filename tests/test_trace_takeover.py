"""A trace survives the death of its worker: a `loom worker` process that traces is killed
(SIGKILL) in the middle of an order's activity, another worker takes the order over once the
dead one's lease runs out, and every span either of them made, with the span of the request
that started the order, is in one trace. The killed worker's spans are read from the file its
tracer provider wrote them to as they ended (tests/obs_traced.py); the successor's from the
SDK's in-memory exporter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import loom
import obs_workflows
from loom import EventType
from support import eventually, of_type, worker

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"


def traced_worker(db_url: str, spans: Path, log: Path) -> subprocess.Popen[bytes]:
    """``loom worker -m obs_traced``: it traces (a global tracer provider writing to ``spans``)
    and holds its workflows on a one-second lease, so a successor takes over soon after it
    dies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["LOOM_DATABASE_URL"] = db_url
    env["OBS_SPANS"] = str(spans)
    args = ["worker", "-m", "obs_traced", "--quiet", "--lease-seconds", "1"]
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [str(LOOM), *args, "--poll-interval", "0.05"],
            env=env,
            cwd=spans.parent,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def names_up(span: ReadableSpan, spans: list[ReadableSpan]) -> list[str]:
    """The names of ``span``, its parent, its parent's parent ... as far as ``spans`` go."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    names: list[str] = []
    current: ReadableSpan | None = span
    while current is not None:
        names.append(current.name)
        current = by_id.get(current.parent.span_id) if current.parent is not None else None
    return names


async def test_a_worker_killed_mid_activity_leaves_one_trace_its_successor_continues(
    db_url: str, tmp_path: Path
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    marker, spans_file, log = tmp_path / "hanging", tmp_path / "killed.jsonl", tmp_path / "w.log"
    async with loom.Database(db_url, tracer_provider=provider) as db:
        await db.migrate_up()
        with provider.get_tracer("shop").start_as_current_span("POST /orders") as request:
            handle = await db.start_workflow(
                obs_workflows.Crash, workflow_input={"marker": str(marker)}
            )

        first = traced_worker(db_url, spans_file, log)
        try:

            async def hanging() -> bool:
                # The second activity runs (its marker is written) and its scheduling is
                # durable, so the successor resumes the step it was in.
                scheduled = of_type(await handle.events(), EventType.ACTIVITY_SCHEDULED)
                return marker.exists() and any(
                    e.payload.get("name") == "obs_hang" for e in scheduled
                )

            await eventually(hanging, 30, what=lambda: log.read_text())
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=20)
        assert first.returncode == -signal.SIGKILL

        async with worker(db, lease_seconds=10) as second:
            state = await handle.result(timeout=30)
        assert state == {"prepared": f"prepared {handle.workflow_id}", "shipped": "shipped"}

    assert request.context is not None
    trace_id = request.context.trace_id

    # What the killed worker did before it died is in the request's trace.
    killed: list[dict[str, Any]] = [
        json.loads(line) for line in spans_file.read_text().splitlines()
    ]
    names = {s["name"] for s in killed}
    assert {"Step:prepare", "RunActivity:obs_prepare"} <= names, names
    assert "RunActivity:obs_hang" not in names  # it died in the middle of that attempt
    assert {s["trace_id"] for s in killed} == {f"{trace_id:032x}"}

    # And so is what its successor did: it continued the trace from the history.
    spans = list(exporter.get_finished_spans())
    assert {s.context.trace_id for s in spans if s.context} == {trace_id}
    [start] = [s for s in spans if s.name == "StartWorkflow:obs_Crash"]
    [run] = [s for s in spans if s.name == "RunWorkflow:obs_Crash"]
    assert run.attributes is not None and run.attributes["loom.worker.id"] == second.worker_id
    assert start.context is not None and run.parent is not None
    assert run.parent.span_id == start.context.span_id
    [hang] = [s for s in spans if s.name == "RunActivity:obs_hang"]
    assert names_up(hang, spans) == [
        "RunActivity:obs_hang",
        "Step:ship",
        "RunWorkflow:obs_Crash",
        "StartWorkflow:obs_Crash",
        "POST /orders",
    ]
    [ship] = [s for s in spans if s.name == "Step:ship"]
    assert ship.attributes is not None and ship.attributes["loom.step.resumed"] is True
