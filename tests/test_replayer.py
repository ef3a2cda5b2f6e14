"""Exported histories and ``loom.testing.Replayer``: a run exported from a real database (both
backends) replays against the code that made it; changed code raises the very
``NonDeterminismError`` a worker records; runs that continued as new, children, the dashboard's
download and the golden folder recipe; documents that are not histories are refused by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import codec_workflows
import golden_workflows as gw
import loom
from loom import EventType, NonDeterminismError, WorkflowStatus
from loom.testing import Replayer, WorkflowEnvironment
from loom.web import create_app
from support import eventually

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
GOLDEN = Path(__file__).parent / "golden"


@loom.activity(name="rpl_reserve")
async def reserve(item: str) -> str:
    return f"held-{item}"


@loom.activity(name="rpl_charge")
async def charge(item: str) -> str:
    return f"paid-{item}"


@loom.workflow(name="rpl_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        await ctx.state.set("hold", await ctx.activity(reserve, ctx.input["item"]))
        await ctx.sleep(seconds=3600)

    @loom.step
    async def confirm(self, ctx: Ctx) -> None:
        await ctx.state.set("by", await ctx.wait_for_signal("confirm"))


# The same workflow after an edit that changes a recorded decision: it charges before it waits
# for the confirmation. Registered apart, as the edited module would be in a later deploy.
EDITED = loom.Registry()


@loom.workflow(name="rpl_Order", registry=EDITED)
class EditedOrder(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        await ctx.state.set("hold", await ctx.activity(reserve, ctx.input["item"]))
        await ctx.sleep(seconds=3600)

    @loom.step
    async def confirm(self, ctx: Ctx) -> None:
        await ctx.state.set("paid", await ctx.activity(charge, ctx.input["item"]))
        await ctx.state.set("by", await ctx.wait_for_signal("confirm"))


@loom.workflow(name="rpl_Renewal")
class Renewal(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def month(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=30 * 86_400)
        await ctx.state.set("month", ctx.input["month"])
        if ctx.input["month"] < 2:
            await ctx.continue_as_new({"month": ctx.input["month"] + 1})


@loom.workflow(name="rpl_Parent")
class Parent(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def delegate(self, ctx: Ctx) -> None:
        child = await ctx.child(Renewal, {"month": 2}, workflow_id=f"{ctx.workflow_id}-child")
        await ctx.state.set("child", child)


async def waiting_for_signal(handle: loom.WorkflowHandle[Any]) -> bool:
    record = await handle.describe()
    events = await handle.events()
    return not record.leased and events[-1].type is EventType.SIGNAL_WAIT_STARTED


async def test_an_exported_history_replays_against_the_code_that_made_it(
    db_url: str, tmp_path: Path
) -> None:
    async with WorkflowEnvironment(db_url) as env:
        handle = await env.start_workflow(Order, workflow_input={"item": "lamp"})
        await eventually(lambda: waiting_for_signal(handle))
        running = await handle.export_history()
        await handle.signal("confirm", "ann")
        state = await handle.result(timeout=30)
        record = await handle.describe()
        document = await handle.export_history()

    assert {k: v for k, v in document.items() if k != "events"} == {
        "format": "loom-history",
        "format_version": 1,
        "workflow": "rpl_Order",
        "version": "1.0.0",
        "workflow_id": record.workflow_id,
        "run_id": record.run_id,
        "status": "COMPLETED",
    }
    path = tmp_path / "order.json"
    path.write_text(json.dumps(document))
    replayed = Replayer([Order]).replay(path)
    assert (replayed.status, replayed.state) == (WorkflowStatus.COMPLETED, state)
    assert replayed.events == len(document["events"])

    # A history exported while the workflow waits replays as far as it goes.
    assert running["status"] == "RUNNING"
    assert Replayer(Order).replay(running).status is WorkflowStatus.RUNNING


async def test_changed_code_raises_the_error_the_worker_records(db_url: str) -> None:
    async with WorkflowEnvironment(db_url) as env:
        handle = await env.start_workflow(Order, workflow_input={"item": "desk"})
        await eventually(lambda: waiting_for_signal(handle))
        document = await handle.export_history()

    with pytest.raises(NonDeterminismError) as raised:
        Replayer([EditedOrder]).replay(document)
    message = str(raised.value)
    assert "rpl_charge" in message and "confirm" in message

    # The edited code deployed: a worker that picks the workflow up fails it with that message.
    async with WorkflowEnvironment(db_url, registry=EDITED) as edited:
        again = edited.get_workflow(handle.workflow_id)
        await again.signal("confirm", "bob")
        with pytest.raises(loom.WorkflowFailedError):
            await again.result(timeout=30)
        [failed] = [e for e in await again.events() if e.type is EventType.WORKFLOW_FAILED]
    assert failed.payload["error"]["type"] == "NonDeterminismError"
    assert failed.payload["error"]["message"] == message


async def test_runs_that_continued_as_new_and_children_export_and_replay(db_url: str) -> None:
    async with WorkflowEnvironment(db_url) as env:
        parent = await env.start_workflow(Parent, workflow_id="rpl-parent")
        assert await parent.result(timeout=30) == {"child": {"month": 2}}
        renewal = await env.start_workflow(Renewal, workflow_input={"month": 1})
        assert await renewal.result(timeout=30) == {"month": 2}
        runs = await renewal.runs()
        first = await renewal.export_history(runs[0].run_id)
        current = await renewal.export_history()
        child = await env.get_workflow("rpl-parent-child").export_history()
        parent_doc = await parent.export_history()
        with pytest.raises(loom.ConfigurationError, match="no run 'r-404'"):
            await renewal.export_history("r-404")

    assert [first["run_id"], current["run_id"]] == [r.run_id for r in runs]
    assert first["events"][-1]["type"] == "WORKFLOW_CONTINUED_AS_NEW"
    assert first["events"][0]["payload"]["input"] == {"month": 1}
    assert current["events"][0]["payload"]["input"] == {"month": 2}
    replayer = Replayer([Parent, Renewal])
    for document in (first, current, child, parent_doc):
        assert replayer.replay(document).status is WorkflowStatus.COMPLETED
    assert any(e["type"] == "CHILD_WORKFLOW_COMPLETED" for e in parent_doc["events"])


async def test_the_dashboard_downloads_the_history(db: loom.Database) -> None:
    handle = await db.start_workflow(Order, workflow_input={"item": "chair"}, workflow_id="a b/c")
    await db.default_worker().run_once()
    transport = httpx.ASGITransport(app=create_app(database=db, poll_interval=0.05))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get("/api/workflows/a%20b%2Fc/history.json")
        missing = await client.get("/api/workflows/nope/history.json")
        bad_run = await client.get("/api/workflows/a%20b%2Fc/history.json?run_id=r-9")
        page = await client.get("/workflows/a%20b%2Fc")
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"] == 'attachment; filename="a_b_c.history.json"'
    assert response.json() == await handle.export_history()
    assert Replayer([Order]).replay(response.json()).workflow_id == "a b/c"
    assert missing.status_code == 404
    assert bad_run.status_code == 422 and "no run 'r-9'" in bad_run.text
    assert 'id="download-history"' in page.text


def test_a_folder_of_golden_histories_replays_in_ci() -> None:
    """The recipe of the README: keep exported histories in a folder and replay them all."""
    replayer = Replayer(
        [
            gw.GoldenOrder,
            gw.GoldenBooking,
            gw.GoldenEscalation,
            gw.GoldenHousehold,
            gw.GoldenChore,
            gw.GoldenProcurement,
            gw.GoldenSubscription,
        ]
    )
    replayed = replayer.replay_all(GOLDEN, "[bhe]*.json")  # booking, household, escalation
    assert [r.name for r in replayed] == ["golden_Booking", "golden_Escalation", "golden_Household"]
    assert replayer.replay(GOLDEN / "order.json").status is WorkflowStatus.COMPLETED

    # A history whose version no class given has: the worker would not run it either.
    with pytest.raises(loom.UnknownWorkflowTypeError) as unknown:
        replayer.replay(GOLDEN / "procurement_v0_no_cool_off.json")
    assert "0.9.0" in str(unknown.value)
    # An old recording replayed by the current code of its version, which now differs.
    recorded = json.loads((GOLDEN / "procurement_v0_no_cool_off.json").read_text())
    recorded["events"][0]["payload"]["version"] = "1.0.0"
    with pytest.raises(NonDeterminismError):
        replayer.replay(recorded)


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ([], "replay() takes a file path, a parsed history or an ExportedHistory, got list"),
        ({"events": 3}, "'events' must be a non-empty list"),
        ({"format": "other", "events": []}, "its format is 'other'"),
        ({"format_version": 9, "events": []}, "history format 9, newer than"),
        ({"workflow_id": "w", "events": []}, "'events' must be a non-empty list"),
        ({"workflow_id": "w", "events": [{"seq": 1}]}, "events[0].type None is not an event"),
        (
            {
                "workflow_id": "w",
                "events": [{"seq": 2, "type": "WORKFLOW_STARTED", "payload": {}, "created_at": 1}],
            },
            "events[0] has seq 2, expected 1",
        ),
        (
            {
                "workflow_id": "w",
                "events": [{"seq": 1, "type": "TIMER_FIRED", "payload": {}, "created_at": 1}],
            },
            "the first event is TIMER_FIRED",
        ),
        (
            {
                "events": [
                    {
                        "seq": 1,
                        "type": "WORKFLOW_STARTED",
                        "payload": {"name": "rpl_Order"},
                        "created_at": 1,
                    }
                ]
            },
            "'workflow_id' must be a string, got null",
        ),
    ],
)
def test_what_is_not_a_history_is_refused_by_name(document: Any, problem: str) -> None:
    with pytest.raises(loom.HistoryFormatError) as raised:
        Replayer(Order).replay(document)
    assert problem in str(raised.value)


def test_files_that_cannot_be_read_are_named(tmp_path: Path) -> None:
    with pytest.raises(loom.HistoryFormatError, match="cannot read the history"):
        Replayer(Order).replay(tmp_path / "missing.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    with pytest.raises(loom.HistoryFormatError, match=r"garbage\.json' is not JSON"):
        Replayer(Order).replay(garbage)
    with pytest.raises(loom.HistoryFormatError, match="no history matching"):
        Replayer(Order).replay_all(tmp_path / "empty")
    with pytest.raises(loom.UnknownWorkflowTypeError) as unknown:
        Replayer(Renewal).replay(GOLDEN / "order.json")
    assert "Replayer([..., golden_Order])" in "\n".join(unknown.value.__notes__)


async def test_a_history_encrypted_in_the_database_is_exported_decoded(db_url: str) -> None:
    async with loom.Database(db_url, codec=codec_workflows.chain()) as db:
        await db.migrate_up()
        handle = await db.start_workflow(Order, workflow_input={"item": "MARK-vase"})
        await db.default_worker().run_once()
    # What the CLI and the dashboard open: displays read placeholders, the export reads strictly.
    async with loom.Database(db_url, codec=codec_workflows.chain(), placeholders=True) as shown:
        document = await shown.get_workflow(handle.workflow_id).export_history()
    assert document["events"][0]["payload"]["input"] == {"item": "MARK-vase"}
    assert Replayer(Order).replay(document).state == {"hold": "held-MARK-vase"}
    wrong = codec_workflows.chain({"k1": codec_workflows.KEY_OTHER})
    async with loom.Database(db_url, codec=wrong, placeholders=True) as keyless:
        with pytest.raises(loom.PayloadDecodeError):
            await keyless.get_workflow(handle.workflow_id).export_history()
