"""Testing workflows: an in-process environment with a virtual clock, fakes for activities,
and the replay of exported histories against the current code.

- :class:`WorkflowEnvironment`: ``async with WorkflowEnvironment() as env:`` gives a fresh
  database, a worker and ``env.clock`` (a :class:`VirtualClock`): durable timers, retry waits and
  timeouts fire as soon as nothing else can run, so a workflow that sleeps 30 days completes in
  milliseconds; ``await env.clock.advance(timedelta(hours=2))`` moves time by hand;
  ``env.mock_activity(fn, returns=...)`` replaces an activity for this environment only.
- :class:`Replayer`: ``Replayer([Order]).replay("order.json")`` replays a history exported with
  ``loom inspect ID --export order.json`` and raises the worker's ``NonDeterminismError`` when
  the code no longer reproduces it.
- The pytest plugin (:mod:`loom.testing.pytest_plugin`, registered as ``loom``) gives a
  ``loom_env`` fixture.
"""

from loom.core.history_file import ExportedHistory
from loom.testing.clock import VirtualClock
from loom.testing.environment import WorkflowEnvironment
from loom.testing.mocks import ActivityMock, Call
from loom.testing.replayer import Replayed, Replayer

__all__ = [
    "ActivityMock",
    "Call",
    "ExportedHistory",
    "Replayed",
    "Replayer",
    "VirtualClock",
    "WorkflowEnvironment",
]
