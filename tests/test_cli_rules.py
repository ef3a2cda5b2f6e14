"""What the `loom` command prints is safe: control characters in user data are escaped,
credentials are masked, and bad ids, numbers and JSON are one-line errors (real subprocesses)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import cli_workflows
import loom
from loom.core.history import Event, EventType
from loom.store.base import NewWorkflow
from support import pg
from test_cli import LOOM, assert_one_line_error, cli_env, loom_cli, ok

HOSTILE = "\x1b]0;owned\x07\x1b[31m\x9b2J\u202e"
RAW_CONTROLS = ("\x1b", "\x07", "\x9b", "\u202e")


@pytest.fixture
def ready_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    ok(loom_cli("init", env=cli_env(url), cwd=tmp_path))
    return url


def no_raw_controls(text: str) -> None:
    for char in RAW_CONTROLS:
        assert char not in text, repr(text)


async def _hostile_data(url: str, tmp_path: Path) -> None:
    async with loom.Database(url) as db:
        handle = await db.start_workflow(
            cli_workflows.Flaky,
            workflow_input={"counter": str(tmp_path / "calls"), "flag": f"/nope{HOSTILE}"},
            workflow_id="esc-1",
        )
        while await loom.run_once(db):
            pass
        assert await handle.status() is loom.WorkflowStatus.FAILED
        # A row written before ids were checked: its id and name hold escape sequences.
        now = time.time()
        legacy = f"old{HOSTILE}"
        first = Event(
            1,
            EventType.WORKFLOW_STARTED,
            {"name": legacy, "version": "1", "input": 1, "state": {}},
            now,
        )
        await db.store.create_workflow(NewWorkflow(legacy, legacy, "1", 1, {}, now), first)


@pytest.mark.processes
@pytest.mark.slow
def test_control_characters_in_user_data_are_escaped(tmp_path: Path, ready_db: str) -> None:
    asyncio.run(_hostile_data(ready_db, tmp_path))
    env = cli_env(ready_db)
    listed = ok(loom_cli("list", env=env, cwd=tmp_path))
    no_raw_controls(listed)
    assert "old\\x1b]0;owned\\x07" in listed
    listed_json = ok(loom_cli("list", "--json", env=env, cwd=tmp_path))
    no_raw_controls(listed_json)
    assert {row["workflow_id"] for row in json.loads(listed_json)} == {"esc-1", f"old{HOSTILE}"}
    shown = ok(loom_cli("inspect", "esc-1", "--events", "--traceback", env=env, cwd=tmp_path))
    no_raw_controls(shown)
    assert "flag file /nope\\x1b]0;owned" in shown
    shown_json = ok(loom_cli("inspect", "esc-1", "--events", "--json", env=env, cwd=tmp_path))
    no_raw_controls(shown_json)
    assert json.loads(shown_json)["input"]["flag"] == f"/nope{HOSTILE}"
    # An error message quoting user data is escaped too.
    refused = loom_cli("retry", "esc-1\x1b[2J", env=env, cwd=tmp_path)
    no_raw_controls(refused.stderr)
    assert_one_line_error(refused, "control character")


@pytest.mark.processes
@pytest.mark.slow
def test_bad_ids_and_names_are_one_line_errors(tmp_path: Path, ready_db: str) -> None:
    env = cli_env(ready_db, LOOM_MODULES="cli_workflows")
    long_id = "x" * 100_000
    line = assert_one_line_error(
        loom_cli("start", "cli_Pipeline", "--id", long_id, env=env, cwd=tmp_path), "100000", "200"
    )
    assert len(line) < 300
    for args in (
        ("inspect", "a\x01b"),
        ("signal", "a\tb", "go"),
        ("signal", "some-id", "go\x7f"),
        ("cancel", "x" * 201),
        ("start", "cli_Pipeline\x1b"),
        ("list", "--name", "a\x85"),
    ):
        assert_one_line_error(loom_cli(*args, env=env, cwd=tmp_path))
    assert ok(loom_cli("list", "--json", env=env, cwd=tmp_path)).strip() == "[]"


@pytest.mark.processes
@pytest.mark.slow
def test_numbers_and_json_out_of_range_are_one_line_errors(tmp_path: Path, ready_db: str) -> None:
    env = cli_env(ready_db, LOOM_MODULES="cli_workflows")
    for args, fragment in (
        (("list", "--limit", "99999999999999999999"), "--limit"),
        (("list", "--limit", "0"), "--limit"),
        (("worker", "--workers", "99999999999999999999"), "--workers"),
        (("worker", "--lease-seconds", "1e300"), "--lease-seconds"),
        (("web", "--port", "70000"), "--port"),
        (("web", "--max-payload", "0"), "--max-payload"),
        (("start", "cli_Pipeline", "--input", "NaN"), "NaN"),
        (("start", "cli_Pipeline", "--input", '{"a": -Infinity}'), "Infinity"),
        (("start", "cli_Pipeline", "--input", "1e400"), "1e400"),
        (("signal", "w", "go", "--payload", "[Infinity]"), "Infinity"),
    ):
        assert_one_line_error(loom_cli(*args, env=env, cwd=tmp_path), fragment)
    assert ok(loom_cli("list", "--json", env=env, cwd=tmp_path)).strip() == "[]"


# -- credentials -------------------------------------------------------------------------------


def _with_password(url: str, password: str) -> str:
    scheme, rest = url.split("://", 1)
    user, host = rest.split("@", 1)
    return f"{scheme}://{user.split(':')[0]}:{password}@{host}"


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.postgres
def test_init_and_worker_never_print_the_database_password(tmp_path: Path) -> None:
    pg.require_pg()
    url = _with_password(pg.create_database(), "hunter2-secret")  # trust: any password works
    env = cli_env(url, LOOM_MODULES="cli_workflows")
    init = loom_cli("init", env=env, cwd=tmp_path)
    out = ok(init)
    assert "hunter2" not in out + init.stderr
    assert ":***@" in out
    process = subprocess.Popen(
        [str(LOOM), "worker", "--poll-interval", "0.05"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "ready on" in line:
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ready.wait(30), "".join(lines)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=30)
        reader.join(10)
    logged = "".join(lines) + stdout
    assert "hunter2" not in logged
    assert ":***@" in logged
    unreachable = _with_password("postgresql://loom@127.0.0.1:1/none", "hunter2-secret")
    failed = loom_cli("list", "-d", unreachable, env=cli_env(None), cwd=tmp_path)
    assert failed.returncode != 0
    assert "hunter2" not in failed.stdout + failed.stderr


def test_one_helper_masks_every_spelling_of_a_password() -> None:
    from loom.masking import mask_credentials
    from loom.transfer import display_url

    for text, shown in (
        ("postgresql://loom:s3cret@db:5432/loom", "postgresql://loom:***@db:5432/loom"),
        ("postgres://:s3cret@db/loom", "postgres://:***@db/loom"),
        (
            "error at postgresql://u:p@ss%40w0rd@db/x: refused",
            "error at postgresql://u:***@db/x: refused",
        ),
        ("host=db user=loom password=s3cret dbname=x", "host=db user=loom password=*** dbname=x"),
        ("sqlite:///data/loom.db", "sqlite:///data/loom.db"),
        ("postgresql://loom@db/loom", "postgresql://loom@db/loom"),
    ):
        assert mask_credentials(text) == shown
    assert display_url("postgresql://loom:s3cret@db/loom") == "postgresql://loom:***@db/loom"
