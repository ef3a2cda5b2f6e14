"""`loom schedule ...`, driven as an operator drives it: the real console script in
subprocesses on one SQLite file, its output checked against what the database holds."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from loom.schedule_spec import zone
from test_cli import assert_one_line_error, cli_env, loom_cli, ok, ok_json, with_db

pytestmark = [pytest.mark.processes, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parent
M = ("-m", "schedule_workflows")

DECLARED = """
import loom
import schedule_workflows

loom.schedule("declared-tick", schedule_workflows.Tick, every="1h", input={"from": "code"})
"""


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = cli_env(url, COLUMNS="250")  # one row a line, whatever the terminal of the test
    ok(loom_cli("init", env=env, cwd=tmp_path))

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return loom_cli("schedule", *args, env=env, cwd=tmp_path)

    call.url = url  # type: ignore[attr-defined]
    return call


def test_create_list_describe_pause_resume_trigger_delete(cli: Any) -> None:
    created = ok_json(
        cli(
            "create", "nightly", "--workflow", "sched_Tick", "--cron", "0 3 * * *",
            "--timezone", "Europe/Paris", "--input", '{"report": "sales"}',
            "--overlap", "buffer_one", "--catch-up", "all", "--catch-up-limit", "3",
            *M, "--json",
        )
    )  # fmt: skip
    assert created["spec"] == "cron 0 3 * * * (Europe/Paris)"
    assert (created["overlap"], created["catch_up"], created["catch_up_limit"]) == (
        "buffer_one",
        "all",
        3,
    )
    out = ok(cli("create", "tick", "-w", "sched_Tick", "--every", "90s", *M))
    assert out.startswith("created schedule tick: sched_Tick, every 1m30s; next run ")

    table = ok(cli("list"))
    assert [line.split()[0] for line in table.splitlines()] == ["NAME", "nightly", "tick"]
    assert "every 1m30s" in table and "active" in table
    listed = ok_json(cli("list", "--json"))
    assert [s["name"] for s in listed] == ["nightly", "tick"]

    described = ok_json(cli("describe", "nightly", "--json"))
    assert len(described["upcoming"]) == 5 and described["recent_runs"] == []
    first = datetime.fromisoformat(described["upcoming"][0])
    assert first.astimezone(zone("Europe/Paris")).hour == 3
    text = ok(cli("describe", "nightly"))
    assert "Schedule nightly  active" in text and "Next runs" in text and "none yet" in text

    assert ok(cli("pause", "tick")).strip() == "paused schedule tick"
    assert "paused" in ok(cli("list"))
    assert "none while paused" in ok(cli("describe", "tick"))
    triggered = ok_json(cli("trigger", "tick", *M, "--json"))
    assert triggered["workflow_id"].startswith("schedule:tick:")
    described = ok_json(cli("describe", "tick", "--json"))
    assert [r["workflow_id"] for r in described["recent_runs"]] == [triggered["workflow_id"]]
    assert described["last_run_id"] == triggered["workflow_id"]
    assert ok(cli("resume", "tick")).startswith("resumed schedule tick; next run ")
    assert ok(cli("delete", "tick")).strip() == "deleted schedule tick"
    assert [s["name"] for s in ok_json(cli("list", "--json"))] == ["nightly"]
    record = with_db(cli.url, lambda db: db.get_workflow(triggered["workflow_id"]).describe())
    assert record.name == "sched_Tick"  # the run stays


def test_every_mistake_is_one_line(cli: Any) -> None:
    ok(cli("create", "taken", "-w", "sched_Tick", "--every", "1h", *M))
    cases = [
        (("create", "taken", "-w", "sched_Tick", "--every", "1h", *M), "exists already"),
        (("create", "x", "-w", "sched_Nope", "--every", "1h", *M), "'sched_Nope'"),
        (("create", "x", "-w", "sched_Tick", "--cron", "61 * * * *", *M), "not valid"),
        (("create", "x", "-w", "sched_Tick", "--cron", "0 0 31 2 *", *M), "never fires"),
        (("create", "x", "-w", "sched_Tick", "--cron", "0 9 * * *", "--tz", "Mars/Base", *M),
         "unknown timezone 'Mars/Base'"),
        (("create", "x", "-w", "sched_Tick", "--every", "soon", *M), "not a number of s"),
        (("create", "x", "-w", "sched_Tick", "--every", "1h", "--overlap", "maybe", *M),
         "unknown overlap policy"),
        (("create", "x", "-w", "sched_Tick", "--every", "1h", "--catch-up", "no", *M),
         "unknown catch-up policy"),
        (("create", "x", "-w", "sched_Tick", "--every", "1h", "--input", "{nope", *M),
         "--input is not valid JSON"),
        (("create", "x", "-w", "sched_Tick", "--every", "1h", "--input", "NaN", *M),
         "--input is not valid JSON"),
        (("create", "a:b", "-w", "sched_Tick", "--every", "1h", *M), "':' or '/'"),
        (("create", "x", "-w", "sched_Tick", *M), "exactly one of --cron and --every"),
        (("create", "x", "-w", "sched_Tick", "--every", "1h", "--cron", "* * * * *", *M),
         "exactly one of --cron and --every"),
        (("describe", "missing"), "no schedule named 'missing'"),
        (("pause", "missing"), "no schedule named 'missing'"),
        (("resume", "missing"), "no schedule named 'missing'"),
        (("delete", "missing"), "no schedule named 'missing'"),
        (("trigger", "missing", *M), "no schedule named 'missing'"),
        (("trigger", "taken", "-m", "json"), "'sched_Tick'"),
        (("describe", "esc\x1b[31m"), "\\x1b"),
    ]  # fmt: skip
    for args, fragment in cases:
        assert_one_line_error(cli(*args), fragment)
    assert [s["name"] for s in ok_json(cli("list", "--json"))] == ["taken"]


def test_sync_writes_the_schedules_a_module_declares(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "declaring.py").write_text(DECLARED)
    synced = ok(cli("sync", "-m", "declaring"))
    assert synced.strip() == "synced schedule declared-tick: sched_Tick, every 1h"
    [info] = ok_json(cli("list", "--json"))
    assert (info["name"], info["input"], info["paused"]) == (
        "declared-tick",
        {"from": "code"},
        False,
    )
    ok(cli("pause", "declared-tick"))
    ok(cli("sync", "-m", "declaring"))
    assert ok_json(cli("list", "--json"))[0]["paused"] is True  # a sync keeps the pause
    none = ok(cli("sync", "-m", "schedule_workflows"))
    assert none.strip().startswith("No schedules are declared")


def test_schedule_help_lists_its_commands() -> None:
    env = cli_env(None)
    shown = subprocess.run(
        [str(Path(sys.executable).parent / "loom"), "schedule", "--help"],
        env=env, capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    for command in ("create", "list", "describe", "pause", "resume", "trigger", "delete", "sync"):
        assert command in shown
