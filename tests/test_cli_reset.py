"""`loom reset`, `loom cancel|retry|reset` by a filter, `loom gc` and `loom worker --retention`,
driven as an operator drives them: the console script in subprocesses, with two `loom worker`
processes sharing one SQLite file, and bulk starts (``db.start_workflows``) run by both."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

import cli_workflows
import loom
from loom import EventType, WorkflowStatus
from support import eventually_sync
from test_cli import (
    LOOM,
    WorkerProcess,
    assert_one_line_error,
    cli_env,
    ok,
    ok_json,
    with_db,
)
from test_cli import workers as workers  # the fixture: worker processes killed at the end

pytestmark = [pytest.mark.processes, pytest.mark.slow]

WAIT = 40.0  # generous: the machine is shared


def answered(
    *args: str, answer: str, env: dict[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a command that asks for confirmation, answering ``answer`` on its stdin."""
    return subprocess.run(
        [str(LOOM), *args],
        env=env,
        cwd=cwd,
        input=answer,
        capture_output=True,
        text=True,
        timeout=60,
    )


def statuses(url: str, ids: list[str]) -> dict[str, str | None]:
    async def read(db: loom.Database) -> dict[str, str | None]:
        found = {}
        for wid in ids:
            record = await db.find_workflow(wid)
            found[wid] = None if record is None else record.status.value
        return found

    return with_db(url, read)


def all_are(url: str, ids: list[str], status: str | None) -> bool:
    return set(statuses(url, ids).values()) == {status}


def events_of(url: str, wid: str) -> list[loom.Event]:
    return with_db(url, lambda db: db.get_workflow(wid).events())


def held_in_step(url: str, wid: str, step: str) -> bool:
    async def read(db: loom.Database) -> bool:
        record = await db.find_workflow(wid)
        if record is None or not record.leased:
            return False
        started = [e for e in await db.history(wid) if e.type is EventType.STEP_STARTED]
        return bool(started) and started[-1].payload["step"] == step

    return with_db(url, read)


def parked(url: str, ids: list[str]) -> bool:
    async def read(db: loom.Database) -> bool:
        for wid in ids:
            record = await db.find_workflow(wid)
            if record is None or record.leased or record.status is not WorkflowStatus.RUNNING:
                return False
            if record.current_step != "await_approval":
                return False
        return True

    return with_db(url, read)


@pytest.fixture
def setup(tmp_path: Path) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = cli_env(url)
    ok(subprocess.run([str(LOOM), "init"], env=env, cwd=tmp_path, capture_output=True, text=True))
    return {"url": url, "env": env, "cwd": tmp_path}


def start_workers(
    setup: dict[str, Any], workers: list[WorkerProcess], *extra: str, n: int = 2
) -> list[WorkerProcess]:
    started = []
    for _ in range(n):
        log = setup["cwd"] / f"worker-{len(workers)}.log"
        w = WorkerProcess(setup["env"], setup["cwd"], log, "--lease-seconds", "2", *extra)
        workers.append(w)
        started.append(w)
    for w in started:
        w.wait_output("retention:", timeout=WAIT)
    return started


def stop(started: list[WorkerProcess]) -> None:
    for w in started:
        w.signal(signal.SIGTERM)
    for w in started:
        assert w.wait(timeout=WAIT) == 0, w.output()


def test_reset_of_a_workflow_another_worker_process_holds(
    setup: dict[str, Any], workers: list[WorkerProcess]
) -> None:
    url, env, cwd = setup["url"], setup["env"], setup["cwd"]
    flag = cwd / "flag"
    start_workers(setup, workers)
    assert "retention: keeps every finished workflow" in workers[0].output()
    ok(
        subprocess.run(
            [
                str(LOOM),
                "start",
                "cli_Beating",
                "--id",
                "beat",
                "--input",
                json.dumps({"flag": str(flag)}),
                "-m",
                "cli_workflows",
            ],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
    )
    eventually_sync(lambda: held_in_step(url, "beat", "crunch"), WAIT, what="crunch running")

    bad = subprocess.run(
        [str(LOOM), "reset", "beat", "--to-step", "crunsh", "-m", "cli_workflows"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert_one_line_error(bad, "'crunsh'", "'crunch'")
    before = events_of(url, "beat")

    shown = ok_json(
        subprocess.run(
            [
                str(LOOM),
                "reset",
                "beat",
                "--to-step",
                "crunch",
                "--reason",
                "stuck",
                "--json",
                "-m",
                "cli_workflows",
            ],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
    )
    assert shown == {"workflow_id": "beat", "outcome": "REQUESTED", "to_step": "crunch"}
    # The holder learns of it at a lease renewal, stops its activity, and the reset is written.
    eventually_sync(
        lambda: any(e.type is EventType.WORKFLOW_RESET for e in events_of(url, "beat")),
        WAIT,
        what="the reset written",
    )
    flag.write_text("go")
    eventually_sync(lambda: all_are(url, ["beat"], "COMPLETED"), WAIT, what="beat completed")
    history = events_of(url, "beat")
    assert history[: len(before)] == before  # the history is kept; the reset is appended
    [reset] = [e for e in history if e.type is EventType.WORKFLOW_RESET]
    assert reset.payload == {"to_step": "crunch", "index": 0, "reason": "stuck"}
    text = ok(
        subprocess.run(
            [str(LOOM), "inspect", "beat", "--events"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
    )
    assert "WORKFLOW_RESET" in text
    stop(workers)


def test_bulk_cancel_retry_and_reset_by_filter_with_two_worker_processes(
    setup: dict[str, Any], workers: list[WorkerProcess]
) -> None:
    url, env, cwd = setup["url"], setup["env"], setup["cwd"]
    counter, flag = cwd / "counter", cwd / "flag"
    flaky = [f"flaky-{n}" for n in range(4)]
    approvals = [f"appr-{n}" for n in range(3)]

    async def begin(db: loom.Database) -> None:
        await db.start_workflows(
            [
                loom.StartRequest(
                    cli_workflows.Flaky, {"counter": str(counter), "flag": str(flag)}, wid
                )
                for wid in flaky
            ]
            + [loom.StartRequest(cli_workflows.Approval, {"who": "ann"}, wid) for wid in approvals]
        )

    with_db(url, begin)
    start_workers(setup, workers)
    eventually_sync(lambda: all_are(url, flaky, "FAILED"), WAIT, what="the flaky ones failed")
    eventually_sync(lambda: parked(url, approvals), WAIT, what="the approvals waiting")

    # A count first, and nothing done without a yes.
    refused = answered(
        "cancel", "--status", "RUNNING", "--name", "cli_Approval", answer="n\n", env=env, cwd=cwd
    )
    assert refused.returncode != 0
    assert "cancel 3 workflows (status RUNNING, name cli_Approval)?" in refused.stderr
    assert "nothing was canceled" in refused.stderr
    assert all_are(url, approvals, "RUNNING")
    nothing = answered("retry", "--status", "FAILED", answer="", env=env, cwd=cwd)  # EOF
    assert nothing.returncode != 0 and all_are(url, flaky, "FAILED")

    for args, message in (
        (("cancel", "appr-0", "--status", "RUNNING"), "not both"),
        (("cancel",), "give the WORKFLOW_ID"),
        (("retry", "--status", "RUNNING"), "FAILED workflows only"),
        (("cancel", "--since", "soon"), "--since takes a duration"),
        (("cancel", "--status", "SLEEPING"), "unknown status"),
        (("reset", "--status", "FAILED"), "--to-step"),
    ):
        result = subprocess.run(
            [str(LOOM), *args], env=env, cwd=cwd, capture_output=True, text=True
        )
        assert_one_line_error(result, message)
        assert result.returncode == 2, (args, result.returncode)  # a usage error, every one

    canceled = ok_json(
        answered(
            "cancel",
            "--status",
            "RUNNING",
            "--name",
            "cli_Approval",
            "--since",
            "1h",
            "--json",
            answer="y\n",
            env=env,
            cwd=cwd,
        )
    )
    assert (canceled["matched"], canceled["succeeded"], canceled["failed"]) == (3, 3, 0)
    assert all_are(url, approvals, "CANCELED")

    flag.write_text("ready")
    retried = ok(answered("retry", "--status", "FAILED", "--yes", answer="", env=env, cwd=cwd))
    assert "retried 4 of 4 workflow(s)" in retried
    eventually_sync(lambda: all_are(url, flaky, "COMPLETED"), WAIT, what="retried ones done")
    assert len(counter.read_text().splitlines()) == 4  # "count" was not run again

    # A reset of any status: the completed flaky ones from "check", the canceled approvals from
    # "await_approval" (their first step is kept).
    reset = ok_json(
        answered(
            "reset",
            "--name",
            "cli_Flaky",
            "--to-step",
            "check",
            "--yes",
            "--json",
            "-m",
            "cli_workflows",
            answer="",
            env=env,
            cwd=cwd,
        )
    )
    assert reset["succeeded"] == 4
    partly = answered(
        "reset",
        "--status",
        "CANCELED",
        "--to-step",
        "await_approval",
        "--json",
        "-m",
        "cli_workflows",
        answer="y\n",
        env=env,
        cwd=cwd,
    )
    assert ok_json(partly)["succeeded"] == 3
    eventually_sync(lambda: all_are(url, flaky, "COMPLETED"), WAIT, what="reset ones done")
    assert len(counter.read_text().splitlines()) == 4
    eventually_sync(lambda: parked(url, approvals), WAIT, what="the approvals waiting again")
    # A bulk reset to a step some of them lack reports each failure, exit status 1.
    mixed = subprocess.run(
        [str(LOOM), "reset", "--since", "1h", "--to-step", "check", "--yes", "-m", "cli_workflows"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    assert mixed.returncode == 1, mixed.stderr
    assert "reset 4 of 7 workflow(s); 3 failed" in mixed.stdout
    assert "UnknownStepError" in mixed.stdout and "appr-0" in mixed.stdout
    for wid in flaky:
        kinds = [e.type for e in events_of(url, wid)]
        assert kinds.count(EventType.WORKFLOW_RESET) == 2
    stop(workers)


def test_bulk_start_gc_and_retention_with_two_worker_processes(
    setup: dict[str, Any], workers: list[WorkerProcess]
) -> None:
    url, env, cwd = setup["url"], setup["env"], setup["cwd"]
    counter, flag = cwd / "counter", cwd / "flag"
    flag.write_text("ready")
    done = [f"bulk-{n:03d}" for n in range(200)]
    failing = [f"bad-{n}" for n in range(5)]

    async def begin(db: loom.Database) -> None:
        await db.start_workflows(
            [
                loom.StartRequest(
                    cli_workflows.Flaky, {"counter": str(counter), "flag": str(flag)}, wid
                )
                for wid in done
            ]
            + [
                loom.StartRequest(
                    cli_workflows.Flaky, {"counter": str(counter), "flag": str(cwd / "no")}, wid
                )
                for wid in failing
            ]
            + [loom.StartRequest(cli_workflows.Approval, {"who": "bo"}, "open")]
        )

    with_db(url, begin)
    first = start_workers(setup, workers)
    eventually_sync(lambda: all_are(url, done, "COMPLETED"), WAIT, what="200 completed")
    eventually_sync(lambda: all_are(url, failing, "FAILED"), WAIT, what="5 failed")
    stop(first)
    # Each ran once, by one of the two processes: one "count" each.
    assert len(counter.read_text().splitlines()) == 205
    # ... and each ended once, counted by the process that ran it.
    ended = [re.search(r"stopped: completed (\d+), failed (\d+)", w.output()) for w in first]
    assert all(ended), [w.output() for w in first]
    assert sum(int(m.group(1)) for m in ended if m) == 200
    assert sum(int(m.group(2)) for m in ended if m) == 5

    # The five failed at different moments: a sweep deletes those already a second old, the
    # next ones the rest; each once.
    deleted: list[int] = []

    def sweep() -> bool:
        done_now = subprocess.run(
            [str(LOOM), "gc", "--older-than", "1s", "--status", "FAILED", "--json", "--yes"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        )
        deleted.append(json.loads(ok(done_now))["deleted"])
        return sum(deleted) >= 5

    eventually_sync(sweep, WAIT, what="the failed ones deleted", interval=0.5)
    assert sum(deleted) == 5
    assert all(status is None for status in statuses(url, failing).values())
    asked = answered("gc", "--older-than", "1s", answer="n\n", env=env, cwd=cwd)
    assert asked.returncode != 0
    assert "delete 200 finished workflows (COMPLETED/FAILED/CANCELED)" in asked.stderr
    assert "nothing was deleted" in asked.stderr
    assert_one_line_error(
        subprocess.run(
            [str(LOOM), "gc", "--older-than", "0s"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        ),
        "--older-than",
    )
    assert_one_line_error(
        subprocess.run(
            [str(LOOM), "gc", "--older-than", "1d", "--status", "RUNNING"],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
        ),
        "RUNNING",
    )

    # Two workers with retention sweep at once: each finished workflow is deleted once, the
    # running one is kept.
    second = start_workers(setup, workers, "--retention", "1s")
    assert "retention: deletes the finished workflows that ended more than 1s ago" in (
        second[0].output()
    )
    eventually_sync(lambda: all_are(url, done, None), WAIT, what="the completed ones deleted")
    assert statuses(url, ["open"]) == {"open": "RUNNING"}
    stop(second)
    deleted = 0
    for w in second:
        for line in w.output().splitlines():
            if "retention deleted" in line:
                deleted += int(line.split("retention deleted ")[1].split()[0])
    assert deleted == 200

    async def remaining(db: loom.Database) -> list[str]:
        return [w.workflow_id for w in await db.list_workflows(limit=-1)]

    assert with_db(url, remaining) == ["open"]


def test_gc_deletes_no_workflow_that_ended_after_its_count(setup: dict[str, Any]) -> None:
    """The age is measured from the count the operator confirmed: a workflow that ends while
    the question waits, and is old enough by the answer, was not in the number asked about, and
    stays."""
    url, env, cwd = setup["url"], setup["env"], setup["cwd"]

    def ended_now(wid: str) -> None:
        async def end(db: loom.Database) -> None:
            handle = await db.start_workflow(
                cli_workflows.Approval, workflow_input={"who": "bo"}, workflow_id=wid
            )
            await handle.cancel("not needed")

        with_db(url, end)

    def older_than_a_second(db: loom.Database) -> Any:
        return db.count_finished(1)

    ended_now("old")
    eventually_sync(lambda: with_db(url, older_than_a_second) == 1, WAIT, what="old aged")
    gc = subprocess.Popen(
        [str(LOOM), "gc", "--older-than", "1s"],
        env=env,
        cwd=cwd,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert gc.stderr is not None and gc.stdin is not None
        question = ""
        while "[y/N]" not in question:  # the question ends without a newline
            chunk = os.read(gc.stderr.fileno(), 1024).decode()
            assert chunk, f"gc ended before asking: {question}"
            question += chunk
        assert "delete 1 finished workflows" in question
        ended_now("young")
        eventually_sync(lambda: with_db(url, older_than_a_second) == 2, WAIT, what="young aged")
        out, _ = gc.communicate("y\n", timeout=WAIT)
    finally:
        if gc.poll() is None:
            gc.kill()
    assert gc.returncode == 0, out
    assert "deleted 1 finished workflows" in out
    assert statuses(url, ["old", "young"]) == {"old": None, "young": "CANCELED"}
