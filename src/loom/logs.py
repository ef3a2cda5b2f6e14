"""Structured logs: one JSON object per line, carrying the ids that join logs to workflows.

A record logged by workflow code through ``ctx.logger`` carries ``workflow_id``, ``run_id`` and
``step``; one logged while an activity runs (through :data:`activity_logger`, or any logger at
all: the fields come from the attempt's context, ``loom.activity_context``, which the threads of
sync activities share) carries ``workflow_id``, ``run_id``, ``step``, ``activity`` and
``attempt``. :class:`JsonFormatter` (``loom worker --log-format json``) writes them with the
time, level, logger and message, and the ids of the OpenTelemetry span they were logged in,
so a log line leads to its trace and to the workflow on the dashboard.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from loom.activity_context import current_attempt
from loom.masking import mask_credentials

FIELDS = ("workflow_id", "run_id", "step", "activity", "attempt")
"""The workflow fields of every JSON line (null where they do not apply)."""


def _attempt_fields() -> dict[str, Any] | None:
    """The workflow fields of the activity attempt running in this context, if one is."""
    control = current_attempt()
    if control is None:
        return None
    return {
        "workflow_id": control.workflow_id,
        "run_id": control.run_id,
        "step": control.step,
        "activity": control.activity_name,
        "attempt": control.attempt,
    }


class ActivityLogger(logging.LoggerAdapter[logging.Logger]):
    """``loom.activity_logger``: a logger for activity code whose records carry the attempt's
    workflow id, run id, step, activity name and attempt (nothing outside an activity)."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = _attempt_fields()
        if fields is not None:
            extra = dict(kwargs.get("extra") or {})
            for field, value in fields.items():
                extra.setdefault(field, value)
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
        attempt = _attempt_fields()
        fields: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is None and attempt is not None:
                value = attempt[field]
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
