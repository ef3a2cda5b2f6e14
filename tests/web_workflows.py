"""Workflows the web API tests drive. Every workflow and activity name starts with ``web_``."""

from __future__ import annotations

import threading
import time
from typing import Any

import loom

Ctx = loom.WorkflowContext[Any, dict[str, Any]]
QCtx = loom.QueryContext[Any, dict[str, Any]]

FLAKY = {"fail": True}
"""While ``fail`` is true, ``web_flaky_call`` raises: a test flips it before retrying."""


@loom.activity(name="web_double")
async def double(n: int) -> int:
    return n * 2


@loom.activity(name="web_flaky_call")
def flaky_call() -> str:
    if FLAKY["fail"]:
        raise RuntimeError("the flaky service is down")
    return "ok"


@loom.workflow(name="web_Approval")
class Approval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Doubles a number, waits for an approval signal, then pauses briefly."""

    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        """Compute the amount."""
        await ctx.state.set("doubled", await ctx.activity(double, ctx.input["n"]))

    @loom.step
    async def approve(self, ctx: Ctx) -> None:
        decision = await ctx.wait_for_signal("approve")
        await ctx.state.set("decision", decision)

    @loom.step
    async def finish(self, ctx: Ctx) -> None:
        await ctx.sleep(seconds=0.01)
        await ctx.state.set("done", True)

    @loom.query
    def amount(self, ctx: QCtx) -> Any:
        """The doubled amount, once computed."""
        return ctx.state.get("doubled")

    @loom.query
    def scaled(self, ctx: QCtx, factor: float, *notes: str) -> dict[str, Any]:
        return {"amount": ctx.state["doubled"] * factor, "notes": list(notes)}

    @loom.query(name="events")
    def keys(self, ctx: QCtx) -> list[str]:
        return sorted(ctx.state)

    @loom.query
    def audit(self, ctx: QCtx, what: str) -> Any:
        if what == "nan":
            return float("nan")
        raise ValueError(f"the books do not balance: {what}")


@loom.workflow(name="web_Echo")
class Echo(loom.Workflow[Any, dict[str, Any]]):
    @loom.step
    async def echo(self, ctx: Ctx) -> None:
        await ctx.state.set("echo", ctx.input)


@loom.workflow(name="web_Flaky")
class Flaky(loom.Workflow[Any, dict[str, Any]]):
    @loom.step
    async def call(self, ctx: Ctx) -> None:
        await ctx.state.set("answer", await ctx.activity(flaky_call))


beating_released = threading.Event()


@loom.activity(name="web_beating", timeout_seconds=60)
def beating() -> int:
    """Heartbeats how far it got until ``beating_released`` is set."""
    done = 0
    while not beating_released.is_set():
        done += 1
        loom.heartbeat({"done": done})
        time.sleep(0.01)
    return done


@loom.workflow(name="web_Beating")
class Beating(loom.Workflow[Any, dict[str, Any]]):
    @loom.step(name="crunch")
    async def crunch(self, ctx: Ctx) -> None:
        await ctx.state.set("done", await ctx.activity(beating))
