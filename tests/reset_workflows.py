"""Workflows the reset tests run: a three-step order, a signal collector and a parent of a child.

Every name starts with ``reset_`` so the default registry never sees two classes with one name.
``CALLS`` counts the executions of each step's activity per workflow, which is how the tests
see which steps ran again; ``BROKEN`` holds the ids of the workflows whose ``ship`` fails.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

CALLS: Counter[tuple[str, str]] = Counter()
BROKEN: set[str] = set()
INTERRUPTED: set[str] = set()
STEPS = ["charge", "reserve", "ship"]


@loom.activity(name="reset_work")
async def work(workflow_id: str, step: str) -> str:
    CALLS[workflow_id, step] += 1
    if step == "ship" and workflow_id in BROKEN:
        raise RuntimeError("the carrier is down")
    return f"{step}-{CALLS[workflow_id, step]}"


@loom.activity(name="reset_block", timeout_seconds=120)
async def block(workflow_id: str) -> str:
    """Runs for a minute the first time (unless interrupted), at once after that."""
    CALLS[workflow_id, "block"] += 1
    if CALLS[workflow_id, "block"] == 1:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            INTERRUPTED.add(workflow_id)
            raise
    return "unblocked"


def _logged(step: str) -> Any:
    return lambda log: [*(log or []), step]


@loom.workflow(name="reset_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """charge, reserve, ship: each runs one activity and appends its name to ``log``; ``ship``
    waits for a ``go`` signal first when the input says ``wait``, and runs ``block`` first when
    it says ``hold``."""

    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        await ctx.state.set("charge", await ctx.activity(work, ctx.workflow_id, "charge"))
        await ctx.state.update(log=_logged("charge"))

    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        await ctx.state.set("reserve", await ctx.activity(work, ctx.workflow_id, "reserve"))
        await ctx.state.update(log=_logged("reserve"))

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        if (ctx.input or {}).get("wait"):
            await ctx.state.set("go", await ctx.wait_for_signal("go"))
        if (ctx.input or {}).get("hold"):
            await ctx.activity(block, ctx.workflow_id)
        await ctx.state.set("ship", await ctx.activity(work, ctx.workflow_id, "ship"))
        await ctx.state.update(log=_logged("ship"))


@loom.workflow(name="reset_Collector")
class Collector(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Takes one ``item`` signal per step; ``ping`` signals are counted by a handler."""

    @loom.signal("ping")
    async def ping(self, ctx: Ctx, payload: Any) -> None:
        await ctx.state.update(pings=lambda n: (n or 0) + 1)

    @loom.step
    async def first(self, ctx: Ctx) -> None:
        await ctx.state.set("first", await ctx.wait_for_signal("item"))

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        await ctx.state.set("second", await ctx.wait_for_signal("item"))
        await ctx.state.set("pings_seen", ctx.state.get("pings", 0))


@loom.workflow(name="reset_Child")
class Child(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.state.set("got", await ctx.wait_for_signal("release"))


@loom.workflow(name="reset_Parent")
class Parent(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Starts one child and waits for its end."""

    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", True)

    @loom.step
    async def spawn(self, ctx: Ctx) -> None:
        handle = ctx.start_child(Child, {})
        await ctx.state.set("child", handle.workflow_id)
        await ctx.state.set("result", await handle)


@loom.workflow(name="reset_Renewal")
class Renewal(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Bills a month, continues as new for the next (two runs in all), then notifies."""

    @loom.step
    async def bill(self, ctx: Ctx) -> None:
        month = ctx.input["month"]
        await ctx.state.set("bill", await ctx.activity(work, ctx.workflow_id, f"bill-{month}"))
        if month < 2:
            await ctx.continue_as_new({"month": month + 1})

    @loom.step
    async def notify(self, ctx: Ctx) -> None:
        await ctx.state.set("notify", await ctx.activity(work, ctx.workflow_id, "notify"))


@loom.workflow(name="reset_Rounds")
class Rounds(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Takes a ``next`` signal, waits for ``more``, and continues as new once: both runs write
    histories of the same length."""

    @loom.step
    async def first(self, ctx: Ctx) -> None:
        await ctx.state.set("got", await ctx.wait_for_signal("next"))

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("more")
        if not (ctx.input or {}).get("round"):
            await ctx.continue_as_new({"round": 1})
