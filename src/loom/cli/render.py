"""Formatting shared by the commands: consoles, times, durations, statuses and JSON output."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.text import Text

from loom.status import WorkflowStatus

STATUS_STYLES = {
    WorkflowStatus.RUNNING: "bold cyan",
    WorkflowStatus.COMPLETED: "bold green",
    WorkflowStatus.FAILED: "bold red",
    WorkflowStatus.CANCELED: "bold yellow",
}


def console(*, stderr: bool = False) -> Console:
    """A console for user-facing output; no automatic highlighting of user data."""
    return Console(stderr=stderr, highlight=False)


def emit_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (datetimes as ISO 8601)."""
    sys.stdout.write(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def iso(timestamp: float | None) -> str | None:
    """Seconds since the epoch as an ISO 8601 UTC timestamp (for JSON)."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def local_time(timestamp: float | None) -> str:
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM:SS`` (for tables)."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def clock_time(timestamp: float) -> str:
    """Local ``HH:MM:SS.mmm``, for event histories where milliseconds matter."""
    moment = datetime.fromtimestamp(timestamp)
    return moment.strftime("%H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def duration(seconds: float | None) -> str:
    """``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 03m``, ``3d 04h``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def lifetime(status: WorkflowStatus, created: float, updated: float) -> float:
    """How long a workflow ran: until its last update once it ended, else until now."""
    end = time.time() if status is WorkflowStatus.RUNNING else updated
    return max(0.0, end - created)


def status_text(status: WorkflowStatus | str) -> Text:
    value = WorkflowStatus(status)
    return Text(value.value, style=STATUS_STYLES.get(value, ""))


def compact_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(", ", ": "))
