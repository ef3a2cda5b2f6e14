"""Workflows of the default queue whose activities run on queue "gpu": for the tests of
routing (an activity runs on a worker serving its queue). Each activity says where it ran: the
name of the thread (a worker's sync activities run on threads named after the worker) and the
process."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import loom

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]

seen: dict[str, list[str]] = {}
"""What the async activities of this process saw, by workflow id (a test reads it)."""


@loom.activity(name="routing_render", queue="gpu", retry_count=3, retry_delay=0.05)
def render(frame: int, fail_times: int = 0) -> dict[str, Any]:
    """Fails its first ``fail_times`` attempts; says where and in which attempt it ran."""
    info = loom.activity_info()
    if info.attempt <= fail_times:
        raise RuntimeError(f"flaky attempt {info.attempt}")
    return {
        "frame": frame,
        "thread": threading.current_thread().name,
        "pid": os.getpid(),
        "attempt": info.attempt,
        "step": info.step,
    }


@loom.activity(name="routing_prepare")
def prepare(frame: int) -> dict[str, Any]:
    """An activity of the default queue: it runs where its workflow runs."""
    return {"frame": frame, "thread": threading.current_thread().name}


@loom.workflow(name="routing_Render")
class Render(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Prepares on its own queue, renders on queue "gpu"."""

    @loom.step
    async def run(self, ctx: Ctx) -> None:
        frame = int(ctx.input.get("frame", 1))
        await ctx.state.set("prepared", await ctx.activity(prepare, frame))
        await ctx.state.set(
            "rendered", await ctx.activity(render, frame, int(ctx.input.get("fail_times", 0)))
        )


@loom.activity(name="routing_hold", queue="gpu", timeout_seconds=30)
async def hold(seconds: float) -> dict[str, Any]:
    """Holds a gpu slot for ``seconds``, beating; records a cancel it sees."""
    info = loom.activity_info()
    log = seen.setdefault(info.workflow_id, [])
    log.append("started")
    started = time.time()
    try:
        while time.time() - started < seconds:
            loom.heartbeat({"at": time.time() - started})
            await asyncio.sleep(0.02)
    except (asyncio.CancelledError, loom.ActivityCancelledError):
        log.append("canceled")
        raise
    log.append("ended")
    return {"start": started, "end": time.time(), "pid": os.getpid()}


@loom.activity(name="routing_stuck", queue="gpu", timeout_seconds=0.3)
async def stuck() -> None:
    """Runs past its timeout."""
    await asyncio.sleep(30)


@loom.workflow(name="routing_Hold")
class Hold(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("held", await ctx.activity(hold, float(ctx.input.get("seconds", 0.2))))


@loom.workflow(name="routing_Stuck")
class Stuck(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.activity(stuck)


@loom.workflow(name="routing_Withdraw")
class Withdraw(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Gives up on a long gpu activity after a short sleep."""

    @loom.step
    async def run(self, ctx: Ctx) -> None:
        task = asyncio.ensure_future(ctx.activity(hold, 30.0))
        await ctx.sleep(float(ctx.input.get("patience", 0.3)))
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            await ctx.state.set("gave_up", True)


@loom.activity(name="routing_echo", queue="gpu", retry_count=1, retry_delay=0.01)
def echo(text: str) -> dict[str, Any]:
    """Fails its first attempt with ``text`` in the message; then returns it."""
    if loom.activity_info().attempt == 1:
        raise ValueError(f"not yet: {text}")
    return {"echo": text}


@loom.workflow(name="routing_Echo")
class Echo(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("echo", await ctx.activity(echo, str(ctx.input["text"])))


@loom.activity(name="routing_resume", queue="gpu", retry_count=1, retry_delay=0.01)
def resume() -> dict[str, Any]:
    """Records progress and fails; its retry starts from that progress."""
    info = loom.activity_info()
    if info.attempt == 1:
        loom.heartbeat({"done": 3})
        raise RuntimeError("failed after 3")
    return {"from": info.heartbeat_details, "thread": threading.current_thread().name}


@loom.workflow(name="routing_Resume")
class Resume(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def run(self, ctx: Ctx) -> None:
        await ctx.state.set("resumed", await ctx.activity(resume))
