"""When a schedule's slots fall, and which of the due ones a scheduler pass fires.

Pure: no I/O and no clock of its own (every function is given ``now``), so the store's rule
that fires schedules, the client that shows the next run times and the tests all compute the
same slots. Cron expressions are croniter's (five fields, an optional sixth for seconds, an
optional seventh for the year, ``@hourly`` and friends), read in an IANA timezone through
:mod:`zoneinfo`; intervals (``30s``, ``5m``, ``2h``, ``1d``, ``1h30m``) count from the Unix
epoch in UTC, so ``every 1h`` fires on the hour and every worker computes the same slots.

A *slot* is an instant (whole seconds since the epoch) at which the schedule is due; the
workflow a slot starts is named after it, so a slot can start at most one run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter  # type: ignore[import-untyped]

from loom.errors import InvalidScheduleError

LATE_AFTER = 60.0
"""A slot due more than this many seconds ago when a scheduler reaches it is *late*: no worker
was running then. The ``skip`` catch-up policy does not fire it."""

MAX_INTERVAL = 3650 * 86400
"""The longest ``every`` interval: ten years, in seconds."""

MAX_SPEC_LENGTH = 200
"""The longest cron expression or timezone name accepted."""

CRON_HORIZON_YEARS = 100
"""How far croniter looks for a cron expression's next or previous date (its own default, 50
years, would call a date in 2080 none: ``0 0 1 1 * 0 2080`` would be refused as never firing)."""

MAX_CATCH_UP_LIMIT = 1000
"""The most slots one catch-up may start (``catch_up="all"``)."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EVERY = re.compile(r"(?:(\d{1,9})([smhd]))+")
_PART = re.compile(r"(\d{1,9})([smhd])")
_DRAWN = re.compile(r"[hr](\(\d+-\d+\))?(/\d+)?", re.ASCII | re.IGNORECASE)
"""A cron field croniter draws at random (``R``) or from a hash (``H``) each time it reads the
expression: every worker, and every pass, would compute other slots."""
MACHINE_ZONES = frozenset({"localtime"})
"""Timezone names that mean the zone of the machine reading them, which differs between the
workers (and the dashboard) of one database."""


class Overlap(StrEnum):
    """What a slot does while the schedule's previous run is still RUNNING."""

    SKIP = "skip"
    """It starts nothing (the default)."""
    BUFFER_ONE = "buffer_one"
    """It is held until the running one ends, then starts; at most one is held, others skip."""
    ALLOW_ALL = "allow_all"
    """It starts anyway: runs of one schedule may overlap."""


class CatchUp(StrEnum):
    """What a scheduler does with the slots that came while no worker ran (downtime)."""

    SKIP = "skip"
    """Missed slots are dropped, and so is the latest one if it is late (:data:`LATE_AFTER`)."""
    LATEST = "latest"
    """Only the latest due slot fires, however late (the default)."""
    ALL = "all"
    """Every missed slot fires, oldest first, up to ``catch_up_limit`` (the most recent ones)."""


def _choice(kind: type[StrEnum], value: Any, what: str) -> Any:
    try:
        return kind(str(value).lower().replace("-", "_"))
    except ValueError:
        choices = ", ".join(k.value for k in kind)
        raise InvalidScheduleError(f"unknown {what} {value!r}; use one of {choices}") from None


def overlap_policy(value: Any) -> Overlap:
    result: Overlap = _choice(Overlap, value, "overlap policy")
    return result


def catch_up_policy(value: Any) -> CatchUp:
    result: CatchUp = _choice(CatchUp, value, "catch-up policy")
    return result


def parse_every(text: Any) -> int:
    """``30s``, ``5m``, ``2h``, ``1d``, ``1h30m`` as whole seconds (1 s to ten years)."""
    if isinstance(text, bool) or not isinstance(text, str | int):
        raise InvalidScheduleError(f"an interval must be a text such as '30s', got {text!r}")
    if isinstance(text, int):
        seconds = text
    else:
        compact = text.strip().lower()
        if len(compact) > 40 or not _EVERY.fullmatch(compact):
            raise InvalidScheduleError(
                f"interval {text[:40]!r} is not a number of s, m, h or d: write '30s', '5m', "
                "'2h', '1d' or '1h30m'"
            )
        seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    if not 1 <= seconds <= MAX_INTERVAL:
        raise InvalidScheduleError(
            f"interval {text!r} must be between 1 second and {MAX_INTERVAL // 86400} days"
        )
    return seconds


def every_text(seconds: int) -> str:
    """The shortest way to write an interval: ``90`` is ``1m30s``."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def zone(name: Any) -> tzinfo:
    """The IANA timezone ``name`` (``Europe/Paris``, ``UTC``)."""
    if not isinstance(name, str) or not name or len(name) > MAX_SPEC_LENGTH:
        raise InvalidScheduleError(f"timezone {name!r} is not an IANA timezone name")
    try:
        return ZoneInfo(name)
    except Exception:  # ZoneInfoNotFoundError, or ValueError for a path, a NUL ...
        raise InvalidScheduleError(
            f"unknown timezone {name[:60]!r}; use an IANA name such as 'Europe/Paris' or 'UTC'"
        ) from None


@dataclass(frozen=True, slots=True)
class Timing:
    """When the slots fall: a cron expression in a timezone, or an interval (``every``,
    seconds). Build it with :meth:`parse`, which refuses what cannot be computed."""

    cron: str | None = None
    every: int | None = None
    timezone: str = "UTC"

    @classmethod
    def parse(cls, cron: Any = None, every: Any = None, timezone: Any = None) -> Timing:
        if (cron is None) == (every is None):
            raise InvalidScheduleError("a schedule needs exactly one of cron=... and every=...")
        tz = "UTC" if timezone is None else timezone
        zone(tz)
        if tz in MACHINE_ZONES:
            raise InvalidScheduleError(
                f"timezone {tz!r} is each machine's own zone, so workers could disagree on the "
                "slots; name the zone, such as 'Europe/Paris' or 'UTC'"
            )
        if every is not None:
            if tz != "UTC":
                raise InvalidScheduleError(
                    f"timezone {tz!r} applies to cron schedules only: an interval counts from "
                    "the Unix epoch in UTC; use a cron expression for local times"
                )
            return cls(every=parse_every(every))
        if not isinstance(cron, str) or not cron.strip() or len(cron) > MAX_SPEC_LENGTH:
            raise InvalidScheduleError(f"cron expression {str(cron)[:60]!r} is not valid")
        fields = cron.split()
        timing = cls(cron=" ".join(fields), timezone=tz)
        drawn = [f for f in fields if _DRAWN.fullmatch(f)]
        if drawn:
            raise InvalidScheduleError(
                f"cron expression {cron[:60]!r} is not valid: its field {drawn[0]!r} is drawn "
                "at random or hashed anew at each reading, so the slots would change from one "
                "pass to the next; write the value"
            )
        try:
            croniter(timing.cron, datetime(2000, 1, 1, tzinfo=UTC))
        except Exception as exc:
            raise InvalidScheduleError(
                f"cron expression {cron[:60]!r} is not valid: {str(exc)[:200]}"
            ) from None
        return timing

    def describe(self) -> str:
        if self.every is not None:
            return f"every {every_text(self.every)}"
        return f"cron {self.cron}" + ("" if self.timezone == "UTC" else f" ({self.timezone})")

    def _cron(self, t: float) -> Any:
        assert self.cron is not None
        start = datetime.fromtimestamp(t, zone(self.timezone))
        return croniter(self.cron, start, max_years_between_matches=CRON_HORIZON_YEARS)

    def _repeat(self, found: datetime) -> bool:
        """Whether ``found`` is the second occurrence of a wall-clock time the clocks went back
        over (the end of daylight saving time) for an expression with a fixed hour: such a job
        (``30 2 * * *``) fires once, at the first occurrence, as cron does; one whose hour is
        a wildcard (``*/15 * * * *``, ``@hourly``) keeps firing through the repeated hour."""
        if not found.fold or found.replace(fold=0).utcoffset() == found.utcoffset():
            return False
        return not str(self._cron(0).expressions[1]).startswith("*")

    def _walk(self, t: float, forward: bool) -> float | None:
        """The first slot strictly after (``forward``) or before ``t``, the repeats
        :meth:`_repeat` drops passed over."""
        try:
            walk = self._cron(t)
            for _ in range(4):  # at most one repeat in a row, whatever the timezone
                found: datetime = walk.get_next(datetime) if forward else walk.get_prev(datetime)
                if not self._repeat(found):
                    return float(found.timestamp())
        except Exception:  # CroniterBadDateError: no date found within croniter's horizon
            pass
        return None

    def next_after(self, t: float) -> float | None:
        """The first slot strictly after ``t``; None when there is none (a cron expression
        that never matches again)."""
        if self.every is not None:
            return float((math.floor(t) // self.every + 1) * self.every)
        return self._walk(math.floor(t), forward=True)

    def at_or_before(self, t: float) -> float | None:
        """The latest slot at or before ``t``."""
        if self.every is not None:
            return float(math.floor(t) // self.every * self.every)
        return self.before(math.floor(t) + 1)

    def before(self, slot: float) -> float | None:
        """The latest slot strictly before ``slot``."""
        if self.every is not None:
            earlier = (math.ceil(slot) - 1) // self.every * self.every
            return float(earlier) if earlier >= 0 else None
        return self._walk(math.ceil(slot), forward=False)

    def back_from(self, slot: float, count: int, not_before: float) -> list[float]:
        """Up to ``count`` slots strictly before ``slot``, latest first, none before
        ``not_before`` (one croniter for them all: a catch-up may ask for a thousand)."""
        found: list[float] = []
        if self.every is not None:
            earlier = self.before(slot)
            while earlier is not None and earlier >= not_before and len(found) < count:
                found.append(earlier)
                earlier = earlier - self.every if earlier >= self.every else None
            return found
        if count <= 0:
            return found
        try:
            walk = self._cron(math.ceil(slot))
            while len(found) < count:
                previous: datetime = walk.get_prev(datetime)
                earlier = float(previous.timestamp())
                if earlier < not_before:
                    break
                if not self._repeat(previous):
                    found.append(earlier)
        except Exception:  # no earlier date croniter can find
            pass
        return found

    def upcoming(self, after: float, count: int) -> list[float]:
        """The next ``count`` slots from ``after`` on (``after`` itself included)."""
        found: list[float] = []
        slot = self.at_or_before(after)
        if slot is None or slot < after:
            slot = self.next_after(after)
        while slot is not None and len(found) < count:
            found.append(slot)
            slot = self.next_after(slot)
        return found


def check_never_fires(timing: Timing, now: float) -> None:
    """Refuse a timing with no slot after ``now`` (``0 0 31 2 *``: February 31st)."""
    if timing.next_after(now) is None:
        raise InvalidScheduleError(f"{timing.describe()} never fires: no date matches it")


def slot_iso(slot: float) -> str:
    """A slot as its run's id spells it: ISO 8601 UTC to the second (``2026-03-29T01:30:00Z``)."""
    return datetime.fromtimestamp(slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def trigger_iso(at: float) -> str:
    """A manual trigger's time, to the millisecond (``2026-03-29T01:30:00.123Z``): never the
    spelling of a slot, so a trigger and a slot never share a run id."""
    stamp = datetime.fromtimestamp(at, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def run_prefix(name: str) -> str:
    """What the ids of a schedule's runs begin with."""
    return f"schedule:{name}:"


def run_id(name: str, slot: float) -> str:
    """The workflow id of the run of ``name``'s ``slot``: ``schedule:<name>:<slot ISO UTC>``."""
    return run_prefix(name) + slot_iso(slot)


# -- which slots a pass fires -----------------------------------------------------------------


def due_slots(
    timing: Timing, next_at: float, now: float, catch_up: CatchUp, limit: int
) -> list[float]:
    """The slots from ``next_at`` to ``now`` that fire, oldest first, by the catch-up policy.

    The latest due slot is the current one; the earlier ones were missed (their successor came
    before any worker fired them)."""
    current = timing.at_or_before(now)
    if current is None or current < next_at:
        return []
    if catch_up is CatchUp.SKIP:
        return [] if now - current > LATE_AFTER else [current]
    if catch_up is CatchUp.LATEST:
        return [current]
    return [*timing.back_from(current, limit - 1, next_at)[::-1], current]


@dataclass(frozen=True, slots=True)
class Plan:
    """What one pass does to one schedule: the slots it starts (oldest first), the slot it
    holds for later (``buffer_one``) and the schedule's next slot."""

    starts: list[float]
    buffered: float | None
    next_at: float | None


def plan(
    timing: Timing,
    overlap: Overlap,
    catch_up: CatchUp,
    limit: int,
    *,
    next_at: float | None,
    buffered: float | None,
    running: bool,
    now: float,
) -> Plan:
    """Decide one pass. ``running``: the schedule's last run is still RUNNING. A held slot
    starts first once nothing runs; then each due slot starts, is held or is skipped by the
    overlap policy, a run started in this pass counting as running."""
    starts: list[float] = []
    if buffered is not None and not running:
        starts.append(buffered)
        buffered, running = None, True
    if next_at is not None and next_at <= now:
        for slot in due_slots(timing, next_at, now, catch_up, limit):
            if overlap is Overlap.ALLOW_ALL or not running:
                starts.append(slot)
                running = True
            elif overlap is Overlap.BUFFER_ONE and buffered is None:
                buffered = slot
        next_at = timing.next_after(now)
    return Plan(starts, buffered, next_at)


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule's definition: what a user declares (``loom.schedule``, ``create_schedule``)
    and the store keeps. ``input`` is the workflow input as stored (JSON values)."""

    name: str
    workflow: str
    timing: Timing
    input: Any = None
    overlap: Overlap = Overlap.SKIP
    catch_up: CatchUp = CatchUp.LATEST
    catch_up_limit: int = 10
