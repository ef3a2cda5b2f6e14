"""Time as the engine reads it: one injectable clock.

Everything Loom records or schedules by the time of day (event timestamps, timers, retry
waits, signal and ``wait_until`` timeouts, ``ready_at``, leases) reads it from one
:class:`Clock`, given to :class:`~loom.Database` (``clock=``) and used by its workers. The
default, :data:`WALL_CLOCK`, is the system's wall clock at the cost of ``time.time()``.

A test clock (``loom.testing``'s virtual clock) stands still and moves only by jumps: a worker
whose every workflow waits on time asks it where to jump (:meth:`Clock.skip_target`), keeps its
leases past that time, then moves it (:meth:`Clock.skip_to`) and wakes what waits on time.

Durations of real work stay on the monotonic clock whatever this clock is: an activity's
``timeout_seconds``, the inline window, outage backoffs and ``handle.result(timeout=)``.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the engine reads the time of day (seconds since the epoch) and learns how long to
    wait for one."""

    def now(self) -> float:
        """The current time, in seconds since the epoch."""
        ...

    def seconds_until(self, when: float) -> float | None:
        """Real seconds to wait for ``when`` to come; None: wait until woken (a clock that
        moves only by jumps wakes the waiters itself)."""
        ...

    def skip_target(self, due: float | None, *, held: bool, settled: bool) -> float | None:
        """Asked by a worker that found nothing more to claim and heard no news since it
        looked: the time to jump to now, or None to let time pass as it does.

        ``due`` is the earliest ``ready_at`` of the workflows it serves (None: none, or not
        looked up); ``held``: it still drives workflows; ``settled``: each of those waits on
        its running activities (nothing of it can move until one ends or time moves)."""
        ...

    def skip_to(self, when: float) -> None:
        """Jump to ``when`` (the worker calls this after keeping its leases past it)."""
        ...

    def settling(self) -> None:
        """A workflow driven by a worker now waits on its running activities."""
        ...


class WallClock:
    """The system's wall clock: it never jumps."""

    now = staticmethod(time.time)

    def seconds_until(self, when: float) -> float:
        return max(0.0, when - time.time())

    def skip_target(self, due: float | None, *, held: bool, settled: bool) -> None:
        return None

    def skip_to(self, when: float) -> None:
        raise RuntimeError("the wall clock cannot jump")  # skip_target never asks it to

    def settling(self) -> None:
        return None


WALL_CLOCK: Clock = WallClock()
"""The default clock of every database and worker."""


__all__ = ["WALL_CLOCK", "Clock", "WallClock"]
