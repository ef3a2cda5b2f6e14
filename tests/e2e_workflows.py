"""Workflows the browser tests drive. Every workflow and activity name starts with ``e2e_``."""

from __future__ import annotations

import asyncio
from typing import Any

import loom

Ctx = loom.WorkflowContext[Any, dict[str, Any]]
QCtx = loom.QueryContext[Any, dict[str, Any]]

FLAKY = {"fail": True}
"""While ``fail`` is true, ``e2e_flaky_call`` raises: a test flips it before retrying."""


@loom.activity(name="e2e_double")
async def double(n: int) -> int:
    return n * 2


@loom.activity(name="e2e_flaky_call")
def flaky_call() -> str:
    if FLAKY["fail"]:
        try:
            raise ConnectionRefusedError("connection refused by pay.example:443")
        except ConnectionRefusedError as exc:
            raise RuntimeError("the payment service is down") from exc
    return "paid"


@loom.workflow(name="e2e_Approval")
class Approval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Doubles an amount, waits for an approval signal, then settles."""

    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]))

    @loom.step
    async def approve(self, ctx: Ctx) -> None:
        await ctx.state.set("decision", await ctx.wait_for_signal("approve"))

    @loom.step
    async def settle(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=0.05)
        await ctx.state.set("settled", True)

    @loom.query
    def doubled(self, ctx: QCtx) -> Any:
        return ctx.state.get("doubled")

    @loom.query(name="plus ?#%")
    def plus(self, ctx: QCtx, n: int) -> int:
        """The doubled amount plus n."""
        if n < 0:
            raise ValueError("n must not be negative")
        return int(ctx.state["doubled"]) + n


@loom.workflow(name="e2e_Echo")
class Echo(loom.Workflow[Any, dict[str, Any]]):
    @loom.step
    async def echo(self, ctx: Ctx) -> None:
        await ctx.state.set("echo", ctx.input)


@loom.workflow(name="e2e_Pay")
class Pay(loom.Workflow[Any, dict[str, Any]]):
    @loom.step
    async def reserve(self, ctx: Ctx) -> None:
        await ctx.state.set("reserved", True)

    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        await ctx.state.set("charge", await ctx.activity(flaky_call))


@loom.workflow(name="e2e_Batch")
class Batch(loom.Workflow[Any, dict[str, Any]]):
    """Starts two Echo children and keeps their final states."""

    @loom.step
    async def fan_out(self, ctx: loom.WorkflowContext[Any, dict[str, Any]]) -> None:
        states = await asyncio.gather(*(ctx.start_child(Echo, n) for n in (1, 2)))
        await ctx.state.set("children", states)


@loom.workflow(name="e2e_Countdown")
class Countdown(loom.Workflow[Any, dict[str, Any]]):
    """Continues as new until its input reaches zero."""

    @loom.step
    async def tick(self, ctx: loom.WorkflowContext[Any, dict[str, Any]]) -> None:
        await ctx.state.set("left", ctx.input)
        if ctx.input > 0:
            await ctx.continue_as_new(ctx.input - 1)
