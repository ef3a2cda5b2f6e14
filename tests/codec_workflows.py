"""Workflows of the payload codec tests (``test_codecs.py``, ``-m codec_workflows`` for the CLI).

Every value a workflow is given or makes holds a *marker*, a string found nowhere else, so a
test can scan what the database holds (``support.stored``) for each one: none may be there in
plain text once a codec encrypts the payloads. Names start with ``codec_``, so the default
registry never sees two classes with one name.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import loom
from loom import EventType
from loom.payload_codecs import AesGcmCodec, CodecChain, CompressionCodec

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

KEY_1 = AesGcmCodec.generate_key()
KEY_2 = AesGcmCodec.generate_key()
KEY_OTHER = AesGcmCodec.generate_key()


def chain(keys: dict[str, str] | None = None, *, errors: bool = True) -> CodecChain:
    """Compress (every payload, however small, so both codecs always run), then encrypt."""
    return CodecChain(
        CompressionCodec(min_size=0), AesGcmCodec(keys or {"k1": KEY_1}), errors=errors
    )


MARK = {
    name: f"MARK-{name}-\u00fcn\u00efc\u00f8d\u00e9-5b1e"
    for name in (
        "card",
        "address",
        "initial",
        "kwarg",
        "result",
        "error",
        "signal",
        "parcel",
        "next_run",
        "reason",
        "failure",
        "heartbeat",
        "progress",
    )
}
"""One marker per kind of payload (non-ASCII, as stored unescaped in UTF-8)."""

_attempts: dict[str, int] = {}
"""Attempts of ``codec_flaky`` by workflow id, in this process (``forget_attempts`` clears)."""

release: dict[str, asyncio.Event] = collections.defaultdict(asyncio.Event)
"""Set by a test to let ``codec_progress`` of that workflow id end (``forget_attempts`` clears)."""


def forget_attempts() -> None:
    _attempts.clear()
    release.clear()


@loom.activity(name="codec_charge")
async def charge(card: str, memo: str = "") -> dict[str, Any]:
    return {"receipt": f"{card}/{MARK['result']}", "memo": memo}


FLAKY_DETAILS = {"at": MARK["heartbeat"]}


@loom.activity(name="codec_flaky", retry_count=1, retry_delay=0.2)
async def flaky(workflow_id: str) -> int:
    """Heartbeats, then fails its first attempt; the second must get the details back. The
    retry delay parks the workflow between attempts, so the second runs in a new claim and
    reads the (encoded) details from the database."""
    _attempts[workflow_id] = _attempts.get(workflow_id, 0) + 1
    if _attempts[workflow_id] == 1:
        loom.heartbeat(FLAKY_DETAILS)
        raise ValueError(f"declined: {MARK['error']}")
    got = loom.activity_info().heartbeat_details
    if got != FLAKY_DETAILS:
        raise RuntimeError(f"the retry got the heartbeat details {got!r}")
    return _attempts[workflow_id]


@loom.activity(name="codec_refused")
async def refused(card: str) -> None:
    raise ValueError(f"card refused: {card}")


@loom.workflow(name="codec_Ship")
class Ship(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        await ctx.state.set("parcel", f"{ctx.input['address']}/{MARK['parcel']}")


@loom.workflow(name="codec_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Every kind of payload: input and state, activity arguments (positional and keyword),
    results, a failed attempt's error and heartbeat details (handed to its retry), a state
    update, a signal, a child's input and result, and a continue-as-new with the next run's
    input and state."""

    @loom.step
    async def order(self, ctx: Ctx) -> None:
        if ctx.input.get("round", 0) == 0:
            receipt = await ctx.activity(charge, ctx.input["card"], memo=MARK["kwarg"])
            await ctx.state.set("receipt", receipt)
            await ctx.state.update(tries=lambda n: (n or 0) + 1)
            await ctx.state.set("attempts", await ctx.activity(flaky, ctx.workflow_id))
            await ctx.state.set("approval", await ctx.wait_for_signal("approve"))
            await ctx.state.set("shipped", await ctx.child(Ship, {"address": ctx.input["address"]}))
            await ctx.continue_as_new(
                {**ctx.input, "round": 1, "note": MARK["next_run"]},
                initial_state=ctx.state.to_dict(),
            )
        await ctx.state.set("second_run", ctx.input["note"])

    @loom.query
    def receipt(self, ctx: loom.QueryContext[dict[str, Any], dict[str, Any]]) -> Any:
        return ctx.state.get("receipt")


ORDER_INPUT = {"card": MARK["card"], "address": MARK["address"]}
ORDER_STATE = {"note": MARK["initial"]}
ORDER_RESULT = {
    "note": MARK["initial"],
    "receipt": {"receipt": f"{MARK['card']}/{MARK['result']}", "memo": MARK["kwarg"]},
    "tries": 1,
    "attempts": 2,
    "approval": {"by": MARK["signal"]},
    "shipped": {"parcel": f"{MARK['address']}/{MARK['parcel']}"},
    "second_run": MARK["next_run"],
}


@loom.workflow(name="codec_Refused")
class Refused(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Fails: its activity raises with the card in its message."""

    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        await ctx.activity(refused, ctx.input["card"])


@loom.workflow(name="codec_Waiting")
class Waiting(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Keeps its input in its state and waits for a signal."""

    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.state.set("kept", ctx.input)
        await ctx.state.set("got", await ctx.wait_for_signal("go"))


@loom.activity(name="codec_progress", timeout_seconds=60)
async def progress(workflow_id: str) -> str:
    """Heartbeats its progress, then holds until the test releases it."""
    loom.heartbeat({"done": MARK["progress"]})
    await release[workflow_id].wait()
    return "released"


@loom.workflow(name="codec_Progress")
class Progress(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Runs one long activity whose heartbeat details hold a marker."""

    @loom.step
    async def crunch(self, ctx: Ctx) -> None:
        await ctx.state.set("outcome", await ctx.activity(progress, ctx.workflow_id))


async def waits_for_signal(handle: loom.WorkflowHandle[Any]) -> bool:
    """The workflow waits for a signal, parked (no worker holds it)."""
    record = await handle.describe()
    if record.leased:
        return False
    return any(e.type is EventType.SIGNAL_WAIT_STARTED for e in await handle.events())
