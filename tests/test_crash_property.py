"""Property: a workflow that crashes at any point, any number of times, ends exactly as a
crash-free run does.

The "process" is a Database plus a Worker driving the workflow. A crash is a ``Crash``
(a BaseException, as abrupt as the process dying) raised at a chosen point: right after a claim,
just before or just after a commit reaches the store, when an activity begins, or when an
activity has done its work but before its result is handed back. Nothing of the crashed process
is reused: recovery opens a new Database and a new Worker, which take the workflow over once the
dead one's short lease has run out.

Compared with a crash-free run, the final state and the history (kinds and decision names of
its events, in order) must be equal; every activity result is recorded exactly once, every
activity ran at least once, and one whose result was lost to a crash ran again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import loom
from loom import EventType, WorkflowStatus
from loom.core.history import decision_key

pytestmark = pytest.mark.slow  # a property run: many crash points, each replayed

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

LEASE_SECONDS = 0.1
POINTS = ("claim_after", "commit_before", "commit_after", "activity_start", "activity_end")


class Crash(BaseException):
    """The process dies here: nothing it holds in memory survives."""


@dataclass
class Injector:
    """Raises Crash at the ``at``-th time this process reaches crash point ``point``."""

    point: str | None = None
    at: int = 0
    seen: collections.Counter[str] = field(default_factory=collections.Counter)
    fired: bool = False

    def reach(self, point: str) -> None:
        self.seen[point] += 1
        if point == self.point and self.seen[point] == self.at and not self.fired:
            self.fired = True
            raise Crash(f"{point} #{self.at}")


# The crash points of the process running now, and what activities really did (by label).
injector = Injector()
executions: collections.Counter[str] = collections.Counter()
lost_results: set[str] = set()


@loom.activity(name="crashprop_add")
async def crashprop_add(label: str, value: int) -> int:
    injector.reach("activity_start")
    await asyncio.sleep(0)
    executions[label] += 1  # the side effect
    try:
        injector.reach("activity_end")
    except Crash:
        lost_results.add(label)
        raise
    return (value * 17 + sum(label.encode())) % 100_003


@loom.workflow(name="crashprop_Flow")
class CrashpropFlow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        a = await ctx.activity(crashprop_add, "prepare.a", ctx.input["n"])
        await ctx.state.set("a", a)
        await ctx.sleep(seconds=0)
        b = await ctx.activity(crashprop_add, "prepare.b", a)
        await ctx.state.update(total=lambda total: (total or 0) + b)

    @loom.step
    async def fan_out(self, ctx: Ctx) -> None:
        total = ctx.state["total"]
        x, y = await asyncio.gather(
            ctx.activity(crashprop_add, "fan.x", total),
            ctx.activity(crashprop_add, "fan.y", total + 1),
        )
        await ctx.state.set("pair", [x, y])
        await ctx.state.set("ref", str(ctx.uuid4()))

    @loom.step
    async def approve(self, ctx: Ctx) -> None:
        decision = await ctx.wait_for_signal("approve")
        await ctx.state.set("approved_by", decision["by"])
        c = await ctx.activity(crashprop_add, "approve.c", sum(ctx.state["pair"]))
        await ctx.state.update(total=lambda total: total + c, approvals=lambda n: (n or 0) + 1)


ACTIVITY_LABELS = {"prepare.a", "prepare.b", "fan.x", "fan.y", "approve.c"}


def instrument(db: loom.Database) -> None:
    """Put crash points around this process's claims and commits. Once a crash point fired,
    the process is dead: every later call it makes to the database raises Crash too, so
    nothing it still does (a worker survives an activity's BaseException) is recorded."""
    store = db.store
    claim, commit = store.claim, store.commit

    def dead() -> None:
        if injector.fired:
            raise Crash("the process is dead")

    async def crashing_claim(*args: Any, **kwargs: Any) -> Any:
        dead()
        claims = await claim(*args, **kwargs)
        if claims:
            injector.reach("claim_after")
        return claims

    async def crashing_commit(*args: Any, **kwargs: Any) -> Any:
        dead()
        injector.reach("commit_before")
        outcome = await commit(*args, **kwargs)
        injector.reach("commit_after")
        return outcome

    def guarded(method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            dead()
            return await method(*args, **kwargs)

        return call

    store.claim = crashing_claim  # type: ignore[method-assign]
    store.commit = crashing_commit  # type: ignore[method-assign]
    for name in ("release", "renew", "load_history", "read_signals", "get_workflow"):
        setattr(store, name, guarded(getattr(store, name)))


async def live_one_process(
    url: str, workflow_id: str, crash: tuple[str, int] | None, inline_window: float
) -> bool:
    """Run the workflow in a fresh process until it ends (True) or the process crashes.

    With ``inline_window=0`` every activity's scheduling is committed before it runs, so there
    are many commits to crash around; with the default, short activities are committed together
    with their results, and the whole workflow takes few commits."""
    global injector
    injector = Injector(*crash) if crash else Injector()
    deadline = time.monotonic() + 10
    async with loom.Database(url) as db:
        instrument(db)
        worker = loom.Worker(
            db,
            concurrency=1,
            poll_interval=0.01,
            lease_seconds=LEASE_SECONDS,
            inline_window=inline_window,
        )
        handle = db.get_workflow(workflow_id)
        try:
            while await handle.status() is WorkflowStatus.RUNNING:
                assert time.monotonic() < deadline, "the workflow made no progress in 10 s"
                ran = await worker.run_once()
                if injector.fired:
                    return False
                if not ran:
                    await asyncio.sleep(0.01)  # a dead process's lease has not run out yet
        except Crash:
            return False
        finally:
            # Stops the lease renewer: a dead process renews nothing. Writes nothing. (A
            # renewal that met the dead process's database ended with Crash: nothing to do.)
            with contextlib.suppress(Crash):
                await worker.stop_and_wait()
    return True


@dataclass
class Outcome:
    state: dict[str, Any]
    events: list[loom.Event]
    executions: collections.Counter[str]
    lost_results: set[str]
    crashes: int
    signals_pending: int


async def run_with_crashes(
    directory: Path, name: str, n: int, plan: list[tuple[str, int]], inline_window: float = 0.0
) -> Outcome:
    url = f"sqlite:///{directory / name}.db"
    workflow_id = f"crashprop-{n}"
    executions.clear()
    lost_results.clear()
    async with loom.Database(url) as db:
        await db.migrate_up()
        handle = await db.start_workflow(
            CrashpropFlow, workflow_input={"n": n}, initial_state={"n": n}, workflow_id=workflow_id
        )
        await handle.signal("approve", {"by": f"user-{n}"})
    crashes = 0
    for crash in [*plan, None]:
        if await live_one_process(url, workflow_id, crash, inline_window):
            break
        crashes += 1
    async with loom.Database(url) as db:
        handle = db.get_workflow(workflow_id)
        state = await handle.result(timeout=5)
        return Outcome(
            state=state,
            events=await handle.events(),
            executions=collections.Counter(executions),
            lost_results=set(lost_results),
            crashes=crashes,
            signals_pending=(await db.stats()).signals_pending,
        )


def shape(events: list[loom.Event]) -> list[tuple[str, str | None]]:
    """The history without times and seqs: each event's kind and decision name, in order."""
    return [(e.type.value, decision_key(e.type, e.payload)) for e in events]


def check_against_crash_free(crashed: Outcome, clean: Outcome) -> None:
    assert clean.crashes == 0
    assert crashed.state == clean.state
    assert shape(crashed.events) == shape(clean.events)
    assert crashed.events[-1].type is EventType.WORKFLOW_COMPLETED

    events = crashed.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    for scheduled_kind, completed_kind in (
        (EventType.ACTIVITY_SCHEDULED, EventType.ACTIVITY_COMPLETED),
        (EventType.TIMER_SCHEDULED, EventType.TIMER_FIRED),
        (EventType.SIGNAL_WAIT_STARTED, EventType.SIGNAL_RECEIVED),
    ):
        scheduled = [e.seq for e in events if e.type is scheduled_kind]
        completed = [e.payload["scheduled"] for e in events if e.type is completed_kind]
        assert sorted(completed) == scheduled, scheduled_kind
    assert crashed.signals_pending == 0  # the signal was consumed, once

    # At least once: every activity ran; one whose result a crash lost ran again.
    assert set(crashed.executions) == ACTIVITY_LABELS
    for label in crashed.lost_results:
        assert crashed.executions[label] >= 2, label
    assert clean.executions == collections.Counter(dict.fromkeys(ACTIVITY_LABELS, 1))


# A process claims the workflow once; it commits and runs activities about five times each.
crash_point = st.sampled_from(POINTS).flatmap(
    lambda point: st.tuples(
        st.just(point), st.integers(min_value=1, max_value=1 if point == "claim_after" else 6)
    )
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    n=st.integers(min_value=0, max_value=10_000),
    plan=st.lists(crash_point, min_size=1, max_size=3),
    inline_window=st.sampled_from([0.0, 0.05]),
)
def test_a_workflow_crashed_anywhere_ends_as_a_crash_free_run(
    n: int, plan: list[tuple[str, int]], inline_window: float
) -> None:
    async def scenario() -> tuple[Outcome, Outcome]:
        with tempfile.TemporaryDirectory() as tmp:
            clean = await run_with_crashes(Path(tmp), "clean", n, [], inline_window)
            crashed = await run_with_crashes(Path(tmp), "crashed", n, plan, inline_window)
            return clean, crashed

    clean, crashed = asyncio.run(scenario())
    event(f"crashes: {crashed.crashes}")
    check_against_crash_free(crashed, clean)


PLANS = [
    [("claim_after", 1)],
    [("commit_before", 1)],
    [("commit_after", 1)],
    [("commit_before", 3)],
    [("commit_before", 4)],
    [("commit_after", 4)],
    [("activity_start", 1)],
    [("activity_end", 1)],
    [("activity_end", 3)],
    [("activity_start", 4), ("activity_end", 1), ("commit_after", 2)],
]


def _cases() -> list[Any]:
    """Every plan with each activity being committed on its own; with short activities inline
    (one commit per process here), the plans whose crash points still exist."""
    cases = []
    for window, label in ((0.0, "commit-each"), (0.05, "inline")):
        for plan in PLANS:
            if window and any(p.startswith("commit") and at > 1 for p, at in plan):
                continue
            ident = "+".join(f"{point}#{at}" for point, at in plan)
            cases.append(pytest.param(plan, window, id=f"{label}:{ident}"))
    return cases


@pytest.mark.parametrize(("plan", "inline_window"), _cases())
async def test_each_kind_of_crash_point_is_survived(
    tmp_path: Path, plan: list[tuple[str, int]], inline_window: float
) -> None:
    clean = await run_with_crashes(tmp_path, "clean", 7, [], inline_window)
    crashed = await run_with_crashes(tmp_path, "crashed", 7, plan, inline_window)
    assert crashed.crashes == len(plan)  # every planned crash really happened
    check_against_crash_free(crashed, clean)
    if any(point == "activity_end" for point, _ in plan):
        assert crashed.lost_results
