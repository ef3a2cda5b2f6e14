"""`loom migrate`: copying a whole database between SQLite and PostgreSQL, verified and usable.

Every source database here is filled by real workers: a completed order, a failed one, one
parked waiting for a signal with another signal already buffered, one sleeping on a durable
timer, a canceled one and one still leased by a worker that stopped answering. After the copy,
workers on the *target* finish the running ones, which proves the copy carries everything the
engine needs (histories, timers, buffered signals, claimability).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import loom
from loom import EventType
from loom.store.base import CommitOutcome, HeartbeatRow, WorkflowDump
from loom.transfer import copy_database
from support import eventually, pg, worker

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
LOOM = Path(sys.executable).parent / "loom"  # the installed console script

NAP_SECONDS = 2.5  # long enough to still be sleeping when copied, short enough to wait out
HELD_LEASE = 1.0  # the lease of the worker that stopped answering


@loom.activity(name="transfer_charge")
async def charge(amount: int) -> dict[str, Any]:
    return {"charged": amount}


@loom.activity(name="transfer_decline", non_retryable=(ValueError,))
async def decline(reason: str) -> None:
    raise ValueError(reason)


@loom.workflow(name="transfer_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.state.set("receipt", await ctx.activity(charge, ctx.input["amount"]))


@loom.workflow(name="transfer_Declined")
class Declined(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.activity(decline, "card declined")


@loom.workflow(name="transfer_Approval")
class Approval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", True)

    @loom.step
    async def approval(self, ctx: Ctx) -> None:
        await ctx.state.set("decision", await ctx.wait_for_signal("approve"))

    @loom.step
    async def notes(self, ctx: Ctx) -> None:
        await ctx.state.set("note", await ctx.wait_for_signal("note"))


@loom.workflow(name="transfer_Nap")
class Nap(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def nap(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=ctx.input["seconds"])
        await ctx.state.set("woke", True)


@loom.workflow(name="transfer_Held")
class Held(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def work(self, ctx: Ctx) -> None:
        await ctx.state.set("receipt", await ctx.activity(charge, 7))


# -- helpers ---------------------------------------------------------------------------------


def sqlite_url(tmp_path: Path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}"


def url_of(kind: str, tmp_path: Path, name: str) -> str:
    return pg.pg_url(tmp_path) if kind == "postgres" else sqlite_url(tmp_path, name)


async def parked(handle: loom.WorkflowHandle[Any], kind: EventType, *, timer: bool) -> bool:
    """RUNNING, no worker holds it, it recorded ``kind``, and it waits (for a timer or not)."""
    record = await handle.describe()
    if record.status is not loom.WorkflowStatus.RUNNING or record.leased:
        return False
    if (record.ready_at is not None) != timer:
        return False
    return any(e.type is kind for e in await handle.events())


async def fill(db: loom.Database) -> dict[str, str]:
    """Run the realistic mix on ``db``; return the workflow ids by role."""
    async with worker(db):
        done = await db.start_workflow(
            Order,
            workflow_input={"amount": 42},
            workflow_id="o-done",
            tags={"customer": "c-42", "region": "eu"},
        )
        failed = await db.start_workflow(Declined, workflow_input={}, workflow_id="o-failed")
        waiting = await db.start_workflow(Approval, workflow_id="o-waiting")
        canceled = await db.start_workflow(Approval, workflow_id="o-canceled")
        napping = await db.start_workflow(
            Nap, workflow_input={"seconds": NAP_SECONDS}, workflow_id="o-napping"
        )
        assert await done.result(timeout=10) == {"receipt": {"charged": 42}}
        with pytest.raises(loom.WorkflowFailedError):
            await failed.result(timeout=10)
        for handle in (waiting, canceled):
            await eventually(lambda h=handle: parked(h, EventType.SIGNAL_WAIT_STARTED, timer=False))
        # A signal nobody waits for yet: buffered until the workflow's last step asks for it.
        await waiting.signal("note", {"text": "gift wrap"})
        await canceled.cancel("customer changed their mind")
        with pytest.raises(loom.WorkflowCanceledError):
            await canceled.result(timeout=10)
        await eventually(lambda: parked(napping, EventType.TIMER_SCHEDULED, timer=True))
        await eventually(lambda: parked(waiting, EventType.SIGNAL_WAIT_STARTED, timer=False))
    # A worker claimed this one and then stopped answering: its lease is still held.
    held = await db.start_workflow(Held, workflow_id="o-held")
    claims = await db.store.claim("vanished-worker", ["transfer_Held"], 1, HELD_LEASE, time.time())
    assert [c.workflow_id for c in claims] == [held.workflow_id]
    # ... after its activity heartbeated: the next attempt, on the target, resumes from these.
    beat = HeartbeatRow(seq=3, activity="transfer_charge", attempt=1, details='{"at":5}', at=1.5)
    outcome = await db.store.record_heartbeat(held.workflow_id, claims[0].lease_epoch, beat)
    assert outcome is CommitOutcome.OK
    return {
        "done": done.workflow_id,
        "failed": failed.workflow_id,
        "waiting": waiting.workflow_id,
        "canceled": canceled.workflow_id,
        "napping": napping.workflow_id,
        "held": held.workflow_id,
    }


async def snapshot(db: loom.Database) -> dict[str, dict[str, Any]]:
    """Everything a user can read about every workflow, through the public API."""
    out: dict[str, dict[str, Any]] = {}
    for summary in await db.list_workflows(limit=1000):
        handle = db.get_workflow(summary.workflow_id)
        record = await handle.describe()
        out[summary.workflow_id] = {
            "name": record.name,
            "version": record.version,
            "status": record.status,
            "input": record.input,
            "state": record.state,
            "result": record.result,
            "error": record.error,
            "step": record.current_step,
            "created": record.created,
            "updated": record.updated,
            "last_seq": record.last_seq,
            "ready_at": record.ready_at,
            "events": [(e.seq, e.type, e.payload, e.timestamp) for e in await handle.events()],
            "signals": [
                (s.name, s.payload) for s in await db.store.read_signals(summary.workflow_id)
            ],
            "tags": await handle.tags() if record.name == "transfer_Order" else {},
            "heartbeats": await handle.heartbeats(),
        }
    return out


def total_events(snap: dict[str, dict[str, Any]]) -> int:
    return sum(len(w["events"]) for w in snap.values())


# -- copying both ways -----------------------------------------------------------------------


@pytest.mark.parametrize(("src_kind", "dst_kind"), [("sqlite", "postgres"), ("postgres", "sqlite")])
async def test_copy_is_identical_verified_and_usable_on_the_target(
    src_kind: str, dst_kind: str, tmp_path: Path
) -> None:
    source_url = url_of(src_kind, tmp_path, "source.db")
    target_url = url_of(dst_kind, tmp_path, "target.db")
    async with loom.Database(source_url) as source:
        await source.migrate_up()
        ids = await fill(source)
        before = await snapshot(source)
    assert before[ids["waiting"]]["signals"] == [("note", {"text": "gift wrap"})]
    assert before[ids["done"]]["tags"] == {"customer": "c-42", "region": "eu"}
    assert [(b.activity, b.details) for b in before[ids["held"]]["heartbeats"]] == [
        ("transfer_charge", {"at": 5})
    ]

    seen: list[tuple[int, int]] = []
    report = await copy_database(
        source_url, target_url, batch=4, progress=lambda done, total: seen.append((done, total))
    )

    assert report.verified
    assert (report.workflows, report.copied, report.already_present) == (6, 6, 0)
    assert report.events == total_events(before)
    assert report.signals == 1
    assert report.by_status == {"CANCELED": 1, "COMPLETED": 1, "FAILED": 1, "RUNNING": 3}
    assert report.leased == 1
    assert report.migrations_applied  # the empty target got its schema
    assert seen == [(4, 6), (6, 6)]

    async with loom.Database(source_url) as source:
        assert await snapshot(source) == before  # the source is only read
    async with loom.Database(target_url) as target:
        copied = await snapshot(target)
        assert copied == before
        held = await target.get_workflow(ids["held"]).describe()
        assert not held.leased  # the vanished worker's lease did not travel

        # Workers on the target finish what was running when the source was copied.
        async with worker(target):
            await target.get_workflow(ids["waiting"]).signal("approve", {"by": "alice"})
            waiting = await target.get_workflow(ids["waiting"]).result(timeout=10)
            napped = await target.get_workflow(ids["napping"]).result(timeout=10)
            held_state = await target.get_workflow(ids["held"]).result(timeout=10)
        assert waiting == {
            "prepared": True,
            "decision": {"by": "alice"},
            "note": {"text": "gift wrap"},  # the buffered signal was copied and delivered
        }
        assert napped == {"woke": True}
        assert held_state == {"receipt": {"charged": 7}}
        nap_events = await target.get_workflow(ids["napping"]).events()
        fired = [e for e in nap_events if e.type is EventType.TIMER_FIRED]
        assert len(fired) == 1
        assert fired[0].timestamp >= before[ids["napping"]]["ready_at"]
        assert (await target.get_workflow(ids["failed"]).status()) is loom.WorkflowStatus.FAILED


# -- re-running, conflicts, verification -----------------------------------------------------


@pytest.mark.postgres
async def test_running_again_completes_an_interrupted_copy(tmp_path: Path) -> None:
    source_url, target_url = sqlite_url(tmp_path, "source.db"), pg.pg_url(tmp_path)
    async with loom.Database(source_url) as source:
        await source.migrate_up()
        await fill(source)
        before = await snapshot(source)
        first_page = await source.store.export_rows(None, 2)
    # An earlier run wrote its first batch, then died.
    async with loom.Database(target_url) as target:
        await target.migrate_up()
        assert await target.store.import_rows(first_page) == 2

    report = await copy_database(source_url, target_url, batch=2)
    assert (report.workflows, report.copied, report.already_present) == (6, 4, 2)
    assert report.migrations_applied == []

    again = await copy_database(source_url, target_url)
    assert (again.workflows, again.copied, again.already_present) == (6, 0, 6)
    async with loom.Database(target_url) as target:
        assert await snapshot(target) == before


@pytest.mark.postgres
async def test_an_id_holding_something_else_in_the_target_stops_the_copy(tmp_path: Path) -> None:
    source_url, target_url = pg.pg_url(tmp_path), sqlite_url(tmp_path, "target.db")
    async with loom.Database(source_url) as source:
        await source.migrate_up()
        await fill(source)
    async with loom.Database(target_url) as target:
        await target.migrate_up()
        await target.start_workflow(Order, workflow_input={"amount": 1}, workflow_id="o-failed")

    with pytest.raises(loom.StoreError, match=r"workflow 'o-failed' already exists") as caught:
        await copy_database(source_url, target_url, batch=3)
    assert "different contents" in str(caught.value)

    async with loom.Database(target_url) as target:
        # Ids sort o-canceled, o-done, o-failed: that whole first batch was refused; the
        # workflow that was there is untouched.
        rows = await target.list_workflows(limit=100)
        assert [r.workflow_id for r in rows] == ["o-failed"]
        assert await target.get_workflow("o-failed").state() == {}
        assert (await target.get_workflow("o-failed").describe()).input == {"amount": 1}


async def test_a_target_with_other_workflows_fails_verification(tmp_path: Path) -> None:
    source_url, target_url = sqlite_url(tmp_path, "source.db"), sqlite_url(tmp_path, "t.db")
    async with loom.Database(source_url) as source:
        await source.migrate_up()
        await source.start_workflow(Order, workflow_input={"amount": 3}, workflow_id="a-1")
    async with loom.Database(target_url) as target:
        await target.migrate_up()
        await target.start_workflow(Order, workflow_input={"amount": 5}, workflow_id="z-9")

    with pytest.raises(loom.StoreError, match=r"verification failed: .*'z-9'.*source does not"):
        await copy_database(source_url, target_url)


async def test_a_source_changed_during_the_copy_fails_verification(tmp_path: Path) -> None:
    source_url, target_url = sqlite_url(tmp_path, "source.db"), sqlite_url(tmp_path, "t.db")
    async with loom.Database(source_url) as source:
        await source.migrate_up()
        await fill(source)

    def another_process_writes(done: int, total: int) -> None:
        # A worker still running on the source records progress on a workflow already copied.
        if done == 2:
            with sqlite3.connect(tmp_path / "source.db") as conn:
                conn.execute("UPDATE workflows SET state = '{\"late\":1}' WHERE id = 'o-canceled'")

    with pytest.raises(
        loom.StoreError, match=r"verification failed: workflow 'o-canceled' differs"
    ):
        await copy_database(source_url, target_url, batch=2, progress=another_process_writes)


@pytest.mark.postgres
async def test_the_same_database_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loom.db"
    async with loom.Database(f"sqlite:///{path}") as db:
        await db.migrate_up()
    other_spelling = f"sqlite:///{tmp_path / 'sub' / '..' / 'loom.db'}"
    with pytest.raises(loom.ConfigurationError, match="the source and the target are the same"):
        await copy_database(f"sqlite:///{path}", other_spelling)
    pg_db = pg.pg_url(tmp_path)
    with pytest.raises(loom.ConfigurationError, match="same database"):
        await copy_database(pg_db, pg_db.replace("127.0.0.1", "localhost"))


async def test_a_missing_source_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    with pytest.raises(loom.StoreError, match=r"source database .* does not exist"):
        await copy_database(f"sqlite:///{missing}", sqlite_url(tmp_path, "t.db"))
    assert not missing.exists()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_export_pages_in_id_order_and_import_drops_leases(kind: str, tmp_path: Path) -> None:
    async with loom.Database(url_of(kind, tmp_path, "a.db")) as db:
        await db.migrate_up()
        ids = await fill(db)
        pages: list[list[WorkflowDump]] = []
        after = None
        while page := await db.store.export_rows(after, 4):
            pages.append(page)
            after = page[-1].workflow_id
        assert await db.store.export_rows(None, 0) == []
    dumps = [d for p in pages for d in p]
    assert [len(p) for p in pages] == [4, 2]
    assert [d.workflow_id for d in dumps] == sorted(ids.values())
    held = next(d for d in dumps if d.workflow_id == ids["held"])
    assert held.lease_owner == "vanished-worker"

    async with loom.Database(sqlite_url(tmp_path, "b.db")) as other:
        await other.migrate_up()
        assert await other.store.import_rows(dumps) == 6
        assert await other.store.import_rows(dumps) == 0  # identical: skipped
        back = await other.store.export_rows(None, 100)
    assert [d.differences(o) for d, o in zip(dumps, back, strict=True)] == [[]] * 6
    assert next(d for d in back if d.workflow_id == ids["held"]).lease_owner is None


# -- the command line ------------------------------------------------------------------------


def loom_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "LOOM_DATABASE_URL"}
    return subprocess.run(
        [str(LOOM), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert result.returncode == 1, result.stdout
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.processes
@pytest.mark.slow
@pytest.mark.postgres
async def test_loom_migrate_command(tmp_path: Path) -> None:
    async with loom.Database(sqlite_url(tmp_path, "loom.db")) as source:
        await source.migrate_up()
        await fill(source)
        before = await snapshot(source)
    target_url = pg.pg_url(tmp_path)

    # A bare file path is a SQLite database, as everywhere in the CLI.
    result = await asyncio.to_thread(
        loom_cli, "migrate", "--from", "loom.db", "--to", target_url, "--json", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["source"] == "sqlite:///loom.db" and out["target"] == target_url
    assert (out["workflows"], out["copied"], out["already_present"]) == (6, 6, 0)
    assert out["events"] == total_events(before)
    assert out["signals"] == 1 and out["leased"] == 1 and out["verified"] is True
    assert out["by_status"] == {"CANCELED": 1, "COMPLETED": 1, "FAILED": 1, "RUNNING": 3}
    async with loom.Database(target_url) as target:
        assert await snapshot(target) == before

    again = await asyncio.to_thread(
        loom_cli, "migrate", "--from", "loom.db", "--to", target_url, cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    lines = again.stdout.splitlines()
    assert lines[0].startswith("copied 0 workflow(s) from sqlite:///loom.db to ")
    assert lines[0].endswith("; 6 were already there")
    assert lines[1].startswith("verified: both databases hold the same 6 workflow(s)")
    assert lines[2].startswith("warning: 1 workflow(s) were held by a worker of the source")

    same = await asyncio.to_thread(
        loom_cli, "migrate", "--from", "loom.db", "--to", "sqlite:///loom.db", cwd=tmp_path
    )
    assert_one_line_error(same, "the source and the target are the same database")
    missing = await asyncio.to_thread(
        loom_cli, "migrate", "--from", "gone.db", "--to", "t.db", "--json", cwd=tmp_path
    )
    assert_one_line_error(missing, "source database", "gone.db")
