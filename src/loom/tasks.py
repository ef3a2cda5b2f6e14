"""Waiting for the background tasks a worker keeps (its claim loop, lease renewal, scheduler)
to end, without losing a cancel of whoever waits.

Awaiting a task that ends canceled raises ``CancelledError`` in the awaiting task, exactly as a
cancel of the awaiting task itself would. Swallowing every ``CancelledError`` there (the usual
``suppress(CancelledError)``) would also swallow the waiter's own cancel: a shutdown bounded by a
timeout, or interrupted by Ctrl-C, would carry on as if nothing had happened.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def wait_ended(task: asyncio.Future[Any]) -> None:
    """Wait until ``task`` has ended. Its own cancellation is not raised (it ended, as
    wanted); a cancel of the calling task that arrives meanwhile is. Any other error the task
    ended with is raised."""
    current = asyncio.current_task()
    before = 0 if current is None else current.cancelling()
    try:
        await task
    except asyncio.CancelledError:
        if current is not None and current.cancelling() > before:
            raise


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (see :func:`wait_ended`)."""
    task.cancel()
    await wait_ended(task)


__all__ = ["cancel_and_wait", "wait_ended"]
