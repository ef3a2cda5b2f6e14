"""Every error Loom raises, under one root so callers can catch ``LoomError``.

::

    LoomError
    ├── DefinitionError          a @workflow/@step/@activity is malformed (raised at import)
    ├── PayloadError             a value cannot be stored as JSON (raised at the call site)
    │   └── PayloadTooLargeError a value is above the database's max_payload_bytes
    ├── PayloadDecodeError       a stored payload cannot be decoded here (its key is not held,
    │                            it was altered, no codec is configured): loom.payload_codecs
    ├── InvalidIdError           a workflow id or name breaks the id rule (loom.limits)
    ├── ConfigurationError       a bad database URL, an unknown backend, a naive datetime ...
    │   ├── HistoryFormatError   an exported history file that is not one (loom.testing.Replayer)
    │   └── MissingExtraError    a feature whose optional packages are not installed
    ├── StoreError               the database refused or failed an operation
    │   ├── DatabaseUnavailableError  it cannot be reached or written now (connection lost,
    │   │                             disk full, locked): the operation may work when retried
    │   ├── DatabaseCorruptError the database file is damaged: restore it; retrying cannot help
    │   └── LeaseLostError       never raised; kept so that old imports keep working
    ├── WorkflowError            concerns one workflow (carries ``workflow_id``)
    │   ├── WorkflowNotFoundError
    │   ├── WorkflowAlreadyExistsError
    │   ├── WorkflowNotRunningError   signal/cancel of a finished workflow, retry of a running one
    │   ├── WorkflowFailedError       ``handle.result()`` of a FAILED workflow; ``cause`` says why
    │   ├── WorkflowCanceledError     ``handle.result()`` of a CANCELED workflow
    │   ├── NonDeterminismError       the code no longer reproduces the stored history
    │   ├── ActivityFailedError       an activity exhausted its retries (raised inside the step)
    │   ├── QueryNotFoundError        ``handle.query(name)``: the workflow defines no such query
    │   ├── QueryArgumentsError       the query's arguments are not JSON or not what it takes
    │   ├── QueryFailedError          the query method raised (the workflow is untouched)
    │   └── UnknownStepError          ``handle.reset(to_step=...)`` names no step it can restart
    ├── ActivityCancelledError   heartbeat() of an activity attempt that was cancelled
    ├── ActivityHeartbeatTimeoutError  (also a TimeoutError) an attempt sent no heartbeat in time
    ├── NotInActivityError       activity_info() or heartbeat() called outside a running activity
    ├── UnawaitedCallError       a step returned with a durable call still pending
    ├── WorkflowSandboxError     workflow code used a clock, a thread or I/O it cannot replay
    ├── ReadOnlyError            workflow code changed ctx.input or ctx.state in place
    ├── UnknownWorkflowTypeError   a stored workflow names a class this process did not register
    └── ScheduleError            concerns one schedule (carries ``schedule``)
        ├── ScheduleNotFoundError
        └── ScheduleAlreadyExistsError
    (InvalidScheduleError, a ConfigurationError: a bad cron, interval, timezone or policy)

Each message names the workflow (and step, activity) it concerns and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any


class LoomError(Exception):
    """Root of every error raised by Loom."""


class DefinitionError(LoomError, TypeError):
    """A workflow, step or activity definition is invalid; raised when the module is imported."""


class PayloadError(LoomError, TypeError):
    """A value cannot be stored: only JSON, dataclasses and pydantic models are durable."""


class PayloadDecodeError(LoomError):
    """A stored payload was encoded by a codec (``Database(codec=...)``) and this process cannot
    decode it: the key it names is not among those held, the data fails authentication (a
    wrong key, or it was altered), its codec is not configured here, or a package it needs is
    not installed. The message says which, and names the workflow and the place of the value.

    ``codec`` is the envelope's codec (``"zstd+aesgcm"``), ``key`` the key id it names (or
    None), ``workflow_id`` the workflow whose payload it is (None when not known).
    """

    def __init__(
        self,
        message: str,
        *,
        codec: str = "",
        key: str | None = None,
        workflow_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.codec = codec
        self.key = key
        self.workflow_id = workflow_id


class ConfigurationError(LoomError, ValueError):
    """Loom was configured with something it cannot use (URL, option, naive datetime ...)."""


class HistoryFormatError(ConfigurationError):
    """A document given as an exported workflow history (``loom inspect ID --export``) is not
    one: not JSON, a field missing or of the wrong kind, events out of order. Names the file
    and the field."""


class MissingExtraError(ConfigurationError, ImportError):
    """A feature needs optional packages that are not installed; the message names the
    ``loom-core`` extra that brings them (``pip install 'loom-core[metrics]'``)."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the {package!r} module, which is not installed: "
            f"pip install 'loom-core[{extra}]'"
        )
        self.feature = feature
        self.extra = extra
        self.package = package


class StoreError(LoomError):
    """The database failed an operation."""


class DatabaseUnavailableError(StoreError):
    """The database cannot be reached or written right now: the connection was lost or refused,
    the disk is full, the file is locked. Nothing about the operation itself is wrong, so a worker
    waits with backoff and tries again instead of blaming the workflow it was writing."""


class DatabaseCorruptError(StoreError):
    """The database file is damaged (SQLite: "database disk image is malformed"). Retrying cannot
    help: a worker reports it once and exits; restore the file from a backup."""

    def __init__(self, path: str, detail: str, doing: str = "cannot read") -> None:
        super().__init__(
            f"{doing} SQLite database {path!r}: the file is damaged ({detail}); stop using it "
            "and restore the file from a backup"
        )
        self.path = path


class LeaseLostError(StoreError):
    """Never raised; kept, but no longer exported from ``loom``, so that old imports still work.

    A worker whose lease on a workflow ran out and was taken over by another has its pending
    writes rejected (fencing), so nothing is recorded twice; it drops that workflow without an
    error, and no caller of the client API can see a lease. Catch ``StoreError`` instead.
    """

    def __init__(self, workflow_id: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r}: lease lost to another worker; this worker's writes "
            "were rejected and the workflow continues elsewhere"
        )
        self.workflow_id = workflow_id


class WorkflowError(LoomError):
    """An error about one workflow."""

    def __init__(self, message: str, *, workflow_id: str) -> None:
        super().__init__(message)
        self.workflow_id = workflow_id


class WorkflowNotFoundError(WorkflowError):
    def __init__(self, workflow_id: str) -> None:
        super().__init__(f"no workflow with id {workflow_id!r}", workflow_id=workflow_id)


class WorkflowAlreadyExistsError(WorkflowError):
    def __init__(self, workflow_id: str, detail: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} already exists {detail}; pick another workflow_id "
            "or start it with the same input to get the existing handle",
            workflow_id=workflow_id,
        )


class WorkflowNotRunningError(WorkflowError):
    def __init__(self, workflow_id: str, status: str, action: str, hint: str = "") -> None:
        why = f" ({hint})" if hint else ""
        super().__init__(
            f"cannot {action} workflow {workflow_id!r}: it is {status}{why}",
            workflow_id=workflow_id,
        )
        self.status = status


class WorkflowFailedError(WorkflowError):
    """The workflow ended FAILED. ``cause`` is the recorded error (type, message, step)."""

    def __init__(self, workflow_id: str, cause: dict[str, Any]) -> None:
        where = f" in step {cause['step']!r}" if cause.get("step") else ""
        super().__init__(
            f"workflow {workflow_id!r} failed{where}: {cause.get('type', 'Error')}: "
            f"{cause.get('message', '')}",
            workflow_id=workflow_id,
        )
        self.cause = cause


class WorkflowCanceledError(WorkflowError):
    def __init__(self, workflow_id: str, reason: str | None) -> None:
        because = f": {reason}" if reason else ""
        super().__init__(f"workflow {workflow_id!r} was canceled{because}", workflow_id=workflow_id)
        self.reason = reason


class ChildWorkflowFailedError(WorkflowError):
    """A child workflow ended FAILED or CANCELED; raised in the parent's step that awaited it.

    ``__cause__`` is the child's own :class:`WorkflowFailedError` or
    :class:`WorkflowCanceledError`; ``status``, ``error_type`` and ``error_message`` describe it.
    """

    def __init__(
        self,
        *,
        workflow_id: str,
        step: str,
        child_id: str,
        child_name: str,
        status: str,
        error: dict[str, Any] | None,
    ) -> None:
        error = error or {}
        self.error_type = str(error.get("type", "Canceled" if status == "CANCELED" else "Error"))
        self.error_message = str(error.get("message", ""))
        super().__init__(
            f"child workflow {child_name!r} ({child_id!r}) of step {step!r} of workflow "
            f"{workflow_id!r} ended {status}: {self.error_type}: {self.error_message}",
            workflow_id=workflow_id,
        )
        self.step = step
        self.child_id = child_id
        self.child_name = child_name
        self.status = status
        self.__cause__ = (
            WorkflowCanceledError(child_id, self.error_message or None)
            if status == "CANCELED"
            else WorkflowFailedError(child_id, error)
        )


class NonDeterminismError(WorkflowError):
    """The workflow code did something other than what its history records at that point.

    Usually the code changed while the workflow was running. Keep the old code deployed until
    the workflows started under it finish; for one that already failed, restore the old code
    path and ``loom retry`` it. ``loom replay`` checks stored histories against the code before
    a deploy.
    """

    def __init__(self, workflow_id: str, detail: str) -> None:
        super().__init__(
            f"workflow {workflow_id!r} is non-deterministic: {detail}. The code no longer "
            "reproduces the stored history: restore the old code path and `loom retry` the "
            "workflow. To change code under running workflows, guard the new path with "
            "`if ctx.patched('change-id'):` or register the new code as a new version "
            "(`@loom.workflow(version=...)`, runs stay on the version they started with); "
            "`loom replay` checks a deploy against stored histories",
            workflow_id=workflow_id,
        )


class ActivityFailedError(WorkflowError):
    """An activity failed after all its attempts; raised in the step that awaited it.

    Catch it there to compensate. ``error_type`` and ``error_message`` describe the last failure.
    """

    def __init__(
        self,
        *,
        workflow_id: str,
        step: str,
        activity: str,
        attempts: int,
        error_type: str,
        error_message: str,
    ) -> None:
        super().__init__(
            f"activity {activity!r} in step {step!r} of workflow {workflow_id!r} failed after "
            f"{attempts} attempt(s): {error_type}: {error_message}",
            workflow_id=workflow_id,
        )
        self.step = step
        self.activity = activity
        self.attempts = attempts
        self.error_type = error_type
        self.error_message = error_message


class UnawaitedCallError(LoomError):
    """A step returned while one of its durable calls was still pending (not awaited)."""


class UnknownWorkflowTypeError(LoomError):
    """A stored workflow's type is not registered in this process; import its module."""

    def __init__(
        self,
        name: str,
        workflow_id: str | None = None,
        version: str | None = None,
        registered: list[str] | None = None,
    ) -> None:
        which = f" (workflow {workflow_id!r})" if workflow_id else ""
        if version is None:
            message = (
                f"no workflow class named {name!r} is registered{which}; import the module that "
                "defines it (loom worker -m MODULE)"
            )
        else:
            message = (
                f"version {version!r} of workflow {name!r} is not registered{which} (registered: "
                f"{', '.join(map(repr, registered or [])) or 'none'}); a run stays on the version "
                "it started with: keep that version's class registered, e.g. "
                f"@loom.workflow(name={name!r}, version={version!r})"
            )
        super().__init__(message)
        self.name = name
        self.workflow_id = workflow_id
        self.version = version


class WorkflowSandboxError(LoomError, RuntimeError):
    """Workflow code used something that cannot be replayed: a wall-clock timer, a thread, I/O,
    or an await that nothing durable can complete (a bare future, an ``asyncio.Event``, a queue).

    Raised in the step; the message says what was used and the durable call to use instead.
    """


class ReadOnlyError(LoomError, TypeError):
    """Workflow code changed ``ctx.input`` or a value read from ``ctx.state`` in place.

    Both are rebuilt from the history on replay, so an in-place change would be lost after a
    restart; change state with ``await ctx.state.set(...)`` / ``update(...)``.
    """


class InvalidIdError(LoomError, ValueError):
    """A workflow id or a name (workflow, signal) breaks the rule every entry point applies.

    The rule (see :mod:`loom.limits`): a non-empty string of at most 200 characters, with no
    control characters and no lone surrogates, not ``.`` nor ``..``, so every id can be stored by
    both backends, printed safely and addressed in a URL.
    """


class PayloadTooLargeError(PayloadError):
    """A value (input, initial state, signal payload) is larger than the database accepts.

    The limit is ``Database(max_payload_bytes=...)`` (``loom web --max-payload``).
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size} bytes as JSON, above the limit of {limit} bytes; store large "
            "data elsewhere and pass a reference, or raise the limit (Database(max_payload_bytes"
            "=...), loom web --max-payload)"
        )
        self.size = size
        self.limit = limit


class QueryNotFoundError(WorkflowError):
    """``handle.query(name)`` names no query of the workflow's class; ``known`` lists those it
    defines (``@loom.query`` methods)."""

    def __init__(self, workflow_id: str, workflow_name: str, query: str, known: list[str]) -> None:
        which = (
            f"its queries: {', '.join(repr(k) for k in known)}"
            if known
            else "it defines none (decorate a method `def name(self, ctx, *args)` with @loom.query)"
        )
        super().__init__(
            f"workflow {workflow_id!r} ({workflow_name}) has no query {query!r}; {which}",
            workflow_id=workflow_id,
        )
        self.query = query
        self.known = known


class QueryArgumentsError(WorkflowError, TypeError):
    """The arguments of a query cannot be given to it: a value that is not JSON (NaN, an
    integer beyond 64 bits, bytes ...), a number of arguments its method does not take, or a
    value that does not match a parameter's annotation. Nothing ran."""

    def __init__(self, workflow_id: str, query: str, detail: str) -> None:
        super().__init__(
            f"query {query!r} of workflow {workflow_id!r}: {detail}", workflow_id=workflow_id
        )
        self.query = query


class QueryFailedError(WorkflowError):
    """A query method raised (or awaited something a query cannot wait for). The workflow is
    untouched: a query writes nothing. ``error_type`` and ``error_message`` describe what the
    method raised; the exception itself is the ``__cause__``."""

    def __init__(self, workflow_id: str, query: str, error_type: str, error_message: str) -> None:
        super().__init__(
            f"query {query!r} of workflow {workflow_id!r} failed: {error_type}: {error_message}",
            workflow_id=workflow_id,
        )
        self.query = query
        self.error_type = error_type
        self.error_message = error_message


class InvalidScheduleError(ConfigurationError):
    """A schedule's definition cannot be used: a cron expression croniter refuses (or one that
    never fires), an interval that is not ``30s``/``5m``/``2h``/``1d``, an unknown timezone, an
    unknown overlap or catch-up policy, a name that breaks the schedule name rule. Nothing was
    stored."""


class ScheduleError(LoomError):
    """An error about one schedule."""

    def __init__(self, message: str, *, schedule: str) -> None:
        super().__init__(message)
        self.schedule = schedule


class ScheduleNotFoundError(ScheduleError):
    def __init__(self, schedule: str) -> None:
        super().__init__(
            f"no schedule named {schedule!r}; `loom schedule list` shows the schedules there are",
            schedule=schedule,
        )


class ScheduleAlreadyExistsError(ScheduleError):
    def __init__(self, schedule: str) -> None:
        super().__init__(
            f"a schedule named {schedule!r} exists already; delete it first "
            "(`loom schedule delete`) or pick another name",
            schedule=schedule,
        )


class UnknownStepError(WorkflowError, ValueError):
    """``handle.reset(to_step=...)`` names a step the workflow cannot be reset to: one its
    class does not have, or one it never reached (the steps before it must have completed, so
    that their state can be kept). ``steps`` lists those it can be reset to; nothing changed."""

    def __init__(
        self,
        workflow_id: str,
        workflow_name: str,
        step: str,
        steps: list[str],
        defined: list[str] | None = None,
    ) -> None:
        choices = ", ".join(repr(s) for s in steps) or "none (no step has started yet)"
        if defined is not None and step in defined:
            what = f"never reached step {step!r}: a reset restarts from a step it reached"
        else:
            known = f" (its steps: {', '.join(repr(s) for s in defined)})" if defined else ""
            what = f"has no step {step!r}{known}; it can be reset to"
        super().__init__(
            f"workflow {workflow_id!r} ({workflow_name}) {what}: {choices}",
            workflow_id=workflow_id,
        )
        self.step = step
        self.steps = steps


class ActivityCancelledError(LoomError):
    """Raised by :func:`loom.heartbeat` in an activity attempt that was cancelled: its workflow
    was canceled, the attempt timed out or missed its heartbeat timeout, its worker lost the
    workflow or stopped. Let it propagate: the attempt's outcome is no longer recorded.

    A sync activity cannot be stopped from outside (a thread cannot be killed); this is how it
    learns that it should stop. ``reason`` says why it was cancelled.
    """

    def __init__(self, activity: str, workflow_id: str, reason: str) -> None:
        super().__init__(
            f"activity {activity!r} of workflow {workflow_id!r} was cancelled ({reason}); stop "
            "its work and let this exception propagate"
        )
        self.activity = activity
        self.workflow_id = workflow_id
        self.reason = reason


class ActivityHeartbeatTimeoutError(LoomError, TimeoutError):
    """An activity attempt sent no heartbeat within its ``heartbeat_timeout``: the attempt fails
    with this error (recorded in its ``ACTIVITY_FAILED`` event) and is retried per the
    activity's retry policy, unless it (or ``TimeoutError``) is listed in ``non_retryable``."""


class NotInActivityError(LoomError, RuntimeError):
    """:func:`loom.activity_info` or :func:`loom.heartbeat` was called outside a running
    activity: in workflow code, in a plain function call (a unit test calling the activity
    directly), or in a thread the activity started itself."""
