"""The web API keeps the promises of its OpenAPI document: schemathesis generates requests for
every operation from /openapi.json (valid and invalid ones alike) and checks that none gets a
500, and that every response's status code, content type, headers and body are those the
document declares. Bounded and deterministic: a fixed number of examples per operation, no
example database, derandomized; both backends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

import loom
import web_workflows
from loom.web import create_app
from support import eventually_sync, pg

pytestmark = pytest.mark.slow  # hundreds of generated requests

EXAMPLES = 25
STREAM_EXAMPLES = 8
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


def _prepare(url: str) -> None:
    async def go() -> None:
        async with loom.Database(url) as db:
            await db.migrate_up()
            await db.start_workflow(
                web_workflows.Approval, workflow_input={"n": 1}, workflow_id="a"
            )
            await db.start_workflow(web_workflows.Echo, workflow_input=1, workflow_id="b/events")
            while await loom.run_once(db):
                pass

    asyncio.run(go())


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if request.param == "postgres":
        pg.require_pg()
        url = pg.create_database()
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('schema') / 'loom.db'}"
    _prepare(url)
    app = create_app(url, poll_interval=0.02, heartbeat=0.02, stream_lifetime=0.05)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error", lifespan="on")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()

    def started() -> bool:
        assert thread.is_alive(), "the server did not start"
        return served.started

    eventually_sync(started, 20, what="the server to start", interval=0.01)
    port = served.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        served.should_exit = True
        thread.join(10)
        if request.param == "postgres":
            pg.drop_database(url)


def test_every_operation_keeps_its_documented_contract(server: str, tmp_path: Path) -> None:
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 11
    seen: dict[str, set[int]] = {}
    for operation in operations:
        streams = operation.path.endswith("/stream")

        @settings(
            max_examples=STREAM_EXAMPLES if streams else EXAMPLES,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = case.call_and_validate(base_url=server, checks=CHECKS, timeout=10)
            seen.setdefault(case.operation.label, set()).add(response.status_code)

        check()
    assert len(seen) == len(operations), seen
