"""Schedules: slots computed from cron expressions and intervals, fired once each by any number
of workers, with their overlap and catch-up policies, pause, resume, trigger and delete; on both
backends (the ``db`` fixture). The timing rules themselves are checked without a database at
fixed instants; everything else runs real workers on 1-second schedules and polls.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

import loom
import schedule_workflows
from loom.definitions import workflow_definition
from loom.errors import (
    DatabaseUnavailableError,
    InvalidScheduleError,
    PayloadError,
    PayloadTooLargeError,
)
from loom.schedule_spec import (
    LATE_AFTER,
    CatchUp,
    Overlap,
    Timing,
    due_slots,
    every_text,
    parse_every,
    plan,
    run_id,
    zone,
)
from loom.store.base import RunTarget
from loom.store.statements import one, run
from support import eventually, worker

Tick, Hold, Mail = schedule_workflows.Tick, schedule_workflows.Hold, schedule_workflows.Mail


# -- helpers ---------------------------------------------------------------------------------


def slot_of(workflow_id: str) -> float:
    """The slot a run's id names: ``schedule:<name>:<ISO UTC>``."""
    stamp = workflow_id.rsplit(":", 3)[-3:]
    return datetime.strptime(":".join(stamp), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


async def runs_of(db: loom.Database, name: str) -> list[loom.store.base.WorkflowRecord]:
    """The schedule's runs, oldest slot first."""
    return (await db.describe_schedule(name, runs=1000)).recent_runs[::-1]


async def set_next_slot(db: loom.Database, name: str, at: float) -> None:
    """Pretend no worker ran since ``at``: the schedule's next slot is back there."""
    sql = "UPDATE schedules SET next_at = ? WHERE name = ?"
    await db.store._transact(one(run(sql, at, name)))  # type: ignore[attr-defined]


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture
def registry() -> Iterator[loom.Registry]:
    """A registry of the two test workflows, for workers given their own."""
    reg = loom.Registry()
    reg.add_workflow(workflow_definition(Tick))
    reg.add_workflow(workflow_definition(Hold))
    yield reg


# -- timing, without a database --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"cron": "61 * * * *"}, "not valid"),
        ({"cron": "*/0 * * * *"}, "not valid"),
        ({"cron": "* * *"}, "not valid"),
        ({"cron": "H * * * *"}, "not valid"),
        ({"cron": "0 0\x00 * * *"}, "not valid"),
        ({"cron": "* " * 200}, "not valid"),
        ({"cron": ""}, "not valid"),
        ({"cron": 5}, "not valid"),
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"every": "0s"}, "between 1 second"),
        ({"every": "99999999d"}, "between 1 second"),
        ({"every": "1e9s"}, "not a number of s, m, h or d"),
        ({"every": "5 minutes"}, "not a number of s, m, h or d"),
        ({"every": "-5s"}, "not a number of s, m, h or d"),
        ({"every": "NaN"}, "not a number of s, m, h or d"),
        ({"every": 1.5}, "must be a text"),
        ({"every": True}, "must be a text"),
        ({"cron": "* * * * *", "every": "1s"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"cron": "0 9 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"cron": "0 9 * * *", "timezone": "../../etc/passwd"}, "unknown timezone"),
        ({"cron": "0 9 * * *", "timezone": "Europe/Paris\x00"}, "unknown timezone"),
        ({"cron": "0 9 * * *", "timezone": ""}, "not an IANA timezone"),
        ({"every": "1h", "timezone": "Europe/Paris"}, "cron schedules only"),
        ({"every": "1s", "overlap": "sometimes"}, "unknown overlap policy"),
        ({"every": "1s", "catch_up": "never"}, "unknown catch-up policy"),
        ({"every": "1s", "catch_up_limit": 0}, "catch_up_limit"),
        ({"every": "1s", "catch_up_limit": 1001}, "catch_up_limit"),
        ({"every": "1s", "catch_up_limit": True}, "catch_up_limit"),
        ({"every": "1s", "catch_up_limit": math.nan}, "catch_up_limit"),
        # Drawn anew at each reading: every pass and every worker would see other slots.
        ({"cron": "R R R R R"}, "field 'R' is drawn at random"),
        ({"cron": "r/5 * * * *"}, "field 'r/5' is drawn at random"),
        ({"cron": "R(1-5) 0 * * *"}, "drawn at random"),
        ({"cron": "0 0 * * * R"}, "drawn at random"),
        ({"cron": "@reboot"}, "not valid"),
        # Each machine's own zone: workers in other zones would fire at other times.
        ({"cron": "0 9 * * *", "timezone": "localtime"}, "each machine's own zone"),
    ],
)
def test_a_definition_that_cannot_be_computed_is_refused_with_its_reason(
    options: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(InvalidScheduleError, match=fragment.replace("(", r"\(")):
        loom.schedule("bad", Tick, registry=loom.Registry(), **options)


def test_a_date_decades_ahead_is_a_slot_not_a_date_that_never_comes() -> None:
    spec = loom.schedule("once", Tick, cron="0 0 1 1 * 0 2090", registry=loom.Registry())
    after = datetime(2026, 12, 2, tzinfo=UTC).timestamp()
    assert spec.timing.next_after(after) == datetime(2090, 1, 1, tzinfo=UTC).timestamp()
    with pytest.raises(InvalidScheduleError, match="never fires"):
        loom.schedule("past", Tick, cron="0 0 1 1 * 0 2020", registry=loom.Registry())


def test_month_and_day_names_are_not_taken_for_drawn_fields() -> None:
    spec = loom.schedule("named", Tick, cron="0 9 * MAR,APR FRI", registry=loom.Registry())
    assert spec.timing.cron == "0 9 * MAR,APR FRI"
    slots = spec.timing.upcoming(datetime(2027, 1, 1, tzinfo=UTC).timestamp(), 3)
    assert slots == spec.timing.upcoming(datetime(2027, 1, 1, tzinfo=UTC).timestamp(), 3)
    assert all(datetime.fromtimestamp(t, UTC).strftime("%b %a") in {"Mar Fri"} for t in slots)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("", "must not be empty"),
        ("a:b", "contains ':' or '/'"),
        ("a/b", "contains ':' or '/'"),
        ("nul\x00", "control character"),
        ("esc\x1b[31m", "control character"),
        ("x" * 151, "the limit is 150"),
        ("\ud800", "lone surrogate"),
        ("..", "cannot be addressed in a URL"),
        (".", "cannot be addressed in a URL"),
    ],
)
def test_a_schedule_name_follows_the_name_rule(name: str, fragment: str) -> None:
    with pytest.raises(InvalidScheduleError, match=fragment):
        loom.schedule(name, Tick, every="1s", registry=loom.Registry())


def test_intervals_count_from_the_epoch_and_read_back_shortest() -> None:
    assert [parse_every(t) for t in ("30s", "5m", "2h", "1d", "1h30m", " 90S ")] == [
        30,
        300,
        7200,
        86400,
        5400,
        90,
    ]
    assert every_text(5400) == "1h30m" and every_text(86400 + 61) == "1d1m1s"
    hourly = Timing.parse(every="1h")
    assert hourly.next_after(at("2026-05-01T10:59:59+00:00")) == at("2026-05-01T11:00:00+00:00")
    assert hourly.next_after(at("2026-05-01T11:00:00+00:00")) == at("2026-05-01T12:00:00+00:00")
    assert hourly.at_or_before(at("2026-05-01T11:00:00+00:00")) == at("2026-05-01T11:00:00+00:00")
    assert hourly.before(at("2026-05-01T11:00:00+00:00")) == at("2026-05-01T10:00:00+00:00")
    assert (
        run_id("nightly", at("2026-05-01T11:00:00+00:00"))
        == "schedule:nightly:2026-05-01T11:00:00Z"
    )


def test_cron_in_a_timezone_follows_its_daylight_saving_changes_as_cron_does() -> None:
    daily = Timing.parse(cron="30 2 * * *", timezone="Europe/Paris")
    # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist that night; the slot
    # is the first instant after the gap, 03:00 CEST (01:00 UTC); the next nights are 02:30 CEST.
    spring = daily.upcoming(at("2026-03-28T12:00:00+01:00"), 3)
    assert [run_id("d", s)[-20:] for s in spring] == [
        "2026-03-29T01:00:00Z",
        "2026-03-30T00:30:00Z",
        "2026-03-31T00:30:00Z",
    ]
    # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice; a daily job fires at
    # the first (CEST) only, whichever way its slots are walked.
    fall = daily.upcoming(at("2026-10-24T12:00:00+02:00"), 3)
    assert [run_id("d", s)[-20:] for s in fall] == [
        "2026-10-25T00:30:00Z",
        "2026-10-26T01:30:00Z",
        "2026-10-27T01:30:00Z",
    ]
    assert daily.back_from(fall[-1], 5, fall[0]) == fall[-2::-1]
    assert daily.before(fall[1]) == fall[0] == daily.at_or_before(at("2026-10-25T01:45:00Z"))
    assert daily.next_after(at("2026-10-25T01:00:00Z")) == fall[1]  # in the repeated hour
    caught = due_slots(daily, fall[0], fall[-1] + 1, CatchUp.ALL, 10)
    assert caught == fall
    # A wildcard hour keeps its pace through the repeated hour: every 30 minutes, both times.
    half_hourly = Timing.parse(cron="*/30 * * * *", timezone="Europe/Paris")
    assert [run_id("h", s)[-9:-4] for s in half_hourly.upcoming(at("2026-10-25T00:00Z"), 5)] == [
        "00:00",
        "00:30",
        "01:00",
        "01:30",
        "02:00",
    ]
    # A 09:00 local schedule keeps 09:00 local across the change: its UTC slot moves.
    nine = Timing.parse(cron="0 9 * * *", timezone="Europe/Paris")
    assert [run_id("n", s)[-20:] for s in nine.upcoming(at("2026-03-28T12:00:00+01:00"), 2)] == [
        "2026-03-29T07:00:00Z",
        "2026-03-30T07:00:00Z",
    ]
    assert nine.before(at("2026-03-29T07:00:00+00:00")) == at("2026-03-28T08:00:00+00:00")


def test_the_catch_up_policy_decides_which_due_slots_fire() -> None:
    every = Timing.parse(every="1m")
    now = at("2026-05-01T12:00:30+00:00")  # the 12:00 slot is 30 s old: on time
    back = at("2026-05-01T11:00:00+00:00")  # no worker ran since 11:00: 60 slots are due
    assert due_slots(every, back, now, CatchUp.SKIP, 10) == [at("2026-05-01T12:00:00+00:00")]
    assert due_slots(every, back, now, CatchUp.LATEST, 10) == [at("2026-05-01T12:00:00+00:00")]
    assert due_slots(every, back, now, CatchUp.ALL, 3) == [
        at("2026-05-01T11:58:00+00:00"),
        at("2026-05-01T11:59:00+00:00"),
        at("2026-05-01T12:00:00+00:00"),
    ]
    assert len(due_slots(every, back, now, CatchUp.ALL, 1000)) == 61  # 11:00 to 12:00
    daily = Timing.parse(cron="0 6 * * *")
    late = at("2026-05-01T09:00:00+00:00")  # the 06:00 slot is three hours old
    assert LATE_AFTER < 3 * 3600
    assert due_slots(daily, at("2026-04-28T06:00:00+00:00"), late, CatchUp.SKIP, 10) == []
    assert due_slots(daily, at("2026-04-28T06:00:00+00:00"), late, CatchUp.LATEST, 10) == [
        at("2026-05-01T06:00:00+00:00")
    ]
    assert len(due_slots(daily, at("2026-04-28T06:00:00+00:00"), late, CatchUp.ALL, 10)) == 4
    assert due_slots(daily, at("2026-05-01T10:00:00+00:00"), late, CatchUp.ALL, 10) == []


def test_the_overlap_policy_decides_what_a_due_slot_does_while_a_run_runs() -> None:
    every = Timing.parse(every="1s")
    now = 1000.5

    def decide(overlap: Overlap, running: bool, buffered: float | None = None) -> Any:
        return plan(
            every,
            overlap,
            CatchUp.ALL,
            3,
            next_at=998.0,
            buffered=buffered,
            running=running,
            now=now,
        )

    assert decide(Overlap.SKIP, running=True).starts == []
    assert decide(Overlap.SKIP, running=False).starts == [998.0]  # the others would overlap it
    assert decide(Overlap.ALLOW_ALL, running=True).starts == [998.0, 999.0, 1000.0]
    held = decide(Overlap.BUFFER_ONE, running=True)
    assert (held.starts, held.buffered, held.next_at) == ([], 998.0, 1001.0)
    freed = decide(Overlap.BUFFER_ONE, running=False, buffered=990.0)
    assert (freed.starts, freed.buffered) == ([990.0], 998.0)


# -- defining schedules ----------------------------------------------------------------------


async def test_create_list_describe_and_the_errors_of_a_create(db: loom.Database) -> None:
    before = time.time()
    info = await db.create_schedule(
        "nightly-report",
        Tick,
        cron="0 3 * * *",
        timezone="Europe/Paris",
        input={"report": "sales", "ünïcødé": "☃"},
        overlap="buffer-one",
        catch_up="all",
        catch_up_limit=5,
    )
    assert (info.name, info.workflow, info.spec) == (
        "nightly-report",
        "sched_Tick",
        "cron 0 3 * * * (Europe/Paris)",
    )
    assert (info.overlap, info.catch_up, info.catch_up_limit) == ("buffer_one", "all", 5)
    assert info.next_run is not None and info.next_run.timestamp() > before
    assert info.next_run.astimezone(zone("Europe/Paris")).hour == 3
    await db.create_schedule("every-5m", "sched_Tick", every="5m")
    assert [s.name for s in await db.list_schedules()] == ["every-5m", "nightly-report"]
    described = await db.describe_schedule("nightly-report", upcoming=3)
    assert described.schedule == info
    assert len(described.upcoming) == 3 and described.upcoming[0] == info.next_run
    assert described.recent_runs == []
    assert (await db.get_schedule("every-5m")).every == "5m"

    with pytest.raises(loom.ScheduleAlreadyExistsError, match="exists already"):
        await db.create_schedule("every-5m", Tick, every="1s")
    with pytest.raises(loom.UnknownWorkflowTypeError, match="sched_Nope"):
        await db.create_schedule("nope", "sched_Nope", every="1s")
    with pytest.raises(PayloadError, match="nan"):
        await db.create_schedule("nan", Tick, every="1s", input={"x": math.nan})
    small = loom.Database(db.url, max_payload_bytes=100)
    async with small:
        with pytest.raises(PayloadTooLargeError):
            await small.create_schedule("big", Tick, every="1s", input="x" * 200)
    with pytest.raises(loom.ScheduleNotFoundError, match="no schedule named 'missing'"):
        await db.describe_schedule("missing")
    # "no" is a true value: it would create the schedule paused.
    with pytest.raises(InvalidScheduleError, match="paused must be True or False, got 'no'"):
        await db.create_schedule("odd", Tick, every="1s", paused="no")  # type: ignore[arg-type]
    for counts in ({"runs": 1.5}, {"runs": "3"}, {"upcoming": True}, {"upcoming": math.nan}):
        with pytest.raises(loom.ConfigurationError, match="must be a whole number"):
            await db.describe_schedule("every-5m", **counts)  # type: ignore[arg-type]
    huge = await db.describe_schedule("every-5m", upcoming=2**70, runs=2**70)
    assert len(huge.upcoming) == 100
    assert [s.name for s in await db.list_schedules()] == ["every-5m", "nightly-report"]
    assert (await db.get_schedule("every-5m")).every == "5m"  # the failed create changed nothing


# -- firing ----------------------------------------------------------------------------------


async def test_two_workers_fire_every_slot_exactly_once(db: loom.Database) -> None:
    await db.create_schedule("tick", Tick, every="1s", overlap="allow_all", catch_up="all")
    async with worker(db), worker(db):
        await eventually(
            lambda: _count(db, "tick", 4), timeout=15, what="four slots of a 1 s schedule"
        )
        last_run_id = (await db.get_schedule("tick")).last_run_id
        runs = await runs_of(db, "tick")  # the workers go on firing: a snapshot
        slots = [slot_of(r.workflow_id) for r in runs]
        assert slots == [slots[0] + i for i in range(len(slots))]  # each slot once, none missed
        assert last_run_id in {r.workflow_id for r in runs}
        for r in runs:
            started = (await db.get_workflow(r.workflow_id).events())[0].payload
            assert started["schedule"] == {"name": "tick", "slot": r.workflow_id.split(":", 2)[2]}
            assert started["name"] == "sched_Tick"
        last = runs[-1]
        assert await db.get_workflow(last.workflow_id).result(timeout=10) == {
            "input": None,
            "id": last.workflow_id,
        }


async def _count(db: loom.Database, name: str, n: int) -> bool:
    try:
        return len(await runs_of(db, name)) >= n
    except loom.ScheduleNotFoundError:  # not written yet (a worker writes declared ones)
        return False


async def test_overlap_skip_starts_nothing_while_the_last_run_runs(db: loom.Database) -> None:
    await db.create_schedule("hold", Hold, every="1s", overlap="skip")
    async with worker(db):
        [first] = await eventually(lambda: runs_of(db, "hold"), timeout=10, what="a first run")
        slot = slot_of(first.workflow_id)

        async def passed(n: int) -> bool:
            info = await db.get_schedule("hold")
            return info.next_run is not None and info.next_run.timestamp() >= slot + n

        await eventually(lambda: passed(3), timeout=10, what="two more slots to pass")
        assert [r.workflow_id for r in await runs_of(db, "hold")] == [first.workflow_id]
        await db.get_workflow(first.workflow_id).signal("release", "test")
        await eventually(lambda: _count(db, "hold", 2), timeout=10, what="the next run")
    first_done, second = await runs_of(db, "hold")
    assert first_done.status is loom.WorkflowStatus.COMPLETED
    assert slot_of(second.workflow_id) >= slot + 3  # a slot after the release, not a skipped one


async def test_overlap_buffer_one_holds_one_slot_until_the_last_run_ends(
    db: loom.Database,
) -> None:
    await db.create_schedule("hold", Hold, every="1s", overlap="buffer_one")
    async with worker(db):
        [first] = await eventually(lambda: runs_of(db, "hold"), timeout=10, what="a first run")

        async def buffered_then_passed() -> datetime | None:
            info = await db.get_schedule("hold")
            held, upcoming = info.buffered_run, info.next_run
            ok = held is not None and upcoming is not None
            return held if ok and upcoming.timestamp() >= held.timestamp() + 2 else None

        held = await eventually(buffered_then_passed, timeout=10, what="a buffered slot")
        assert slot_of(first.workflow_id) + 1 == held.timestamp()  # the slot right after
        assert len(await runs_of(db, "hold")) == 1  # the slots after the held one were skipped
        await db.get_workflow(first.workflow_id).signal("release", "test")
        await eventually(lambda: _count(db, "hold", 2), timeout=10, what="the buffered run")
        second = (await runs_of(db, "hold"))[1]
        assert slot_of(second.workflow_id) == held.timestamp()  # it runs late, under its slot
        await eventually(
            lambda: _buffered(db, "hold"), timeout=10, what="a slot held behind the second run"
        )


async def _buffered(db: loom.Database, name: str) -> bool:
    return (await db.get_schedule(name)).buffered_run is not None


async def test_overlap_allow_all_lets_runs_overlap(db: loom.Database) -> None:
    await db.create_schedule("hold", Hold, every="1s", overlap="allow_all")
    async with worker(db):

        async def running(n: int) -> bool:
            found = await runs_of(db, "hold")
            return sum(r.status is loom.WorkflowStatus.RUNNING for r in found) >= n

        await eventually(lambda: running(3), timeout=10, what="three runs at once")


@pytest.mark.parametrize(("catch_up", "first_pass"), [("skip", 1), ("latest", 1), ("all", 5)])
async def test_after_downtime_the_catch_up_policy_decides_the_missed_slots(
    db: loom.Database, catch_up: str, first_pass: int
) -> None:
    await db.create_schedule(
        "tick", Tick, every="1s", overlap="allow_all", catch_up=catch_up, catch_up_limit=5
    )
    down_since = math.floor(time.time()) - 30
    await set_next_slot(db, "tick", down_since)  # no worker ran for 30 s
    restart = math.floor(time.time())
    async with worker(db):
        await eventually(lambda: _count(db, "tick", first_pass), timeout=10, what="the catch-up")
    runs = await runs_of(db, "tick")
    first = min(r.created for r in runs)
    caught = [slot_of(r.workflow_id) for r in runs if r.created == first]  # the first pass
    assert len(caught) == first_pass
    assert caught == [caught[-1] - n for n in range(first_pass - 1, -1, -1)]
    assert caught[-1] >= restart  # the latest slot, not a missed one
    assert caught[0] >= down_since


@pytest.mark.parametrize("catch_up", ["skip", "latest"])
async def test_a_late_slot_is_dropped_by_skip_and_run_by_latest(
    db: loom.Database, catch_up: str
) -> None:
    await db.create_schedule("daily", Tick, cron="0 0 * * *", catch_up=catch_up)
    today = Timing.parse(cron="0 0 * * *").at_or_before(time.time())
    assert today is not None
    await set_next_slot(db, "daily", today - 2 * 86400)  # down for two days
    late = time.time() - today > LATE_AFTER
    async with worker(db):
        await eventually(lambda: _advanced(db, "daily"), timeout=10, what="a pass")
    slots = [slot_of(r.workflow_id) for r in await runs_of(db, "daily")]
    assert slots == ([] if catch_up == "skip" and late else [today])
    assert (await db.get_schedule("daily")).next_run == datetime.fromtimestamp(today + 86400, UTC)


async def _advanced(db: loom.Database, name: str) -> bool:
    info = await db.get_schedule(name)
    return info.next_run is not None and info.next_run.timestamp() > time.time()


async def test_a_paused_schedule_fires_nothing_and_resumes_from_its_next_slot(
    db: loom.Database,
) -> None:
    await db.create_schedule("clock", Tick, every="1s")
    paused = await db.create_schedule("later", Tick, every="1s", paused=True)
    assert paused.paused and paused.next_run is None
    assert (await db.describe_schedule("later")).upcoming == []
    async with worker(db):
        await eventually(lambda: _count(db, "clock", 3), timeout=10, what="the clock to tick")
        assert await runs_of(db, "later") == []
        resumed_at = time.time()
        info = await db.resume_schedule("later")
        assert not info.paused and info.next_run is not None
        assert info.next_run.timestamp() > resumed_at
        await eventually(lambda: _count(db, "later", 1), timeout=10, what="a run once resumed")
        [first] = await runs_of(db, "later")
        assert slot_of(first.workflow_id) > resumed_at  # the paused slots are not caught up
        again = await db.pause_schedule("later")
        assert again.paused and (await db.pause_schedule("later")).paused  # idempotent
    with pytest.raises(loom.ScheduleNotFoundError):
        await db.pause_schedule("missing")


async def test_trigger_runs_now_and_counts_as_the_last_run(db: loom.Database) -> None:
    await db.create_schedule("hold", Hold, every="1s", overlap="skip", paused=True)
    handle = await db.trigger_schedule("hold")  # paused: a trigger runs anyway
    assert handle.workflow_id.startswith("schedule:hold:") and handle.workflow_id.endswith("Z")
    assert len(handle.workflow_id.rsplit(".", 1)[1]) == 4  # milliseconds: never a slot's id
    assert await handle.status() is loom.WorkflowStatus.RUNNING
    assert (await db.get_schedule("hold")).last_run_id == handle.workflow_id
    await db.resume_schedule("hold")
    async with worker(db):
        resumed = time.time()

        async def skipped() -> bool:
            info = await db.get_schedule("hold")
            return info.next_run is not None and info.next_run.timestamp() > resumed + 2

        await eventually(skipped, timeout=10, what="slots to pass while the trigger's run runs")
        assert [r.workflow_id for r in await runs_of(db, "hold")] == [handle.workflow_id]
        await handle.signal("release", "test")
        await eventually(lambda: _count(db, "hold", 2), timeout=10, what="a slot's run")
    with pytest.raises(loom.ScheduleNotFoundError):
        await db.trigger_schedule("missing")
    async with loom.Database(db.url, registry=loom.Registry()) as elsewhere:
        with pytest.raises(loom.UnknownWorkflowTypeError, match="sched_Hold"):
            await elsewhere.trigger_schedule("hold")


async def test_a_finished_last_run_does_not_hold_back_the_next(db: loom.Database) -> None:
    await db.create_schedule("hold", Hold, every="1s", overlap="skip", paused=True)
    failed = await db.trigger_schedule("hold")
    await failed.cancel("test")
    await db.resume_schedule("hold")
    async with worker(db):
        await eventually(lambda: _count(db, "hold", 2), timeout=10, what="a slot's run")


async def test_delete_keeps_the_runs(db: loom.Database) -> None:
    await db.create_schedule("gone", Tick, every="1h")
    handle = await db.trigger_schedule("gone")
    await db.delete_schedule("gone")
    with pytest.raises(loom.ScheduleNotFoundError):
        await db.get_schedule("gone")
    with pytest.raises(loom.ScheduleNotFoundError):
        await db.delete_schedule("gone")
    assert await handle.status() is loom.WorkflowStatus.RUNNING
    await db.create_schedule("gone", Tick, every="1h")  # the name is free again
    assert [r.workflow_id for r in await runs_of(db, "gone")] == [handle.workflow_id]


async def test_a_worker_fires_only_the_schedules_of_workflows_it_has(db: loom.Database) -> None:
    holds_only = loom.Registry()
    holds_only.add_workflow(workflow_definition(Hold))
    await db.create_schedule("ticks", Tick, every="1s")
    await db.create_schedule("clock", Hold, every="1s", overlap="allow_all")
    async with worker(db, registry=holds_only):
        await eventually(lambda: _count(db, "clock", 3), timeout=10, what="the clock's runs")
        assert await runs_of(db, "ticks") == []
    async with worker(db):
        await eventually(lambda: _count(db, "ticks", 1), timeout=10, what="a worker with Tick")


async def test_runs_go_to_their_workflows_queue_and_are_tagged_with_their_schedule(
    db: loom.Database,
) -> None:
    """A run starts as a start of its workflow would: on the queue the workflow declares, so a
    worker serving only that queue runs it; and it carries the tag ``loom.schedule``."""
    mail_only = loom.Registry()
    mail_only.add_workflow(workflow_definition(Mail))
    await db.create_schedule("mail", Mail, every="1s")
    async with worker(db, registry=mail_only, queues=["sched-mail"]):

        async def one_done() -> bool:
            runs = await runs_of(db, "mail")
            return any(r.status is loom.WorkflowStatus.COMPLETED for r in runs)

        await eventually(one_done, timeout=10, what="a run on the workflow's queue")
    triggered = await db.trigger_schedule("mail")
    for record in [*await runs_of(db, "mail"), await triggered.describe()]:
        assert record.queue == "sched-mail"
        assert await db.store.tags(record.workflow_id) == {"loom.schedule": "mail"}
    tagged = await db.list_workflows(tags={"loom.schedule": "mail"}, limit=1000)
    assert {r.workflow_id for r in tagged} == {r.workflow_id for r in await runs_of(db, "mail")}


async def test_declared_schedules_are_written_by_workers_and_sync(
    db: loom.Database, registry: loom.Registry
) -> None:
    spec = loom.schedule("declared", Tick, every="1s", input={"n": 1}, registry=registry)
    assert spec == loom.schedule("declared", Tick, every="1s", input={"n": 1}, registry=registry)
    with pytest.raises(loom.DefinitionError, match="two different schedules"):
        loom.schedule("declared", Tick, every="2s", registry=registry)
    async with worker(db, registry=registry):
        await eventually(lambda: _count(db, "declared", 1), timeout=10, what="a declared run")
    paused = await db.pause_schedule("declared")
    assert (await db.sync_schedules(registry))[0] == paused  # the same: nothing written
    changed = loom.Registry()
    loom.schedule("declared", Tick, every="1h", input={"n": 2}, registry=changed)
    [synced] = await db.sync_schedules(changed)
    assert (synced.every, synced.input, synced.paused) == ("1h", {"n": 2}, True)
    assert synced.last_run_id == paused.last_run_id  # its progress is kept
    assert (await db.describe_schedule("declared")).upcoming == []


async def test_hostile_names_and_inputs_are_stored_as_given(db: loom.Database) -> None:
    name = "nächtlich ☃ %2F?#'\"; DROP TABLE schedules;--"
    data = {"nested": [1, {"deep": None}], "big": 2**62, "text": "\u202e\ufeff"}
    await db.create_schedule(name, Tick, every="1s", input=data, overlap="ALLOW_ALL")
    async with worker(db):
        await eventually(lambda: _count(db, name, 1), timeout=10, what="a run")
        [first, *_] = await runs_of(db, name)
        assert first.workflow_id.startswith(f"schedule:{name}:")
        assert (await db.get_workflow(first.workflow_id).result(timeout=10))["input"] == data
    assert (await db.get_schedule(name)).overlap == "allow_all"
    # A name that sorts right after another's prefix is not mistaken for its runs.
    await db.create_schedule("a", Tick, every="1h")
    await db.create_schedule("a;", Tick, every="1h")
    await db.trigger_schedule("a;")
    assert await runs_of(db, "a") == []


async def test_a_scheduler_pass_and_its_runs_are_one_transaction(db: loom.Database) -> None:
    """Two passes at the same instant (two workers racing) start each slot once: the second
    sees the schedule advanced, or, racing it, finds the id taken."""
    await db.create_schedule("race", Tick, every="1s", overlap="allow_all", catch_up="all")
    await set_next_slot(db, "race", math.floor(time.time()) - 5)
    now = time.time()
    versions = {"sched_Tick": RunTarget("1.0.0")}
    passes = await asyncio.gather(*(db.store.fire_schedules(versions, now, 10) for _ in range(4)))
    started = [wid for found in passes for wid in found]
    assert len(started) == len(set(started)) == 6
    assert sorted(started) == [r.workflow_id for r in await runs_of(db, "race")]
    assert await db.store.fire_schedules(versions, now, 10) == []


async def test_the_scheduler_rides_out_an_outage_and_reports_other_errors(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A pass that fails because the database is away is tried again with backoff; one that
    fails for another reason is logged as an error and tried again later; the schedule fires."""
    await db.create_schedule("steady", Tick, every="1s")
    real = db.store.fire_schedules
    failures: list[Exception] = [
        DatabaseUnavailableError("connection refused"),
        DatabaseUnavailableError("connection refused"),
        RuntimeError("a bug in a pass"),
    ]

    async def flaky(*args: Any, **kwargs: Any) -> list[str]:
        if failures:
            raise failures.pop(0)
        return await real(*args, **kwargs)

    monkeypatch.setattr(db.store, "fire_schedules", flaky)
    with caplog.at_level("INFO", logger="loom"):
        async with worker(db):
            await eventually(lambda: _count(db, "steady", 1), timeout=30, what="a run after all")
    assert failures == []
    assert "scheduler pass failed: RuntimeError: a bug in a pass" in caplog.text


async def test_a_codec_encodes_the_input_of_a_schedule_and_of_its_runs(
    db: loom.Database, registry: loom.Registry
) -> None:
    secret = {"card": "4111-1111-schedule"}
    codec = loom.AesGcmCodec({"k1": loom.AesGcmCodec.generate_key()})
    loom.schedule("vault", Tick, every="1s", input=secret, registry=registry)
    async with loom.Database(db.url, codec=codec, registry=registry) as coded:
        [info] = await coded.sync_schedules()
        assert info.input == secret
        [again] = await coded.sync_schedules()  # the same definition: nothing written
        assert again == info
        async with worker(coded):
            [run, *_] = await eventually(lambda: runs_of(coded, "vault"), timeout=10, what="a run")
            result = await coded.get_workflow(run.workflow_id).result(timeout=10)
        assert result["input"] == secret
        assert (await coded.describe_schedule("vault")).schedule.input == secret
    stored = await db.store.inner.get_schedule("vault")  # type: ignore[attr-defined]
    assert "_loom_codec" in stored.spec.input and "4111" not in str(stored.spec.input)
    with pytest.raises(loom.PayloadDecodeError, match="input of schedule 'vault'"):
        await db.get_schedule("vault")
    async with loom.Database(db.url, codec="none", placeholders=True) as keyless:
        assert (await keyless.get_schedule("vault")).input == "<encrypted>"
        assert (await keyless.pause_schedule("vault")).paused
        [shown] = (await keyless.describe_schedule("vault", runs=1)).recent_runs
        assert shown.input == "<encrypted>"


async def test_a_clock_that_jumps_back_or_forward_never_fires_a_slot_twice(
    db: loom.Database,
) -> None:
    """Passes whose clocks disagree (a worker's clock set back, then far ahead, then back):
    a clock behind the schedule fires nothing, one ahead catches up by the policy, and no slot
    ever starts a second run."""
    await db.create_schedule(
        "jumpy", Tick, every="10s", overlap="allow_all", catch_up="all", catch_up_limit=3
    )
    base = math.floor(time.time() / 10) * 10 + 10.0
    await set_next_slot(db, "jumpy", base)
    versions = {"sched_Tick": RunTarget("1.0.0")}

    async def fire(at: float) -> list[float]:
        return [slot_of(w) for w in await db.store.fire_schedules(versions, at, 10)]

    assert await fire(base + 0.5) == [base]
    assert await fire(base - 3600) == []  # set back an hour: nothing is due to it
    assert (await db.get_schedule("jumpy")).next_run == datetime.fromtimestamp(base + 10, UTC)
    assert await fire(base + 3600.5) == [base + 3580, base + 3590, base + 3600]  # an hour ahead
    assert await fire(base + 20.5) == []  # back again: the slots it skipped stay skipped
    assert await fire(base + 3600.9) == []  # the same slot again: already fired
    assert await fire(base + 3610.5) == [base + 3610]
    runs = [slot_of(r.workflow_id) for r in await runs_of(db, "jumpy")]
    assert runs == [base, base + 3580, base + 3590, base + 3600, base + 3610]


# -- worker processes, killed ----------------------------------------------------------------

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"  # the installed console script
KILL_SEED = int(os.environ.get("LOOM_KILL_SEED", "20240611"))


def spawn_worker(db_url: str, log: Path) -> subprocess.Popen[bytes]:
    """A `loom worker` process serving the schedule test workflows; its log goes to ``log``."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOOM_DATABASE_URL", "LOOM_MODULES")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(LOOM), "worker", "-d", db_url, "-m", "schedule_workflows", "--workers", "4",
             "--poll-interval", "0.05", "--lease-seconds", "1"],
            env=env, cwd=TESTS_DIR, stdout=subprocess.DEVNULL, stderr=out,
        )  # fmt: skip


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.processes
async def test_worker_processes_sigkilled_at_random_fire_every_slot_exactly_once(
    db: loom.Database, db_url: str, tmp_path: Path
) -> None:
    """Two `loom worker` processes fire a 1 s schedule while one of them is SIGKILLed and
    restarted at random moments (mid-pass, mid-run), then both at once for a few seconds: every
    slot from the first to the last has exactly one run, downtime included (catch-up all)."""
    rng = random.Random(KILL_SEED)
    await db.create_schedule(
        "tick", Tick, every="1s", overlap="allow_all", catch_up="all", catch_up_limit=1000
    )
    log = tmp_path / "workers.log"
    procs = [spawn_worker(db_url, log) for _ in range(2)]
    try:
        await eventually(lambda: _count(db, "tick", 2), timeout=60, what="the processes to fire")
        for _ in range(6):
            await asyncio.sleep(rng.uniform(0.1, 1.2))  # the kill point: a random moment
            victim = rng.randrange(2)
            sigkill(procs[victim])
            procs[victim] = spawn_worker(db_url, log)
        for proc in procs:  # both down: slots pass with no worker at all
            sigkill(proc)

        async def overdue() -> bool:
            info = await db.get_schedule("tick")
            return info.next_run is not None and info.next_run.timestamp() < time.time() - 2

        await eventually(overdue, timeout=10, what="two slots to pass with no worker")
        restarted = time.time()
        procs = [spawn_worker(db_url, log) for _ in range(2)]

        async def caught_up() -> bool:
            runs = await runs_of(db, "tick")
            return bool(runs) and slot_of(runs[-1].workflow_id) > restarted + 1

        await eventually(caught_up, timeout=60, what=lambda: f"the catch-up:\n{log.read_text()}")
    finally:
        for proc in procs:
            sigkill(proc)
    runs = await runs_of(db, "tick")
    slots = [slot_of(r.workflow_id) for r in runs]
    assert slots == [slots[0] + i for i in range(len(slots))], "a slot missed or fired twice"
    assert len(slots) >= 8
    async with worker(db):  # what the killed workers left half done
        for r in runs:
            handle = db.get_workflow(r.workflow_id)
            assert (await handle.result(timeout=30))["id"] == r.workflow_id
            [started] = [e for e in await handle.events() if e.seq == 1]
            assert started.payload["schedule"]["slot"] == r.workflow_id.split(":", 2)[2]
