"""Mistakes the type checker must catch (each line marked ``# expect-error``)."""

from __future__ import annotations

import loom
from loom.core.context import WorkflowContext
from loom.schemas.state import Input, State


class In(Input):
    n: int


class St(State):
    total: int | None


@loom.activity(name="typing_double")
async def double(n: int) -> int:
    return n * 2


@loom.workflow(name="typing_Misuse")
class Misuse(loom.Workflow[In, St]):
    @loom.step
    async def only(self, ctx: WorkflowContext[In, St]) -> None:
        await ctx.activity(double, "not an int")  # expect-error
        _text: str = await ctx.activity(double, 1)  # expect-error
        await ctx.activity(double, 1, 2)  # expect-error

    @loom.query
    async def peek(self, ctx: loom.QueryContext[In, St]) -> int:
        await ctx.activity(double, 1)  # expect-error
        return ctx.input["n"]


async def start() -> None:
    await Misuse.start({"wrong_key": 1})  # expect-error
