"""``@workflow``, ``@step`` and ``@activity``: validated at import, immutable afterwards.

A decorator checks its target at once and attaches a frozen definition, so a malformed workflow
fails when its module is imported, with a message that says how to fix it, not hours later inside
a worker. Decorated workflows and activities are recorded in a :class:`Registry`; the worker finds
workflow classes there by name. The default registry is filled by the decorators; tests and
embedders can pass their own.

This module sits below :mod:`loom.core` (the engine reads these definitions) and imports nothing
of it at run time: ``@workflow`` recognises a workflow class by :class:`WorkflowBase`, which
``loom.Workflow`` derives from.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from loom.errors import DefinitionError, UnknownWorkflowTypeError

if TYPE_CHECKING:
    from loom.core.workflow import Workflow

F = TypeVar("F", bound=Callable[..., Any])
W = TypeVar("W", bound="type[Workflow[Any, Any]]")

_STEP_ATTR = "__loom_step__"
_ACTIVITY_ATTR = "__loom_activity__"
_WORKFLOW_ATTR = "__loom_workflow__"


@dataclass(frozen=True, slots=True)
class StepDefinition:
    name: str
    attribute: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class ActivityDefinition:
    """How one activity runs: name, timeout and retry policy.

    ``retry_count`` is the number of retries after the first attempt. The n-th retry waits
    ``min(retry_delay * retry_backoff ** (n - 1), retry_max_delay)`` seconds. Exceptions that are
    instances of ``non_retryable`` fail the activity at once, TimeoutError subclasses included;
    an attempt that exceeds ``timeout_seconds`` fails with a TimeoutError, which is retried
    unless TimeoutError (or a base class of it) is listed. With ``heartbeat_timeout``, an
    attempt that goes that long without calling ``loom.heartbeat()`` (counted from its start)
    fails with :class:`~loom.errors.ActivityHeartbeatTimeoutError`, a TimeoutError retried
    likewise.
    """

    name: str
    fn: Callable[..., Any]
    retry_count: int = 0
    timeout_seconds: float | None = 60.0
    retry_delay: float = 1.0
    retry_backoff: float = 2.0
    retry_max_delay: float = 60.0
    non_retryable: tuple[type[BaseException], ...] = ()
    is_async: bool = True
    return_annotation: Any = None
    description: str | None = None
    arg_types: Mapping[str, Any] = field(default_factory=dict)
    """Annotated parameters: their stored JSON is rebuilt as the annotation says (see
    :func:`loom.codec.convert`); for ``*args``/``**kwargs`` the annotation is each item's."""
    heartbeat_timeout: float | None = None
    """The longest an attempt may go without a heartbeat (None: no limit)."""

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 = first retry)."""
        if attempt <= 1:
            return 0.0
        return min(self.retry_delay * self.retry_backoff ** (attempt - 2), self.retry_max_delay)


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    name: str
    version: str
    cls: type[Any]
    steps: tuple[StepDefinition, ...]
    description: str | None = None


class WorkflowBase:
    """The root of :class:`loom.Workflow`: what ``@workflow`` accepts. Subclass ``loom.Workflow``,
    not this; it exists so that definitions need not import the engine that reads them."""

    __slots__ = ()


class Registry:
    """Workflow classes and activities by name: how a worker finds the code for a stored row.

    Names are unique per registry: registering a second class or function under a taken name
    raises :class:`~loom.errors.DefinitionError` (the same one again, e.g. a reloaded module, is
    accepted and replaces the first).
    """

    def __init__(self) -> None:
        self._workflows: dict[str, WorkflowDefinition] = {}
        self._activities: dict[str, ActivityDefinition] = {}

    def add_workflow(self, definition: WorkflowDefinition) -> None:
        existing = self._workflows.get(definition.name)
        if existing is not None and _qualname(existing.cls) != _qualname(definition.cls):
            raise DefinitionError(
                f"two workflow classes are named {definition.name!r}: "
                f"{_qualname(existing.cls)} and {_qualname(definition.cls)}; "
                "give one of them another name=..."
            )
        self._workflows[definition.name] = definition

    def add_activity(self, definition: ActivityDefinition) -> None:
        """Record an activity; a second function under the same name raises, as for workflows.

        The same function defined again (its module reloaded) replaces the first.
        """
        existing = self._activities.get(definition.name)
        if existing is not None and _qualname(existing.fn) != _qualname(definition.fn):
            raise DefinitionError(
                f"two activities are named {definition.name!r}: "
                f"{_qualname(existing.fn)} and {_qualname(definition.fn)}; "
                "give one of them another name=..."
            )
        self._activities[definition.name] = definition

    def workflow(self, name: str, workflow_id: str | None = None) -> WorkflowDefinition:
        try:
            return self._workflows[name]
        except KeyError:
            raise UnknownWorkflowTypeError(name, workflow_id) from None

    def workflows(self) -> list[WorkflowDefinition]:
        return list(self._workflows.values())

    def activities(self) -> list[ActivityDefinition]:
        return list(self._activities.values())


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


default_registry = Registry()
"""Filled by the decorators; the worker and client use it unless given another."""


# --------------------------------------------------------------------------- @step


def _make_step(fn: Any, name: str | None, description: str | None) -> Any:
    if isinstance(fn, staticmethod | classmethod) or not inspect.isfunction(fn):
        raise DefinitionError(
            f"@loom.step must decorate a method `async def name(self, ctx)`, got {fn!r}"
        )
    where = _qualname(fn)
    if not inspect.iscoroutinefunction(fn):
        raise DefinitionError(f"step {where} must be `async def {fn.__name__}(self, ctx)`")
    params = list(inspect.signature(fn).parameters.values())
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    extra_required = [p for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if len(positional) != 2 or extra_required:
        raise DefinitionError(
            f"step {where} must take exactly (self, ctx); it takes "
            f"({', '.join(p.name for p in params)})"
        )
    step_name = name or fn.__name__
    if not isinstance(step_name, str) or not step_name:
        raise DefinitionError(f"step {where}: name must be a non-empty string")
    setattr(fn, _STEP_ATTR, StepDefinition(step_name, fn.__name__, description or fn.__doc__))
    return fn


@overload
def step(fn: F, /) -> F: ...
@overload
def step(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...


def step(
    fn: F | None = None, /, *, name: str | None = None, description: str | None = None
) -> F | Callable[[F], F]:
    """Mark ``async def method(self, ctx)`` as a workflow step. Steps run in definition order."""
    if fn is not None:
        return _make_step(fn, None, None)  # type: ignore[no-any-return]

    def decorate(f: F) -> F:
        return _make_step(f, name, description)  # type: ignore[no-any-return]

    return decorate


def step_definition(obj: Any) -> StepDefinition | None:
    return getattr(obj, _STEP_ATTR, None)


# ----------------------------------------------------------------------- @activity


def _finite(value: Any) -> bool:
    """A real number a clock can add: not a bool, NaN, an infinity or an int beyond floats."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _make_activity(
    fn: Any,
    *,
    name: str | None,
    retry_count: int,
    timeout_seconds: float | None,
    retry_delay: float,
    retry_backoff: float,
    retry_max_delay: float,
    non_retryable: tuple[type[BaseException], ...],
    description: str | None,
    registry: Registry,
    heartbeat_timeout: float | None = None,
) -> Any:
    if not inspect.isfunction(fn):
        raise DefinitionError(
            f"@loom.activity must decorate a function (def or async def), got {fn!r}"
        )
    where = _qualname(fn)
    if not isinstance(retry_count, int) or retry_count < 0:
        raise DefinitionError(f"activity {where}: retry_count must be an int >= 0")
    for option, value in [
        ("timeout_seconds", timeout_seconds),
        ("heartbeat_timeout", heartbeat_timeout),
        ("retry_delay", retry_delay),
        ("retry_backoff", retry_backoff),
        ("retry_max_delay", retry_max_delay),
    ]:
        if value is None and "timeout" in option:
            continue
        if not _finite(value):
            raise DefinitionError(
                f"activity {where}: {option} must be a finite number, got {value!r}"
                + (" (None means no timeout)" if "timeout" in option else "")
            )
    if timeout_seconds is not None and timeout_seconds <= 0:
        raise DefinitionError(f"activity {where}: timeout_seconds must be > 0 or None")
    if heartbeat_timeout is not None:
        if heartbeat_timeout <= 0:
            raise DefinitionError(f"activity {where}: heartbeat_timeout must be > 0 or None")
        if timeout_seconds is not None and heartbeat_timeout >= timeout_seconds:
            raise DefinitionError(
                f"activity {where}: heartbeat_timeout ({heartbeat_timeout} s) must be shorter "
                f"than timeout_seconds ({timeout_seconds} s), or it never fires first"
            )
    if retry_delay < 0 or retry_backoff < 1 or retry_max_delay < 0:
        raise DefinitionError(
            f"activity {where}: need retry_delay >= 0, retry_backoff >= 1, retry_max_delay >= 0"
        )
    for exc in non_retryable:
        if not (isinstance(exc, type) and issubclass(exc, BaseException)):
            raise DefinitionError(
                f"activity {where}: non_retryable must hold exception classes, got {exc!r}"
            )
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = {}
    arg_types = {param: hint for param, hint in hints.items() if param != "return"}
    definition = ActivityDefinition(
        name=name or fn.__name__,
        fn=fn,
        retry_count=retry_count,
        timeout_seconds=timeout_seconds,
        retry_delay=retry_delay,
        retry_backoff=retry_backoff,
        retry_max_delay=retry_max_delay,
        non_retryable=tuple(non_retryable),
        is_async=inspect.iscoroutinefunction(fn),
        return_annotation=hints.get("return"),
        description=description or fn.__doc__,
        arg_types=arg_types,
        heartbeat_timeout=heartbeat_timeout,
    )
    setattr(fn, _ACTIVITY_ATTR, definition)
    registry.add_activity(definition)
    return fn


@overload
def activity(fn: F, /) -> F: ...
@overload
def activity(
    *,
    name: str | None = None,
    retry_count: int = 0,
    timeout_seconds: float | None = 60.0,
    retry_delay: float = 1.0,
    retry_backoff: float = 2.0,
    retry_max_delay: float = 60.0,
    non_retryable: tuple[type[BaseException], ...] = (),
    description: str | None = None,
    registry: Registry | None = None,
    heartbeat_timeout: float | None = None,
) -> Callable[[F], F]: ...


def activity(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    retry_count: int = 0,
    timeout_seconds: float | None = 60.0,
    retry_delay: float = 1.0,
    retry_backoff: float = 2.0,
    retry_max_delay: float = 60.0,
    non_retryable: tuple[type[BaseException], ...] = (),
    description: str | None = None,
    registry: Registry | None = None,
    heartbeat_timeout: float | None = None,
) -> F | Callable[[F], F]:
    """Declare a side-effecting function that workflows call with ``await ctx.activity(fn, ...)``.

    The function is returned unchanged (callable directly in tests); sync functions run on the
    worker's activity threads. A thread cannot be killed: when a sync activity times out, its
    thread keeps running until the function returns, and its result is ignored. Execution is
    at-least-once and the result is recorded exactly once.

    ``heartbeat_timeout`` (seconds, shorter than ``timeout_seconds``) fails an attempt that goes
    that long without calling ``loom.heartbeat()``, so a stuck attempt is retried long before
    its full timeout.
    """
    options: dict[str, Any] = dict(
        name=name,
        retry_count=retry_count,
        timeout_seconds=timeout_seconds,
        retry_delay=retry_delay,
        retry_backoff=retry_backoff,
        retry_max_delay=retry_max_delay,
        non_retryable=non_retryable,
        description=description,
        registry=registry or default_registry,
        heartbeat_timeout=heartbeat_timeout,
    )
    if fn is not None:
        return _make_activity(fn, **options)  # type: ignore[no-any-return]

    def decorate(f: F) -> F:
        return _make_activity(f, **options)  # type: ignore[no-any-return]

    return decorate


def activity_definition(fn: Any) -> ActivityDefinition:
    definition = getattr(fn, _ACTIVITY_ATTR, None)
    if not isinstance(definition, ActivityDefinition):
        raise DefinitionError(
            f"{fn!r} is not an activity; decorate it with @loom.activity before passing it "
            "to ctx.activity()"
        )
    return definition


# ----------------------------------------------------------------------- @workflow


def collect_steps(cls: type[Any]) -> tuple[StepDefinition, ...]:
    """Steps in definition order; base-class steps first, an override keeps its base's place."""
    ordered: dict[str, StepDefinition] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            definition = step_definition(value)
            if definition is not None:
                ordered[attr] = definition
            elif attr in ordered:
                del ordered[attr]  # overridden by a plain method: no longer a step
    return tuple(ordered.values())


def _make_workflow(
    cls: Any, name: str | None, version: str, description: str | None, registry: Registry
) -> Any:
    if not (isinstance(cls, type) and issubclass(cls, WorkflowBase)):
        raise DefinitionError(
            f"@loom.workflow must decorate a subclass of loom.Workflow[InputT, StateT], got {cls!r}"
        )
    where = _qualname(cls)
    steps = collect_steps(cls)
    if not steps:
        raise DefinitionError(
            f"workflow {where} has no steps; add at least one `@loom.step async def "
            "name(self, ctx)` method"
        )
    seen: dict[str, str] = {}
    for s in steps:
        if s.name in seen:
            raise DefinitionError(
                f"workflow {where}: steps {seen[s.name]!r} and {s.attribute!r} share the name "
                f"{s.name!r}; step names must be unique"
            )
        seen[s.name] = s.attribute
    if not isinstance(version, str) or not version:
        raise DefinitionError(f"workflow {where}: version must be a non-empty string")
    definition = WorkflowDefinition(
        name=name or cls.__name__,
        version=version,
        cls=cls,
        steps=steps,
        description=description or cls.__doc__,
    )
    setattr(cls, _WORKFLOW_ATTR, definition)
    registry.add_workflow(definition)
    return cls


@overload
def workflow(cls: W, /) -> W: ...
@overload
def workflow(
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    registry: Registry | None = None,
) -> Callable[[W], W]: ...


def workflow(
    cls: W | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    registry: Registry | None = None,
) -> W | Callable[[W], W]:
    """Register a :class:`loom.Workflow` subclass under ``name`` (default: the class name)."""
    reg = registry or default_registry
    if cls is not None:
        return _make_workflow(cls, None, version, description, reg)  # type: ignore[no-any-return]

    def decorate(c: W) -> W:
        return _make_workflow(c, name, version, description, reg)  # type: ignore[no-any-return]

    return decorate


def workflow_definition(cls: Any) -> WorkflowDefinition:
    definition = cls.__dict__.get(_WORKFLOW_ATTR) if isinstance(cls, type) else None
    if not isinstance(definition, WorkflowDefinition):
        raise DefinitionError(
            f"{cls!r} is not a registered workflow; decorate it with @loom.workflow"
        )
    return definition
