"""``@workflow``, ``@step``, ``@query``, ``@activity``: validated at import, immutable afterwards.

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
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, overload

from loom import limits
from loom.errors import DefinitionError, InvalidIdError, UnknownWorkflowTypeError
from loom.queues import DEFAULT_QUEUE, QueueLimits, Rate, check_queue
from loom.schedule_spec import ScheduleSpec
from loom.signal_handlers import collect_signal_handlers

if TYPE_CHECKING:
    from loom.core.workflow import Workflow

F = TypeVar("F", bound=Callable[..., Any])
W = TypeVar("W", bound="type[Workflow[Any, Any]]")

_STEP_ATTR = "__loom_step__"
_QUERY_ATTR = "__loom_query__"
_ACTIVITY_ATTR = "__loom_activity__"
_WORKFLOW_ATTR = "__loom_workflow__"


@dataclass(frozen=True, slots=True)
class StepDefinition:
    name: str
    attribute: str
    description: str | None = None


@dataclass(frozen=True, slots=True)
class QueryDefinition:
    """A read-only view of a workflow: ``method(self, ctx, *args)``, computed from the stored
    state and input without running, leasing or changing the workflow.

    ``parameters`` names what the method takes after ``ctx`` (``*rest`` for a var-positional
    one), for the dashboard and ``--help``-like listings; ``arg_types`` holds their annotations,
    by which the JSON arguments are rebuilt (as an activity's are).
    """

    name: str
    attribute: str
    description: str | None = None
    is_async: bool = False
    parameters: tuple[str, ...] = ()
    arg_types: Mapping[str, Any] = field(default_factory=dict)


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
    queue: str | None = None
    """The task queue its attempts run on (None: its workflow's): a worker serving it runs
    them, within its concurrency and rate limits."""

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
    signal_handlers: Mapping[str, str] = field(default_factory=dict)
    """Signal name -> the ``@loom.signal`` method that handles it."""
    queries: tuple[QueryDefinition, ...] = ()
    queue: str = DEFAULT_QUEUE
    """The task queue its runs go to unless a start names another."""

    def query(self, name: str) -> QueryDefinition | None:
        """The query named ``name``, or None."""
        return next((q for q in self.queries if q.name == name), None)


class WorkflowBase:
    """The root of :class:`loom.Workflow`: what ``@workflow`` accepts. Subclass ``loom.Workflow``,
    not this; it exists so that definitions need not import the engine that reads them."""

    __slots__ = ()


class Registry:
    """Workflow classes (by name and version) and activities (by name): how a worker finds the
    code for a stored row.

    Several versions of one workflow name may be registered side by side
    (``@loom.workflow(name="Order", version="2")``): a run stays on the version it started
    with, and a new start takes the newest (:func:`version_key`) unless one is named. A second
    class under a taken (name, version), or a second activity under a taken name, raises
    :class:`~loom.errors.DefinitionError`; the same class again (its module reloaded) is
    accepted and replaces the first, whatever its version now.

    A registry made with ``parent`` is an overlay: it finds everything its parent has (now and
    later) besides its own, and may run some activities differently (:meth:`override_activity`)
    without touching the parent, as a test environment replaces an activity by a fake.
    """

    def __init__(self, parent: Registry | None = None) -> None:
        self._workflows: dict[str, dict[str, WorkflowDefinition]] = {}
        self._activities: dict[str, ActivityDefinition] = {}
        self._schedules: dict[str, ScheduleSpec] = {}
        self._queues: dict[str, QueueLimits] = {}
        self._overrides: dict[str, ActivityDefinition] = {}
        self.parent = parent

    def add_workflow(self, definition: WorkflowDefinition) -> None:
        existing = self._versions(definition.name).get(definition.version)
        if existing is not None and _qualname(existing.cls) != _qualname(definition.cls):
            raise DefinitionError(
                f"two workflow classes are named {definition.name!r} with version "
                f"{definition.version!r}: {_qualname(existing.cls)} and "
                f"{_qualname(definition.cls)}; give one of them another name=... or version=..."
            )
        versions = self._workflows.setdefault(definition.name, {})
        for version, other in list(versions.items()):  # the same class, edited and reloaded
            if _qualname(other.cls) == _qualname(definition.cls):
                del versions[version]
        versions[definition.version] = definition

    def add_activity(self, definition: ActivityDefinition) -> None:
        """Record an activity; a second function under the same name raises, as for workflows.

        The same function defined again (its module reloaded) replaces the first.
        """
        existing = self._all_activities().get(definition.name)
        if existing is not None and _qualname(existing.fn) != _qualname(definition.fn):
            raise DefinitionError(
                f"two activities are named {definition.name!r}: "
                f"{_qualname(existing.fn)} and {_qualname(definition.fn)}; "
                "give one of them another name=..."
            )
        self._activities[definition.name] = definition

    def override_activity(self, name: str, definition: ActivityDefinition | None) -> None:
        """Run ``definition`` wherever activity ``name`` is called, for the workers of this
        registry only (None: the activity's own code again)."""
        if definition is None:
            self._overrides.pop(name, None)
        else:
            self._overrides[name] = definition

    def runnable(self, definition: ActivityDefinition) -> ActivityDefinition:
        """What a worker of this registry runs for ``definition``: its override, if any."""
        registry: Registry | None = self
        while registry is not None:
            found = registry._overrides.get(definition.name)
            if found is not None:
                return found
            registry = registry.parent
        return definition

    def _versions(self, name: str) -> dict[str, WorkflowDefinition]:
        own = self._workflows.get(name, {})
        if self.parent is None:
            return own
        return {**self.parent._versions(name), **own}

    def _all_activities(self) -> dict[str, ActivityDefinition]:
        if self.parent is None:
            return self._activities
        return {**self.parent._all_activities(), **self._activities}

    def workflow(
        self, name: str, workflow_id: str | None = None, version: str | None = None
    ) -> WorkflowDefinition:
        """The definition of ``name`` at ``version``, or its newest version when None."""
        versions = self._versions(name)
        if not versions:
            raise UnknownWorkflowTypeError(name, workflow_id)
        if version is None:
            return versions[max(versions, key=version_key)]
        found = versions.get(version)
        if found is None:
            raise UnknownWorkflowTypeError(name, workflow_id, version, sorted(versions))
        return found

    def workflows(self) -> list[WorkflowDefinition]:
        """Every registered workflow definition, each version of a name its own."""
        if self.parent is None:  # the worker asks before every claim: keep it cheap
            return [d for versions in self._workflows.values() for d in versions.values()]
        names = dict.fromkeys(self._names())
        return [d for name in names for d in self._versions(name).values()]

    def _names(self) -> list[str]:
        parents = self.parent._names() if self.parent is not None else []
        return [*parents, *self._workflows]

    def activities(self) -> list[ActivityDefinition]:
        return list(self._all_activities().values())

    def add_schedule(self, spec: ScheduleSpec) -> None:
        """Record a schedule declared in code (``loom.schedule``); workers and ``loom schedule
        sync`` write it to the database. Declaring the same one again (a reloaded module) is
        accepted; another definition under a taken name raises."""
        existing = self._schedules.get(spec.name)
        if existing is not None and existing != spec:
            raise DefinitionError(
                f"two different schedules are named {spec.name!r} ({existing.timing.describe()} "
                f"of {existing.workflow!r}, {spec.timing.describe()} of {spec.workflow!r}); "
                "give one of them another name"
            )
        self._schedules[spec.name] = spec

    def schedules(self) -> list[ScheduleSpec]:
        """The schedules declared in this registry (and, for an overlay, in its parent)."""
        parents = self.parent.schedules() if self.parent is not None else []
        own = {s.name: s for s in parents} | self._schedules
        return list(own.values())

    def add_queue(self, limits: QueueLimits) -> None:
        """Declare a queue's limits (the last declaration of a name wins); a worker writes them
        to the database when it starts."""
        self._queues[limits.name] = limits

    def queues(self) -> list[QueueLimits]:
        """The queue limits declared in code (``loom.queue``), a parent's included (this
        registry's own win)."""
        if self.parent is None:
            return list(self._queues.values())
        return list({**{q.name: q for q in self.parent.queues()}, **self._queues}.values())


def version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    """How versions are ordered to find the newest: numbers by value, the rest by text, so
    ``"1.10" > "1.9" > "1"`` and ``"2" > "1.0.0"``."""
    return tuple(
        (0, int(part)) if part.isdigit() else (1, part)
        for part in re.findall(r"\d+|[^\d.\-_+]+", version)
    )


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
    if query_definition(fn) is not None:
        raise DefinitionError(f"{where} is a query; a method cannot be both a step and a query")
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
    return _bare_or_called(_make_step, fn, name, description)


def _bare_or_called(
    make: Callable[[Any, str | None, str | None], Any],
    fn: F | None,
    name: str | None,
    description: str | None,
) -> F | Callable[[F], F]:
    """A method decorator used bare (``@loom.step``) or called (``@loom.step(name=...)``)."""
    if fn is not None:
        return make(fn, None, None)  # type: ignore[no-any-return]

    def decorate(f: F) -> F:
        return make(f, name, description)  # type: ignore[no-any-return]

    return decorate


def step_definition(obj: Any) -> StepDefinition | None:
    return getattr(obj, _STEP_ATTR, None)


# -------------------------------------------------------------------------- @query


def _make_query(fn: Any, name: str | None, description: str | None) -> Any:
    if isinstance(fn, staticmethod | classmethod | property) or not inspect.isfunction(fn):
        raise DefinitionError(
            f"@loom.query must decorate a method `def name(self, ctx, *args)`, got {fn!r}"
        )
    where = _qualname(fn)
    if step_definition(fn) is not None:
        raise DefinitionError(f"{where} is a step; a method cannot be both a step and a query")
    if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
        raise DefinitionError(f"query {where} must return its answer, not yield it")
    params = list(inspect.signature(fn).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_keywords = [
        p.name for p in params if p.kind is p.KEYWORD_ONLY and p.default is p.empty
    ]
    if len(positional) < 2 or required_keywords:
        raise DefinitionError(
            f"query {where} must take (self, ctx, *args) and be called with positional "
            f"arguments only; it takes ({', '.join(p.name for p in params)})"
        )
    query_name = fn.__name__ if name is None else name
    if not isinstance(query_name, str):
        raise DefinitionError(f"query {where}: name must be a non-empty string")
    try:
        limits.check_id(query_name, "query name")
    except InvalidIdError as exc:
        raise DefinitionError(f"query {where}: {exc}") from None
    if "/" in query_name:  # "." and "..": the id rule
        raise DefinitionError(
            f"query {where}: the name {query_name!r} cannot be a URL path segment "
            "(/api/workflows/ID/query/NAME); use no '/'"
        )
    after_ctx = params[2:]  # positional parameters come first: self and ctx
    taken = {p.name for p in after_ctx}
    parameters = tuple(
        f"*{p.name}" if p.kind is p.VAR_POSITIONAL else p.name
        for p in after_ctx
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
    )
    definition = QueryDefinition(
        name=query_name,
        attribute=fn.__name__,
        description=description or fn.__doc__,
        is_async=inspect.iscoroutinefunction(fn),
        parameters=parameters,
        arg_types={k: v for k, v in parameter_annotations(fn).items() if k in taken},
    )
    setattr(fn, _QUERY_ATTR, definition)
    return fn


@overload
def query(fn: F, /) -> F: ...
@overload
def query(*, name: str | None = None, description: str | None = None) -> Callable[[F], F]: ...


def query(
    fn: F | None = None, /, *, name: str | None = None, description: str | None = None
) -> F | Callable[[F], F]:
    """Mark ``def method(self, ctx, *args)`` (or ``async def``) as a query of its workflow.

    A query answers from the workflow's stored state and input (``ctx.state``, ``ctx.input``,
    read-only) without waking, leasing or changing it: ``await handle.query(name, *args)``,
    ``loom query``, ``GET /api/workflows/{id}/query/{name}``. Its answer must be JSON.
    """
    return _bare_or_called(_make_query, fn, name, description)


def query_definition(obj: Any) -> QueryDefinition | None:
    return getattr(obj, _QUERY_ATTR, None)


def parameter_annotations(fn: Any) -> dict[str, Any]:
    """``fn``'s parameter annotations, evaluated; none when they cannot be."""
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        hints = {}
    return {param: hint for param, hint in hints.items() if param != "return"}


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
    queue: str | None = None,
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
    if queue is not None:
        _check_queue(queue, f"activity {where}")
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
        arg_types=parameter_annotations(fn),
        heartbeat_timeout=heartbeat_timeout,
        queue=queue,
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
    queue: str | None = None,
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
    queue: str | None = None,
) -> F | Callable[[F], F]:
    """Declare a side-effecting function that workflows call with ``await ctx.activity(fn, ...)``.

    The function is returned unchanged (callable directly in tests); sync functions run on the
    worker's activity threads. A thread cannot be killed: when a sync activity times out, its
    thread keeps running until the function returns, and its result is ignored. Execution is
    at-least-once and the result is recorded exactly once.

    ``heartbeat_timeout`` (seconds, shorter than ``timeout_seconds``) fails an attempt that goes
    that long without calling ``loom.heartbeat()``, so a stuck attempt is retried long before
    its full timeout. ``queue`` names the task queue its attempts run on (default: its
    workflow's): a worker serving that queue runs them, within the queue's concurrency and rate
    limits; a workflow's worker that does not serve it sends each attempt to one that does.
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
        queue=queue,
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


def collect_queries(cls: type[Any]) -> tuple[QueryDefinition, ...]:
    """Queries in definition order; base-class queries first, as for steps."""
    ordered: dict[str, QueryDefinition] = {}
    for klass in reversed(cls.__mro__):
        for attr, value in vars(klass).items():
            definition = query_definition(value)
            if definition is not None:
                ordered[attr] = definition
            elif attr in ordered:
                del ordered[attr]  # overridden by a plain method: no longer a query
    return tuple(ordered.values())


def _unique(
    where: str, kinds: tuple[str, str], named: tuple[StepDefinition | QueryDefinition, ...]
) -> None:
    kind, plural = kinds
    seen: dict[str, str] = {}
    for item in named:
        if item.name in seen:
            raise DefinitionError(
                f"workflow {where}: {plural} {seen[item.name]!r} and {item.attribute!r} share the "
                f"name {item.name!r}; {kind} names must be unique"
            )
        seen[item.name] = item.attribute


def _make_workflow(
    cls: Any,
    name: str | None,
    version: str,
    description: str | None,
    registry: Registry,
    queue: str = DEFAULT_QUEUE,
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
    _unique(where, ("step", "steps"), steps)
    queries = collect_queries(cls)
    _unique(where, ("query", "queries"), queries)
    if not isinstance(version, str) or not version:
        raise DefinitionError(f"workflow {where}: version must be a non-empty string")
    _check_queue(queue, f"workflow {where}")
    definition = WorkflowDefinition(
        name=name or cls.__name__,
        version=version,
        cls=cls,
        steps=steps,
        description=description or cls.__doc__,
        signal_handlers=collect_signal_handlers(cls, where),
        queries=queries,
        queue=queue,
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
    queue: str = DEFAULT_QUEUE,
) -> Callable[[W], W]: ...


def workflow(
    cls: W | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1.0.0",
    description: str | None = None,
    registry: Registry | None = None,
    queue: str = DEFAULT_QUEUE,
) -> W | Callable[[W], W]:
    """Register a :class:`loom.Workflow` subclass under ``name`` (default: the class name).

    ``queue`` is the task queue its runs go to (a start may name another): only workers serving
    that queue take them up, under the queue's limits (:func:`queue`)."""
    reg = registry or default_registry
    if cls is not None:
        return _make_workflow(cls, None, version, description, reg)  # type: ignore[no-any-return]

    def decorate(c: W) -> W:
        return _make_workflow(  # type: ignore[no-any-return]
            c, name, version, description, reg, queue
        )

    return decorate


def _check_queue(queue: Any, where: str) -> None:
    try:
        check_queue(queue)
    except InvalidIdError as exc:
        raise DefinitionError(f"{where}: {exc}") from None


def queue(
    name: str,
    *,
    concurrency: int | None = None,
    rate: str | Rate | None = None,
    registry: Registry | None = None,
) -> QueueLimits:
    """Declare the limits of task queue ``name``, in code: at most ``concurrency`` of its items
    (workflow tasks and activities) in progress at once, and at most ``rate`` starts per period
    (``"100/m"``), across every worker and process. A worker writes the declared limits to the
    database when it starts (``loom queue set`` changes them from the command line)."""
    limits = QueueLimits.of(name, concurrency, rate)
    (registry or default_registry).add_queue(limits)
    return limits


def workflow_definition(cls: Any) -> WorkflowDefinition:
    definition = cls.__dict__.get(_WORKFLOW_ATTR) if isinstance(cls, type) else None
    if not isinstance(definition, WorkflowDefinition):
        raise DefinitionError(
            f"{cls!r} is not a registered workflow; decorate it with @loom.workflow"
        )
    return definition
