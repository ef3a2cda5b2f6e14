"""Loom definitions used by the benchmark; top level so the worker can import them by name."""

from __future__ import annotations

from typing import Any

import loom


@loom.activity(name="noop")
async def noop(i: int) -> int:
    return i


@loom.workflow(name="Bench3")
class Bench3(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Three no-op activities in a row: the unit of work of every workload."""

    @loom.step
    async def run(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.activity(noop, 1)
        await ctx.activity(noop, 2)
        await ctx.activity(noop, 3)
