"""The `loom` command, driven as an operator drives it: the real console script in subprocesses.

Workers, starts, reads and actions all run as separate processes on one SQLite file; the tests
check what the commands print (mostly their ``--json``) against what the database holds, read
back through ``loom.Database``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

import cli_workflows
import loom
from loom.store.common import migrations, split_sql
from support import eventually_sync

pytestmark = [pytest.mark.processes, pytest.mark.slow]

T = TypeVar("T")

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"  # the installed console script
WORKER_ARGS = ("worker", "-m", "cli_workflows", "--poll-interval", "0.05")


# -- helpers ---------------------------------------------------------------------------------


def cli_env(db_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    if db_url is not None:
        env["LOOM_DATABASE_URL"] = db_url
    env.update(extra)
    return env


def loom_cli(
    *args: str, env: dict[str, str], cwd: Path, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LOOM), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def ok_json(result: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(ok(result))


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """A failed command: non-zero exit, nothing on stdout, one `error: ...` line on stderr."""
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def with_db(url: str, fn: Callable[[loom.Database], Awaitable[T]]) -> T:
    async def go() -> T:
        async with loom.Database(url) as db:
            return await fn(db)

    return asyncio.run(go())


async def drain(db: loom.Database) -> None:
    """Run, in this process, everything that is ready now."""
    while await loom.run_once(db):
        pass


def file_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def trace_lines(trace_dir: Path) -> list[tuple[str, str, int, int, float]]:
    """(kind, workflow_id, call, pid, time) of every line the traced activity wrote."""
    lines = []
    for log in trace_dir.glob("*.log"):
        for line in log.read_text().splitlines():
            kind, wid, call, pid, at = line.split()
            lines.append((kind, wid, int(call), int(pid), float(at)))
    return lines


class WorkerProcess:
    """A `loom worker` subprocess whose stderr goes to a file the test can poll."""

    def __init__(self, env: dict[str, str], cwd: Path, log: Path, *extra: str) -> None:
        self.log = log
        self._out = log.open("w")
        self.proc = subprocess.Popen(
            [str(LOOM), *WORKER_ARGS, *extra],
            env=env,
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self._out,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return file_text(self.log)

    def wait_output(self, fragment: str, timeout: float = 15) -> None:
        eventually_sync(
            lambda: fragment in self.output() or self.proc.poll() is not None,
            timeout,
            what=f"{fragment!r} from the worker",
        )
        assert fragment in self.output(), self.output()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._out.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Worker processes started by a test; any still alive at the end are killed."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
def ready_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    out = ok(loom_cli("init", env=cli_env(url), cwd=tmp_path))
    assert "created database" in out
    return url


def pipeline_input(trace_dir: Path, pause: float = 0.0) -> dict[str, Any]:
    return {"trace": str(trace_dir), "pause": pause}


# -- the worker process ----------------------------------------------------------------------


START_SCRIPT = """
import asyncio, json, sys
import loom, cli_workflows

async def main():
    workflow_input = json.loads(sys.argv[1])
    async with loom.Database() as db:
        for i in range(int(sys.argv[2]), int(sys.argv[3])):
            await db.start_workflow(
                cli_workflows.Pipeline, workflow_input=workflow_input, workflow_id=f"wf-{i:03d}"
            )

asyncio.run(main())
"""


def test_two_worker_processes_run_200_workflows_once_each_and_stop_on_sigterm(
    tmp_path: Path, ready_db: str, workers: list[WorkerProcess]
) -> None:
    env = cli_env(ready_db)
    trace = tmp_path / "trace"
    trace.mkdir()
    for n in (1, 2):
        workers.append(WorkerProcess(env, tmp_path, tmp_path / f"worker{n}.log", "--workers", "4"))
    for worker in workers:
        worker.wait_output("ready on")
    payload = json.dumps(pipeline_input(trace, pause=0.01))
    for i in range(3):
        ok(
            loom_cli(
                "start",
                "cli_Pipeline",
                "--input",
                payload,
                "--id",
                f"wf-{i:03d}",
                "-m",
                "cli_workflows",
                env=env,
                cwd=tmp_path,
            )
        )
    starter = subprocess.run(
        [sys.executable, "-c", START_SCRIPT, payload, "3", "200"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert starter.returncode == 0, starter.stderr

    async def completed(db: loom.Database) -> int:
        return (await db.stats()).by_status.get("COMPLETED", 0)

    eventually_sync(lambda: with_db(ready_db, completed) == 200, 40, what="200 completed workflows")
    for worker in workers:
        worker.signal(signal.SIGTERM)
    for worker in workers:
        assert worker.wait(timeout=15) == 0, worker.output()
        assert "SIGTERM: stopping" in worker.output()
        assert "stopped: completed" in worker.output()

    async def histories(db: loom.Database) -> dict[str, list[loom.Event]]:
        summaries = await db.list_workflows(limit=1000)
        return {s.workflow_id: await db.get_workflow(s.workflow_id).events() for s in summaries}

    stored = with_db(ready_db, histories)
    assert sorted(stored) == [f"wf-{i:03d}" for i in range(200)]
    seq_of_call: dict[tuple[str, int], int] = {}
    for wid, events in stored.items():
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), wid
        scheduled = [e.seq for e in events if e.type is loom.EventType.ACTIVITY_SCHEDULED]
        completions = [
            e.payload["scheduled"] for e in events if e.type is loom.EventType.ACTIVITY_COMPLETED
        ]
        assert len(scheduled) == 3
        assert sorted(completions) == scheduled, wid  # exactly one completion per activity
        assert events[-1].type is loom.EventType.WORKFLOW_COMPLETED
        assert events[-1].payload["state"] == {"prepared": 1, "worked": [2, 3], "done": True}
        for e in events:
            if e.type is loom.EventType.ACTIVITY_SCHEDULED:
                seq_of_call[(wid, e.payload["args"][2])] = e.seq

    # Every execution of an activity, from the traces the two processes wrote.
    runs: dict[tuple[str, int], list[tuple[float, float]]] = {}
    open_runs: dict[tuple[int, str, int], list[float]] = {}
    pids = set()
    for kind, wid, call, pid, at in sorted(trace_lines(trace), key=lambda line: line[4]):
        pids.add(pid)
        if kind == "start":
            open_runs.setdefault((pid, wid, call), []).append(at)
        else:
            started = open_runs[(pid, wid, call)].pop(0)
            runs.setdefault((wid, seq_of_call[(wid, call)]), []).append((started, at))
    assert not any(open_runs.values()), "an activity started but never ended"
    assert set(runs) == {(wid, seq) for (wid, _), seq in seq_of_call.items()}
    for key, intervals in runs.items():
        intervals.sort()
        for (_, end), (next_start, _) in itertools.pairwise(intervals):
            assert next_start >= end, f"two executions of {key} overlapped"
    assert pids == {w.pid for w in workers}, "both worker processes should have run activities"


def test_sigterm_lets_the_activity_in_flight_finish_then_releases_the_workflow(
    tmp_path: Path, ready_db: str, workers: list[WorkerProcess]
) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    with_db(
        ready_db,
        lambda db: db.start_workflow(
            cli_workflows.Slow, workflow_input={"trace": str(trace), "pause": 0.6}, workflow_id="s1"
        ),
    )
    worker = WorkerProcess(cli_env(ready_db), tmp_path, tmp_path / "worker.log")
    workers.append(worker)
    eventually_sync(
        lambda: any(line[0] == "start" for line in trace_lines(trace)), 15, what="the activity"
    )
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=8) == 0, worker.output()
    assert "SIGTERM: stopping; finishing 1 workflow(s) in flight" in worker.output()

    async def after_stop(db: loom.Database) -> tuple[Any, list[loom.Event]]:
        handle = db.get_workflow("s1")
        return await handle.describe(), await handle.events()

    record, events = with_db(ready_db, after_stop)
    kinds = [e.type for e in events]
    # The running activity was allowed to finish and its result recorded; the next one was not
    # started, and the workflow went back to the pool instead of staying leased.
    assert kinds.count(loom.EventType.ACTIVITY_COMPLETED) == 1
    assert [line[0] for line in trace_lines(trace)] == ["start", "end"]
    assert record.status is loom.WorkflowStatus.RUNNING
    assert not record.leased

    async def finish(db: loom.Database) -> Any:
        await drain(db)  # claims only what is ready now: a held lease would block it for 10 s
        return await db.get_workflow("s1").result(timeout=5)

    assert with_db(ready_db, finish) == {"finished": True}


def test_a_second_signal_exits_at_once_and_leaves_the_lease_to_expire(
    tmp_path: Path, ready_db: str, workers: list[WorkerProcess]
) -> None:
    trace = tmp_path / "trace"
    trace.mkdir()
    with_db(
        ready_db,
        lambda db: db.start_workflow(
            cli_workflows.Slow, workflow_input={"trace": str(trace), "pause": 60}, workflow_id="s2"
        ),
    )
    worker = WorkerProcess(cli_env(ready_db), tmp_path, tmp_path / "worker.log")
    workers.append(worker)
    eventually_sync(lambda: trace_lines(trace), 15, what="the activity to start")
    worker.signal(signal.SIGINT)
    worker.wait_output("SIGINT: stopping")
    began = time.monotonic()
    worker.signal(signal.SIGINT)
    assert worker.wait(timeout=5) != 0
    assert time.monotonic() - began < 3
    assert "SIGINT again: exiting now" in worker.output()

    async def record(db: loom.Database) -> Any:
        return await db.get_workflow("s2").describe()

    held = with_db(ready_db, record)
    assert held.status is loom.WorkflowStatus.RUNNING
    assert held.leased and held.ready_at > time.time()  # left for the lease to expire


def test_worker_reports_an_unimportable_module_or_no_workflows_in_one_line(
    tmp_path: Path, ready_db: str
) -> None:
    env = cli_env(ready_db)
    bad = loom_cli("worker", "-m", "cli_no_such_module", env=env, cwd=tmp_path)
    assert_one_line_error(bad, "cannot import module 'cli_no_such_module'", "ModuleNotFoundError")
    (tmp_path / "cli_broken_module.py").write_text("raise RuntimeError('boom at import')\n")
    broken = loom_cli("worker", "-m", "cli_broken_module", env=env, cwd=tmp_path)
    assert_one_line_error(broken, "cli_broken_module", "RuntimeError: boom at import")
    none = loom_cli("worker", env=env, cwd=tmp_path)
    assert_one_line_error(none, "no workflows are registered")


# -- finding workflow modules ----------------------------------------------------------------


LOCAL_MODULE = """
import loom


@loom.workflow(name="cli_Local")
class Local(loom.Workflow[dict, dict]):
    @loom.step
    async def only(self, ctx):
        await ctx.state.set("n", ctx.input["n"])
"""


def test_start_finds_modules_in_pyproject_or_loom_modules_with_the_cwd_importable(
    tmp_path: Path, ready_db: str
) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    (project / "cli_local_flow.py").write_text(LOCAL_MODULE)
    (project / "pyproject.toml").write_text('[tool.loom]\nmodules = ["cli_local_flow"]\n')
    env = cli_env(ready_db)

    out = ok(
        loom_cli("start", "cli_Local", "--input", '{"n": 1}', "--id", "l1", env=env, cwd=project)
    )
    assert "started cli_Local workflow l1" in out
    again = ok_json(
        loom_cli(
            "start",
            "cli_Local",
            "--input",
            '{"n": 1}',
            "--id",
            "l1",
            "--json",
            env=env,
            cwd=project,
        )
    )
    assert again == {"workflow_id": "l1", "name": "cli_Local", "created": False}

    env_modules = cli_env(ready_db, LOOM_MODULES="cli_local_flow", PYTHONPATH=str(project))
    started = ok_json(
        loom_cli(
            "start", "cli_Local", "--input", '{"n": 2}', "--json", env=env_modules, cwd=elsewhere
        )
    )
    assert started["created"] is True

    missing = loom_cli("start", "cli_Local", "--input", '{"n": 3}', env=env, cwd=elsewhere)
    assert_one_line_error(missing, "no workflow class named 'cli_Local'")

    async def stored(db: loom.Database) -> dict[str, Any]:
        return {
            s.workflow_id: await db.get_workflow(s.workflow_id).describe()
            for s in await db.list_workflows()
        }

    records = with_db(ready_db, stored)
    assert set(records) == {"l1", started["workflow_id"]}
    assert records["l1"].name == "cli_Local" and records["l1"].input == {"n": 1}
    assert records[started["workflow_id"]].input == {"n": 2}


def test_init_creates_the_default_database_once_and_commands_refuse_an_uninitialized_one(
    tmp_path: Path,
) -> None:
    env = cli_env(None)
    before = loom_cli("list", "-d", "other.db", env=env, cwd=tmp_path)
    assert_one_line_error(before, "no database at", "loom init")
    assert not (tmp_path / "other.db").exists()  # a read command creates nothing

    first = ok(loom_cli("init", env=env, cwd=tmp_path))
    assert first.strip().startswith("created database sqlite:///loom.db")
    assert (tmp_path / "loom.db").exists()
    second = ok(loom_cli("init", env=env, cwd=tmp_path))
    assert "is up to date" in second
    assert ok_json(loom_cli("list", "--json", env=env, cwd=tmp_path)) == []

    ok(loom_cli("init", "-d", "other.db", env=env, cwd=tmp_path))
    assert ok_json(loom_cli("stats", "--json", "-d", "other.db", env=env, cwd=tmp_path))[
        "by_status"
    ] == {"RUNNING": 0, "COMPLETED": 0, "FAILED": 0, "CANCELED": 0}


def test_commands_refuse_a_database_older_than_the_code_until_init_upgrades_it(
    tmp_path: Path,
) -> None:
    """A database of an earlier release (its schema lacks the newest migration): a worker would
    fail its writes, so every command says to run ``loom init``, which upgrades it."""
    every = migrations("sqlite")
    conn = sqlite3.connect(tmp_path / "old.db")
    conn.execute(
        "CREATE TABLE loom_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
        "applied_at DOUBLE PRECISION NOT NULL)"
    )
    for version, name, sql in every[:-1]:
        for statement in split_sql(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO loom_migrations VALUES (?, ?, 0)", (version, name))
    conn.commit()
    conn.close()
    env = cli_env(None)
    old, latest = every[-2][0], every[-1][0]
    for command in (("list",), ("worker", "-m", "cli_workflows"), ("inspect", "x")):
        refused = loom_cli(*command, "-d", "old.db", env=env, cwd=tmp_path)
        assert_one_line_error(
            refused, f"schema version {old}, older than this Loom's ({latest})", "loom init"
        )
    upgraded = ok(loom_cli("init", "-d", "old.db", env=env, cwd=tmp_path))
    assert f"from schema version {old} to {latest}" in upgraded and every[-1][1] in upgraded
    assert ok_json(loom_cli("list", "--json", "-d", "old.db", env=env, cwd=tmp_path)) == []


# -- reading: list, inspect, stats -----------------------------------------------------------


@pytest.fixture
def populated(tmp_path: Path, ready_db: str) -> dict[str, Any]:
    """Two completed pipelines, one failed flaky workflow, one approval waiting for a signal."""
    trace = tmp_path / "trace"
    trace.mkdir()

    async def setup(db: loom.Database) -> None:
        for wid in ("p1", "p2"):
            await db.start_workflow(
                cli_workflows.Pipeline, workflow_input=pipeline_input(trace), workflow_id=wid
            )
        await db.start_workflow(
            cli_workflows.Flaky,
            workflow_input={"counter": str(tmp_path / "count"), "flag": str(tmp_path / "flag")},
            workflow_id="f1",
        )
        await db.start_workflow(
            cli_workflows.Approval, workflow_input={"who": "ann"}, workflow_id="a1"
        )
        await drain(db)

    with_db(ready_db, setup)
    return {"url": ready_db, "env": cli_env(ready_db), "cwd": tmp_path}


def test_inspect_draws_the_last_heartbeats_of_running_activities(
    tmp_path: Path, ready_db: str, workers: list[WorkerProcess]
) -> None:
    env = cli_env(ready_db)
    flag = tmp_path / "release"
    with_db(
        ready_db,
        lambda db: db.start_workflow(
            cli_workflows.Beating, workflow_input={"flag": str(flag)}, workflow_id="hb1"
        ),
    )
    workers.append(WorkerProcess(env, tmp_path, tmp_path / "worker.log"))

    def beats() -> list[loom.ActivityHeartbeat]:
        return with_db(ready_db, lambda db: db.get_workflow("hb1").heartbeats())

    [stored] = eventually_sync(beats, timeout=20, what="a heartbeat recorded")
    shown = ok_json(loom_cli("inspect", "hb1", "--json", env=env, cwd=tmp_path))
    [beat] = shown["heartbeats"]
    assert beat["seq"] == stored.seq and beat["activity"] == "cli_beating"
    assert beat["attempt"] == 1 and beat["details"]["done"] >= stored.details["done"]
    [step] = shown["steps"]
    assert step["step"] == "crunch" and step["last_heartbeat_at"] == beat["sent_at"]

    text = ok(loom_cli("inspect", "hb1", env=env, cwd=tmp_path))
    crunch = next(line for line in text.splitlines() if line.split()[:2] == ["1", "crunch"])
    assert "running" in crunch and "heartbeat" in crunch and "ago" in crunch
    assert "Heartbeats (last of each activity)" in text
    beats_table = text.split("Heartbeats (last of each activity)", 1)[1]
    row = next(line for line in beats_table.splitlines() if "cli_beating" in line)
    assert row.split()[:3] == [str(beat["seq"]), "cli_beating", "1"] and '"done":' in row
    # The Activities table says where it runs: where its workflow runs (it is not routed).
    activity = next(line for line in text.splitlines() if line.split()[:2] == ["3", "cli_beating"])
    assert "pending" in activity and "runs where its workflow runs" in activity

    flag.touch()
    eventually_sync(
        lambda: (
            with_db(ready_db, lambda db: db.get_workflow("hb1").status())
            is loom.WorkflowStatus.COMPLETED
        ),
        timeout=20,
    )
    ended = ok_json(loom_cli("inspect", "hb1", "--json", env=env, cwd=tmp_path))
    assert ended["heartbeats"] == [] and ended["steps"][0]["last_heartbeat_at"] is None
    assert "Heartbeats" not in ok(loom_cli("inspect", "hb1", env=env, cwd=tmp_path))


def test_list_prints_what_the_database_holds(populated: dict[str, Any]) -> None:
    env, cwd = populated["env"], populated["cwd"]
    rows = ok_json(loom_cli("list", "--json", env=env, cwd=cwd))
    stored = with_db(populated["url"], lambda db: db.list_workflows())
    assert [r["workflow_id"] for r in rows] == [s.workflow_id for s in stored]
    assert {r["workflow_id"]: r["status"] for r in rows} == {
        "p1": "COMPLETED",
        "p2": "COMPLETED",
        "f1": "FAILED",
        "a1": "RUNNING",
    }
    by_id = {r["workflow_id"]: r for r in rows}
    assert by_id["a1"]["current_step"] == "await_approval"
    assert by_id["f1"]["current_step"] == "check"
    assert by_id["p1"]["name"] == "cli_Pipeline" and by_id["p1"]["version"] == "1.0.0"
    assert all(r["duration_seconds"] >= 0 for r in rows)

    failed = ok_json(loom_cli("list", "--status", "failed", "--json", env=env, cwd=cwd))
    assert [r["workflow_id"] for r in failed] == ["f1"]
    named = ok_json(loom_cli("list", "--name", "cli_Pipeline", "--json", env=env, cwd=cwd))
    assert sorted(r["workflow_id"] for r in named) == ["p1", "p2"]
    limited = ok_json(loom_cli("list", "--limit", "1", "--json", env=env, cwd=cwd))
    assert [r["workflow_id"] for r in limited] == [stored[0].workflow_id]

    table = ok(loom_cli("list", env=env, cwd=cwd)).splitlines()
    assert table[0].split()[:4] == ["ID", "NAME", "VERSION", "STATUS"]
    line = next(row for row in table if row.startswith("a1 "))
    assert line.split()[1:5] == ["cli_Approval", "1.0.0", "RUNNING", "await_approval"]


def test_inspect_shows_input_state_steps_error_cause_and_events(populated: dict[str, Any]) -> None:
    env, cwd = populated["env"], populated["cwd"]

    async def stored(db: loom.Database) -> tuple[Any, list[loom.Event]]:
        handle = db.get_workflow("p1")
        return await handle.describe(), await handle.events()

    record, events = with_db(populated["url"], stored)
    shown = ok_json(loom_cli("inspect", "p1", "--events", "--json", env=env, cwd=cwd))
    assert shown["status"] == "COMPLETED"
    assert shown["input"] == record.input and shown["state"] == record.state
    assert [(s["step"], s["status"], s["activities"]) for s in shown["steps"]] == [
        ("prepare", "completed", 1),
        ("work", "completed", 2),
        ("finish", "completed", 0),
    ]
    assert all(s["duration_seconds"] >= 0 for s in shown["steps"])
    assert [(e["seq"], e["type"]) for e in shown["events"]] == [
        (e.seq, e.type.value) for e in events
    ]

    failed = ok_json(loom_cli("inspect", "f1", "--json", env=env, cwd=cwd))
    assert failed["status"] == "FAILED"
    assert failed["error"]["type"] == "ActivityFailedError" and failed["error"]["step"] == "check"
    assert failed["cause"]["activity"] == "cli_require_flag"
    assert failed["cause"]["type"] == "MissingFlagError"
    assert [s["status"] for s in failed["steps"]] == ["completed", "failed"]
    text = ok(loom_cli("inspect", "f1", env=env, cwd=cwd))
    assert "FAILED" in text and "caused by MissingFlagError" in text

    waiting = ok(loom_cli("inspect", "a1", "--events", env=env, cwd=cwd))
    assert "waiting for signal 'cli_approve'" in waiting
    assert "SIGNAL_WAIT_STARTED" in waiting and '"requested_by": "ann"' in waiting

    assert_one_line_error(loom_cli("inspect", "nope", env=env, cwd=cwd), "'nope'")


def test_inspect_export_writes_histories_the_replayer_replays(populated: dict[str, Any]) -> None:
    from loom.testing import Replayer

    env, cwd = populated["env"], populated["cwd"]
    done = ok(loom_cli("inspect", "p1", "--export", "p1.json", env=env, cwd=cwd))
    assert "wrote the history of workflow p1 (COMPLETED" in done and "p1.json" in done
    document = json.loads((cwd / "p1.json").read_text())
    record = with_db(populated["url"], lambda db: db.get_workflow("p1").describe())
    assert (document["format"], document["workflow"], document["workflow_id"]) == (
        "loom-history",
        "cli_Pipeline",
        "p1",
    )
    assert (document["version"], document["run_id"]) == (record.version, record.run_id)
    replayed = Replayer([cli_workflows.Pipeline]).replay(cwd / "p1.json")
    assert replayed.status is loom.WorkflowStatus.COMPLETED and replayed.state == record.state

    # '-' writes to stdout; a running workflow's history is exported as it stands.
    waiting = json.loads(ok(loom_cli("inspect", "a1", "--export", "-", env=env, cwd=cwd)))
    assert waiting["status"] == "RUNNING"
    assert Replayer(cli_workflows.Approval).replay(waiting).status is loom.WorkflowStatus.RUNNING

    assert_one_line_error(
        loom_cli("inspect", "p1", "--run", "r-1", env=env, cwd=cwd), "--run goes with --export"
    )
    assert_one_line_error(
        loom_cli("inspect", "p1", "--export", "p1.json", "--run", "r-9", env=env, cwd=cwd),
        "no run 'r-9'",
    )
    assert_one_line_error(
        loom_cli("inspect", "p1", "--export", "missing/p1.json", env=env, cwd=cwd),
        "cannot write the history to missing/p1.json",
    )


def test_stats_counts_workflows_and_tasks(populated: dict[str, Any]) -> None:
    env, cwd = populated["env"], populated["cwd"]
    shown = ok_json(loom_cli("stats", "--json", env=env, cwd=cwd))
    assert shown["by_status"] == {"RUNNING": 1, "COMPLETED": 2, "FAILED": 1, "CANCELED": 0}
    assert (shown["waiting"], shown["ready"], shown["leased"]) == (1, 0, 0)
    assert shown["completed_last_minute"] == 2

    async def event_count(db: loom.Database) -> int:
        return sum([len(await db.get_workflow(w).events()) for w in ("p1", "p2", "f1", "a1")])

    assert shown["events"] == with_db(populated["url"], event_count)
    text = ok(loom_cli("stats", env=env, cwd=cwd))
    lines = text.splitlines()
    assert lines[0] == "Workflows"
    assert lines[1].split() == ["RUNNING", "COMPLETED", "FAILED", "CANCELED", "TOTAL"]
    assert lines[2].split() == ["1", "2", "1", "0", "4"]
    waiting = next(line for line in lines if line.startswith("waiting "))
    assert waiting.split()[:2] == ["waiting", "1"]


# -- acting: signal, cancel, retry -----------------------------------------------------------


def test_signal_cancel_and_retry_change_the_workflows(populated: dict[str, Any]) -> None:
    env, cwd, url = populated["env"], populated["cwd"], populated["url"]
    with_db(
        url,
        lambda db: db.start_workflow(
            cli_workflows.Approval, workflow_input={"who": "bo"}, workflow_id="a2"
        ),
    )
    with_db(url, drain)

    out = ok(loom_cli("signal", "a1", "cli_approve", "--payload", '{"ok": true}', env=env, cwd=cwd))
    assert "sent signal 'cli_approve' to workflow a1" in out
    out = ok(loom_cli("cancel", "a2", "--reason", "customer left", env=env, cwd=cwd))
    assert "canceled workflow a2" in out
    assert_one_line_error(loom_cli("cancel", "a2", env=env, cwd=cwd), "a2", "CANCELED")
    assert_one_line_error(loom_cli("signal", "a2", "cli_approve", env=env, cwd=cwd), "CANCELED")

    assert_one_line_error(loom_cli("retry", "p1", env=env, cwd=cwd), "COMPLETED")
    (cwd / "flag").write_text("green\n")
    out = ok(loom_cli("retry", "f1", env=env, cwd=cwd))
    assert "retrying workflow f1 from step 'check'" in out

    async def outcome(db: loom.Database) -> dict[str, Any]:
        await drain(db)
        return {
            "a1": await db.get_workflow("a1").result(timeout=5),
            "a2": await db.get_workflow("a2").describe(),
            "f1": await db.get_workflow("f1").result(timeout=5),
            "f1_events": await db.get_workflow("f1").events(),
        }

    after = with_db(url, outcome)
    assert after["a1"] == {"requested_by": "ann", "approval": {"ok": True}}
    assert after["a2"].status is loom.WorkflowStatus.CANCELED
    assert after["a2"].error["message"] == "customer left"
    assert after["f1"] == {"calls": 1, "flag": "green"}
    kinds = [e.type for e in after["f1_events"]]
    # Resumed from the failed step: the failure stays in the history, the first step is not
    # run again (its activity ran once: the counter file has one line).
    assert loom.EventType.WORKFLOW_FAILED in kinds
    assert kinds.index(loom.EventType.WORKFLOW_RETRIED) > kinds.index(
        loom.EventType.WORKFLOW_FAILED
    )
    assert (cwd / "count").read_text().splitlines() == ["call"]
    listed = ok_json(loom_cli("list", "--status", "COMPLETED", "--json", env=env, cwd=cwd))
    assert sorted(r["workflow_id"] for r in listed) == ["a1", "f1", "p1", "p2"]


# -- queries ---------------------------------------------------------------------------------


def test_query_prints_the_answer_as_json_and_changes_nothing(populated: dict[str, Any]) -> None:
    env, cwd, url = populated["env"], populated["cwd"], populated["url"]
    record = with_db(url, lambda db: db.get_workflow("a1").describe())
    module = ("-m", "cli_workflows")

    answer = ok(loom_cli("query", "a1", "requester", *module, env=env, cwd=cwd))
    assert json.loads(answer) == {"who": "ann", "approval": None}
    assert answer == '{\n  "who": "ann",\n  "approval": null\n}\n'  # indented, no colour
    greeting = loom_cli(
        "query", "a1", "greeting", "--args", '["hej ☃\u202e", 2]', *module, env=env, cwd=cwd
    )
    assert ok(greeting) == '[\n  "hej ☃\\u202e, ann",\n  "hej ☃\\u202e, ann"\n]\n'
    with_modules = cli_env(url, LOOM_MODULES="cli_workflows")
    assert json.loads(
        ok(loom_cli("query", "a1", "greeting", "-a", '["hi"]', env=with_modules, cwd=cwd))
    ) == ["hi, ann"]
    assert with_db(url, lambda db: db.get_workflow("a1").describe()) == record

    inspected = ok(loom_cli("inspect", "a1", *module, env=env, cwd=cwd))
    assert "  queries       requester, greeting" in inspected.splitlines()
    shown = ok_json(loom_cli("inspect", "a1", "--json", *module, env=env, cwd=cwd))
    assert shown["queries"] == ["requester", "greeting"]
    assert ok_json(loom_cli("inspect", "p1", "--json", *module, env=env, cwd=cwd))["queries"] == []
    unknown = ok(loom_cli("inspect", "a1", env=env, cwd=cwd))
    assert "no class named 'cli_Approval' is registered here" in unknown
    assert ok_json(loom_cli("inspect", "a1", "--json", env=env, cwd=cwd))["queries"] is None
    broken = ok(loom_cli("inspect", "a1", env=cli_env(url, LOOM_MODULES="cli_nope"), cwd=cwd))
    assert "queries       unknown (cannot import module 'cli_nope'" in broken
    assert_one_line_error(
        loom_cli("inspect", "a1", "-m", "cli_nope", env=env, cwd=cwd), "cannot import module"
    )


def test_query_errors_are_one_line(populated: dict[str, Any]) -> None:
    env, cwd = populated["env"], populated["cwd"]
    module = ("-m", "cli_workflows")
    for args, fragments in [
        (("ghost", "requester"), ["no workflow with id 'ghost'"]),
        (("a1", "requestor"), ["has no query 'requestor'; its queries: 'requester', 'greeting'"]),
        (("a1", "greeting", "--args", '"hi"'), ["--args must be a JSON array", "got a string"]),
        (("a1", "greeting", "--args", "{}"), ["--args must be a JSON array", "got an object"]),
        (("a1", "greeting", "--args", "[1,"), ["--args is not valid JSON"]),
        (("a1", "greeting", "--args", "[NaN]"), ["--args is not valid JSON", "NaN"]),
        (("a1", "greeting", "--args", "[" * 5000 + "]" * 5000), ["nested too deeply"]),
        (("a1", "greeting"), ["missing a required argument: 'text'"]),
        (("a1", "greeting", "--args", '["hi", -1]'), ["failed: ValueError: times must be >= 0"]),
        (("a1", "bad\x1bname"), ["query name", "U+001B"]),
    ]:
        assert_one_line_error(loom_cli("query", *args, *module, env=env, cwd=cwd), *fragments)
    assert_one_line_error(
        loom_cli("query", "a1", "requester", env=env, cwd=cwd),
        "is of type 'cli_Approval', and no class of that name is registered in this process",
        "-m MODULE",
    )


# -- errors ----------------------------------------------------------------------------------


def test_errors_are_one_line_on_stderr_with_a_non_zero_exit(populated: dict[str, Any]) -> None:
    env, cwd = populated["env"], populated["cwd"]
    assert_one_line_error(
        loom_cli("signal", "ghost", "go", env=env, cwd=cwd), "no workflow with id 'ghost'"
    )
    assert_one_line_error(
        loom_cli(
            "start", "cli_Pipeline", "--input", "{oops", "-m", "cli_workflows", env=env, cwd=cwd
        ),
        "--input is not valid JSON",
    )
    assert_one_line_error(
        loom_cli("signal", "a1", "go", "--payload", "[1,", env=env, cwd=cwd),
        "--payload is not valid JSON",
    )
    assert_one_line_error(
        loom_cli("start", "cli_Nope", "-m", "cli_workflows", env=env, cwd=cwd),
        "no workflow class named 'cli_Nope'",
    )
    assert_one_line_error(
        loom_cli("list", "--status", "SLEEPY", env=env, cwd=cwd), "unknown status 'SLEEPY'"
    )
    assert_one_line_error(
        loom_cli("list", "-d", "postgresql://db.invalid/loom", env=env, cwd=cwd), "PostgreSQL"
    )
    blocker = cwd / "not-a-directory"
    blocker.write_text("")
    assert_one_line_error(
        loom_cli("list", "-d", f"sqlite:///{blocker}/loom.db", env=env, cwd=cwd),
        "no database at",
        str(blocker),
    )
    assert_one_line_error(
        loom_cli("init", "-d", f"sqlite:///{blocker}/loom.db", env=env, cwd=cwd),
        "cannot open SQLite database",
        str(blocker),
    )
    (cwd / "garbage.db").write_text("this is not a SQLite database, only some text " * 4)
    assert_one_line_error(
        loom_cli("stats", "-d", "garbage.db", env=env, cwd=cwd),
        "cannot open SQLite database 'garbage.db'",
        "not a database",
    )
    web = loom_cli("web", "--host", "0.0.0.0", env=env, cwd=cwd)
    assert_one_line_error(web, "--token")


# -- replay ----------------------------------------------------------------------------------


CHANGED_MODULE = """
import loom


@loom.activity(name="cli_replay_bill")
async def bill(amount: int) -> str:
    return f"billed {amount}"


@loom.workflow(name="cli_Replay")
class Replay(loom.Workflow[dict, dict]):
    @loom.step(name="charge")
    async def charge(self, ctx):
        await ctx.state.set("receipt", await ctx.activity(bill, ctx.input["amount"]))
"""


def test_replay_reports_histories_the_changed_code_no_longer_reproduces(
    tmp_path: Path, ready_db: str
) -> None:
    async def history(db: loom.Database) -> None:
        for wid, amount in (("r1", 5), ("r2", 7)):
            await db.start_workflow(
                cli_workflows.Replay, workflow_input={"amount": amount}, workflow_id=wid
            )
        await drain(db)

    with_db(ready_db, history)
    (tmp_path / "cli_replay_changed.py").write_text(CHANGED_MODULE)
    env = cli_env(ready_db)

    same = ok(loom_cli("replay", "-m", "cli_workflows", "--all", env=env, cwd=tmp_path))
    assert "checked 2 workflow(s): 2 reproduced" in same

    changed = loom_cli("replay", "-m", "cli_replay_changed", "--all", env=env, cwd=tmp_path)
    assert changed.returncode == 1, changed.stderr
    assert "r1" in changed.stdout and "r2" in changed.stdout and "cli_Replay" in changed.stdout
    assert "cli_replay_charge" in changed.stdout  # the recorded activity the code no longer calls
    assert "2 not reproduced" in changed.stdout

    one = loom_cli(
        "replay", "-m", "cli_replay_changed", "--workflow", "r2", "--json", env=env, cwd=tmp_path
    )
    assert one.returncode == 1
    [report] = json.loads(one.stdout)
    assert (report["workflow_id"], report["name"], report["ok"]) == ("r2", "cli_Replay", False)
    assert "cli_replay_bill" in report["problem"]


VERSIONED_MODULE = """
import loom


@loom.workflow(name="cli_Versioned", version="1")
class One(loom.Workflow[dict, dict]):
    @loom.step
    async def only(self, ctx):
        await ctx.state.set("v", 1)


@loom.workflow(name="cli_Versioned", version="2")
class Two(loom.Workflow[dict, dict]):
    @loom.step
    async def only(self, ctx):
        await ctx.state.set("v", 2)
"""


def test_start_takes_the_newest_version_or_the_one_named(tmp_path: Path, ready_db: str) -> None:
    (tmp_path / "cli_versioned.py").write_text(VERSIONED_MODULE)
    env = cli_env(ready_db, LOOM_MODULES="cli_versioned", PYTHONPATH=str(tmp_path))
    ok(loom_cli("start", "cli_Versioned", "--id", "newest", env=env, cwd=tmp_path))
    ok(loom_cli("start", "cli_Versioned", "--id", "old", "--version", "1", env=env, cwd=tmp_path))
    listed = {
        row["workflow_id"]: row["version"]
        for row in ok_json(
            loom_cli("list", "--name", "cli_Versioned", "--json", env=env, cwd=tmp_path)
        )
    }
    assert listed == {"newest": "2", "old": "1"}
    assert_one_line_error(
        loom_cli("start", "cli_Versioned", "--version", "3", env=env, cwd=tmp_path),
        "version '3' of workflow 'cli_Versioned' is not registered",
        "'1', '2'",
    )
