"""The same workflow code gives the same result however it is run: with the worker's cache or
after a replay, and without values that JSON would silently change.

Covers the holes through which non-determinism or unstorable values used to slip in: changing
``ctx.input`` / ``ctx.state`` in place, instance attributes carried between steps, NaN and
Infinity, endless or absurd durations, tasks a step leaves behind, awaits nothing durable can
complete, and ``loom.run_once()`` picking a database the program did not open.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import math
import pickle
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest

import loom
from loom import EventType, WorkflowStatus
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

calls: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    calls.clear()


async def failure(db: loom.Database, handle: loom.WorkflowHandle[Any]) -> dict[str, Any]:
    """Run ``handle``'s workflow to its end and return the recorded error (it must fail)."""
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=20)
    return info.value.cause


@loom.activity(name="det_count")
async def det_count(key: str) -> int:
    calls[key] += 1
    return calls[key]


@loom.activity(name="det_echo")
async def det_echo(value: Any) -> Any:
    calls["det_echo"] += 1
    return value


@loom.activity(name="det_not_a_number")
async def det_not_a_number() -> float:
    calls["det_not_a_number"] += 1
    return math.nan


# ----------------------------------------------------- 11. the cache does not change results


def attempt(errors: list[str], change: Any) -> None:
    try:
        change()
    except loom.ReadOnlyError as exc:
        errors.append(str(exc))


@loom.workflow(name="det_Carry")
class DetCarry(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def first(self, ctx: Ctx) -> None:
        await ctx.state.set("items", [1])
        await ctx.state.set("config", {"limits": {"max": 3}})
        self.total = 10
        errors: list[str] = []
        attempt(errors, lambda: ctx.state["items"].append(2))
        attempt(errors, lambda: ctx.input.__setitem__("k", "changed"))
        attempt(errors, lambda: ctx.state["config"]["limits"].update(max=99))
        attempt(errors, lambda: ctx.input["tags"].sort())
        attempt(errors, lambda: ctx.state.__setitem__("items", []))
        await ctx.state.set("errors", errors)

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("go")  # the workflow parks here: cached, or replayed later
        await ctx.state.set(
            "seen",
            {
                "items": ctx.state["items"],
                "max": ctx.state["config"]["limits"]["max"],
                "k": ctx.input["k"],
                "tags": ctx.input["tags"],
                "total": getattr(self, "total", None),
            },
        )


@pytest.mark.parametrize("cache_size", [0, 1000], ids=["replayed", "cached"])
async def test_in_place_changes_are_refused_and_the_cache_changes_nothing(
    db: loom.Database, cache_size: int
) -> None:
    handle = await db.start_workflow(DetCarry, workflow_input={"k": "original", "tags": ["b", "a"]})
    async with worker(db, cache_size=cache_size):

        async def waiting() -> bool:
            return await handle.state() != {} and "errors" in await handle.state()

        await eventually(waiting, timeout=20)
        await handle.signal("go")
        state = await handle.result(timeout=20)

    assert state["seen"] == {
        "items": [1],
        "max": 3,
        "k": "original",
        "tags": ["b", "a"],
        "total": None,  # each step runs on a new instance of the workflow class
    }
    assert state["items"] == [1]
    assert state["config"] == {"limits": {"max": 3}}
    assert len(state["errors"]) == 5
    items, key, limits, tags, whole = state["errors"]
    assert "ctx.state['items'] is read-only" in items
    assert "await ctx.state.set" in items and "ctx.state.update" in items
    assert "ctx.input is read-only" in key
    assert "ctx.state['config']['limits'] is read-only" in limits
    assert "ctx.input['tags'] is read-only" in tags
    assert "ctx.state is read-only" in whole


@loom.workflow(name="det_Reader")
class DetReader(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def read(self, ctx: Ctx) -> None:
        scratch = copy.deepcopy(ctx.input)  # a mutable copy
        scratch["extra"] = True
        snapshot = ctx.state.to_dict()
        snapshot["items"].append("not durable")
        mine = ctx.state["items"].copy()
        mine.append("local")
        await ctx.state.set(
            "report",
            {
                "input": ctx.input,  # a view is stored as its plain value
                "scratch": scratch,
                "mine": mine,
                "joined": ctx.state["items"] + ["x"],
                "merged": ctx.input | {"more": 1},
                "keys": sorted(ctx.input),
                "has_items": "items" in ctx.state,
                "equal": ctx.state["items"] == ["a"],
                "as_list": list(ctx.state["items"]),
                "as_dict": dict(ctx.input["nested"]),
                "model": DetModel.model_validate(ctx.input["nested"]).model_dump(),
            },
        )
        await ctx.state.update(items=lambda items: [*items, "b"])
        result = await ctx.activity(det_echo, {"list": [1]})
        result["list"].append(2)  # a private copy: the recorded result stays as it was
        await ctx.state.set("result", result)
        signal = await ctx.wait_for_signal("note")
        signal["seen"] = True  # likewise for a signal's payload
        await ctx.state.set("signal", signal)


class DetModel(pydantic.BaseModel):
    name: str
    sizes: list[int]


async def test_views_read_like_plain_values_and_copies_are_mutable(db: loom.Database) -> None:
    handle = await db.start_workflow(
        DetReader,
        workflow_input={"n": 1, "nested": {"name": "box", "sizes": [1, 2]}},
        initial_state={"items": ["a"]},
    )
    await handle.signal("note", {"text": "hi"})
    async with worker(db):
        state = await handle.result(timeout=20)
    report = state["report"]
    assert report["input"] == {"n": 1, "nested": {"name": "box", "sizes": [1, 2]}}
    assert report["scratch"]["extra"] is True
    assert report["mine"] == ["a", "local"]
    assert report["joined"] == ["a", "x"]
    assert report["merged"]["more"] == 1
    assert report["keys"] == ["n", "nested"]
    assert report["has_items"] is True and report["equal"] is True
    assert report["as_list"] == ["a"]
    assert report["as_dict"] == {"name": "box", "sizes": [1, 2]}
    assert report["model"] == {"name": "box", "sizes": [1, 2]}
    assert state["items"] == ["a", "b"]
    assert state["result"] == {"list": [1, 2]}
    events = await handle.events()
    [completed] = of_type(events, EventType.ACTIVITY_COMPLETED)
    assert completed.payload["result"] == {"list": [1]}
    assert state["signal"] == {"text": "hi", "seen": True}
    [received] = of_type(events, EventType.SIGNAL_RECEIVED)
    assert received.payload["payload"] == {"text": "hi"}


def test_a_view_copies_pickles_and_compares_as_its_value() -> None:
    from loom.frozen import freeze

    view = freeze({"a": [1, {"b": 2}]}, "ctx.input", "it is part of the history")
    assert view == {"a": [1, {"b": 2}]}
    assert view["a"] == [1, {"b": 2}]
    assert repr(view) == "{'a': [1, {'b': 2}]}"
    for plain in (copy.deepcopy(view), copy.copy(view), pickle.loads(pickle.dumps(view))):
        assert type(plain) is dict
        plain["a"].append(3)
    assert view == {"a": [1, {"b": 2}]}
    with pytest.raises(loom.ReadOnlyError, match=r"ctx.input\['a'\]\[1\] is read-only"):
        view["a"][1]["b"] = 3
    with pytest.raises(TypeError):  # ReadOnlyError is a TypeError, as for a tuple
        view["a"] += [4]


# ------------------------------------------------------------------ 12. NaN and Infinity


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
async def test_nan_and_infinity_in_an_input_or_signal_are_refused(
    db: loom.Database, bad: float
) -> None:
    with pytest.raises(loom.PayloadError, match=r"input\['a'\]\[2\] is (nan|inf|-inf)"):
        await db.start_workflow(DetCarry, workflow_input={"a": [1, 2, bad]})
    with pytest.raises(loom.PayloadError, match=r"initial_state\['x'\]"):
        await db.start_workflow(DetCarry, workflow_input={}, initial_state={"x": bad})
    assert await db.list_workflows() == []
    handle = await db.start_workflow(DetCarry, workflow_input={"k": "v", "tags": []})
    with pytest.raises(loom.PayloadError, match=r"signal 'go'.*payload\['v'\]"):
        await handle.signal("go", {"v": bad})
    assert (await db.stats()).signals_pending == 0
    await handle.signal("go", {"v": None, "w": 1.5})  # null and finite floats are fine


@dataclass
class Reading:
    sensor: str
    value: float


@loom.workflow(name="det_NotANumber")
class DetNotANumber(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def measure(self, ctx: Ctx) -> None:
        refused: dict[str, str] = {}
        for label, call in [
            ("set", lambda: ctx.state.set("reading", {"values": [1.0, math.inf]})),
            ("update", lambda: ctx.state.update(reading=lambda _: math.nan)),
            ("argument", lambda: ctx.activity(det_echo, [Reading("t1", math.nan)])),
            ("kwargument", lambda: ctx.activity(det_echo, value={"x": -math.inf})),
        ]:
            try:
                await call()
            except loom.PayloadError as exc:
                refused[label] = str(exc)
        await ctx.state.set("refused", refused)
        await ctx.activity(det_not_a_number)


async def test_nan_and_infinity_in_state_and_activities_are_refused_at_the_call_site(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(DetNotANumber)
    cause = await failure(db, handle)
    state = await handle.state()
    refused = state["refused"]
    assert "state['reading']['values'][1] is inf" in refused["set"]
    assert "state['reading'] is nan" in refused["update"]
    assert "args[0][0].value is nan" in refused["argument"]
    assert "kwargs['value']['x'] is -inf" in refused["kwargument"]
    assert "reading" not in state
    assert calls["det_echo"] == 0  # no activity ran with a corrupted argument
    # The result of an activity is checked too: the attempt fails, without retries.
    assert cause["type"] == "ActivityFailedError"
    assert "PayloadError" in cause["message"] and "is nan" in cause["message"]
    assert calls["det_not_a_number"] == 1
    events = await handle.events()
    assert of_type(events, EventType.ACTIVITY_SCHEDULED)[-1].payload["name"] == "det_not_a_number"
    assert not of_type(events, EventType.ACTIVITY_COMPLETED)


@loom.workflow(name="det_Durations")
class DetDurations(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        refused: list[str] = []
        far = datetime(9000, 1, 1, tzinfo=UTC)
        for call in [
            lambda: ctx.sleep(seconds=math.inf),
            lambda: ctx.sleep(seconds=math.nan),
            lambda: ctx.sleep(math.inf),
            lambda: ctx.sleep(-1),
            lambda: ctx.sleep(timedelta.max),
            lambda: ctx.sleep(seconds=1e12),
            lambda: ctx.sleep(until=far),
            lambda: ctx.wait_for_signal("go", timeout=math.nan),
            lambda: ctx.wait_for_signal("go", timeout=math.inf),
            lambda: ctx.wait_for_signal("go", timeout=-5),
        ]:
            try:
                await call()
            except ValueError as exc:
                refused.append(f"{type(exc).__name__}: {exc}")
        await ctx.state.set("refused", refused)


async def test_endless_and_absurd_durations_are_refused_at_the_call_site(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(DetDurations)
    async with worker(db):
        state = await handle.result(timeout=20)
    refused = state["refused"]
    assert len(refused) == 10
    assert all(r.startswith("ConfigurationError") for r in refused)  # a ValueError
    assert "finite" in refused[0] and "inf" in refused[0]
    assert "nan" in refused[1]
    assert "negative" in refused[3]
    assert "100 years" in refused[4] and "100 years" in refused[5] and "100 years" in refused[6]
    assert "nan" in refused[7] and "inf" in refused[8] and "negative" in refused[9]
    events = await handle.events()
    assert not of_type(events, EventType.TIMER_SCHEDULED)
    assert not of_type(events, EventType.SIGNAL_WAIT_STARTED)


def test_an_activity_cannot_be_defined_with_an_endless_or_nan_timing() -> None:
    for option in ("timeout_seconds", "retry_delay", "retry_backoff", "retry_max_delay"):
        for bad in (math.nan, math.inf):
            with pytest.raises(loom.DefinitionError, match=f"{option} must be a finite number"):

                @loom.activity(name=f"det_bad_{option}", **{option: bad})
                async def timed() -> None:
                    pass


@loom.workflow(name="det_HugeSleep")
class DetHugeSleep(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        try:
            await ctx.sleep(seconds=10**400)
        except ValueError as exc:
            await ctx.state.set("refused", str(exc))


async def test_a_sleep_of_a_huge_integer_is_refused_like_any_absurd_duration(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(DetHugeSleep)
    async with worker(db):
        state = await handle.result(timeout=20)
    assert "100 years" in state["refused"]


# ---------------------------------------------- an activity's arguments belong to the call

attempts_seen: list[Any] = []


@loom.activity(name="det_scribbler", retry_count=2, retry_delay=0)
async def det_scribbler(order: dict[str, Any]) -> int:
    attempts_seen.append(copy.deepcopy(order))
    order["lines"].append("scribbled")  # a careless activity changes its argument in place
    order["attempt"] = len(attempts_seen)
    if len(attempts_seen) < 3:
        raise RuntimeError("try again")
    return len(order["lines"])


@loom.workflow(name="det_Scribble")
class DetScribble(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def call(self, ctx: Ctx) -> None:
        await ctx.state.set("lines", await ctx.activity(det_scribbler, {"lines": ["a"]}))


async def test_an_attempt_changing_its_arguments_changes_neither_history_nor_retries(
    db: loom.Database,
) -> None:
    attempts_seen.clear()
    handle = await db.start_workflow(DetScribble)
    async with worker(db):
        assert await handle.result(timeout=20) == {"lines": 2}
    assert attempts_seen == [{"lines": ["a"]}] * 3  # every attempt got the recorded call
    [scheduled] = of_type(await handle.events(), EventType.ACTIVITY_SCHEDULED)
    assert scheduled.payload["args"] == [{"lines": ["a"]}]


# -------------------------------------------- other values JSON would refuse or change


@loom.workflow(name="det_Values")
class DetValues(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def store(self, ctx: Ctx) -> None:
        refused: dict[str, str] = {}
        for label, value in [
            ("huge", {"n": [2**64]}),
            ("key", {"ok": {1: "one"}}),
            ("bytes", {"blob": b"\x00"}),
            ("naive", {"at": datetime(2024, 1, 1)}),
            ("aware", {"at": datetime(2024, 1, 1, tzinfo=UTC)}),
            ("surrogate", ["ok", "\ud800"]),
        ]:
            try:
                await ctx.state.set(label, value)
            except loom.PayloadError as exc:
                refused[label] = str(exc)
        await ctx.state.set("refused", refused)
        await ctx.state.set("tags", {"pear", "apple", "fig", "kiwi", "banana"})
        await ctx.state.set("mixed", {3, "b", 1, "a"})
        await ctx.state.set("largest", 2**64 - 1)


async def test_values_json_cannot_hold_are_refused_naming_where_and_sets_are_sorted(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(DetValues)
    async with worker(db):
        state = await handle.result(timeout=20)
    refused = state["refused"]
    assert "state['huge']['n'][0] is an integer beyond 64 bits" in refused["huge"]
    assert "state['key']['ok'] has a key that is not a str: 1" in refused["key"]
    assert "state['bytes']['blob'] is a builtins.bytes" in refused["bytes"]
    assert "state['naive']['at'] is a datetime.datetime" in refused["naive"]
    assert "state['aware']['at']" in refused["aware"]
    assert "state['surrogate'][1] is a str with a lone surrogate" in refused["surrogate"]
    # A set's order depends on the process's hash seed; stored, it is sorted, so equal inputs
    # are equal whichever process starts them.
    assert state["tags"] == ["apple", "banana", "fig", "kiwi", "pear"]
    assert state["mixed"] == ["a", "b", 1, 3]  # mixed types: ordered by their JSON
    assert state["largest"] == 2**64 - 1


async def test_an_input_holding_a_set_is_the_same_input_in_any_order(db: loom.Database) -> None:
    first = await db.start_workflow(
        DetValues, workflow_input={"tags": {"x", "y", "z", "w"}}, workflow_id="det-set"
    )
    again = await db.start_workflow(
        DetValues, workflow_input={"tags": ["w", "x", "y", "z"]}, workflow_id="det-set"
    )
    assert first.workflow_id == again.workflow_id
    assert (await first.events())[0].payload["input"] == {"tags": ["w", "x", "y", "z"]}


# ------------------------------------------------------- 14. tasks a step leaves behind


@loom.workflow(name="det_ForgetsLast")
class DetForgetsLast(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", True)

    @loom.step
    async def notify(self, ctx: Ctx) -> None:
        asyncio.create_task(ctx.activity(det_count, "forgotten-last"))  # noqa: RUF006


@loom.workflow(name="det_ForgetsEarly")
class DetForgetsEarly(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def notify(self, ctx: Ctx) -> None:
        asyncio.create_task(ctx.activity(det_count, "forgotten-early"))  # noqa: RUF006

    @loom.step
    async def finish(self, ctx: Ctx) -> None:
        await ctx.state.set("count", await ctx.activity(det_count, "finish"))


@loom.workflow(name="det_ForgetsHelper")
class DetForgetsHelper(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def notify(self, ctx: Ctx) -> None:
        async def later() -> None:
            await ctx.sleep(seconds=1)

        asyncio.ensure_future(later())  # noqa: RUF006


@pytest.mark.parametrize(
    ("workflow", "what"),
    [
        (DetForgetsLast, "ctx.activity('det_count')"),
        (DetForgetsEarly, "ctx.activity('det_count')"),
        (DetForgetsHelper, "later()"),
    ],
    ids=["last-step", "earlier-step", "helper"],
)
async def test_a_task_left_pending_by_a_step_fails_that_step(
    db: loom.Database, workflow: type[loom.Workflow[Any, Any]], what: str
) -> None:
    handle = await db.start_workflow(workflow)
    cause = await failure(db, handle)
    assert cause["type"] == "UnawaitedCallError"
    assert cause["step"] == "notify"
    assert "step 'notify'" in cause["message"]
    assert what in cause["message"]
    assert "asyncio.create_task" in cause["message"]
    events = await handle.events()
    assert not of_type(events, EventType.ACTIVITY_SCHEDULED)
    assert not of_type(events, EventType.TIMER_SCHEDULED)
    assert [e.payload["step"] for e in of_type(events, EventType.STEP_COMPLETED)] == (
        ["prepare"] if workflow is DetForgetsLast else []
    )
    assert calls["forgotten-last"] == calls["forgotten-early"] == calls["finish"] == 0
    [report] = await db.check_replay([handle.workflow_id])  # the failure replays as recorded
    assert report.ok, report.problem


# --------------------------------------------------- 15. awaits nothing durable completes


async def _bare_future(ctx: Ctx) -> None:
    await asyncio.get_running_loop().create_future()


async def _to_thread(ctx: Ctx) -> None:
    await asyncio.to_thread(sum, [1, 2])


async def _executor(ctx: Ctx) -> None:
    await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2])


async def _event(ctx: Ctx) -> None:
    await asyncio.Event().wait()


async def _queue(ctx: Ctx) -> None:
    await asyncio.Queue[int]().get()


async def _gathered_event(ctx: Ctx) -> None:
    await asyncio.gather(ctx.activity(det_count, "beside-event"), asyncio.Event().wait())


async def _connection(ctx: Ctx) -> None:
    await asyncio.open_connection("127.0.0.1", 5432)


STUCK = {
    "future": (_bare_future, "create_future"),
    "to_thread": (_to_thread, "asyncio.to_thread"),
    "executor": (_executor, "run_in_executor"),
    "event": (_event, "Event.wait()"),
    "queue": (_queue, "Queue.get()"),
    "gathered": (_gathered_event, "Event.wait()"),
    "connection": (_connection, "create_connection"),
}


@loom.workflow(name="det_Stuck")
class DetStuck(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="blocked")
    async def blocked(self, ctx: Ctx) -> None:
        await ctx.state.set("started", True)
        await STUCK[ctx.input["how"]][0](ctx)


@pytest.mark.parametrize("how", list(STUCK))
async def test_a_step_awaiting_something_not_durable_fails_saying_what_to_use(
    db: loom.Database, how: str
) -> None:
    handle = await db.start_workflow(DetStuck, workflow_input={"how": how})
    cause = await failure(db, handle)
    assert cause["type"] == "WorkflowSandboxError"
    assert cause["step"] == "blocked"
    assert STUCK[how][1] in cause["message"]
    assert "ctx.activity" in cause["message"]
    assert cause["message"].strip() != ""
    assert await handle.state() == {"started": True}
    assert isinstance(loom.WorkflowSandboxError("x"), loom.LoomError)
    [report] = await db.check_replay([handle.workflow_id])  # the failure replays as recorded
    assert report.ok, report.problem


async def _spin(ctx: Ctx) -> None:
    while ctx.state.get("never") is None:  # noqa: ASYNC110 (the mistake under test)
        await asyncio.sleep(0)


async def _spin_beside(ctx: Ctx) -> None:
    await asyncio.gather(ctx.activity(det_count, "beside-spin"), _spin(ctx))


async def _spin_stubbornly(ctx: Ctx) -> None:
    while True:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0)


async def _spin_after_many_tasks(ctx: Ctx) -> None:
    # Enough tasks, finished by now, that the loop has dropped its references to them.
    await asyncio.gather(*(asyncio.sleep(0) for _ in range(300)))
    await _spin_beside(ctx)


SPINNING = {
    "spin": _spin,
    "beside": _spin_beside,
    "stubborn": _spin_stubbornly,
    "after-many-tasks": _spin_after_many_tasks,
}


@loom.workflow(name="det_Spinning")
class DetSpinning(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="polling")
    async def polling(self, ctx: Ctx) -> None:
        await SPINNING[ctx.input["how"]](ctx)


@pytest.mark.parametrize("how", list(SPINNING))
async def test_a_step_spinning_on_asyncio_sleep_zero_fails_instead_of_holding_the_worker(
    db: loom.Database, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loom.core.loop, "SPIN_LIMIT", 20_000)  # the same, sooner
    handle = await db.start_workflow(DetSpinning, workflow_input={"how": how})
    other = await db.start_workflow(DetEcho, workflow_input={"n": 2})
    cause = await failure(db, handle)
    assert cause["type"] == "WorkflowSandboxError"
    assert cause["step"] == "polling"
    assert "ran 20000 callbacks" in cause["message"]
    assert "spinning" in cause["message"] and "ctx.sleep" in cause["message"]
    assert await other.status() == WorkflowStatus.COMPLETED  # the worker was not held


@loom.workflow(name="det_Cooperating")
class DetCooperating(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """asyncio primitives shared between the step's own tasks are fine: they settle in-step."""

    @loom.step
    async def work(self, ctx: Ctx) -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        ready = asyncio.Event()

        async def producer() -> None:
            await queue.put(await ctx.activity(det_count, "produced"))
            ready.set()

        async def consumer() -> int:
            await ready.wait()
            return await queue.get()

        _, got = await asyncio.gather(producer(), consumer())
        await ctx.state.set("got", got)


async def test_asyncio_primitives_completed_within_the_step_still_work(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(DetCooperating)
    async with worker(db, cache_size=0):
        assert await handle.result(timeout=20) == {"got": 1}
    assert await handle.status() == WorkflowStatus.COMPLETED


# ------------------------------------------------------ 17. run_once() and the open database


@loom.workflow(name="det_Echo")
class DetEcho(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def echo(self, ctx: Ctx) -> None:
        await ctx.state.set("echo", ctx.input)


async def test_run_once_without_a_database_uses_the_one_the_program_opened(
    in_tmp_cwd: Path,
) -> None:
    async with loom.Database("sqlite:///orders.db") as db:
        await db.migrate_up()
        handle = await db.start_workflow(DetEcho, workflow_input={"n": 1})
        assert await loom.run_once() is True
        assert await handle.result(timeout=5) == {"echo": {"n": 1}}
        assert await loom.run_once() is False
    assert not (in_tmp_cwd / "loom.db").exists()


async def test_run_once_without_a_database_refuses_to_guess(in_tmp_cwd: Path) -> None:
    with pytest.raises(loom.ConfigurationError, match=r"run_once\(db\)"):
        await loom.run_once()
    assert not (in_tmp_cwd / "loom.db").exists()
    async with loom.Database("sqlite:///a.db") as a, loom.Database("sqlite:///b.db"):
        with pytest.raises(loom.ConfigurationError, match=r"2 databases are open.*a\.db"):
            await loom.run_once()
        await a.migrate_up()
        assert await loom.run_once(a) is False
    assert not (in_tmp_cwd / "loom.db").exists()
    with sqlite3.connect(in_tmp_cwd / "a.db") as conn:
        assert conn.execute("SELECT count(*) FROM workflows").fetchone() == (0,)


# ------------------------------------------------ 18. the determinism advice is actionable


def test_the_non_determinism_advice_names_what_exists() -> None:
    message = str(loom.NonDeterminismError("order-1", "the code did X"))
    assert "ctx.patched(" in message and "@loom.workflow(version=" in message
    assert "loom retry" in message and "loom replay" in message
    assert "restore the old code path" in message
