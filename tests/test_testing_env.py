"""``loom.testing.WorkflowEnvironment``: a virtual clock that skips durable waits, moving time by
hand, and fakes for activities; on both backends where the environment takes a database URL."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import EventType
from loom.testing import VirtualClock, WorkflowEnvironment
from support import eventually, of_type

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
DAY = 86_400.0
REAL_CALLS: list[str] = []
START = datetime(2030, 1, 1, tzinfo=UTC)  # a round start: times in the histories are exact


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[WorkflowEnvironment]:
    """An environment on a fresh database of each backend."""
    async with WorkflowEnvironment(db_url, start_time=START) as environment:
        yield environment


@pytest.fixture
async def manual(db_url: str) -> AsyncIterator[WorkflowEnvironment]:
    """An environment whose time moves only by ``advance``."""
    async with WorkflowEnvironment(db_url, start_time=START, auto_skip=False) as environment:
        yield environment


async def parked(handle: loom.WorkflowHandle[Any], kind: EventType) -> bool:
    """The workflow recorded ``kind`` and gave its lease back."""
    record = await handle.describe()
    return not record.leased and any(e.type is kind for e in await handle.events())


# ------------------------------------------------------------------------------- workflows

FLAKY: dict[str, int] = {}


@loom.activity(
    name="tenv_charge", retry_count=5, retry_delay=60, retry_backoff=3.0, retry_max_delay=3600
)
async def charge(customer: str, amount: int) -> str:
    REAL_CALLS.append(customer)
    FLAKY[customer] = FLAKY.get(customer, 0) + 1
    if FLAKY[customer] < 4:
        raise ConnectionError("the payment service is down")
    return f"receipt-{customer}-{amount}"


@loom.activity(name="tenv_refund", non_retryable=(ValueError,), retry_count=2, retry_delay=30)
async def refund(receipt: str) -> bool:
    REAL_CALLS.append(receipt)
    return True


@loom.workflow(name="tenv_Subscription")
class Subscription(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def trial(self, ctx: Ctx) -> None:
        await ctx.state.set("started", ctx.now().timestamp())
        await ctx.sleep(timedelta(days=30))
        await ctx.state.set("trial_over", ctx.now().timestamp())

    @loom.step
    async def bill(self, ctx: Ctx) -> None:
        receipt = await ctx.activity(charge, ctx.input["customer"], 42)
        await ctx.state.set("receipt", receipt)
        await ctx.state.set("billed", ctx.now().timestamp())


@loom.workflow(name="tenv_Nap")
class Nap(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def nap(self, ctx: Ctx) -> None:
        start = ctx.now().timestamp()
        for hour in range(1, ctx.input["hours"] + 1):
            await ctx.sleep(timedelta(hours=1))
            await ctx.state.set(f"h{hour}", ctx.now().timestamp() - start)


@loom.workflow(name="tenv_Approval")
class Approval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.signal("remind")
    async def remind(self, ctx: Ctx, payload: Any) -> None:
        await ctx.state.update(reminded=lambda seen: [*(seen or []), ctx.now().timestamp()])

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.state.set("asked", ctx.now().timestamp())
        try:
            answer = await ctx.wait_for_signal("approve", timeout=timedelta(hours=48))
        except TimeoutError:
            answer = "expired"
        await ctx.state.set("answer", answer)
        await ctx.state.set("answered", ctx.now().timestamp())


@loom.workflow(name="tenv_Refund")
class Refund(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def refund(self, ctx: Ctx) -> None:
        try:
            await ctx.state.set("refunded", await ctx.activity(refund, ctx.input["receipt"]))
        except loom.ActivityFailedError as exc:
            await ctx.state.set("failed", [exc.attempts, exc.error_type, exc.error_message])


RELEASE: dict[str, asyncio.Event] = {}


@loom.activity(name="tenv_slow_quote", timeout_seconds=30)
async def slow_quote(key: str) -> str:
    await RELEASE[key].wait()
    return "quote"


@loom.workflow(name="tenv_Race")
class Race(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def race(self, ctx: Ctx) -> None:
        quote = asyncio.ensure_future(ctx.activity(slow_quote, ctx.input["key"]))
        deadline = asyncio.ensure_future(ctx.sleep(timedelta(hours=1)))
        done, pending = await asyncio.wait([quote, deadline], return_when=asyncio.FIRST_COMPLETED)
        for loser in pending:
            loser.cancel()
        await ctx.state.set("winner", "quote" if quote in done else "deadline")


# ------------------------------------------------------------------------------ skipping


async def test_a_month_asleep_and_retries_with_backoff_take_milliseconds(
    env: WorkflowEnvironment, request: pytest.FixtureRequest
) -> None:
    customer = request.node.name  # the payment service fails its first three calls
    began = time.perf_counter()
    handle = await env.start_workflow(Subscription, workflow_input={"customer": customer})
    state = await handle.result(timeout=30)
    elapsed = time.perf_counter() - began

    assert state["receipt"] == f"receipt-{customer}-42"
    assert state["trial_over"] - state["started"] == 30 * DAY
    # Three failed attempts, retried after 60, 180 and 540 virtual seconds.
    events = await handle.events()
    failed = of_type(events, EventType.ACTIVITY_FAILED)
    assert [e.payload["attempt"] for e in failed] == [1, 2, 3]
    [done] = of_type(events, EventType.ACTIVITY_COMPLETED)
    times = [e.timestamp for e in [*failed, done]]
    assert [b - a for a, b in itertools.pairwise(times)] == [60, 180, 540]
    assert state["billed"] - state["trial_over"] == 780
    assert env.clock.now() == pytest.approx(state["billed"])
    assert elapsed < 2.0, f"took {elapsed:.2f} s of wall time"


async def test_timers_of_several_workflows_fire_in_time_order(env: WorkflowEnvironment) -> None:
    with env.clock.manual():  # both are asleep before time starts to skip
        long = await env.start_workflow(Nap, workflow_input={"hours": 3})
        short = await env.start_workflow(Nap, workflow_input={"hours": 2})
    await long.result(timeout=30)
    await short.result(timeout=30)

    fired = []
    for handle, name in [(long, "long"), (short, "short")]:
        for event in of_type(await handle.events(), EventType.TIMER_FIRED):
            fired.append((event.timestamp, name))
    start = (await long.events())[0].timestamp
    assert [(at - start, name) for at, name in sorted(fired)] == [
        (3600, "long"),
        (3600, "short"),
        (7200, "long"),
        (7200, "short"),
        (10800, "long"),
    ]
    # Every timer fired exactly when it was due.
    for handle in (long, short):
        events = await handle.events()
        due = {e.seq: e.payload["fire_at"] for e in of_type(events, EventType.TIMER_SCHEDULED)}
        assert all(
            e.timestamp == due[e.payload["scheduled"]]
            for e in events
            if e.type is EventType.TIMER_FIRED
        )


async def test_a_signal_wait_times_out_at_once_when_nobody_can_send(
    env: WorkflowEnvironment,
) -> None:
    handle = await env.start_workflow(Approval)
    state = await handle.result(timeout=30)
    assert state["answer"] == "expired"
    assert state["answered"] - state["asked"] == 48 * 3600


# ----------------------------------------------------------------------------- by hand


async def test_advance_moves_time_by_hand_firing_what_is_due_on_the_way(
    manual: WorkflowEnvironment,
) -> None:
    handle = await manual.start_workflow(Nap, workflow_input={"hours": 3})
    start = manual.clock.now()

    await manual.clock.advance(timedelta(minutes=30))
    assert await handle.state() == {}
    assert manual.clock.now() == start + 1800

    await manual.clock.advance(timedelta(hours=2))  # passes 1 h and 2 h on the way
    assert await handle.state() == {"h1": 3600, "h2": 7200}
    assert manual.clock.now() == start + 1800 + 7200
    assert await handle.status() is loom.WorkflowStatus.RUNNING

    await manual.clock.advance(3600)
    assert await handle.state() == {"h1": 3600, "h2": 7200, "h3": 10800}
    assert await handle.status() is loom.WorkflowStatus.COMPLETED


async def test_signals_sent_in_the_middle_of_a_long_wait(manual: WorkflowEnvironment) -> None:
    handle = await manual.start_workflow(Approval)
    await eventually(lambda: parked(handle, EventType.SIGNAL_WAIT_STARTED))
    asked = (await handle.state())["asked"]

    await manual.clock.advance(timedelta(hours=10))
    await handle.signal("remind")  # applied by the handler while the step waits
    await manual.clock.advance(timedelta(hours=37))
    await handle.signal("approve", "yes, by bob")
    state = await handle.result(timeout=30)

    assert state["reminded"] == [asked + 10 * 3600]
    assert state["answer"] == "yes, by bob"
    assert state["answered"] == asked + 47 * 3600


async def test_advance_fires_a_timer_that_races_a_running_activity(
    manual: WorkflowEnvironment, request: pytest.FixtureRequest
) -> None:
    key = request.node.name
    RELEASE[key] = asyncio.Event()
    try:
        handle = await manual.start_workflow(Race, workflow_input={"key": key})
        await eventually(lambda: _scheduled(handle, EventType.TIMER_SCHEDULED))
        # The activity runs (blocked): the timer does not skip by itself ...
        await manual.clock.advance(timedelta(minutes=59))
        assert await handle.status() is loom.WorkflowStatus.RUNNING
        # ... but time moved by hand passes it, while the activity still runs.
        await manual.clock.advance(timedelta(minutes=2))
        state = await handle.result(timeout=30)
    finally:
        RELEASE[key].set()
    assert state == {"winner": "deadline"}
    assert of_type(await handle.events(), EventType.ACTIVITY_CANCELED)


async def _scheduled(handle: loom.WorkflowHandle[Any], kind: EventType) -> bool:
    return any(e.type is kind for e in await handle.events())


async def test_the_virtual_clock_starts_where_it_is_told() -> None:
    start = datetime(2030, 1, 1, tzinfo=UTC)
    async with WorkflowEnvironment(start_time=start) as env:
        assert env.clock.datetime() == start
        handle = await env.start_workflow(Nap, workflow_input={"hours": 1}, tags={"team": "a"})
        await handle.result(timeout=30)
        assert env.clock.datetime() == start + timedelta(hours=1)
        assert await handle.tags() == {"team": "a"}
        assert (await handle.events())[0].timestamp == start.timestamp()


@pytest.mark.parametrize(
    "delta", [-1, math.nan, math.inf, timedelta(days=-1), 10**12, "1h", True, None]
)
async def test_advance_refuses_what_is_not_a_duration(delta: Any) -> None:
    clock = VirtualClock(0)
    with pytest.raises(loom.ConfigurationError):
        await clock.advance(delta)
    assert clock.now() == 0


@pytest.mark.parametrize(
    "start", [datetime(2030, 1, 1), math.nan, math.inf, -1.0, 1e20, "2030-01-01", True]
)
def test_a_clock_refuses_a_start_it_cannot_show(start: Any) -> None:
    with pytest.raises(loom.ConfigurationError):
        VirtualClock(start)


async def test_an_environment_not_entered_says_so() -> None:
    env = WorkflowEnvironment()
    with pytest.raises(loom.ConfigurationError, match="not running"):
        await env.start_workflow(Nap, workflow_input={"hours": 1})
    async with env:
        with pytest.raises(loom.ConfigurationError, match="running already"):
            await env.start()
    with pytest.raises(loom.ConfigurationError, match="own clock"):
        WorkflowEnvironment(clock=VirtualClock())


# ------------------------------------------------------------------------------- mocks


@dataclass
class Refundable:
    receipt: str
    cents: int


async def test_a_mock_replaces_an_activity_in_its_environment_only(db_url: str) -> None:
    REAL_CALLS.clear()
    async with WorkflowEnvironment(db_url) as env:
        mock = env.mock_activity(charge, returns="receipt-mocked")
        handle = await env.start_workflow(Subscription, workflow_input={"customer": "bea"})
        state = await handle.result(timeout=30)
        assert not of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert state["receipt"] == "receipt-mocked"
    assert mock.calls == [(("bea", 42), {})]
    assert REAL_CALLS == []

    # Elsewhere the real activity runs: in another environment, and called directly.
    async with WorkflowEnvironment() as other:
        FLAKY["cid"] = 3
        handle = await other.start_workflow(Subscription, workflow_input={"customer": "cid"})
        assert (await handle.result(timeout=30))["receipt"] == "receipt-cid-42"
    assert await refund("r-9") is True
    assert REAL_CALLS == ["cid", "r-9"]


async def test_a_mock_function_gets_the_arguments_rebuilt_by_its_annotations(
    env: WorkflowEnvironment,
) -> None:
    seen: list[Any] = []

    def fake_refund(receipt: Refundable) -> bool:  # sync: runs on the worker's threads
        seen.append(receipt)
        return receipt.cents > 0

    mock = env.mock_activity("tenv_refund", fake_refund)
    handle = await env.start_workflow(
        Refund, workflow_input={"receipt": {"receipt": "r-1", "cents": 250}}
    )
    assert await handle.result(timeout=30) == {"refunded": True}
    assert seen == [Refundable("r-1", 250)]
    assert mock.call_count == 1


async def test_a_mock_that_raises_goes_through_the_activity_retry_policy(
    env: WorkflowEnvironment,
) -> None:
    mock = env.mock_activity(refund, raises=ConnectionError("bank offline"))
    handle = await env.start_workflow(Refund, workflow_input={"receipt": "r-2"})
    state = await handle.result(timeout=30)
    assert state["failed"] == [3, "ConnectionError", "bank offline"]
    assert mock.call_count == 3  # retry_count=2
    waits = [e.timestamp for e in of_type(await handle.events(), EventType.ACTIVITY_FAILED)]
    assert [b - a for a, b in itertools.pairwise(waits)] == [30, 60]

    env.mock_activity(refund, raises=ValueError)  # non_retryable: one attempt; replaces the first
    again = await env.start_workflow(Refund, workflow_input={"receipt": "r-3"})
    assert (await again.result(timeout=30))["failed"][:2] == [1, "ValueError"]
    assert mock.call_count == 3


async def test_a_mock_that_raises_cancelled_error_fails_the_attempt_once(
    env: WorkflowEnvironment,
) -> None:
    mock = env.mock_activity(refund, raises=asyncio.CancelledError)
    handle = await env.start_workflow(Refund, workflow_input={"receipt": "r-4"})
    state = await handle.result(timeout=30)
    assert state["failed"][:2] == [1, "CancelledError"]
    assert mock.call_count == 1  # not started again and again


async def test_mocking_refuses_what_it_cannot_run() -> None:
    async with WorkflowEnvironment() as env:
        with pytest.raises(loom.ConfigurationError, match="exactly one"):
            env.mock_activity(refund)
        with pytest.raises(loom.ConfigurationError, match="exactly one"):
            env.mock_activity(refund, returns=1, raises=ValueError)
        with pytest.raises(loom.ConfigurationError, match=r"no activity named 'nope\\x00'"):
            env.mock_activity("nope\x00", returns=1)
        with pytest.raises(loom.DefinitionError, match="not an activity"):
            env.mock_activity(print, returns=1)
        with pytest.raises(loom.PayloadError, match="nan"):
            env.mock_activity(refund, returns=math.nan)
        with pytest.raises(loom.ConfigurationError, match="exception"):
            env.mock_activity(refund, raises="boom")  # type: ignore[arg-type]
        with pytest.raises(loom.ConfigurationError, match="callable"):
            env.mock_activity(refund, 42)  # type: ignore[arg-type]
        # Nothing was installed by the refused calls.
        handle = await env.start_workflow(Refund, workflow_input={"receipt": "r-5"})
        assert await handle.result(timeout=30) == {"refunded": True}


async def test_the_loom_env_fixture_runs_a_month_in_a_test(
    loom_env: WorkflowEnvironment,
) -> None:
    loom_env.mock_activity(charge, returns="receipt-fixture")
    handle = await loom_env.start_workflow(Subscription, workflow_input={"customer": "dee"})
    state = await handle.result(timeout=30)
    assert state["receipt"] == "receipt-fixture"
    assert state["trial_over"] - state["started"] == 30 * DAY
    assert loom_env.database.url == "sqlite:///:memory:"


# ------------------------------------------------------------------- the rule while running


async def test_time_does_not_skip_while_an_activity_runs(
    env: WorkflowEnvironment, request: pytest.FixtureRequest
) -> None:
    key = request.node.name
    RELEASE[key] = asyncio.Event()
    try:
        handle = await env.start_workflow(Race, workflow_input={"key": key})
        await eventually(lambda: _scheduled(handle, EventType.TIMER_SCHEDULED))
        before = env.clock.now()
        # The activity awaits its I/O for a while: the hour-long timer racing it does not fire.
        for _ in range(20):
            await asyncio.sleep(0.01)
            assert env.clock.now() == before
        assert await handle.status() is loom.WorkflowStatus.RUNNING
    finally:
        RELEASE[key].set()
    assert await handle.result(timeout=30) == {"winner": "quote"}
    assert env.clock.now() == before


@loom.activity(name="tenv_deadline", timeout_seconds=60)
async def deadline_seen() -> float | None:
    return loom.activity_info().deadline


@loom.workflow(name="tenv_Deadline")
class Deadline(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def later(self, ctx: Ctx) -> None:
        await ctx.sleep(timedelta(days=10))
        await ctx.state.set("deadline", await ctx.activity(deadline_seen))


async def test_an_activity_sees_its_deadline_on_the_virtual_clock(
    env: WorkflowEnvironment,
) -> None:
    handle = await env.start_workflow(Deadline)
    state = await handle.result(timeout=30)
    assert state["deadline"] == START.timestamp() + 10 * DAY + 60


def test_the_pytest_plugin_is_registered_through_an_entry_point() -> None:
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    plugins = pyproject["project"]["entry-points"]["pytest11"]
    assert plugins == {"loom": "loom.testing.pytest_plugin"}
