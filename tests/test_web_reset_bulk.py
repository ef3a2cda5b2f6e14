"""The web API's reset and bulk actions: ``POST /api/workflows/{id}/reset`` and
``POST /api/bulk/{cancel,retry,reset}`` (by ids or by the list's filters, with a preview that
only counts), and the dashboard pages that carry their controls; on both backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

import loom
import reset_workflows as rw
from loom import WorkflowStatus
from loom.web import api, create_app
from support import eventually, worker


@pytest.fixture
async def client(db: loom.Database) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(database=db, poll_interval=0.05)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
        yield c


def error_of(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    message = response.json()["error"]
    assert isinstance(message, str)
    return message


async def parked_on(db: loom.Database, workflow_id: str, signal: str) -> bool:
    handle = db.get_workflow(workflow_id)
    record = await handle.describe()
    waits = [
        e
        for e in await handle.events()
        if e.type is loom.EventType.SIGNAL_WAIT_STARTED and e.payload["name"] == signal
    ]
    return record.status is WorkflowStatus.RUNNING and not record.leased and bool(waits)


async def test_reset_restarts_a_workflow_from_the_step_named(
    db: loom.Database, client: httpx.AsyncClient, wid: str
) -> None:
    handle = await db.start_workflow(rw.Order, workflow_input={}, workflow_id=wid)
    async with worker(db):
        await handle.result(timeout=10)
        response = await client.post(
            f"/api/workflows/{wid}/reset", json={"to_step": "ship", "reason": "lost parcel"}
        )
        assert response.status_code == 202, response.text
        assert response.json() == {"workflow_id": wid, "outcome": "RESET", "to_step": "ship"}
        final = await handle.result(timeout=10)
    assert final["ship"] == "ship-2" and final["charge"] == "charge-1"
    history = (await client.get(f"/api/workflows/{wid}/events")).json()["events"]
    [reset] = [e for e in history if e["type"] == "WORKFLOW_RESET"]
    assert reset["payload"] == {"to_step": "ship", "index": 2, "reason": "lost parcel"}
    detail = (await client.get(f"/api/workflows/{wid}")).json()
    assert detail["reset_requested"] is False

    message = error_of(
        await client.post(f"/api/workflows/{wid}/reset", json={"to_step": "shipp"}), 422
    )
    assert "'shipp'" in message and "'charge', 'reserve', 'ship'" in message
    assert "no workflow" in error_of(
        await client.post("/api/workflows/nope/reset", json={"to_step": "ship"}), 404
    )
    for body in ({}, {"to_step": ""}, {"to_step": "a\x1bb"}, {"to_step": "ship", "x": 1}):
        error_of(await client.post(f"/api/workflows/{wid}/reset", json=body), 422)
    error_of(
        await client.post(
            f"/api/workflows/{wid}/reset", json={"to_step": "ship", "reason": "a\x00b"}
        ),
        422,
    )


async def test_bulk_cancel_by_ids_reports_each_workflow(
    db: loom.Database, client: httpx.AsyncClient, wid: str
) -> None:
    waiting = [f"{wid}-{n}" for n in range(3)]
    for workflow_id in waiting:
        await db.start_workflow(rw.Order, workflow_input={"wait": True}, workflow_id=workflow_id)
    done = await db.start_workflow(rw.Order, workflow_input={}, workflow_id=f"{wid}-done")
    async with worker(db):
        await done.result(timeout=10)
        for workflow_id in waiting:
            await eventually(lambda w=workflow_id: parked_on(db, w, "go"), what=workflow_id)
    ids = [*waiting[:2], f"{wid}-done", "no-such-workflow", waiting[0]]
    preview = await client.post("/api/bulk/cancel", json={"ids": ids, "preview": True})
    assert preview.json()["matched"] == 4 and preview.json()["results"] is None
    assert await db.get_workflow(waiting[0]).status() is WorkflowStatus.RUNNING

    response = await client.post("/api/bulk/cancel", json={"ids": ids, "reason": "bulk"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["matched"], body["succeeded"], body["failed"]) == (4, 2, 2)
    outcomes = {r["workflow_id"]: (r["ok"], r["outcome"]) for r in body["results"]}
    assert outcomes == {
        waiting[0]: (True, "CANCELED"),
        waiting[1]: (True, "CANCELED"),
        f"{wid}-done": (False, "WorkflowNotRunningError"),
        "no-such-workflow": (False, "WorkflowNotFoundError"),
    }
    assert await db.get_workflow(waiting[2]).status() is WorkflowStatus.RUNNING


async def test_bulk_actions_by_filter_act_on_every_match(
    db: loom.Database, client: httpx.AsyncClient, wid: str
) -> None:
    for n in range(4):
        await db.start_workflow(rw.Order, workflow_input={"wait": True}, workflow_id=f"{wid}-{n}")
    await db.start_workflow(rw.Collector, workflow_id=f"{wid}-other")
    async with worker(db):
        for n in range(4):
            await eventually(lambda n=n: parked_on(db, f"{wid}-{n}", "go"), what=f"{n} waiting")
    selected = {"status": "RUNNING", "name": "reset_Order"}
    counted = await client.post("/api/bulk/cancel", json={"filter": selected, "preview": True})
    assert counted.json()["matched"] == 4
    assert (await client.post("/api/bulk/cancel", json={"filter": selected})).json()[
        "succeeded"
    ] == 4
    assert await db.get_workflow(f"{wid}-other").status() is WorkflowStatus.RUNNING

    reset = await client.post(
        "/api/bulk/reset",
        json={"filter": {"status": "canceled", "since_seconds": 3600}, "to_step": "charge"},
    )
    assert reset.json()["succeeded"] == 4
    statuses = {await db.get_workflow(f"{wid}-{n}").status() for n in range(4)}
    assert statuses == {WorkflowStatus.RUNNING}

    bad = [
        ("cancel", {}),
        ("cancel", {"ids": ["a"], "filter": {}}),
        ("reset", {"ids": ["a"]}),
        ("cancel", {"filter": {"status": "SLEEPING"}}),
        ("cancel", {"filter": {"since_seconds": 0}}),
        ("cancel", {"filter": {"since_seconds": float("inf")}}),
        ("cancel", {"ids": ["bad\x00id"]}),
        ("delete", {"ids": ["a"]}),
    ]
    for action, body in bad:
        response = await client.post(
            f"/api/bulk/{action}",
            content=_json(body),
            headers={"Content-Type": "application/json"},
        )
        error_of(response, 422)


def _json(value: Any) -> bytes:
    import json

    return json.dumps(value, allow_nan=True).encode()


async def test_the_pages_carry_the_reset_and_selection_controls(
    client: httpx.AsyncClient,
) -> None:
    page = (await client.get("/workflows/x")).text
    assert 'id="reset-form"' in page and 'id="reset-step"' in page
    listing = (await client.get("/")).text
    for control in ("pick-page", "bulk-cancel", "bulk-retry", "bulk-all"):
        assert f'id="{control}"' in listing
    script = (await client.get("/static/selection.js")).text
    assert "/api/bulk/" in script


async def test_a_bulk_filter_selects_by_tag_and_creation_time_as_the_list_does(
    db: loom.Database, client: httpx.AsyncClient, wid: str
) -> None:
    await db.start_workflows(
        [
            loom.StartRequest(rw.Order, {}, f"{wid}-a", tags={"team": "ops"}),
            loom.StartRequest(rw.Order, {}, f"{wid}-b", tags={"team": "ops"}),
            loom.StartRequest(rw.Order, {}, f"{wid}-c", tags={"team": "dev"}),
        ]
    )
    listed = (await client.get("/api/workflows", params={"tag": "team=ops"})).json()
    by_tag = {"tags": ["team=ops"]}
    counted = await client.post("/api/bulk/cancel", json={"filter": by_tag, "preview": True})
    assert counted.json()["matched"] == len(listed["workflows"]) == 2
    future = {"created_after": 32503680000.0}  # the year 3000
    assert (await client.post("/api/bulk/cancel", json={"filter": future, "preview": True})).json()[
        "matched"
    ] == 0
    past = {"created_before": 1.0}
    assert (await client.post("/api/bulk/cancel", json={"filter": past, "preview": True})).json()[
        "matched"
    ] == 0
    done = await client.post("/api/bulk/cancel", json={"filter": by_tag})
    assert done.json()["succeeded"] == 2
    assert await db.get_workflow(f"{wid}-c").status() is WorkflowStatus.RUNNING
    for bad in ({"tags": ["no-equals"]}, {"created_after": -1}):
        error_of(await client.post("/api/bulk/cancel", json={"filter": bad}), 422)


async def test_a_bulk_action_by_filter_acts_only_on_the_count_confirmed(
    db: loom.Database, client: httpx.AsyncClient, wid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A workflow that starts between the preview and the action changes the selection: the
    action confirmed for the preview's count does nothing, and says so."""
    selected = {"status": "RUNNING", "name": "reset_Order"}
    for n in range(2):
        await db.start_workflow(rw.Order, workflow_id=f"{wid}-{n}")
    counted = await client.post("/api/bulk/cancel", json={"filter": selected, "preview": True})
    confirmed = counted.json()["matched"]
    assert confirmed == 2
    await db.start_workflow(rw.Order, workflow_id=f"{wid}-late")
    stale = await client.post("/api/bulk/cancel", json={"filter": selected, "expected": confirmed})
    assert "now 3 workflow(s), not the 2 confirmed" in error_of(stale, 409)
    for n in ("0", "1", "late"):
        assert await db.get_workflow(f"{wid}-{n}").status() is WorkflowStatus.RUNNING

    monkeypatch.setattr(api, "BULK_MOST", 2)
    too_many = await client.post("/api/bulk/cancel", json={"filter": selected, "expected": 3})
    assert "selects 3 workflows, more than the 2" in error_of(too_many, 422)
    monkeypatch.undo()
    done = await client.post("/api/bulk/cancel", json={"filter": selected, "expected": 3})
    assert done.json()["succeeded"] == 3
    error_of(await client.post("/api/bulk/cancel", json={"ids": ["a"], "expected": -1}), 422)
