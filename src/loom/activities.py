"""Running one activity attempt: arguments rebuilt, timeouts enforced, failure classified.

The worker calls :func:`run_attempt` and records what it returns. Retries are not loops here:
a failed attempt with retries left is recorded (``ACTIVITY_FAILED`` with ``retry_at``) and the
next attempt is scheduled durably, so a crash between attempts neither loses nor repeats one.

The attempt runs in the context of its :class:`~loom.activity_context.AttemptControl`, so
``loom.activity_info()`` and ``loom.heartbeat()`` work in it (sync ones: in a copy of the
context, on their thread). Two clocks can end it, both counted from when it starts running:
``timeout_seconds``, and ``heartbeat_timeout`` since its last heartbeat. Either cancels the
attempt first (``is_cancelled()`` turns true, ``heartbeat()`` raises), then interrupts it.

Sync activities run on the worker's own :class:`ActivityPool`, never on the event loop's
default executor, so they neither compete with other code for threads nor wait behind it. An
attempt's timeout counts from the moment a thread picks it up; an attempt that gets no thread
within its timeout is withdrawn and never runs. A thread cannot be killed: a sync activity's
thread abandoned by a timeout or a cancel keeps running until the function returns, and holds
its pool slot until then.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loom import codec
from loom.activity_context import AttemptControl, Running
from loom.core.calls import ActivityRun
from loom.errors import ActivityHeartbeatTimeoutError, PayloadError
from loom.failures import describe_error, tail

if TYPE_CHECKING:
    from loom.worker import WorkerStats

log = logging.getLogger("loom.worker")


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None


# ------------------------------------------------------------------------- thread pool


class ActivityPool:
    """The threads one worker runs sync activities on.

    Its size bounds how many sync activities run at once. The thread of an attempt that timed
    out or was cancelled cannot be stopped: it stays busy ("stuck") until the function returns
    (the attempt sees ``is_cancelled()``, so it can return early). When every thread is stuck,
    no sync activity can start; that is logged once per episode and counted in
    ``stats.activity_pool_exhausted``, and ``stats.activity_threads_stuck`` says how many
    threads are held right now.
    """

    def __init__(
        self, threads: int, *, stats: WorkerStats | None = None, owner: str = "worker"
    ) -> None:
        self.size = threads
        self.owner = owner
        self._stats = stats
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._stuck = 0
        self._exhausted = False

    @property
    def stuck(self) -> int:
        """Threads held by abandoned attempts whose function has not returned yet."""
        return self._stuck

    def submit(self, fn: Callable[[], Any]) -> concurrent.futures.Future[Any]:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.size, thread_name_prefix=f"loom-activity-{self.owner}"
            )
        return self._executor.submit(fn)

    def shutdown(self) -> None:
        """Withdraw queued attempts and let idle threads exit; running ones finish on their own
        (a later :meth:`submit` starts a fresh set of threads)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def abandoned(self, future: concurrent.futures.Future[Any]) -> None:
        """``future``'s attempt timed out or was cancelled while its thread runs on: the thread
        is stuck until the function returns."""
        with self._lock:
            self._stuck += 1
            self._count()
            if self._stuck >= self.size and not self._exhausted:
                self._exhausted = True
                if self._stats is not None:
                    self._stats.activity_pool_exhausted += 1
                log.warning(
                    "%s: all %d activity threads are held by timed-out or cancelled sync "
                    "activities that are still running (a thread cannot be stopped); no sync "
                    "activity can start until one returns. Make the activities give up by "
                    "themselves (loom.activity_info().is_cancelled()) before their timeout, or "
                    "give the worker more threads (activity_threads=..., "
                    "loom worker --activity-threads)",
                    self.owner,
                    self.size,
                )
        future.add_done_callback(self._returned)

    def _returned(self, _future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._stuck -= 1
            self._count()
            if self._exhausted and self._stuck < self.size:
                self._exhausted = False
                log.warning(
                    "%s: a stuck activity thread returned; activities run again", self.owner
                )

    def _count(self) -> None:
        if self._stats is not None:
            self._stats.activity_threads_stuck = self._stuck


class _AttemptTimeout(Exception):
    """Loom's own timeout of an attempt (as opposed to a TimeoutError the activity raised):
    ``kind`` is the error it is recorded as, TimeoutError or ActivityHeartbeatTimeoutError."""

    def __init__(
        self, message: str, where: str | None, kind: type[TimeoutError] = TimeoutError
    ) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.kind = kind


class _Clocks:
    """The two clocks of an attempt that started running at ``began`` (monotonic): its timeout,
    and its heartbeat timeout since its last heartbeat (or its start)."""

    __slots__ = ("began", "control", "heartbeat_timeout", "timeout")

    def __init__(self, control: AttemptControl, timeout: float | None, began: float) -> None:
        self.control = control
        self.timeout = timeout
        self.heartbeat_timeout = control.heartbeat_timeout
        self.began = began

    def _silent_since(self) -> float:
        return max(self.control.last_beat, self.began)

    def next(self) -> float | None:
        """When (monotonic) the next clock runs out, or None when neither can."""
        at = None if self.timeout is None else self.began + self.timeout
        if self.heartbeat_timeout is not None:
            silent = self._silent_since() + self.heartbeat_timeout
            if at is None or silent < at:
                at = silent
        return at

    def expired(self) -> _AttemptTimeout | None:
        """The timeout to fail the attempt with if a clock ran out (it is cancelled first, so
        that it sees ``is_cancelled()`` while it stops), else None."""
        now = time.monotonic()
        if self.timeout is not None and now >= self.began + self.timeout:
            found = _AttemptTimeout(_timed_out(self.timeout), None)
        elif (
            self.heartbeat_timeout is not None
            and now >= self._silent_since() + self.heartbeat_timeout
        ):
            found = _AttemptTimeout(
                f"no heartbeat within its heartbeat_timeout of {self.heartbeat_timeout} s",
                None,
                ActivityHeartbeatTimeoutError,
            )
        else:
            return None
        self.control.cancel(found.message)
        return found


# ------------------------------------------------------------------------------ running


@dataclass(frozen=True, slots=True)
class _Parameters:
    """What binding needs of an activity's signature, worked out once per function."""

    signature: inspect.Signature
    positional: tuple[str, ...] | None
    """The positional parameters' names, in order, when a call with positional arguments only
    binds them one to one (no ``*args``, no required keyword-only parameter); else None."""
    required: int
    """How many of ``positional`` have no default."""


@functools.lru_cache(maxsize=1024)
def _parameters(fn: Callable[..., Any]) -> _Parameters:
    """``inspect.signature`` costs more than running a no-op activity: once per function."""
    signature = inspect.signature(fn)
    params = signature.parameters.values()
    named = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    simple = not any(
        p.kind is p.VAR_POSITIONAL or (p.kind is p.KEYWORD_ONLY and p.default is p.empty)
        for p in params
    )
    return _Parameters(
        signature,
        tuple(p.name for p in named) if simple else None,
        sum(p.default is p.empty for p in named),
    )


def _bind_args(run: ActivityRun) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild arguments from their stored JSON as the parameters' annotations say."""
    types = run.definition.arg_types
    if not types:
        return run.args, run.kwargs
    parameters = _parameters(run.definition.fn)
    positional, args = parameters.positional, run.args
    if (
        positional is not None
        and not run.kwargs
        and parameters.required <= len(args) <= len(positional)
    ):  # Signature.bind would bind them one to one: no need to ask it
        return [
            value
            # No annotation, or an exact scalar of its type (codec.convert would return it):
            # kept as it is, without building the error text a conversion needs.
            if (annotation := types.get(name)) is None
            or (type(value) is annotation and annotation in codec.SCALARS)
            else _convert(run, name, value)
            for name, value in zip(positional, args, strict=False)
        ], {}
    signature = parameters.signature
    try:
        bound = signature.bind(*args, **run.kwargs)
    except TypeError:
        return args, run.kwargs  # the call itself will raise the clear TypeError
    for name, value in bound.arguments.items():
        if name not in types:
            continue
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            bound.arguments[name] = tuple(_convert(run, name, v) for v in value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: _convert(run, name, v) for k, v in value.items()}
        else:
            bound.arguments[name] = _convert(run, name, value)
    return list(bound.args), dict(bound.kwargs)


def _convert(run: ActivityRun, name: str, value: Any) -> Any:
    what = f"argument {name!r} of activity {run.definition.name!r}"
    return codec.convert(value, run.definition.arg_types[name], what=what)


async def _call(run: ActivityRun, pool: ActivityPool, control: AttemptControl) -> Any:
    args, kwargs = _bind_args(run)
    fn = run.definition.fn
    timeout = run.definition.timeout_seconds
    if not run.definition.is_async:

        def call() -> Any:
            with Running(control):
                return fn(*args, **kwargs)

        return await _in_thread(pool, call, timeout, control)
    with Running(control):
        if control.heartbeat_timeout is None:
            if timeout is None:
                return await fn(*args, **kwargs)  # no clock can end it: nothing to watch
            # One clock, which no heartbeat moves: a plain timer ends it (cancelling the
            # attempt first, as a _Watch does), with no watch or clocks to make.
            try:
                async with asyncio.timeout(None) as limit:
                    timer = asyncio.get_running_loop().call_later(
                        timeout, _time_out, control, limit, timeout
                    )
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        timer.cancel()
            except TimeoutError as exc:
                if not limit.expired():
                    raise  # raised by the activity itself (only the timer expires ``limit``)
                where = exc.__cause__.__traceback__ if exc.__cause__ is not None else None
                raise _AttemptTimeout(_timed_out(timeout), _timed_out_at(where)) from None
        clocks = _Clocks(control, timeout, time.monotonic())
        try:
            async with asyncio.timeout(None) as limit:
                watch = _Watch(limit, clocks)
                try:
                    return await fn(*args, **kwargs)
                finally:
                    watch.stop()
        except TimeoutError as exc:
            if watch.expired is None:
                raise  # raised by the activity itself
            # The cancellation that ended it was raised where the activity was awaiting.
            where = exc.__cause__.__traceback__ if exc.__cause__ is not None else None
            watch.expired.where = _timed_out_at(where)
            raise watch.expired from None


def _timed_out(timeout: float) -> str:
    return f"timed out after {timeout} s"


def _time_out(control: AttemptControl, limit: asyncio.Timeout, timeout: float) -> None:
    control.cancel(_timed_out(timeout))
    limit.reschedule(asyncio.get_running_loop().time())  # interrupt it now


class _Watch:
    """Ends an async attempt through its ``asyncio.timeout`` when one of its clocks runs out."""

    __slots__ = ("_clocks", "_handle", "_limit", "_loop", "expired")

    def __init__(self, limit: asyncio.Timeout, clocks: _Clocks) -> None:
        self._limit = limit
        self._clocks = clocks
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self.expired: _AttemptTimeout | None = None
        self._arm()

    def _arm(self) -> None:
        at = self._clocks.next()
        if at is not None:
            self._handle = self._loop.call_later(max(0.0, at - time.monotonic()), self._check)

    def _check(self) -> None:
        self._handle = None
        expired = self._clocks.expired()
        if expired is None:
            self._arm()  # it beat meanwhile: the heartbeat clock starts again from that beat
            return
        self.expired = expired
        self._limit.reschedule(self._loop.time())  # interrupt it now (CancelledError inside)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


@dataclass(slots=True)
class _Started:
    at: float | None = None
    thread: int | None = None


async def _in_thread(
    pool: ActivityPool, call: Callable[[], Any], timeout: float | None, control: AttemptControl
) -> Any:
    """Run ``call`` on ``pool``, in a copy of this context; its clocks count from when a thread
    picks it up. One that gets no thread within ``timeout`` is withdrawn (it never runs)."""
    loop = asyncio.get_running_loop()
    began: asyncio.Future[None] = loop.create_future()
    started = _Started()

    def work() -> Any:
        started.at, started.thread = time.monotonic(), threading.get_ident()
        try:
            loop.call_soon_threadsafe(_resolve, began)
        except RuntimeError:  # the loop is closed: nobody waits for this attempt any more
            return None
        return call()

    future = pool.submit(functools.partial(contextvars.copy_context().run, work))
    result = asyncio.wrap_future(future)
    try:
        if timeout is None and control.heartbeat_timeout is None:
            return await result
        await asyncio.wait({began, result}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if not began.done():
            if result.done():
                return await result  # withdrawn (the worker stopped)
            if future.cancel():
                busy = (
                    f"{pool.stuck} held by timed-out or cancelled attempts still running"
                    if pool.stuck
                    else ""
                )
                raise _AttemptTimeout(
                    f"did not start within {timeout} s: all {pool.size} activity threads were "
                    f"busy{f' ({busy})' if busy else ''}, so it was not run; give the worker "
                    "more threads (activity_threads=..., loom worker --activity-threads)",
                    None,
                )
        # Started (perhaps just now, between the deadline and the withdrawal).
        clocks = _Clocks(control, timeout, started.at or time.monotonic())
        while not result.done():
            at = clocks.next()
            assert at is not None
            await asyncio.wait({result}, timeout=max(0.0, at - time.monotonic()))
            if result.done():
                break
            expired = clocks.expired()
            if expired is not None:
                expired.where = _thread_stack(started.thread)
                result.cancel()  # the thread runs on; its outcome is dropped
                pool.abandoned(future)
                raise expired
        return result.result()
    except asyncio.CancelledError:
        # Interrupted before a thread picked it up: it must never run. Once running, its thread
        # runs on until the function returns (it sees is_cancelled()).
        if not future.cancel() and not future.done():
            pool.abandoned(future)
        raise


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _thread_stack(ident: int | None) -> str | None:
    """Where a running thread is now: what a timed-out sync activity was doing."""
    frame = sys._current_frames().get(ident) if ident is not None else None
    if frame is None:
        return None
    try:
        return _timed_out_at("".join(traceback.format_stack(frame)))
    except Exception:
        return None


def _timed_out_at(where: str | TracebackType | None) -> str | None:
    """The recorded traceback of Loom's own timeout: where the activity was when it ran out."""
    if where is None:
        return None
    if not isinstance(where, str):
        try:
            where = "".join(traceback.format_tb(where))
        except Exception:
            return None
    return tail("Timed out while running (most recent call last):\n" + where)


async def run_attempt(
    run: ActivityRun, clock: Any, pool: ActivityPool, control: AttemptControl
) -> AttemptOutcome:
    """Run one attempt, under ``control``. ``clock()`` gives the current time, used to
    schedule a retry.

    An exception the activity raises is retried unless it is an instance of the activity's
    ``non_retryable`` classes (TimeoutError and its subclasses included). Loom's own timeouts
    (``timeout_seconds`` elapsed, or ``heartbeat_timeout`` without a heartbeat) are recorded as
    a TimeoutError and an ActivityHeartbeatTimeoutError: retried unless that class (or a base
    class of it, TimeoutError for both) is listed.
    """
    definition = run.definition
    try:
        value = await _call(run, pool, control)
        return AttemptOutcome(
            True, codec.to_json(value, what=f"the result of activity {definition.name!r}")
        )
    except asyncio.CancelledError:
        control.cancel("it was interrupted")
        raise
    except _AttemptTimeout as exc:
        error: dict[str, Any] = {
            "type": exc.kind.__name__,
            "message": exc.message,
            "traceback": exc.where,
            "cause": None,
        }
        retryable = not issubclass(exc.kind, definition.non_retryable)
    except PayloadError as exc:
        error, retryable = describe_error(exc), False
    except Exception as exc:
        error = describe_error(exc)
        retryable = not isinstance(exc, definition.non_retryable)
    if retryable and run.attempt <= definition.retry_count:
        retry_at = clock() + definition.delay_before(run.attempt + 1)
        return AttemptOutcome(False, error=error, retry_at=retry_at)
    return AttemptOutcome(False, error=error)
