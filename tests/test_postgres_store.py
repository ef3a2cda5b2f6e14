"""What only PostgreSQL has to get right: real concurrency between connections and processes.

Claims under ``SKIP LOCKED``, group commits racing each other, the bounded pool, migrations
run by two processes at once, ``LISTEN``/``NOTIFY`` wake-ups, and workflows driven end to end
by two workers sharing one database. Each test runs on a fresh database (see ``support/pg.py``).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

import loom
from loom.core.history import Event, EventType
from loom.errors import ConfigurationError, StoreError
from loom.status import WorkflowStatus
from loom.store import open_store
from loom.store.base import CancelOutcome, Commit, CommitOutcome, NewWorkflow, Store
from loom.store.common import migrations
from loom.store.postgres import PostgresStore
from support import eventually
from support.pg import ADMIN_URL, url_for

T0 = 1_700_000_000.0
LEASE = 30.0


# ------------------------------------------------------------------------------ helpers


@asynccontextmanager
async def opened(url: str, *, migrate: bool = True) -> AsyncIterator[PostgresStore]:
    store = open_store(url)
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        if migrate:
            await store.migrate()
        yield store
    finally:
        await store.close()


async def create(store: Store, wid: str, name: str = "W", now: float = T0) -> None:
    first = Event(1, EventType.WORKFLOW_STARTED, {"input": None, "state": {}}, now)
    assert await store.create_workflow(NewWorkflow(wid, name, "1", None, {}, now), first) is None


def step(seq: int) -> Event:
    return Event(seq, EventType.STEP_STARTED, {"step": "s", "index": seq}, T0)


def commit_of(wid: str, epoch: int, events: list[Event]) -> Commit:
    return Commit(
        workflow_id=wid,
        lease_epoch=epoch,
        events=events,
        status=WorkflowStatus.RUNNING,
        state={"seq": events[-1].seq if events else None},
        current_step="s",
        lease_until=T0 + LEASE,
    )


async def connections_to(url: str) -> int:
    """Client connections open on the database of ``url``, other than this probe's own."""
    database = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        count = await conn.fetchval(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> "
            "pg_backend_pid() AND backend_type = 'client backend'",
            database,
        )
        return int(count)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ claims


async def test_concurrent_claimers_never_get_the_same_workflow(pg_db_url: str) -> None:
    """Two stores (two pools, like two worker processes), 16 claimers racing each other."""
    async with opened(pg_db_url) as a, opened(pg_db_url) as b:
        for i in range(300):
            await create(a, f"wf-{i:03}", now=T0 + i % 7)

        async def claimer(store: Store, owner: str) -> list[str]:
            got: list[str] = []
            while claims := await store.claim(owner, ["W"], 5, LEASE, T0 + 10):
                got += [c.workflow_id for c in claims]
                assert all(c.lease_epoch == 1 for c in claims)
            return got

        results = await asyncio.gather(*(claimer(a if i % 2 else b, f"w{i}") for i in range(16)))
    claimed = [wid for got in results for wid in got]
    assert len(claimed) == len(set(claimed)) == 300
    assert sum(1 for got in results if got) > 1  # the claimers really raced


async def test_claim_takes_the_oldest_due_first(pg_db_url: str) -> None:
    async with opened(pg_db_url) as store:
        for i, due in enumerate([5.0, 1.0, 3.0, 2.0, 4.0]):
            await create(store, f"wf-{i}", now=T0 + due)
        claims = await store.claim("w", ["W"], 2, LEASE, T0 + 10)
        assert {c.workflow_id for c in claims} == {"wf-1", "wf-3"}
        # Not yet due: not claimable.
        assert await store.claim("w", ["W"], 10, LEASE, T0 + 2.5) == []


# ------------------------------------------------------------------------------ commits


async def test_concurrent_commits_share_transactions_and_each_gets_its_outcome(
    pg_db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with opened(pg_db_url) as store:
        for i in range(60):
            await create(store, f"g{i}")
        claims = await store.claim("w1", ["W"], 60, LEASE, T0)
        assert len(claims) == 60
        batches: list[int] = []
        real = store._commit_batch

        async def counting(batch: Any) -> list[CommitOutcome]:
            batches.append(len(batch))
            return await real(batch)

        monkeypatch.setattr(store, "_commit_batch", counting)

        async def drive(claim: Any) -> list[CommitOutcome]:
            # Each coroutine commits three times in a row, like a worker advancing a workflow;
            # the middle commit of every fifth one is stale and must be fenced.
            outcomes = []
            for seq in (2, 3, 4):
                epoch = claim.lease_epoch
                if seq == 3 and claim.workflow_id.endswith(("0", "5")):
                    epoch -= 1
                outcomes.append(
                    await store.commit(commit_of(claim.workflow_id, epoch, [step(seq)]), T0)
                )
            return outcomes

        results = await asyncio.gather(*(drive(c) for c in claims))
        for claim, outcomes in zip(claims, results, strict=True):
            stale = claim.workflow_id.endswith(("0", "5"))
            ok, fenced = CommitOutcome.OK, CommitOutcome.FENCED
            # After a fenced commit the sequence did not move, so seq 4 does not continue it.
            assert outcomes == ([ok, fenced, fenced] if stale else [ok, ok, ok])
            history = await store.load_history(claim.workflow_id)
            assert [e.seq for e in history] == ([1, 2] if stale else [1, 2, 3, 4])
            record = await store.get_workflow(claim.workflow_id)
            assert record is not None and record.last_seq == history[-1].seq
            assert record.state == {"seq": history[-1].seq}
    assert sum(batches) == 180
    assert max(batches) > 1 and len(batches) < 180  # commits were grouped


async def test_two_writers_racing_on_the_same_workflows_do_not_deadlock(pg_db_url: str) -> None:
    """A worker that lost its leases commits while the new holder commits the same rows."""
    async with opened(pg_db_url) as old, opened(pg_db_url) as new:
        ids = [f"r{i}" for i in range(40)]
        for wid in ids:
            await create(old, wid)
        stale = {c.workflow_id: c for c in await old.claim("old", ["W"], 40, LEASE, T0)}
        fresh = {c.workflow_id: c for c in await new.claim("new", ["W"], 40, LEASE, T0 + LEASE)}
        jobs = [(old, stale[w]) for w in ids] + [(new, fresh[w]) for w in ids]
        random.Random(7).shuffle(jobs)
        outcomes = await asyncio.gather(
            *(s.commit(commit_of(c.workflow_id, c.lease_epoch, [step(2)]), T0) for s, c in jobs)
        )
        for (s, _), outcome in zip(jobs, outcomes, strict=True):
            assert outcome is (CommitOutcome.OK if s is new else CommitOutcome.FENCED)
        for wid in ids:
            assert [e.seq for e in await new.load_history(wid)] == [1, 2]


async def test_a_commit_racing_a_takeover_is_either_fenced_or_seen_by_the_new_holder(
    pg_db_url: str,
) -> None:
    """The old holder's lease ran out; its commit races another worker's claim.

    Either the commit is fenced, or it landed first and the new holder's claim starts from it.
    A commit that lands after the takeover would fork the history under the new holder.
    """
    async with opened(pg_db_url) as old, opened(pg_db_url) as new:
        ids = [f"t{i}" for i in range(60)]
        for wid in ids:
            await create(old, wid)
        held = await old.claim("old", ["W"], 60, LEASE, T0)
        takeover = asyncio.gather(*(new.claim("new", ["W"], 1, LEASE, T0 + LEASE + 1) for _ in ids))
        commits = asyncio.gather(
            *(old.commit(commit_of(c.workflow_id, c.lease_epoch, [step(2)]), T0) for c in held)
        )
        claim_lists, outcomes = await asyncio.gather(takeover, commits)
        taken = {c.workflow_id: c for claims in claim_lists for c in claims}
        for claim, outcome in zip(held, outcomes, strict=True):
            new_claim = taken.get(claim.workflow_id)
            if outcome is CommitOutcome.OK and new_claim is not None:
                assert new_claim.last_seq == 2, claim.workflow_id
            if outcome is CommitOutcome.FENCED:
                assert new_claim is not None and new_claim.last_seq == 1
            history = await new.load_history(claim.workflow_id)
            assert [e.seq for e in history] == ([1, 2] if outcome is CommitOutcome.OK else [1])


async def test_a_failing_commit_fails_alone_in_its_batch(pg_db_url: str) -> None:
    async with opened(pg_db_url) as store:
        for wid in ("good-1", "bad", "good-2"):
            await create(store, wid)
        claims = {c.workflow_id: c for c in await store.claim("w", ["W"], 3, LEASE, T0)}
        # A writer outside the store recorded seq 2 of "bad" without moving last_seq: the
        # store's insert of seq 2 hits the primary key.
        conn = await asyncpg.connect(pg_db_url)
        try:
            await conn.execute("INSERT INTO events VALUES ('bad', 2, 'X', '{}', 0)")
        finally:
            await conn.close()
        outcomes = await asyncio.gather(
            *(
                store.commit(commit_of(wid, claims[wid].lease_epoch, [step(2)]), T0)
                for wid in ("good-1", "bad", "good-2")
            ),
            return_exceptions=True,
        )
        assert outcomes[0] is CommitOutcome.OK and outcomes[2] is CommitOutcome.OK
        assert isinstance(outcomes[1], StoreError) and "duplicate key" in str(outcomes[1])
        for wid in ("good-1", "good-2"):
            assert [e.seq for e in await store.load_history(wid)] == [1, 2]
        record = await store.get_workflow("bad")
        assert record is not None and record.last_seq == 1


async def test_duplicate_sequence_is_rejected_by_the_schema(pg_db_url: str) -> None:
    async with opened(pg_db_url):
        pass
    conn = await asyncpg.connect(pg_db_url)
    try:
        await conn.execute("INSERT INTO events VALUES ('w', 1, 'X', '{}', 0)")
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO events VALUES ('w', 1, 'Y', '{}', 0)")
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ pool


async def test_pool_is_bounded_and_every_connection_closes(pg_db_url: str) -> None:
    async with opened(pg_db_url) as setup:
        await create(setup, "locked")
    assert await connections_to(pg_db_url) == 0

    blocker = await asyncpg.connect(pg_db_url)
    try:
        async with opened(f"{pg_db_url}?pool_max=3") as store:
            # Hold the row so that each signal keeps its pooled connection busy, waiting.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM workflows WHERE id = 'locked' FOR UPDATE")
            sends = [
                asyncio.create_task(store.send_signal("locked", "go", i, T0)) for i in range(12)
            ]

            async def pool_full() -> bool:
                return await connections_to(pg_db_url) == 1 + 3  # the blocker + a full pool

            await eventually(pool_full)
            assert not any(task.done() for task in sends)
            await tx.rollback()
            await asyncio.gather(*sends)
            assert len(await store.read_signals("locked")) == 12
            assert await connections_to(pg_db_url) <= 1 + 3
    finally:
        await blocker.close()

    async def all_closed() -> bool:
        return await connections_to(pg_db_url) == 0

    await eventually(all_closed)
    # Opening and closing many stores leaks nothing either.
    for _ in range(5):
        async with opened(pg_db_url) as store:
            await store.get_workflow("locked")
    await eventually(all_closed)


def test_url_options_are_checked() -> None:
    assert isinstance(open_store("postgres://u@localhost/db"), PostgresStore)
    store = open_store("postgresql://u@localhost:5433/db?pool_max=4&pool_min=2")
    assert isinstance(store, PostgresStore) and (store.pool_min, store.pool_max) == (2, 4)
    with pytest.raises(ConfigurationError):
        open_store("postgresql://u@localhost/db?pool_max=many")
    with pytest.raises(ConfigurationError):
        open_store("postgresql://u@localhost/db?pool_min=5&pool_max=2")
    with pytest.raises(ConfigurationError):
        open_store("postgresql://u@localhost")


async def test_opening_a_missing_database_is_a_store_error(pg_db_url: str) -> None:
    store = open_store(url_for("loom_no_such_database"))
    with pytest.raises(StoreError, match="no PostgreSQL database"):
        await store.open()
    with pytest.raises(StoreError, match="closed"):
        await store.get_workflow("x")


# ------------------------------------------------------------------------------ migrations


async def test_migrations_run_once_even_when_two_processes_race(pg_db_url: str) -> None:
    async with opened(pg_db_url, migrate=False) as a, opened(pg_db_url, migrate=False) as b:
        assert await a.schema_version() == 0
        every = migrations("postgres")
        applied = await asyncio.gather(a.migrate(), b.migrate(), a.migrate())
        assert sorted(applied, key=len) == [[], [], [name for _, name, _ in every]]
        assert await a.migrate() == [] and await b.migrate() == []
        assert await a.schema_version() == await b.schema_version() == every[-1][0]
        await create(a, "after-migration")
        assert await b.get_workflow("after-migration") is not None
    conn = await asyncpg.connect(pg_db_url)
    try:
        assert await conn.fetchval("SELECT COUNT(*) FROM loom_migrations") == len(every)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------ notify


async def test_listen_wakes_on_work_from_another_process(pg_db_url: str) -> None:
    async with opened(pg_db_url) as worker_side, opened(pg_db_url) as client_side:
        woke = asyncio.Event()
        await worker_side.listen(woke.set)
        await create(client_side, "new-work")
        await asyncio.wait_for(woke.wait(), timeout=5)

        # A signal to a workflow parked waiting for it is work too.
        [claim] = await worker_side.claim("w", ["W"], 1, LEASE, T0)
        parked = commit_of("new-work", claim.lease_epoch, [step(2)])
        parked.release, parked.wait_signals = True, ("go",)
        assert await worker_side.commit(parked, T0) is CommitOutcome.OK
        woke.clear()
        await client_side.send_signal("new-work", "go", None, T0 + 1)
        await asyncio.wait_for(woke.wait(), timeout=5)

        # After unlisten the dedicated connection is gone and nothing more is delivered.
        await worker_side.unlisten(woke.set)
        await eventually(lambda: _equals(connections_to(pg_db_url), 2))
    await eventually(lambda: _equals(connections_to(pg_db_url), 0))


async def test_listen_for_changes_hears_commits_and_cancels_of_another_process(
    pg_db_url: str,
) -> None:
    async with opened(pg_db_url) as worker_side, opened(pg_db_url) as reader:
        changed, work = asyncio.Event(), asyncio.Event()
        await reader.listen(changed.set, topic="changes")
        await reader.listen(work.set)
        await create(worker_side, "watched")
        await asyncio.wait_for(changed.wait(), timeout=5)  # a start is a change, and work
        await asyncio.wait_for(work.wait(), timeout=5)

        [claim] = await worker_side.claim("w", ["W"], 1, LEASE, T0)
        changed.clear()
        work.clear()
        commit = commit_of("watched", claim.lease_epoch, [step(2)])
        assert await worker_side.commit(commit, T0) is CommitOutcome.OK
        await asyncio.wait_for(changed.wait(), timeout=5)
        assert not work.is_set()  # still leased: no work for anyone else

        changed.clear()
        assert await worker_side.cancel("watched", "stop", T0 + 1) is CancelOutcome.REQUESTED
        await asyncio.wait_for(changed.wait(), timeout=5)

        with pytest.raises(ConfigurationError, match="topic"):
            await reader.listen(changed.set, topic="everything")


async def test_close_stops_listening(pg_db_url: str) -> None:
    async with opened(pg_db_url) as store:
        await store.listen(lambda: None)
        assert await connections_to(pg_db_url) == 2  # one pooled, one listening
    await eventually(lambda: _equals(connections_to(pg_db_url), 0))


async def _equals(count: Awaitable[int], expected: int) -> bool:
    return await count == expected


# ------------------------------------------------------------------------------ end to end

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
CALLS: list[int] = []


@loom.activity(name="pgstore_double")
async def double(n: int) -> int:
    CALLS.append(n)
    return 2 * n


@loom.workflow(name="pgstore_Flow")
class PgFlow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def compute(self, ctx: Ctx) -> None:
        await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]))
        await ctx.sleep(seconds=0.05)

    @loom.step
    async def approve(self, ctx: Ctx) -> None:
        await ctx.state.set("approved_by", await ctx.wait_for_signal("approve"))


async def test_two_workers_on_one_database_run_workflows_to_completion(pg_db_url: str) -> None:
    CALLS.clear()
    async with loom.Database(pg_db_url) as client, loom.Database(pg_db_url) as other:
        await client.migrate_up()
        handles = [await client.start_workflow(PgFlow, workflow_input={"n": n}) for n in range(12)]
        options: dict[str, Any] = {"concurrency": 4, "poll_interval": 0.05, "lease_seconds": 10}
        async with loom.Worker(client, **options), loom.Worker(other, **options):
            for h in handles:
                await eventually(functools.partial(_waiting_for_signal, h))
                await h.signal("approve", f"boss-{h.workflow_id}")
            results = [await h.result(timeout=10) for h in handles]
    assert results == [
        {"doubled": 2 * n, "approved_by": f"boss-{h.workflow_id}"} for n, h in enumerate(handles)
    ]
    assert sorted(CALLS) == list(range(12))  # every activity ran exactly once


async def _waiting_for_signal(handle: loom.WorkflowHandle[Any]) -> bool:
    return any(e.type is EventType.SIGNAL_WAIT_STARTED for e in await handle.events())
