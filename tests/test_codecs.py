"""Payload codecs on a real database (both backends): every kind of payload round-trips through
a full run (activities and their heartbeat details, signals, children, continue-as-new) and
none reaches the database in plain text (tags, lookup keys, do); keys rotate; a missing or
wrong key is a typed error in the API and a placeholder in the displays, and a worker holding
the wrong key (or none) writes nothing; altered data is refused; errors' messages are encoded
or not, as configured.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import loom
from codec_workflows import (
    KEY_1,
    KEY_2,
    KEY_OTHER,
    MARK,
    ORDER_INPUT,
    ORDER_RESULT,
    ORDER_STATE,
    Order,
    Progress,
    Refused,
    Waiting,
    chain,
    forget_attempts,
    release,
    waits_for_signal,
)
from loom import EventType
from loom.payload_codecs import PLACEHOLDER, AesGcmCodec, CodecChain, CompressionCodec
from loom.store import open_store
from loom.web import create_app
from support import eventually, eventually_sync, of_type, worker
from support.stored import (
    event_payload_text,
    flip_a_bit,
    found_in,
    rewrite_event_payload,
    stored_bytes,
)
from test_cli import WorkerProcess, assert_one_line_error, cli_env, loom_cli, ok, ok_json


@pytest.fixture(autouse=True)
def _fresh_attempts() -> None:
    forget_attempts()  # the same workflow ids run on each backend, in one process


TAG = "customer-MARK-tag-5b1e"
"""The order's tag: tags are lookup keys, stored plain (the README says so)."""


async def run_order(url: str, codec: CodecChain, workflow_id: str = "order-1") -> None:
    """The whole order, run with ``codec``: it waits for its signal, which is sent, and ends."""
    async with loom.Database(url, codec=codec) as coded, worker(coded):
        handle = await coded.start_workflow(
            Order,
            workflow_input=ORDER_INPUT,
            initial_state=ORDER_STATE,
            workflow_id=workflow_id,
            tags={"customer": TAG},
        )
        await eventually(lambda: waits_for_signal(handle), 10, what="the order's signal wait")
        await handle.signal("approve", {"by": MARK["signal"]})
        assert await handle.result(timeout=20) == ORDER_RESULT


def payload_of(events: list[loom.Event], kind: EventType) -> dict[str, Any]:
    [event] = of_type(events, kind)
    return event.payload


async def raw_record(url: str, workflow_id: str) -> loom.client.WorkflowRecord:
    """The workflow's row as stored (envelopes and all), read past the codec layer."""
    store = open_store(url)
    await store.open()
    try:
        record = await store.get_workflow(workflow_id)
        assert record is not None
        return record
    finally:
        await store.close()


async def raw_heartbeats(url: str, workflow_id: str) -> list[loom.ActivityHeartbeat]:
    store = open_store(url)
    await store.open()
    try:
        return await store.read_heartbeats(workflow_id)
    finally:
        await store.close()


async def raw_history(url: str, workflow_id: str, run_id: str | None = None) -> list[loom.Event]:
    store = open_store(url)
    await store.open()
    try:
        if run_id is not None:
            return await store.load_run_history(workflow_id, run_id)
        return await store.load_history(workflow_id)
    finally:
        await store.close()


def key_ids(value: Any) -> set[str]:
    """The key ids of every envelope in a stored value."""
    found: set[str] = set()
    if isinstance(value, dict):
        if "_loom_codec" in value:
            found.add(value["key"])
        for item in value.values():
            found |= key_ids(item)
    elif isinstance(value, list):
        for item in value:
            found |= key_ids(item)
    return found


# -- round trips and the database's contents -------------------------------------------------------


async def test_every_payload_round_trips_and_none_reaches_the_database_in_plain_text(
    db: loom.Database,
) -> None:
    await run_order(db.url, chain())

    async with loom.Database(db.url, codec=chain()) as coded:
        handle = coded.get_workflow("order-1")
        runs = await handle.runs()
        assert [r.status for r in runs] == ["CONTINUED_AS_NEW", "COMPLETED"]
        first = await handle.events(run_id=runs[0].run_id)
        started = payload_of(first, EventType.WORKFLOW_STARTED)
        assert started["input"] == ORDER_INPUT and started["state"] == ORDER_STATE
        scheduled = of_type(first, EventType.ACTIVITY_SCHEDULED)
        assert scheduled[0].payload["args"] == [MARK["card"]]
        assert scheduled[0].payload["kwargs"] == {"memo": MARK["kwarg"]}
        completed = of_type(first, EventType.ACTIVITY_COMPLETED)
        assert completed[0].payload["result"] == ORDER_RESULT["receipt"]
        failed = payload_of(first, EventType.ACTIVITY_FAILED)
        assert failed["error"]["type"] == "ValueError"
        assert MARK["error"] in failed["error"]["message"]
        assert MARK["error"] in failed["error"]["traceback"]
        # The retry, in a later claim, read the failed attempt's heartbeat details back
        # (decoded), or it would have failed: its result is the attempt number.
        assert (await handle.state())["attempts"] == 2
        assert payload_of(first, EventType.STATE_UPDATE)["values"] == {"tries": 1}
        assert payload_of(first, EventType.SIGNAL_RECEIVED)["payload"] == {"by": MARK["signal"]}
        child_start = payload_of(first, EventType.CHILD_WORKFLOW_STARTED)
        assert child_start["input"] == {"address": MARK["address"]}
        assert payload_of(first, EventType.CHILD_WORKFLOW_COMPLETED)["result"] == {
            "parcel": ORDER_RESULT["shipped"]["parcel"]
        }
        following = payload_of(first, EventType.WORKFLOW_CONTINUED_AS_NEW)
        assert following["input"] == {**ORDER_INPUT, "round": 1, "note": MARK["next_run"]}
        current = payload_of(await handle.events(), EventType.WORKFLOW_STARTED)
        assert current["input"]["note"] == MARK["next_run"]
        assert current["state"]["receipt"] == ORDER_RESULT["receipt"]

        child = coded.get_workflow(str(child_start["workflow_id"]))
        assert (await child.describe()).input == {"address": MARK["address"]}
        assert await child.result() == ORDER_RESULT["shipped"]
        assert await handle.query("receipt") == ORDER_RESULT["receipt"]
        assert await handle.tags() == {"customer": TAG}
        assert [s.workflow_id for s in await coded.list_workflows(tags={"customer": TAG})] == [
            "order-1"
        ]

    stored = await stored_bytes(db.url)
    assert found_in(stored, ["order-1", "codec_Order", "codec_charge", TAG]) == [
        "order-1",
        "codec_Order",
        "codec_charge",
        TAG,
    ]  # the scan sees what stays plain: ids, names and tags
    # No payload of any kind, in any table: inputs and state, activity arguments, results and
    # errors, heartbeat details (their row is gone once the workflow ended: the SQLite file's
    # free pages still hold what it was), the signal, the child's input and result (its result
    # reached the parent through the signal buffer), the continued run's input.
    assert found_in(stored, list(MARK.values())) == []


async def test_heartbeat_details_are_encoded_and_read_back_only_with_the_key(
    db: loom.Database,
) -> None:
    wid = "progress-1"
    base = "http://127.0.0.1"
    async with loom.Database(db.url, codec=chain(), placeholders=True) as coded, worker(coded):
        handle = await coded.start_workflow(Progress, workflow_input={}, workflow_id=wid)
        try:
            [beat] = await eventually(handle.heartbeats, 10, what="the first heartbeat")
            assert beat.activity == "codec_progress"
            assert beat.details == {"done": MARK["progress"]}  # decoded with the key
            # As stored: an envelope under the write key; the marker nowhere in the database,
            # while the heartbeat's row is there.
            [stored_beat] = await raw_heartbeats(db.url, wid)
            assert key_ids(stored_beat.details) == {"k1"}
            assert found_in(await stored_bytes(db.url), [MARK["progress"]]) == []

            # Without the key: a typed error naming the workflow, the activity and the key.
            with pytest.raises(loom.PayloadDecodeError) as caught:
                await db.get_workflow(wid).heartbeats()
            assert "the heartbeat details of activity 'codec_progress'" in str(caught.value)
            assert caught.value.workflow_id == wid and caught.value.key == "k1"
            # Displays show the placeholder instead; the dashboard's API decodes with the key.
            async with loom.Database(db.url, placeholders=True) as keyless:
                [hidden] = await keyless.get_workflow(wid).heartbeats()
                assert hidden.details == PLACEHOLDER and hidden.seq == beat.seq
                app = create_app(database=keyless)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url=base) as c:
                    shown = (await c.get(f"/api/workflows/{wid}/heartbeats")).json()
                    assert shown["heartbeats"][0]["details"] == PLACEHOLDER
            app = create_app(database=coded)
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url=base
            ) as c:
                shown = (await c.get(f"/api/workflows/{wid}/heartbeats")).json()
                assert shown["heartbeats"][0]["details"] == {"done": MARK["progress"]}
        finally:
            release[wid].set()
        assert await handle.result(timeout=10) == {"outcome": "released"}
    assert found_in(await stored_bytes(db.url), [MARK["progress"]]) == []


async def test_without_the_key_payloads_raise_a_typed_error_and_displays_show_a_placeholder(
    db: loom.Database,
) -> None:
    await run_order(db.url, chain())
    handle = db.get_workflow("order-1")  # db: opened without any codec

    # What needs no payload works: the status, the list, the runs.
    assert await handle.status() is loom.WorkflowStatus.COMPLETED
    assert [s.workflow_id for s in await db.list_workflows(name="codec_Order")] == ["order-1"]
    assert len(await handle.runs()) == 2
    # Payloads raise, saying whose, where, and what to do.
    with pytest.raises(loom.PayloadDecodeError) as caught:
        await handle.state()
    error = caught.value
    assert error.workflow_id == "order-1" and error.codec == "zstd+aesgcm" and error.key == "k1"
    assert "cannot decode the input of workflow 'order-1'" in str(error)
    assert "opened without a codec" in str(error) and "codec=" in str(error)
    with pytest.raises(loom.PayloadDecodeError, match="event 1 \\(WORKFLOW_STARTED\\)"):
        await handle.events()
    with pytest.raises(loom.PayloadDecodeError):
        await handle.result(timeout=5)
    with pytest.raises(loom.PayloadDecodeError):
        await handle.query("receipt")

    # A key that is not the one: authentication fails; a key id not held: it is named.
    async with loom.Database(db.url, codec=AesGcmCodec({"k1": KEY_OTHER})) as wrong:
        with pytest.raises(loom.PayloadDecodeError, match="fails authentication with key 'k1'"):
            await wrong.get_workflow("order-1").state()
    async with loom.Database(db.url, codec=chain({"k9": KEY_1})) as other:
        with pytest.raises(loom.PayloadDecodeError, match="key 'k1', which this process does not"):
            await other.get_workflow("order-1").state()

    # Displays ask for placeholders: the structure is there, the values are not.
    async with loom.Database(db.url, placeholders=True) as shown:
        record = await shown.get_workflow("order-1").describe()
        assert record.input == PLACEHOLDER
        assert record.state == {key: PLACEHOLDER for key in ORDER_RESULT}
        runs = await shown.get_workflow("order-1").runs()
        first = await shown.get_workflow("order-1").events(run_id=runs[0].run_id)
        [charge, _] = of_type(first, EventType.ACTIVITY_SCHEDULED)
        assert charge.payload["name"] == "codec_charge"
        assert charge.payload["args"] == PLACEHOLDER
        failed = payload_of(first, EventType.ACTIVITY_FAILED)
        assert failed["error"]["type"] == "ValueError"
        assert failed["error"]["message"] == PLACEHOLDER
        with pytest.raises(loom.PayloadDecodeError):  # a query computes: never on placeholders
            await shown.get_workflow("order-1").query("receipt")


async def test_keys_rotate_and_what_old_keys_wrote_stays_readable(db: loom.Database) -> None:
    # Written with k1 until the order waits for its signal ...
    async with loom.Database(db.url, codec=chain({"k1": KEY_1})) as old, worker(old):
        handle = await old.start_workflow(
            Order, workflow_input=ORDER_INPUT, initial_state=ORDER_STATE, workflow_id="order-1"
        )
        await eventually(lambda: waits_for_signal(handle), 10, what="the order's signal wait")
    # ... then k2 writes and k1 is kept for reading: the order finishes.
    rotated = chain({"k2": KEY_2, "k1": KEY_1})
    async with loom.Database(db.url, codec=rotated) as new, worker(new):
        handle = new.get_workflow("order-1")
        await handle.signal("approve", {"by": MARK["signal"]})
        assert await handle.result(timeout=20) == ORDER_RESULT
        runs = await handle.runs()
        first = await handle.events(run_id=runs[0].run_id)  # both keys' writing, decoded
        assert payload_of(first, EventType.SIGNAL_RECEIVED)["payload"] == {"by": MARK["signal"]}
    runs_raw = await raw_history(db.url, "order-1", runs[0].run_id)
    written = {e.seq: key_ids(e.payload) for e in runs_raw}
    assert written[1] == {"k1"}  # the start
    assert payload_of(runs_raw, EventType.SIGNAL_RECEIVED) and {"k2"} in written.values()
    assert key_ids((await raw_record(db.url, "order-1")).state) == {"k2"}
    # Without k1, what it wrote cannot be read; what k2 wrote can.
    async with loom.Database(db.url, codec=chain({"k2": KEY_2})) as only_new:
        assert await only_new.get_workflow("order-1").state() == ORDER_RESULT
        with pytest.raises(loom.PayloadDecodeError, match="key 'k1'") as caught:
            await only_new.get_workflow("order-1").events(run_id=runs[0].run_id)
        assert caught.value.key == "k1"


async def test_an_altered_payload_is_refused_never_decoded_into_something_else(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with loom.Database(db.url, codec=chain()) as coded:
        await coded.start_workflow(Waiting, workflow_input={"card": MARK["card"]}, workflow_id="w1")
    started = orjson.loads(await event_payload_text(db.url, "w1", 1))
    altered = {**started, "input": flip_a_bit(started["input"])}
    await rewrite_event_payload(db.url, "w1", 1, orjson.dumps(altered).decode())

    async with loom.Database(db.url, codec=chain()) as coded:
        handle = coded.get_workflow("w1")
        assert (await handle.describe()).input == {"card": MARK["card"]}  # the row is intact
        with pytest.raises(loom.PayloadDecodeError) as caught:
            await handle.events()
        assert "the input of its event 1 (WORKFLOW_STARTED) of workflow 'w1'" in str(caught.value)
        assert "the stored data was altered" in str(caught.value)
        # A worker never runs it on altered data: it backs off, and writes nothing, not even
        # a WORKFLOW_FAILED after as many errors as it allows (here, one).
        monkeypatch.setattr(loom.Worker, "max_handling_failures", 1)
        assert await loom.run_once(coded)
        assert [e.seq for e in await raw_history(db.url, "w1")] == [1]
        assert await handle.status() is loom.WorkflowStatus.RUNNING
    async with loom.Database(db.url, codec=chain(), placeholders=True) as shown:
        [first] = await shown.get_workflow("w1").events()
        assert first.payload["input"] == PLACEHOLDER and first.payload["state"] == {}


async def test_errors_messages_and_cancel_reasons_are_encoded_unless_told_otherwise(
    db: loom.Database,
) -> None:
    hidden = {"card": MARK["failure"], "reason": MARK["reason"]}
    shown = {"card": "MARK-plain-failure-77", "reason": "MARK-plain-reason-77"}
    for errors, marks in ((True, hidden), (False, shown)):
        async with loom.Database(db.url, codec=chain(errors=errors)) as coded, worker(coded):
            refused = await coded.start_workflow(
                Refused, workflow_input={"card": marks["card"]}, workflow_id=f"refused-{errors}"
            )
            with pytest.raises(loom.WorkflowFailedError) as failed:
                await refused.result(timeout=10)
            assert marks["card"] in str(failed.value)
            waiting = await coded.start_workflow(
                Waiting, workflow_input={}, workflow_id=f"waiting-{errors}"
            )
            await eventually(lambda h=waiting: waits_for_signal(h), 10, what="the signal wait")
            await waiting.cancel(marks["reason"])
            with pytest.raises(loom.WorkflowCanceledError) as canceled:
                await waiting.result(timeout=10)
            assert canceled.value.reason == marks["reason"]
            events = await waiting.events()
            assert payload_of(events, EventType.WORKFLOW_CANCELED)["reason"] == marks["reason"]

    stored = await stored_bytes(db.url)
    assert found_in(stored, list(hidden.values())) == []
    assert found_in(stored, list(shown.values())) == list(shown.values())
    # With errors=False only errors stay readable: the input is still encrypted.
    assert key_ids((await raw_record(db.url, "refused-False")).input) == {"k1"}


BAD_KEYS = {
    "no codec": (None, "opened without a codec"),
    "a wrong key": (AesGcmCodec({"k1": KEY_OTHER}), "fails authentication with key 'k1'"),
    "an unknown key id": (chain({"k9": KEY_1}), "key 'k1', which this process does not hold"),
}


@pytest.mark.parametrize("held", sorted(BAD_KEYS))
async def test_a_worker_without_the_right_key_writes_nothing_and_leaves_the_workflow(
    db: loom.Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, held: str
) -> None:
    """However often it fails to read the payloads, a worker without the right key never marks
    the workflow FAILED (nor writes anything else): a worker with the key finishes it, with
    the signal buffered meanwhile intact."""
    monkeypatch.setattr(loom.Worker, "max_handling_failures", 1)  # give up at the first error
    bad_codec, problem = BAD_KEYS[held]
    async with loom.Database(db.url, codec=chain()) as coded:
        handle = await coded.start_workflow(
            Waiting, workflow_input={"card": MARK["card"]}, workflow_id="w1"
        )
        await handle.signal("go", MARK["signal"])
        row_before = await raw_record(db.url, "w1")
        async with loom.Database(db.url, codec=bad_codec or "none") as bad:
            with caplog.at_level(logging.ERROR, logger="loom"):
                assert await loom.run_once(bad)  # claims, cannot read, backs off
            assert "PayloadDecodeError" in caplog.text and problem in caplog.text
            assert "'w1'" in caplog.text
            # The reader is told the same: a typed error naming the problem.
            with pytest.raises(loom.PayloadDecodeError, match=problem):
                await bad.get_workflow("w1").state()
        # Nothing written: the history, the row's payloads and the buffered signal are as
        # they were, and the workflow still runs.
        assert [e.seq for e in await raw_history(db.url, "w1")] == [1]
        row_after = await raw_record(db.url, "w1")
        assert (row_after.input, row_after.state, row_after.error) == (
            row_before.input,
            row_before.state,
            row_before.error,
        )
        assert await handle.status() is loom.WorkflowStatus.RUNNING
        [buffered] = await coded.store.read_signals("w1")
        assert buffered.payload == MARK["signal"]
        async with worker(coded):
            assert await handle.result(timeout=10) == {
                "kept": {"card": MARK["card"]},
                "got": MARK["signal"],
            }
    assert found_in(await stored_bytes(db.url), [MARK["card"], MARK["signal"]]) == []


async def test_a_codec_turned_on_later_reads_what_was_stored_plain(db: loom.Database) -> None:
    handle = await db.start_workflow(Waiting, workflow_input={"card": "plain-card"})
    async with loom.Database(db.url, codec=chain()) as coded, worker(coded):
        later = coded.get_workflow(handle.workflow_id)
        await eventually(lambda: waits_for_signal(later), 10, what="the signal wait")
        await later.signal("go", MARK["signal"])
        assert await later.result(timeout=10) == {
            "kept": {"card": "plain-card"},
            "got": MARK["signal"],
        }
    record = await raw_record(db.url, handle.workflow_id)
    assert record.input == {"card": "plain-card"}  # as stored before
    assert key_ids(record.state) == {"k1"}  # what was written since is encrypted


@pytest.mark.parametrize(
    "value",
    [
        {"nul": "a\x00b", "unicode": "\u202e\U0001f600\u00e9", "empty": "", "none": None},
        {"big": "x" * 3_000_000, "nested": [[[[{"deep": True}]]]]},
        [1.5, -(2**63), 2**64 - 1, True, False, [], {}],
    ],
    ids=["odd-text", "large", "numbers"],
)
async def test_odd_and_large_values_round_trip(db: loom.Database, value: Any) -> None:
    async with loom.Database(db.url, codec=chain()) as coded:
        handle = await coded.start_workflow(Waiting, workflow_input=value)
        assert (await handle.describe()).input == value
        await handle.signal("go", value)
        [signal] = await coded.store.read_signals(handle.workflow_id)
        assert signal.payload == value
    stored = await stored_bytes(db.url)
    assert b"x" * 1000 not in stored and "\U0001f600".encode() not in stored


async def test_the_reserved_envelope_key_is_refused_in_payloads(db: loom.Database) -> None:
    with pytest.raises(loom.PayloadError, match=r"input\['a'\]\[0\] has the key '_loom_codec'"):
        await db.start_workflow(Waiting, workflow_input={"a": [{"_loom_codec": "x", "data": ""}]})
    handle = await db.start_workflow(Waiting, workflow_input={"text": "_loom_codec"})  # a value
    with pytest.raises(loom.PayloadError, match="payload has the key '_loom_codec'"):
        await handle.signal("go", {"_loom_codec": "aesgcm"})


async def test_the_web_api_decodes_with_the_key_and_shows_the_placeholder_without(
    db: loom.Database,
) -> None:
    await run_order(db.url, chain())
    base = "http://127.0.0.1"
    async with loom.Database(db.url, codec=chain(), placeholders=True) as coded:
        app = create_app(database=coded)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
            detail = (await c.get("/api/workflows/order-1")).json()
            assert detail["input"]["card"] == MARK["card"]
            assert detail["state"] == ORDER_RESULT
            query = await c.get("/api/workflows/order-1/query/receipt")
            assert query.json() == {"result": ORDER_RESULT["receipt"]}
    async with loom.Database(db.url, placeholders=True) as keyless:
        app = create_app(database=keyless)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as c:
            detail = (await c.get("/api/workflows/order-1")).json()
            assert detail["status"] == "COMPLETED"
            assert detail["input"] == PLACEHOLDER
            assert detail["state"] == {key: PLACEHOLDER for key in ORDER_RESULT}
            events = (await c.get("/api/workflows/order-1/events")).json()["events"]
            started = events[0]["payload"]
            assert started["input"] == PLACEHOLDER and started["state"]["receipt"] == PLACEHOLDER
            listed = (await c.get("/api/workflows")).json()
            assert "order-1" in str(listed)
            query = await c.get("/api/workflows/order-1/query/receipt")
            assert query.status_code == 422
            assert "cannot decode" in query.json()["error"]
            page = await c.get("/api/workflows/order-1")
            assert MARK["card"] not in page.text


async def test_the_store_applies_an_encrypted_state_change_when_a_cancel_meets_a_commit(
    db: loom.Database,
) -> None:
    """A cancel requested while a worker holds the workflow wins at its next commit, which
    still records the commit's leading decisions: the store applies their (encrypted) state
    changes to the (encrypted) stored state, key by key."""
    from loom.store.base import Commit, CommitOutcome

    async with loom.Database(db.url, codec=chain()) as coded:
        handle = await coded.start_workflow(
            Waiting, workflow_input={}, initial_state={"kept": MARK["initial"]}, workflow_id="w1"
        )
        [claim] = await coded.store.claim("me", ["codec_Waiting"], 1, 30, 1e12 - 1)
        assert await handle.cancel(MARK["reason"]) is loom.client.CancelOutcome.REQUESTED
        decided = [
            loom.Event(2, EventType.STEP_STARTED, {"step": "wait", "index": 0}, 1.0),
            loom.Event(3, EventType.STATE_SET, {"key": "got", "value": MARK["signal"]}, 1.0),
        ]
        commit = Commit(
            "w1", claim.lease_epoch, decided, loom.WorkflowStatus.RUNNING, {}, "wait", 0
        )
        assert await coded.store.commit(commit, 1e12) is CommitOutcome.CANCELED
        assert await handle.state() == {"kept": MARK["initial"], "got": MARK["signal"]}
        assert (await handle.describe()).error == {"type": "Canceled", "message": MARK["reason"]}
    assert found_in(await stored_bytes(db.url), list(MARK.values())) == []


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.processes
def test_the_cli_and_its_worker_encode_with_the_codec_and_show_placeholders_without_it(
    tmp_path: Path,
) -> None:
    keys, wrong = tmp_path / "keys", tmp_path / "wrong-keys"
    keys.write_text(f"k1 {KEY_1}\n")
    wrong.write_text(f"k1 {KEY_OTHER}\n")
    spec = f"compress+aesgcm:keyfile={keys}"
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    env = cli_env(url)
    ok(loom_cli("init", env=env, cwd=tmp_path))
    card = json.dumps({"card": MARK["card"]})
    start = ("start", "codec_Waiting", "--input", card, "--id", "w1", "-m", "codec_workflows")
    ok(loom_cli(*start, "--codec", spec, env=env, cwd=tmp_path))

    def inspected(*extra: str) -> Any:
        return ok_json(loom_cli("inspect", "w1", "--json", *extra, env=env, cwd=tmp_path))

    def waiting() -> bool:
        events = inspected("--events", "--codec", spec)["events"]
        return any(e["type"] == "SIGNAL_WAIT_STARTED" for e in events)

    log = tmp_path / "worker.log"
    worker = WorkerProcess(cli_env(url, LOOM_CODEC=spec), tmp_path, log, "-m", "codec_workflows")
    try:
        eventually_sync(waiting, 20, what="the signal wait")
        signal = ("signal", "w1", "go", "--payload", json.dumps(MARK["signal"]))
        ok(loom_cli(*signal, "--codec", spec, env=env, cwd=tmp_path))
        eventually_sync(
            lambda: inspected("--codec", spec)["status"] == "COMPLETED", 20, what="its end"
        )
    finally:
        worker.kill()
    assert "Traceback" not in worker.output()

    shown = inspected("--codec", spec)
    assert shown["input"] == {"card": MARK["card"]}
    assert shown["state"] == {"kept": {"card": MARK["card"]}, "got": MARK["signal"]}
    for given in ((), ("--codec", f"aesgcm:keyfile={wrong}"), ("--codec", "none")):
        hidden = inspected(*given)
        assert hidden["status"] == "COMPLETED"
        assert hidden["input"] == PLACEHOLDER
        assert hidden["state"] == {"kept": PLACEHOLDER, "got": PLACEHOLDER}
    text = ok(loom_cli("inspect", "w1", "--events", env=env, cwd=tmp_path))
    assert "SIGNAL_RECEIVED" in text and PLACEHOLDER in text and MARK["signal"] not in text
    assert_one_line_error(
        loom_cli("inspect", "w1", "--codec", "rot13", env=env, cwd=tmp_path),
        "unknown codec 'rot13'",
    )
    assert found_in((tmp_path / "cli.db").read_bytes(), list(MARK.values())) == []


@pytest.mark.slow
@pytest.mark.processes
async def test_loom_inspect_shows_heartbeat_details_with_the_key_and_the_placeholder_without(
    tmp_path: Path,
) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"k1 {KEY_1}\n")
    spec = f"compress+aesgcm:keyfile={keys}"
    url = f"sqlite:///{tmp_path / 'beats.db'}"
    env = cli_env(url)
    wid = "progress-cli"

    async def inspected(*extra: str) -> Any:
        done = await asyncio.to_thread(
            loom_cli, "inspect", wid, "--json", *extra, env=env, cwd=tmp_path
        )
        return ok_json(done)

    codec = AesGcmCodec.from_keyfile(keys)
    async with loom.Database(url, codec=[CompressionCodec(), codec]) as coded:
        await coded.migrate_up()
        async with worker(coded):
            handle = await coded.start_workflow(Progress, workflow_input={}, workflow_id=wid)
            try:
                await eventually(handle.heartbeats, 10, what="the first heartbeat")
                [beat] = (await inspected("--codec", spec))["heartbeats"]
                assert beat["activity"] == "codec_progress"
                assert beat["details"] == {"done": MARK["progress"]}
                for given in ((), ("--codec", "none")):
                    [hidden] = (await inspected(*given))["heartbeats"]
                    assert hidden["details"] == PLACEHOLDER and hidden["seq"] == beat["seq"]
                text = ok(await asyncio.to_thread(loom_cli, "inspect", wid, env=env, cwd=tmp_path))
                assert "codec_progress" in text and PLACEHOLDER in text
                assert MARK["progress"] not in text
            finally:
                release[wid].set()
            assert await handle.result(timeout=10) == {"outcome": "released"}
