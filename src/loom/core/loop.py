"""A tiny event loop that runs workflow code deterministically and synchronously.

Workflow code is ordinary ``async`` code (``asyncio.gather`` and ``create_task`` work), but it must
make the same decisions every time it is replayed. Running it on the worker's real loop would mix
its scheduling with unrelated I/O. Instead each workflow gets this loop: callbacks run strictly in
FIFO order and :meth:`run_until_idle` returns as soon as every workflow task is blocked on a
durable call. There is no clock here: ``asyncio.sleep(n)`` and timeouts fail with advice to use
``ctx.sleep``, because a wall clock cannot be replayed.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import collections
import contextvars
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn, TypeVar

from loom.errors import LoomError

T = TypeVar("T")


class WorkflowSandboxError(LoomError, RuntimeError):
    """Workflow code used something that cannot be replayed (wall-clock timers, real I/O)."""


class DeterministicLoop(asyncio.AbstractEventLoop):
    def __init__(self) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._closed = False
        self._errors: list[dict[str, Any]] = []

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
        return asyncio.Task(coro, loop=self, name=name, context=context)

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
            "workflow code cannot wait on threads or I/O; do that inside an activity"
        )

    # -- driving ---------------------------------------------------------------------------
    def run_until_idle(self) -> None:
        """Run ready callbacks until none is left, with this loop seen as the running loop."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            ready = self._ready
            while ready:
                handle = ready.popleft()
                if not handle._cancelled:
                    handle._run()
        finally:
            asyncio.events._set_running_loop(previous)
