"""Activities that know who they are and can be stopped: ``loom.activity_info()``,
``loom.heartbeat()`` and ``heartbeat_timeout``, on both backends.

What an attempt sees (sync and async), heartbeat details reaching the next attempt (in the same
claim, in a later claim read back from the database, and in another worker after a SIGKILL),
the heartbeat timeout firing long before ``timeout_seconds``, what ``handle.heartbeats()``
shows, the values refused, and calls outside an activity. Cancellation is in
``test_activity_cancel.py``.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import os
import signal
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest

import crashload
import loom
from loom import EventType
from loom.core.calls import ActivityRun
from loom.definitions import activity_definition
from loom.heartbeats import HeartbeatKeeper
from loom.store.base import ActivityHeartbeat, CommitOutcome
from support import eventually, of_type, worker
from support.workers import read_text, spawn_crashload_worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

# What the activities saw, per test key (each test and backend has its own).
seen: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
processed: dict[str, list[int]] = collections.defaultdict(list)


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return request.node.name


def snapshot() -> dict[str, Any]:
    info = loom.activity_info()
    return {
        "workflow_id": info.workflow_id,
        "activity": info.activity_name,
        "seq": info.seq,
        "step": info.step,
        "attempt": info.attempt,
        "deadline": info.deadline,
        "heartbeat_timeout": info.heartbeat_timeout,
        "details": info.heartbeat_details,
        "cancelled": info.is_cancelled(),
        "thread": threading.current_thread().name,
        "at": time.time(),
    }


# ----------------------------------------------------------------------- activity_info()


@loom.activity(name="hb_info_async", timeout_seconds=30)
async def hb_info_async(key: str) -> None:
    seen[key].append(snapshot())


@loom.activity(name="hb_info_sync", timeout_seconds=20, heartbeat_timeout=5)
def hb_info_sync(key: str) -> None:
    seen[key].append(snapshot())


@loom.activity(name="hb_info_unlimited", timeout_seconds=None)
async def hb_info_unlimited(key: str) -> None:
    seen[key].append(snapshot())


@loom.workflow(name="hb_Info")
class HbInfo(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="look")
    async def look(self, ctx: Ctx) -> None:
        await ctx.activity(hb_info_async, ctx.input["key"])
        await ctx.activity(hb_info_sync, ctx.input["key"])
        await ctx.activity(hb_info_unlimited, ctx.input["key"])


async def test_an_attempt_knows_its_workflow_activity_attempt_and_deadline(
    db: loom.Database, key: str
) -> None:
    handle = await db.start_workflow(HbInfo, workflow_input={"key": key}, workflow_id=f"{key}-1")
    async with worker(db):
        await handle.result(timeout=10)

    scheduled = {
        e.payload["name"]: e.seq
        for e in of_type(await handle.events(), EventType.ACTIVITY_SCHEDULED)
    }
    got = {s["activity"]: s for s in seen[key]}
    assert set(got) == {"hb_info_async", "hb_info_sync", "hb_info_unlimited"}
    for name, snap in got.items():
        assert snap["workflow_id"] == handle.workflow_id
        assert snap["seq"] == scheduled[name]
        assert snap["step"] == "look"
        assert snap["attempt"] == 1
        assert snap["details"] is None
        assert snap["cancelled"] is False
    # The deadline is the attempt's timeout, counted from when it started running.
    assert got["hb_info_async"]["deadline"] == pytest.approx(got["hb_info_async"]["at"] + 30, abs=1)
    assert got["hb_info_sync"]["deadline"] == pytest.approx(got["hb_info_sync"]["at"] + 20, abs=1)
    assert got["hb_info_unlimited"]["deadline"] is None
    assert got["hb_info_sync"]["heartbeat_timeout"] == 5
    assert got["hb_info_async"]["heartbeat_timeout"] is None
    # The sync one ran on one of the worker's activity threads, in a copy of the context.
    assert got["hb_info_sync"]["thread"].startswith("loom-activity-")
    assert not got["hb_info_async"]["thread"].startswith("loom-activity-")


# ------------------------------------------------------ details reach the next attempt


def resume_items(key: str, items: int, fail_at: list[int], pause: float = 0.0) -> int:
    """A long job over ``items`` that heartbeats after each one and resumes from its details;
    attempt n fails when it reaches item ``fail_at[n - 1]``."""
    info = loom.activity_info()
    start = info.heartbeat_details["next"] if info.heartbeat_details else 0
    seen[key].append({"attempt": info.attempt, "start": start, "details": info.heartbeat_details})
    for item in range(start, items):
        if item == fail_at[info.attempt - 1]:
            raise ConnectionError(f"lost the connection at item {item}")
        time.sleep(pause)
        processed[key].append(item)
        loom.heartbeat({"next": item + 1})
        loom.heartbeat()  # a heartbeat without details keeps the last ones
    return start


@loom.activity(name="hb_resume_async", retry_count=3, retry_delay=0, timeout_seconds=30)
async def hb_resume_async(key: str, items: int, fail_at: list[int]) -> int:
    return resume_items(key, items, fail_at)


@loom.activity(name="hb_resume_sync", retry_count=3, retry_delay=0, timeout_seconds=30)
def hb_resume_sync(key: str, items: int, fail_at: list[int]) -> int:
    return resume_items(key, items, fail_at)


@loom.activity(name="hb_resume_later", retry_count=3, retry_delay=0.2, timeout_seconds=30)
def hb_resume_later(key: str, items: int, fail_at: list[int]) -> int:
    # Items slower than the loop: only the first beat of an attempt is written at once, the
    # last one only when the attempt fails (heartbeats are written at most once a second).
    return resume_items(key, items, fail_at, pause=0.05)


RESUMERS = {"async": hb_resume_async, "sync": hb_resume_sync, "later": hb_resume_later}


@loom.workflow(name="hb_Resume")
class HbResume(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        fn = RESUMERS[ctx.input["kind"]]
        started = await ctx.activity(fn, ctx.input["key"], 8, [3, 5, -1])
        await ctx.state.set("last_start", started)


@pytest.mark.parametrize("cache_size", [0, 1000], ids=["replayed", "cached"])
@pytest.mark.parametrize("kind", sorted(RESUMERS))
async def test_a_retried_attempt_resumes_from_the_last_heartbeat_details(
    db: loom.Database, key: str, kind: str, cache_size: int
) -> None:
    """``later`` waits out a retry delay: the workflow parks between attempts, so the next
    attempt runs in a new claim and reads the details back from the database, whether the
    worker kept the parked execution (cached) or replays it."""
    handle = await db.start_workflow(
        HbResume, workflow_input={"key": key, "kind": kind}, workflow_id=key
    )
    async with worker(db, cache_size=cache_size):
        state = await handle.result(timeout=15)

    assert state == {"last_start": 5}
    assert [(s["attempt"], s["start"]) for s in seen[key]] == [(1, 0), (2, 3), (3, 5)]
    assert [s["details"] for s in seen[key]] == [None, {"next": 3}, {"next": 5}]
    assert processed[key] == list(range(8))  # no item done twice, none skipped
    failed = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert [e.payload["attempt"] for e in failed] == [1, 2]
    assert await handle.heartbeats() == []  # deleted with the workflow's end


# ------------------------------------------------------------------ handle.heartbeats()

release: dict[str, threading.Event] = collections.defaultdict(threading.Event)


@loom.activity(name="hb_progress", timeout_seconds=30)
def hb_progress(key: str) -> str:
    done = 0
    while not release[key].is_set():
        done += 1
        loom.heartbeat({"done": done, "note": "ünïcödé ✓ a\x00b"} if done <= 3 else None)
        time.sleep(0.01)
    return "released"


@loom.workflow(name="hb_Progress")
class HbProgress(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="crunch")
    async def crunch(self, ctx: Ctx) -> None:
        await ctx.state.set("outcome", await ctx.activity(hb_progress, ctx.input["key"]))


class _RecordingStore:
    """Just what a HeartbeatKeeper writes to."""

    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def record_heartbeat(self, workflow_id: str, lease_epoch: int, row: Any) -> Any:
        self.rows.append(row)
        return CommitOutcome.OK


async def test_a_finished_attempt_is_freed_at_once() -> None:
    """An attempt's control (what activity_info() and heartbeat() reach) forms no reference
    cycle with the worker's side of its heartbeats: it is freed as soon as the attempt ends,
    not by the garbage collector's pauses on the worker's event loop."""
    store = _RecordingStore()
    keeper = HeartbeatKeeper(
        store,  # type: ignore[arg-type]
        "wf-freed",
        1,
        first_claim=True,
        max_bytes=1024,
        interrupt=lambda workflow_id, *, lease_lost: None,
    )
    run = ActivityRun(3, activity_definition(hb_info_async), ["k"], {}, "look")
    gc.collect()
    gc.disable()
    try:
        control = keeper.control(run)
        control.start()
        control.beat({"done": 1})
        await eventually(lambda: len(store.rows) == 1)
        await keeper.finish(run.seq, failed=False)
        freed = weakref.ref(control)
        del control
        assert freed() is None
    finally:
        gc.enable()
    assert keeper.known[3] == ("hb_info_async", '{"done":1}')  # kept for a next attempt


class _StoredBeats(_RecordingStore):
    """A store that holds ``stored`` heartbeats from earlier claims."""

    def __init__(self, stored: list[Any]) -> None:
        super().__init__()
        self.stored = stored

    async def read_heartbeats(self, workflow_id: str) -> list[Any]:
        return self.stored


@pytest.mark.parametrize(
    ("first_claim", "earlier", "expected"),
    [
        (True, [], False),
        (False, [], False),
        (False, [ActivityHeartbeat("wf-stored", 2, "scan", 1, None, 0.0)], True),
    ],
)
async def test_a_keeper_knows_whether_the_workflow_may_have_stored_heartbeats(
    first_claim: bool, earlier: list[Any], expected: bool
) -> None:
    """What lets a workflow's end skip deleting heartbeats: none before a first claim, or
    after a read that found none, until a beat is written; unknown (so True) before that read."""
    store = _StoredBeats(earlier)
    keeper = HeartbeatKeeper(
        store,  # type: ignore[arg-type]
        "wf-stored",
        1 if first_claim else 2,
        first_claim=first_claim,
        max_bytes=1024,
        interrupt=lambda workflow_id, *, lease_lost: None,
    )
    assert keeper.stored is not first_claim
    await keeper.load()
    assert keeper.stored is expected
    run = ActivityRun(3, activity_definition(hb_info_async), ["k"], {}, "look")
    control = keeper.control(run)
    control.start()
    control.beat({"done": 1})
    await eventually(lambda: len(store.rows) == 1)
    assert keeper.stored is True
    keeper.succeeded(run.seq)


async def test_the_last_heartbeat_shows_while_the_workflow_runs(
    db: loom.Database, key: str
) -> None:
    handle = await db.start_workflow(HbProgress, workflow_input={"key": key})
    try:
        async with worker(db):

            async def beating() -> list[loom.ActivityHeartbeat]:
                # The first beat is written at once, the later ones at most once a second.
                beats = await handle.heartbeats()
                return beats if beats and (beats[0].details or {}).get("done") == 3 else []

            [beat] = await eventually(beating, what="a heartbeat written after the first")
            assert beat.workflow_id == handle.workflow_id
            assert beat.activity == "hb_progress" and beat.attempt == 1
            # Beats without details keep the last details sent (unicode and NUL intact).
            assert beat.details == {"done": 3, "note": "ünïcödé ✓ a\x00b"}
            assert beat.sent_at.timestamp() == pytest.approx(beat.at)
            [scheduled] = of_type(await handle.events(), EventType.ACTIVITY_SCHEDULED)
            assert scheduled.seq == beat.seq
            release[key].set()
            assert await handle.result(timeout=10) == {"outcome": "released"}
    finally:
        release[key].set()
    assert await handle.heartbeats() == []
    with pytest.raises(loom.WorkflowNotFoundError):
        await db.get_workflow("hb-no-such-workflow").heartbeats()


# ---------------------------------------------------------------- heartbeat_timeout

cleanup: dict[str, dict[str, Any]] = {}


@loom.activity(
    name="hb_stall_async", heartbeat_timeout=0.3, timeout_seconds=30, retry_count=1, retry_delay=0
)
async def hb_stall_async(key: str) -> Any:
    info = loom.activity_info()
    if info.attempt == 1:
        loom.heartbeat({"got": "far"})
        try:
            await asyncio.sleep(30)  # stuck: no more heartbeats
        except asyncio.CancelledError:
            try:
                loom.heartbeat()
            except loom.ActivityCancelledError as exc:
                cleanup[key] = {"cancelled": info.is_cancelled(), "reason": exc.reason}
            raise
    return info.heartbeat_details


@loom.activity(
    name="hb_stall_sync", heartbeat_timeout=0.3, timeout_seconds=30, retry_count=1, retry_delay=0
)
def hb_stall_sync(key: str) -> Any:
    info = loom.activity_info()
    if info.attempt == 1:
        loom.heartbeat({"got": "far"})
        while not info.is_cancelled():  # stuck, but looking whether it should stop
            time.sleep(0.01)
        try:
            loom.heartbeat()
        except loom.ActivityCancelledError as exc:
            cleanup[key] = {"cancelled": info.is_cancelled(), "reason": exc.reason}
        return "ignored: the attempt was abandoned"
    return info.heartbeat_details


STALLERS = {"async": hb_stall_async, "sync": hb_stall_sync}


@loom.workflow(name="hb_Stall")
class HbStall(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        fn = STALLERS[ctx.input["kind"]]
        await ctx.state.set("resumed_with", await ctx.activity(fn, ctx.input["key"]))


@pytest.mark.parametrize("kind", sorted(STALLERS))
async def test_an_attempt_that_stops_heartbeating_fails_long_before_its_timeout(
    db: loom.Database, key: str, kind: str
) -> None:
    handle = await db.start_workflow(HbStall, workflow_input={"key": key, "kind": kind})
    began = time.monotonic()
    async with worker(db) as w:
        state = await handle.result(timeout=10)
        assert time.monotonic() - began < 10  # not the 30 s timeout_seconds
        # A stuck sync attempt's thread is abandoned; it saw the cancel and returned.
        await eventually(lambda: w.stats.activity_threads_stuck == 0)

    # Retried per the retry policy, from the stuck attempt's last details.
    assert state == {"resumed_with": {"got": "far"}}
    [failed] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    error = failed.payload["error"]
    assert error["type"] == "ActivityHeartbeatTimeoutError"
    assert error["message"] == "no heartbeat within its heartbeat_timeout of 0.3 s"
    assert failed.payload["retry_at"] is not None
    # Where it was stuck when its heartbeat timeout ran out.
    assert ("asyncio.sleep(30)" if kind == "async" else "in hb_stall_sync") in error["traceback"]
    # It was cancelled before it was interrupted: is_cancelled() was true, heartbeat() raised.
    assert cleanup[key] == {"cancelled": True, "reason": error["message"]}


@loom.activity(name="hb_overrun", timeout_seconds=0.3, retry_count=1, retry_delay=0)
async def hb_overrun(key: str) -> str:
    info = loom.activity_info()
    if info.attempt == 1:
        try:
            await asyncio.sleep(30)  # runs past its timeout_seconds (no heartbeat_timeout)
        except asyncio.CancelledError:
            try:
                loom.heartbeat()
            except loom.ActivityCancelledError as exc:
                cleanup[key] = {"cancelled": info.is_cancelled(), "reason": exc.reason}
            raise
    return "second attempt"


@loom.workflow(name="hb_Overrun")
class HbOverrun(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("result", await ctx.activity(hb_overrun, ctx.input["key"]))


async def test_an_async_attempt_past_its_timeout_is_cancelled_then_interrupted(
    db: loom.Database, key: str
) -> None:
    handle = await db.start_workflow(HbOverrun, workflow_input={"key": key})
    async with worker(db):
        state = await handle.result(timeout=10)

    assert state == {"result": "second attempt"}
    [failed] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    error = failed.payload["error"]
    assert error["type"] == "TimeoutError"
    assert error["message"] == "timed out after 0.3 s"
    assert failed.payload["retry_at"] is not None
    assert "asyncio.sleep(30)" in error["traceback"]  # where it was when time ran out
    # As with a heartbeat timeout: is_cancelled() was true and heartbeat() raised, with why.
    assert cleanup[key] == {"cancelled": True, "reason": "timed out after 0.3 s"}


@loom.activity(name="hb_steady", heartbeat_timeout=0.2, timeout_seconds=30)
async def hb_steady(beats: int) -> int:
    for _ in range(beats):
        await asyncio.sleep(0.05)
        loom.heartbeat()
    return beats


@loom.activity(
    name="hb_silent", heartbeat_timeout=0.2, non_retryable=(TimeoutError,), retry_count=5
)
def hb_silent() -> None:
    time.sleep(0.6)


@loom.workflow(name="hb_Steady")
class HbSteady(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("beats", await ctx.activity(hb_steady, 16))
        try:
            await ctx.activity(hb_silent)
        except loom.ActivityFailedError as exc:
            await ctx.state.set("silent", [exc.error_type, exc.attempts])


async def test_heartbeats_keep_an_attempt_alive_and_non_retryable_applies(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(HbSteady)
    async with worker(db):
        state = await handle.result(timeout=10)
    # 0.8 s of work, four times its heartbeat timeout: alive because it kept beating.
    assert state["beats"] == 16
    # A heartbeat timeout is a TimeoutError: listed as non-retryable, it fails at once.
    assert state["silent"] == ["ActivityHeartbeatTimeoutError", 1]
    [failed] = of_type(await handle.events(), EventType.ACTIVITY_FAILED)
    assert failed.payload["name"] == "hb_silent" and failed.payload["retry_at"] is None


# ------------------------------------------------------- when the database says no


@loom.activity(name="hb_watchful", timeout_seconds=30)
def hb_watchful(key: str) -> int:
    info = loom.activity_info()
    seen[key].append({"details": info.heartbeat_details})
    for beat in range(1, 1000):
        try:
            loom.heartbeat({"beat": beat})
        except loom.ActivityCancelledError as exc:
            seen[key].append({"reason": exc.reason, "cancelled": info.is_cancelled()})
            return -1  # too late: nobody records it
        time.sleep(0.01)
        if beat == 20 and len(seen[key]) > 1:
            return beat  # the run after the interruption
    return 0


@loom.workflow(name="hb_Watchful")
class HbWatchful(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("beats", await ctx.activity(hb_watchful, ctx.input["key"]))


async def test_a_worker_whose_heartbeat_is_fenced_stops_the_attempt(
    db: loom.Database, key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The lease moved on (as a paused worker finds after another took over): the attempt is
    cancelled, and the workflow left to whoever holds it now (here: this worker again, once the
    lease it thinks it lost has run out)."""
    record = db.store.record_heartbeat
    fenced: list[int] = []

    async def once_fenced(*args: Any) -> CommitOutcome:
        if not fenced:
            fenced.append(1)
            return CommitOutcome.FENCED
        return await record(*args)

    monkeypatch.setattr(db.store, "record_heartbeat", once_fenced)
    handle = await db.start_workflow(HbWatchful, workflow_input={"key": key})
    async with worker(db, lease_seconds=0.5) as w:
        state = await handle.result(timeout=15)
        assert w.stats.lease_lost == 1
    assert state == {"beats": 20}
    assert seen[key][:2] == [
        {"details": None},
        {"reason": "its worker lost the workflow's lease", "cancelled": True},
    ]
    assert "lease lost" in caplog.text


async def test_heartbeats_the_database_refuses_leave_the_activity_running(
    db: loom.Database, key: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def refused(*args: Any) -> CommitOutcome:
        raise loom.StoreError("value too long for type character varying(1)")

    monkeypatch.setattr(db.store, "record_heartbeat", refused)
    handle = await db.start_workflow(
        HbResume, workflow_input={"key": key, "kind": "sync"}, workflow_id=key
    )
    async with worker(db):
        state = await handle.result(timeout=15)
    # Not written, but known to this worker: the retries still resume where they were.
    assert state == {"last_start": 5}
    assert [s["start"] for s in seen[key]] == [0, 3, 5]
    warnings = [r.message for r in caplog.records if "cannot be recorded" in r.message]
    assert len(warnings) == 1 and "value too long" in warnings[0]  # once, not once a beat


# ------------------------------------------------------------- values that are refused


@dataclasses.dataclass
class Position:
    row: int
    sheet: str


@loom.activity(name="hb_values", retry_count=1, retry_delay=0)
def hb_values(key: str) -> Any:
    info = loom.activity_info()
    if info.attempt == 2:
        return info.heartbeat_details
    refused = {}
    for name, value in [
        ("nan", float("nan")),
        ("infinity", {"rate": float("inf")}),
        ("bytes", b"raw"),
        ("object", object()),
        ("int", 2**70),
        ("surrogate", "\ud800"),
        ("key", {1: "a"}),
        ("large", "x" * 5000),
    ]:
        try:
            loom.heartbeat(value)
        except loom.PayloadError as exc:
            refused[name] = type(exc).__name__
    seen[key].append(refused)
    loom.heartbeat({"kept": ["ünïcödé", "a\x00b", 2**63 - 1, -1.5], "at": Position(3, "b")})
    raise ConnectionError("fail, so that the next attempt shows the details kept")


@loom.workflow(name="hb_Values")
class HbValues(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("details", await ctx.activity(hb_values, ctx.input["key"]))


async def test_details_that_cannot_be_stored_are_refused_at_the_call(
    db: loom.Database, key: str
) -> None:
    async with loom.Database(db.url, max_payload_bytes=1000) as small:
        handle = await small.start_workflow(HbValues, workflow_input={"key": key})
        async with worker(small):
            state = await handle.result(timeout=10)
    [refused] = seen[key]
    assert refused == {
        "nan": "PayloadError",
        "infinity": "PayloadError",
        "bytes": "PayloadError",
        "object": "PayloadError",
        "int": "PayloadError",
        "surrogate": "PayloadError",
        "key": "PayloadError",
        "large": "PayloadTooLargeError",  # above the database's max_payload_bytes
    }
    # A refused heartbeat changes nothing: the details that were stored reach the next attempt.
    # As JSON: the dataclass comes back as an object.
    assert state == {
        "details": {
            "kept": ["ünïcödé", "a\x00b", 2**63 - 1, -1.5],
            "at": {"row": 3, "sheet": "b"},
        }
    }


def test_the_refusal_says_where_the_bad_value_is() -> None:
    from loom.activity_context import AttemptControl

    control = AttemptControl(
        workflow_id="w",
        activity_name="scan",
        seq=3,
        step="s",
        attempt=1,
        timeout=None,
        heartbeat_timeout=None,
    )
    with pytest.raises(
        loom.PayloadError, match=r"heartbeat details of activity 'scan'.*details\['rate'\] is nan"
    ):
        control.beat({"rate": float("nan")})


# ---------------------------------------------------------------- outside an activity


@loom.workflow(name="hb_InWorkflow")
class HbInWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        try:
            loom.activity_info()
        except loom.NotInActivityError as exc:
            await ctx.state.set("info", str(exc))
        try:
            loom.heartbeat({"x": 1})
        except loom.NotInActivityError as exc:
            await ctx.state.set("heartbeat", type(exc).__name__)


@loom.activity(name="hb_in_thread")
def hb_in_thread() -> str:
    found: list[str] = []

    def look() -> None:
        try:
            loom.activity_info()
        except loom.NotInActivityError as exc:
            found.append(type(exc).__name__)

    thread = threading.Thread(target=look)
    thread.start()
    thread.join()
    return found[0]


@loom.workflow(name="hb_InThread")
class HbInThread(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("thread", await ctx.activity(hb_in_thread))


async def test_outside_a_running_activity_both_calls_raise_a_clear_error(
    db: loom.Database,
) -> None:
    with pytest.raises(loom.NotInActivityError, match="not inside a running activity"):
        loom.activity_info()
    with pytest.raises(loom.NotInActivityError):
        loom.heartbeat()
    # An activity called directly, as in a unit test, is not running in a worker.
    with pytest.raises(loom.NotInActivityError):
        await hb_info_async("direct")
    assert not seen["direct"]

    in_workflow = await db.start_workflow(HbInWorkflow)
    in_thread = await db.start_workflow(HbInThread)
    async with worker(db):
        state = await in_workflow.result(timeout=10)
        assert await in_thread.result(timeout=10) == {"thread": "NotInActivityError"}
    assert "@loom.activity" in state["info"] and "not in workflow code" in state["info"]
    assert state["heartbeat"] == "NotInActivityError"
    assert issubclass(loom.NotInActivityError, loom.LoomError)


# ------------------------------------------------------------ a SIGKILLed worker


@pytest.mark.slow
@pytest.mark.processes
async def test_details_reach_the_next_worker_after_a_sigkill(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "executions.log"
    chunks, chunk_ms = 60, 50
    handle = await db.start_workflow(
        crashload.CrashResume,
        workflow_input={"log": str(log), "chunks": chunks, "chunk_ms": chunk_ms},
        workflow_id="resume-after-kill",
    )
    stderr_path = tmp_path / "worker.stderr"
    proc = await spawn_crashload_worker(db_url, stderr_path, concurrency=1, lease_seconds=0.5)
    try:

        async def recorded_chunks() -> int:
            beats = await handle.heartbeats()
            return int(beats[0].details["next"]) if beats and beats[0].details else 0

        async def five_recorded() -> bool:
            return await recorded_chunks() >= 5

        await eventually(five_recorded, timeout=30, what="5 chunks recorded")
        proc.send_signal(signal.SIGKILL)
        assert await proc.wait() == -signal.SIGKILL, read_text(stderr_path)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    recorded = await recorded_chunks()
    assert 5 <= recorded < chunks

    # This process takes over once the dead worker's lease runs out.
    async with worker(db, lease_seconds=0.5):
        state = await handle.result(timeout=30)
    assert state == {"scanned": crashload.scan_result("scan", 0, chunks)}

    lines = [line.split() for line in log.read_text().splitlines()]
    mine = str(os.getpid())
    [resume] = [label for what, _, label, pid in lines if what == "resume" and pid == mine]
    position = int(resume.split("@")[1])
    assert position == recorded  # where the dead worker's last recorded heartbeat said
    done_here = [
        int(label.split("#")[1]) for what, _, label, pid in lines if what == "chunk" and pid == mine
    ]
    assert done_here == list(range(position, chunks))  # nothing before it done again
