"""Values that cannot be stored are refused where they are produced, before any side effect."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any, Optional

import pydantic
import pytest

import loom
from loom import EventType
from support import of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

calls: collections.Counter[str] = collections.Counter()


@pytest.fixture(autouse=True)
def _fresh_counters() -> None:
    """Each test (and each backend's run of it) counts its own executions."""
    calls.clear()


@loom.activity(name="pay_record")
async def pay_record(value: Any) -> str:
    calls["pay_record"] += 1
    return "recorded"


@loom.workflow(name="pay_BadArgument")
class PayBadArgument(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="send")
    async def send(self, ctx: Ctx) -> None:
        await ctx.state.set("before", True)
        await ctx.activity(pay_record, object())


@loom.workflow(name="pay_CaughtArgument")
class PayCaughtArgument(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def send(self, ctx: Ctx) -> None:
        try:
            await ctx.activity(pay_record, {"when": object()})
        except loom.PayloadError as exc:
            await ctx.state.set("refused", str(exc))
        await ctx.state.set("fallback", await ctx.activity(pay_record, {"when": "now"}))


@loom.workflow(name="pay_BadState")
class PayBadState(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="remember")
    async def remember(self, ctx: Ctx) -> None:
        await ctx.state.set("fine", 1)
        await ctx.state.set("handle", object())


@loom.workflow(name="pay_BadUpdate")
class PayBadUpdate(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="remember")
    async def remember(self, ctx: Ctx) -> None:
        await ctx.state.update(fine=lambda _: 1, handle=lambda _: object())


async def test_non_json_activity_argument_fails_before_the_activity_runs(
    db: loom.Database,
) -> None:
    runs_before = calls["pay_record"]
    handle = await db.start_workflow(PayBadArgument)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)

    assert calls["pay_record"] == runs_before  # the activity never executed
    cause = info.value.cause
    assert cause["type"] == "PayloadError"
    assert cause["step"] == "send"
    assert "'pay_record'" in cause["message"]
    assert "cannot be stored" in cause["message"]
    events = await handle.events()
    assert not of_type(events, EventType.ACTIVITY_SCHEDULED)
    assert events[-1].type is EventType.WORKFLOW_FAILED
    assert await handle.state() == {"before": True}


async def test_payload_error_is_raised_at_the_call_site_and_can_be_caught(
    db: loom.Database,
) -> None:
    runs_before = calls["pay_record"]
    handle = await db.start_workflow(PayCaughtArgument)
    async with worker(db):
        state = await handle.result(timeout=10)
    assert "'pay_record'" in state["refused"]
    assert state["fallback"] == "recorded"
    assert calls["pay_record"] == runs_before + 1
    [scheduled] = of_type(await handle.events(), EventType.ACTIVITY_SCHEDULED)
    assert scheduled.payload["args"] == [{"when": "now"}]


@pytest.mark.parametrize("workflow", [PayBadState, PayBadUpdate], ids=["set", "update"])
async def test_non_json_state_value_is_refused(
    db: loom.Database, workflow: type[loom.Workflow[Any, Any]]
) -> None:
    handle = await db.start_workflow(workflow)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)
    cause = info.value.cause
    assert cause["type"] == "PayloadError"
    assert cause["step"] == "remember"
    assert "'handle'" in cause["message"]
    assert "handle" not in await handle.state()
    assert not of_type(await handle.events(), EventType.STATE_UPDATE)


async def test_non_json_workflow_input_is_refused_and_nothing_is_stored(
    db: loom.Database,
) -> None:
    with pytest.raises(loom.PayloadError, match="input") as info:
        await db.start_workflow(PayBadArgument, workflow_input={"file": object()})
    assert "JSON" in str(info.value)
    with pytest.raises(loom.PayloadError, match="initial state"):
        await db.start_workflow(
            PayBadArgument, workflow_input={"n": 1}, initial_state={"lock": object()}
        )
    assert await db.list_workflows() == []
    assert (await db.stats()).events == 0


async def test_non_json_signal_payload_is_refused(db: loom.Database) -> None:
    handle = await db.start_workflow(PayBadArgument)
    with pytest.raises(loom.PayloadError, match="'go'"):
        await handle.signal("go", object())
    assert (await db.stats()).signals_pending == 0


# ------------------------------------------------- typed arguments and results (pydantic)


class Item(pydantic.BaseModel):
    sku: str
    qty: int


@dataclass
class Address:
    city: str


@dataclass
class Order:
    address: Address
    tags: tuple[str, ...]
    items: list[Item]


@loom.activity(name="pay_maybe_item")
async def pay_maybe_item(found: bool) -> Optional[Item]:  # noqa: UP045 - the old spelling
    return Item(sku="A", qty=1) if found else None


@loom.activity(name="pay_item_or_none")
async def pay_item_or_none(found: bool) -> Item | None:
    return Item(sku="B", qty=2) if found else None


@loom.activity(name="pay_items")
def pay_items() -> list[Item]:
    return [Item(sku="C", qty=3), Item(sku="D", qty=4)]


@loom.activity(name="pay_items_by_sku")
async def pay_items_by_sku() -> dict[str, Item]:
    return {"E": Item(sku="E", qty=5)}


@loom.activity(name="pay_order")
async def pay_order() -> Order:
    return Order(Address("Lyon"), ("gift", "fragile"), [Item(sku="F", qty=6)])


@loom.activity(name="pay_inspect_args")
def pay_inspect_args(
    order: Order, items: list[Item], maybe: Item | None, by_sku: dict[str, Item], *more: Address
) -> dict[str, Any]:
    """What the activity receives, rebuilt from the stored JSON by its annotations."""
    return {
        "order": [type(order).__name__, type(order.address).__name__, type(order.tags).__name__],
        "items": [type(i).__name__ for i in items],
        "maybe": type(maybe).__name__,
        "by_sku": {k: type(v).__name__ for k, v in by_sku.items()},
        "more": [type(m).__name__ for m in more],
    }


def _shape(value: Any) -> Any:
    """Type names all the way down, to compare what the workflow saw."""
    if isinstance(value, list | tuple):
        return [type(value).__name__, [_shape(v) for v in value]]
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    return type(value).__name__


@loom.workflow(name="pay_Typed")
class PayTyped(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def typed(self, ctx: Ctx) -> None:
        maybe = await ctx.activity(pay_maybe_item, True)
        absent = await ctx.activity(pay_maybe_item, False)
        union = await ctx.activity(pay_item_or_none, True)
        items = await ctx.activity(pay_items)
        by_sku = await ctx.activity(pay_items_by_sku)
        order = await ctx.activity(pay_order)
        assert isinstance(maybe, Item) and isinstance(union, Item)
        assert isinstance(order, Order)
        await ctx.state.set(
            "seen",
            {
                "maybe": _shape(maybe),
                "absent": _shape(absent),
                "union": _shape(union),
                "items": _shape(items),
                "by_sku": _shape(by_sku),
                "order": [_shape(order), _shape(order.address), _shape(order.tags)],
                "order_items": _shape(order.items),
                "qty": items[1].qty,
                "city": order.address.city,
            },
        )
        received = await ctx.activity(
            pay_inspect_args, order, items, union, by_sku, order.address, Address("Paris")
        )
        await ctx.state.set("received", received)


async def test_results_and_arguments_are_rebuilt_for_any_annotation(db: loom.Database) -> None:
    handle = await db.start_workflow(PayTyped)
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state["seen"] == {
        "maybe": "Item",
        "absent": "NoneType",
        "union": "Item",
        "items": ["list", ["Item", "Item"]],
        "by_sku": {"E": "Item"},
        "order": ["Order", "Address", ["tuple", ["str", "str"]]],
        "order_items": ["list", ["Item"]],
        "qty": 4,
        "city": "Lyon",
    }
    assert state["received"] == {
        "order": ["Order", "Address", "tuple"],
        "items": ["Item", "Item"],
        "maybe": "Item",
        "by_sku": {"E": "Item"},
        "more": ["Address", "Address"],
    }
    # Stored as plain JSON all the same.
    completed = of_type(await handle.events(), EventType.ACTIVITY_COMPLETED)
    assert completed[3].payload["result"] == [{"sku": "C", "qty": 3}, {"sku": "D", "qty": 4}]


@loom.activity(name="pay_wrong_result")
async def pay_wrong_result() -> list[Item]:
    return [{"sku": "G"}]  # type: ignore[list-item]  # no qty


@loom.activity(name="pay_needs_item", retry_count=3, retry_delay=0.01)
async def pay_needs_item(item: Item) -> int:
    calls["pay_needs_item"] += 1
    return item.qty


@loom.workflow(name="pay_Invalid")
class PayInvalid(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="check")
    async def check(self, ctx: Ctx) -> None:
        try:
            await ctx.activity(pay_needs_item, {"sku": "H", "qty": "many"})
        except loom.ActivityFailedError as exc:
            await ctx.state.set("argument", [exc.attempts, exc.error_type, exc.error_message])
        await ctx.activity(pay_wrong_result)


async def test_a_value_that_does_not_match_its_annotation_is_a_payload_error(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(PayInvalid)
    async with worker(db):
        with pytest.raises(loom.WorkflowFailedError) as info:
            await handle.result(timeout=10)

    # An argument that does not validate: the activity never runs, and is not retried.
    attempts, error_type, message = (await handle.state())["argument"]
    assert (attempts, error_type) == (1, "PayloadError")
    assert "argument 'item' of activity 'pay_needs_item'" in message
    assert "qty" in message and "valid integer" in message
    assert calls["pay_needs_item"] == 0
    # A result that does not validate fails where the workflow receives it.
    cause = info.value.cause
    assert (cause["type"], cause["step"]) == ("PayloadError", "check")
    assert "the result of activity 'pay_wrong_result'" in cause["message"]
    assert "qty" in cause["message"] and "Field required" in cause["message"]


@loom.activity(name="pay_bind")
def pay_bind(item: Item, count: int = 1, *, note: Item | None = None, **extra: Item) -> list[Any]:
    """How each argument arrives: its type and value."""
    return [
        [type(item).__name__, item.qty],
        [type(count).__name__, count],
        type(note).__name__,
        sorted((k, type(v).__name__) for k, v in extra.items()),
    ]


@loom.workflow(name="pay_Bind")
class PayBind(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def bind(self, ctx: Ctx) -> None:
        item = Item(sku="J", qty=7)
        seen = [
            await ctx.activity(pay_bind, item),
            await ctx.activity(pay_bind, item, 3),
            await ctx.activity(pay_bind, item, True),  # lax: a bool for an int is 1
            await ctx.activity(pay_bind, count=2, item=item),
            await ctx.activity(pay_bind, item, note=item, gift=item),
        ]
        await ctx.state.set("seen", seen)
        failures = []
        for args in ((), (item, 1, 2), ({"sku": "K"},)):
            try:
                await ctx.activity(pay_bind, *args)
            except loom.ActivityFailedError as exc:
                failures.append([exc.error_type, exc.error_message])
        await ctx.state.set("failures", failures)


async def test_arguments_are_bound_and_rebuilt_however_the_activity_is_called(
    db: loom.Database,
) -> None:
    handle = await db.start_workflow(PayBind)
    async with worker(db):
        state = await handle.result(timeout=10)
    assert state["seen"] == [
        [["Item", 7], ["int", 1], "NoneType", []],
        [["Item", 7], ["int", 3], "NoneType", []],
        [["Item", 7], ["int", 1], "NoneType", []],
        [["Item", 7], ["int", 2], "NoneType", []],
        [["Item", 7], ["int", 1], "Item", [["gift", "Item"]]],
    ]
    # A call that does not fit the signature fails as calling the function would; an argument
    # that fits but does not validate is a PayloadError naming it.
    [missing, extra, invalid] = state["failures"]
    assert missing[0] == "TypeError" and "item" in missing[1]
    assert extra[0] == "TypeError" and "positional" in extra[1]
    assert invalid[0] == "PayloadError" and "argument 'item'" in invalid[1]
