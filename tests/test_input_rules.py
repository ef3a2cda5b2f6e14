"""The input rules every entry point shares (loom.limits): workflow ids and names, payload sizes,
numeric bounds; and the web API's handling of them (422, 413, paths with "/"), its event pages,
its token cookie and its refusal of cross-site requests and of raw errors.

Both backends run every test that touches a store (the ``db`` fixture).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

import loom
import web_workflows
from loom.errors import InvalidIdError, PayloadTooLargeError, StoreError
from loom.web import create_app
from loom.web.security import hide_tokens_in_logs

BAD_IDS = {
    "NUL": "a\x00b",
    "escape": "x\x1b]0;owned\x07",
    "DEL": "a\x7fb",
    "C1": "a\x85b",
    "newline": "a\nb",
    "lone surrogate": "a\ud800b",
    "too long": "x" * 201,
    "empty": "",
    # A browser reads them as steps along the path, even spelled %2E: no page can address them.
    "dot": ".",
    "dots": "..",
}


def client_of(app: Any, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", headers=headers
    )


@pytest.fixture
async def client(db: loom.Database) -> AsyncIterator[httpx.AsyncClient]:
    async with client_of(create_app(database=db, poll_interval=0.05)) as c:
        yield c


def is_error(response: httpx.Response, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message


# -- ids and names: the client API ----------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BAD_IDS))
async def test_client_api_refuses_a_bad_workflow_id_before_storing_anything(
    db: loom.Database, kind: str
) -> None:
    bad = BAD_IDS[kind]
    with pytest.raises(InvalidIdError, match="workflow id") as info:
        await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id=bad)
    assert isinstance(info.value, ValueError)
    assert "\x00" not in str(info.value) and "\x1b" not in str(info.value)
    with pytest.raises(InvalidIdError):
        db.get_workflow(bad)
    assert await db.list_workflows() == []


async def test_client_api_applies_the_rule_to_names_and_signal_names(db: loom.Database) -> None:
    with pytest.raises(InvalidIdError, match="workflow name"):
        await db.start_workflow_by_name("web_Echo\x00")
    handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
    for bad in ("go\x00", "go\x1b[31m", "\ud800", "s" * 201, ""):
        with pytest.raises(InvalidIdError, match="signal name"):
            await handle.signal(bad, 1)
    assert (await db.stats()).signals_pending == 0
    with pytest.raises(InvalidIdError, match="reason"):
        await handle.cancel("because\x00")
    assert await handle.status() is loom.WorkflowStatus.RUNNING
    # The longest and the most unusual valid ids work.
    for wid in ("x" * 200, "orders/7/events", "ünï cødé ✓ 你好", "a b\tc".replace("\t", " ")):
        started = await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id=wid)
        assert (await db.get_workflow(wid).describe()).workflow_id == started.workflow_id == wid


# -- payload sizes: the client API ----------------------------------------------------------------


async def test_client_api_refuses_a_payload_above_the_limit(db_url: str) -> None:
    async with loom.Database(db_url, max_payload_bytes=1000) as db:
        await db.migrate_up()
        big = "x" * 2000
        with pytest.raises(PayloadTooLargeError, match="above the limit of 1000 bytes"):
            await db.start_workflow(web_workflows.Echo, workflow_input=big, workflow_id="big")
        with pytest.raises(PayloadTooLargeError, match="initial state"):
            await db.start_workflow(web_workflows.Echo, initial_state={"a": big})
        assert await db.list_workflows() == []
        handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
        with pytest.raises(PayloadTooLargeError, match="signal 'approve'"):
            await handle.signal("approve", big)
        assert (await db.stats()).signals_pending == 0
        await handle.signal("approve", "x" * 900)  # within the limit
    with pytest.raises(loom.ConfigurationError, match="max_payload_bytes"):
        loom.Database(db_url, max_payload_bytes=0)


# -- ids in the web API ---------------------------------------------------------------------------


async def test_web_api_refuses_bad_ids_and_names_with_422(client: httpx.AsyncClient) -> None:
    for kind in ("NUL", "escape", "C1", "too long"):
        bad = BAD_IDS[kind]
        started = await client.post("/api/workflows", json={"name": "web_Echo", "id": bad})
        is_error(started, 422, "id")
        is_error(await client.get(f"/api/workflows/{quote(bad, safe='')}"), 422, "workflow id")
    is_error(await client.post("/api/workflows", json={"name": "web_Echo\x00"}), 422, "name")
    is_error(await client.get("/api/workflows", params={"q": "a\x00"}), 422, "id search")
    is_error(await client.get("/api/workflows", params={"name": "a\x00"}), 422, "name")
    assert (await client.get("/api/workflows")).json()["workflows"] == []


async def test_every_valid_id_is_reachable_in_the_web_api(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    ids = ["orders/7", "a/events", "b/signal", "c/cancel", "d/retry", "e/events/stream", "%2F/x"]
    for wid in ids:
        started = await client.post(
            "/api/workflows", json={"name": "web_Approval", "input": {"n": 1}, "id": wid}
        )
        assert started.status_code == 201, started.text
        assert started.json()["workflow_id"] == wid
    for wid in ids:
        encoded = quote(wid, safe="")  # what encodeURIComponent sends
        detail = await client.get(f"/api/workflows/{encoded}")
        assert detail.status_code == 200, (wid, detail.text)
        assert detail.json()["workflow_id"] == wid
        events = await client.get(f"/api/workflows/{encoded}/events")
        assert events.status_code == 200, (wid, events.text)
        assert events.json()["workflow_id"] == wid
        assert events.json()["events"][0]["type"] == "WORKFLOW_STARTED"
        signal = await client.post(f"/api/workflows/{encoded}/signal", json={"name": "approve"})
        assert signal.status_code == 202, (wid, signal.text)
        assert signal.json()["workflow_id"] == wid
        page = await client.get(f"/workflows/{encoded}")
        assert page.status_code == 200
    # Written as is, an id with "/" works too where nothing makes it ambiguous.
    plain = await client.get("/api/workflows/orders/7")
    assert plain.json()["workflow_id"] == "orders/7"
    assert (await client.get("/api/workflows/orders/7/events")).json()["workflow_id"] == "orders/7"
    canceled = await client.post(f"/api/workflows/{quote('c/cancel', safe='')}/cancel")
    assert canceled.status_code == 202, canceled.text
    assert await db.get_workflow("c/cancel").status() is loom.WorkflowStatus.CANCELED
    assert await db.get_workflow("orders/7").status() is loom.WorkflowStatus.RUNNING


# -- numeric bounds and errors --------------------------------------------------------------------


async def test_numbers_out_of_range_are_422_not_500(
    db: loom.Database, client: httpx.AsyncClient
) -> None:
    await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id="w")
    huge = str(2**63)
    is_error(await client.get("/api/workflows", params={"offset": huge}), 422, "offset")
    is_error(await client.get("/api/workflows/w/events", params={"after_seq": huge}), 422)
    is_error(await client.get("/api/workflows/w/events", params={"limit": 0}), 422, "limit")
    stream = "/api/workflows/w/events/stream"
    is_error(await client.get(stream, params={"after_seq": huge}), 422, "sequence")
    is_error(await client.get(stream, headers={"Last-Event-ID": "-1"}), 422)
    is_error(await client.get("/api/events/stream", params={"after": "nan"}), 422)
    largest = await client.get("/api/workflows", params={"offset": str(2**63 - 1)})
    assert largest.status_code == 200, largest.text
    assert largest.json()["workflows"] == []


async def test_database_errors_are_503_and_other_errors_never_show_their_text(
    db: loom.Database, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unavailable(**kwargs: Any) -> Any:
        raise StoreError("cannot reach db.internal:5432/orders as user admin")

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("password=hunter2 host=db.internal")

    monkeypatch.setattr(db.store, "list_workflows", unavailable)
    response = await client.get("/api/workflows")
    is_error(response, 503, "database unavailable")
    assert "db.internal" not in response.text and "admin" not in response.text
    monkeypatch.setattr(db.store, "get_workflow", broken)
    transport = httpx.ASGITransport(app=create_app(database=db), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as raw:
        response = await raw.get("/api/workflows/w")
    is_error(response, 500, "RuntimeError")
    assert "hunter2" not in response.text and "db.internal" not in response.text


# -- payload sizes in the web API -----------------------------------------------------------------


async def test_web_api_refuses_large_bodies_with_413_and_stores_nothing(
    db: loom.Database,
) -> None:
    app = create_app(database=db, max_payload_bytes=1000)
    envelope = 64 * 1024
    async with client_of(app) as client:
        huge = {"name": "web_Echo", "input": "x" * (1000 + envelope + 10), "id": "huge"}
        is_error(await client.post("/api/workflows", json=huge), 413, "above the limit")
        # The declared length alone is enough to refuse, before reading anything.
        declared = await client.post(
            "/api/workflows",
            content=b"{}",
            headers={"content-type": "application/json", "content-length": str(10**9)},
        )
        is_error(declared, 413, "1000000000")

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
            yield b'{"name": "web_Echo", "input": "'
            for _ in range(100):
                yield b"x" * 1024
            yield b'"}'

        streamed = await client.post(
            "/api/workflows", content=chunks(), headers={"content-type": "application/json"}
        )
        is_error(streamed, 413)
        # Within the body limit but above the payload limit: the client API's check, 413 too.
        over = {"name": "web_Echo", "input": "x" * 2000, "id": "over"}
        is_error(await client.post("/api/workflows", json=over), 413, "1000 bytes")
        handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
        signal = await client.post(
            f"/api/workflows/{handle.workflow_id}/signal",
            json={"name": "approve", "payload": "x" * 2000},
        )
        is_error(signal, 413, "signal 'approve'")
        small = await client.post("/api/workflows", json={"name": "web_Echo", "input": "ok"})
        assert small.status_code == 201, small.text
    listed = [w.workflow_id for w in await db.list_workflows()]
    assert "huge" not in listed and "over" not in listed and len(listed) == 2
    assert (await db.stats()).signals_pending == 0


# -- event pages and large payloads in streams ----------------------------------------------------


async def test_history_json_is_paged(db: loom.Database, client: httpx.AsyncClient) -> None:
    handle = await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id="p")
    assert await loom.run_once(db)
    stored = [e.seq for e in await handle.events()]
    assert len(stored) >= 4
    seen: list[int] = []
    after = 0
    while True:
        page = (
            await client.get("/api/workflows/p/events", params={"after_seq": after, "limit": 2})
        ).json()
        assert len(page["events"]) <= 2
        seen += [e["seq"] for e in page["events"]]
        after = page["next_after_seq"]
        if not page["has_more"]:
            break
    assert seen == stored


async def test_streams_send_a_link_instead_of_a_large_payload(db: loom.Database) -> None:
    from loom.web import streams

    big = "x" * 5000
    await db.start_workflow(web_workflows.Echo, workflow_input=big, workflow_id="big/one")
    assert await loom.run_once(db)
    events = await db.get_workflow("big/one").events()
    disconnected = False

    async def gone() -> bool:
        return disconnected

    body = streams.workflow_history(
        db, "big/one", 0, gone, poll_interval=0.01, heartbeat=5, max_event_bytes=1000
    )
    sent = [await anext(body) for _ in range(len(events) + 1)][1:]
    disconnected = True
    await body.aclose()
    import orjson

    data = [orjson.loads(m.split("data: ", 1)[1]) for m in sent]
    first = data[0]
    assert first["type"] == "WORKFLOW_STARTED"
    assert first["payload"] is None and first["payload_omitted"] is True
    assert first["payload_bytes"] > 5000
    assert all(big not in m for m in sent)
    async with client_of(create_app(database=db)) as client:
        fetched = (await client.get(first["href"])).json()
    assert [e["seq"] for e in fetched["events"]] == [1]
    assert fetched["events"][0]["payload"]["input"] == big


async def test_a_stream_ends_after_its_lifetime(db: loom.Database) -> None:
    from loom.web import streams

    await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id="s")

    async def connected() -> bool:
        return False

    body = streams.workflow_history(
        db, "s", 0, connected, poll_interval=0.01, heartbeat=5, lifetime=0.2
    )
    sent = [m async for m in body]  # ends by itself
    assert any("WORKFLOW_STARTED" in m for m in sent)


# -- the token and cross-site requests ------------------------------------------------------------


async def test_post_must_be_json_and_not_cross_site(db: loom.Database) -> None:
    handle = await db.start_workflow(web_workflows.Approval, workflow_input={"n": 1})
    url = f"/api/workflows/{handle.workflow_id}/cancel"
    async with client_of(create_app(database=db)) as client:
        form = await client.post(url, data={"reason": "x"})
        is_error(form, 415, "application/json")
        plain = await client.post(
            url, content=b'{"reason": "x"}', headers={"content-type": "text/plain"}
        )
        is_error(plain, 415)
        cross = await client.post(url, json={}, headers={"Sec-Fetch-Site": "cross-site"})
        is_error(cross, 403, "cross-site")
        assert await handle.status() is loom.WorkflowStatus.RUNNING
        same = await client.post(url, json={}, headers={"Sec-Fetch-Site": "same-origin"})
        assert same.status_code == 202, same.text


async def test_bearer_header_and_cookie_are_accepted_and_the_log_hides_the_token(
    db: loom.Database, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(database=db, token="t0k/en;=")
    async with client_of(app) as client:
        exchanged = await client.get("/workflows/a%2Fb", params={"token": "t0k/en;="})
        assert exchanged.status_code == 303
        assert exchanged.headers["location"] == "/workflows/a%2Fb"
        assert "t0k" not in exchanged.headers["location"]
        assert (await client.get("/api/stats")).status_code == 200  # by the cookie
    async with client_of(app, Authorization="Bearer t0k/en;=") as client:
        assert (await client.get("/api/stats")).status_code == 200
    async with client_of(app) as client:
        assert (
            await client.post("/api/workflows", params={"token": "t0k/en;="})
        ).status_code == 401
    hide_tokens_in_logs()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/?a=1&token=t0k%2Fen", "1.1", 303
        )
    assert "t0k" not in caplog.text
    assert "token=***" in caplog.text


async def test_a_stream_reads_and_holds_the_history_a_page_at_a_time(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loom.web import streams

    handle = await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id="pages")
    assert await loom.run_once(db)
    stored = [e.seq for e in await handle.events()]
    assert len(stored) >= 4
    monkeypatch.setattr(streams, "PAGE", 2)
    pages: list[int] = []
    real_page = streams.history_page

    async def spy(*args: Any) -> Any:
        events, more = await real_page(*args)
        pages.append(len(events))
        return events, more

    monkeypatch.setattr(streams, "history_page", spy)

    async def connected() -> bool:
        return False

    body = streams.workflow_history(db, "pages", 0, connected, poll_interval=0.01, heartbeat=5)
    sent = [await anext(body) for _ in range(len(stored) + 1)][1:]
    await body.aclose()
    assert [int(m.split("\n", 1)[0].removeprefix("id: ")) for m in sent] == stored
    assert max(pages) == 2
