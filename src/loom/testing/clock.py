"""The virtual clock of a test environment: it stands still and moves only by jumps.

Time moves in two ways:

- **skipping** (``auto_skip``, on by default): when the environment's worker has nothing to
  run (no workflow held, nothing ready) it jumps to the earliest time something is due: a
  durable timer, a retry wait, a signal or ``wait_until`` timeout. A workflow that sleeps 30
  days takes a few milliseconds;
- **advancing by hand**: :meth:`VirtualClock.advance` moves it forward by a duration, stopping
  at each due time on the way so that what falls due fires in order, and returns once the
  workflows have done what the new time makes them do.

The jumps are made by the worker itself, when it is idle (:meth:`skip_target`), after renewing
the leases it holds past the new time, so a jump never hands a workflow to a second driver.
While activities run, time does not skip: a timer racing a running activity fires when the
activity ends, or when :meth:`advance` moves the clock past it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from loom.core.context import deadline_after
from loom.errors import ConfigurationError


class VirtualClock:
    """A :class:`loom.clock.Clock` for tests. ``start`` is its first time (a timestamp or an
    aware datetime; default: the wall clock's now); ``auto_skip`` makes it jump whenever every
    workflow of its environment waits on time."""

    def __init__(self, start: float | datetime | None = None, *, auto_skip: bool = True) -> None:
        self._now = _timestamp(start) if start is not None else time.time()
        self._auto_skip = auto_skip
        self._target: float | None = None
        """Where :meth:`advance` is taking the clock."""
        self._waiters: list[asyncio.Future[None]] = []
        self._lock: asyncio.Lock | None = None
        self._wake: Callable[[], None] | None = None
        self.jumps = 0
        """How many times the clock jumped."""

    def __repr__(self) -> str:
        return f"VirtualClock({self.datetime().isoformat()}, auto_skip={self.auto_skip})"

    # -- what tests call --------------------------------------------------------------------
    @property
    def auto_skip(self) -> bool:
        """Whether the clock jumps by itself whenever every workflow waits on time."""
        return self._auto_skip

    @auto_skip.setter
    def auto_skip(self, value: bool) -> None:
        self._auto_skip = bool(value)
        if value and self._wake is not None:
            self._wake()  # what waits on time may skip now

    def now(self) -> float:
        """The current virtual time, in seconds since the epoch."""
        return self._now

    def datetime(self) -> datetime:
        """The current virtual time as an aware UTC datetime (what ``ctx.now()`` returns)."""
        return datetime.fromtimestamp(self._now, UTC)

    async def advance(self, delta: timedelta | float) -> None:
        """Move forward by ``delta`` (a timedelta or seconds: finite, not negative, under 100
        years), firing what falls due on the way in time order, and return once the
        environment's workflows have done what the new time makes them do (or wait on
        activities that are still running). Without a running worker the clock just moves."""
        target = deadline_after(self._now, delta, None, None)
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._wake is None:
                self._now = max(self._now, target)
                return
            self._target = target
            while self._target is not None and self._wake is not None:
                waiter = asyncio.get_running_loop().create_future()
                self._waiters.append(waiter)
                self._wake()
                await waiter
            if self._now < target:  # the worker stopped on the way
                self._now = target

    @contextlib.contextmanager
    def manual(self) -> Iterator[None]:
        """Turn automatic skipping off inside the block: time moves only by :meth:`advance`
        (to signal a workflow in the middle of a wait, say). It is turned back on after."""
        before = self.auto_skip
        self.auto_skip = False
        try:
            yield
        finally:
            self.auto_skip = before

    # -- what the environment calls ---------------------------------------------------------
    def attach(self, wake: Callable[[], None]) -> None:
        """A worker now runs on this clock; ``wake`` makes it look again at once."""
        self._wake = wake

    def detach(self) -> None:
        """The worker stopped: nobody moves the clock any more; :meth:`advance` returns."""
        self._wake = None
        self._rested()

    # -- what the worker calls (loom.clock.Clock) ---------------------------------------------
    def seconds_until(self, when: float) -> float | None:
        return 0.0 if when <= self._now else None

    def skip_target(self, due: float | None, *, held: bool, settled: bool) -> float | None:
        if not settled:
            return None  # a workflow is being driven: let it reach a pause first
        now = self._now
        if not held and due is not None and due <= now:
            return None  # ready work: the worker's next look claims it
        target = self._target
        if target is not None:
            if now < target:
                if not held and due is not None and due < target:
                    return due  # stop on the way: what is due fires at its time
                return target
            self._target = None
        self._rested()
        if self._auto_skip and not held and due is not None:
            return due
        return None

    def skip_to(self, when: float) -> None:
        if when > self._now:
            self._now = when
            self.jumps += 1

    def settling(self) -> None:
        if self._target is not None and self._wake is not None:
            self._wake()  # advance() waits for the held workflows to pause

    def _rested(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)


def _timestamp(start: float | datetime) -> float:
    if isinstance(start, datetime):
        if start.tzinfo is None or start.utcoffset() is None:
            raise ConfigurationError(
                "a virtual clock's start needs an aware datetime (e.g. datetime(2030, 1, 1, "
                "tzinfo=UTC)); a naive one is ambiguous"
            )
        return start.timestamp()
    if isinstance(start, bool) or not isinstance(start, int | float) or start != start:
        raise ConfigurationError(
            f"a virtual clock's start must be a datetime or seconds, got {start!r}"
        )
    if not 0 <= start < 253402300800:  # year 1970 to 9999: a datetime can show it
        raise ConfigurationError(
            f"a virtual clock's start must be between 1970 and 9999, got {start!r} seconds"
        )
    return float(start)


__all__ = ["VirtualClock"]
