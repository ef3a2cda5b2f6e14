"""Queries: a workflow answers from its stored state and input, and asking changes nothing.

Every engine test runs on both backends (the ``db`` fixture); the workflows are real ones, run
by an in-process worker, parked on a signal, in the middle of an activity, or finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import uuid
from typing import Any

import pytest

import loom
from loom import EventType
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
QCtx = loom.QueryContext[dict[str, Any], dict[str, Any]]

gates: dict[str, asyncio.Event] = {}
"""Per test: the activity ``qry_gated`` waits on its key's event, which the test sets."""


@dataclasses.dataclass
class Window:
    low: int
    high: int


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


@loom.activity(name="qry_gated")
async def gated(key: str) -> str:
    await gates[key].wait()
    return "charged"


@loom.workflow(name="qry_Order")
class QryOrder(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Records the items, charges (an activity held open by the test when ``gate`` is given),
    then waits for approval."""

    @loom.step
    async def add_items(self, ctx: Ctx) -> None:
        await ctx.state.set("items", ctx.input["items"])
        await ctx.state.set("stage", "charging")
        if ctx.input.get("gate"):
            await ctx.state.set("charge", await ctx.activity(gated, ctx.input["gate"]))
        await ctx.state.set("stage", "awaiting approval")

    @loom.step
    async def approval(self, ctx: Ctx) -> None:
        await ctx.state.set("approved_by", await ctx.wait_for_signal("approve"))
        await ctx.state.set("stage", "approved")

    @loom.query
    def total(self, ctx: QCtx) -> int:
        return sum(item["price"] for item in ctx.state.get("items", []))

    @loom.query(name="items_between")
    async def between(self, ctx: QCtx, window: Window, *tags: str) -> dict[str, Any]:
        await asyncio.sleep(0)  # an await that completes at once is fine
        names = [i["name"] for i in ctx.state["items"] if window.low <= i["price"] <= window.high]
        return {"names": names, "tags": list(tags), "window": window}

    @loom.query
    def facts(self, ctx: QCtx) -> dict[str, Any]:
        return {
            "workflow_id": ctx.workflow_id,
            "status": ctx.status,
            "customer": ctx.input["customer"],
            "stage": ctx.state.get("stage"),
            "approved_by": ctx.state.get("approved_by"),
            "state": ctx.state,
        }

    @loom.query
    def echo(self, ctx: QCtx, value: Any) -> Any:
        return value

    @loom.query
    def fails(self, ctx: QCtx, kind: str) -> Any:
        if kind == "value":
            raise ValueError("no total for an empty basket")
        if kind == "unprintable":
            raise Unprintable()
        if kind == "exit":
            sys.exit(3)
        if kind == "interrupt":
            raise KeyboardInterrupt("raised by the query itself")
        if kind == "deep":
            return nested(5000)
        if kind == "state":
            ctx.state["items"].append({"name": "free", "price": 0})
        if kind == "set":
            ctx.state.set("stage", "hacked")  # type: ignore[operator]
        if kind == "activity":
            return ctx.activity(gated, "x")  # type: ignore[attr-defined]
        if kind == "input":
            ctx.input["customer"] = "mallory"
        if kind == "nan":
            return {"ratio": float("nan")}
        if kind == "bytes":
            return b"\x00"
        return None

    @loom.query
    async def waits(self, ctx: QCtx, kind: str) -> Any:
        if kind == "event":
            await asyncio.Event().wait()
        elif kind == "sleep":
            await asyncio.sleep(1)
        elif kind == "spin":
            while True:  # noqa: ASYNC110 (the busy loop is the point)
                await asyncio.sleep(0)
        elif kind == "orphan":
            asyncio.get_running_loop().create_task(asyncio.Event().wait())
        return kind


def nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


def order_input(**extra: Any) -> dict[str, Any]:
    items = [
        {"name": "mug", "price": 12},
        {"name": "lamp", "price": 40},
        {"name": "ñandú ☃", "price": 7},
    ]
    return {"customer": "ann", "items": items, **extra}


async def parked_on_approval(handle: loom.WorkflowHandle[Any]) -> bool:
    record = await handle.describe()
    if record.leased or record.status is not loom.WorkflowStatus.RUNNING:
        return False
    return bool(of_type(await handle.events(), EventType.SIGNAL_WAIT_STARTED))


async def waiting_order(db: loom.Database) -> loom.WorkflowHandle[Any]:
    handle = await db.start_workflow(QryOrder, workflow_input=order_input())
    async with worker(db):
        await eventually(lambda: parked_on_approval(handle), what="the order to wait")
    return handle


# -- answers ---------------------------------------------------------------------------------


async def test_a_workflow_waiting_for_a_signal_answers_from_its_state_and_nothing_changes(
    db: loom.Database,
) -> None:
    handle = await waiting_order(db)
    before, history = await handle.describe(), await handle.events()

    assert await handle.query("total") == 59
    facts = await handle.query("facts")
    assert facts == {
        "workflow_id": handle.workflow_id,
        "status": "RUNNING",
        "customer": "ann",
        "stage": "awaiting approval",
        "approved_by": None,
        "state": before.state,
    }
    # A handle that was not started here finds the class by the workflow's name.
    assert await db.get_workflow(handle.workflow_id).query("total") == 59

    after = await handle.describe()
    assert after == before  # status, state, updated time, last_seq, lease, ready_at: the same
    assert await handle.events() == history
    assert (await db.stats()).events == len(history)


async def test_a_finished_workflow_answers_from_its_final_state(db: loom.Database) -> None:
    handle = await db.start_workflow(QryOrder, workflow_input=order_input())
    await handle.signal("approve", "bo")
    async with worker(db):
        final = await handle.result(timeout=10)
    facts = await db.get_workflow(handle.workflow_id).query("facts")
    assert facts["status"] == "COMPLETED"
    assert (facts["stage"], facts["approved_by"]) == ("approved", "bo")
    assert facts["state"] == final


async def test_a_canceled_workflow_answers_from_the_state_it_had(db: loom.Database) -> None:
    handle = await waiting_order(db)
    await handle.cancel("customer left")
    facts = await handle.query("facts")
    assert (facts["status"], facts["stage"]) == ("CANCELED", "awaiting approval")


async def test_a_query_during_an_activity_reads_the_last_write_and_leaves_the_lease_alone(
    db: loom.Database,
) -> None:
    key = uuid.uuid4().hex
    gates[key] = asyncio.Event()
    handle = await db.start_workflow(QryOrder, workflow_input=order_input(gate=key))
    async with worker(db, lease_seconds=60):  # no lease renewal between the two reads below

        async def charging() -> bool:
            record = await handle.describe()
            return record.leased and record.state.get("stage") == "charging"

        await eventually(charging, what="the charge to be written as scheduled")
        before = await handle.describe()
        assert (await handle.query("facts"))["stage"] == "charging"
        assert await handle.query("total") == 59
        assert await handle.describe() == before

        gates[key].set()
        await eventually(lambda: parked_on_approval(handle), what="the order to wait")
        await handle.signal("approve", "cy")
        state = await handle.result(timeout=10)
    assert state["charge"] == "charged"
    assert (await handle.query("facts"))["stage"] == "approved"
    kinds = [e.type for e in await handle.events()]
    assert kinds.count(EventType.ACTIVITY_COMPLETED) == 1
    assert kinds[-1] is EventType.WORKFLOW_COMPLETED


async def test_arguments_are_json_rebuilt_as_annotated(db: loom.Database) -> None:
    handle = await waiting_order(db)
    answer = await handle.query("items_between", Window(10, 50), "gift", "☃\x00")
    assert answer == {
        "names": ["mug", "lamp"],
        "tags": ["gift", "☃\x00"],
        "window": {"low": 10, "high": 50},
    }
    # As JSON, the way the command line and the web API pass them.
    assert (await handle.query("items_between", {"low": 0, "high": 10}))["names"] == ["ñandú ☃"]
    huge = {"text": "x" * 100_000, "list": list(range(1000)), "deep": [[[[["end"]]]]]}
    assert await handle.query("echo", huge) == huge
    assert await handle.query("echo", 2**64 - 1) == 2**64 - 1


async def test_arguments_that_do_not_fit_are_refused_before_the_query_runs(
    db: loom.Database,
) -> None:
    handle = await waiting_order(db)
    with pytest.raises(loom.QueryArgumentsError, match=r"args\[0\] is nan") as info:
        await handle.query("echo", float("nan"))
    assert info.value.workflow_id == handle.workflow_id and info.value.query == "echo"
    with pytest.raises(loom.QueryArgumentsError, match="beyond 64 bits"):
        await handle.query("echo", 2**70)
    with pytest.raises(loom.QueryArgumentsError, match="bytes"):
        await handle.query("echo", b"raw")
    with pytest.raises(loom.QueryArgumentsError, match="nested too deeply"):
        await handle.query("echo", nested(5000))
    with pytest.raises(loom.QueryArgumentsError, match=r"it takes value; got 2"):
        await handle.query("echo", 1, 2)
    with pytest.raises(loom.QueryArgumentsError, match=r"it takes no arguments; got 1"):
        await handle.query("total", 1)
    with pytest.raises(loom.QueryArgumentsError, match="missing a required argument: 'window'"):
        await handle.query("items_between")
    with pytest.raises(loom.QueryArgumentsError, match=r"argument 'window'.*Window"):
        await handle.query("items_between", {"low": "cheap"})
    assert isinstance(info.value, TypeError)


# -- errors ----------------------------------------------------------------------------------


async def test_unknown_workflow_query_name_or_class(db: loom.Database, db_url: str) -> None:
    with pytest.raises(loom.WorkflowNotFoundError, match="'qry-ghost'"):
        await db.get_workflow("qry-ghost").query("total")
    handle = await waiting_order(db)
    with pytest.raises(loom.QueryNotFoundError) as info:
        await handle.query("totl")
    assert info.value.known == ["total", "items_between", "facts", "echo", "fails", "waits"]
    assert "has no query 'totl'; its queries: 'total', 'items_between'" in str(info.value)
    assert info.value.workflow_id == handle.workflow_id
    with pytest.raises(loom.QueryNotFoundError, match="'between'"):
        await handle.query("between")  # the method's name is not the query's
    with pytest.raises(loom.errors.InvalidIdError, match="query name"):
        await handle.query("to\x1btal")
    with pytest.raises(loom.errors.InvalidIdError, match="query name"):
        await handle.query(7)  # type: ignore[arg-type]

    # A process that never imported the workflow's module cannot run its queries.
    async with loom.Database(db_url, registry=loom.Registry()) as elsewhere:
        with pytest.raises(loom.ConfigurationError) as missing:
            await elsewhere.get_workflow(handle.workflow_id).query("total")
    assert "'qry_Order'" in str(missing.value) and "-m MODULE" in str(missing.value)
    assert "$LOOM_MODULES" in str(missing.value) and "[tool.loom]" in str(missing.value)


async def test_a_query_that_raises_fails_typed_and_changes_nothing(db: loom.Database) -> None:
    handle = await waiting_order(db)
    before = await handle.describe()

    with pytest.raises(loom.QueryFailedError) as info:
        await handle.query("fails", "value")
    assert (info.value.error_type, info.value.error_message) == (
        "ValueError",
        "no total for an empty basket",
    )
    assert isinstance(info.value.__cause__, ValueError)
    assert str(info.value) == (
        f"query 'fails' of workflow {handle.workflow_id!r} failed: ValueError: "
        "no total for an empty basket"
    )
    with pytest.raises(loom.QueryFailedError, match="<unprintable Unprintable>"):
        await handle.query("fails", "unprintable")
    with pytest.raises(loom.QueryFailedError, match="SystemExit: 3"):
        await handle.query("fails", "exit")
    with pytest.raises(loom.QueryFailedError, match="KeyboardInterrupt: raised by the query"):
        await handle.query("fails", "interrupt")
    with pytest.raises(loom.PayloadError, match="result is nested too deeply"):
        await handle.query("fails", "deep")
    with pytest.raises(loom.QueryFailedError, match=r"ReadOnlyError: ctx.state\['items'\]"):
        await handle.query("fails", "state")
    with pytest.raises(loom.QueryFailedError, match=r"ReadOnlyError: ctx\.state is read-only"):
        await handle.query("fails", "set")
    with pytest.raises(loom.QueryFailedError, match=r"ReadOnlyError: ctx\.input is read-only"):
        await handle.query("fails", "input")
    with pytest.raises(loom.QueryFailedError) as durable:
        await handle.query("fails", "activity")
    assert durable.value.error_type == "AttributeError"
    assert "a query context has no 'activity'" in durable.value.error_message
    assert "belong in steps" in durable.value.error_message
    with pytest.raises(loom.PayloadError, match=r"result\['ratio'\] is nan"):
        await handle.query("fails", "nan")
    with pytest.raises(loom.PayloadError, match="answer of query 'fails'"):
        await handle.query("fails", "bytes")

    assert await handle.describe() == before
    await handle.signal("approve", "dee")  # the workflow goes on as if nothing was asked
    async with worker(db):
        assert (await handle.result(timeout=10))["approved_by"] == "dee"


async def test_an_async_query_cannot_wait(db: loom.Database) -> None:
    handle = await waiting_order(db)
    for kind, fragment in [
        ("event", "it awaits Event.wait() (asyncio), which does not complete at once"),
        ("sleep", "wall-clock timers"),
        ("spin", "callbacks without finishing"),
    ]:
        with pytest.raises(loom.QueryFailedError, match="WorkflowSandboxError") as info:
            await handle.query("waits", kind)
        assert fragment in info.value.error_message
    # A task the query started and left behind is stopped; the answer stands.
    assert await handle.query("waits", "orphan") == "orphan"


# -- definitions -----------------------------------------------------------------------------


def test_queries_are_collected_in_order_with_their_parameters() -> None:
    definition = QryOrder.definition()
    assert [q.name for q in definition.queries] == [
        "total",
        "items_between",
        "facts",
        "echo",
        "fails",
        "waits",
    ]
    between = definition.query("items_between")
    assert between is not None
    assert (between.attribute, between.is_async) == ("between", True)
    assert between.parameters == ("window", "*tags")
    assert between.arg_types == {"window": Window, "tags": str}
    assert definition.query("nope") is None


@loom.workflow(name="qry_Base")
class QryBase(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def only(self, ctx: Ctx) -> None:
        await ctx.state.set("n", 1)

    @loom.query
    def first(self, ctx: QCtx) -> int:
        return 1

    @loom.query
    def second(self, ctx: QCtx) -> int:
        return 2


@loom.workflow(name="qry_Derived")
class QryDerived(QryBase):
    def second(self, ctx: QCtx) -> int:  # a plain method now: no longer a query
        return 22

    @loom.query
    def first(self, ctx: QCtx) -> int:  # overridden: keeps its place
        return 11

    @loom.query
    def third(self, ctx: QCtx) -> int:
        return 3


def test_inherited_queries_and_overrides() -> None:
    assert [q.name for q in QryBase.definition().queries] == ["first", "second"]
    assert [q.name for q in QryDerived.definition().queries] == ["first", "third"]
    with pytest.raises(loom.DefinitionError, match="queries 'first' and 'first_again'"):

        @loom.workflow(name="qry_Clash")
        class Clash(QryDerived):
            @loom.query(name="first")
            def first_again(self, ctx: QCtx) -> int:
                return 111


async def test_an_inherited_query_runs_the_subclass_code(db: loom.Database) -> None:
    handle = await db.start_workflow(QryDerived)
    assert [await handle.query(name) for name in ("first", "third")] == [11, 3]
    with pytest.raises(loom.QueryNotFoundError, match="its queries: 'first', 'third'"):
        await handle.query("second")


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("@loom.query\n@staticmethod\ndef q(ctx): pass", "must decorate a method"),
        ("@loom.query\ndef q(self): pass", "must take (self, ctx, *args)"),
        ("@loom.query\ndef q(self, ctx, *, key): pass", "positional arguments only"),
        ("@loom.query\ndef q(self, ctx):\n    yield 1", "not yield"),
        ("@loom.query\nasync def q(self, ctx):\n    yield 1", "not yield"),
        ("@loom.query(name='a/b')\ndef q(self, ctx): pass", "URL path segment"),
        ("@loom.query(name='..')\ndef q(self, ctx): pass", "cannot be addressed in a URL"),
        ("@loom.query(name='a\\x00')\ndef q(self, ctx): pass", "control character"),
        ("@loom.query(name='')\ndef q(self, ctx): pass", "query name"),
        ("@loom.query\n@loom.step\nasync def q(self, ctx): pass", "both a step and a query"),
        ("@loom.step\n@loom.query\nasync def q(self, ctx): pass", "both a step and a query"),
    ],
)
def test_malformed_queries_are_refused_at_definition(source: str, fragment: str) -> None:
    with pytest.raises(loom.DefinitionError) as info:
        exec(source, {"loom": loom})
    assert fragment in str(info.value)


def test_a_query_with_optional_keywords_and_defaults_is_accepted() -> None:
    @loom.query
    def q(self: Any, ctx: QCtx, limit: int = 3, *, sort: bool = False, **more: Any) -> int:
        return limit

    definition = loom.definitions.query_definition(q)
    assert definition is not None and definition.parameters == ("limit",)
