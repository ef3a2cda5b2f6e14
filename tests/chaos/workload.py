"""The chaos workflow and its activities, imported by ``loom worker -m chaos.workload``.

``chaos_Mixed`` runs, in six steps: a flaky activity with retries; two or three activities at
once with ``asyncio.gather``; a durable timer and (for some seeds) a race between a wait for a
signal nobody sends and a timer, which the timer must win (the wait is withdrawn); a loop that
collects the workflow's "go" signals, each wait with a timeout, until it holds every one of them;
a charge that may fail for good and be compensated (or, for some seeds, fail the workflow); and
a last activity and a child workflow that continues as new once. Some of its activities (a
quarter of them, chosen by the seed) run on queue "chaos-remote", which only some worker
processes serve (chaos.driver): the others dispatch them as activity tasks. What it does is a pure
function of the seed in its input (chaos.plan), so the checker knows how it must end.

Every activity execution appends ``start``/``end`` lines (with the process id and the time) to
the workflow's own execution log, outside Loom: the checker counts real executions with it,
and a flaky activity counts its earlier executions there to know whether to fail.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from pathlib import Path
from typing import Any

import loom
from chaos.plan import CHARGE_ATTEMPTS, WORK_ATTEMPTS, mix, plan_for

Ctx = loom.WorkflowContext[dict[str, Any], dict[str, Any]]


class Flaky(Exception):
    """A failure worth retrying."""


class Declined(Exception):
    """A failure no retry can fix (non-retryable)."""


def log_path(logdir: str, workflow_id: str) -> Path:
    return Path(logdir) / f"{workflow_id}.log"


def record(logdir: str, workflow_id: str, what: str, label: str) -> None:
    """Append one line to the workflow's execution log: one write with O_APPEND, safe across
    processes."""
    path = log_path(logdir, workflow_id)
    line = f"{what} {label} {os.getpid()} {time.time():.6f}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def executions_before(logdir: str, workflow_id: str, label: str) -> int:
    """How many executions of ``label`` began before this one (this one's line excluded)."""
    try:
        text = log_path(logdir, workflow_id).read_text()
    except FileNotFoundError:
        return 0
    return sum(1 for line in text.splitlines() if line.split()[:2] == ["start", label])


WORK_RETRIES: dict[str, Any] = {
    "retry_count": WORK_ATTEMPTS - 1,
    "timeout_seconds": 20,
    "retry_delay": 0.05,
    "retry_backoff": 1.5,
}


@loom.activity(name="chaos_work", **WORK_RETRIES)
async def chaos_work(
    logdir: str, workflow_id: str, label: str, value: int, fail_first: int, delay_ms: int
) -> int:
    """Fails its first ``fail_first`` executions, then returns ``mix(label, value)``."""
    earlier = executions_before(logdir, workflow_id, label)
    record(logdir, workflow_id, "start", label)
    await asyncio.sleep(delay_ms / 1000)  # the work takes a while: kills land in the middle
    record(logdir, workflow_id, "end", label)
    if earlier < fail_first:
        raise Flaky(f"{label}: execution {earlier + 1} of {fail_first} planned failures")
    return mix(label, value)


REMOTE_QUEUE = "chaos-remote"
loom.queue(REMOTE_QUEUE, concurrency=6)


@loom.activity(name="chaos_remote_work", queue=REMOTE_QUEUE, **WORK_RETRIES)
async def chaos_remote_work(
    logdir: str, workflow_id: str, label: str, value: int, fail_first: int, delay_ms: int
) -> int:
    """``chaos_work`` on queue "chaos-remote": a worker that does not serve it dispatches the
    attempt as an activity task, which a worker of that queue claims and runs."""
    return await chaos_work(logdir, workflow_id, label, value, fail_first, delay_ms)


@loom.activity(
    name="chaos_charge",
    retry_count=CHARGE_ATTEMPTS - 1,
    timeout_seconds=20,
    retry_delay=0.05,
    retry_backoff=1.0,
    non_retryable=(Declined,),
)
async def chaos_charge(logdir: str, workflow_id: str, mode: str, total: int) -> int:
    record(logdir, workflow_id, "start", "charge")
    await asyncio.sleep(0.02)
    record(logdir, workflow_id, "end", "charge")
    if mode in ("declined", "fatal"):
        raise Declined(f"card declined ({mode})")
    if mode == "exhausted":
        raise Flaky("payment service unavailable")
    return mix("charge", total)


@loom.activity(name="chaos_refund", timeout_seconds=20)
def chaos_refund(logdir: str, workflow_id: str, total: int) -> int:
    """A plain ``def`` activity: Loom runs it in a thread."""
    record(logdir, workflow_id, "start", "refund")
    record(logdir, workflow_id, "end", "refund")
    return mix("refund", total)


async def _work(ctx: Ctx, label: str, value: int) -> int:
    plan = plan_for(int(ctx.input["seed"]))
    return await ctx.activity(
        chaos_remote_work if label in plan.remote else chaos_work,
        ctx.input["logdir"],
        ctx.workflow_id,
        label,
        value,
        plan.fail_first[label],
        plan.delay_ms[label],
    )


@loom.workflow(name="chaos_Mixed")
class ChaosMixed(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def prepare(self, ctx: Ctx) -> None:
        plan = plan_for(int(ctx.input["seed"]))
        await ctx.state.set("prep", await _work(ctx, "prep", plan.base))

    @loom.step
    async def fan_out(self, ctx: Ctx) -> None:
        plan = plan_for(int(ctx.input["seed"]))
        prep = ctx.state["prep"]
        results = await asyncio.gather(*(_work(ctx, f"fan{i}", prep + i) for i in range(plan.fan)))
        await ctx.state.set("fan", list(results))
        await ctx.state.update(total=lambda total: (total or 0) + sum(results))

    @loom.step
    async def nap(self, ctx: Ctx) -> None:
        plan = plan_for(int(ctx.input["seed"]))
        await ctx.sleep(plan.nap)
        await ctx.state.update(naps=lambda naps: (naps or 0) + 1)
        if plan.probe_timeout is not None:
            # A race: the wait for a signal nobody sends loses to a timer and is withdrawn.
            never = asyncio.ensure_future(ctx.wait_for_signal("never"))
            timer = asyncio.ensure_future(ctx.sleep(plan.probe_timeout))
            await asyncio.wait([never, timer], return_when=asyncio.FIRST_COMPLETED)
            for loser in (never, timer):
                loser.cancel()
            await ctx.state.set(
                "probe", "signalled" if never.done() and not never.cancelled() else "timed out"
            )

    @loom.step
    async def collect(self, ctx: Ctx) -> None:
        """Wait for every "go" signal: the driver sends each token until one send is accepted,
        so a workflow that gives up lost an accepted signal. It gives up after ``patience``
        seconds' worth of timeouts: counted, not timed, so a worker that runs it late cannot make
        it give up early (the next wait after a late timeout receives what is buffered)."""
        plan = plan_for(int(ctx.input["seed"]))
        got: dict[int, int] = {}
        timeouts_left = math.ceil(float(ctx.input["patience"]) / plan.signal_timeout)
        while len(got) < plan.signals and timeouts_left > 0:
            try:
                payload = await ctx.wait_for_signal("go", timeout=plan.signal_timeout)
            except TimeoutError:
                timeouts_left -= 1
                continue
            got[int(payload["token"])] = int(payload["value"])
        await ctx.state.set("tokens", sorted(got))
        await ctx.state.set("signal_sum", sum(got.values()))

    @loom.step
    async def charge(self, ctx: Ctx) -> None:
        plan = plan_for(int(ctx.input["seed"]))
        logdir, total = ctx.input["logdir"], ctx.state["total"]
        try:
            charged = await ctx.activity(chaos_charge, logdir, ctx.workflow_id, plan.charge, total)
        except loom.ActivityFailedError as exc:
            if plan.charge == "fatal":
                raise  # not compensated: the workflow fails
            refund = await ctx.activity(chaos_refund, logdir, ctx.workflow_id, total)
            await ctx.state.set(
                "compensated", {"why": exc.error_type, "attempts": exc.attempts, "refund": refund}
            )
        else:
            await ctx.state.set("charged", charged)

    @loom.step
    async def finish(self, ctx: Ctx) -> None:
        await ctx.state.set("seal", await _work(ctx, "seal", ctx.state["total"]))
        tally = await ctx.child(ChaosTally, {"total": ctx.state["total"]})
        await ctx.state.set("tally", tally["tally"])


@loom.workflow(name="chaos_Tally")
class ChaosTally(loom.Workflow[dict[str, Any], dict[str, Any]]):
    """The child of the last step: it continues as new once, and its second run answers."""

    @loom.step
    async def count(self, ctx: Ctx) -> None:
        if "tally" not in ctx.input:
            await ctx.continue_as_new({"tally": mix("tally", int(ctx.input["total"]))})
        await ctx.state.set("tally", ctx.input["tally"])
