"""Versions side by side, runs that stay on their version, workers that serve the versions they
have, ``ctx.patched`` for changes under running workflows, and ``loom replay`` over every
version; on both backends."""

from __future__ import annotations

from typing import Any

import pytest

import loom
from loom import EventType, WorkflowStatus
from loom.definitions import Registry, version_key
from support import eventually, of_type, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

V1, V2 = Registry(), Registry()  # a worker of each version alone, and BOTH with both
BOTH = Registry()


@loom.activity(name="ver_charge", registry=Registry())
async def charge(amount: int) -> int:
    return amount


for reg in (V1, V2, BOTH):
    reg.add_activity(loom.ActivityDefinition("ver_charge", charge))


def order_v1(registry: Registry) -> type[loom.Workflow[Any, Any]]:
    @loom.workflow(name="ver_Order", version="1", registry=registry)
    class OrderV1(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step
        async def charge(self, ctx: Ctx) -> None:
            await ctx.state.set("charged", await ctx.activity(charge, ctx.input["amount"]))
            await ctx.state.set("version", "1")
            if ctx.input.get("wait"):
                await ctx.wait_for_signal("go")

    return OrderV1


def order_v2(registry: Registry) -> type[loom.Workflow[Any, Any]]:
    @loom.workflow(name="ver_Order", version="2", registry=registry)
    class OrderV2(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step
        async def charge(self, ctx: Ctx) -> None:
            doubled = await ctx.activity(charge, 2 * ctx.input["amount"])
            await ctx.state.set("charged", doubled)
            await ctx.state.set("version", "2")

    return OrderV2


OrderV1, OrderV2 = order_v1(V1), order_v2(V2)
order_v1(BOTH), order_v2(BOTH)


async def test_new_starts_take_the_newest_version_unless_one_is_named(db: loom.Database) -> None:
    db.registry = BOTH
    newest = await db.start_workflow_by_name("ver_Order", workflow_input={"amount": 5})
    named = await db.start_workflow_by_name("ver_Order", workflow_input={"amount": 5}, version="1")
    by_class = await db.start_workflow(OrderV2, workflow_input={"amount": 5}, version="1")
    assert (await newest.describe()).version == "2"
    assert (await named.describe()).version == "1"
    assert (await by_class.describe()).version == "1"
    async with worker(db, registry=BOTH):
        assert await newest.result(timeout=10) == {"charged": 10, "version": "2"}
        assert await named.result(timeout=10) == {"charged": 5, "version": "1"}
        assert await by_class.result(timeout=10) == {"charged": 5, "version": "1"}
    with pytest.raises(loom.UnknownWorkflowTypeError, match=r"version '3'.*'1', '2'"):
        await db.start_workflow_by_name("ver_Order", version="3")


async def test_a_worker_serves_only_the_versions_it_has(db: loom.Database) -> None:
    old = await db.start_workflow(OrderV1, workflow_input={"amount": 3})
    async with worker(db, registry=V2) as v2_only:
        new = await db.start_workflow(OrderV2, workflow_input={"amount": 3})
        assert await new.result(timeout=10) == {"charged": 6, "version": "2"}
        assert v2_only.stats.claimed == 1
    record = await old.describe()
    assert (record.status, record.leased, record.last_seq) == (WorkflowStatus.RUNNING, False, 1)
    async with worker(db, registry=V1):
        assert await old.result(timeout=10) == {"charged": 3, "version": "1"}


async def test_a_run_stays_on_its_version_while_newer_ones_start(db: loom.Database) -> None:
    db.registry = BOTH
    running = await db.start_workflow(OrderV1, workflow_input={"amount": 4, "wait": True})
    async with worker(db, registry=BOTH, cache_size=0):
        await eventually(lambda: _waits(running))
        later = await db.start_workflow_by_name("ver_Order", workflow_input={"amount": 4})
        assert await later.result(timeout=10) == {"charged": 8, "version": "2"}
        await running.signal("go")
        assert await running.result(timeout=10) == {"charged": 4, "version": "1"}


# ---------------------------------------------------------------------------- ctx.patched

OLD, NEW = Registry(), Registry()
for reg in (OLD, NEW):
    reg.add_activity(loom.ActivityDefinition("ver_charge", charge))


@loom.workflow(name="ver_Receipt", registry=OLD)
class ReceiptOld(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("paid", await ctx.activity(charge, 1))
        await ctx.state.set("note", await ctx.wait_for_signal("go"))


@loom.workflow(name="ver_Receipt", registry=NEW)
class ReceiptNew(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("paid", await ctx.activity(charge, 1))
        if ctx.patched("receipt"):
            await ctx.state.set("receipt", await ctx.activity(charge, 100))
        await ctx.state.set("note", await ctx.wait_for_signal("go"))
        await ctx.state.set("patched_later", ctx.patched("receipt"))


async def test_patched_keeps_old_histories_on_the_old_path_and_new_runs_on_the_new(
    db: loom.Database,
) -> None:
    old = await db.start_workflow(ReceiptOld)
    async with worker(db, registry=OLD):
        await eventually(lambda: _waits(old))
    new = await db.start_workflow(ReceiptNew)
    async with worker(db, registry=NEW, cache_size=0):
        await eventually(lambda: _waits(new))
        await old.signal("go", "old")
        await new.signal("go", "new")
        assert await old.result(timeout=10) == {"paid": 1, "note": "old", "patched_later": False}
        assert await new.result(timeout=10) == {
            "paid": 1,
            "receipt": 100,
            "note": "new",
            "patched_later": True,
        }
    assert not of_type(await old.events(), EventType.PATCH_APPLIED)
    [marker] = of_type(await new.events(), EventType.PATCH_APPLIED)
    assert marker.payload == {"patch_id": "receipt"}
    db.registry = NEW
    reports = await db.check_replay([old.workflow_id, new.workflow_id])
    assert [r.ok for r in reports] == [True, True], [r.problem for r in reports]


TWO_PATCHES, ONE_RETIRED = Registry(), Registry()


@loom.workflow(name="ver_Invoice", registry=TWO_PATCHES)
class InvoiceTwoPatches(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def bill(self, ctx: Ctx) -> None:
        taxed, receipt = ctx.patched("tax"), ctx.patched("receipt")  # recorded side by side
        await ctx.state.set("taxed", taxed)
        if receipt:
            await ctx.state.set("receipt", True)
        await ctx.state.set("note", await ctx.wait_for_signal("go"))


@loom.workflow(name="ver_Invoice", registry=ONE_RETIRED)
class InvoiceOneRetired(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """ "tax" had no old run left: its call is gone, its path is the only one."""

    @loom.step
    async def bill(self, ctx: Ctx) -> None:
        receipt = ctx.patched("receipt")
        await ctx.state.set("taxed", True)
        if receipt:
            await ctx.state.set("receipt", True)
        await ctx.state.set("note", await ctx.wait_for_signal("go"))


async def test_a_patch_retired_beside_another_leaves_the_other_on_its_path(
    db: loom.Database,
) -> None:
    run = await db.start_workflow(InvoiceTwoPatches)
    async with worker(db, registry=TWO_PATCHES):
        await eventually(lambda: _waits(run))
    patches = [e.payload["patch_id"] for e in of_type(await run.events(), EventType.PATCH_APPLIED)]
    assert patches == ["tax", "receipt"]
    db.registry = ONE_RETIRED
    [report] = await db.check_replay([run.workflow_id])
    assert report.ok, report.problem
    async with worker(db, registry=ONE_RETIRED, cache_size=0):
        await run.signal("go", "paid")
        assert await run.result(timeout=10) == {"taxed": True, "receipt": True, "note": "paid"}


BEFORE_MEMO, AFTER_MEMO = Registry(), Registry()


@loom.workflow(name="ver_Memo", registry=BEFORE_MEMO)
class MemoBefore(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def first(self, ctx: Ctx) -> None:
        await ctx.state.set("first", await ctx.wait_for_signal("a"))

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        await ctx.state.set("second", await ctx.wait_for_signal("b"))


@loom.workflow(name="ver_Memo", registry=AFTER_MEMO)
class MemoAfter(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Asks the same patch in both steps."""

    @loom.step
    async def first(self, ctx: Ctx) -> None:
        patched = ctx.patched("memo")
        await ctx.state.set("first", [await ctx.wait_for_signal("a"), patched])

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        got = await ctx.wait_for_signal("b")
        await ctx.state.set("second", [got, ctx.patched("memo")])


@pytest.mark.parametrize("cache_size", [1000, 0], ids=["cached", "replayed"])
async def test_a_patch_asked_again_in_a_later_step_answers_alike_with_or_without_the_cache(
    db: loom.Database, cache_size: int
) -> None:
    """A step that began before the change answers False; a later step answers as the history
    it writes says, whether the worker kept the workflow in memory or replays it without the
    steps that completed (which replay does not run, so what they were answered is unknown)."""
    run = await db.start_workflow(MemoBefore)
    async with worker(db, registry=BEFORE_MEMO):
        await eventually(lambda: _waits(run))
    async with worker(db, registry=AFTER_MEMO, cache_size=cache_size):
        await run.signal("a", "A")
        await eventually(lambda: _waits_for(run, "b"))
        await run.signal("b", "B")
        final = await run.result(timeout=10)
    assert final == {"first": ["A", False], "second": ["B", True]}
    db.registry = AFTER_MEMO
    [report] = await db.check_replay([run.workflow_id])
    assert report.ok, report.problem


async def _waits_for(handle: loom.WorkflowHandle[Any], name: str) -> bool:
    record = await handle.describe()
    waiting = of_type(await handle.events(), EventType.SIGNAL_WAIT_STARTED)
    return bool(waiting) and waiting[-1].payload.get("name") == name and not record.leased


async def test_replay_checks_every_version_and_names_a_missing_one(db: loom.Database) -> None:
    one = await db.start_workflow(OrderV1, workflow_input={"amount": 1})
    two = await db.start_workflow(OrderV2, workflow_input={"amount": 1})
    async with worker(db, registry=BOTH):
        await one.result(timeout=10)
        await two.result(timeout=10)
    db.registry = BOTH
    assert [r.ok for r in await db.check_replay([one.workflow_id, two.workflow_id])] == [
        True,
        True,
    ]
    db.registry = V2
    first, second = await db.check_replay([one.workflow_id, two.workflow_id])
    assert not first.ok and "version '1' of workflow 'ver_Order' is not registered" in (
        first.problem or ""
    )
    assert second.ok


def ship_v1(registry: Registry) -> type[loom.Workflow[Any, Any]]:
    @loom.workflow(name="ver_Ship", version="1", registry=registry)
    class ShipV1(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step
        async def pack(self, ctx: Ctx) -> None:
            await ctx.state.set("packed", True)

        @loom.step
        async def send(self, ctx: Ctx) -> None:
            await ctx.state.set("sent", await ctx.wait_for_signal("go"))

    return ShipV1


def ship_v2(registry: Registry) -> type[loom.Workflow[Any, Any]]:
    """Version 2 has a step where version 1 had ``send``."""

    @loom.workflow(name="ver_Ship", version="2", registry=registry)
    class ShipV2(loom.Workflow[dict[str, Any], dict[str, Any]]):
        @loom.step
        async def pack(self, ctx: Ctx) -> None:
            await ctx.state.set("packed", True)

        @loom.step
        async def weigh(self, ctx: Ctx) -> None:
            await ctx.state.set("weighed", True)

        @loom.step
        async def send(self, ctx: Ctx) -> None:
            await ctx.state.set("sent", await ctx.wait_for_signal("go"))

    return ShipV2


SHIP_V1, SHIP_V2, SHIP_BOTH = Registry(), Registry(), Registry()
ShipV1 = ship_v1(SHIP_V1)
ship_v2(SHIP_V2), ship_v1(SHIP_BOTH), ship_v2(SHIP_BOTH)


@pytest.mark.parametrize("client", [SHIP_BOTH, SHIP_V2], ids=["both versions", "newest only"])
async def test_a_run_is_reset_to_the_steps_of_its_own_version(
    db: loom.Database, client: Registry
) -> None:
    """A client that has a newer version with other steps resets a run of an older one by the
    steps of that run's version (or of its history, when it lacks that version)."""
    run = await db.start_workflow(ShipV1)
    async with worker(db, registry=SHIP_V1):
        await eventually(lambda: _waits(run))
    with pytest.raises(loom.UnknownStepError, match="'pack', 'send'"):
        await db.reset_workflow(run.workflow_id, "weigh", registry=client)
    outcome = await db.reset_workflow(run.workflow_id, "send", registry=client)
    assert outcome is loom.ResetOutcome.RESET
    async with worker(db, registry=SHIP_V1):
        await eventually(lambda: _waits(run))
        await run.signal("go", "again")
        assert await run.result(timeout=10) == {"packed": True, "sent": "again"}


def test_versions_order_by_their_numbers() -> None:
    ordered = sorted(["1.10", "1.9", "2", "1.0.0", "1", "10"], key=version_key)
    assert ordered == ["1", "1.0.0", "1.9", "1.10", "2", "10"]


def test_two_classes_under_one_name_and_version_are_refused() -> None:
    registry = Registry()
    order_v1(registry)
    with pytest.raises(loom.DefinitionError, match="version '1'"):

        @loom.workflow(name="ver_Order", version="1", registry=registry)
        class Other(loom.Workflow[Any, Any]):
            @loom.step
            async def s(self, ctx: Any) -> None: ...


def test_nondeterminism_advice_names_patched_and_versions() -> None:
    error = loom.NonDeterminismError("wf", "at seq 3 ...")
    assert "ctx.patched(" in str(error) and "version=" in str(error)


async def _waits(handle: loom.WorkflowHandle[Any]) -> bool:
    record = await handle.describe()
    waiting = of_type(await handle.events(), EventType.SIGNAL_WAIT_STARTED)
    return bool(waiting) and not record.leased
