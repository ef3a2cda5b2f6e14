"""The dashboard pages in a real browser: Debian's chromium driven by Playwright.

A uvicorn server and a worker run in the test's event loop over one SQLite file; another
process starts workflows on that file, and the pages must show them live, act on them through
their forms (with the confirm dialogs) and render untrusted values as text. Every page is
screenshotted; with ``LOOM_SCREENSHOTS=docs`` the pictures replace those in docs/screenshots/,
otherwise they go to a temporary folder so a test run leaves the tree untouched.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

import e2e_workflows
import loom
import schedule_workflows
import web_workflows  # its heartbeating workflow
from loom.testing import Replayer
from loom.web import create_app
from routing_workload import Hold, seen
from support import eventually, pg, worker
from webserver import serve

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parent
SCREENSHOTS = (
    TESTS_DIR.parent / "docs" / "screenshots"
    if os.environ.get("LOOM_SCREENSHOTS") == "docs"
    else Path(tempfile.gettempdir()) / f"loom-screenshots-{os.getpid()}"
)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
XSS = '<script>window.__xss=1</script><img src=x onerror="window.__xss=2">'
TIMEOUT_MS = 8000


def _require_browser() -> None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        pg.unavailable("browser tests: the playwright package (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        pg.unavailable(f"browser tests: {CHROMIUM} is missing (apt-get install chromium)")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    _require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        instance = await pw.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield instance
        finally:
            await instance.close()


@pytest.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[loom.Database]:
    async with loom.Database(f"sqlite:///{tmp_path / 'e2e.db'}") as database:
        await database.migrate_up()
        yield database


START_SCRIPT = """
import asyncio, sys
import loom
import e2e_workflows

async def main(url, workflow_id):
    async with loom.Database(url) as db:
        await db.start_workflow(
            e2e_workflows.Approval, workflow_input={"n": 21}, workflow_id=workflow_id
        )

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def start_in_other_process(db_url: str, workflow_id: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        START_SCRIPT,
        db_url,
        workflow_id,
        cwd=TESTS_DIR,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR)},
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    assert proc.returncode == 0, err.decode()


async def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def test_list_is_live_and_a_signal_sent_from_the_page_completes_the_workflow(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input="hello", workflow_id="echo-1")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/")
        await expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
        await expect(page.locator('tr[data-id="echo-1"]')).to_contain_text("COMPLETED")
        await page.evaluate("window.__sameDocument = true")

        await start_in_other_process(sqlite_db.url, "order-42")
        row = page.locator('tr[data-id="order-42"]')
        await expect(row).to_be_visible(timeout=TIMEOUT_MS)
        await expect(row).to_contain_text("e2e_Approval")
        await expect(row).to_contain_text("RUNNING", timeout=TIMEOUT_MS)
        assert await page.evaluate("window.__sameDocument") is True  # no reload happened
        running = page.locator(
            "#stats div", has=page.locator("dt", has_text=re.compile("^RUNNING$"))
        )
        await expect(running.locator("dd")).to_have_text("1", timeout=TIMEOUT_MS)
        await shot(page, "list")

        await row.get_by_role("link", name="order-42").click()
        await expect(page.locator("#workflow-id")).to_have_text("order-42")
        events = page.locator("#events tbody")
        await expect(events).to_contain_text("SIGNAL_WAIT_STARTED", timeout=TIMEOUT_MS)
        await expect(page.locator("#input")).to_contain_text('"n": 21')
        await expect(page.locator("#state")).to_contain_text('"doubled": 42')
        await expect(page.locator('#timeline g.bar-done[data-step="prepare"]')).to_have_count(1)
        await expect(page.locator('#timeline g.bar-current[data-step="approve"]')).to_have_count(1)

        # Declining the confirm dialog sends nothing.
        await page.fill("#signal-name", "approve")
        await page.fill("#signal-payload", '{"by": "ada"}')
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.dismiss()))
        await page.click("#signal-send")
        await expect(page.locator("#action-result")).to_contain_text("not sent")
        assert (await sqlite_db.get_workflow("order-42").status()).value == "RUNNING"

        # A malformed payload is refused with a clear message before any request.
        await page.fill("#signal-payload", "{oops")
        await page.click("#signal-send")
        await expect(page.locator("#action-result")).to_contain_text("not valid JSON")

        await page.fill("#signal-payload", '{"by": "ada"}')
        messages: list[str] = []

        async def accept(dialog: Any) -> None:
            messages.append(dialog.message)
            await dialog.accept()

        page.once("dialog", lambda dialog: asyncio.ensure_future(accept(dialog)))
        await page.click("#signal-send")
        await expect(page.locator("#action-result")).to_contain_text("Signal approve sent")
        assert messages and "approve" in messages[0] and "order-42" in messages[0]
        await expect(page.locator("#summary")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
        await expect(page.locator("#state")).to_contain_text('"by": "ada"')
        await expect(page.locator("#state")).to_contain_text('"settled": true')
        await expect(events).to_contain_text("WORKFLOW_COMPLETED")
        await expect(page.locator("#timeline g.bar-done")).to_have_count(3)
        await expect(page.locator("#signal-send")).to_be_disabled()

        # Event payloads expand on click.
        received = page.locator("#events tbody tr", has_text="SIGNAL_RECEIVED")
        payload = received.locator("pre.payload")
        await expect(payload).to_be_hidden()
        await received.locator("summary").click()
        await expect(payload).to_be_visible()
        await expect(payload).to_contain_text('"by": "ada"')
        await shot(page, "detail")
        await page.close()
    assert (await sqlite_db.get_workflow("order-42").state())["decision"] == {"by": "ada"}


async def test_the_step_timeline_draws_the_last_heartbeat_of_a_running_activity(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    web_workflows.beating_released.clear()
    handle = await sqlite_db.start_workflow(web_workflows.Beating, workflow_id="beats-1")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    try:
        async with serve(app) as base, worker(sqlite_db):
            await eventually(handle.heartbeats, what="a heartbeat recorded")
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(base + "/workflows/beats-1")
            bar = page.locator('#timeline g.bar-current[data-step="crunch"]')
            mark = bar.locator("circle.beat")
            await expect(mark).to_have_count(1, timeout=TIMEOUT_MS)
            await expect(mark.locator("title")).to_contain_text("heartbeat of web_beating")
            await expect(mark.locator("title")).to_contain_text('{"done":')
            note = page.locator('#steps li[data-step="crunch"] .beat-note')
            await expect(note).to_contain_text("heartbeat of web_beating")
            await expect(note).to_contain_text("ago")

            web_workflows.beating_released.set()
            await expect(page.locator("#summary")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
            await expect(page.locator("#timeline circle.beat")).to_have_count(0)
            await expect(page.locator(".beat-note")).to_have_count(0)
            await page.close()
    finally:
        web_workflows.beating_released.set()


async def test_the_workflow_page_shows_where_a_routed_activity_stands_and_ran(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    seen.pop("routed-1", None)
    handle = await sqlite_db.start_workflow(
        Hold, workflow_id="routed-1", workflow_input={"seconds": 1.5}
    )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db, queues=["default"], worker_id="cpu-e2e"):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/workflows/routed-1")
        row = page.locator("#activities tbody tr")
        waiting = "waiting for a worker of queue 'gpu'"
        await expect(row).to_contain_text(waiting, timeout=TIMEOUT_MS)
        note = page.locator('#steps li[data-step="run"] .where-note')
        await expect(note).to_contain_text("routing_hold " + waiting)
        await shot(page, "routed-waiting")
        async with worker(sqlite_db, queues=["gpu"], worker_id="gpu-e2e"):
            await expect(row).to_contain_text("running on gpu-e2e", timeout=TIMEOUT_MS)
            await expect(note).to_contain_text("running on gpu-e2e")
            await handle.result(timeout=15)
        await expect(row).to_contain_text("ran on gpu-e2e", timeout=TIMEOUT_MS)
        await expect(row.locator("td").nth(4)).to_have_text("completed")
        await expect(page.locator(".where-note")).to_have_count(0)
        await page.close()


async def test_failed_workflow_shows_its_error_and_retries_from_the_page(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    e2e_workflows.FLAKY["fail"] = True
    handle = await sqlite_db.start_workflow(e2e_workflows.Pay, workflow_id="pay-7")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        with pytest.raises(loom.WorkflowFailedError):
            await handle.result(timeout=10)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/workflows/pay-7")
        await expect(page.locator("#summary")).to_contain_text("FAILED", timeout=TIMEOUT_MS)
        error = page.locator("#error-section")
        await expect(error).to_be_visible()
        await expect(error).to_contain_text("the payment service is down")
        await expect(error).to_contain_text("in step charge")
        await expect(error).to_contain_text(
            "Caused by RuntimeError: the payment service is down (activity e2e_flaky_call"
        )
        await expect(page.locator('#timeline g.bar-stopped[data-step="charge"]')).to_have_count(1)
        await expect(page.locator("#signal-send")).to_be_disabled()

        # The activity's exception chain is listed, its traceback expands on click.
        await expect(error.locator(".cause-chain")).to_have_text(
            "ConnectionRefusedError: connection refused by pay.example:443"
        )
        activity = error.locator("details.traceback", has_text="Activity traceback")
        activity_text = activity.locator("pre")
        await expect(activity_text).to_be_hidden()
        await activity.locator("summary").click()
        await expect(activity_text).to_be_visible()
        await expect(activity_text).to_contain_text("in flaky_call")
        await expect(activity_text).to_contain_text(
            "ConnectionRefusedError: connection refused by pay.example:443"
        )
        await expect(activity_text).to_contain_text("RuntimeError: the payment service is down")
        await shot(page, "failed")
        workflow = error.locator("details.traceback", has_text="Workflow traceback")
        await workflow.locator("summary").click()
        await expect(workflow.locator("pre")).to_contain_text("ActivityFailedError")
        # The history row of the failed attempt shows the same, as text.
        attempt = page.locator("#events tbody tr.ev-activity_failed")
        await attempt.locator("summary").first.click()
        await expect(attempt.locator("pre.payload")).to_contain_text('"attempt": 1')
        await expect(attempt.locator("pre.payload")).not_to_contain_text("Traceback (most recent")
        await attempt.locator("details.traceback summary").click()
        await expect(attempt.locator("pre.traceback-text")).to_contain_text("in flaky_call")
        await expect(attempt.locator(".cause-chain")).to_contain_text("ConnectionRefusedError")

        e2e_workflows.FLAKY["fail"] = False
        try:
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.click("#retry")
            await expect(page.locator("#action-result")).to_contain_text("Retried")
            await expect(page.locator("#summary")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
            await expect(page.locator("#state")).to_contain_text('"charge": "paid"')
            await expect(error).to_be_hidden()

            # An action the status no longer allows is refused with the server's reason.
            await page.evaluate("document.getElementById('retry').disabled = false")
            page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
            await page.click("#retry")
            result = page.locator("#action-result")
            await expect(result).to_contain_text("Retry failed:")
            await expect(result).to_have_class("error")
        finally:
            e2e_workflows.FLAKY["fail"] = True
        await page.close()


async def test_untrusted_input_is_rendered_as_text(sqlite_db: loom.Database, browser: Any) -> None:
    from playwright.async_api import expect

    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=XSS, workflow_id=XSS)
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page()
        await page.goto(base + "/")
        row = page.locator("#workflows tbody tr").first
        await expect(row).to_contain_text(XSS, timeout=TIMEOUT_MS)
        await row.get_by_role("link").click()
        await expect(page.locator("#workflow-id")).to_have_text(XSS)
        await expect(page.locator("#input")).to_contain_text("<script>window.__xss=1</script>")
        await expect(page.locator("#summary")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
        await expect(page.locator("#state")).to_contain_text('onerror=\\"window.__xss=2\\"')
        await expect(page.locator("#events tbody")).to_contain_text("STATE_SET")
        for summary in await page.locator("#events summary").all():
            await summary.click()
        assert await page.locator("main img").count() == 0
        assert await page.locator("main script").count() == 0
        assert await page.evaluate("typeof window.__xss") == "undefined"
        await page.close()


async def test_a_token_protected_server_refuses_the_page_without_the_token(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=1, workflow_id="secret-1")
    # The server exchanges a right ?token= for an HttpOnly cookie and drops it from the URL.
    app = create_app(database=sqlite_db, token="s3cret-token", poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page()
        response = await page.goto(base + "/")
        assert response is not None and response.status == 401
        await expect(page.locator("body")).to_contain_text("a valid token is required")
        assert await page.locator("#workflows").count() == 0
        api = await page.request.get(base + "/api/workflows")
        assert api.status == 401

        response = await page.goto(base + "/?token=wrong")
        assert response is not None and response.status == 401

        response = await page.goto(base + "/?token=s3cret-token&status=COMPLETED")
        assert response is not None and response.status == 200
        # The token leaves the address bar at once; the filters stay.
        await expect(page).to_have_url(base + "/?status=COMPLETED")
        await expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
        row = page.locator('tr[data-id="secret-1"]')
        await expect(row).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
        await expect(page.locator("#list-error")).to_have_text("")
        hrefs = await page.locator("a[href]").evaluate_all("els => els.map(e => e.href)")
        assert hrefs and not any("s3cret" in href for href in hrefs)
        await row.get_by_role("link").click()
        await expect(page).to_have_url(base + "/workflows/secret-1")
        await expect(page.locator("#state")).to_contain_text('"echo": 1', timeout=TIMEOUT_MS)
        await expect(page.locator("#events tbody")).to_contain_text("WORKFLOW_COMPLETED")
        await expect(page.locator("#load-error")).to_have_text("")
        await expect(page.locator("#live")).to_have_text("live")
        # A POST from the page is accepted (here refused for the workflow's status, not auth).
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.evaluate(
            "() => { const b = document.getElementById('retry'); b.disabled = false; b.click(); }"
        )
        await expect(page.locator("#action-result")).to_contain_text("Retry failed:")
        await expect(page.locator("#action-result")).not_to_contain_text("token")
        await page.get_by_role("link", name="Loom").click()
        await expect(page).to_have_url(base + "/")
        await expect(row).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
        await page.close()


async def test_definitions_graph_is_coloured_by_a_run_and_metrics_are_charted(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    for n in range(3):
        await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=n)
    e2e_workflows.FLAKY["fail"] = True
    await sqlite_db.start_workflow(e2e_workflows.Pay, workflow_id="pay-9")
    await sqlite_db.start_workflow(
        e2e_workflows.Approval, workflow_input={"n": 1}, workflow_id="order-9"
    )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/")
        await page.get_by_role("link", name="Definitions").click()
        await expect(page).to_have_url(base + "/definitions")
        graph = page.locator('article[data-name="e2e_Approval"]')
        await expect(graph).to_contain_text("activity e2e_double")
        await expect(graph).to_contain_text("signal approve")
        await expect(graph).to_contain_text("sleep seconds=0.05")
        await expect(graph.locator("g.node")).to_have_count(3)
        await expect(graph.locator("g.node-plain")).to_have_count(3)  # no run chosen yet

        async def order_9_waits() -> bool:
            events = await sqlite_db.get_workflow("order-9").events()
            return any(e.type.value == "SIGNAL_WAIT_STARTED" for e in events)

        await eventually(order_9_waits, 10, what="order-9 to wait for its signal")
        await page.fill("#run-id", "order-9")
        await page.click("#run-form button")
        await expect(graph.locator('g.node-done[data-step="prepare"]')).to_have_count(1)
        await expect(graph.locator('g.node-current[data-step="approve"]')).to_have_count(1)
        await expect(graph.locator('g.node-pending[data-step="settle"]')).to_have_count(1)
        await expect(graph).to_contain_text("RUNNING")
        other = page.locator('article[data-name="e2e_Echo"]')
        await expect(other.locator("g.node-plain")).to_have_count(1)
        await shot(page, "definitions")

        await page.fill("#run-id", "no-such-run")
        await page.click("#run-form button")
        await expect(page.locator("#defs-error")).to_contain_text("no-such-run")

        await page.get_by_role("link", name="Queue & metrics").click()
        await expect(page).to_have_url(base + "/charts")
        status_chart = page.locator("#chart-status")
        await expect(status_chart.locator('g[data-label="COMPLETED"]')).to_contain_text(
            "3", timeout=TIMEOUT_MS
        )
        await expect(status_chart.locator('g[data-label="RUNNING"]')).to_contain_text("1")
        await expect(page.locator('#chart-queue g[data-label="waiting"]')).to_contain_text("1")
        await expect(page.locator("#chart-throughput rect")).not_to_have_count(0)
        await expect(status_chart.locator('g[data-label="FAILED"]')).to_contain_text("1")
        failures = page.locator("#chart-failures rect title")
        await expect(failures).to_have_count(30)
        counts = await failures.evaluate_all("els => els.map(e => e.textContent)")
        assert counts.count("1") == 1 and set(counts) == {"0", "1"}  # the failure, its minute
        await shot(page, "metrics")
        await page.close()


async def test_api_docs_are_interactive_offline(sqlite_db: loom.Database, browser: Any) -> None:
    """Swagger UI renders and runs a call with every request outside the server refused."""
    from playwright.async_api import expect

    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=5, workflow_id="echo-5")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        outside: list[str] = []

        async def only_this_server(route: Any) -> None:
            if route.request.url.startswith(base):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", only_this_server)
        await page.goto(base + "/docs")
        operation_id = "get_workflow_api_workflows__workflow_id__get"
        operation = page.locator(f"#operations-workflows-{operation_id}")
        await expect(operation).to_be_visible(timeout=TIMEOUT_MS)
        await operation.locator(".opblock-summary").click()
        await operation.get_by_role("button", name="Try it out").click()
        await operation.locator('input[placeholder="workflow_id"]').fill("echo-5")
        await operation.get_by_role("button", name="Execute").click()
        live = operation.locator(".live-responses-table tbody .response-col_status")
        await expect(live).to_contain_text("200", timeout=TIMEOUT_MS)
        await expect(operation.locator(".live-responses-table")).to_contain_text("echo-5")
        assert outside == []
        await shot(page, "api-docs")
        await page.close()


async def test_a_workflow_whose_id_has_slashes_and_spaces_opens_from_the_list(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    odd = "orders/2026 12/naïve ✓?x=1#frag%20"
    await sqlite_db.start_workflow(e2e_workflows.Approval, workflow_input={"n": 4}, workflow_id=odd)
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page()
        requested: list[str] = []
        page.on("request", lambda request: requested.append(request.url))
        await page.goto(base + "/")
        link = page.locator("#workflows tbody tr").first.get_by_role("link")
        await expect(link).to_have_text(odd, timeout=TIMEOUT_MS)
        await link.click()
        await expect(page.locator("#workflow-id")).to_have_text(odd)
        await expect(page.locator("#state")).to_contain_text('"doubled": 8', timeout=TIMEOUT_MS)
        await expect(page.locator("#events tbody")).to_contain_text("SIGNAL_WAIT_STARTED")
        await expect(page.locator("#load-error")).to_have_text("")

        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.fill("#signal-name", "approve")
        await page.click("#signal-send")
        await expect(page.locator("#summary")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
        # Every address of the workflow holds its id as one encoded path segment.
        encoded = "orders%2F2026%2012%2Fna%C3%AFve%20%E2%9C%93%3Fx%3D1%23frag%2520"
        paths = [urlsplit(url).path for url in requested if "orders" in url]
        assert f"/workflows/{encoded}" in paths
        assert f"/api/workflows/{encoded}" in paths
        assert f"/api/workflows/{encoded}/events/stream" in paths
        assert f"/api/workflows/{encoded}/signal" in paths

        # "Download history" saves the file loom.testing.Replayer replays.
        async with page.expect_download() as downloading:
            await page.click("#download-history")
        download = await downloading.value
        assert download.suggested_filename.endswith(".history.json")
        replayed = Replayer(e2e_workflows.Approval).replay(await download.path())
        assert replayed.workflow_id == odd
        assert replayed.status is loom.WorkflowStatus.COMPLETED
        await page.close()
    assert (await sqlite_db.get_workflow(odd).state())["decision"] is None


async def test_the_workflow_page_runs_its_queries_and_shows_their_answers(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    odd = "orders/7 ✓?x#"
    handle = await sqlite_db.start_workflow(
        e2e_workflows.Approval, workflow_input={"n": 4}, workflow_id=odd
    )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page()
        await page.goto(base + "/workflows/" + quote(odd, safe=""))
        await expect(page.locator("#events tbody")).to_contain_text(
            "SIGNAL_WAIT_STARTED", timeout=TIMEOUT_MS
        )
        before = await handle.describe()

        def query(name: str) -> Any:
            return page.locator(".query-item", has=page.locator(f'form[data-query="{name}"]'))

        doubled, plus = query("doubled"), query("plus ?#%")
        await expect(doubled.locator("input")).to_have_count(0)  # it takes no arguments
        await doubled.get_by_role("button", name="Run").click()
        await expect(doubled.locator("pre.query-result")).to_have_text("8")
        await expect(plus).to_contain_text("The doubled amount plus n.")
        answer = plus.locator("pre.query-result")
        await plus.locator("input").fill("[5]")
        await plus.get_by_role("button", name="Run").click()
        await expect(answer).to_have_text("13")
        await plus.locator("input").fill("[-1]")
        await plus.get_by_role("button", name="Run").click()
        await expect(answer).to_contain_text("failed: ValueError: n must not be negative")
        await expect(answer).to_have_class(re.compile("error"))
        await plus.locator("input").fill("5")
        await plus.get_by_role("button", name="Run").click()
        await expect(answer).to_have_text("Arguments must be a JSON array.")
        await page.close()
    assert await handle.describe() == before


async def test_the_list_applies_streamed_changes_without_fetching_it_again(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    first = await sqlite_db.start_workflow(
        e2e_workflows.Approval, workflow_input={"n": 1}, workflow_id="order-1"
    )
    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=0, workflow_id="echo-0")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page()
        lists: list[str] = []
        page.on(
            "request",
            lambda r: lists.append(r.url) if urlsplit(r.url).path == "/api/workflows" else None,
        )
        await page.goto(base + "/?status=RUNNING")
        rows = page.locator("#workflows tbody tr")
        await expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
        await expect(rows).to_have_count(1, timeout=TIMEOUT_MS)
        await expect(rows.first).to_have_attribute("data-id", "order-1")

        await start_in_other_process(sqlite_db.url, "order-2")
        await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
        await expect(rows.first).to_have_attribute("data-id", "order-2")  # newest first
        await expect(page.locator('tr[data-id="order-2"]')).to_contain_text("approve")

        # A workflow that no longer matches the filter leaves the table.
        await first.signal("approve", "yes")
        await expect(page.locator('tr[data-id="order-1"]')).to_have_count(0, timeout=TIMEOUT_MS)
        await expect(rows).to_have_count(1)
        await expect(page.locator("#page-info")).to_have_text("1\u20131")
        # The overview counts follow too.
        term = page.locator("dt", has_text=re.compile("^COMPLETED$"))
        completed = page.locator("#stats div", has=term).locator("dd")
        await expect(completed).to_have_text("2", timeout=TIMEOUT_MS)
        assert len(lists) == 1, lists
        await page.close()


async def test_an_answer_for_older_filters_never_replaces_a_newer_one(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=1, workflow_id="echo-1")
    e2e_workflows.FLAKY["fail"] = True
    await sqlite_db.start_workflow(e2e_workflows.Pay, workflow_id="pay-1")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):

        async def pay_1_failed() -> bool:
            return (await sqlite_db.get_workflow("pay-1").status()).value == "FAILED"

        await eventually(pay_1_failed, 10, what="pay-1 to fail")
        page = await browser.new_page()
        await page.goto(base + "/")
        rows = page.locator("#workflows tbody tr")
        await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
        answered: list[str] = []

        async def slow_completed(route: Any) -> None:
            # The answer for COMPLETED comes after the one for FAILED, asked for later.
            if "status=COMPLETED" in route.request.url:
                await asyncio.sleep(1.5)
            try:
                response = await route.fetch()
                await route.fulfill(response=response)
                answered.append(route.request.url)
            except Exception:
                pass  # the page gave up on this request

        await page.route(re.compile(r".*/api/workflows\?.*"), slow_completed)
        await page.select_option("#filter-status", "COMPLETED")
        await page.click("#filters button")
        await page.select_option("#filter-status", "FAILED")
        await page.click("#filters button")
        await expect(rows).to_have_count(1, timeout=TIMEOUT_MS)
        await expect(rows.first).to_have_attribute("data-id", "pay-1")
        await page.wait_for_timeout(2000)  # past the slow answer's arrival
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-id", "pay-1")
        await expect(page).to_have_url(base + "/?status=FAILED")
        await page.close()


async def test_every_script_module_is_served_as_javascript_and_writes_no_html(
    sqlite_db: loom.Database,
) -> None:
    app = create_app(database=sqlite_db, token="s3cret-token")
    modules = sorted(p.name for p in (Path(loom.__file__).parent / "web" / "static").glob("*.js"))
    assert "app.js" in modules and len(modules) > 3
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for name in modules:
            response = await http.get(f"/static/{name}")  # no token: modules hold no data
            assert response.status_code == 200, name
            assert response.headers["content-type"].startswith("text/javascript"), name
            for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
                assert banned not in response.text, (name, banned)
            for imported in re.findall(r'from "\./([\w.]+)"', response.text):
                assert imported in modules, (name, imported)
        for page in ("/", "/workflows/x"):
            html = (await http.get(page, headers={"Authorization": "Bearer s3cret-token"})).text
            assert '<script type="module" src="/static/app.js"></script>' in html


async def test_a_parent_lists_its_children_and_each_child_links_back(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    handle = await sqlite_db.start_workflow(e2e_workflows.Batch, workflow_id="batch-1")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        await handle.result(timeout=15)
        page = await browser.new_page()
        await page.goto(base + "/workflows/batch-1")
        rows = page.locator("#children tbody tr")
        await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
        await expect(rows.first).to_contain_text("batch-1/3")
        await expect(rows.first).to_contain_text("COMPLETED")
        await expect(page.locator("#timeline")).to_be_visible()
        await shot(page, "workflow-children")
        await rows.first.get_by_role("link").click()
        await expect(page.locator("#workflow-id")).to_have_text("batch-1/3", timeout=TIMEOUT_MS)
        parent = page.locator("#summary").get_by_role("link", name="batch-1")
        await expect(parent).to_be_visible(timeout=TIMEOUT_MS)
        await expect(page.locator("#children-section")).to_be_hidden()
        await parent.click()
        await expect(page.locator("#workflow-id")).to_have_text("batch-1", timeout=TIMEOUT_MS)
        await page.close()


async def test_the_runs_of_a_workflow_that_continued_as_new_open_their_histories(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    handle = await sqlite_db.start_workflow(
        e2e_workflows.Countdown, workflow_input=2, workflow_id="countdown"
    )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        await handle.result(timeout=15)
        page = await browser.new_page()
        await page.goto(base + "/workflows/countdown")
        runs = page.locator("#runs > li")
        await expect(runs).to_have_count(3, timeout=TIMEOUT_MS)
        await expect(runs.first).to_contain_text("Run 1 · CONTINUED_AS_NEW")
        await expect(runs.last).to_contain_text("Run 3 · COMPLETED")
        await runs.first.locator("summary").click()
        await expect(runs.first.locator(".run-events")).to_contain_text(
            "WORKFLOW_CONTINUED_AS_NEW", timeout=TIMEOUT_MS
        )
        await shot(page, "workflow-runs")
        await page.close()


async def test_the_list_filters_by_tag_and_creation_time(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    for wid, team in (("tag-ops", "ops"), ("tag-dev", "dev")):
        await sqlite_db.start_workflow(
            e2e_workflows.Echo,
            workflow_input=1,
            workflow_id=wid,
            tags={"team": team, "region": "eu"},
            queue="bulk",
            priority=3,
        )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base:
        page = await browser.new_page()
        # A workflow's page shows its queue, priority and tags; a tag finds those sharing it.
        await page.goto(base + "/workflows/tag-ops")
        summary = page.locator("#summary")
        await expect(summary).to_contain_text("Queuebulk", timeout=TIMEOUT_MS)
        await expect(summary).to_contain_text("Priority3")
        await expect(summary).to_contain_text("region=eu")
        await page.click("#summary a:text('team=ops')")
        rows = page.locator("#workflows tbody tr")
        await expect(rows).to_have_count(1, timeout=TIMEOUT_MS)
        await expect(rows.first).to_contain_text("tag-ops")
        await page.goto(base + "/")
        await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
        await page.fill("#filter-tag", "team=ops")
        await page.click("#filters button[type=submit]")
        await expect(rows).to_have_count(1, timeout=TIMEOUT_MS)
        await expect(rows.first).to_contain_text("tag-ops")
        assert "tag=team%3Dops" in page.url
        await page.fill("#filter-tag", "")
        await page.fill("#filter-from", "2999-01-01T00:00")
        await page.click("#filters button[type=submit]")
        await expect(rows).to_have_count(0, timeout=TIMEOUT_MS)
        await page.close()


async def test_the_list_selects_workflows_and_cancels_then_resets_them(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    ids = [f"sel-{n}" for n in range(3)]
    for wid in ids:
        await sqlite_db.start_workflow(
            e2e_workflows.Approval, workflow_input={"n": 1}, workflow_id=wid, tags={"t": "sel"}
        )
    await sqlite_db.start_workflow(e2e_workflows.Echo, workflow_input=1, workflow_id="other")
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/")
        for wid in ids:
            row = page.locator(f'tr[data-id="{wid}"]')
            await expect(row).to_contain_text("approve", timeout=TIMEOUT_MS)
        # Two checked by hand, cancelled after the confirm dialog.
        await page.check('tr[data-id="sel-0"] input.pick')
        await page.check('tr[data-id="sel-1"] input.pick')
        await expect(page.locator("#bulk-count")).to_have_text("2 selected")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("#bulk-cancel")
        await expect(page.locator("#bulk-result")).to_contain_text("done for 2 of 2")
        await expect(page.locator('tr[data-id="sel-1"]')).to_contain_text(
            "CANCELED", timeout=TIMEOUT_MS
        )
        assert await sqlite_db.get_workflow("sel-2").status() is loom.WorkflowStatus.RUNNING

        # Every workflow the filters match (one tag), reset to a step.
        await page.fill("#filter-tag", "t=sel")
        await page.click("#filters button[type=submit]")
        await expect(page.locator("#workflows tbody tr")).to_have_count(3, timeout=TIMEOUT_MS)
        await page.click("#bulk-all")
        await expect(page.locator("#bulk-count")).to_have_text("All 3 matching workflows selected")
        await page.fill("#bulk-step", "approve")
        await shot(page, "bulk-selection")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("#bulk-reset")
        await expect(page.locator("#bulk-result")).to_contain_text("done for 3 of 3")
        for wid in ids:
            await expect(page.locator(f'tr[data-id="{wid}"]')).to_contain_text(
                "RUNNING", timeout=TIMEOUT_MS
            )
            events = await sqlite_db.get_workflow(wid).events()
            assert [e.payload["to_step"] for e in events if e.type.value == "WORKFLOW_RESET"] == [
                "approve"
            ]
        assert await sqlite_db.get_workflow("other").status() is loom.WorkflowStatus.COMPLETED
        await page.close()


async def test_the_workflow_page_resets_a_workflow_to_the_step_chosen(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    handle = await sqlite_db.start_workflow(
        e2e_workflows.Approval, workflow_input={"n": 2}, workflow_id="to-reset"
    )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base, worker(sqlite_db):
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        await page.goto(base + "/workflows/to-reset")
        await expect(page.locator("#summary")).to_contain_text("approve", timeout=TIMEOUT_MS)
        await handle.signal("approve", "yes")
        await expect(page.locator("#summary")).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
        await page.select_option("#reset-step", "approve")
        await page.fill("#reset-reason", "approved by mistake")
        page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.click("#reset-send")
        await expect(page.locator("#action-result")).to_contain_text("runs again from step")
        await expect(page.locator("#events")).to_contain_text("WORKFLOW_RESET", timeout=TIMEOUT_MS)
        # The approval it had consumed is delivered again, so it runs to the end once more.
        assert (await handle.result(timeout=10))["decision"] == "yes"
        await page.close()
    events = await handle.events()
    [reset] = [e for e in events if e.type.value == "WORKFLOW_RESET"]
    assert reset.payload["to_step"] == "approve"
    after = [e for e in events if e.seq > reset.seq]
    assert [e.payload["step"] for e in after if e.type.value == "STEP_STARTED"] == [
        "approve",
        "settle",
    ]
    assert after[-1].type.value == "WORKFLOW_COMPLETED"


async def test_encrypted_payloads_show_as_encrypted_without_the_key_and_in_full_with_it(
    tmp_path: Path, browser: Any
) -> None:
    from playwright.async_api import expect

    url = f"sqlite:///{tmp_path / 'vault.db'}"
    secret = "card-4111-1111-e2e"
    codec = loom.AesGcmCodec({"k1": loom.AesGcmCodec.generate_key()})
    async with loom.Database(url, codec=codec, placeholders=True) as coded:
        await coded.migrate_up()
        handle = await coded.start_workflow(
            e2e_workflows.Echo, workflow_input={"card": secret}, workflow_id="vault-1"
        )
        async with worker(coded):
            await handle.result(timeout=10)
        async with loom.Database(url, codec="none", placeholders=True) as keyless:
            for database, shown, hidden in (
                (keyless, '"<encrypted>"', secret),
                (coded, secret, "<encrypted>"),
            ):
                app = create_app(database=database, poll_interval=0.05)
                async with serve(app) as base:
                    page = await browser.new_page()
                    await page.goto(base + "/workflows/vault-1")
                    summary = page.locator("#summary")
                    await expect(summary).to_contain_text("COMPLETED", timeout=TIMEOUT_MS)
                    await expect(page.locator("#input")).to_contain_text(shown)
                    await expect(page.locator("#state")).to_contain_text(shown)
                    await expect(page.locator("#events tbody")).to_contain_text("STATE_SET")
                    assert hidden not in await page.locator("main").inner_text()
                    await shot(page, f"encrypted-{'keyless' if database is keyless else 'key'}")
                    await page.close()


async def test_the_queues_page_shows_each_queue_and_sets_its_limits(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    import queue_workload

    for i in range(3):
        await sqlite_db.start_workflow(
            queue_workload.Send, workflow_id=f"mail-{i}", workflow_input={"seconds": 0}
        )
    await sqlite_db.set_queue("emails", concurrency=5)
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base:
        page = await browser.new_page()
        await page.goto(base + "/queues")
        row = page.locator('#queues tbody tr[data-queue="emails"]')
        await expect(row).to_contain_text("emails", timeout=TIMEOUT_MS)
        cells = row.locator("td")
        await expect(cells.nth(1)).to_have_text("3")  # waiting
        await expect(cells.nth(2)).to_have_text("0")  # running
        await expect(cells.nth(3)).to_have_text("5")  # concurrency
        await shot(page, "queues")
        await row.get_by_role("button", name="emails").click()  # fills the form to edit
        await expect(page.locator("#queue-concurrency")).to_have_value("5")
        await page.fill("#queue-concurrency", "2")
        await page.fill("#queue-rate", "100/m")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#queue-result")).to_contain_text("Saved emails")
        await expect(cells.nth(4)).to_have_text("0 of 100/m", timeout=TIMEOUT_MS)
        assert [(q.concurrency, str(q.rate)) for q in await sqlite_db.queue_limits()] == [
            (2, "100/m")
        ]
        await page.fill("#queue-rate", "lots")
        await page.get_by_role("button", name="Save").click()
        await expect(page.locator("#queue-result")).to_contain_text("not a rate")
        await page.close()


async def test_the_schedules_page_shows_next_and_recent_runs_and_steers_a_schedule(
    sqlite_db: loom.Database, browser: Any
) -> None:
    from playwright.async_api import expect

    await sqlite_db.create_schedule(
        "hourly-hold", schedule_workflows.Hold, cron="0 * * * *", overlap="buffer_one"
    )
    app = create_app(database=sqlite_db, poll_interval=0.05)
    async with serve(app) as base:
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
        await page.goto(base + "/schedules")
        row = page.locator('#schedules tr[data-name="hourly-hold"]')
        await expect(row).to_contain_text("active", timeout=TIMEOUT_MS)
        await expect(row).to_contain_text("cron 0 * * * *")
        await row.get_by_role("link", name="hourly-hold").click()
        detail = page.locator("#schedule-detail")
        await expect(detail).to_contain_text("buffer_one", timeout=TIMEOUT_MS)
        await expect(page.locator("#schedule-upcoming li")).to_have_count(5)
        await expect(page.locator("#schedule-no-runs")).to_be_visible()

        await row.get_by_role("button", name="Trigger").click()
        await expect(page.locator("#schedules-note")).to_contain_text(
            "started schedule:hourly-hold:", timeout=TIMEOUT_MS
        )
        runs = page.locator("#schedule-runs tbody tr")
        await expect(runs).to_have_count(1, timeout=TIMEOUT_MS)
        await expect(runs.first).to_contain_text("RUNNING")
        [run] = (await sqlite_db.describe_schedule("hourly-hold")).recent_runs
        await expect(row).to_contain_text(run.workflow_id)  # the last run, linked

        await row.get_by_role("button", name="Pause").click()
        await expect(row).to_contain_text("paused", timeout=TIMEOUT_MS)
        await expect(page.locator("#schedule-upcoming")).to_contain_text("none while paused")
        assert (await sqlite_db.get_schedule("hourly-hold")).paused
        await shot(page, "schedules")
        await row.get_by_role("button", name="Resume").click()
        await expect(row).to_contain_text("active", timeout=TIMEOUT_MS)
        await expect(page.locator("#schedule-upcoming li")).to_have_count(5)
        assert not (await sqlite_db.get_schedule("hourly-hold")).paused

        await runs.first.get_by_role("link").click()
        await expect(page.locator("#workflow-id")).to_have_text(run.workflow_id, timeout=TIMEOUT_MS)
        await page.goto(base + "/schedules?schedule=hourly-hold")
        await expect(page.locator("#schedule-runs tbody tr")).to_have_count(1, timeout=TIMEOUT_MS)
        await row.get_by_role("button", name="Delete").click()
        await expect(page.locator("#schedules-empty")).to_be_visible(timeout=TIMEOUT_MS)
        await expect(page.locator("#schedule-detail")).to_be_hidden()
        with pytest.raises(loom.ScheduleNotFoundError):
            await sqlite_db.get_schedule("hourly-hold")
        assert await sqlite_db.get_workflow(run.workflow_id).status() is loom.WorkflowStatus.RUNNING
        await page.close()
