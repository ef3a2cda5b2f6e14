"""A deployment's new code: ``procver_Deploy`` version 2 beside the version 1 it still serves
(the runs that started on it stay on it)."""

from __future__ import annotations

from typing import Any

import loom
from version_v1 import Ctx, DeployV1, where

__all__ = ["DeployV1", "DeployV2"]


@loom.workflow(name="procver_Deploy", version="2")
class DeployV2(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def only(self, ctx: Ctx) -> None:
        await ctx.state.set("first_pid", await ctx.activity(where))
        await ctx.state.set("version", "2")
