"""A tiny event loop that runs workflow code deterministically and synchronously.

Workflow code is ordinary ``async`` code (``asyncio.gather`` and ``create_task`` work), but it must
make the same decisions every time it is replayed. Running it on the worker's real loop would mix
its scheduling with unrelated I/O. Instead each workflow gets this loop: callbacks run strictly in
FIFO order and :meth:`run_until_idle` returns as soon as every workflow task is blocked on a
durable call. There is no clock here: ``asyncio.sleep(n)`` and timeouts fail with advice to use
``ctx.sleep``, because a wall clock cannot be replayed; threads, sockets and subprocesses fail the
same way, with advice to use an activity.

The loop also remembers the tasks created since :meth:`DeterministicLoop.take_tasks`, so the
executor can tell when a step returns while a task it started is still pending.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
import contextvars
import os
import weakref
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn, TypeVar

from loom.errors import WorkflowSandboxError

T = TypeVar("T")

SPIN_LIMIT = 250_000
"""Callbacks run between two idle points before the code is judged to spin. A step that fans
out to thousands of activities needs about one per activity; a busy loop gets here within a
second or so."""

_USE_AN_ACTIVITY = (
    "do that inside an activity (`await ctx.activity(fn, ...)`), which runs on the worker and "
    "whose result is recorded"
)


class DeterministicLoop(asyncio.AbstractEventLoop):
    def __init__(self) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._closed = False
        self._errors: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        # Weak references in creation order (cheaper than a WeakValueDictionary, which costs
        # more than the rest of the loop for a short workflow); dead ones are dropped as the
        # list grows, so it stays within twice the tasks alive.
        self._every_task: list[weakref.ref[asyncio.Task[Any]]] = []
        self._prune_at = 64

    # -- what asyncio.Task / Future / gather need -----------------------------------------
    def call_soon(  # type: ignore[override]
        self,
        callback: Callable[..., object],
        *args: Any,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Coroutine[Any, Any, T] | Generator[Any, None, T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[T]:
        task = asyncio.Task(coro, loop=self, name=name, context=context)
        self._tasks.append(task)
        every = self._every_task
        every.append(weakref.ref(task))
        if len(every) >= self._prune_at:
            every[:] = [ref for ref in every if (t := ref()) is not None and not t.done()]
            self._prune_at = max(64, 2 * len(every))
        return task

    def pending_tasks(self) -> list[asyncio.Task[Any]]:
        """Every task of this loop not done, oldest first (a stable order, unlike a set's)."""
        return [t for ref in self._every_task if (t := ref()) is not None and not t.done()]

    def take_tasks(self) -> list[asyncio.Task[Any]]:
        """The tasks created since the last call, oldest first."""
        tasks, self._tasks = self._tasks, []
        return tasks

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._ready.clear()

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # An exception nobody retrieved (e.g. a forgotten task). Kept for diagnostics only.
        self._errors.append(context)

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        self._errors.append(context)

    # -- forbidden: anything that reads a clock or does I/O --------------------------------
    def _no_clock(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise WorkflowSandboxError(
            "workflow code cannot use wall-clock timers (asyncio.sleep(n), wait_for, timeout); "
            "use `await ctx.sleep(...)` or `ctx.wait_for_signal(name, timeout=...)`, which are "
            "durable and replayable, or move the work into an activity"
        )

    call_later = _no_clock  # type: ignore[assignment]
    call_at = _no_clock  # type: ignore[assignment]
    time = _no_clock

    def call_soon_threadsafe(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise WorkflowSandboxError(
            f"workflow code cannot wait on threads or I/O; {_USE_AN_ACTIVITY}"
        )

    def run_in_executor(self, *args: Any, **kwargs: Any) -> NoReturn:  # type: ignore[override]
        raise WorkflowSandboxError(
            "workflow code cannot run functions in threads (asyncio.to_thread, "
            f"loop.run_in_executor): their result is not recorded, so replay cannot repeat it; "
            f"{_USE_AN_ACTIVITY}"
        )

    # -- driving ---------------------------------------------------------------------------
    def run_until_idle(self, limit: int | None = None) -> bool:
        """Run ready callbacks until none is left, with this loop seen as the running loop.

        False if ``limit`` callbacks ran and more are ready: the code is spinning (a loop
        around ``asyncio.sleep(0)``) and would hold the worker's thread forever.
        """
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            ready = self._ready
            for _ in range(SPIN_LIMIT if limit is None else limit):
                if not ready:
                    return True
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
            return not ready
        finally:
            asyncio.events._set_running_loop(previous)


_ASYNCIO_DIR = os.path.dirname(asyncio.__file__)


def awaited(task: asyncio.Task[Any]) -> str:
    """What the innermost coroutine of ``task`` awaits, as ``Event.wait()`` or a future."""
    coro: Any = task.get_coro()
    while True:
        inner = getattr(coro, "cr_await", None)
        if inner is None or not hasattr(inner, "cr_await"):
            break
        coro = inner
    name = getattr(coro, "__qualname__", None) or "?"
    code = getattr(coro, "cr_code", None)
    if code is not None and code.co_filename.startswith(_ASYNCIO_DIR):
        return f"{name}() (asyncio)"
    return f"a bare asyncio future (e.g. loop.create_future()) in {name}()"


def _no_io(name: str) -> Callable[..., NoReturn]:
    def refuse(self: DeterministicLoop, *args: Any, **kwargs: Any) -> NoReturn:
        raise WorkflowSandboxError(
            f"workflow code cannot use loop.{name}() (sockets, pipes, subprocesses, signals, "
            f"threads): nothing it does is recorded, so replay cannot repeat it; {_USE_AN_ACTIVITY}"
        )

    refuse.__name__ = name
    return refuse


# The event-loop operations left are I/O of some kind (or loop administration, which workflow
# code has no business doing): refuse the I/O with advice rather than AbstractEventLoop's bare
# NotImplementedError.
_ADMINISTRATION = {
    "run_forever",
    "run_until_complete",
    "stop",
    "shutdown_asyncgens",
    "shutdown_default_executor",
    "set_default_executor",
    "set_task_factory",
    "get_task_factory",
    "get_exception_handler",
    "set_exception_handler",
    "set_debug",
}
for _name, _member in vars(asyncio.AbstractEventLoop).items():
    if (
        callable(_member)
        and not _name.startswith("_")
        and _name not in vars(DeterministicLoop)
        and _name not in _ADMINISTRATION
    ):
        setattr(DeterministicLoop, _name, _no_io(_name))
