"""`loom worker --activity-threads N` sizes the worker's own pool for sync activities."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import eventually_sync

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"


def test_worker_option_sets_the_number_of_activity_threads(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["LOOM_DATABASE_URL"] = f"sqlite:///{tmp_path / 'loom.db'}"
    init = subprocess.run(
        [str(LOOM), "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert init.returncode == 0, init.stderr

    refused = subprocess.run(
        [str(LOOM), "worker", "-m", "cli_workflows", "--activity-threads", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    assert "--activity-threads" in refused.stderr

    log = tmp_path / "worker.log"
    with log.open("w") as err:
        worker = subprocess.Popen(
            [str(LOOM), "worker", "-m", "cli_workflows", "--activity-threads", "3"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:

        def ready() -> bool:
            assert worker.poll() is None, log.read_text()
            return "ready on" in log.read_text()

        eventually_sync(ready, 30, what=lambda: f"'ready on' in the log:\n{log.read_text()}")
        assert "4 at once (3 activity threads)" in log.read_text()
    finally:
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=30) == 0, log.read_text()
