"""``loom worker --metrics-port --log-format json`` and ``loom web``'s ``/metrics``, as an operator
runs them: real processes, scraped over HTTP, their figures checked against a known run."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import loom
import obs_workflows
from support import eventually_sync

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"


def env_for(db_url: str, *paths: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [*map(str, paths), str(TESTS_DIR), env.get("PYTHONPATH")])
    )
    env["LOOM_DATABASE_URL"] = db_url
    return env


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'obs.db'}"
    init = subprocess.run(
        [str(LOOM), "init"], env=env_for(url), capture_output=True, text=True, timeout=30
    )
    assert init.returncode == 0, init.stderr
    return url


def scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(url, timeout=5)
    assert answer.status_code == 200, answer.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def metric(found: dict[Any, float], name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def start(url: str, cls: type[loom.Workflow[Any, Any]], count: int) -> list[str]:
    import asyncio

    async def go() -> list[str]:
        async with loom.Database(url) as db:
            return [(await db.start_workflow(cls)).workflow_id for _ in range(count)]

    return asyncio.run(go())


class Process:
    """A `loom` subprocess whose stderr lines are collected as they come."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(LOOM), *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def find(self, pattern: str) -> re.Match[str]:
        def found() -> re.Match[str] | None:
            return re.search(pattern, "".join(self.lines))

        match = eventually_sync(found, 20, what=lambda: f"{pattern!r} in {self.lines}")
        assert match is not None
        return match

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def test_a_worker_serves_its_metrics_and_writes_json_logs(db_url: str, tmp_path: Path) -> None:
    orders = start(db_url, obs_workflows.Order, 3)
    start(db_url, obs_workflows.Broken, 1)
    start(db_url, obs_workflows.Wait, 1)
    args = ["-m", "obs_workflows", "--poll-interval", "0.05", "--log-format", "json"]
    worker = Process(
        ["worker", *args, "--metrics-port", "0"],
        env_for(db_url),
        tmp_path,
    )
    try:
        port = worker.find(r"metrics at http://127\.0\.0\.1:(\d+)/metrics").group(1)
        url = f"http://127.0.0.1:{port}/metrics"

        def settled() -> dict[Any, float] | None:
            found = scrape(url)
            done = metric(found, "loom_workflows_completed_total", workflow="obs_Order")
            failed = metric(found, "loom_workflows_failed_total", workflow="obs_Broken")
            waiting = metric(found, "loom_tasks", queue="default", state="waiting")
            return found if (done, failed, waiting) == (3, 1, 1) else None

        found = eventually_sync(settled, 20, what=lambda: scrape(url))
        assert metric(found, "loom_activity_attempts_total", activity="obs_charge") == 6
        assert metric(found, "loom_activity_failures_total", activity="obs_charge") == 3
        assert metric(found, "loom_activity_attempts_total", activity="obs_refuse") == 1
        assert metric(found, "loom_activity_failures_total", activity="obs_refuse") == 1
        latency = metric(
            found, "loom_task_latency_seconds_count", queue="default", workflow="obs_Order"
        )
        # One observation per claim: each order at least once (when it was started; a worker
        # may wait out the short retry delay itself or park the order and claim it again).
        assert latency is not None and latency >= 3
        # This process started nothing: starts are counted where they are made.
        assert metric(found, "loom_workflows_started_total", workflow="obs_Order") is None
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 404
    finally:
        assert worker.stop() == 0, "".join(worker.lines)

    records = [json.loads(line) for line in worker.lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert any(r["logger"] == "loom.cli" and "ready on" in r["message"] for r in records)
    for order in orders:
        mine = [r for r in records if r["workflow_id"] == order]
        assert [r["message"] for r in mine if r["logger"] == "loom.workflow"] == ["paying"]
        charging = [r for r in mine if r["logger"] == "loom.activity"]
        assert [(r["activity"], r["attempt"], r["step"]) for r in charging] == [
            ("obs_charge", 1, "pay"),
            ("obs_charge", 2, "pay"),
        ]
        assert all(r["run_id"] for r in mine)


def test_loom_web_serves_prometheus_metrics_at_metrics_and_the_charts_at_charts(
    db_url: str, tmp_path: Path
) -> None:
    web = Process(["web", "--port", "0", "-m", "obs_workflows"], env_for(db_url), tmp_path)
    try:
        base = web.find(r"(http://127\.0\.0\.1:\d+)").group(1)
        with httpx.Client(base_url=base, timeout=5) as http:
            for _ in range(2):
                started = http.post("/api/workflows", json={"name": "obs_Wait"})
                assert started.status_code == 201, started.text
            found = scrape(base + "/metrics")
            assert metric(found, "loom_workflows_started_total", workflow="obs_Wait") == 2
            assert metric(found, "loom_tasks", queue="default", state="ready") == 2  # no worker
            assert metric(found, "loom_tasks", queue="default", state="leased") == 0
            assert metric(found, "loom_database_up") == 1
            for page in ("/charts", "/queue"):
                answer = http.get(page)
                assert answer.status_code == 200
                assert 'id="view-charts"' in answer.text
    finally:
        web.stop()


def test_metrics_without_the_extra_or_on_a_taken_port_fail_in_one_line(
    db_url: str, tmp_path: Path
) -> None:
    missing = tmp_path / "no_prometheus" / "prometheus_client"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    args = ["worker", "-m", "obs_workflows", "--metrics-port", "9464"]
    done = subprocess.run(
        [str(LOOM), *args],
        env=env_for(db_url, missing.parent),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "error: --metrics-port needs the 'prometheus_client' module, which is not installed: "
        "pip install 'loom-core[metrics]'"
    ]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [str(LOOM), "worker", "-m", "obs_workflows", "--metrics-port", str(port)],
            env=env_for(db_url),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: cannot serve metrics on 127.0.0.1:{port}: ")
    ), done.stderr
    assert "Traceback" not in done.stderr

    wrong = subprocess.run(
        [str(LOOM), "worker", "--log-format", "xml"],
        env=env_for(db_url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert wrong.returncode == 2
    assert "xml" in wrong.stderr
