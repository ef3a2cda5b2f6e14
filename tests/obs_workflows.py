"""Workflows the observability tests run in `loom worker` and `loom web` processes
(``-m obs_workflows``): an order whose charge fails once and is retried, one that fails, and
one that waits for a signal (each logs through ``ctx.logger`` and ``loom.activity_logger``); and
one whose second activity hangs until its worker is killed (``obs_traced`` traces it)."""

from __future__ import annotations

import collections
import os
import time
from pathlib import Path
from typing import Any

import loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]
_tries: collections.Counter[str] = collections.Counter()


class Refused(Exception):
    pass


@loom.activity(name="obs_charge", retry_count=1, retry_delay=0.01)
async def charge(order: str) -> str:
    _tries[order] += 1
    loom.activity_logger.info("charging %s", order)
    if _tries[order] == 1:
        raise ConnectionError("the card service is down")
    return f"ch-{order}"


@loom.activity(name="obs_refuse", non_retryable=(Refused,))
def refuse() -> None:
    raise Refused("refused")


@loom.workflow(name="obs_Order")
class Order(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def pay(self, ctx: Ctx) -> None:
        ctx.logger.info("paying")
        await ctx.state.set("charge", await ctx.activity(charge, ctx.workflow_id))


@loom.workflow(name="obs_Broken")
class Broken(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def fail(self, ctx: Ctx) -> None:
        await ctx.activity(refuse)


@loom.workflow(name="obs_Wait")
class Wait(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def wait(self, ctx: Ctx) -> None:
        await ctx.wait_for_signal("go")


@loom.activity(name="obs_prepare")
async def prepare(order: str) -> str:
    return f"prepared {order}"


@loom.activity(name="obs_hang")
def hang(marker: str) -> str:
    """The first run hangs, with ``marker`` written, until its process is killed; a run that
    finds the marker (the one after the takeover) returns at once."""
    path = Path(marker)
    if not path.exists():
        path.write_text(str(os.getpid()))
        time.sleep(120)
    return "shipped"


@loom.workflow(name="obs_Crash")
class Crash(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        await ctx.state.set("prepared", await ctx.activity(prepare, ctx.workflow_id))

    @loom.step
    async def ship(self, ctx: Ctx) -> None:
        await ctx.state.set("shipped", await ctx.activity(hang, ctx.input["marker"]))
