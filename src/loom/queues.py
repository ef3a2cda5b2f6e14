"""Task queues: the rule for a queue's name, and its limits (concurrency, rate).

A workflow or activity names a queue (``@loom.workflow(queue="emails")``); a worker serves some
queues or all of them. A queue's limits live in the database (``queues`` table) so that every
worker process obeys the same ones; this module only says what a valid limit is, so code
(``loom.queue``), the CLI and the dashboard refuse the same bad input with the same message.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from loom.errors import ConfigurationError
from loom.limits import check_id

DEFAULT_QUEUE = "default"
"""The queue of a workflow or activity that names none."""

_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([smhd])\s*$")

MAX_LIMIT = 2**31 - 1
"""The largest concurrency or rate count: both databases store them as 32-bit integers."""

RATE_PERIODS = (0.001, 3650 * 86400.0)
"""The shortest and longest rate period, in seconds: a millisecond to ten years."""


def check_queue(name: object) -> str:
    """``name`` if it is a valid queue name (the id rule: non-empty, bounded, no control
    characters); else :class:`~loom.errors.InvalidIdError`."""
    return check_id(name, "queue name")


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` starts in each window of ``period`` seconds."""

    count: int
    period: float

    def __str__(self) -> str:
        for unit, seconds in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
            if self.period == seconds:
                return f"{self.count}/{unit}"
        return f"{self.count}/{self.period:g}s"


def parse_rate(text: str | Rate) -> Rate:
    """``"100/m"``, ``"5/s"``, ``"1000/h"``, ``"1/d"`` or ``"10/30s"`` (10 per 30 seconds)."""
    if isinstance(text, Rate):
        return check_rate(text)
    found = _RATE.match(text) if isinstance(text, str) else None
    if found is None:
        raise ConfigurationError(
            f"rate {text!r} is not a rate; write starts per period, like '100/m', '5/s', "
            "'1000/h' or '10/30s'"
        )
    count, multiple, unit = found.groups()
    period = (float(multiple) if multiple else 1.0) * _PERIODS[unit]
    return check_rate(Rate(int(count), period))


def _whole(value: object, low: int, high: int) -> bool:
    """Whether ``value`` is an int (not a bool) from ``low`` to ``high``."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def check_rate(rate: Rate) -> Rate:
    """``rate`` if its count and period are ones both databases store and a claim can count
    with; else :class:`~loom.errors.ConfigurationError` naming what is wrong."""
    count, period = rate.count, rate.period
    number = isinstance(period, int | float) and not isinstance(period, bool)
    shown = f"{count!r}/{period:g}s" if number else f"{count!r}/{period!r}"
    if not _whole(count, 1, MAX_LIMIT):
        raise ConfigurationError(
            f"rate {shown}: the count must be a whole number from 1 to {MAX_LIMIT} (at least "
            "1 start in a period)"
        )
    low, high = RATE_PERIODS
    if (
        isinstance(period, bool)
        or not isinstance(period, int | float)
        or not math.isfinite(period)
        or not low <= period <= high
    ):
        raise ConfigurationError(
            f"rate {shown}: the period must be from {low:g} seconds to {high / 86400:g} days"
        )
    return Rate(count, float(period))


@dataclass(frozen=True, slots=True)
class QueueLimits:
    """The limits of one queue. ``concurrency``: how many of its items (a workflow task or an
    activity) may be in progress at once, across all workers; ``rate``: how many may start in
    each period. None: no limit."""

    name: str
    concurrency: int | None = None
    rate: Rate | None = None

    @classmethod
    def of(
        cls, name: str, concurrency: int | None = None, rate: str | Rate | None = None
    ) -> QueueLimits:
        """Validated limits: a bad name, concurrency or rate raises a typed error naming it."""
        check_queue(name)
        if concurrency is not None and not _whole(concurrency, 1, MAX_LIMIT):
            raise ConfigurationError(
                f"queue {name!r}: concurrency must be a whole number >= 1 and <= {MAX_LIMIT} "
                f"(or None for no limit), got {concurrency!r}"
            )
        return cls(name, concurrency, None if rate is None else parse_rate(rate))

    @property
    def limited(self) -> bool:
        return self.concurrency is not None or self.rate is not None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What ``loom stats``, ``GET /api/queues`` and the dashboard show of one queue."""

    name: str
    depth: int
    """Ready items waiting for a worker."""
    running: int
    """Items in progress now (a workflow task held under a live lease)."""
    concurrency: int | None
    rate: Rate | None
    oldest_waiting_age: float | None
    """Seconds the oldest ready item has waited (None: nothing waits)."""
    started_in_window: int = 0
    """Starts counted in the rate's current window."""


__all__ = [
    "DEFAULT_QUEUE",
    "QueueLimits",
    "QueueStats",
    "Rate",
    "check_priority",
    "check_queue",
    "parse_rate",
]


PRIORITY_RANGE = (-(2**31), 2**31 - 1)
"""What a ``priority`` may be: a 32-bit integer (both databases store it as one)."""


def check_priority(priority: object) -> int:
    """``priority`` if it is a whole number within :data:`PRIORITY_RANGE`; else
    :class:`~loom.errors.ConfigurationError`."""
    low, high = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise ConfigurationError(
            f"priority must be a whole number from {low} to {high} (smaller runs first), "
            f"got {priority!r}"
        )
    return priority
