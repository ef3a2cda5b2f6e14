"""The web API (`loom web`): every endpoint and its errors, the event streams, the security
checks and the command that serves it.

Most tests call the ASGI app in process through httpx; the event streams are read from a real
uvicorn server in the test's event loop (httpx's ASGI transport buffers whole responses), and
the `loom web` command runs as a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

import loom
import web_workflows
from loom.web import create_app
from support import eventually, worker
from webserver import serve

TESTS_DIR = Path(__file__).resolve().parent
LOOM = Path(sys.executable).parent / "loom"
XSS = "<script>alert(1)</script>"


# -- helpers -----------------------------------------------------------------------------------


def make_client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=headers
    )


@pytest.fixture
async def client(db: loom.Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(create_app(database=db, poll_interval=0.05)) as c:
        yield c


async def api_status(client: httpx.AsyncClient, workflow_id: str) -> str:
    response = await client.get(f"/api/workflows/{workflow_id}")
    assert response.status_code == 200, response.text
    return str(response.json()["status"])


async def waiting_for_signal(client: httpx.AsyncClient, workflow_id: str) -> bool:
    detail = (await client.get(f"/api/workflows/{workflow_id}")).json()
    if detail["status"] != "RUNNING" or detail["leased"]:
        return False
    events = (await client.get(f"/api/workflows/{workflow_id}/events")).json()["events"]
    return any(e["type"] == "SIGNAL_WAIT_STARTED" for e in events)


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    assert isinstance(message, str)
    for fragment in fragments:
        assert fragment in message


@dataclass
class Message:
    id: str | None
    event: str | None
    data: Any


class SseReader:
    """Reads server-sent events (and comment lines) from a streaming httpx response."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self, timeout: float = 5.0) -> Message:
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self.lines:
                if line == "":
                    if "data" in fields:
                        data = orjson.loads(fields["data"])
                        return Message(fields.get("id"), fields.get("event"), data)
                    fields.clear()
                elif line.startswith(":"):
                    self.comments.append(line)
                else:
                    key, _, value = line.partition(":")
                    fields[key] = value[1:] if value.startswith(" ") else value
        raise AssertionError("the stream ended")

    async def take(self, count: int, timeout: float = 5.0) -> list[Message]:
        return [await self.next(timeout) for _ in range(count)]

    async def until(self, done: Callable[[Message], bool], timeout: float = 5.0) -> list[Message]:
        found: list[Message] = []
        while not found or not done(found[-1]):
            found.append(await self.next(timeout))
        return found


# -- listing, filters and paging -------------------------------------------------------------


async def test_list_filters_and_paging(db: loom.Database, client: httpx.AsyncClient) -> None:
    ids = ["alpha-1", "alpha-2", "ALPHA-3", "beta-1", "beta-2"]
    for wid in ids:
        await db.start_workflow(web_workflows.Echo, workflow_input=wid, workflow_id=wid)
    await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1}, workflow_id="appr")
    for wid in ("alpha-1", "beta-1"):  # cancel two of the echoes
        await db.get_workflow(wid).cancel("not needed")
    everything = (await client.get("/api/workflows")).json()
    listed = [w["workflow_id"] for w in everything["workflows"]]
    assert listed == ["appr", *reversed(ids)]  # newest first
    assert everything["has_more"] is False
    assert {"name", "status", "current_step", "created_at", "updated_at"} <= set(
        everything["workflows"][0]
    )

    by_name = (await client.get("/api/workflows", params={"name": "web_Approval"})).json()
    assert [w["workflow_id"] for w in by_name["workflows"]] == ["appr"]

    canceled = (await client.get("/api/workflows", params={"status": "canceled"})).json()
    assert sorted(w["workflow_id"] for w in canceled["workflows"]) == ["alpha-1", "beta-1"]
    assert {w["status"] for w in canceled["workflows"]} == {"CANCELED"}

    search = (await client.get("/api/workflows", params={"q": "alpha"})).json()
    assert [w["workflow_id"] for w in search["workflows"]] == ["ALPHA-3", "alpha-2", "alpha-1"]
    both = await client.get("/api/workflows", params={"q": "HA-", "status": "RUNNING"})
    assert [w["workflow_id"] for w in both.json()["workflows"]] == ["ALPHA-3", "alpha-2"]

    first = (await client.get("/api/workflows", params={"limit": 2})).json()
    second = (await client.get("/api/workflows", params={"limit": 2, "offset": 2})).json()
    last = (await client.get("/api/workflows", params={"limit": 2, "offset": 4})).json()
    pages = [first, second, last]
    assert [w["workflow_id"] for p in pages for w in p["workflows"]] == listed
    assert [p["has_more"] for p in pages] == [True, True, False]
    paged_search = await client.get(
        "/api/workflows", params={"q": "alpha", "limit": 1, "offset": 1}
    )
    assert [w["workflow_id"] for w in paged_search.json()["workflows"]] == ["alpha-2"]
    assert paged_search.json()["has_more"] is True

    assert_error(await client.get("/api/workflows", params={"status": "DONE"}), 422, "DONE")
    assert_error(await client.get("/api/workflows", params={"limit": 0}), 422, "limit")
    assert_error(await client.get("/api/workflows", params={"offset": -1}), 422, "offset")
    # Filter values are data, never SQL.
    injection = await client.get("/api/workflows", params={"name": "x' OR '1'='1"})
    assert injection.json()["workflows"] == []


# -- one workflow ------------------------------------------------------------------------------


async def test_workflow_detail_and_history(db: loom.Database, client: httpx.AsyncClient) -> None:
    handle = await db.start_workflow(
        web_workflows.Approval, workflow_input={"n": 21}, initial_state={"who": "ann"}
    )
    assert await loom.run_once(db)  # runs until it waits for the signal
    detail = (await client.get(f"/api/workflows/{handle.workflow_id}")).json()
    assert detail["workflow_id"] == handle.workflow_id
    assert detail["name"] == "web_Approval"
    assert detail["status"] == "RUNNING"
    assert detail["current_step"] == "approve"
    assert detail["input"] == {"n": 21}
    assert detail["state"] == {"who": "ann", "doubled": 42}
    assert detail["error"] is None
    history = (await client.get(f"/api/workflows/{handle.workflow_id}/events")).json()["events"]
    stored = await handle.events()
    assert [(e["seq"], e["type"]) for e in history] == [(e.seq, e.type.value) for e in stored]
    assert [e["payload"] for e in history] == [e.payload for e in stored]
    assert detail["last_seq"] == stored[-1].seq
    later = await client.get(f"/api/workflows/{handle.workflow_id}/events", params={"after_seq": 3})
    assert [e["seq"] for e in later.json()["events"]] == [e.seq for e in stored if e.seq > 3]


async def test_heartbeats_of_the_running_activities(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    web_workflows.beating_released.clear()
    handle = await db.start_workflow(web_workflows.Beating, workflow_id="beats/7")
    try:
        async with worker(db):

            async def beating() -> list[dict[str, Any]]:
                response = await client.get("/api/workflows/beats%2F7/heartbeats")
                assert response.status_code == 200, response.text
                body = response.json()
                assert body["workflow_id"] == "beats/7"
                return list(body["heartbeats"])

            [beat] = await eventually(beating, what="a heartbeat recorded")
            [stored] = await handle.heartbeats()
            assert beat["seq"] == stored.seq and beat["activity"] == "web_beating"
            assert beat["attempt"] == 1 and beat["details"]["done"] >= 1
            assert beat["timestamp"] == pytest.approx(stored.at, abs=5)
            assert beat["sent_at"].endswith("+00:00")
            # The id as is, its "/" unencoded, names the same workflow.
            plain = (await client.get("/api/workflows/beats/7/heartbeats")).json()
            assert [b["activity"] for b in plain["heartbeats"]] == ["web_beating"]
            web_workflows.beating_released.set()
            await handle.result(timeout=10)
    finally:
        web_workflows.beating_released.set()
    ended = (await client.get("/api/workflows/beats%2F7/heartbeats")).json()
    assert ended == {"workflow_id": "beats/7", "heartbeats": []}


async def test_unknown_workflow_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/api/workflows/nope"),
        await client.get("/api/workflows/nope/events"),
        await client.get("/api/workflows/nope/events/stream"),
        await client.get("/api/workflows/nope/heartbeats"),
        await client.post("/api/workflows/nope/signal", json={"name": "go"}),
        await client.post("/api/workflows/nope/cancel", json={}),
        await client.post("/api/workflows/nope/retry"),
        await client.get("/api/workflows/nope/query/amount"),
    ):
        assert_error(response, 404, "'nope'")
    assert_error(await client.get("/api/no-such-route"), 404)


# -- queries -----------------------------------------------------------------------------------


async def test_a_query_answers_from_the_state_and_changes_nothing(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    handle = await db.start_workflow(
        web_workflows.Approval, workflow_input={"n": 21}, workflow_id="orders/7"
    )
    assert await loom.run_once(db)  # runs until it waits for the signal
    before = await handle.describe()
    for wid in ("orders/7", "orders%2F7"):
        answer = await client.get(f"/api/workflows/{wid}/query/amount")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"result": 42}
    scaled = await client.get(
        "/api/workflows/orders%2F7/query/scaled", params={"args": '[1.5, "ñ \u202e", "<b>"]'}
    )
    assert scaled.json() == {"result": {"amount": 63.0, "notes": ["ñ \u202e", "<b>"]}}
    # A query may be named like a sub-route; the events of the workflow are still there.
    named_events = await client.get("/api/workflows/orders%2F7/query/events")
    assert named_events.json() == {"result": ["doubled"]}
    history = (await client.get("/api/workflows/orders%2F7/events")).json()["events"]
    assert len(history) == before.last_seq
    assert await handle.describe() == before
    assert len(await handle.events()) == before.last_seq

    await handle.signal("approve", "yes")
    async with worker(db):
        await handle.result(timeout=10)
    finished = await client.get("/api/workflows/orders%2F7/query/scaled", params={"args": "[2]"})
    assert finished.json() == {"result": {"amount": 84, "notes": []}}


async def test_query_errors(db: loom.Database, client: httpx.AsyncClient) -> None:
    await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1}, workflow_id="q1")
    assert await loom.run_once(db)
    assert_error(await client.get("/api/workflows/nope/query/amount"), 404, "'nope'")
    assert_error(
        await client.get("/api/workflows/q1/query/amont"),
        404,
        "no query 'amont'; its queries: 'amount', 'scaled', 'events', 'audit'",
    )
    for args, fragment in [
        ("{oops", "args is not valid JSON"),
        ("[NaN]", "NaN is not a JSON number"),
        ("[1e400]", "args[0] is inf"),
        ("[123456789012345678901234567890]", "beyond 64 bits"),
        ('{"factor": 2}', "args must be a JSON array"),
        ("2", "args must be a JSON array"),
        ("[]", "missing a required argument: 'factor'"),
        ('["x"]', "argument 'factor'"),
        ("[" * 3000 + "]" * 3000, "args is not valid JSON"),
    ]:
        response = await client.get("/api/workflows/q1/query/scaled", params={"args": args})
        assert_error(response, 400, "query 'scaled' of workflow 'q1'", fragment)
    failed = await client.get("/api/workflows/q1/query/audit", params={"args": '["Q3"]'})
    assert_error(
        failed, 422, "query 'audit' of workflow 'q1' failed: ValueError: the books do not balance"
    )
    not_json = await client.get("/api/workflows/q1/query/audit", params={"args": '["nan"]'})
    assert_error(not_json, 422, "result is nan")
    assert_error(await client.get("/api/workflows/q1/query/a%1Bb"), 422, "query name")

    async with make_client(create_app(database=db, registry=loom.Registry())) as elsewhere:
        missing = await elsewhere.get("/api/workflows/q1/query/amount")
    assert_error(missing, 422, "'web_Approval'", "-m MODULE")
    assert (await db.get_workflow("q1").describe()).status is loom.WorkflowStatus.RUNNING


# -- starting, signalling, cancelling, retrying -------------------------------------------------


async def test_start_signal_complete_with_a_worker(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    started = await client.post("/api/workflows", json={"name": "web_Approval", "input": {"n": 5}})
    assert started.status_code == 201, started.text
    wid = started.json()["workflow_id"]
    assert started.json()["status"] == "RUNNING"
    async with worker(db):
        await eventually(lambda: waiting_for_signal(client, wid))
        sent = await client.post(
            f"/api/workflows/{wid}/signal", json={"name": "approve", "payload": {"by": "bob"}}
        )
        assert sent.status_code == 202, sent.text
        await eventually(lambda: _is(client, wid, "COMPLETED"))
    detail = (await client.get(f"/api/workflows/{wid}")).json()
    assert detail["state"] == {"doubled": 10, "decision": {"by": "bob"}, "done": True}
    history = (await client.get(f"/api/workflows/{wid}/events")).json()["events"]
    received = [e for e in history if e["type"] == "SIGNAL_RECEIVED"]
    assert [e["payload"]["payload"] for e in received] == [{"by": "bob"}]
    assert history[-1]["type"] == "WORKFLOW_COMPLETED"

    # A finished workflow refuses every action with 409.
    late = await client.post(f"/api/workflows/{wid}/signal", json={"name": "approve"})
    assert_error(late, 409, "COMPLETED")
    assert_error(await client.post(f"/api/workflows/{wid}/cancel", json={}), 409, "COMPLETED")
    assert_error(await client.post(f"/api/workflows/{wid}/retry"), 409, "COMPLETED")


async def _is(client: httpx.AsyncClient, workflow_id: str, status: str) -> bool:
    return await api_status(client, workflow_id) == status


async def test_start_errors_and_idempotent_ids(client: httpx.AsyncClient) -> None:
    body = {"name": "web_Echo", "input": {"a": 1}, "id": "order-7"}
    created = await client.post("/api/workflows", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["workflow_id"] == "order-7"
    again = await client.post("/api/workflows", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["workflow_id"] == "order-7"
    other = await client.post("/api/workflows", json={**body, "input": {"a": 2}})
    assert_error(other, 409, "order-7", "different input")

    assert_error(await client.post("/api/workflows", json={"name": "web_Nope"}), 422, "web_Nope")
    assert_error(await client.post("/api/workflows", json={"input": 1}), 422, "name")
    assert_error(await client.post("/api/workflows", json={"name": "web_Echo", "x": 1}), 422, "x")
    assert_error(
        await client.post("/api/workflows", json={"name": "web_Echo", "state": [1]}), 422, "state"
    )
    not_json = await client.post(
        "/api/workflows", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_error(not_json, 422)
    listed = (await client.get("/api/workflows")).json()["workflows"]
    assert [w["workflow_id"] for w in listed] == ["order-7"]


async def test_signal_body_is_validated(db: loom.Database, client: httpx.AsyncClient) -> None:
    handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
    url = f"/api/workflows/{handle.workflow_id}/signal"
    assert_error(await client.post(url, json={"name": ""}), 422, "name")
    assert_error(await client.post(url, json={"payload": 1}), 422, "name")
    assert (await client.post(url, json={"name": "approve", "payload": [1, 2]})).status_code == 202


async def test_cancel_and_its_conflicts(db: loom.Database, client: httpx.AsyncClient) -> None:
    handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
    assert await loom.run_once(db)  # parked, waiting for the signal; no worker holds it
    assert_error(await client.post(f"/api/workflows/{handle.workflow_id}/retry"), 409, "RUNNING")
    canceled = await client.post(
        f"/api/workflows/{handle.workflow_id}/cancel", json={"reason": "customer left"}
    )
    assert canceled.status_code == 202, canceled.text
    assert canceled.json()["outcome"] == "CANCELED"
    detail = (await client.get(f"/api/workflows/{handle.workflow_id}")).json()
    assert detail["status"] == "CANCELED"
    assert "customer left" in str(detail["error"])
    again = await client.post(f"/api/workflows/{handle.workflow_id}/cancel")
    assert_error(again, 409, "CANCELED")
    assert_error(await client.post(f"/api/workflows/{handle.workflow_id}/retry"), 409, "CANCELED")

    # A cancel without a body works too.
    other = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 2})
    plain = await client.post(f"/api/workflows/{other.workflow_id}/cancel")
    assert plain.status_code == 202, plain.text
    assert await other.status() is loom.WorkflowStatus.CANCELED


async def test_retry_resumes_a_failed_workflow(
    db: loom.Database, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(web_workflows.FLAKY, "fail", True)
    handle = await db.start_workflow(web_workflows.Flaky, workflow_id="flaky-1")
    async with worker(db):
        await eventually(lambda: _is(client, "flaky-1", "FAILED"))
        failed = (await client.get("/api/workflows/flaky-1")).json()
        assert "the flaky service is down" in str(failed["error"])
        monkeypatch.setitem(web_workflows.FLAKY, "fail", False)
        retried = await client.post("/api/workflows/flaky-1/retry")
        assert retried.status_code == 202, retried.text
        assert retried.json()["status"] == "RUNNING"
        assert await handle.result(timeout=5) == {"answer": "ok"}
    history = (await client.get("/api/workflows/flaky-1/events")).json()["events"]
    assert "WORKFLOW_RETRIED" in [e["type"] for e in history]
    assert_error(await client.post("/api/workflows/flaky-1/retry"), 409, "COMPLETED")


# -- definitions, queue, stats, docs -----------------------------------------------------------


async def test_definitions_list_steps_and_their_calls(client: httpx.AsyncClient) -> None:
    found = {d["name"]: d for d in (await client.get("/api/definitions")).json()["definitions"]}
    approval = found["web_Approval"]
    assert approval["version"] == "1.0.0"
    assert "approval signal" in approval["description"]
    assert [s["name"] for s in approval["steps"]] == ["prepare", "approve", "finish"]
    assert approval["steps"][0]["description"] == "Compute the amount."
    calls = [s["calls"] for s in approval["steps"]]
    assert calls[0] == [{"kind": "activity", "name": "web_double"}]
    assert calls[1] == [{"kind": "signal", "name": "approve"}]
    assert calls[2] == [{"kind": "sleep", "name": "seconds=0.01"}]
    assert [s["name"] for s in found["web_Flaky"]["steps"]] == ["call"]
    assert found["web_Flaky"]["steps"][0]["calls"] == [
        {"kind": "activity", "name": "web_flaky_call"}
    ]
    assert approval["queries"] == [
        {"name": "amount", "parameters": [], "description": "The doubled amount, once computed."},
        {"name": "scaled", "parameters": ["factor", "*notes"], "description": None},
        {"name": "events", "parameters": [], "description": None},
        {"name": "audit", "parameters": ["what"], "description": None},
    ]
    assert found["web_Flaky"]["queries"] == []


async def test_queue_and_stats(db: loom.Database, client: httpx.AsyncClient) -> None:
    for n in range(3):
        await db.start_workflow(web_workflows.Echo, workflow_input=n)
    done = await db.start_workflow(web_workflows.Echo, workflow_input="done")
    while await loom.run_once(db):
        pass
    assert await done.status() is loom.WorkflowStatus.COMPLETED
    await db.start_workflow(web_workflows.Echo, workflow_input="ready-1")
    await db.start_workflow(web_workflows.Echo, workflow_input="ready-2")
    queue = (await client.get("/api/queue")).json()
    assert queue["ready"] == 2
    assert queue["leased"] == 0
    assert queue["waiting"] == 0
    assert queue["oldest_ready_age_seconds"] >= 0
    stats = (await client.get("/api/stats")).json()
    assert stats["by_status"] == {"RUNNING": 2, "COMPLETED": 4, "FAILED": 0, "CANCELED": 0}
    assert stats["total"] == 6
    assert stats["ready"] == 2
    assert stats["completed_last_minute"] == 4
    assert stats["events"] == sum(
        [
            len(await db.get_workflow(w["workflow_id"]).events())
            for w in (await client.get("/api/workflows")).json()["workflows"]
        ]
    )


async def test_openapi_and_docs(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in (
        "/api/workflows",
        "/api/workflows/{workflow_id}",
        "/api/workflows/{workflow_id}/events",
        "/api/workflows/{workflow_id}/signal",
        "/api/workflows/{workflow_id}/cancel",
        "/api/workflows/{workflow_id}/retry",
        "/api/workflows/{workflow_id}/query/{name}",
        "/api/definitions",
        "/api/queue",
        "/api/stats",
        "/api/events/stream",
        "/api/workflows/{workflow_id}/events/stream",
    ):
        assert path in schema["paths"], path
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()
    assert "/openapi.json" in docs.text
    # Offline: every script, stylesheet and icon of the page is served by Loom itself.
    assets = re.findall(r'(?:src|href)=["\']([^"\']+)["\']', docs.text)
    assert assets and all(a.startswith("/") for a in assets), assets
    for asset in assets:
        served = await client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 100, asset


# -- security ----------------------------------------------------------------------------------


async def test_token_protects_every_call(db: loom.Database) -> None:
    app = create_app(database=db, token="s3cret-token")
    await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id="w1")
    async with make_client(app) as anonymous:
        for path in (
            "/api/workflows",
            "/api/stats",
            "/api/workflows/w1",
            "/api/workflows/w1/query/amount",
            "/",
            "/docs",
            "/openapi.json",
            "/workflows/w1",
            "/api/events/stream",
        ):
            response = await anonymous.get(path)
            assert_error(response, 401, "token")
            assert response.headers["www-authenticate"] == "Bearer"
        assert_error(await anonymous.post("/api/workflows/w1/cancel"), 401)
        wrong = await anonymous.get("/api/stats", headers={"Authorization": "Bearer s3cret"})
        assert_error(wrong, 401)
        assert_error(await anonymous.get("/api/stats", params={"token": "nope"}), 401)
        # The script and stylesheet hold no data and load without the token.
        assert (await anonymous.get("/static/app.js")).status_code == 200
    # A ?token= in the URL is exchanged for a cookie and dropped from the address.
    async with make_client(app) as browser:
        by_query = await browser.get("/api/stats", params={"token": "s3cret-token", "a": "1"})
        assert by_query.status_code == 303
        assert by_query.headers["location"] == "/api/stats?a=1"
        cookie = by_query.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert (await browser.get("/api/stats")).status_code == 200  # the cookie is enough
        page = await browser.get("/", params={"token": "s3cret-token"}, follow_redirects=True)
        assert page.status_code == 200
        assert str(page.url) == "http://127.0.0.1/"
        assert "text/html" in page.headers["content-type"]
    async with make_client(app, Authorization="Bearer s3cret-token") as allowed:
        assert (await allowed.get("/api/workflows/w1")).json()["input"] == 1
        assert (await allowed.post("/api/workflows/w1/cancel")).status_code == 202
        docs = await allowed.get("/docs")
        assert "s3cret-token" not in docs.text
    assert await db.get_workflow("w1").status() is loom.WorkflowStatus.CANCELED


async def test_without_token_only_loopback_hosts_and_same_origin_posts(db: loom.Database) -> None:
    handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
    app = create_app(database=db)
    async with make_client(app) as local:
        assert (await local.get("/api/stats")).status_code == 200
        rebound = await local.get("/api/stats", headers={"Host": "evil.example:8000"})
        assert_error(rebound, 403, "evil.example")
        cross = await local.post(
            f"/api/workflows/{handle.workflow_id}/cancel",
            headers={"Origin": "http://evil.example"},
        )
        assert_error(cross, 403, "cross-origin")
        assert await handle.status() is loom.WorkflowStatus.RUNNING
        same = await local.post(
            f"/api/workflows/{handle.workflow_id}/cancel", headers={"Origin": "http://127.0.0.1"}
        )
        assert same.status_code == 202
        # No CORS: a cross-origin preflight gets no Access-Control-Allow-* header.
        preflight = await local.options(
            "/api/workflows",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert not any(h.lower().startswith("access-control-") for h in preflight.headers)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost:8000"
    ) as by_name:
        assert (await by_name.get("/api/stats")).status_code == 200


async def test_user_data_is_returned_as_data_and_never_put_in_html(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    started = await client.post(
        "/api/workflows", json={"name": "web_Echo", "input": XSS, "id": f"x{XSS}"}
    )
    assert started.status_code == 201, started.text
    wid = started.json()["workflow_id"]
    assert wid == f"x{XSS}"
    detail = await client.get(f"/api/workflows/{wid}")
    assert detail.headers["content-type"].startswith("application/json")
    assert detail.json()["input"] == XSS
    listed = (await client.get("/api/workflows", params={"q": "<script>"})).json()["workflows"]
    assert [w["workflow_id"] for w in listed] == [wid]

    plain = await client.get("/workflows/plain-id")
    hostile = await client.get(f"/workflows/{wid}", params={"q": XSS})
    assert hostile.status_code == plain.status_code == 200
    assert hostile.content == plain.content  # the page is the same whatever the id
    assert "alert(1)" not in hostile.text
    csp = hostile.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert hostile.headers["x-content-type-options"] == "nosniff"
    index = await client.get("/", params={"status": XSS})
    assert "alert(1)" not in index.text
    script = (await client.get("/static/app.js")).text
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "document.write" not in script


# -- server-sent events --------------------------------------------------------------------------


async def test_workflow_stream_history_follow_and_resume(db: loom.Database) -> None:
    app = create_app(database=db, poll_interval=0.05)
    handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 2})
    url = f"/api/workflows/{handle.workflow_id}/events/stream"
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with worker(db), http.stream("GET", url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            sse = SseReader(response)
            first = await sse.next()
            assert (first.id, first.event, first.data["type"]) == (
                "1",
                "history",
                "WORKFLOW_STARTED",
            )
            # Followed live: the worker runs up to the signal wait.
            upto_wait = await sse.until(lambda m: m.data["type"] == "SIGNAL_WAIT_STARTED")
            seen = [first, *upto_wait]
            assert [int(m.id or 0) for m in seen] == list(range(1, len(seen) + 1))
            last_seen = len(seen)
        # Disconnected; the workflow goes on meanwhile.
        async with worker(db):
            await handle.signal("approve", "yes")
            await handle.result(timeout=5)
        stored = await handle.events()
        assert stored[-1].seq > last_seen
        headers = {"Last-Event-ID": str(last_seen)}
        async with http.stream("GET", url, headers=headers) as response:
            sse = SseReader(response)
            missed = await sse.take(stored[-1].seq - last_seen)
        assert [int(m.id or 0) for m in missed] == [e.seq for e in stored if e.seq > last_seen]
        assert [m.data["type"] for m in missed] == [
            e.type.value for e in stored if e.seq > last_seen
        ]
        assert missed[-1].data["type"] == "WORKFLOW_COMPLETED"
        # Nothing more arrives for a finished workflow: only heartbeats would.
        async with http.stream("GET", url, headers={"Last-Event-ID": str(stored[-1].seq)}) as r:
            with pytest.raises(TimeoutError):
                await SseReader(r).next(timeout=0.5)


async def test_workflow_stream_sends_heartbeats(db: loom.Database) -> None:
    app = create_app(database=db, poll_interval=0.05, heartbeat=0.2)
    handle = await db.start_workflow(web_workflows.Echo, workflow_input=1)
    url = f"/api/workflows/{handle.workflow_id}/events/stream"
    async with (
        serve(app) as base,
        httpx.AsyncClient(base_url=base, timeout=10) as http,
        http.stream("GET", url) as response,
    ):
        sse = SseReader(response)
        assert (await sse.next()).data["type"] == "WORKFLOW_STARTED"
        with pytest.raises(TimeoutError):
            await sse.next(timeout=0.7)
        assert sse.comments.count(": heartbeat") >= 2


async def test_global_stream_reports_changes_and_resumes(db: loom.Database) -> None:
    app = create_app(database=db, poll_interval=0.05)
    async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with http.stream("GET", "/api/events/stream") as response:
            sse = SseReader(response)
            handle = await db.start_workflow(
                web_workflows.Echo, workflow_input="hi", workflow_id="g1"
            )
            started = await sse.until(lambda m: m.data["workflow_id"] == "g1")
            assert started[-1].event == "workflow"
            assert started[-1].data["status"] == "RUNNING"
            resume_at = started[-1].id
            assert resume_at is not None
        # Missed while disconnected: g1 completes, g2 starts.
        assert await loom.run_once(db)
        assert await handle.status() is loom.WorkflowStatus.COMPLETED
        await db.start_workflow(web_workflows.Echo, workflow_input="second", workflow_id="g2")
        async with http.stream(
            "GET", "/api/events/stream", headers={"Last-Event-ID": resume_at}
        ) as response:
            sse = SseReader(response)
            latest: dict[str, str] = {}
            ids: list[float] = []
            while latest != {"g1": "COMPLETED", "g2": "RUNNING"}:
                message = await sse.next()
                latest[message.data["workflow_id"]] = message.data["status"]
                ids.append(float(message.id or 0))
            assert ids == sorted(ids)  # the cursor never goes back


async def test_streams_hear_other_processes_through_postgresql_notifications(
    pg_db_url: str,
) -> None:
    """Polling is set to a minute, so only the store's change notifications (LISTEN/NOTIFY)
    can bring another process's start and progress to the streams in time."""
    async with loom.Database(pg_db_url) as web_db, loom.Database(pg_db_url) as elsewhere:
        await web_db.migrate_up()
        app = create_app(database=web_db, poll_interval=60, heartbeat=60)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
            async with http.stream("GET", "/api/events/stream") as response:
                sse = SseReader(response)
                await asyncio.sleep(0)
                await elsewhere.start_workflow(
                    web_workflows.Echo, workflow_input="far", workflow_id="far-1"
                )
                started = await sse.until(lambda m: m.data["workflow_id"] == "far-1", 10)
                assert started[-1].data["status"] == "RUNNING"
            url = "/api/workflows/far-1/events/stream"
            async with http.stream("GET", url) as response:
                sse = SseReader(response)
                assert (await sse.next(10)).data["type"] == "WORKFLOW_STARTED"
                async with worker(elsewhere):
                    done = await sse.until(lambda m: m.data["type"] == "WORKFLOW_COMPLETED", 10)
                assert done[0].data["type"] == "STEP_STARTED"


async def test_stream_rejects_a_bad_cursor(db: loom.Database, client: httpx.AsyncClient) -> None:
    handle = await db.start_workflow(web_workflows.Echo, workflow_input=1)
    bad = await client.get(
        f"/api/workflows/{handle.workflow_id}/events/stream", headers={"Last-Event-ID": "abc"}
    )
    assert_error(bad, 422, "abc")
    assert_error(await client.get("/api/events/stream", headers={"Last-Event-ID": "x"}), 422)


# -- the `loom web` command --------------------------------------------------------------------


def web_env(db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOM_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS_DIR), env.get("PYTHONPATH")]))
    env["LOOM_DATABASE_URL"] = db_url
    env.update(extra)
    return env


@pytest.mark.processes
@pytest.mark.slow
def test_loom_web_serves_the_api_and_docs(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'web.db'}"
    env = web_env(db_url, LOOM_WEB_TOKEN="cli-token")
    init = subprocess.run(
        [str(LOOM), "init"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert init.returncode == 0, init.stderr
    process = subprocess.Popen(
        [str(LOOM), "web", "--port", "0", "-m", "web_workflows"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    found = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "running on" in line.lower():
                found.set()

    threading.Thread(target=read_stderr, daemon=True).start()
    try:
        assert found.wait(20), "".join(lines)
        port = re.search(r"http://127\.0\.0\.1:(\d+)", "".join(lines))
        assert port is not None, "".join(lines)
        base = f"http://127.0.0.1:{port.group(1)}"
        with httpx.Client(base_url=base, timeout=5) as http:
            assert http.get("/api/stats").status_code == 401
            auth = {"Authorization": "Bearer cli-token"}
            stats = http.get("/api/stats", headers=auth)
            assert stats.status_code == 200
            assert stats.json()["total"] == 0
            names = [
                d["name"] for d in http.get("/api/definitions", headers=auth).json()["definitions"]
            ]
            assert "web_Approval" in names
            docs = http.get("/docs", params={"token": "cli-token"}, follow_redirects=True)
            assert docs.status_code == 200
            assert "swagger" in docs.text.lower()
    finally:
        process.terminate()
        access_log, _ = process.communicate(timeout=15)
    assert process.returncode == 0, "".join(lines)
    # The access log shows the request with ?token=, never the token itself.
    assert "GET /docs?token=*** " in access_log, access_log
    assert "cli-token" not in access_log + "".join(lines)


@pytest.mark.processes
@pytest.mark.slow
def test_loom_web_refuses_a_public_host_without_a_token(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'web.db'}"
    result = subprocess.run(
        [str(LOOM), "web", "--host", "0.0.0.0", "--port", "0"],
        env=web_env(db_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    assert "--token" in result.stderr


async def test_too_deep_query_arguments_are_refused_whatever_the_recursion_limit(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    """A process whose recursion limit was raised (by a library, say) still refuses them."""
    import sys

    await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1}, workflow_id="q2")
    assert await loom.run_once(db)
    before = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        answer = await client.get(
            "/api/workflows/q2/query/scaled", params={"args": "[" * 3000 + "]" * 3000}
        )
    finally:
        sys.setrecursionlimit(before)
    assert_error(answer, 400, "args is not valid JSON: nested more than 500 deep")
