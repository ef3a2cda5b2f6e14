"""The pytest plugin of ``loom.testing``, registered through the ``pytest11`` entry point
``loom``: installing Loom makes the ``loom_env`` fixture available to every test.

``loom_env`` is a running :class:`~loom.testing.WorkflowEnvironment` (in-memory SQLite, virtual
clock, automatic time skipping), fresh for each test. It is an async fixture: with
pytest-asyncio it works in both its ``auto`` and ``strict`` modes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from loom.testing.environment import WorkflowEnvironment

try:  # pytest-asyncio's own decorator works in its strict mode too
    from pytest_asyncio import fixture as async_fixture
except ImportError:  # without it, async fixtures need another plugin (anyio's, say)
    async_fixture = pytest.fixture  # type: ignore[assignment]


@async_fixture
async def loom_env() -> AsyncIterator[WorkflowEnvironment]:
    """A running test environment of Loom: a fresh in-memory database, a worker and a virtual
    clock (``loom_env.clock``) that skips durable waits."""
    async with WorkflowEnvironment() as env:
        yield env


__all__ = ["loom_env"]
