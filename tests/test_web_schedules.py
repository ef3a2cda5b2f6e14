"""The schedules API (`/api/schedules`) and the dashboard's Schedules page, in process through
httpx, on both backends: every endpoint, its errors, and the token that guards them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import loom
import schedule_workflows
from loom.web import create_app
from support import eventually, worker


def make_client(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=headers
    )


@pytest.fixture
async def client(db: loom.Database) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(create_app(database=db, poll_interval=0.05)) as c:
        yield c


def assert_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


async def test_list_and_describe_with_next_runs_and_recent_runs(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/schedules")).json() == {"schedules": []}
    await db.create_schedule(
        "paris", schedule_workflows.Tick, cron="0 9 * * 1-5", timezone="Europe/Paris"
    )
    await db.create_schedule("tick", schedule_workflows.Tick, every="1s", input={"n": 1})
    listed = (await client.get("/api/schedules")).json()["schedules"]
    assert [s["name"] for s in listed] == ["paris", "tick"]
    assert listed[0]["spec"] == "cron 0 9 * * 1-5 (Europe/Paris)"
    assert listed[1]["every"] == "1s" and listed[1]["input"] == {"n": 1}
    assert listed[1]["next_run"].endswith("+00:00")
    async with worker(db):

        async def two_runs() -> list[dict[str, Any]]:
            found = (await client.get("/api/schedules/tick")).json()["recent_runs"]
            return found if len(found) >= 2 else []

        runs = await eventually(two_runs, timeout=10, what="two runs in the detail")
    assert all(r["workflow_id"].startswith("schedule:tick:") for r in runs)
    assert runs[0]["workflow_id"] > runs[1]["workflow_id"]  # latest slot first
    detail = (await client.get("/api/schedules/tick", params={"runs": 1})).json()
    assert len(detail["recent_runs"]) == 1 and len(detail["upcoming"]) == 5
    assert detail["upcoming"] == sorted(detail["upcoming"])


async def test_pause_resume_trigger_and_delete(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    await db.create_schedule("hold", schedule_workflows.Hold, every="1h")
    paused = await client.post("/api/schedules/hold/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True and paused.json()["next_run"] is None
    assert (await client.get("/api/schedules/hold")).json()["upcoming"] == []
    resumed = (await client.post("/api/schedules/hold/resume")).json()
    assert resumed["paused"] is False and resumed["next_run"] is not None
    triggered = await client.post("/api/schedules/hold/trigger")
    assert triggered.status_code == 202, triggered.text
    workflow_id = triggered.json()["workflow_id"]
    assert workflow_id.startswith("schedule:hold:")
    workflow = (await client.get(f"/api/workflows/{quote(workflow_id)}")).json()
    assert workflow["status"] == "RUNNING" and workflow["name"] == "sched_Hold"
    assert (await client.get("/api/schedules/hold")).json()["last_run_id"] == workflow_id
    deleted = await client.delete("/api/schedules/hold")
    assert deleted.status_code == 200 and deleted.json() == {"schedule": "hold", "deleted": True}
    assert_error(await client.get("/api/schedules/hold"), 404, "no schedule named 'hold'")
    assert (await client.get(f"/api/workflows/{quote(workflow_id)}")).status_code == 200


async def test_errors_unknown_names_bad_names_and_unregistered_workflows(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    for method, path in (
        ("GET", "/api/schedules/missing"),
        ("POST", "/api/schedules/missing/pause"),
        ("POST", "/api/schedules/missing/resume"),
        ("POST", "/api/schedules/missing/trigger"),
        ("DELETE", "/api/schedules/missing"),
    ):
        assert_error(await client.request(method, path), 404, "missing")
    assert_error(await client.get("/api/schedules/a:b"), 422, "':' or '/'")
    assert_error(await client.get("/api/schedules/%1B%5B31m"), 422, "control character")
    assert_error(await client.get("/api/schedules/" + "x" * 151), 422, "150")
    assert_error(await client.get("/api/schedules/x", params={"runs": -1}), 422)
    await db.create_schedule("tick", schedule_workflows.Tick, every="1h")
    elsewhere = create_app(database=db, registry=loom.Registry())  # a server without the module
    async with make_client(elsewhere) as other:
        assert_error(await other.post("/api/schedules/tick/trigger"), 422, "sched_Tick")
    name = "nächtlich ☃ %?#"
    await db.create_schedule(name, schedule_workflows.Tick, every="1h")
    found = await client.get("/api/schedules/" + quote(name, safe=""))
    assert found.status_code == 200 and found.json()["name"] == name


async def test_the_token_guards_the_schedules_api_and_page(db: loom.Database) -> None:
    await db.create_schedule("tick", schedule_workflows.Tick, every="1h")
    app = create_app(database=db, token="s3cret-token")
    async with make_client(app) as anonymous:
        for path in ("/api/schedules", "/api/schedules/tick", "/schedules"):
            assert_error(await anonymous.get(path), 401, "token")
        assert_error(await anonymous.post("/api/schedules/tick/pause"), 401)
        assert_error(await anonymous.delete("/api/schedules/tick"), 401)
    assert not (await db.get_schedule("tick")).paused
    async with make_client(app, Authorization="Bearer s3cret-token") as allowed:
        assert (await allowed.post("/api/schedules/tick/pause")).status_code == 200
        page = await allowed.get("/schedules")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert 'href="/schedules"' in page.text and 'id="view-schedules"' in page.text
        script = await allowed.get("/static/schedules.js")
        assert script.status_code == 200 and "/api/schedules/" in script.text
    assert (await db.get_schedule("tick")).paused


async def test_cross_site_posts_are_refused(db: loom.Database) -> None:
    await db.create_schedule("tick", schedule_workflows.Tick, every="1h")
    async with make_client(create_app(database=db)) as local:
        evil = {"Origin": "http://evil.example"}
        refused = await local.post("/api/schedules/tick/trigger", headers=evil)
        assert refused.status_code == 403, refused.text
    assert (await db.describe_schedule("tick")).recent_runs == []


async def test_the_openapi_document_lists_the_schedule_operations(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/api/schedules/{name}"]) == {"get", "delete"}
    for action in ("pause", "resume", "trigger"):
        assert "post" in paths[f"/api/schedules/{{name}}/{action}"]
    assert "get" in paths["/api/schedules"]
