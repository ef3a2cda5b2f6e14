"""The workflow of the scale-out proof, imported by ``loom worker -m scaleout_workload``.

``scaleout_Three`` runs three activities, one per step (a plain ``def`` activity: Loom runs
it in a thread). Every execution of an activity appends
``<workflow id> <call>`` to ``<trace dir>/<pid>.log``, a record kept outside Loom that tells
the test which worker process ran what, and how many times.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import loom


@loom.activity(name="scaleout_record")
def record(trace_dir: str, workflow_id: str, call: int) -> int:
    with open(Path(trace_dir) / f"{os.getpid()}.log", "a", encoding="utf-8") as f:
        f.write(f"{workflow_id} {call}\n")
    return call * 10


@loom.workflow(name="scaleout_Three")
class Three(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Three recorded activities in three steps; the state keeps each result."""

    @loom.step
    async def first(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("a", await ctx.activity(record, ctx.input["trace"], ctx.input["id"], 1))

    @loom.step
    async def second(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("b", await ctx.activity(record, ctx.input["trace"], ctx.input["id"], 2))

    @loom.step
    async def third(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("c", await ctx.activity(record, ctx.input["trace"], ctx.input["id"], 3))
