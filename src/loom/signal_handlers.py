"""``@loom.signal``: workflow methods that apply a signal to the state whenever it arrives.

A handler ``(self, ctx, payload)`` runs when its signal is delivered, whichever step is running
(on that step's instance), and changes the state through ``ctx.state``; a step waits for the
change with ``await ctx.wait_until(lambda: ...)``. The delivery is recorded (SIGNAL_RECEIVED with
no wait of its own), so replay runs the handler at the same point. Handlers are collected when
``@loom.workflow`` validates the class, so a malformed one fails at import.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from loom.errors import DefinitionError

F = TypeVar("F", bound=Callable[..., Any])

_SIGNAL_ATTR = "__loom_signal__"


def _mark(fn: Any, name: str | None) -> Any:
    if isinstance(fn, staticmethod | classmethod) or not inspect.isfunction(fn):
        raise DefinitionError(
            f"@loom.signal must decorate a method `def name(self, ctx, payload)`, got {fn!r}"
        )
    where = f"{fn.__module__}.{fn.__qualname__}"
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    if len(params) != 3:
        raise DefinitionError(f"signal handler {where} must take exactly (self, ctx, payload)")
    signal_name = fn.__name__ if name is None else name
    if not isinstance(signal_name, str) or not signal_name:
        raise DefinitionError(f"signal handler {where}: the signal name must be a non-empty string")
    setattr(fn, _SIGNAL_ATTR, signal_name)
    return fn


@overload
def signal(fn: F, /) -> F: ...
@overload
def signal(name: str, /) -> Callable[[F], F]: ...


def signal(target: Any, /) -> Any:
    """Mark ``def method(self, ctx, payload)`` (or ``async def``) as the handler of a signal:
    ``@loom.signal("approve")``, or bare ``@loom.signal`` for the method's own name."""
    if isinstance(target, str):
        return lambda fn: _mark(fn, target)
    return _mark(target, None)


def collect_signal_handlers(cls: type[Any], where: str) -> dict[str, str]:
    """Signal name -> method name, base classes first; two handlers of one signal raise."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            name = getattr(value, _SIGNAL_ATTR, None)
            if not isinstance(name, str):
                continue
            other = found.get(name)
            if other is not None and other != attr:
                raise DefinitionError(
                    f"workflow {where}: methods {other!r} and {attr!r} both handle signal "
                    f"{name!r}; one signal has one handler"
                )
            found[name] = attr
    return found
