"""OpenTelemetry traces of workflows, carried through their histories.

Nothing here runs unless OpenTelemetry is in use: :meth:`Tracing.tracer` answers None (and
Loom creates no span, injects nothing) when the ``opentelemetry`` API was never imported in
the process, or no tracer provider was configured, unless one was given to the ``Database``
(``tracer_provider=``, which needs the ``otel`` extra). The check is a dictionary lookup and
an identity comparison, so an untraced worker pays nothing measurable.

When tracing, ``start_workflow`` makes a ``StartWorkflow:<name>`` span (a child of whatever
span is current: the web request that started an order, say) and records its context, as a
W3C ``traceparent``, in the workflow's ``WORKFLOW_STARTED`` event (``"trace"``). Everything a
worker does for that workflow is a descendant of that context, whichever worker it is and
however often the workflow was parked, crashed or taken over, because each worker reads it
from the history: a ``RunWorkflow:<name>`` span per run-through (a claim until the workflow
parks or ends), a ``Step:<step>`` span per step within it, a ``RunActivity:<name>`` span per
activity attempt (current while the activity runs, so its own instrumented calls nest under
it; one routed to a worker of its queue runs in that worker's process, its span a child of
the context the workflow's start recorded, attributed ``loom.activity.routed``), and
``Timer`` and ``SignalWait:<name>`` spans from the moment a wait began to the moment it ended.
A child workflow's ``CHILD_WORKFLOW_STARTED`` decision records the context of the step that
started it, which becomes its own start context; a run that continues as new keeps the
context of the run it continues.

Attributes: OpenTelemetry's semantic conventions where they have a name (``error.type``, the
``exception`` event), ``loom.*`` otherwise: ``loom.workflow.id``, ``loom.workflow.name``,
``loom.run.id``, ``loom.step``, ``loom.activity.name``, ``loom.activity.attempt``,
``loom.worker.id``, ``loom.workflow.status``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

from loom.core.history import Event, EventType
from loom.extras import require
from loom.failures import describe_error

TRACE_KEY = "trace"
"""Where a ``WORKFLOW_STARTED`` or ``CHILD_WORKFLOW_STARTED`` payload keeps the context."""

_ENDINGS = {
    EventType.WORKFLOW_COMPLETED: "COMPLETED",
    EventType.WORKFLOW_FAILED: "FAILED",
    EventType.WORKFLOW_CANCELED: "CANCELED",
    EventType.WORKFLOW_CONTINUED_AS_NEW: "CONTINUED_AS_NEW",
}


def _api() -> Any:
    return sys.modules["opentelemetry.trace"]


class Tracing:
    """Whether, and with which tracer, a ``Database`` traces its workflows.

    ``provider``: an OpenTelemetry ``TracerProvider`` to use; None uses the global one, and
    only once it is configured (``trace.set_tracer_provider``, or ``opentelemetry-instrument``).
    """

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider
        self._seen: Any = None
        self._tracer: Any = None
        if provider is not None:
            require("opentelemetry.trace", "otel", "tracing (tracer_provider=...)")
            try:
                self._tracer = provider.get_tracer("loom")
            except AttributeError:
                from loom.errors import ConfigurationError

                raise ConfigurationError(
                    f"tracer_provider must be an OpenTelemetry TracerProvider, got "
                    f"{type(provider).__name__}"
                ) from None

    def tracer(self) -> Any:
        """The tracer to make spans with, or None when nothing is traced."""
        if self._provider is not None:
            return self._tracer
        api = sys.modules.get("opentelemetry.trace")
        if api is None:
            return None
        provider = api.get_tracer_provider()
        if provider is not self._seen:
            self._seen = provider
            unset = isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider))
            self._tracer = None if unset else provider.get_tracer("loom")
        return self._tracer


def carrier(span: Any) -> dict[str, str]:
    """``span``'s context as W3C trace-context headers (``traceparent``, ``tracestate``)."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers, context=_api().set_span_in_context(span))
    return headers


def parent_context(headers: Any) -> Any:
    """The context recorded as ``headers`` (see :func:`carrier`); None for anything else (a
    workflow started untraced, a value that is not trace-context headers)."""
    if not isinstance(headers, dict) or not isinstance(headers.get("traceparent"), str):
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    clean = {k: v for k, v in headers.items() if isinstance(k, str) and isinstance(v, str)}
    context = TraceContextTextMapPropagator().extract(clean)
    if not _api().get_current_span(context).get_span_context().is_valid:
        return None
    return context


@contextlib.contextmanager
def starting(tracer: Any, name: str, workflow_id: str) -> Iterator[Any]:
    """The ``StartWorkflow`` span around a start, current while it runs (an error in the
    start is recorded on it)."""
    api = _api()
    attributes = {"loom.workflow.name": name, "loom.workflow.id": workflow_id}
    with tracer.start_as_current_span(
        f"StartWorkflow:{name}", kind=api.SpanKind.PRODUCER, attributes=attributes
    ) as span:
        yield span


def current_span(span: Any) -> contextlib.AbstractContextManager[Any]:
    """Make ``span`` current (for the code run inside), without ending it on exit."""
    return _api().use_span(  # type: ignore[no-any-return]
        span, end_on_exit=False, record_exception=False, set_status_on_exception=False
    )


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _resumed(step: str | None, new_events: Sequence[Event]) -> str | None:
    """The step the replayed history left running (which the run-through resumes): the
    current step, unless the code has moved past it already."""
    for e in new_events:
        if e.type is EventType.STEP_COMPLETED:
            return str(e.payload.get("step"))
        if e.type is EventType.STEP_STARTED:
            return None
    return step


class RunTrace:
    """The spans of one run-through of a workflow on a worker (see the module's docstring).

    The driver tells it what happens: the events the workflow decides (:meth:`observe`: steps
    begin and end, the workflow ends), each activity attempt (:meth:`attempt`), each wait that
    ends (:meth:`waited`), and the end of the run-through (:meth:`end`)."""

    __slots__ = ("_attributes", "_began", "_seen", "_step", "_step_name", "_tracer", "run")

    def __init__(
        self,
        tracer: Any,
        *,
        workflow_id: str,
        name: str,
        run_id: str | None,
        worker_id: str,
        started: Any,
        began: float,
        last_seq: int,
    ) -> None:
        api = _api()
        self._tracer = tracer
        self._attributes: dict[str, Any] = {
            "loom.workflow.id": workflow_id,
            "loom.workflow.name": name,
        }
        if run_id is not None:
            self._attributes["loom.run.id"] = run_id
        self.run = tracer.start_span(
            f"RunWorkflow:{name}",
            context=parent_context(started),
            kind=api.SpanKind.CONSUMER,
            attributes={**self._attributes, "loom.worker.id": worker_id},
            start_time=_ns(began),
        )
        self._step: Any = None
        self._step_name: str | None = None
        self._seen = last_seq
        self._began = began

    def resume(self, step: str | None, new_events: Sequence[Event]) -> None:
        """The workflow is rebuilt: open the span of the step its history left running."""
        resumed = _resumed(step, new_events)
        if resumed is not None:  # the claim resumed the workflow in the middle of a step
            self._open_step(resumed, self._began, resumed=True)

    def log_fields(self) -> dict[str, str]:
        """The run-through's trace and span ids, for the workflow's log records."""
        context = self.run.get_span_context()
        return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}

    # -- what the driver reports ------------------------------------------------------------
    def observe(self, events: Sequence[Event]) -> None:
        """Follow the workflow's new decisions: a step begins or ends, the workflow ends."""
        for e in events:
            if e.seq <= self._seen:
                continue
            self._seen = e.seq
            if e.type is EventType.STEP_STARTED:
                self._close_step(e.timestamp)
                self._open_step(str(e.payload.get("step")), e.timestamp, resumed=False)
            elif e.type is EventType.STEP_COMPLETED:
                self._close_step(e.timestamp)
            elif e.type is EventType.CHILD_WORKFLOW_STARTED:
                e.payload.setdefault(TRACE_KEY, self.child_context())
            elif e.type in _ENDINGS:
                self.run.set_attribute("loom.workflow.status", _ENDINGS[e.type])
                if e.type is EventType.WORKFLOW_FAILED:
                    error = e.payload.get("error") or {}
                    self._failed(self._step, error)
                    self._failed(self.run, error)
                self._close_step(e.timestamp)

    def attempt(self, activity: str, attempt: int, step: str | None) -> Any:
        """A span for one activity attempt, begun now (the caller makes it current and ends it
        with :meth:`attempt_ended`)."""
        attributes = {
            **self._attributes,
            "loom.activity.name": activity,
            "loom.activity.attempt": attempt,
        }
        if step is not None:
            attributes["loom.step"] = step
        return self._tracer.start_span(
            f"RunActivity:{activity}", context=self._context(step), attributes=attributes
        )

    def attempt_ended(
        self,
        span: Any,
        error: dict[str, Any] | None,
        retry_at: float | None,
        *,
        interrupted: bool = False,
    ) -> None:
        """End an attempt's span (see :func:`attempt_ended`)."""
        attempt_ended(span, error, retry_at, interrupted=interrupted)

    def waited(self, kind: EventType, name: str | None, since: float, *, timed_out: bool) -> None:
        """A timer fired, or a signal wait ended (``timed_out``: by its deadline): one span
        from when the wait began to now."""
        attributes: dict[str, Any] = dict(self._attributes)
        if self._step_name is not None:
            attributes["loom.step"] = self._step_name
        if kind is EventType.TIMER_SCHEDULED:
            title = "Timer"
        else:
            title = f"SignalWait:{name}"
            attributes["loom.signal.name"] = str(name)
            attributes["loom.signal.timed_out"] = timed_out
        span = self._tracer.start_span(
            title,
            context=self._context(self._step_name),
            start_time=_ns(since),
            attributes=attributes,
        )
        span.end()

    def child_context(self) -> dict[str, str]:
        """The context a child started now inherits: the running step's."""
        return carrier(self._step if self._step is not None else self.run)

    def end(self, error: BaseException | None = None, *, parked: bool = False) -> None:
        """The run-through is over: the workflow parked or ended, left this worker (a cancel,
        a lost lease), or this worker failed while driving it (``error``)."""
        now = time.time()
        self.run.set_attribute("loom.parked", parked)
        if error is not None:
            self._failed(self.run, describe_error(error))
        self._close_step(now)
        self.run.end(end_time=_ns(now))

    # -- internals ----------------------------------------------------------------------------
    def _context(self, step: str | None) -> Any:
        span = self._step if step is not None and step == self._step_name else self.run
        return _api().set_span_in_context(span)

    def _open_step(self, step: str, at: float, *, resumed: bool) -> None:
        attributes = {**self._attributes, "loom.step": step, "loom.step.resumed": resumed}
        self._step = self._tracer.start_span(
            f"Step:{step}",
            context=_api().set_span_in_context(self.run),
            start_time=_ns(at),
            attributes=attributes,
        )
        self._step_name = step

    def _close_step(self, at: float) -> None:
        if self._step is not None:
            self._step.end(end_time=_ns(at))
            self._step, self._step_name = None, None

    @staticmethod
    def _failed(span: Any, error: dict[str, Any]) -> None:
        _failed(span, error)


def routed_attempt(
    tracer: Any,
    started: Any,
    *,
    workflow_id: str,
    run_id: str | None,
    activity: str,
    attempt: int,
    step: str | None,
    queue: str,
    worker_id: str,
) -> Any:
    """The span of a routed attempt (an activity task run by a worker of its queue), begun
    now: a ``RunActivity:<name>`` child of the context its workflow's start recorded
    (``started``), the run-through that dispatched it having ended in another process (the
    caller makes it current and ends it with :func:`attempt_ended`)."""
    attributes: dict[str, Any] = {
        "loom.workflow.id": workflow_id,
        "loom.activity.name": activity,
        "loom.activity.attempt": attempt,
        "loom.activity.queue": queue,
        "loom.activity.routed": True,
        "loom.worker.id": worker_id,
    }
    if run_id is not None:
        attributes["loom.run.id"] = run_id
    if step is not None:
        attributes["loom.step"] = step
    return tracer.start_span(
        f"RunActivity:{activity}",
        context=parent_context(started),
        kind=_api().SpanKind.CONSUMER,
        attributes=attributes,
    )


def attempt_ended(
    span: Any,
    error: dict[str, Any] | None,
    retry_at: float | None,
    *,
    interrupted: bool = False,
) -> None:
    """End an attempt's span: its error, when it failed; ``interrupted`` when it was stopped
    (a cancel, a lost lease, a withdrawal: it has no outcome)."""
    if interrupted:
        span.set_attribute("loom.activity.interrupted", True)
    if error is not None:
        _failed(span, error)
        if retry_at is not None:
            span.set_attribute("loom.activity.retry_at", retry_at)
    span.end()


def _failed(span: Any, error: dict[str, Any]) -> None:
    if span is None:
        return
    api = _api()
    kind, message = str(error.get("type") or "Error"), str(error.get("message") or "")
    span.set_attribute("error.type", kind)
    event = {"exception.type": kind, "exception.message": message}
    stacktrace = error.get("traceback")
    if isinstance(stacktrace, str) and stacktrace:
        event["exception.stacktrace"] = stacktrace
    span.add_event("exception", event)
    span.set_status(api.Status(api.StatusCode.ERROR, f"{kind}: {message}"[:1000]))
