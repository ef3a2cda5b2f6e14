"""Workflows for the task-queue tests: each one holds a slot of its queue for a while and says
when (wall-clock times and the process), so a test can count how many ran at once."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


@loom.activity(name="queue_hold")
async def hold(seconds: float) -> dict[str, Any]:
    started = time.time()
    await asyncio.sleep(seconds)
    return {"start": started, "end": time.time(), "pid": os.getpid()}


@loom.workflow(name="queue_Send", queue="emails")
class Send(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Runs on queue "emails" unless a start names another."""

    @loom.step
    async def send(self, ctx: Ctx) -> None:
        await ctx.state.set("held", await ctx.activity(hold, ctx.input.get("seconds", 0.2)))


@loom.workflow(name="queue_Report")
class Report(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Runs on the default queue."""

    @loom.step
    async def build(self, ctx: Ctx) -> None:
        await ctx.state.set("held", await ctx.activity(hold, ctx.input.get("seconds", 0.0)))


@loom.activity(name="queue_call_api", queue="api")
async def call_api(seconds: float) -> dict[str, Any]:
    """Counts against queue "api", whatever the queue of the workflow calling it."""
    return await hold(seconds)


@loom.workflow(name="queue_Fetch")
class Fetch(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Runs on the default queue; its activity runs on queue "api"."""

    @loom.step
    async def fetch(self, ctx: Ctx) -> None:
        await ctx.state.set("held", await ctx.activity(call_api, ctx.input.get("seconds", 0.2)))


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of ``(start, end)`` spans that overlap at one instant."""
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = most = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        now += step
        most = max(most, now)
    return most
