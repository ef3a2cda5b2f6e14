"""The chaos driver: worker processes, SIGKILLs, PostgreSQL restarts, and the client's side of
the workload (starts, signals, cancels), every wait with a deadline.

Every worker runs in a process group of its own, and every one still alive is killed when the
run ends, whatever the reason (``finally`` and ``atexit``).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loom
from chaos.plan import plan_for, signal_value
from chaos.workload import REMOTE_QUEUE, ChaosMixed

TESTS_DIR = Path(__file__).resolve().parent.parent
SRC_DIR = TESTS_DIR.parent / "src"
LOOM = Path(sys.executable).parent / "loom"  # the installed console script

_live: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _kill_leftovers() -> None:
    for proc in list(_live):
        _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    _live.discard(proc)


@dataclass
class Options:
    backend: str  # "sqlite" or "postgres"
    workflows: int
    seed: int
    workdir: Path
    processes: int  # loom worker processes at any time
    concurrency: int = 8  # --workers of each process
    lease_seconds: float = 1.0
    start_seconds: float = 30.0  # the starts are spread over this long
    kill_every: tuple[float, float] = (1.0, 3.0)
    pg_restarts: int = 0
    cancel_share: float = 0.15
    patience: float = 45.0  # how long a workflow waits for its signals before it gives up
    drain_seconds: float = 120.0  # after the last start: the longest wait for every workflow to end
    op_seconds: float = 30.0  # the longest a client call is retried while the database is away


@dataclass
class Sent:
    """The client's record of one call: what it returned, and whether an earlier try of it
    raised (so it may have taken effect more than once, or the result may hide that it did)."""

    outcome: str  # ok, CANCELED, REQUESTED, not_running, gave_up, unsent
    errored: bool = False
    returned_at: float = 0.0


@dataclass
class Client:
    """What the driver did to one workflow."""

    workflow_id: str
    seed: int
    initial: dict[str, Any]
    started: Sent = field(default_factory=lambda: Sent("unsent"))
    signals: dict[int, Sent] = field(default_factory=dict)  # by token
    cancel: Sent | None = None


@dataclass
class Chaos:
    """What the driver did to the processes and the database."""

    kills: int = 0
    kills_after_cancel: int = 0  # of which: right after a cancel met a worker holding it
    exited: int = 0  # workers that exited on their own (and were started again)
    spawned: int = 0
    pg_restarts: int = 0
    client_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    drained: bool = False
    idle_cpu: dict[int, float] = field(default_factory=dict)  # worker pid: share of a core
    seconds: float = 0.0


class Workers:
    """``loom worker`` processes on one database; each logs to its own file."""

    def __init__(self, url: str, options: Options) -> None:
        self.url = url
        self.options = options
        self.logs = options.workdir / "workers"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []
        self.spawned = 0
        self.kills = 0

    def queues(self, index: int) -> list[str]:
        """The queues the worker process at ``index`` serves. Activities of queue
        "chaos-remote" are routed: a worker serving only "default" dispatches them as activity
        tasks. With two processes: one serves "default" alone, the other both queues (it also
        runs them itself); with four, one more of each, and the last serves "chaos-remote" alone
        (it only claims tasks). A replacement keeps its index's queues, so every queue always
        has a live worker, however the kills fall."""
        roles = (["default"], ["default", REMOTE_QUEUE], ["default"], [REMOTE_QUEUE])
        if self.options.processes < 2:
            return ["default", REMOTE_QUEUE]
        return roles[index % len(roles)]

    def spawn(self, index: int) -> tuple[subprocess.Popen[bytes], Path]:
        env = {
            k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")
        }
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(SRC_DIR), str(TESTS_DIR), env.get("PYTHONPATH")) if p
        )
        self.spawned += 1
        starting = self.logs / f"worker-{self.spawned:03d}.log"
        with starting.open("wb") as out:
            proc = subprocess.Popen(
                [
                    str(LOOM),
                    "worker",
                    "-d",
                    self.url,
                    "-m",
                    "chaos.workload",
                    "--workers",
                    str(self.options.concurrency),
                    "--poll-interval",
                    "0.1",
                    "--lease-seconds",
                    str(self.options.lease_seconds),
                    *(arg for queue in self.queues(index) for arg in ("--queue", queue)),
                ],
                env=env,
                cwd=self.options.workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=out,
                start_new_session=True,  # its own process group: killed as a whole
            )
        _live.add(proc)
        log = starting.with_name(f"worker-{self.spawned:03d}-pid{proc.pid}.log")
        starting.rename(log)  # the process writes on: same file, a name that says who
        return proc, log

    def respawn_exited(self) -> int:
        """Replace worker processes that exited on their own (``loom worker`` exits when it
        cannot reach the database as it starts): a supervisor's job. Returns how many."""
        exited = 0
        for index, (proc, _) in enumerate(self.procs):
            if proc.poll() is not None:
                _live.discard(proc)
                self.procs[index] = self.spawn(index)
                exited += 1
        return exited

    async def start(self) -> None:
        self.procs = [self.spawn(index) for index in range(self.options.processes)]
        await self.wait_ready()

    async def wait_ready(self) -> None:
        """Until every worker process has logged that it is ready (60 s at most)."""
        deadline = time.monotonic() + 60
        while not all("ready on" in log.read_text() for _, log in self.procs):
            for proc, log in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"worker exited with {proc.returncode}:\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError("the worker processes did not report ready within 60 s")
            await asyncio.sleep(0.1)

    def kill_one(self, rng: random.Random) -> None:
        """SIGKILL a random worker process and start another in its place."""
        index = rng.randrange(len(self.procs))
        proc, _ = self.procs[index]
        _kill_group(proc)  # no await between the kill and the spawn: never left half done
        self.procs[index] = self.spawn(index)
        self.kills += 1

    def cpu_seconds(self) -> dict[int, float]:
        """CPU time (user + system) each live worker process has used so far (Linux /proc)."""
        ticks = os.sysconf("SC_CLK_TCK")
        used = {}
        for proc, _ in self.procs:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
                used[proc.pid] = (int(fields[11]) + int(fields[12])) / ticks
        return used

    async def stop(self) -> None:
        """SIGTERM (they finish what they hold), then SIGKILL whatever is left after 15 s."""
        for proc, _ in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(self._wait_all, 15.0)
        self.close()

    def _wait_all(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for proc, _ in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        for proc, _ in self.procs:
            _kill_group(proc)


def make_clients(options: Options) -> list[Client]:
    prefix = "sq" if options.backend == "sqlite" else "pg"
    return [
        Client(
            f"chaos-{prefix}-{options.seed}-{i:05d}",
            options.seed * 100_000 + i,
            {"total": (i * 13) % 100, "n": i},
        )
        for i in range(options.workflows)
    ]


async def _call(op: Callable[[], Awaitable[str]], chaos: Chaos, deadline_seconds: float) -> Sent:
    """Call ``op`` until it answers; a database outage (StoreError, or whatever else the client
    raises then) is retried until the deadline."""
    errored = False
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            outcome = await op()
        except loom.WorkflowNotRunningError:
            return Sent("not_running", errored, time.time())
        except Exception as exc:  # the database is away: try again
            chaos.client_errors[type(exc).__name__] += 1
            errored = True
            if time.monotonic() > deadline:
                return Sent("gave_up", errored, time.time())
            await asyncio.sleep(0.2)
            continue
        return Sent(outcome, errored, time.time())


async def drive_one(
    db: loom.Database,
    client: Client,
    at: float,
    options: Options,
    chaos: Chaos,
    on_requested: Callable[[], Awaitable[None]],
) -> None:
    """Start one workflow at ``at`` (monotonic), then send its signals and maybe a cancel.

    Some signals go right after the start (before the workflow waits), the others once it is in
    its collect step (while it waits, each at a random moment around its wait's timeout). A
    cancel goes right after the start (often before any step ran), while a worker holds the
    workflow (often in the middle of an activity; then, half the time, a random worker is
    killed at once, so the cancel may have to survive a takeover), or while it collects
    signals.
    """
    rng = random.Random(f"chaos-driver-{client.seed}")
    plan = plan_for(client.seed)
    early: list[tuple[float, str, int]] = []
    running: list[tuple[float, str, int]] = []
    waiting: list[tuple[float, str, int]] = []
    for token in range(plan.signals):
        if rng.random() < 0.35:
            early.append((rng.uniform(0, 0.2), "signal", token))
        else:
            waiting.append((rng.uniform(0, 1.3 * plan.signal_timeout), "signal", token))
    if rng.random() < options.cancel_share:
        when = rng.choice((early, running, running, waiting))
        late = 0.05 if when is running else 1.0  # running: while a worker holds it
        when.append((rng.uniform(0, 0.5 if when is early else late), "cancel", 0))

    await asyncio.sleep(max(0.0, at - time.monotonic()))
    handle = db.get_workflow(client.workflow_id)

    async def start() -> str:
        await db.start_workflow(
            ChaosMixed,
            workflow_input={
                "seed": client.seed,
                "logdir": str(options.workdir / "executions"),
                "patience": options.patience,
            },
            initial_state=client.initial,
            workflow_id=client.workflow_id,
            tags=tags_of(client),
            priority=plan.priority,
        )
        return "ok"

    async def act(kind: str, token: int) -> None:
        if kind == "signal":
            payload = {"token": token, "value": signal_value(client.seed, token)}

            async def send() -> str:
                await handle.signal("go", payload)
                return "ok"

            client.signals[token] = await _call(send, chaos, options.op_seconds)
        else:

            async def cancel() -> str:
                return (await handle.cancel("chaos")).value

            client.cancel = await _call(cancel, chaos, options.op_seconds)
            if client.cancel.outcome == "REQUESTED" and rng.random() < 0.5:
                await on_requested()  # a kill now: the cancel may meet a takeover

    client.started = await _call(start, chaos, options.op_seconds)
    if client.started.outcome != "ok":
        return
    for actions, until in ((early, None), (running, "leased"), (waiting, "collect")):
        if not actions:
            continue
        if until is not None:  # a backlog may hold it back for a while
            await _until(handle, until, options.drain_seconds / 2)
        began = time.monotonic()
        for offset, kind, token in sorted(actions):
            await asyncio.sleep(max(0.0, began + offset - time.monotonic()))
            await act(kind, token)


def tags_of(client: Client) -> dict[str, str]:
    """The tags a workflow is started with (the checker finds each by them)."""
    return {"chaos-seed": str(client.seed), "chaos-group": str(client.seed % 7)}


async def _until(handle: loom.WorkflowHandle[Any], what: str, timeout: float) -> None:
    """Wait until the workflow is in step ``what`` (or, for "leased", held by a worker), or has
    ended; at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # the database may be away for a moment
            record = await handle.describe()
            if record.status is not loom.WorkflowStatus.RUNNING:
                return
            if record.leased if what == "leased" else record.current_step == what:
                return
        await asyncio.sleep(0.05 if what == "leased" else 0.25)


async def running_count(db: loom.Database) -> int | None:
    try:
        return (await db.stats()).by_status.get("RUNNING", 0)
    except Exception:
        return None


async def run(
    db: loom.Database,
    options: Options,
    restart_db: Callable[[int], None] | None,
    say: Callable[[str], None],
) -> tuple[list[Client], Chaos]:
    """Run the workload under chaos; return what the client did and what the chaos did."""
    chaos = Chaos()
    clients = make_clients(options)
    (options.workdir / "executions").mkdir(parents=True, exist_ok=True)
    workers = Workers(db.url, options)
    rng = random.Random(f"chaos-kills-{options.seed}-{options.backend}")
    began = time.monotonic()
    try:
        await workers.start()
        say(f"{options.backend}: {options.processes} worker processes ready")
        t0 = time.monotonic()
        gap = options.start_seconds / max(1, options.workflows)

        async def kill_after_cancel() -> None:
            workers.kill_one(rng)
            chaos.kills_after_cancel += 1

        driving = [
            asyncio.create_task(drive_one(db, c, t0 + i * gap, options, chaos, kill_after_cancel))
            for i, c in enumerate(clients)
        ]
        stop_chaos = asyncio.Event()

        async def kill_loop() -> None:
            while not stop_chaos.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_chaos.wait(), rng.uniform(*options.kill_every))
                if not stop_chaos.is_set():
                    chaos.exited += workers.respawn_exited()
                    workers.kill_one(rng)

        async def restart_loop() -> None:
            assert restart_db is not None
            for n in range(options.pg_restarts):
                at = t0 + options.start_seconds * (n + 1) / (options.pg_restarts + 1)
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                await asyncio.to_thread(restart_db, n)
                chaos.pg_restarts += 1
                say(f"{options.backend}: PostgreSQL restarted ({chaos.pg_restarts})")

        killing = asyncio.create_task(kill_loop())
        restarting = asyncio.create_task(restart_loop()) if restart_db else None
        try:
            await asyncio.gather(*driving)
            if restarting is not None:
                await restarting
            say(f"{options.backend}: all {options.workflows} started and signalled; draining")
            deadline = time.monotonic() + options.drain_seconds
            calm_from = time.monotonic() + options.drain_seconds / 2  # then no more kills
            while time.monotonic() < deadline:
                if await running_count(db) == 0:
                    chaos.drained = True
                    break
                if time.monotonic() > calm_from:
                    stop_chaos.set()
                await asyncio.sleep(0.5)
        finally:
            stop_chaos.set()
            for task in (killing, restarting, *driving):
                if task is not None and not task.done():
                    task.cancel()
            await asyncio.gather(
                killing, *(t for t in (restarting,) if t), *driving, return_exceptions=True
            )
        if chaos.drained:  # nothing left to run: an idle worker should barely use the CPU
            chaos.exited += workers.respawn_exited()
            await workers.wait_ready()
            await asyncio.sleep(0.5)
            before, began_idle = workers.cpu_seconds(), time.monotonic()
            await asyncio.sleep(3.0)
            after, idle = workers.cpu_seconds(), time.monotonic() - began_idle
            chaos.idle_cpu = {
                pid: (after[pid] - before[pid]) / idle for pid in after if pid in before
            }
        await workers.stop()
    finally:
        workers.close()
    chaos.kills = workers.kills
    chaos.spawned = workers.spawned
    chaos.seconds = time.monotonic() - began
    return clients, chaos
