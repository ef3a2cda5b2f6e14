"""Riding out a database outage: retry pacing, and a log that says when an outage begins and ends.

A worker makes several kinds of database calls (looking for work, renewing leases, recording
progress); during an outage all of them fail. Each kind backs off on its own (:class:`Backoff`),
but they share one :class:`OutageLog`, so an outage reads as one line when it begins and one
when the database works again, however long it lasts and however many calls fail meanwhile.
"""

from __future__ import annotations

import logging

from loom.errors import DatabaseUnavailableError

log = logging.getLogger("loom.worker")

OUTAGE_ERRORS: tuple[type[Exception], ...] = (DatabaseUnavailableError, OSError, TimeoutError)
"""What a database outage looks like: the stores report a lost or refused connection, a full disk
or a locked file as DatabaseUnavailableError; OSError and TimeoutError can still escape while a
connection is being made. Any other error is about the operation, not the database's health."""


class OutageLog:
    """Logs the start of an outage (the first failure while none was in progress) and its end
    (when every kind of call that failed has worked again)."""

    def __init__(self, who: str) -> None:
        self.who = who
        self._failing: set[str] = set()

    @property
    def in_progress(self) -> bool:
        return bool(self._failing)

    def failed(self, what: str, exc: BaseException) -> None:
        if not self._failing:
            # A traceback only for the unexpected: a plain outage is explained by its message.
            log.warning(
                "%s: the database is unavailable (%s failed: %s); retrying with backoff until it "
                "is back",
                self.who,
                what,
                exc,
                exc_info=None if isinstance(exc, OUTAGE_ERRORS) else exc,
            )
        self._failing.add(what)

    def succeeded(self, what: str) -> None:
        if what in self._failing:
            self._failing.discard(what)
            if not self._failing:
                log.warning("%s: the database works again", self.who)


class Backoff:
    """Retry pacing for one kind of database call: delays start at ``first`` and double up to
    ``limit``; a success resets them. Failures and recoveries are reported to ``outages``."""

    first = 0.1
    limit = 5.0

    def __init__(self, what: str, outages: OutageLog) -> None:
        self.what = what
        self.outages = outages
        self._next: float | None = None  # None: this kind of call is not failing

    def failed(self, exc: BaseException) -> float:
        """Note a failure; return how long to wait before trying again."""
        self.outages.failed(self.what, exc)
        delay = self.first if self._next is None else self._next
        self._next = min(delay * 2, self.limit)
        return delay

    def succeeded(self) -> None:
        if self._next is not None:
            self.outages.succeeded(self.what)
        self._next = None
