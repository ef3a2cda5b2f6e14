"""The product README's examples, run unmodified as scripts, do what the README says.

``readme_order.py`` and ``readme_quiz.py`` hold the README's code exactly as printed. Each runs
in a real subprocess, in an empty directory; the database it leaves behind is then inspected.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import EventType

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent


async def run_script(name: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(TESTS / name),
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def script_env(database_url: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LOOM_DATABASE_URL", None)
    if database_url is not None:
        env["LOOM_DATABASE_URL"] = database_url
    return env


async def test_order_example_runs_the_order_to_completion(tmp_path: Path) -> None:
    # No LOOM_DATABASE_URL: the example's loom.Database() uses ./loom.db.
    code, out, err = await run_script("readme_order.py", tmp_path, script_env(None))
    assert code == 0, err
    match = re.fullmatch(r"Workflow started: (\S+)\n", out)
    assert match, out
    workflow_id = match.group(1)
    assert (tmp_path / "loom.db").is_file()

    async with loom.Database(f"sqlite:///{tmp_path / 'loom.db'}") as db:
        [summary] = await db.list_workflows()
        assert summary.workflow_id == workflow_id
        assert (summary.name, summary.version) == ("OrderProcessing", "1.0.0")
        assert summary.status is loom.WorkflowStatus.COMPLETED

        handle = db.get_workflow(workflow_id)
        state = await handle.result(timeout=1)
        assert state == {"payment_confirmed": True, "email_sent": True}
        events = await handle.events()
        assert events[0].payload["input"] == {
            "order_id": "ORD-12345",
            "customer_email": "customer@example.com",
        }
        done = [e.payload["name"] for e in events if e.type is EventType.ACTIVITY_COMPLETED]
        assert done == ["process_payment", "send_email"]
        scheduled = [e for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
        assert scheduled[1].payload["args"] == ["customer@example.com", "ORD-12345"]


async def test_quiz_example_starts_a_workflow_that_a_worker_then_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'quiz.db'}"
    code, out, err = await run_script("readme_quiz.py", tmp_path, script_env(url))
    assert code == 0, err
    assert out == "Workflow Status: RUNNING\n"
    assert not (tmp_path / "loom.db").exists()  # LOOM_DATABASE_URL was honoured

    # A worker in this process runs the workflow the script started, with the README's own
    # workflow and activities: importing the module registers them, as `loom worker -m` would.
    monkeypatch.syspath_prepend(str(TESTS))
    quiz: Any = importlib.import_module("readme_quiz")

    # The README's quiz waits fetch_wait_time_activity's result: 120 s. To keep the test short,
    # only that activity's returned value changes: its function object (the one registered
    # and called by the workflow) gets the body of `one_second` for the duration of the test.
    # The workflow code, the timer and everything recorded stay exactly the README's.
    async def one_second() -> int:
        return 1

    monkeypatch.setattr(quiz.fetch_wait_time_activity, "__code__", one_second.__code__)

    async with loom.Database(url) as db:
        [summary] = await db.list_workflows()
        assert summary.name == "AssessmentWorkflow"
        assert summary.status is loom.WorkflowStatus.RUNNING
        handle = db.get_workflow(summary.workflow_id)
        assert (await handle.events())[0].payload["input"] == {"lesson_id": "lesson_123"}

        async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
            state = await handle.result(timeout=15)

        assert await handle.status() == loom.WorkflowStatus.COMPLETED
        quiz_id = state["quiz_id"]
        assert re.fullmatch(r"Quiz-\d{4}", quiz_id)
        assert state["wait_time"] == 1
        assert state["submissions"] == ["Submission 1", "Submission 2", "Submission 3"]
        result = state["result"]
        assert result["quiz_id"] == quiz_id
        assert 50 <= result["score"] <= 100
        assert result["status"] == "Completed"

        events = await handle.events()
        steps = [e.payload["step"] for e in events if e.type is EventType.STEP_STARTED]
        assert steps == [
            "generate_quiz",
            "send_to_lms",
            "fetch_wait_time",
            "wait_step",
            "pull_submissions",
            "assess_result",
            "store_result",
        ]
        [timer] = [e for e in events if e.type is EventType.TIMER_SCHEDULED]
        assert timer.payload["fire_at"] == pytest.approx(timer.timestamp + 1)
        [fired] = [e for e in events if e.type is EventType.TIMER_FIRED]
        assert fired.timestamp >= timer.payload["fire_at"]

    printed = capsys.readouterr().out
    assert f"Generated Quiz: {quiz_id}" in printed
    assert f"Sent {quiz_id} to LMS" in printed
    assert f"Pulled submissions for {quiz_id}" in printed
    assert f"Stored Result: {result}" in printed


async def test_query_example_answers_without_waking_the_cart(tmp_path: Path) -> None:
    code, out, err = await run_script("readme_cart.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out == "52.5\nTrue\nRUNNING\n"
    async with loom.Database(f"sqlite:///{tmp_path / 'cart.db'}") as db:
        record = await db.get_workflow("cart-1").describe()
        assert (record.current_step, record.leased) == ("checkout", False)
        kinds = [e.type for e in await db.get_workflow("cart-1").events()]
        assert kinds[-1] is EventType.SIGNAL_WAIT_STARTED  # the queries recorded nothing
    readme = (TESTS.parent / "README.md").read_text()
    example = (TESTS / "readme_cart.py").read_text().split("import asyncio", 1)[1]
    assert "import asyncio" + example in readme  # the README prints this code exactly


async def test_schedules_example_fires_a_declared_and_a_created_schedule(tmp_path: Path) -> None:
    code, out, err = await run_script("readme_schedules.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out == "every 1s schedule:pulse:\n03:00\nschedule:pulse: RUNNING\n"
    async with loom.Database(f"sqlite:///{tmp_path / 'reports.db'}") as db:
        names = [s.name for s in await db.list_schedules()]
        assert names == ["nightly-sales", "pulse"]  # the worker wrote the declared one
        assert (await db.get_schedule("pulse")).paused
    readme = (TESTS.parent / "README.md").read_text()
    example = (TESTS / "readme_schedules.py").read_text().split("import asyncio", 1)[1]
    assert "import asyncio" + example in readme  # the README prints this code exactly


async def test_codec_example_encrypts_what_it_stores(tmp_path: Path) -> None:
    code, out, err = await run_script("readme_vault.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out == (
        "{'receipt': 'receipt for 42 on 1111'}\nCOMPLETED\nPayloadDecodeError k1\nFalse\n"
    )
    codec = [loom.CompressionCodec(), loom.AesGcmCodec.from_keyfile(tmp_path / "keys")]
    async with loom.Database(f"sqlite:///{tmp_path / 'vault.db'}", codec=codec) as db:
        assert (await db.get_workflow("pay-1").describe()).input == {"card": "4111111111111111"}
    readme = (TESTS.parent / "README.md").read_text()
    example = (TESTS / "readme_vault.py").read_text().split("import asyncio", 1)[1]
    assert "import asyncio" + example in readme  # the README prints this code exactly


async def test_the_heartbeat_example_is_the_readmes_and_resumes_where_it_was(
    tmp_path: Path,
) -> None:
    readme = (TESTS.parent / "README.md").read_text()
    source = (TESTS / "readme_heartbeats.py").read_text()
    assert f"```python\n{source}```" in readme  # the file is the README's example, as printed

    code, out, err = await run_script("readme_heartbeats.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out.splitlines() == [
        "attempt 1 starts at row 0",
        "attempt 2 starts at row 600",
        "{'rows': 1000}",
    ]
    assert "It prints `attempt 1 starts at row 0`, `attempt 2 starts at row 600`" in readme


async def test_the_operations_example_is_the_readmes_and_resets_then_deletes(
    tmp_path: Path,
) -> None:
    readme = (TESTS.parent / "README.md").read_text()
    source = (TESTS / "readme_operations.py").read_text()
    assert f"```python\n{source}```" in readme  # the file is the README's example, as printed

    code, out, err = await run_script("readme_operations.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out.splitlines() == [
        "{'receipt': 'receipt-A-7', 'parcels': 1, 'parcel': 'parcel-A-7'}",
        "deleted 100",
    ]
    assert "It prints `{'receipt': 'receipt-A-7', 'parcels': 1, 'parcel': 'parcel-A-7'}`" in readme
    async with loom.Database(f"sqlite:///{tmp_path / 'loom.db'}") as db:
        assert await db.list_workflows() == []


async def test_the_testing_examples_are_the_readmes_and_pass(tmp_path: Path) -> None:
    readme = (TESTS.parent / "README.md").read_text()
    for name in ("readme_testing.py", "readme_testing_pytest.py"):
        source = (TESTS / name).read_text()
        assert f"```python\n{source}```" in readme  # the files are the README's examples
        (tmp_path / name).write_text(source)

    env = script_env(None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    code, out, err = await run_script_in(tmp_path, env, "readme_testing.py")
    assert code == 0, err
    assert out.splitlines() == [
        "{'receipt': 'r-ann-999', 'billed_on': '2030-04-16'}",
        "3 2030-04-16T17:48:40+00:00",
        "COMPLETED",
    ]
    (tmp_path / "histories").mkdir()
    (tmp_path / "trial.json").rename(tmp_path / "histories" / "trial.json")

    # The loom_env fixture comes with an installed Loom (entry point pytest11 "loom"); an
    # install older than this source tree is given the plugin by hand.
    installed = {e.name for e in importlib.metadata.entry_points(group="pytest11")}
    if os.environ.get("CI") == "true":  # CI installs Loom afresh: the entry point must be there
        assert "loom" in installed, "the pytest11 entry point 'loom' is not installed"
    plugin = [] if "loom" in installed else ["-p", "loom.testing.pytest_plugin"]
    args = ["-m", "pytest", *plugin, "-q", "-p", "no:cacheprovider", "readme_testing_pytest.py"]
    code, out, err = await run_script_in(tmp_path, env, *args)
    assert code == 0, out + err
    assert "2 passed" in out


async def run_script_in(cwd: Path, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode or 0, out.decode(), err.decode()


async def test_observability_example_traces_counts_and_logs_one_checkout(tmp_path: Path) -> None:
    code, out, err = await run_script("readme_observe.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out == (
        "{'charge': 'ch_1'}\nloom_workflows_completed_total{workflow=\"Checkout\"} 1.0\n"
    )
    text, spans, decoder = (tmp_path / "spans.json").read_text(), [], json.JSONDecoder()
    while text.strip():
        span, end = decoder.raw_decode(text.strip())
        spans.append(span)
        text = text.strip()[end:]
    names = {s["name"] for s in spans}
    assert {"POST /checkout", "StartWorkflow:Checkout", "Step:pay", "RunActivity:charge"} <= names
    assert len({s["context"]["trace_id"] for s in spans}) == 1
    logs = [json.loads(line) for line in err.splitlines()]
    [paying] = [r for r in logs if r["message"] == "paying"]
    [charging] = [r for r in logs if r["message"] == "charging A-1"]
    assert (charging["activity"], charging["attempt"], charging["step"]) == ("charge", 1, "pay")
    assert paying["workflow_id"] == charging["workflow_id"]
    assert f"0x{charging['trace_id']}" == spans[0]["context"]["trace_id"]
    readme = (TESTS.parent / "README.md").read_text()
    example = (TESTS / "readme_observe.py").read_text().split("import asyncio", 1)[1]
    assert "import asyncio" + example in readme  # the README prints this code exactly


async def test_the_queue_example_is_the_readmes_and_keeps_its_limits(tmp_path: Path) -> None:
    readme = (TESTS.parent / "README.md").read_text()
    source = (TESTS / "readme_queues.py").read_text()
    assert f"```python\n{source}```" in readme  # the file is the README's example, as printed

    code, out, err = await run_script("readme_queues.py", tmp_path, script_env(None))
    assert code == 0, err
    assert out.splitlines() == [
        "sent to vip",
        *(f"sent to user{i}" for i in range(4)),
        "emails 0 0 2 100/m",
    ]
    assert "then `emails 0 0 2 100/m`" in readme
    async with loom.Database(f"sqlite:///{tmp_path / 'loom.db'}") as db:
        assert [(q.name, q.concurrency, str(q.rate)) for q in await db.queue_limits()] == [
            ("emails", 2, "100/m")
        ]
