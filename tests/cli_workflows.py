"""Workflows the CLI tests run through `loom worker -m cli_workflows` and the other commands.

Every workflow and activity name starts with ``cli_`` so that the default registry never sees
two classes with one name. ``cli_traced`` appends a start and an end line, stamped with the
process id and the time, to ``<trace dir>/<pid>.log``: the tests read these files to prove that
no activity execution overlapped another execution of the same call.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import loom


def _trace(trace_dir: str, line: str) -> None:
    with open(Path(trace_dir) / f"{os.getpid()}.log", "a", encoding="utf-8") as f:
        f.write(f"{line} {os.getpid()} {time.time():.6f}\n")


@loom.activity(name="cli_traced", timeout_seconds=60)
async def traced(trace_dir: str, workflow_id: str, call: int, pause: float) -> int:
    _trace(trace_dir, f"start {workflow_id} {call}")
    await asyncio.sleep(pause)
    _trace(trace_dir, f"end {workflow_id} {call}")
    return call


@loom.workflow(name="cli_Pipeline")
class Pipeline(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """prepare (one activity), work (two activities at once), finish (state only)."""

    @loom.step(name="prepare")
    async def prepare(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        trace, pause = ctx.input["trace"], ctx.input.get("pause", 0.0)
        await ctx.state.set(
            "prepared", await ctx.activity(traced, trace, ctx.workflow_id, 1, pause)
        )

    @loom.step(name="work")
    async def work(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        trace, pause = ctx.input["trace"], ctx.input.get("pause", 0.0)
        results = await asyncio.gather(
            ctx.activity(traced, trace, ctx.workflow_id, 2, pause),
            ctx.activity(traced, trace, ctx.workflow_id, 3, pause),
        )
        await ctx.state.set("worked", sorted(results))

    @loom.step(name="finish")
    async def finish(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("done", True)


@loom.workflow(name="cli_Approval")
class Approval(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Waits for the ``cli_approve`` signal and records its payload."""

    @loom.step(name="request")
    async def request(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("requested_by", ctx.input["who"])

    @loom.step(name="await_approval")
    async def await_approval(
        self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]
    ) -> None:
        await ctx.state.set("approval", await ctx.wait_for_signal("cli_approve"))

    @loom.query
    def requester(self, ctx: loom.QueryContext[dict[str, Any], dict[str, Any]]) -> Any:
        return {"who": ctx.state.get("requested_by"), "approval": ctx.state.get("approval")}

    @loom.query
    def greeting(
        self, ctx: loom.QueryContext[dict[str, Any], dict[str, Any]], text: str, times: int = 1
    ) -> list[str]:
        if times < 0:
            raise ValueError(f"times must be >= 0, got {times}")
        return [f"{text}, {ctx.input['who']}"] * times


class MissingFlagError(Exception):
    pass


@loom.activity(name="cli_count_call")
def count_call(path: str) -> int:
    with open(path, "a", encoding="utf-8") as f:
        f.write("call\n")
    return len(Path(path).read_text(encoding="utf-8").splitlines())


@loom.activity(name="cli_require_flag", non_retryable=(MissingFlagError,))
def require_flag(path: str) -> str:
    if not Path(path).exists():
        raise MissingFlagError(f"flag file {path} is missing")
    return Path(path).read_text(encoding="utf-8").strip()


@loom.workflow(name="cli_Flaky")
class Flaky(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """Step ``count`` always succeeds; step ``check`` fails until the flag file exists."""

    @loom.step(name="count")
    async def count(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("calls", await ctx.activity(count_call, ctx.input["counter"]))

    @loom.step(name="check")
    async def check(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("flag", await ctx.activity(require_flag, ctx.input["flag"]))


@loom.workflow(name="cli_Slow")
class Slow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """One long activity (``pause`` seconds), then a short one."""

    @loom.step(name="slow")
    async def slow(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        trace, pause = ctx.input["trace"], ctx.input["pause"]
        await ctx.activity(traced, trace, ctx.workflow_id, 1, pause)

    @loom.step(name="after")
    async def after(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.activity(traced, ctx.input["trace"], ctx.workflow_id, 2, 0.0)
        await ctx.state.set("finished", True)


@loom.activity(name="cli_replay_charge")
async def replay_charge(amount: int) -> str:
    return f"charged {amount}"


@loom.workflow(name="cli_Replay")
class Replay(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """The original code of the workflow whose changed version ``loom replay`` must catch."""

    @loom.step(name="charge")
    async def charge(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("receipt", await ctx.activity(replay_charge, ctx.input["amount"]))


@loom.activity(name="cli_beating", timeout_seconds=60)
def beating(flag: str) -> int:
    """Heartbeats how far it got until the flag file exists."""
    done = 0
    while not Path(flag).exists():
        done += 1
        loom.heartbeat({"done": done})
        time.sleep(0.02)
    return done


@loom.workflow(name="cli_Beating")
class Beating(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """One long activity that heartbeats until the ``flag`` file exists."""

    @loom.step(name="crunch")
    async def crunch(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("done", await ctx.activity(beating, ctx.input["flag"]))
