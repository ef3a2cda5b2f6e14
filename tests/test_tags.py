"""Tags and time ranges: finding the workflow you need by an index, not a scan, on both
backends."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest

import loom
from loom.store.encoded import EncodedStore
from loom.store.sql import SqlStore

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.workflow(name="tag_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def only(self, ctx: Ctx) -> None:
        await ctx.state.set("ok", True)


async def test_workflows_are_found_by_their_tags_and_creation_time(db: loom.Database) -> None:
    a = await db.start_workflow(Order, workflow_id="a", tags={"customer": "c-42", "tier": "gold"})
    b = await db.start_workflow(Order, workflow_id="b", tags={"customer": "c-42"})
    await db.start_workflow(Order, workflow_id="c", tags={"customer": "c-7"})
    await db.start_workflow(Order, workflow_id="d")
    assert await a.tags() == {"customer": "c-42", "tier": "gold"}
    assert await db.get_workflow("d").tags() == {}

    def ids(rows: list[Any]) -> list[str]:
        return sorted(r.workflow_id for r in rows)

    assert ids(await db.list_workflows(tags={"customer": "c-42"})) == ["a", "b"]
    assert ids(await db.list_workflows(tags={"customer": "c-42", "tier": "gold"})) == ["a"]
    assert ids(await db.list_workflows(tags={"customer": "nobody"})) == []
    created_b = (await b.describe()).created
    after = await db.list_workflows(created_after=created_b)
    assert ids(after) == ["b", "c", "d"]
    assert ids(await db.list_workflows(created_before=created_b)) == ["a"]
    everything = await db.list_workflows(created_before=datetime.now(UTC).replace(year=2999))
    assert ids(everything) == ["a", "b", "c", "d"]
    # Idempotent start: the same id and input again keeps the first tags.
    again = await db.start_workflow(Order, workflow_id="a", tags={"customer": "other"})
    assert await again.tags() == {"customer": "c-42", "tier": "gold"}


@pytest.mark.parametrize(
    ("tags", "error"),
    [
        ({"k": 1}, "values are strings"),
        ({"": "v"}, "tag key"),
        ({"k": "a\nb"}, "tag 'k'"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 tags"),
    ],
    ids=["not a string", "empty key", "control character", "too many"],
)
async def test_bad_tags_are_refused_before_anything_is_stored(
    db: loom.Database, tags: Any, error: str
) -> None:
    with pytest.raises(loom.LoomError, match=error):
        await db.start_workflow(Order, workflow_id="bad", tags=tags)
    with pytest.raises(loom.WorkflowNotFoundError):
        await db.get_workflow("bad").describe()


async def test_a_tag_filter_reads_an_index(
    db: loom.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(300):
        await db.start_workflow(Order, workflow_id=f"w{i}", tags={"customer": f"c-{i % 100}"})
    assert isinstance(db.store, EncodedStore)  # tags pass through the codec layer, plain
    store = db.store.inner
    assert isinstance(store, SqlStore)
    seen: list[tuple[str, tuple[Any, ...]]] = []
    rows = SqlStore._rows

    async def capture(self: SqlStore, sql: str, *args: Any) -> Any:
        seen.append((sql, args))
        return await rows(self, sql, *args)

    monkeypatch.setattr(SqlStore, "_rows", capture)
    found = await db.list_workflows(tags={"customer": "c-7"}, limit=10)
    assert sorted(r.workflow_id for r in found) == ["w107", "w207", "w7"]
    monkeypatch.undo()
    [(sql, args)] = [s for s in seen if "workflow_tags" in s[0]]
    if store.dialect == "sqlite":
        plan = " ".join(
            str(tuple(r)) for r in await store._rows(f"EXPLAIN QUERY PLAN {sql}", *args)
        )
        assert "workflow_tags" in plan and "SCAN workflow_tags" not in plan, plan
    else:
        # PostgreSQL reads a small table whole whatever its indexes: give it a realistic one.
        await store._rows(
            "WITH t AS (INSERT INTO workflow_tags (workflow_id, key, value) SELECT 'x' || g, "
            "'customer', 'x-' || g FROM generate_series(1, 50000) AS g RETURNING 1) "
            "SELECT COUNT(*) FROM t"
        )
        await store._rows("ANALYZE workflow_tags")
        await store._rows("ANALYZE workflows")
        plan = " ".join(r[0] for r in await store._rows(f"EXPLAIN {sql}", *args))
        assert "workflow_tags_pkey" in plan, plan
        assert "Seq Scan on workflow_tags" not in plan, plan


async def test_the_cli_and_the_api_filter_by_tag(db: loom.Database) -> None:
    import httpx

    from loom.web.app import create_app

    await db.start_workflow(Order, workflow_id="t1", tags={"customer": "c-1"})
    await db.start_workflow(Order, workflow_id="t2", tags={"customer": "c-2"})
    app = create_app(database=db, poll_interval=0.05)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1"
    ) as client:
        listed = (await client.get("/api/workflows", params={"tag": "customer=c-1"})).json()
        assert [w["workflow_id"] for w in listed["workflows"]] == ["t1"]
        detail = (await client.get("/api/workflows/t1")).json()
        assert detail["tags"] == {"customer": "c-1"}
        bad = await client.get("/api/workflows", params={"tag": "no-equals-sign"})
        assert bad.status_code == 422 and "key=value" in bad.text
        since = time.time() + 3600
        later = await client.get("/api/workflows", params={"created_after": since})
        assert later.json()["workflows"] == []


async def test_loom_start_and_list_take_tags(db: loom.Database, db_url: str, tmp_path: Any) -> None:
    import asyncio
    import json
    import subprocess
    import sys
    from pathlib import Path

    module = tmp_path / "tag_flows.py"
    module.write_text(
        "import loom\n\n\n@loom.workflow(name='tag_Cli')\nclass C(loom.Workflow[dict, dict]):\n"
        "    @loom.step\n    async def s(self, ctx):\n        pass\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "LOOM_DATABASE_URL": db_url,
        "LOOM_MODULES": "tag_flows",
        "PYTHONPATH": str(tmp_path),
    }
    loom_cmd = str(Path(sys.executable).parent / "loom")

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            [loom_cmd, *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )

    started = await cli("start", "tag_Cli", "--id", "x1", "--tag", "team=ops", "-t", "env=prod")
    assert started.returncode == 0, started.stderr
    await cli("start", "tag_Cli", "--id", "x2", "--tag", "team=dev")
    listed = await cli("list", "--tag", "team=ops", "--json")
    assert [row["workflow_id"] for row in json.loads(listed.stdout)] == ["x1"]
    shown = json.loads((await cli("inspect", "x1", "--json")).stdout)
    assert shown["tags"] == {"env": "prod", "team": "ops"}
    refused = await cli("list", "--tag", "oops")
    assert refused.returncode != 0 and "key=value" in refused.stderr
