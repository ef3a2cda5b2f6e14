"""Running one activity attempt: arguments rebuilt, timeout enforced, failure classified.

The worker calls :func:`run_attempt` and records what it returns. Retries are not loops here:
a failed attempt with retries left is recorded (``ACTIVITY_FAILED`` with ``retry_at``) and the
next attempt is scheduled durably, so a crash between attempts neither loses nor repeats one.
"""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass
from typing import Any

from loom import codec
from loom.core.replay import ActivityRun
from loom.errors import PayloadError


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None


def _bind_args(run: ActivityRun) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild dataclass/pydantic arguments from their stored JSON using the annotations."""
    types = run.definition.arg_types
    if not types:
        return run.args, run.kwargs
    fn = run.definition.fn
    try:
        bound = inspect.signature(fn).bind(*run.args, **run.kwargs)
    except TypeError:
        return run.args, run.kwargs  # the call itself will raise the clear TypeError
    for name, value in bound.arguments.items():
        if name in types:
            bound.arguments[name] = codec.convert(value, types[name])
    return list(bound.args), dict(bound.kwargs)


async def _call(run: ActivityRun) -> Any:
    args, kwargs = _bind_args(run)
    fn = run.definition.fn
    if run.definition.is_async:
        return await fn(*args, **kwargs)
    return await asyncio.to_thread(fn, *args, **kwargs)


async def run_attempt(run: ActivityRun, clock: Any) -> AttemptOutcome:
    """Run one attempt. ``clock()`` gives the current time, used to schedule a retry."""
    definition = run.definition
    try:
        async with asyncio.timeout(definition.timeout_seconds):
            value = await _call(run)
        return AttemptOutcome(
            True, codec.to_json(value, what=f"the result of activity {definition.name!r}")
        )
    except asyncio.CancelledError:
        raise
    except TimeoutError as exc:
        error = _describe(exc)
        if not str(exc):
            error["message"] = f"timed out after {definition.timeout_seconds} s"
        retryable = True
    except PayloadError as exc:
        error, retryable = _describe(exc), False
    except Exception as exc:
        error = _describe(exc)
        retryable = not isinstance(exc, definition.non_retryable)
    if retryable and run.attempt <= definition.retry_count:
        retry_at = clock() + definition.delay_before(run.attempt + 1)
        return AttemptOutcome(False, error=error, retry_at=retry_at)
    return AttemptOutcome(False, error=error)


def _describe(exc: BaseException) -> dict[str, Any]:
    return {"type": type(exc).__name__, "message": str(exc)}
