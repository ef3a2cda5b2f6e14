"""Keeping workflow code durable: what a step may not do, caught where it happens.

A step must wait only on durable calls. One left waiting on something no event can complete (a
bare future, an ``asyncio.Event``, a condition nothing can make true) fails with
:class:`~loom.errors.WorkflowSandboxError` instead of hanging; one that spins without waiting
fails with it too instead of holding the worker; one that returns while work it started is
pending fails with :class:`~loom.errors.UnawaitedCallError`. These checks run after every
delivery, on replay as live, so they decide the same way both times.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loom.core import loop as loop_module
from loom.core.execution_state import ExecutionState
from loom.core.loop import DeterministicLoop
from loom.definitions import activity_definition
from loom.errors import LoomError, UnawaitedCallError, WorkflowSandboxError


class Sandbox(ExecutionState):
    """The checks that keep a step's code on durable calls (mixed into the execution)."""

    def _run_code(self) -> None:
        """Run the workflow code until idle; fail a step stuck on something not durable.

        The code is stuck when nothing is runnable, it has not finished, and no durable call
        is pending: no event Loom could deliver would ever wake it. The futures it waits on
        are failed with WorkflowSandboxError, raised where they are awaited in the step.
        """
        self._run_until_idle()
        while self._check_conditions():
            self._run_until_idle()
        for _ in range(100):  # a step may catch the error and get stuck again
            if self.finished or self._pending or self._main.done():
                return
            if self._conditions and self.definition.signal_handlers:
                return  # a signal's handler may make the condition true
            waiting = {id(f) for _, f in self._conditions}
            stuck = [(f, a) for f, a in _stuck_futures(self._loop) if id(f) not in waiting]
            if not stuck and self._conditions:
                for _, future in self._conditions:
                    future.set_exception(
                        WorkflowSandboxError(
                            f"step {self.current_step!r} of workflow {self.workflow_id!r} waits "
                            "until a condition that nothing can make true: no durable call is "
                            "pending and the workflow has no @loom.signal handler to change "
                            "its state"
                        )
                    )
                self._conditions = []
                self._run_until_idle()
                continue
            if not stuck:
                break
            for future, awaited in stuck:
                future.set_exception(
                    WorkflowSandboxError(
                        f"step {self.current_step!r} of workflow {self.workflow_id!r} awaits "
                        f"{awaited}, which nothing durable can complete: Loom neither records "
                        "nor replays it, so the step would wait forever; use "
                        "`await ctx.activity(fn, ...)` for I/O and threads, "
                        "`await ctx.sleep(...)` to wait, and "
                        "`await ctx.wait_for_signal(name)` to wait for the outside world"
                    )
                )
            self._run_until_idle()
        if not (self.finished or self._pending or self._main.done()):
            self._finish_failed(
                WorkflowSandboxError(
                    f"step {self.current_step!r} of workflow {self.workflow_id!r} keeps waiting "
                    "on something that is not durable; use ctx.activity, ctx.sleep and "
                    "ctx.wait_for_signal"
                ),
                step=self.current_step,
            )

    def _check_conditions(self) -> bool:
        """Resolve the waits whose condition now holds; True if any did. A condition that
        raises fails its wait with the error."""
        if not self._conditions:
            return False
        kept, resolved = [], False
        for condition, future in self._conditions:
            if future.done():
                continue
            try:
                holds = bool(condition())
            except Exception as exc:
                future.set_exception(exc)
                resolved = True
                continue
            if holds:
                future.set_result(None)
                resolved = True
            else:
                kept.append((condition, future))
        self._conditions = kept
        return resolved

    def _run_until_idle(self) -> None:
        """Run the code until idle; a step that spins instead fails with WorkflowSandboxError.

        Spinning (``while not done: await asyncio.sleep(0)``) would hold the worker's thread,
        and every workflow on it, forever. Its tasks are cancelled, and the step's failure is
        recorded as the sandbox error, not as a cancellation.
        """
        if self._loop.run_until_idle():
            return
        self._spinning = WorkflowSandboxError(
            f"step {self.current_step!r} of workflow {self.workflow_id!r} ran "
            f"{loop_module.SPIN_LIMIT} callbacks without waiting on anything durable: it is "
            "spinning (e.g. a loop around asyncio.sleep(0) polling for a change), which would "
            "hold the worker forever; wait "
            "with `await ctx.sleep(...)` or `await ctx.wait_for_signal(name)` instead"
        )
        self._tearing_down = True
        for task in self._loop.pending_tasks():
            task.cancel()
        if not self._loop.run_until_idle() and not self.finished:
            self._finish_failed(self._spinning, step=self.current_step)  # it ignored the cancel

    def _detach_abandoned(self, step: str) -> None:
        """Children started with the "abandon" policy that the step did not await run on by
        themselves: the step stops waiting for them (nothing is recorded)."""
        for seq, pending in list(self._pending.items()):
            if pending.abandon and pending.step == step:
                self._detached.add(seq)
                del self._pending[seq]
                if pending.task is not None:
                    pending.task.cancel()

    async def _let_cancelled_tasks_end(self) -> None:
        """A step that cancels a task (the loser of a race) may return before that task has
        run its cancellation; let it run, so the withdrawal is recorded within the step."""
        for _ in range(1000):
            if not any(t.cancelling() for t in self._loop.pending_tasks() if t is not self._main):
                return
            await asyncio.sleep(0)

    def _check_step_settled(self, step: str) -> None:
        orphans = [task for task in self._loop.take_tasks() if not task.done()]
        if orphans or any(p.step == step for p in self._pending.values()):
            what = ", ".join([_describe_task(t) for t in orphans] + [self._waiting_on()])
            for task in orphans:  # they must not run on, into the next step's history
                task.cancel()
            raise UnawaitedCallError(
                f"step {step!r} of workflow {self.workflow_id!r} returned while work it started "
                f"was still pending ({what.removesuffix(', nothing')}); await every "
                "ctx.activity, ctx.sleep and ctx.wait_for_signal, and every task created with "
                "asyncio.create_task, within the step that makes it"
            )


def _stuck_futures(loop: DeterministicLoop) -> list[tuple[asyncio.Future[Any], str]]:
    """(future, what awaits it) for every plain future a pending task of ``loop`` waits on.

    Tasks and ``gather`` futures are skipped: they complete when what they wait on does.
    """
    found = []
    for task in loop.pending_tasks():
        waiter = getattr(task, "_fut_waiter", None)
        if (
            isinstance(waiter, asyncio.Future)
            and not isinstance(waiter, asyncio.Task)
            and not waiter.done()
            and type(waiter).__name__ != "_GatheringFuture"
        ):
            found.append((waiter, loop_module.awaited(task)))
    return found


def _describe_task(task: asyncio.Task[Any]) -> str:
    """``a task running ctx.activity('charge')`` or ``a task running helper()``."""
    coro: Any = task.get_coro()
    name = getattr(coro, "__qualname__", None) or task.get_name()
    frame = getattr(coro, "cr_frame", None)
    if name == "WorkflowContext.activity" and frame is not None:
        fn = frame.f_locals.get("fn")
        try:
            activity = activity_definition(fn).name
        except LoomError:
            activity = getattr(fn, "__name__", "?")
        return f"a task running ctx.activity({activity!r})"
    return f"a task running {name}()"
