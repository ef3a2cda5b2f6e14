"""Workflows the schedule tests run, in process and through `loom worker -m schedule_workflows`.

Every workflow name starts with ``sched_``. ``sched_Tick`` records the slot it was started for
(read from its own id) and ends at once; ``sched_Hold`` runs until it is sent ``release``, so a
test decides when a run ends (overlap policies).
"""

from __future__ import annotations

from typing import Any

import loom

Ctx = loom.WorkflowContext[Any, dict[str, Any]]


@loom.workflow(name="sched_Tick")
class Tick(loom.Workflow[Any, dict[str, Any]]):
    @loom.step
    async def tick(self, ctx: Ctx) -> None:
        await ctx.state.set("input", ctx.input)
        await ctx.state.set("id", ctx.workflow_id)


@loom.workflow(name="sched_Hold")
class Hold(loom.Workflow[Any, dict[str, Any]]):
    @loom.step
    async def hold(self, ctx: Ctx) -> None:
        await ctx.state.set("released_by", await ctx.wait_for_signal("release"))


@loom.workflow(name="sched_Mail", queue="sched-mail")
class Mail(loom.Workflow[Any, dict[str, Any]]):
    """Declared on a queue of its own: its scheduled runs must go there."""

    @loom.step
    async def send(self, ctx: Ctx) -> None:
        await ctx.state.set("id", ctx.workflow_id)
