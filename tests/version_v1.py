"""A deployment's old code: workflow ``procver_Deploy`` at version 1 only (the rolling-deploy
test runs `loom worker -m version_v1` beside a worker of :mod:`version_v2`)."""

from __future__ import annotations

import os
from typing import Any

import loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.activity(name="procver_where")
async def where() -> int:
    """The process that ran the attempt."""
    return os.getpid()


@loom.workflow(name="procver_Deploy", version="1")
class DeployV1(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def first(self, ctx: Ctx) -> None:
        await ctx.state.set("first_pid", await ctx.activity(where))
        if ctx.input.get("wait"):
            await ctx.wait_for_signal("go")

    @loom.step
    async def second(self, ctx: Ctx) -> None:
        await ctx.state.set("second_pid", await ctx.activity(where))
        await ctx.state.set("version", "1")
