"""Structured logs: one JSON object per line, carrying the ids that join logs to workflows.

A record logged by workflow code through ``ctx.logger`` carries ``workflow_id``, ``run_id`` and
``step``; one logged while an activity runs (through :data:`activity_logger`, or any logger at
all: the fields come from a context variable the worker sets for each attempt, threads of sync
activities included) carries ``workflow_id``, ``run_id``, ``step``, ``activity`` and
``attempt``. :class:`JsonFormatter` (``loom worker --log-format json``) writes them with the
time, level, logger and message, and the ids of the OpenTelemetry span they were logged in,
so a log line leads to its trace and to the workflow on the dashboard.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from loom.errors import ConfigurationError
from loom.masking import mask_credentials

FIELDS = ("workflow_id", "run_id", "step", "activity", "attempt")
"""The workflow fields of every JSON line (null where they do not apply)."""


@dataclass(frozen=True, slots=True)
class ActivityInfo:
    """The activity attempt running in this context (see :func:`activity_info`)."""

    workflow_id: str
    run_id: str | None
    step: str | None
    activity: str
    attempt: int


_current: contextvars.ContextVar[ActivityInfo | None] = contextvars.ContextVar(
    "loom_activity", default=None
)


def enter_activity(info: ActivityInfo) -> None:
    """Mark the current context (one attempt's task) as running ``info``'s attempt."""
    _current.set(info)


def activity_info() -> ActivityInfo:
    """The activity attempt being run: workflow id, run id, step, activity name and attempt
    number. Only inside an activity run by a worker (``ConfigurationError`` elsewhere, such as
    when the function is called directly in a unit test)."""
    info = _current.get()
    if info is None:
        raise ConfigurationError(
            "loom.activity_info() is only available while a worker runs an activity"
        )
    return info


class ActivityLogger(logging.LoggerAdapter[logging.Logger]):
    """``loom.activity_logger``: a logger for activity code whose records carry the attempt's
    workflow id, run id, step, activity name and attempt (nothing outside an activity)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        info = _current.get()
        if info is not None:
            extra = dict(kwargs.get("extra") or {})
            for field in FIELDS:
                extra.setdefault(field, getattr(info, field))
            kwargs["extra"] = extra
        return msg, kwargs


activity_logger = ActivityLogger(logging.getLogger("loom.activity"), {})


def _span_ids() -> tuple[str | None, str | None]:
    """The ids of the OpenTelemetry span current here, if OpenTelemetry is in use."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None, None
    context = api.get_current_span().get_span_context()
    if not context.is_valid:
        return None, None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (ISO 8601 UTC), ``level``, ``logger``,
    ``message``, the workflow fields (:data:`FIELDS`, null when unknown), ``trace_id`` and
    ``span_id`` when the record was logged in a span, and ``exception`` (the formatted
    traceback) when it has one. Credentials are masked; the output is ASCII (other characters
    escaped), so no stored text can drive a terminal that shows it."""

    def format(self, record: logging.LogRecord) -> str:
        info = _current.get()
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is None and info is not None:
                value = getattr(info, field)
            fields[field] = value
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the message, or cannot be printed
            message = f"{_text(record.msg)} (arguments not shown: they could not be formatted)"
        prefix = f"[{fields['workflow_id']}] "
        if record.name == "loom.workflow" and message.startswith(prefix):
            message = message[len(prefix) :]  # ctx.logger's prefix: the id is a field here
        fields["message"] = mask_credentials(message)
        trace_id, span_id = record.__dict__.get("trace_id"), record.__dict__.get("span_id")
        if trace_id is None:
            trace_id, span_id = _span_ids()
        if trace_id is not None:
            fields["trace_id"], fields["span_id"] = trace_id, span_id
        if record.exc_info:
            fields["exception"] = mask_credentials(self.formatException(record.exc_info))
        elif record.exc_text:
            fields["exception"] = mask_credentials(record.exc_text)
        try:
            return json.dumps(fields, default=_text, allow_nan=False)
        except (TypeError, ValueError):  # NaN, a cycle: every odd value as text
            plain = (str, int, bool, type(None))
            return json.dumps(
                {k: v if isinstance(v, plain) else _text(v) for k, v in fields.items()}
            )


def _text(value: object) -> str:
    """A value JSON cannot hold, as text (never raising)."""
    try:
        return str(value)
    except Exception:
        return f"<unprintable {type(value).__name__}>"
