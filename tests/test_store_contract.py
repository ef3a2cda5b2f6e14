"""The storage contract: every backend must pass exactly these tests.

The ``store`` fixture is parametrized by backend; a new backend joins by adding its URL factory
to ``BACKENDS``. Each backend runs them twice: as it is, and behind the codec-aware store that
``Database(codec=...)`` puts in front of it (``+codec``: every payload compressed and
encrypted), so the store's rules are proved to work on encoded payloads too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from loom.core.history import Event, EventType
from loom.errors import (
    ConfigurationError,
    WorkflowAlreadyExistsError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
)
from loom.payload_codecs import AesGcmCodec, CodecChain, CompressionCodec
from loom.status import WorkflowStatus
from loom.store import open_store, start_rules
from loom.store.base import (
    ActivityHeartbeat,
    CancelOutcome,
    Commit,
    CommitOutcome,
    HistoryMoved,
    NewWorkflow,
    ResetOutcome,
    ResetRequest,
    Store,
)
from loom.store.base import (
    HeartbeatRow as Row,
)
from loom.store.common import migrations, split_sql
from loom.store.encoded import EncodedStore
from loom.store.payloads import Payloads
from loom.store.statements import event_rows, events, run
from support.pg import pg_url

BACKENDS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: f"sqlite:///{tmp / 'contract.db'}",
    "postgres": pg_url,
}

T0 = 1_700_000_000.0
LEASE = 10.0


@pytest.fixture(params=[*sorted(BACKENDS), *(f"{name}+codec" for name in sorted(BACKENDS))])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend, _, encoded = request.param.partition("+")
    s = open_store(BACKENDS[backend](tmp_path))
    assert s.dialect == backend
    if encoded:
        key = AesGcmCodec.generate_key()
        codec = CodecChain(CompressionCodec(min_size=0), AesGcmCodec({"k1": key}))
        s = EncodedStore(s, Payloads(codec))
    await s.open()
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


async def create(store: Store, wid: str = "wf-1", name: str = "W", now: float = T0) -> None:
    first = Event(1, EventType.WORKFLOW_STARTED, {"input": {"x": 1}, "state": {}}, now)
    new = NewWorkflow(wid, name, "1", {"x": 1}, {}, now)
    assert await store.create_workflow(new, first) is None


def commit_of(
    wid: str, epoch: int, events: list[Event], *, release: bool = False, **kw: object
) -> Commit:
    return Commit(
        workflow_id=wid,
        lease_epoch=epoch,
        events=events,
        status=kw.pop("status", WorkflowStatus.RUNNING),  # type: ignore[arg-type]
        state=kw.pop("state", {"k": 1}),  # type: ignore[arg-type]
        current_step="s",
        lease_until=T0 + LEASE,
        release=release,
        **kw,  # type: ignore[arg-type]
    )


def ev(seq: int, kind: EventType = EventType.STEP_STARTED, **payload: object) -> Event:
    return Event(seq, kind, {"step": "s", "index": 0, **payload}, T0)


async def test_migrate_is_idempotent(store: Store) -> None:
    assert await store.migrate() == []
    assert await store.schema_version() == max(v for v, _, _ in migrations(store.dialect))


async def test_create_returns_existing_record_for_taken_id(store: Store) -> None:
    await create(store)
    first = Event(1, EventType.WORKFLOW_STARTED, {}, T0)
    existing = await store.create_workflow(NewWorkflow("wf-1", "W", "1", {"x": 2}, {}, T0), first)
    assert existing is not None and existing.input == {"x": 1}
    assert len(await store.load_history("wf-1")) == 1


@pytest.mark.parametrize("backend", sorted(BACKENDS))
async def test_an_older_schema_is_upgraded_in_place(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database made by an earlier release (first migration only) gets the later ones
    applied by ``migrate``, its workflows untouched."""
    module = importlib.import_module("loom.store.database_rules")  # where the migration rule runs
    every = migrations(backend)
    assert len(every) >= 2
    s = open_store(BACKENDS[backend](tmp_path))
    await s.open()
    try:
        monkeypatch.setattr(module, "migrations", lambda dialect: every[:1])
        assert await s.migrate() == [every[0][1]]
        # What the first release wrote: a workflow row of its columns, and its first event.
        first = Event(1, EventType.WORKFLOW_STARTED, {"input": {"x": 1}, "state": {}}, T0)
        new = NewWorkflow("old-timer", "W", "1", {"x": 1}, {}, T0)

        first_columns = (
            "id, name, version, status, input, state, created_at, updated_at, last_seq, ready_at"
        )

        def old_release() -> Any:
            yield run(
                f"INSERT INTO workflows ({first_columns}) VALUES ({', '.join('?' * 10)})",
                *start_rules.new_values(new, first)[:10],
            )
            yield events(event_rows("old-timer", [first]))

        await s._transact(old_release())  # type: ignore[attr-defined]
        monkeypatch.undo()
        assert await s.migrate() == [name for _, name, _ in every[1:]]
        assert await s.schema_version() == every[-1][0]
        assert [r.workflow_id for r in await s.changed_since(0, 10)] == ["old-timer"]
        assert [e.type for e in await s.load_history("old-timer")] == [EventType.WORKFLOW_STARTED]
    finally:
        await s.close()


async def test_a_claim_brings_a_new_workflows_history(store: Store) -> None:
    await create(store, "fresh")
    await create(store, "moved-on")
    [first] = await store.claim("w1", ["W"], 1, LEASE, T0)
    assert first.workflow_id == "fresh"
    assert list(first.history) == await store.load_history("fresh")
    commit = commit_of("fresh", first.lease_epoch, [ev(2)], release=True, ready_at=T0)
    assert await store.commit(commit, T0) is CommitOutcome.OK

    claims = await store.claim("w1", ["W"], 2, LEASE, T0 + 1)
    by_id = {c.workflow_id: c for c in claims}
    assert set(by_id) == {"fresh", "moved-on"}
    assert by_id["fresh"].history == ()  # more than its first event: the worker loads it
    assert by_id["fresh"].last_seq == 2
    assert [e.type for e in by_id["moved-on"].history] == [EventType.WORKFLOW_STARTED]


async def test_claim_leases_once_and_only_known_types(store: Store) -> None:
    await create(store, "a", "Known")
    await create(store, "b", "Other")
    assert await store.claim("w1", ["Nobody"], 10, LEASE, T0) == []
    claims = await store.claim("w1", ["Known"], 10, LEASE, T0)
    assert [(c.workflow_id, c.lease_epoch, c.last_seq) for c in claims] == [("a", 1, 1)]
    # Leased: nobody else gets it until the lease expires ...
    assert await store.claim("w2", ["Known"], 10, LEASE, T0 + 1) == []
    # ... then it is claimable again, with a new epoch.
    again = await store.claim("w2", ["Known"], 10, LEASE, T0 + LEASE + 0.1)
    assert [(c.workflow_id, c.lease_epoch) for c in again] == [("a", 2)]


async def test_commit_with_stale_epoch_is_fenced_and_writes_nothing(store: Store) -> None:
    await create(store)
    [old] = await store.claim("w1", ["W"], 1, LEASE, T0)
    [new] = await store.claim("w2", ["W"], 1, LEASE, T0 + LEASE + 1)
    assert await store.commit(commit_of("wf-1", old.lease_epoch, [ev(2)]), T0) is (
        CommitOutcome.FENCED
    )
    assert len(await store.load_history("wf-1")) == 1
    assert await store.commit(commit_of("wf-1", new.lease_epoch, [ev(2)]), T0) is CommitOutcome.OK
    assert [e.seq for e in await store.load_history("wf-1")] == [1, 2]


async def test_commit_must_continue_the_sequence(store: Store) -> None:
    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    assert await store.commit(commit_of("wf-1", claim.lease_epoch, [ev(3)]), T0) is (
        CommitOutcome.FENCED
    )
    assert await store.commit(commit_of("wf-1", claim.lease_epoch, [ev(2)]), T0) is (
        CommitOutcome.OK
    )
    assert await store.commit(commit_of("wf-1", claim.lease_epoch, [ev(2)]), T0) is (
        CommitOutcome.FENCED
    )
    assert [e.seq for e in await store.load_history("wf-1")] == [1, 2]


async def test_event_sequence_is_unique_in_the_schema(tmp_path: Path) -> None:
    """Even a writer that bypasses the store cannot record one seq twice."""
    conn = sqlite3.connect(tmp_path / "raw.db")
    for _, _, sql in migrations("sqlite"):
        for statement in split_sql(sql):
            conn.execute(statement)
    conn.execute("INSERT INTO events VALUES ('w', 1, 'X', '{}', 0)")
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO events VALUES ('w', 1, 'Y', '{}', 0)")


async def test_park_sets_ready_at_and_releases_the_lease(store: Store) -> None:
    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    timer = Event(2, EventType.TIMER_SCHEDULED, {"fire_at": T0 + 5}, T0)
    outcome = await store.commit(
        commit_of("wf-1", claim.lease_epoch, [timer], release=True, ready_at=T0 + 5), T0
    )
    assert outcome is CommitOutcome.OK
    record = await store.get_workflow("wf-1")
    assert record is not None and not record.leased and record.ready_at == T0 + 5
    assert record.state == {"k": 1} and record.last_seq == 2
    assert await store.claim("w1", ["W"], 1, LEASE, T0 + 4) == []
    assert len(await store.claim("w1", ["W"], 1, LEASE, T0 + 5)) == 1
    assert await store.next_due(["W"]) == T0 + 5 + LEASE


async def test_terminal_commit_clears_schedule(store: Store) -> None:
    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    done = Event(2, EventType.WORKFLOW_COMPLETED, {"state": {"k": 1}}, T0)
    await store.commit(
        commit_of(
            "wf-1",
            claim.lease_epoch,
            [done],
            release=True,
            status=WorkflowStatus.COMPLETED,
            result={"k": 1},
        ),
        T0,
    )
    record = await store.get_workflow("wf-1")
    assert record is not None and record.status is WorkflowStatus.COMPLETED
    assert record.ready_at is None and record.result == {"k": 1}
    assert await store.claim("w1", ["W"], 1, LEASE, T0 + 100) == []
    with pytest.raises(WorkflowNotRunningError):
        await store.send_signal("wf-1", "go", None, T0)
    with pytest.raises(WorkflowNotRunningError):
        await store.cancel("wf-1", None, T0)


async def test_signals_are_buffered_and_wake_a_parked_waiter(store: Store) -> None:
    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    # Parked waiting for "go" only: not ready.
    await store.commit(
        commit_of("wf-1", claim.lease_epoch, [ev(2)], release=True, wait_signals=("go",)), T0
    )
    assert await store.claim("w1", ["W"], 1, LEASE, T0 + 1) == []
    await store.send_signal("wf-1", "go", {"n": 1}, T0 + 2)
    await store.send_signal("wf-1", "go", {"n": 2}, T0 + 2)
    assert [s.payload for s in await store.read_signals("wf-1")] == [{"n": 1}, {"n": 2}]
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0 + 2)
    first = (await store.read_signals("wf-1"))[0]
    await store.commit(
        commit_of(
            "wf-1",
            claim.lease_epoch,
            [],
            release=True,
            wait_signals=("go",),
            consumed_signals=(first.id,),
        ),
        T0 + 3,
    )
    assert [s.payload for s in await store.read_signals("wf-1")] == [{"n": 2}]
    # A waited-for signal is still buffered, so the park leaves it ready at once.
    record = await store.get_workflow("wf-1")
    assert record is not None and record.ready_at == T0 + 3


async def test_signal_to_a_leased_workflow_does_not_steal_it(store: Store) -> None:
    await create(store)
    await store.claim("w1", ["W"], 1, LEASE, T0)
    await store.send_signal("wf-1", "go", None, T0 + 1)
    assert await store.claim("w2", ["W"], 1, LEASE, T0 + 1) == []


async def test_unknown_workflow_errors(store: Store) -> None:
    assert await store.get_workflow("nope") is None
    with pytest.raises(WorkflowNotFoundError):
        await store.send_signal("nope", "x", None, T0)
    with pytest.raises(WorkflowNotFoundError):
        await store.cancel("nope", None, T0)
    with pytest.raises(WorkflowNotFoundError):
        await store.retry("nope", T0)


async def test_cancel_parked_is_immediate_and_leased_is_requested(store: Store) -> None:
    await create(store, "parked")
    outcome = await store.cancel("parked", "no longer needed", T0)
    assert outcome is CancelOutcome.CANCELED
    history = await store.load_history("parked")
    assert history[-1].type is EventType.WORKFLOW_CANCELED
    assert history[-1].payload == {"reason": "no longer needed"}

    await create(store, "busy")
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    assert await store.cancel("busy", None, T0 + 1) is CancelOutcome.REQUESTED
    lost, cancel = await store.renew("w1", ["busy"], T0 + 2 + LEASE)
    assert (lost, cancel) == (set(), {"busy"})
    # The holder's next write turns into the cancellation: its leading decisions are kept,
    # from its first input (an activity's outcome) on it is discarded.
    events = [
        ev(2),
        Event(3, EventType.STATE_SET, {"key": "phase", "value": "charging"}, T0),
        ev(4, EventType.ACTIVITY_COMPLETED),
        Event(5, EventType.STATE_SET, {"key": "phase", "value": "charged"}, T0),
    ]
    outcome = await store.commit(commit_of("busy", claim.lease_epoch, events), T0 + 2)
    assert outcome is CommitOutcome.CANCELED
    history = await store.load_history("busy")
    assert [(e.seq, e.type) for e in history] == [
        (1, EventType.WORKFLOW_STARTED),
        (2, EventType.STEP_STARTED),
        (3, EventType.STATE_SET),
        (4, EventType.WORKFLOW_CANCELED),
    ]
    record = await store.get_workflow("busy")
    assert record is not None and record.state == {"phase": "charging"}
    assert record.last_seq == 4
    record = await store.get_workflow("busy")
    assert record is not None and record.status is WorkflowStatus.CANCELED


async def test_renew_reports_lost_leases(store: Store) -> None:
    await create(store)
    await store.claim("w1", ["W"], 1, LEASE, T0)
    await store.claim("w2", ["W"], 1, LEASE, T0 + LEASE + 1)
    lost, _ = await store.renew("w1", ["wf-1"], T0 + 100)
    assert lost == {"wf-1"}


async def test_retry_only_from_failed(store: Store) -> None:
    await create(store)
    with pytest.raises(WorkflowNotRunningError):
        await store.retry("wf-1", T0)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    failed = Event(2, EventType.WORKFLOW_FAILED, {"error": {"message": "boom"}}, T0)
    await store.commit(
        commit_of(
            "wf-1",
            claim.lease_epoch,
            [failed],
            release=True,
            status=WorkflowStatus.FAILED,
            error={"message": "boom"},
        ),
        T0,
    )
    await store.retry("wf-1", T0 + 1)
    record = await store.get_workflow("wf-1")
    assert record is not None and record.status is WorkflowStatus.RUNNING and record.error is None
    assert (await store.load_history("wf-1"))[-1].type is EventType.WORKFLOW_RETRIED
    assert len(await store.claim("w1", ["W"], 1, LEASE, T0 + 1)) == 1


async def test_release_makes_workflow_claimable_at_once(store: Store) -> None:
    await create(store)
    await store.claim("w1", ["W"], 1, LEASE, T0)
    await store.release("w1", ["wf-1"], T0 + 1)
    assert len(await store.claim("w2", ["W"], 1, LEASE, T0 + 1)) == 1


async def test_list_and_stats(store: Store) -> None:
    for i in range(3):
        await create(store, f"wf-{i}", "A" if i < 2 else "B", now=T0 + i)
    listed = await store.list_workflows(limit=2)
    assert [r.workflow_id for r in listed] == ["wf-2", "wf-1"]
    assert [r.workflow_id for r in await store.list_workflows(name="A")] == ["wf-1", "wf-0"]
    assert await store.list_workflows(status=WorkflowStatus.COMPLETED) == []
    stats = await store.stats(T0 + 10)
    assert stats.by_status == {"RUNNING": 3}
    assert stats.ready == 3 and stats.events == 3
    assert stats.oldest_ready_age == pytest.approx(10)

    # Completions and failures per minute, newest minute first.
    claims = {c.workflow_id: c for c in await store.claim("w1", ["A", "B"], 3, LEASE, T0 + 10)}
    for wid, status, at in (
        ("wf-0", WorkflowStatus.COMPLETED, T0 + 100),
        ("wf-1", WorkflowStatus.FAILED, T0 + 100),
        ("wf-2", WorkflowStatus.COMPLETED, T0 + 200),
    ):
        done = commit_of(wid, claims[wid].lease_epoch, [ev(2)], release=True, status=status)
        assert await store.commit(done, at) is CommitOutcome.OK
    stats = await store.stats(T0 + 230)
    assert stats.completed_per_minute[:3] == [1, 0, 1]  # 30 s ago, and 130 s ago
    assert stats.failed_per_minute[:3] == [0, 0, 1]
    assert sum(stats.completed_per_minute) == 2 and sum(stats.failed_per_minute) == 1
    assert len(stats.completed_per_minute) == len(stats.failed_per_minute) == 30


async def test_search_by_id_and_read_changes_in_order(store: Store) -> None:
    for wid, at in (("Order-17", T0 + 2), ("order-170", T0 + 1), ("invoice-17", T0 + 1)):
        await create(store, wid, now=at)
    found = await store.list_workflows(id_contains="ORDER-17")
    assert [r.workflow_id for r in found] == ["Order-17", "order-170"]  # any case, newest first
    assert [r.workflow_id for r in await store.list_workflows(id_contains="17", limit=1)] == [
        "Order-17"
    ]
    assert await store.list_workflows(id_contains="%") == []  # no pattern characters

    # Oldest change first, ties broken by id; a cursor (time, id) pages on without a gap.
    order = [r.workflow_id for r in await store.changed_since(T0, 10)]
    assert order == ["invoice-17", "order-170", "Order-17"]
    first = await store.changed_since(T0, 1)
    rest = await store.changed_since(first[0].updated, 10, first[0].workflow_id)
    assert [r.workflow_id for r in first + rest] == order
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0 + 5)
    commit = commit_of(claim.workflow_id, claim.lease_epoch, [ev(2)])
    assert await store.commit(commit, T0 + 6) is CommitOutcome.OK
    assert [r.workflow_id for r in await store.changed_since(T0 + 3, 10)] == [claim.workflow_id]


async def test_group_commit_of_many_workflows(store: Store) -> None:
    for i in range(50):
        await create(store, f"g{i}")
    claims = await store.claim("w1", ["W"], 50, LEASE, T0)
    outcomes = await asyncio.gather(
        *(store.commit(commit_of(c.workflow_id, c.lease_epoch, [ev(2)]), T0) for c in claims)
    )
    assert outcomes == [CommitOutcome.OK] * 50
    for c in claims:
        assert len(await store.load_history(c.workflow_id)) == 2


async def test_a_claim_ends_a_workflow_whose_cancel_was_requested_of_a_dead_worker(
    store: Store,
) -> None:
    """Cancel requested while a worker held it, then that worker died: the next claim makes
    it CANCELED and hands it to nobody, so no worker ever runs it again."""
    await create(store, "doomed")
    [held] = await store.claim("w1", ["W"], 1, LEASE, T0)
    assert await store.cancel("doomed", "stop it", T0 + 1) is CancelOutcome.REQUESTED
    await create(store, "other", now=T0 + 2)

    claims = await store.claim("w2", ["W"], 10, LEASE, T0 + LEASE + 1)
    assert [c.workflow_id for c in claims] == ["other"]
    record = await store.get_workflow("doomed")
    assert record is not None and record.status is WorkflowStatus.CANCELED
    assert not record.leased and record.ready_at is None and not record.cancel_requested
    history = await store.load_history("doomed")
    assert [e.type for e in history] == [EventType.WORKFLOW_STARTED, EventType.WORKFLOW_CANCELED]
    assert history[-1].payload == {"reason": "stop it"} and record.last_seq == 2
    # The dead worker's late write is fenced, and nobody claims it again.
    late = commit_of("doomed", held.lease_epoch, [ev(2)])
    assert await store.commit(late, T0 + LEASE + 2) is CommitOutcome.FENCED
    later = await store.claim("w3", ["W"], 10, LEASE, T0 + 10 * LEASE)
    assert [c.workflow_id for c in later] == ["other"]


async def test_signals_say_when_they_were_sent(store: Store) -> None:
    await create(store)
    await store.send_signal("wf-1", "go", 1, T0 + 2)
    await store.send_signal("wf-1", "go", 2, T0 + 3.5)
    assert [(s.payload, s.sent_at) for s in await store.read_signals("wf-1")] == [
        (1, T0 + 2),
        (2, T0 + 3.5),
    ]


async def test_stats_count_every_event(store: Store) -> None:
    for wid in ("a", "b", "c"):
        await create(store, wid)
    claims = {c.workflow_id: c for c in await store.claim("w1", ["W"], 3, LEASE, T0)}
    assert await store.commit(commit_of("a", claims["a"].lease_epoch, [ev(2), ev(3)]), T0) is (
        CommitOutcome.OK
    )
    assert await store.cancel("b", None, T0) is CancelOutcome.REQUESTED
    assert await store.commit(commit_of("b", claims["b"].lease_epoch, [ev(2)]), T0) is (
        CommitOutcome.CANCELED
    )
    stats = await store.stats(T0 + 1)
    histories = [await store.load_history(wid) for wid in ("a", "b", "c")]
    assert stats.events == sum(len(h) for h in histories) == 3 + 3 + 1


async def test_history_is_read_a_page_at_a_time(store: Store) -> None:
    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    events = [ev(seq) for seq in range(2, 12)]
    assert await store.commit(commit_of("wf-1", claim.lease_epoch, events), T0) is (
        CommitOutcome.OK
    )
    assert [e.seq for e in await store.load_history("wf-1", after_seq=3, limit=4)] == [4, 5, 6, 7]
    assert [e.seq for e in await store.load_history("wf-1", after_seq=9, limit=4)] == [10, 11]
    assert await store.load_history("wf-1", after_seq=11, limit=4) == []
    assert len(await store.load_history("wf-1")) == 11  # no limit: all of it


async def test_heartbeats_are_kept_per_activity_and_fenced_by_the_lease(store: Store) -> None:
    ok, fenced, canceled = CommitOutcome.OK, CommitOutcome.FENCED, CommitOutcome.CANCELED

    async def beat(epoch: int, *row: Any, wid: str = "wf-1") -> CommitOutcome:
        return await store.record_heartbeat(wid, epoch, Row(*row))

    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    epoch = claim.lease_epoch
    assert await beat(epoch, 3, "scan", 1, '{"next": 2}', T0 + 1) is ok
    # A beat without details keeps those of the same activity; a first one has none.
    assert await beat(epoch, 3, "scan", 2, None, T0 + 2) is ok
    assert await beat(epoch, 5, "mail", 1, None, T0 + 3) is ok
    assert await store.read_heartbeats("wf-1") == [
        ActivityHeartbeat("wf-1", 3, "scan", 2, {"next": 2}, T0 + 2),
        ActivityHeartbeat("wf-1", 5, "mail", 1, None, T0 + 3),
    ]
    # Another activity at that seq (a run whose scheduling was never written, replayed
    # otherwise) does not inherit the details.
    assert await beat(epoch, 3, "other", 1, None, T0 + 4) is ok
    assert (await store.read_heartbeats("wf-1"))[0] == (
        ActivityHeartbeat("wf-1", 3, "other", 1, None, T0 + 4)
    )
    assert await beat(epoch, 3, "scan", 1, '{"next": 7}', T0 + 5) is ok

    # The lease moved on: the old holder writes nothing; the new one does.
    [new] = await store.claim("w2", ["W"], 1, LEASE, T0 + LEASE + 1)
    assert await beat(epoch, 3, "scan", 1, '{"n": 9}', T0 + 12) is fenced
    assert (await store.read_heartbeats("wf-1"))[0].details == {"next": 7}
    assert await beat(new.lease_epoch, 3, "scan", 1, '{"n": 8}', T0 + 13) is ok
    assert (await store.read_heartbeats("wf-1"))[0].details == {"n": 8}
    # A cancel requested: written, and the holder is told to stop; once canceled, nothing.
    assert await store.cancel("wf-1", None, T0 + 14) is CancelOutcome.REQUESTED
    assert await beat(new.lease_epoch, 3, "scan", 1, "[1]", T0 + 15) is canceled
    assert (await store.read_heartbeats("wf-1"))[0].details == [1]
    assert await store.commit(commit_of("wf-1", new.lease_epoch, [ev(2)]), T0 + 16) is canceled
    assert await beat(new.lease_epoch, 3, "scan", 1, "[2]", T0 + 17) is canceled
    assert await store.read_heartbeats("wf-1") == []
    # Unknown workflow: nothing to write to.
    assert await beat(1, 3, "scan", 1, None, T0, wid="nope") is fenced
    assert await store.read_heartbeats("nope") == []


@pytest.mark.parametrize("end", ["COMPLETED", "FAILED", "CANCELED", "CANCELED_ON_COMMIT"])
async def test_heartbeats_are_deleted_when_the_workflow_ends(store: Store, end: str) -> None:
    await create(store, "wf-1")
    await create(store, "bystander")
    claims = {c.workflow_id: c for c in await store.claim("w1", ["W"], 2, LEASE, T0)}
    for wid, claim in claims.items():
        outcome = await store.record_heartbeat(wid, claim.lease_epoch, Row(2, "scan", 1, "[1]", T0))
        assert outcome is CommitOutcome.OK
    epoch = claims["wf-1"].lease_epoch
    if end.startswith("CANCELED"):
        assert await store.cancel("wf-1", "stop", T0 + 1) is CancelOutcome.REQUESTED
        if end == "CANCELED_ON_COMMIT":
            outcome = await store.commit(commit_of("wf-1", epoch, [ev(2)]), T0 + 1)
            assert outcome is CommitOutcome.CANCELED
        else:  # the holder died: the next claim ends it
            assert await store.claim("w2", ["W"], 1, LEASE, T0 + LEASE + 1) == []
    else:
        kind = EventType.WORKFLOW_COMPLETED if end == "COMPLETED" else EventType.WORKFLOW_FAILED
        status = WorkflowStatus(end)
        outcome = await store.commit(
            commit_of("wf-1", epoch, [Event(2, kind, {}, T0)], release=True, status=status),
            T0 + 1,
        )
        assert outcome is CommitOutcome.OK
    record = await store.get_workflow("wf-1")
    assert record is not None and record.status.value == end.split("_")[0]
    assert await store.read_heartbeats("wf-1") == []
    assert [b.workflow_id for b in await store.read_heartbeats("bystander")] == ["bystander"]


# -- task queues ----------------------------------------------------------------------------
async def start_on(
    store: Store, wid: str, queue: str = "default", priority: int = 0, now: float = T0
) -> None:
    first = Event(1, EventType.WORKFLOW_STARTED, {"input": None, "state": {}}, now)
    new = NewWorkflow(wid, "W", "1", None, {}, now, (), queue, priority)
    assert await store.create_workflow(new, first) is None


async def test_a_worker_claims_only_from_the_queues_it_serves(store: Store) -> None:
    await start_on(store, "e1", "emails")
    await start_on(store, "d1")
    await start_on(store, "r1", "reports")
    assert await store.claim("w", ["W"], 10, LEASE, T0, queues=[]) == []
    emails = await store.claim("w", ["W"], 10, LEASE, T0, queues=["emails"])
    assert [c.workflow_id for c in emails] == ["e1"]
    rest = await store.claim("w", ["W"], 10, LEASE, T0, queues=["default", "reports"])
    assert sorted(c.workflow_id for c in rest) == ["d1", "r1"]
    record = await store.get_workflow("e1")
    assert record is not None and record.queue == "emails" and record.priority == 0
    assert await store.next_due(["W"], ["nobody"]) is None
    assert await store.next_due(["W"], ["emails"]) == T0 + LEASE


async def test_a_smaller_priority_is_claimed_first_then_the_oldest(store: Store) -> None:
    due = {"late-urgent": T0 + 2, "old-normal": T0, "new-normal": T0 + 1, "low": T0 - 5}
    priority = {"late-urgent": -5, "low": 10}
    for wid, at in due.items():
        await start_on(store, wid, priority=priority.get(wid, 0), now=at)
    for n, queues in enumerate((["default"], None)):  # one queue's index, and every queue's
        now = T0 + 3 + n
        claims = [(await store.claim(f"w{i}", ["W"], 1, LEASE, now, queues))[0] for i in range(4)]
        assert [c.workflow_id for c in claims] == ["late-urgent", "old-normal", "new-normal", "low"]
        for c in claims:  # given back, due as before, for the second round
            back = commit_of(
                c.workflow_id, c.lease_epoch, [], release=True, ready_at=due[c.workflow_id]
            )
            assert await store.commit(back, now) is CommitOutcome.OK


async def test_a_concurrency_limit_counts_live_leases_across_claimers(store: Store) -> None:
    from loom.queues import QueueLimits

    for i in range(5):
        await start_on(store, f"e{i}", "emails")
        await start_on(store, f"d{i}")
    await store.set_queue(QueueLimits.of("emails", concurrency=2), T0)
    first = await store.claim("w1", ["W"], 10, LEASE, T0, queues=["emails"])
    assert len(first) == 2
    assert await store.claim("w2", ["W"], 10, LEASE, T0 + 1, queues=["emails"]) == []
    # A worker serving every queue is held to the same limit, and takes the unlimited rest.
    anything = await store.claim("w3", ["W"], 10, LEASE, T0 + 1)
    assert sorted(c.workflow_id for c in anything) == [f"d{i}" for i in range(5)]
    # A slot comes back when its workflow parks ...
    done = first[0]
    assert (
        await store.commit(
            commit_of(done.workflow_id, done.lease_epoch, [], release=True, ready_at=None), T0 + 1
        )
        is CommitOutcome.OK
    )
    assert len(await store.claim("w2", ["W"], 10, LEASE, T0 + 2, queues=["emails"])) == 1
    assert await store.claim("w2", ["W"], 10, LEASE, T0 + 2, queues=["emails"]) == []
    # ... and when a dead worker's lease runs out, with no one giving it back.
    again = await store.claim("w4", ["W"], 10, LEASE, T0 + LEASE + 0.5, queues=["emails"])
    assert len(again) == 1  # w1's other lease ran out; w2's (claimed at T0 + 2) still holds
    [stats] = [q for q in await store.queue_stats(T0 + LEASE + 0.5) if q.name == "emails"]
    assert (stats.running, stats.concurrency) == (2, 2)
    assert stats.depth == 2 and stats.oldest_waiting_age == pytest.approx(LEASE + 0.5)


async def test_a_rate_limit_counts_starts_per_window(store: Store) -> None:
    from loom.queues import QueueLimits

    for i in range(6):
        await start_on(store, f"r{i}", "reports")
    await store.set_queue(QueueLimits.of("reports", rate="2/10s"), T0)
    assert len(await store.claim("w", ["W"], 10, LEASE, T0, queues=["reports"])) == 2
    assert await store.claim("w", ["W"], 10, LEASE, T0 + 9, queues=["reports"]) == []
    [stats] = await store.queue_stats(T0 + 9)
    assert stats.started_in_window == 2 and str(stats.rate) == "2/10s"
    assert len(await store.claim("w", ["W"], 10, LEASE, T0 + 10, queues=["reports"])) == 2
    assert len(await store.claim("w", ["W"], 1, LEASE, T0 + 20)) == 1
    assert len(await store.claim("w", ["W"], 10, LEASE, T0 + 20)) == 1


async def test_queue_limits_are_stored_replaced_and_cleared(store: Store) -> None:
    from loom.queues import QueueLimits, Rate

    assert await store.queue_limits() == []
    await store.set_queue(QueueLimits.of("emails", concurrency=5, rate="100/m"), T0)
    await store.set_queue(QueueLimits.of("bulk", rate="1/h"), T0)
    assert await store.queue_limits() == [
        QueueLimits("bulk", None, Rate(1, 3600.0)),
        QueueLimits("emails", 5, Rate(100, 60.0)),
    ]
    await store.set_queue(QueueLimits.of("emails", concurrency=1), T0)
    await store.set_queue(QueueLimits.of("bulk"), T0)
    assert await store.queue_limits() == [QueueLimits("bulk"), QueueLimits("emails", 1)]
    # A queue without limits claims as if it had no row.
    await start_on(store, "b1", "bulk")
    assert len(await store.claim("w", ["W"], 5, LEASE, T0, queues=["bulk"])) == 1
    names = [q.name for q in await store.queue_stats(T0)]
    assert names == ["bulk", "emails"]


async def test_a_queue_limit_kept_is_left_as_stored_by_the_same_statement(store: Store) -> None:
    from loom.queues import QueueLimits, Rate

    # A new queue: what is kept is not stored yet (no limit).
    new = await store.set_queue(QueueLimits.of("emails", concurrency=3), T0, keep=["rate"])
    assert new == QueueLimits("emails", 3, None)
    # Two changes of different limits, each keeping the other's: both hold.
    await store.set_queue(QueueLimits.of("emails", rate="10/s"), T0, keep=["concurrency"])
    both = await store.set_queue(QueueLimits.of("emails", concurrency=7), T0, keep=["rate"])
    assert both == QueueLimits("emails", 7, Rate(10, 1.0))
    assert await store.queue_limits() == [both]
    assert await store.set_queue(QueueLimits.of("emails"), T0, keep=["concurrency", "rate"]) == both
    assert await store.set_queue(QueueLimits.of("emails"), T0) == QueueLimits("emails")


async def test_an_activity_slot_counts_against_its_queue_until_released_or_expired(
    store: Store,
) -> None:
    from loom.queues import QueueLimits

    await start_on(store, "wf", "default")
    await start_on(store, "e1", "emails")
    [claim] = await store.claim("w", ["W"], 1, LEASE, T0, queues=["default"])
    # No limits: an activity starts at once and takes no slot.
    assert await store.acquire_slot("emails", "wf", 2, "w", T0 + LEASE, T0)
    assert [q.running for q in await store.queue_stats(T0) if q.name == "emails"] == [0]
    await store.set_queue(QueueLimits.of("emails", concurrency=1), T0)
    assert await store.acquire_slot("emails", "wf", 3, "w", T0 + LEASE, T0)
    assert not await store.acquire_slot("emails", "wf", 4, "w", T0 + LEASE, T0)
    # The slot is what is in progress: no workflow of the queue can be claimed meanwhile.
    assert await store.claim("w2", ["W"], 1, LEASE, T0, queues=["emails"]) == []
    [emails] = [q for q in await store.queue_stats(T0) if q.name == "emails"]
    assert emails.running == 1
    await store.release_slot("wf", 3)
    assert await store.acquire_slot("emails", "wf", 4, "w", T0 + LEASE, T0 + 1)
    # A renewal of the workflow's lease renews its slots; a dead worker's slot runs out.
    assert await store.renew("w", [claim.workflow_id], T0 + 2 * LEASE) == (set(), set())
    assert not await store.acquire_slot("emails", "other", 9, "x", T0 + 3 * LEASE, T0 + LEASE + 1)
    assert await store.acquire_slot("emails", "other", 9, "x", T0 + 3 * LEASE, T0 + 2 * LEASE + 1)


# -- bulk start, reset, retention ------------------------------------------------------------


def new_of(wid: str, x: int = 1, name: str = "W", now: float = T0, **tags: str) -> Any:
    first = Event(1, EventType.WORKFLOW_STARTED, {"input": {"x": x}, "state": {}}, now)
    return NewWorkflow(wid, name, "1", {"x": x}, {}, now, tuple(sorted(tags.items()))), first


async def test_create_workflows_is_all_or_nothing_and_idempotent_by_id(store: Store) -> None:
    assert await store.create_workflows([new_of("a"), new_of("b", shard="1")]) == 2
    assert await store.tags("b") == {"shard": "1"}
    assert [e.type for e in await store.load_history("b")] == [EventType.WORKFLOW_STARTED]
    # "a" again with the same input is kept; only "c" is new.
    assert await store.create_workflows([new_of("a"), new_of("c")]) == 1
    for clash in (new_of("a", x=2), new_of("a", name="V")):
        with pytest.raises(WorkflowAlreadyExistsError):
            await store.create_workflows([new_of("d"), clash])
    assert await store.get_workflow("d") is None
    assert await store.create_workflows([]) == 0
    claimed = await store.claim("w1", ["W"], 10, LEASE, T0)
    assert sorted(c.workflow_id for c in claimed) == ["a", "b", "c"]


async def test_workflow_ids_select_every_match_newest_first(store: Store) -> None:
    await store.create_workflows([new_of(f"n-{i}", now=T0 + i) for i in range(5)])
    await store.create_workflows([new_of("other", name="V", now=T0 + 9)])
    assert await store.workflow_ids() == ["other", "n-4", "n-3", "n-2", "n-1", "n-0"]
    assert await store.workflow_ids(name="W", created_after=T0 + 3) == ["n-4", "n-3"]
    assert await store.workflow_ids(status=WorkflowStatus.FAILED) == []
    assert await store.workflow_ids(id_contains="OTH") == ["other"]


async def end(store: Store, wid: str, status: WorkflowStatus, now: float) -> None:
    [claim] = [c for c in await store.claim("w1", ["W"], 50, LEASE, now) if c.workflow_id == wid]
    last = Event(2, EventType.WORKFLOW_COMPLETED, {}, now)
    await store.commit(commit_of(wid, claim.lease_epoch, [last], release=True, status=status), now)


async def test_delete_finished_takes_old_finished_workflows_oldest_first(store: Store) -> None:
    finished = [WorkflowStatus.COMPLETED, WorkflowStatus.FAILED, WorkflowStatus.CANCELED]
    for i in range(4):
        await create(store, f"old-{i}", now=T0)
        await end(store, f"old-{i}", WorkflowStatus.COMPLETED, T0 + i)
    await create(store, "young", now=T0)
    await end(store, "young", WorkflowStatus.COMPLETED, T0 + 100)
    await create(store, "running", now=T0)
    assert await store.count_finished(T0 + 50, finished) == 4
    assert await store.count_finished(T0 + 50, [WorkflowStatus.FAILED]) == 0
    assert await store.delete_finished(T0 + 50, finished, 3) == 3
    assert await store.get_workflow("old-0") is None and await store.get_workflow("old-3")
    assert await store.load_history("old-0") == []
    assert await store.delete_finished(T0 + 50, finished, 3) == 1
    assert await store.delete_finished(T0 + 1000, finished, 10) == 1  # "young", never "running"
    assert await store.workflow_ids() == ["running"]
    with pytest.raises(ConfigurationError):
        await store.delete_finished(T0 + 1000, [WorkflowStatus.RUNNING], 10)


async def test_reset_restarts_a_finished_workflow_and_refuses_a_moved_history(
    store: Store,
) -> None:
    await create(store)
    [claim] = await store.claim("w1", ["W"], 1, LEASE, T0)
    step = ev(2, index=0, step="s")
    done = Event(3, EventType.WORKFLOW_COMPLETED, {}, T0)
    await store.commit(
        commit_of(
            "wf-1", claim.lease_epoch, [step, done], release=True, status=WorkflowStatus.COMPLETED
        ),
        T0,
    )
    request = ResetRequest("s", 0, {"k": 0}, (("item", 1),), last_seq=3, reason="why")
    with pytest.raises(HistoryMoved):
        await store.reset("wf-1", dataclasses.replace(request, last_seq=2), T0 + 1)
    with pytest.raises(WorkflowNotFoundError):
        await store.reset("nope", request, T0 + 1)
    assert await store.reset("wf-1", request, T0 + 1) is ResetOutcome.RESET
    record = await store.get_workflow("wf-1")
    assert record is not None and record.status is WorkflowStatus.RUNNING
    assert record.state == {"k": 0} and not record.reset_requested
    last = (await store.load_history("wf-1"))[-1]
    assert last.type is EventType.WORKFLOW_RESET and last.payload["to_step"] == "s"
    assert [s.name for s in await store.read_signals("wf-1")] == ["item"]
    [again] = await store.claim("w1", ["W"], 1, LEASE, T0 + 1)
    # Held by a worker: requested, and carried out by the claim after its lease is gone.
    assert await store.reset("wf-1", dataclasses.replace(request, last_seq=4), T0 + 2) is (
        ResetOutcome.REQUESTED
    )
    assert (await store.get_workflow("wf-1")).reset_requested  # type: ignore[union-attr]
    assert again.workflow_id == "wf-1"
