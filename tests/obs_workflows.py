"""Workflows the observability tests run in `loom worker` and `loom web` processes
(``-m obs_workflows``): an order whose charge fails once and is retried, one that fails, and
one that waits for a signal. Each logs through ``ctx.logger`` and ``loom.activity_logger``."""

from __future__ import annotations

import collections
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
