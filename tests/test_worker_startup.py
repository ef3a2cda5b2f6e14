"""`loom worker` against a database that is not there yet, or is damaged: a worker started
during an outage waits for the database (one line saying so), `--give-up-after` bounds the wait,
and a damaged file is one clear error and a non-zero exit instead of a retry loop."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from pathlib import Path

import pytest

import cli_workflows  # noqa: F401 - registers the workflows the database is filled with
import loom
from support import eventually_sync
from test_cli import LOOM, WORKER_ARGS, assert_one_line_error, cli_env, loom_cli

pytestmark = [pytest.mark.processes, pytest.mark.slow]


def closed_port() -> int:
    """A local port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_worker_gives_up_on_an_unreachable_database_when_told_to(tmp_path: Path) -> None:
    url = f"postgresql://postgres:hunter2@127.0.0.1:{closed_port()}/loom"
    started = time.monotonic()
    result = loom_cli(*WORKER_ARGS, "--give-up-after", "1", env=cli_env(url), cwd=tmp_path)
    assert time.monotonic() - started >= 1  # it did wait
    assert result.returncode == 1
    assert "waiting for it for up to 1 s" in result.stderr
    assert "still unreachable after" in result.stderr.splitlines()[-1]
    assert "hunter2" not in result.stderr


def test_a_worker_waits_for_an_unreachable_database(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/loom"
    stderr = tmp_path / "worker.stderr"
    with stderr.open("w") as err:
        process = subprocess.Popen(
            [str(LOOM), *WORKER_ARGS], env=cli_env(url), cwd=tmp_path, stderr=err
        )
    try:

        def waiting() -> bool:
            assert process.poll() is None, stderr.read_text()  # it must not exit
            return "waiting for it" in stderr.read_text()

        eventually_sync(
            waiting, 20, what=lambda: f"'waiting for it' in stderr:\n{stderr.read_text()}"
        )
        assert process.poll() is None
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert stderr.read_text().count("the database is unreachable") == 1


def test_a_worker_on_a_damaged_database_exits_with_one_error(tmp_path: Path) -> None:
    path = tmp_path / "loom.db"
    path.write_bytes(b"not a database at all" * 500)
    result = loom_cli(*WORKER_ARGS, env=cli_env(f"sqlite:///{path}"), cwd=tmp_path, timeout=30)
    assert_one_line_error(result, "damaged", "backup")


def test_a_worker_that_finds_its_database_damaged_while_running_exits_non_zero(
    tmp_path: Path,
) -> None:
    path = tmp_path / "loom.db"
    url = f"sqlite:///{path}"

    async def fill() -> None:
        async with loom.Database(url) as db:
            await db.migrate_up()
            for i in range(200):
                await db.start_workflow_by_name(
                    "cli_Approval", workflow_input={"filler": "y" * 500}, workflow_id=f"wf-{i:03}"
                )

    asyncio.run(fill())
    data = bytearray(path.read_bytes())
    page = 4096
    for start in range(2 * page, len(data), page):  # keep the header page, scramble the rest
        data[start + 8 : start + 100] = b"\xa5" * 92
    path.write_bytes(bytes(data))

    result = loom_cli(*WORKER_ARGS, env=cli_env(url), cwd=tmp_path, timeout=60)
    assert result.returncode != 0
    assert "damaged" in result.stderr and "backup" in result.stderr
    assert result.stderr.count("damaged") <= 3  # reported, not retried over and over
