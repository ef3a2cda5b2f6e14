"""Exported histories: one workflow run's events as a JSON document, and reading one back.

``loom inspect ID --export FILE``, ``GET /api/workflows/{id}/history.json`` and
``WorkflowHandle.export_history()`` write the document; ``loom.testing.Replayer`` reads it to
replay the run against the current code (a golden test). The document::

    {"format": "loom-history", "format_version": 1,
     "workflow": NAME, "version": VERSION, "workflow_id": ID, "run_id": RUN, "status": STATUS,
     "events": [{"seq": 1, "type": "WORKFLOW_STARTED", "payload": {...}, "created_at": 1.5}, ...]}

Reading is lenient where it can be and strict where it matters: ``format``, ``version``,
``run_id`` and ``status`` may be missing (Loom's own ``tests/golden/*.json`` files have none:
the version then comes from the ``WORKFLOW_STARTED`` event), but the events must be whole and
in order, or :class:`~loom.errors.HistoryFormatError` names what is wrong and where.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loom import limits
from loom.core.history import Event, EventType
from loom.errors import HistoryFormatError
from loom.status import WorkflowStatus

FORMAT = "loom-history"
FORMAT_VERSION = 1

ENDINGS = {
    EventType.WORKFLOW_COMPLETED: WorkflowStatus.COMPLETED,
    EventType.WORKFLOW_FAILED: WorkflowStatus.FAILED,
    EventType.WORKFLOW_CANCELED: WorkflowStatus.CANCELED,
    EventType.WORKFLOW_CONTINUED_AS_NEW: WorkflowStatus.COMPLETED,  # that run ended
}
"""The events that end a run, and the status a run they end has."""


@dataclass(frozen=True, slots=True)
class ExportedHistory:
    """A history read from a document: whose it is and its events, oldest first."""

    name: str
    version: str | None
    workflow_id: str
    run_id: str | None
    status: WorkflowStatus
    """As recorded: a run whose last event ends it is over, else RUNNING."""
    events: list[Event]


def to_document(
    *,
    name: str,
    version: str,
    workflow_id: str,
    run_id: str | None,
    status: str,
    events: list[Event],
) -> dict[str, Any]:
    """The exported form of one run's history (plain JSON values)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "workflow": name,
        "version": version,
        "workflow_id": workflow_id,
        "run_id": run_id,
        "status": status,
        "events": [
            {"seq": e.seq, "type": e.type.value, "payload": e.payload, "created_at": e.timestamp}
            for e in events
        ],
    }


def from_document(document: Any, source: str) -> ExportedHistory:
    """Read an exported history; ``source`` names it in errors (a file name)."""

    def bad(problem: str) -> HistoryFormatError:
        return HistoryFormatError(
            f"{source} is not a Loom workflow history: {problem} (write one with "
            "`loom inspect WORKFLOW_ID --export FILE`)"
        )

    if not isinstance(document, dict):
        raise bad(f"expected a JSON object, got {_kind(document)}")
    kind = document.get("format", FORMAT)
    if kind != FORMAT:
        raise bad(f"its format is {kind!r}, not {FORMAT!r}")
    written = document.get("format_version", FORMAT_VERSION)
    if not _is_int(written) or written < 1:
        raise bad(f"format_version must be a positive integer, got {written!r}")
    if written > FORMAT_VERSION:
        raise HistoryFormatError(
            f"{source} was written in history format {written}, newer than this Loom reads "
            f"({FORMAT_VERSION}): upgrade Loom to replay it"
        )
    raw = document.get("events")
    if not isinstance(raw, list) or not raw:
        raise bad("'events' must be a non-empty list of events")
    events = [_event(item, index, bad) for index, item in enumerate(raw)]
    for index, event in enumerate(events):
        if event.seq != index + 1:
            raise bad(f"events[{index}] has seq {event.seq}, expected {index + 1} (in order)")
    first = events[0]
    if first.type is not EventType.WORKFLOW_STARTED:
        raise bad(f"the first event is {first.type.value}, not WORKFLOW_STARTED")
    name = _text(document.get("workflow", first.payload.get("name")), "workflow", bad)
    version = document.get("version", first.payload.get("version"))
    if version is not None:
        version = _text(version, "version", bad)
    workflow_id = _text(document.get("workflow_id"), "workflow_id", bad)
    run_id = document.get("run_id")
    if run_id is not None and not isinstance(run_id, str):
        raise bad(f"'run_id' must be a string or null, got {_kind(run_id)}")
    return ExportedHistory(
        name,
        version,
        workflow_id,
        run_id,
        ENDINGS.get(events[-1].type, WorkflowStatus.RUNNING),
        events,
    )


def _event(item: Any, index: int, bad: Any) -> Event:
    where = f"events[{index}]"
    if not isinstance(item, dict):
        raise bad(f"{where} must be an object, got {_kind(item)}")
    seq, kind, payload, at = (item.get(k) for k in ("seq", "type", "payload", "created_at"))
    if not isinstance(seq, int) or isinstance(seq, bool):
        raise bad(f"{where}.seq must be an integer, got {seq!r}")
    try:
        event_type = EventType(str(kind)) if isinstance(kind, str) else None
    except ValueError:
        event_type = None
    if event_type is None:
        raise bad(f"{where}.type {kind!r} is not an event type") from None
    if not isinstance(payload, dict):
        raise bad(f"{where}.payload must be an object, got {_kind(payload)}")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise bad(f"{where}.created_at must be a number of seconds since the epoch, got {at!r}")
    return Event(seq, event_type, payload, float(at))


def _text(value: Any, field: str, bad: Any) -> str:
    if not isinstance(value, str):
        raise bad(f"'{field}' must be a string, got {_kind(value)}")
    reason = limits.problem(value, field)
    if reason is not None:
        raise bad(reason)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


__all__ = ["ENDINGS", "FORMAT", "FORMAT_VERSION", "ExportedHistory", "from_document", "to_document"]
