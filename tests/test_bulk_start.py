"""Bulk start: ``db.start_workflows([...])`` starts many workflows in one transaction, all or
nothing, each id idempotent as ``start_workflow``'s; on both backends."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

import loom
from codec_workflows import KEY_1, KEY_OTHER, chain
from loom import StartRequest, WorkflowAlreadyExistsError, WorkflowStatus
from loom.errors import PayloadDecodeError
from support import worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.workflow(name="bulk_Item")
class Item(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def handle(self, ctx: Ctx) -> None:
        await ctx.state.update(total=lambda t: (t or 0) + ctx.input["n"])


@loom.workflow(name="bulk_Other")
class Other(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def noop(self, ctx: Ctx) -> None:
        pass


async def stored_ids(db: loom.Database) -> list[str]:
    return sorted(w.workflow_id for w in await db.list_workflows(limit=-1))


async def test_every_workflow_starts_in_one_call_and_runs(db: loom.Database) -> None:
    requests = [
        StartRequest(Item, input={"n": n}, workflow_id=f"item-{n}", initial_state={"total": 1})
        for n in range(300)
    ]
    handles = await db.start_workflows(requests)
    assert [h.workflow_id for h in handles] == [f"item-{n}" for n in range(300)]
    assert len(await stored_ids(db)) == 300
    first = await handles[7].events()
    assert first[0].payload == {
        "name": "bulk_Item",
        "version": "1.0.0",
        "input": {"n": 7},
        "state": {"total": 1},
    }
    async with worker(db):
        finals = [await h.result(timeout=20) for h in handles[:20]]
    assert [f["total"] for f in finals] == [n + 1 for n in range(20)]


async def test_ids_are_idempotent_and_a_different_input_writes_nothing(db: loom.Database) -> None:
    await db.start_workflow(Item, workflow_input={"n": 1}, workflow_id="kept")
    before = await db.get_workflow("kept").describe()
    again = await db.start_workflows(
        [
            StartRequest(Item, input={"n": 1}, workflow_id="kept"),
            StartRequest(Item, input={"n": 2}, workflow_id="new"),
        ]
    )
    assert [h.workflow_id for h in again] == ["kept", "new"]
    assert await stored_ids(db) == ["kept", "new"]
    assert await db.get_workflow("kept").describe() == before  # untouched

    for clash, detail in (
        (StartRequest(Item, input={"n": 99}, workflow_id="kept"), "with a different input"),
        (StartRequest(Other, input={"n": 1}, workflow_id="kept"), "as a 'bulk_Item' workflow"),
    ):
        with pytest.raises(WorkflowAlreadyExistsError, match=detail) as refused:
            await db.start_workflows(
                [StartRequest(Item, input={"n": 3}, workflow_id="would-be-3"), clash]
            )
        assert refused.value.workflow_id == "kept"
        assert await stored_ids(db) == ["kept", "new"]  # all or nothing


async def test_the_same_id_twice_in_one_call(db: loom.Database) -> None:
    twice = await db.start_workflows(
        [StartRequest(Item, {"n": 1}, "twin"), StartRequest(Item, {"n": 1}, "twin")]
    )
    assert [h.workflow_id for h in twice] == ["twin", "twin"]
    assert await stored_ids(db) == ["twin"]
    with pytest.raises(WorkflowAlreadyExistsError, match="twice in this batch"):
        await db.start_workflows(
            [StartRequest(Item, {"n": 1}, "pair"), StartRequest(Item, {"n": 2}, "pair")]
        )
    assert await stored_ids(db) == ["twin"]


async def test_bad_values_fail_before_anything_is_written(db: loom.Database) -> None:
    good = StartRequest(Item, {"n": 1}, "good")
    for bad, error in (
        (StartRequest(Item, {"n": math.nan}, "nan"), loom.PayloadError),
        (StartRequest(Item, {"n": 2**70}, "huge"), loom.PayloadError),
        (StartRequest(Item, {"n": 1}, "nul\x00id"), loom.errors.InvalidIdError),
        (StartRequest(Item, {"n": 1}, "x" * 201), loom.errors.InvalidIdError),
        (StartRequest(Item, {"n": 1}, "s", initial_state=[1]), loom.ConfigurationError),
        (StartRequest(int, {"n": 1}, "not-a-workflow"), loom.DefinitionError),  # type: ignore[arg-type]
        ({"workflow": Item}, loom.ConfigurationError),
    ):
        with pytest.raises(error):
            await db.start_workflows([good, bad])  # type: ignore[list-item]
    assert await stored_ids(db) == []
    assert await db.start_workflows([]) == []


@pytest.mark.parametrize(
    ("bad", "error", "fragment"),
    [
        (StartRequest(Item, {"n": 1}, "p", priority=2**63), loom.ConfigurationError, "priority"),
        (StartRequest(Item, {"n": math.inf}, "inf"), loom.PayloadError, "input"),
        (StartRequest(Item, {"n": 1}, "t", tags={"k": "\x00"}), loom.LoomError, "tag 'k'"),
        (StartRequest(Item, {"n": 1}, "q", queue="a\nb"), loom.LoomError, "queue name"),
        (StartRequest(Item, {"n": 2}, "item-3"), WorkflowAlreadyExistsError, "twice in this batch"),
        ("item-900", loom.ConfigurationError, "not a str"),
    ],
)
async def test_a_bad_item_deep_in_a_batch_is_named_and_nothing_is_written(
    db: loom.Database, bad: Any, error: type[Exception], fragment: str
) -> None:
    batch = [StartRequest(Item, {"n": 1}, f"item-{n}") for n in range(1000)]
    batch[900] = bad
    with pytest.raises(error, match=f"^start_workflows item 900: .*{fragment}") as raised:
        await db.start_workflows(batch)
    if isinstance(raised.value, WorkflowAlreadyExistsError):
        assert raised.value.workflow_id == "item-3"  # the error's fields are kept
    assert await stored_ids(db) == []


async def test_a_batch_is_a_list_of_requests(db: loom.Database) -> None:
    for wrong in (StartRequest(Item, {"n": 1}, "one"), "abc", {"workflow": Item}, 7):
        with pytest.raises(loom.ConfigurationError, match="takes a list of"):
            await db.start_workflows(wrong)  # type: ignore[arg-type]
    made = await db.start_workflows(StartRequest(Item, {"n": n}, f"g{n}") for n in range(3))
    assert [h.workflow_id for h in made] == ["g0", "g1", "g2"]
    assert await stored_ids(db) == ["g0", "g1", "g2"]


async def test_unicode_ids_and_a_generated_id_per_request(db: loom.Database) -> None:
    handles = await db.start_workflows(
        [StartRequest(Item, {"n": 1}, "заказ-№1 🚚"), StartRequest(Item, {"n": 2})]
    )
    assert handles[0].workflow_id == "заказ-№1 🚚"
    assert len(handles[1].workflow_id) == 36  # a UUID
    async with worker(db):
        assert (await handles[0].result(timeout=10))["total"] == 1
        assert await handles[1].status() in (WorkflowStatus.RUNNING, WorkflowStatus.COMPLETED)


async def test_two_overlapping_bulk_starts_at_once_create_each_workflow_once(
    db: loom.Database, db_url: str
) -> None:
    batch = [StartRequest(Item, {"n": n}, f"shared-{n}") for n in range(500)]
    async with loom.Database(db_url) as other:
        first, second = await asyncio.gather(
            db.start_workflows(batch), other.start_workflows(list(reversed(batch)))
        )
    assert [h.workflow_id for h in first] == [r.workflow_id for r in batch]
    assert len(second) == 500
    assert len(await stored_ids(db)) == 500
    histories = [await db.history(f"shared-{n}") for n in (0, 250, 499)]
    assert [len(h) for h in histories] == [1, 1, 1]


async def test_a_bulk_start_racing_a_single_start_of_one_of_its_ids_is_all_or_nothing(
    db: loom.Database, db_url: str
) -> None:
    async with loom.Database(db_url) as other:
        for n in range(20):
            same = n % 2 == 0  # the same input: both succeed; else exactly one of them fails

            async def single(n: int = n) -> str:
                try:
                    await other.start_workflow(Item, workflow_id=f"x{n}", workflow_input={"n": 1})
                except WorkflowAlreadyExistsError:
                    return "lost"
                return "ok"

            async def bulk(n: int = n, same: bool = same) -> str:
                batch = [
                    StartRequest(Item, {"n": 1 if same else 2}, f"x{n}"),
                    StartRequest(Item, {"n": 3}, f"y{n}"),
                ]
                try:
                    await db.start_workflows(batch)
                except WorkflowAlreadyExistsError:
                    return "lost"
                return "ok"

            outcomes = await asyncio.gather(single(), bulk())
            stored = await db.find_workflow(f"x{n}")
            assert stored is not None
            if same:
                assert outcomes == ["ok", "ok"]
            else:
                assert sorted(outcomes) == ["lost", "ok"]
                assert stored.input == {"n": 1 if outcomes[0] == "ok" else 2}
            assert (await db.find_workflow(f"y{n}") is None) == (outcomes[1] == "lost")
            assert len(await db.history(f"x{n}")) == 1


async def test_tags_are_stored_with_each_workflow_of_a_batch(db: loom.Database) -> None:
    await db.start_workflows(
        [
            StartRequest(Item, {"n": 1}, "tagged-1", tags={"batch": "b1", "shard": "0"}),
            StartRequest(Item, {"n": 2}, "tagged-2", tags={"batch": "b1"}),
            StartRequest(Item, {"n": 3}, "plain"),
        ]
    )
    found = await db.list_workflows(tags={"batch": "b1"}, limit=-1)
    assert sorted(w.workflow_id for w in found) == ["tagged-1", "tagged-2"]
    with pytest.raises(loom.errors.InvalidIdError):
        await db.start_workflows([StartRequest(Item, {"n": 1}, "bad-tag", tags={"": "x"})])
    assert await db.find_workflow("bad-tag") is None


@pytest.mark.slow
async def test_a_batch_of_100_000_starts_in_one_call(db: loom.Database) -> None:
    """The batch job's size: no statement or parameter limit is hit on either backend (SQLite
    binds at most a page of ids per lookup; PostgreSQL inserts arrays), and all of it is one
    transaction: a clash at the very end writes none of it."""
    count = 100_000
    batch = [StartRequest(Item, {"n": n}, f"big-{n:06d}") for n in range(count)]
    await db.start_workflow(Item, workflow_input={"n": -1}, workflow_id="big-099999")
    with pytest.raises(WorkflowAlreadyExistsError):
        await db.start_workflows(batch)
    assert await stored_ids(db) == ["big-099999"]
    batch[-1] = StartRequest(Item, {"n": -1}, "big-099999")
    handles = await db.start_workflows(batch)
    assert len(handles) == count
    stats = await db.stats()
    assert sum(stats.by_status.values()) == count and stats.events == count
    assert len(await db.history("big-050000")) == 1


async def test_a_bulk_start_takes_each_items_queue_and_priority(db: loom.Database) -> None:
    await db.start_workflows(
        [
            StartRequest(Item, input={"n": 1}, workflow_id="q-default"),
            StartRequest(Item, input={"n": 2}, workflow_id="q-urgent", queue="mail", priority=-3),
        ]
    )
    default, urgent = [await db.get_workflow(w).describe() for w in ("q-default", "q-urgent")]
    assert (default.queue, default.priority) == ("default", 0)
    assert (urgent.queue, urgent.priority) == ("mail", -3)
    with pytest.raises(loom.LoomError, match="queue name"):
        await db.start_workflows([StartRequest(Item, input={"n": 3}, queue="bad queue\n")])
    assert await stored_ids(db) == ["q-default", "q-urgent"]


async def test_under_a_codec_ids_are_compared_decoded_in_the_batchs_transaction(
    db: loom.Database,
) -> None:
    """An encoded input differs each time it is encoded: a repeat of a stored id is still
    recognised (same input: kept; another: refused, nothing written), also when two batches
    race for the same ids; a database without the key cannot compare and says so."""
    async with loom.Database(db.url, codec=chain({"k1": KEY_1})) as coded:
        await coded.start_workflow(Item, workflow_input={"n": 1}, workflow_id="kept")
        again = await coded.start_workflows(
            [StartRequest(Item, {"n": 1}, "kept"), StartRequest(Item, {"n": 2}, "new")]
        )
        assert [h.workflow_id for h in again] == ["kept", "new"]
        with pytest.raises(WorkflowAlreadyExistsError, match="with a different input"):
            await coded.start_workflows(
                [StartRequest(Item, {"n": 3}, "would-be-3"), StartRequest(Item, {"n": 9}, "kept")]
            )
        assert await stored_ids(db) == ["kept", "new"]

        batch = [StartRequest(Item, {"n": n}, f"coded-{n}") for n in range(300)]
        async with loom.Database(db.url, codec=chain({"k1": KEY_1})) as other:
            first, second = await asyncio.gather(
                coded.start_workflows(batch), other.start_workflows(list(reversed(batch)))
            )
        assert len(first) == len(second) == 300
        assert len(await stored_ids(db)) == 302
        assert (await coded.get_workflow("coded-7").describe()).input == {"n": 7}

    async with loom.Database(db.url, codec=chain({"k2": KEY_OTHER})) as wrong:
        with pytest.raises(PayloadDecodeError, match="'kept'") as refused:
            await wrong.start_workflows(
                [StartRequest(Item, {"n": 4}, "would-be-4"), StartRequest(Item, {"n": 1}, "kept")]
            )
        assert refused.value.workflow_id == "kept"
    assert len(await stored_ids(db)) == 302
