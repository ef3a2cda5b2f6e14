"""``WorkflowEnvironment``: a database, a worker and a virtual clock for one test.

::

    async with WorkflowEnvironment() as env:
        env.mock_activity(charge_card, returns={"id": "r-1"})
        handle = await env.start_workflow(Subscription, workflow_input={"months": 12})
        assert (await handle.result(timeout=5))["billed"] == 12   # a year, in milliseconds

The database is fresh: in-memory SQLite by default (or the database at ``url``, migrated), with
the environment's own registry overlay (so mocks stay in it) and a :class:`VirtualClock`. One
worker runs on it in the test's event loop. Durable waits (timers, retry waits, signal and
``wait_until`` timeouts) are skipped whenever every workflow waits on time; see
:mod:`loom.testing.clock`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from loom.client import Database, WorkflowHandle
from loom.core.workflow import Workflow
from loom.definitions import Registry, default_registry
from loom.errors import ConfigurationError
from loom.testing.clock import VirtualClock
from loom.testing.mocks import _UNSET, ActivityMock, install_mock
from loom.worker import Worker

StateT = TypeVar("StateT")

MEMORY_URL = "sqlite:///:memory:"


class WorkflowEnvironment:
    """An in-process environment to test workflows in: use it as ``async with``.

    ``url``: the database (default: a fresh in-memory SQLite one; a PostgreSQL URL should name
    an empty database: its worker runs whatever it finds there). ``registry``: where the
    workflow classes are found (default: the decorators' registry); the environment works on an
    overlay of it. ``start_time`` (a timestamp or an aware datetime) and ``auto_skip`` configure
    :attr:`clock`. ``worker_options`` go to the :class:`loom.Worker` (``concurrency``, ...).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        registry: Registry | None = None,
        start_time: float | datetime | None = None,
        auto_skip: bool = True,
        **worker_options: Any,
    ) -> None:
        if "clock" in worker_options or "registry" in worker_options:
            raise ConfigurationError(
                "WorkflowEnvironment gives its worker its own clock and registry; pass "
                "registry= to the environment itself"
            )
        self.clock = VirtualClock(start_time, auto_skip=auto_skip)
        self.registry = Registry(parent=registry or default_registry)
        self.database = Database(url or MEMORY_URL, registry=self.registry, clock=self.clock)
        worker_options.setdefault("poll_interval", 0.5)
        self._worker_options = worker_options
        self.worker: Worker | None = None
        self._running: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"WorkflowEnvironment({self.database.url!r}, {self.clock!r})"

    async def __aenter__(self) -> WorkflowEnvironment:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Open the database, create its schema and start the worker."""
        if self._running is not None:
            raise ConfigurationError("this WorkflowEnvironment is running already")
        await self.database.open()
        try:
            await self.database.migrate_up()
            self.worker = Worker(self.database, **self._worker_options)
        except BaseException:
            await self.database.close()
            raise
        self.clock.attach(self.database.work_available.notify)
        self._running = asyncio.get_running_loop().create_task(self.worker.run())
        self._running.add_done_callback(lambda _: self.clock.detach())

    async def stop(self) -> None:
        """Stop the worker (in-flight activities finish first) and close the database. Raises
        what made the worker stop, if it stopped on its own."""
        running, self._running = self._running, None
        try:
            if running is not None and self.worker is not None:
                self.worker.stop()
                try:
                    await running
                finally:
                    await self.worker.stop_and_wait()
        finally:
            self.clock.detach()
            await self.database.close()

    async def start_workflow(
        self,
        workflow: type[Workflow[Any, StateT]],
        *,
        workflow_input: Any = None,
        initial_state: Any = None,
        workflow_id: str | None = None,
        version: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> WorkflowHandle[StateT]:
        """Start a workflow in the environment (as :meth:`loom.Database.start_workflow`)."""
        self._check_running()
        return await self.database.start_workflow(
            workflow,
            workflow_input=workflow_input,
            initial_state=initial_state,
            workflow_id=workflow_id,
            version=version,
            tags=tags,
        )

    def get_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to a workflow of the environment (as :meth:`loom.Database.get_workflow`)."""
        return self.database.get_workflow(workflow_id)

    def mock_activity(
        self,
        activity: Callable[..., Any] | str,
        fake: Callable[..., Any] | None = None,
        /,
        *,
        returns: Any = _UNSET,
        raises: BaseException | type[BaseException] | None = None,
    ) -> ActivityMock:
        """Run a fake instead of ``activity`` (its function or name) in this environment only:
        ``fake`` (a function, sync or async, called with the activity's arguments), or one that
        returns ``returns`` or raises ``raises`` (an exception or its class) at every attempt.
        The activity's retry policy, timeout and ``non_retryable`` still apply. Mocking it
        again replaces the fake. Returns the mock, whose ``calls`` list the attempts it ran."""
        return install_mock(self.registry, activity, fake, returns, raises)

    def _check_running(self) -> None:
        if self._running is None:
            raise ConfigurationError(
                "the WorkflowEnvironment is not running; use `async with WorkflowEnvironment() "
                "as env:`"
            )
        if self._running.done():
            error = None if self._running.cancelled() else self._running.exception()
            raise ConfigurationError(
                f"the environment's worker stopped{f': {error}' if error else ''}"
            ) from error


__all__ = ["MEMORY_URL", "WorkflowEnvironment"]
