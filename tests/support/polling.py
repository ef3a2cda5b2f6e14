"""Waiting for a condition in tests: poll it instead of sleeping a guessed time.

A fixed sleep is either too short on a loaded machine (a flaky test) or too long everywhere
(a slow suite); polling returns as soon as the condition holds and fails with a message that
says what never happened.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

Check = Callable[[], "Awaitable[T] | T"]
What = str | Callable[[], str]


def _timed_out(what: What, timeout: float) -> None:
    described = what() if callable(what) else what
    pytest.fail(f"timed out after {timeout} s waiting for {described}", pytrace=True)


async def eventually(
    check: Check[T],
    timeout: float = 5.0,
    *,
    what: What = "the condition",
    interval: float = 0.02,
) -> T:
    """Poll ``check`` (sync or async) until it returns something true, and return that; fail
    after ``timeout`` seconds naming ``what`` (a string, or a callable for a message that
    reports the last state seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            _timed_out(what, timeout)
        await asyncio.sleep(interval)


def eventually_sync(
    check: Callable[[], T],
    timeout: float = 5.0,
    *,
    what: What = "the condition",
    interval: float = 0.02,
) -> T:
    """:func:`eventually` for code with no event loop running (blocks the calling thread)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            _timed_out(what, timeout)
        time.sleep(interval)
