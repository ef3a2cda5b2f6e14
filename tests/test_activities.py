"""Activities run by a real worker on SQLite: retries with backoff, timeouts, non-retryable
errors, failures seen by the step, threads for sync code, parallel calls and typed results."""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest

import loom
from loom import EventType
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

# Executions per workflow input key: what really ran, whatever the history says.
calls: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Each test (and each backend's run of it) counts its own executions."""
    calls.clear()


# ------------------------------------------------------------------ retry with backoff


@loom.activity(
    name="acts_flaky", retry_count=3, retry_delay=0.02, retry_backoff=2.0, timeout_seconds=5
)
async def acts_flaky(key: str, failures: int) -> str:
    calls[key] += 1
    if calls[key] <= failures:
        raise ConnectionError(f"attempt {calls[key]} refused")
    return f"ok after {calls[key]}"


@loom.workflow(name="acts_Flaky")
class ActsFlaky(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def call(self, ctx: Ctx) -> None:
        result = await ctx.activity(acts_flaky, ctx.input["key"], ctx.input["failures"])
        await ctx.state.set("result", result)


async def test_retries_back_off_exponentially_then_succeed(db: loom.Database) -> None:
    handle = await db.start_workflow(ActsFlaky, workflow_input={"key": "backoff", "failures": 3})
    async with worker(db):
        state = await handle.result(timeout=10)

    assert state == {"result": "ok after 4"}
    assert calls["backoff"] == 4
    events = await handle.events()
    [scheduled] = of_type(events, EventType.ACTIVITY_SCHEDULED)
    failed = of_type(events, EventType.ACTIVITY_FAILED)
    [completed] = of_type(events, EventType.ACTIVITY_COMPLETED)

    assert [e.payload["attempt"] for e in failed] == [1, 2, 3]
    assert all(e.payload["scheduled"] == scheduled.seq for e in failed)
    assert [e.payload["error"]["type"] for e in failed] == ["ConnectionError"] * 3
    assert failed[0].payload["error"]["message"] == "attempt 1 refused"
    # The n-th retry waits retry_delay * backoff ** (n - 1): 0.02, 0.04, 0.08 s after its
    # attempt failed. An event is stamped when written, at or after the failure, so retry_at
    # lies at most that far after the stamp; and an attempt starts no earlier than the last
    # retry_at, so consecutive retry times lie at least the next delay apart. Both bounds hold
    # however late a loaded machine runs the worker.
    delays = [0.02, 0.04, 0.08]
    retry_at = [e.payload["retry_at"] for e in failed]
    eps = 0.002
    for event, at, delay in zip(failed, retry_at, delays, strict=True):
        assert at - event.timestamp <= delay + eps
    for (a, b), delay in zip(itertools.pairwise(retry_at), delays[1:], strict=True):
        assert b - a >= delay - eps
    # ... and no attempt ran before its retry time.
    outcomes = [*failed, completed]
    for before, after in itertools.pairwise(outcomes):
        assert after.timestamp >= before.payload["retry_at"]

    assert completed.payload["attempt"] == 4
    assert completed.payload["scheduled"] == scheduled.seq
    assert completed.payload["result"] == "ok after 4"
    assert completed.seq > failed[-1].seq


# ---------------------------------------------------------------------------- timeout

timed_out_finished: set[str] = set()


@loom.activity(name="acts_slow", timeout_seconds=0.2)
async def acts_slow(key: str) -> None:
    calls[key] += 1
    await asyncio.sleep(5)
    timed_out_finished.add(key)


@loom.workflow(name="acts_Slow")
class ActsSlow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="wait_for_slow")
    async def call(self, ctx: Ctx) -> None:
        await ctx.activity(acts_slow, ctx.input["key"])


async def test_timeout_is_enforced_and_recorded_as_timeout_error(db: loom.Database) -> None:
    handle = await db.start_workflow(ActsSlow, workflow_input={"key": "timeout"})
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=4)
    assert loop.time() - began < 4  # it did not wait for the 5 s sleep
    assert calls["timeout"] == 1
    assert "timeout" not in timed_out_finished

    [failed] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert failed.payload["error"]["type"] == "TimeoutError"
    assert "0.2" in failed.payload["error"]["message"]
    # Where the activity was when its time ran out.
    assert "in acts_slow" in failed.payload["error"]["traceback"]
    assert "asyncio.sleep(5)" in failed.payload["error"]["traceback"]
    assert failed.payload["retry_at"] is None
    cause = info.value.cause
    assert cause["step"] == "wait_for_slow"
    assert cause["type"] == "ActivityFailedError"
    assert "TimeoutError" in cause["message"]


# ----------------------------------------------------------------------- non-retryable


class PermanentError(Exception):
    pass


@loom.activity(
    name="acts_permanent", retry_count=5, retry_delay=0.01, non_retryable=(PermanentError,)
)
async def acts_permanent(key: str) -> None:
    calls[key] += 1
    raise PermanentError("card declined")


@loom.workflow(name="acts_Permanent")
class ActsPermanent(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        await ctx.activity(acts_permanent, ctx.input["key"])


async def test_non_retryable_error_stops_retries_at_once(db: loom.Database) -> None:
    handle = await db.start_workflow(ActsPermanent, workflow_input={"key": "permanent"})
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)

    assert calls["permanent"] == 1
    [failed] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert failed.payload["attempt"] == 1
    assert failed.payload["retry_at"] is None
    error = failed.payload["error"]
    assert {k: error[k] for k in ("type", "message", "cause")} == {
        "type": "PermanentError",
        "message": "card declined",
        "cause": None,
    }
    assert error["traceback"].endswith("PermanentError: card declined\n")
    assert "in acts_permanent" in error["traceback"]
    assert set(error) == {"type", "message", "traceback", "cause"}
    assert "card declined" in info.value.cause["message"]


# ----------------------------------------------------- exhausted retries: compensate or fail


@loom.activity(name="acts_always_fails", retry_count=1, retry_delay=0.01)
async def acts_always_fails(key: str) -> None:
    calls[key] += 1
    raise RuntimeError("inventory service down")


@loom.activity(name="acts_refund")
async def acts_refund(key: str) -> str:
    calls[key + ":refund"] += 1
    return "refunded"


@loom.workflow(name="acts_Compensating")
class ActsCompensating(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        try:
            await ctx.activity(acts_always_fails, ctx.input["key"])
        except loom.ActivityFailedError as exc:
            await ctx.state.set(
                "failure",
                {
                    "activity": exc.activity,
                    "step": exc.step,
                    "attempts": exc.attempts,
                    "error_type": exc.error_type,
                    "error_message": exc.error_message,
                },
            )
            await ctx.state.set("compensation", await ctx.activity(acts_refund, ctx.input["key"]))

    @loom.step
    async def after(self, ctx: Ctx) -> None:
        await ctx.state.set("after_ran", True)


@loom.workflow(name="acts_Uncaught")
class ActsUncaught(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="reserve_stock")
    async def reserve(self, ctx: Ctx) -> None:
        await ctx.activity(acts_always_fails, ctx.input["key"])

    @loom.step
    async def never(self, ctx: Ctx) -> None:
        await ctx.state.set("never_ran", False)


async def test_exhausted_retries_raise_in_the_step_which_can_compensate(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(ActsCompensating, workflow_input={"key": "compensate"})
    async with worker(db):
        state = await handle.result(timeout=10)

    assert await handle.status() == loom.WorkflowStatus.COMPLETED
    assert state["failure"] == {
        "activity": "acts_always_fails",
        "step": "reserve",
        "attempts": 2,
        "error_type": "RuntimeError",
        "error_message": "inventory service down",
    }
    assert state["compensation"] == "refunded"
    assert state["after_ran"] is True
    assert calls["compensate"] == 2
    assert calls["compensate:refund"] == 1


async def test_uncaught_activity_failure_fails_the_workflow(db: loom.Database) -> None:
    handle = await db.start_workflow(ActsUncaught, workflow_input={"key": "uncaught"})
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)

    assert await handle.status() == loom.WorkflowStatus.FAILED
    cause = info.value.cause
    assert cause["step"] == "reserve_stock"
    assert cause["type"] == "ActivityFailedError"
    assert "acts_always_fails" in cause["message"]
    assert "RuntimeError: inventory service down" in cause["message"]
    assert "reserve_stock" in str(info.value)
    assert info.value.workflow_id == handle.workflow_id

    events = await handle.events()
    assert events[-1].type is EventType.WORKFLOW_FAILED
    assert events[-1].payload["error"]["step"] == "reserve_stock"
    started = [e.payload["step"] for e in of_type(events, EventType.STEP_STARTED)]
    assert started == ["reserve_stock"]
    assert "never_ran" not in await handle.state()


# --------------------------------------------------------------------- sync activities


@loom.activity(name="acts_sync_where")
def acts_sync_where(tag: str) -> dict[str, Any]:
    thread = threading.current_thread()
    return {"tag": tag, "main": thread is threading.main_thread(), "thread": thread.name}


@loom.workflow(name="acts_Sync")
class ActsSync(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def call(self, ctx: Ctx) -> None:
        await ctx.state.set("where", await ctx.activity(acts_sync_where, "t1"))


async def test_sync_activity_runs_in_a_thread(db: loom.Database) -> None:
    assert threading.current_thread() is threading.main_thread()
    handle = await db.start_workflow(ActsSync)
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state["where"]["tag"] == "t1"
    assert state["where"]["main"] is False
    assert state["where"]["thread"] != threading.main_thread().name


# --------------------------------------------------------------------- parallel calls


@loom.activity(name="acts_echo_after")
async def acts_echo_after(tag: str, delay: float) -> str:
    await asyncio.sleep(delay)
    return tag.upper()


@loom.workflow(name="acts_Gather")
class ActsGather(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def fan_out(self, ctx: Ctx) -> None:
        results = await asyncio.gather(
            ctx.activity(acts_echo_after, "a", 0.3),
            ctx.activity(acts_echo_after, "b", 0.0),
            ctx.activity(acts_echo_after, "c", 0.15),
        )
        await ctx.state.set("results", list(results))


async def test_gather_runs_activities_together_and_keeps_argument_order(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(ActsGather)
    async with worker(db):
        state = await handle.result(timeout=10)

    assert state["results"] == ["A", "B", "C"]
    events = await handle.events()
    scheduled = of_type(events, EventType.ACTIVITY_SCHEDULED)
    completed = of_type(events, EventType.ACTIVITY_COMPLETED)
    assert [e.payload["args"][0] for e in scheduled] == ["a", "b", "c"]
    # All three were scheduled before any finished, and they finished in another order.
    assert max(e.seq for e in scheduled) < min(e.seq for e in completed)
    by_seq = {e.seq: e.payload["args"][0] for e in scheduled}
    assert [by_seq[e.payload["scheduled"]] for e in completed] == ["b", "c", "a"]
    # Run concurrently: the whole fan-out took about the longest call, not the sum.
    assert completed[-1].timestamp - scheduled[0].timestamp < 0.45 + 0.15


# ----------------------------------------------------------------------- typed results


@dataclass
class Parcel:
    sku: str
    weight: float


class Quote(pydantic.BaseModel):
    carrier: str
    price_cents: int


@loom.activity(name="acts_pack")
async def acts_pack(sku: str) -> Parcel:
    return Parcel(sku=sku, weight=1.5)


@loom.activity(name="acts_quote")
async def acts_quote(parcel: Parcel) -> Quote:
    # The dataclass argument arrives rebuilt from its stored JSON.
    assert isinstance(parcel, Parcel), type(parcel)
    return Quote(carrier="ACME", price_cents=int(parcel.weight * 1000))


@loom.workflow(name="acts_Typed")
class ActsTyped(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        parcel = await ctx.activity(acts_pack, "SKU-1")
        quote = await ctx.activity(acts_quote, parcel)
        await ctx.state.set(
            "seen",
            {
                "parcel_type": type(parcel).__name__,
                "parcel_weight": parcel.weight,
                "quote_type": type(quote).__name__,
                "quote_carrier": quote.carrier,
            },
        )
        await ctx.state.set("quote", quote)


async def test_dataclass_and_pydantic_results_come_back_as_their_types(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(ActsTyped)
    async with worker(db):
        state = await handle.result(timeout=10)

    assert state["seen"] == {
        "parcel_type": "Parcel",
        "parcel_weight": 1.5,
        "quote_type": "Quote",
        "quote_carrier": "ACME",
    }
    # Stored as plain JSON.
    assert state["quote"] == {"carrier": "ACME", "price_cents": 1500}
    completed = of_type(await handle.events(), EventType.ACTIVITY_COMPLETED)
    assert completed[0].payload["result"] == {"sku": "SKU-1", "weight": 1.5}


# ------------------------------------------------- TimeoutError and non_retryable


class GatewayTimeout(TimeoutError):
    pass


@loom.activity(
    name="acts_gateway", retry_count=3, retry_delay=0.01, non_retryable=(GatewayTimeout,)
)
async def acts_gateway(key: str) -> None:
    calls[key] += 1
    raise GatewayTimeout("upstream gave up")


@loom.activity(
    name="acts_plain_timeout", retry_count=1, retry_delay=0.01, non_retryable=(GatewayTimeout,)
)
async def acts_plain_timeout(key: str) -> None:
    calls[key] += 1
    raise TimeoutError("read timed out")


@loom.activity(name="acts_overrun", retry_count=1, retry_delay=0.01, timeout_seconds=0.1)
async def acts_overrun(key: str) -> None:
    calls[key] += 1
    await asyncio.sleep(5)


@loom.activity(
    name="acts_overrun_final",
    retry_count=3,
    retry_delay=0.01,
    timeout_seconds=0.1,
    non_retryable=(TimeoutError,),
)
def acts_overrun_final(key: str) -> None:
    calls[key] += 1
    time.sleep(0.5)


TIMEOUT_CASES = {
    "gateway": acts_gateway,
    "plain": acts_plain_timeout,
    "overrun": acts_overrun,
    "overrun_final": acts_overrun_final,
}


@loom.workflow(name="acts_TimeoutCases")
class ActsTimeoutCases(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def call(self, ctx: Ctx) -> None:
        await ctx.activity(TIMEOUT_CASES[ctx.input["case"]], ctx.input["key"])


@pytest.mark.parametrize(
    ("case", "attempts", "error_type", "message"),
    [
        # Listed as non_retryable: a TimeoutError subclass the activity raised is not retried.
        ("gateway", 1, "GatewayTimeout", "upstream gave up"),
        # A TimeoutError the activity raised that is not listed is retried as usual.
        ("plain", 2, "TimeoutError", "read timed out"),
        # Loom's own attempt timeout is retryable by default ...
        ("overrun", 2, "TimeoutError", "timed out after 0.1 s"),
        # ... and not when TimeoutError itself is listed (here a sync activity).
        ("overrun_final", 1, "TimeoutError", "timed out after 0.1 s"),
    ],
)
async def test_non_retryable_holds_for_timeout_errors(
    db: loom.Database, case: str, attempts: int, error_type: str, message: str
) -> None:
    handle = await db.start_workflow(ActsTimeoutCases, workflow_input={"case": case, "key": case})
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)

    assert calls[case] == attempts
    failed = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert [e.payload["attempt"] for e in failed] == list(range(1, attempts + 1))
    assert failed[-1].payload["retry_at"] is None
    assert {(e.payload["error"]["type"], e.payload["error"]["message"]) for e in failed} == {
        (error_type, message)
    }
    assert f"{attempts} attempt(s): {error_type}: {message}" in info.value.cause["message"]


# ------------------------------------------------------ the worker's activity threads

running_now = 0
running_peak = 0
running_lock = threading.Lock()


@pytest.fixture(autouse=True)
def _fresh_peak() -> None:
    global running_now, running_peak
    running_now = running_peak = 0


@loom.activity(name="acts_sync_nap", timeout_seconds=1.5)
def acts_sync_nap(tag: int, seconds: float) -> int:
    global running_now, running_peak
    with running_lock:
        running_now += 1
        running_peak = max(running_peak, running_now)
    try:
        time.sleep(seconds)
    finally:
        with running_lock:
            running_now -= 1
    return tag


@loom.workflow(name="acts_SyncFanOut")
class ActsSyncFanOut(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def fan_out(self, ctx: Ctx) -> None:
        seconds = ctx.input["seconds"]
        results = await asyncio.gather(*(ctx.activity(acts_sync_nap, i, seconds) for i in range(8)))
        await ctx.state.set("results", list(results))


def test_activity_threads_default_to_four_per_workflow_slot_and_at_least_eight(
    tmp_path: Any,
) -> None:
    database = loom.Database(f"sqlite:///{tmp_path / 'loom.db'}")
    assert loom.Worker(database, concurrency=1).activity_pool.size == 8
    assert loom.Worker(database, concurrency=4).activity_pool.size == 16
    assert loom.Worker(database, activity_threads=3).activity_pool.size == 3
    with pytest.raises(loom.LoomError, match="activity_threads"):
        loom.Worker(database, activity_threads=0)


async def test_sync_activities_run_at_once_on_the_workers_own_threads(db: loom.Database) -> None:
    # Eight 0.6 s sync activities with a 1 s timeout: none waits for a thread, none times out.
    handle = await db.start_workflow(ActsSyncFanOut, workflow_input={"seconds": 0.6})
    async with loom.Worker(db, concurrency=2, poll_interval=0.05):
        state = await handle.result(timeout=10)
    assert state["results"] == list(range(8))
    assert running_peak == 8
    assert not of_type(await handle.events(), EventType.ACTIVITY_FAILED)


async def test_timeout_counts_from_when_a_thread_picks_the_attempt_up(db: loom.Database) -> None:
    # Four threads for eight 0.9 s activities: the second four wait 0.9 s for a thread, then
    # run 0.9 s. 1.8 s after being queued, but 0.9 s after starting: within the 1.5 s timeout.
    handle = await db.start_workflow(ActsSyncFanOut, workflow_input={"seconds": 0.9})
    began = time.monotonic()
    async with loom.Worker(db, poll_interval=0.05, activity_threads=4):
        state = await handle.result(timeout=10)
    assert time.monotonic() - began >= 1.8
    assert state["results"] == list(range(8))
    assert running_peak == 4
    assert not of_type(await handle.events(), EventType.ACTIVITY_FAILED)


hog_release = threading.Event()


@loom.activity(name="acts_hog", timeout_seconds=0.2)
def acts_hog(key: str) -> None:
    calls[key] += 1
    hog_release.wait(10)


@loom.activity(name="acts_late", timeout_seconds=0.2)
def acts_late(key: str) -> str:
    calls[key] += 1
    return "ran"


@loom.workflow(name="acts_StuckPool")
class ActsStuckPool(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def starve(self, ctx: Ctx) -> None:
        for name, fn in (("hog", acts_hog), ("late", acts_late)):
            try:
                await ctx.activity(fn, name)
            except loom.ActivityFailedError as exc:
                await ctx.state.set(name, exc.error_message)

    @loom.step
    async def after_release(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("released")
        await ctx.state.set("late_again", await ctx.activity(acts_late, "late"))


async def test_an_attempt_that_gets_no_thread_in_time_never_runs(
    db: loom.Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="loom.worker")
    hog_release.clear()
    handle = await db.start_workflow(ActsStuckPool)
    try:
        async with loom.Worker(db, poll_interval=0.05, activity_threads=1) as w:

            async def starved() -> bool:
                return "late" in await handle.state()

            await eventually(starved, timeout=10)
            state = await handle.state()
            # The hog timed out; its thread cannot be stopped and still holds the only slot.
            assert state["hog"] == "timed out after 0.2 s"
            assert w.stats.activity_threads_stuck == 1
            assert w.stats.activity_pool_exhausted == 1
            [warning] = [r for r in caplog.records if "activity threads are held" in r.message]
            assert "all 1 activity threads" in warning.message
            # The next activity got no thread within its timeout: withdrawn, it never ran.
            assert state["late"].startswith("did not start within 0.2 s")
            assert "1 held by timed-out or cancelled attempts" in state["late"]
            assert calls["late"] == 0

            hog_release.set()

            async def returned() -> bool:
                return w.stats.activity_threads_stuck == 0

            await eventually(returned)
            await handle.signal("released", None)
            state = await handle.result(timeout=10)
    finally:
        hog_release.set()
    # The withdrawn attempt did not run once a thread was free: only the new call did.
    assert state["late_again"] == "ran"
    assert calls["late"] == 1
    assert calls["hog"] == 1
    failed = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    hog_failure = failed[0].payload["error"]
    assert hog_failure["type"] == "TimeoutError"
    # Where the sync activity was when it timed out.
    assert "in acts_hog" in hog_failure["traceback"]
    assert "hog_release.wait(10)" in hog_failure["traceback"]


blocker_release = threading.Event()


@loom.activity(name="acts_blocker", timeout_seconds=None)
def acts_blocker(key: str) -> None:
    calls[key] += 1
    blocker_release.wait(10)


@loom.workflow(name="acts_QueuedThenCanceled")
class ActsQueuedThenCanceled(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def both(self, ctx: Ctx) -> None:
        await asyncio.gather(ctx.activity(acts_blocker, "blocker"), ctx.activity(acts_late, "q"))


async def test_an_interrupted_attempt_waiting_for_a_thread_never_runs(db: loom.Database) -> None:
    blocker_release.clear()
    handle = await db.start_workflow(ActsQueuedThenCanceled)
    try:
        async with loom.Worker(db, poll_interval=0.05, activity_threads=1) as w:

            async def blocking() -> bool:
                return calls["blocker"] == 1

            await eventually(blocking)
            await handle.cancel("changed my mind")  # the second activity still waits for a thread

            async def canceled() -> bool:
                return await handle.status() == loom.WorkflowStatus.CANCELED

            await eventually(canceled)
            blocker_release.set()
            # The pool runs in order: once this has run, the withdrawn attempt would have too.
            await asyncio.wrap_future(w.activity_pool.submit(lambda: None))
    finally:
        blocker_release.set()
    assert calls["q"] == 0
