"""Fakes for activities, for one test environment only.

``env.mock_activity(charge_card, returns={"id": "r-1"})`` makes the environment's worker run a
fake wherever a workflow calls ``charge_card``: the real function stays untouched (other tests,
other environments and direct calls still run it), because the fake lives in the environment's
own registry overlay (:meth:`loom.Registry.override_activity`). The fake keeps the activity's
name, retry policy, timeout and ``non_retryable``, so ``raises=`` exercises the workflow's
retries and its compensation exactly as a real failure would.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, NamedTuple

from loom import codec
from loom.definitions import (
    ActivityDefinition,
    Registry,
    activity_definition,
    parameter_annotations,
)
from loom.errors import ConfigurationError


class Call(NamedTuple):
    """One attempt the fake ran: the arguments as the activity received them."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]


class ActivityMock:
    """A fake standing in for one activity; ``calls`` lists the attempts it ran, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.calls: list[Call] = []
        self._lock = threading.Lock()  # sync fakes run on the worker's threads

    def __repr__(self) -> str:
        return f"ActivityMock({self.name!r}, calls={len(self.calls)})"

    @property
    def call_count(self) -> int:
        return len(self.calls)

    def _record(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        with self._lock:
            self.calls.append(Call(args, kwargs))


_UNSET: Any = object()


def install_mock(
    registry: Registry,
    target: Callable[..., Any] | str,
    fake: Callable[..., Any] | None,
    returns: Any,
    raises: BaseException | type[BaseException] | None,
) -> ActivityMock:
    """Make ``registry``'s workers run a fake for activity ``target`` (its function or name)."""
    original = _definition(registry, target)
    given = [fake is not None, returns is not _UNSET, raises is not None]
    if sum(given) != 1:
        raise ConfigurationError(
            f"mock_activity({original.name!r}, ...) takes exactly one of a function, returns= "
            "or raises="
        )
    mock = ActivityMock(original.name)
    if fake is not None:
        if not callable(fake):
            raise ConfigurationError(
                f"the fake for activity {original.name!r} must be callable, got {fake!r}"
            )
        replacement = _wrapping(original, fake, mock)
    elif raises is not None:
        replacement = _raising(original, raises, mock)
    else:
        # Checked now, not when a workflow runs it: a value the store cannot hold is a mistake.
        codec.to_json(returns, what=f"returns= of the mock of activity {original.name!r}")
        replacement = _returning(original, returns, mock)
    registry.override_activity(original.name, replacement)
    return mock


def _definition(registry: Registry, target: Callable[..., Any] | str) -> ActivityDefinition:
    if not isinstance(target, str):
        return activity_definition(target)
    known = {d.name: d for d in registry.activities()}
    found = known.get(target)
    if found is None:
        names = ", ".join(sorted(map(repr, known))) or "none"
        raise ConfigurationError(
            f"no activity named {target!r} is registered (registered: {names}); pass the "
            "activity's function, or import the module that defines it"
        )
    return found


def _wrapping(
    original: ActivityDefinition, fake: Callable[..., Any], mock: ActivityMock
) -> ActivityDefinition:
    """The activity running ``fake`` (sync or async), its arguments rebuilt by the fake's own
    annotations as the real function's would be by its."""
    is_async = inspect.iscoroutinefunction(fake) or inspect.iscoroutinefunction(
        getattr(fake, "__call__", None)  # noqa: B004 (an async callable object)
    )
    if is_async:

        @functools.wraps(fake)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            mock._record(args, kwargs)
            return await fake(*args, **kwargs)

        fn: Callable[..., Any] = run_async
    else:

        @functools.wraps(fake)
        def run_sync(*args: Any, **kwargs: Any) -> Any:
            mock._record(args, kwargs)
            return fake(*args, **kwargs)

        fn = run_sync
    return dataclasses.replace(
        original, fn=fn, is_async=is_async, arg_types=parameter_annotations(fake)
    )


def _returning(original: ActivityDefinition, value: Any, mock: ActivityMock) -> ActivityDefinition:
    async def returning(*args: Any, **kwargs: Any) -> Any:
        mock._record(args, kwargs)
        return value

    return dataclasses.replace(original, fn=returning, is_async=True, arg_types={})


def _raising(
    original: ActivityDefinition,
    raises: BaseException | type[BaseException],
    mock: ActivityMock,
) -> ActivityDefinition:
    if not (
        isinstance(raises, BaseException)
        or (isinstance(raises, type) and issubclass(raises, BaseException))
    ):
        raise ConfigurationError(
            f"raises= of the mock of activity {original.name!r} must be an exception or an "
            f"exception class, got {raises!r}"
        )

    async def raising(*args: Any, **kwargs: Any) -> Any:
        mock._record(args, kwargs)
        if isinstance(raises, BaseException):
            raise raises.with_traceback(None)
        raise raises()

    return dataclasses.replace(original, fn=raising, is_async=True, arg_types={})


__all__ = ["ActivityMock", "Call", "install_mock"]
