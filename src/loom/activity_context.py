"""What a running activity knows about itself, and how it says that it is still alive.

``loom.activity_info()`` and ``loom.heartbeat()`` find the attempt running in the current context:
a context variable set for the attempt by :mod:`loom.activities` (an async activity runs in a
task of its own; a sync one's thread runs in a copy of that context). Outside an activity both
raise :class:`~loom.errors.NotInActivityError`, rather than guess.

A heartbeat does two things. It proves the attempt alive: an activity with a
``heartbeat_timeout`` that stops beating fails with
:class:`~loom.errors.ActivityHeartbeatTimeoutError` long before its ``timeout_seconds``. And its
details are recorded, so that the activity's next attempt, on this worker or on another after a
crash, resumes where this one was (``activity_info().heartbeat_details``). Recording them is the
worker's business (:mod:`loom.heartbeats`); this module keeps the latest beat and tells the
worker, from whichever thread the activity runs on.

Cancellation reaches an attempt here too. An async activity is interrupted with
``CancelledError``; a sync one cannot be (a thread cannot be killed), so it sees
``is_cancelled()`` turn true and its next ``heartbeat()`` raise
:class:`~loom.errors.ActivityCancelledError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from loom import codec, limits
from loom.errors import ActivityCancelledError, NotInActivityError


@dataclass(frozen=True, slots=True)
class Beat:
    """One heartbeat: its details as stored (JSON text; None when it carried none) and when it
    was sent (epoch seconds)."""

    details: str | None
    at: float


class ActivityInfo:
    """One attempt of one activity, as the attempt sees it: what ``loom.activity_info()`` returns.

    ``deadline`` is when the attempt's ``timeout_seconds`` runs out (epoch seconds, counted from
    when it started running; None without a timeout). ``heartbeat_details`` are the details of
    the last heartbeat an earlier run of this activity sent (an earlier attempt, or the same
    attempt on a worker that died), as JSON (a dataclass comes back as a dict), or None.
    """

    __slots__ = (
        "_control",
        "activity_name",
        "attempt",
        "deadline",
        "heartbeat_details",
        "heartbeat_timeout",
        "run_id",
        "seq",
        "step",
        "workflow_id",
    )

    def __init__(self, control: AttemptControl, deadline: float | None, details: Any) -> None:
        self._control = control
        self.workflow_id: str = control.workflow_id
        self.run_id: str | None = control.run_id
        """The run of the workflow (a run that continued as new has a new one)."""
        self.activity_name: str = control.activity_name
        self.seq: int = control.seq
        """The sequence number of the activity's ``ACTIVITY_SCHEDULED`` event."""
        self.step: str | None = control.step
        self.attempt: int = control.attempt
        """1 for the first attempt, 2 for the first retry ... (a run cut short by a crash is
        run again under the same number)."""
        self.deadline = deadline
        self.heartbeat_timeout: float | None = control.heartbeat_timeout
        self.heartbeat_details = details

    def is_cancelled(self) -> bool:
        """True once this attempt was cancelled (its workflow canceled, its timeout or heartbeat
        timeout passed, its worker lost the workflow or stopped): stop and return."""
        return self._control.cancelled

    def __repr__(self) -> str:
        return (
            f"ActivityInfo(workflow_id={self.workflow_id!r}, run_id={self.run_id!r}, activity_name="
            f"{self.activity_name!r}, seq={self.seq}, attempt={self.attempt}, deadline="
            f"{self.deadline!r}, heartbeat_details={self.heartbeat_details!r})"
        )


class BeatListener(Protocol):
    """Who hears of an attempt's heartbeats (the worker's ``loom.heartbeats.HeartbeatKeeper``)."""

    def beaten(self, control: AttemptControl) -> None: ...


_LOCK = threading.Lock()
"""Guards every attempt's beat and cancel state: held for a few assignments at a time, and
never while calling out, so one lock for all costs less than one made per attempt."""


class AttemptControl:
    """The worker's handle on one attempt: what it is, its latest heartbeat, its cancellation.

    Thread-safe: a sync activity beats from its own thread while the worker reads and cancels
    from the event loop. ``listener.beaten(control)`` is called on ``loop`` after each heartbeat
    (a listener rather than a callback: an attempt's control then needs no closure or bound
    method of its own)."""

    __slots__ = (  # one is made for every attempt
        "__weakref__",
        "_info",
        "_listener",
        "_loop",
        "_max_bytes",
        "_notified",
        "_now",
        "_reason",
        "_unwritten",
        "activity_name",
        "attempt",
        "beats",
        "deadline",
        "details",
        "heartbeat_timeout",
        "last_beat",
        "previous_details",
        "run_id",
        "seq",
        "started",
        "step",
        "timeout",
        "workflow_id",
    )

    def __init__(
        self,
        *,
        workflow_id: str,
        activity_name: str,
        seq: int,
        run_id: str | None = None,
        step: str | None,
        attempt: int,
        timeout: float | None,
        heartbeat_timeout: float | None,
        previous_details: str | None = None,
        max_bytes: int = limits.DEFAULT_MAX_PAYLOAD_BYTES,
        listener: BeatListener | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.workflow_id = workflow_id
        self.run_id = run_id
        self._now = now
        """The time of day of the worker's clock (a test's virtual one): for the deadline shown
        and the heartbeat times; the timeouts themselves count real seconds of running."""
        self.activity_name = activity_name
        self.seq = seq
        self.step = step
        self.attempt = attempt
        self.timeout = timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.previous_details = previous_details
        self._max_bytes = max_bytes
        self._listener = listener
        self._loop = loop
        self._reason: str | None = None
        self._unwritten: Beat | None = None
        self._notified = False
        self.details: str | None = previous_details
        """The latest details known for the activity: this attempt's last, else the earlier
        run's (what a next attempt gets)."""
        self.last_beat = time.monotonic()
        """When (monotonic) it last beat, or started running: its heartbeat timeout counts
        from there."""
        self.beats = 0
        self.started = False
        self.deadline: float | None = None
        self._info: ActivityInfo | None = None

    # -- the attempt's side ---------------------------------------------------------------
    def start(self) -> None:
        """The attempt starts running now: its clocks start."""
        self.started = True
        self.last_beat = time.monotonic()
        self.deadline = None if self.timeout is None else self._now() + self.timeout

    @property
    def info(self) -> ActivityInfo:
        """What the attempt sees (made when first asked for: most attempts never ask)."""
        if self._info is None:
            previous = self.previous_details
            details = None if previous is None else orjson.loads(previous)
            self._info = ActivityInfo(self, self.deadline, details)
        return self._info

    def beat(self, details: Any) -> None:
        """Record a heartbeat (any thread); raises once the attempt was cancelled."""
        reason = self._reason
        if reason is not None:
            raise ActivityCancelledError(self.activity_name, self.workflow_id, reason)
        text = None
        if details is not None:
            what = f"the heartbeat details of activity {self.activity_name!r}"
            data = codec.dumps(details, what=what, root="details")
            limits.check_size(data, self._max_bytes, what)
            text = data.decode()
        beat = Beat(text, self._now())
        with _LOCK:
            self.last_beat = time.monotonic()
            self.beats += 1
            self._unwritten = beat
            if text is not None:
                self.details = text
            notify, self._notified = not self._notified, True
        if notify and self._loop is not None:  # one wake-up, however fast it beats
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody records it now
                self._loop.call_soon_threadsafe(self._beaten)

    def _beaten(self) -> None:
        with _LOCK:
            self._notified = False
        if self._listener is not None:
            self._listener.beaten(self)

    # -- the worker's side ----------------------------------------------------------------
    @property
    def cancelled(self) -> bool:
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why it was cancelled (None while it is not)."""
        return self._reason

    def cancel(self, reason: str) -> None:
        """Cancel the attempt (the first reason given is kept): ``is_cancelled()`` turns true and
        its next heartbeat raises. Interrupting an async attempt is the caller's job."""
        with _LOCK:
            if self._reason is None:
                self._reason = reason

    def take_unwritten(self) -> Beat | None:
        """The latest beat not yet taken (to be written), with the latest details known; None
        when there is none."""
        with _LOCK:
            beat, self._unwritten = self._unwritten, None
            if beat is not None and beat.details is None and self.details is not None:
                beat = Beat(self.details, beat.at)
            return beat

    def put_back(self, beat: Beat) -> None:
        """``beat`` (taken) could not be written: the next write takes it, unless a newer beat
        came meanwhile."""
        with _LOCK:
            if self._unwritten is None:
                self._unwritten = beat

    def has_unwritten(self) -> bool:
        return self._unwritten is not None


_current: ContextVar[AttemptControl | None] = ContextVar("loom_activity_attempt", default=None)


class Running:
    """Within the block, the current context runs ``control``'s attempt, started now."""

    __slots__ = ("_control", "_token")

    def __init__(self, control: AttemptControl) -> None:
        self._control = control

    def __enter__(self) -> None:
        self._control.start()
        self._token = _current.set(self._control)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def current_attempt() -> AttemptControl | None:
    """The attempt whose context this is, if any (for log records: :mod:`loom.logs`)."""
    return _current.get()


def _running() -> AttemptControl:
    control = _current.get()
    if control is None or not control.started:
        raise NotInActivityError(
            "not inside a running activity: loom.activity_info() and loom.heartbeat() work only "
            "in a function decorated with @loom.activity while a worker runs it (not in workflow "
            "code, not when the function is called directly, not in a thread it started itself)"
        )
    return control


def activity_info() -> ActivityInfo:
    """The activity attempt running here: workflow id, activity name, attempt, deadline, the
    last heartbeat details of an earlier run, and whether it was cancelled.

    Raises :class:`~loom.errors.NotInActivityError` outside a running activity."""
    return _running().info


def heartbeat(details: Any = None) -> None:
    """Say that this activity attempt is alive, and record how far it got.

    ``details`` (JSON, a dataclass or a pydantic model; ``PayloadError`` otherwise, and
    ``PayloadTooLargeError`` above the database's ``max_payload_bytes``) are given to the
    activity's next attempt as ``activity_info().heartbeat_details``, should this one fail or
    its worker die; without details the last ones are kept. Cheap to call often: they are
    written at most once per second (or per third of a shorter ``heartbeat_timeout``), and
    always before a failed attempt is retried.

    Raises :class:`~loom.errors.ActivityCancelledError` once the attempt was cancelled, and
    :class:`~loom.errors.NotInActivityError` outside a running activity.
    """
    _running().beat(details)
