"""Formatting shared by the commands: consoles, times, durations, statuses and JSON output."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from datetime import UTC, datetime
from typing import IO, Any, TextIO, cast

from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.text import Text

from loom.status import WorkflowStatus

STATUS_STYLES = {
    WorkflowStatus.RUNNING: "bold cyan",
    WorkflowStatus.COMPLETED: "bold green",
    WorkflowStatus.FAILED: "bold red",
    WorkflowStatus.CANCELED: "bold yellow",
}


PIPE_WIDTH = 200


UNSAFE = frozenset(
    [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
"""Characters that act on a terminal or reorder text: C0, DEL, C1 and bidi overrides."""
_SURROGATES = range(0xD800, 0xE000)


def safe(value: object, *, newlines: bool = False) -> str:
    """``value`` as text a terminal shows as is: control characters, bidi overrides and lone
    surrogates are written as escapes (``\\x1b``, ``\\u202e``), so user data (an id, a name,
    an error message) cannot move the cursor, retitle the window or recolour the screen.
    ``newlines`` keeps line breaks (and tabs), for multi-line text such as a traceback."""
    text = str(value)
    if not any(ord(c) in UNSAFE or ord(c) in _SURROGATES for c in text):
        return text
    out = []
    for char in text:
        code = ord(char)
        if newlines and char in "\n\t":
            out.append(char)
        elif code in UNSAFE or code in _SURROGATES:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def text(value: object, style: str = "") -> Text:
    """User-controlled ``value`` as a Rich ``Text`` (no markup), made :func:`safe`."""
    return Text(safe(value), style=style)


def console(*, stderr: bool = False) -> Console:
    """A console for user-facing output; no automatic highlighting of user data.

    Written to a pipe or a file, tables are laid out wide instead of at 80 columns, so each row
    stays on one line for grep and friends (``$COLUMNS`` still wins), and lines carry no
    trailing padding.
    """
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream, highlight=False, soft_wrap=True)
    out = Console(file=cast(IO[str], _TrimmedLines(stream)), highlight=False, soft_wrap=True)
    if not os.environ.get("COLUMNS"):
        out.width = PIPE_WIDTH
    return out


class _TrimmedLines(io.TextIOBase):
    """Writes whole lines to ``stream`` without the spaces Rich pads them with."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._pending = ""

    def write(self, text: str) -> int:
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self._stream.write(line.rstrip(" ") + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self._stream.write(self._pending)
            self._pending = ""
        self._stream.flush()

    def isatty(self) -> bool:
        return False


def emit_json(value: Any) -> None:
    """Write ``value`` as indented JSON on stdout (datetimes as ISO 8601)."""
    sys.stdout.write(
        json_text(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False))
    )
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
    """Seconds since the epoch as local ``YYYY-MM-DD HH:MM:SS`` (for details)."""
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def short_time(timestamp: float) -> str:
    """Local ``HH:MM:SS`` for today, else ``YYYY-MM-DD HH:MM`` (for tables)."""
    moment = datetime.fromtimestamp(timestamp)
    if moment.date() == datetime.now().date():
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


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


def json_text(encoded: str) -> str:
    """JSON text with the characters :func:`safe` escapes written as ``\\uXXXX``: still the same
    JSON, harmless on a terminal. (The encoder already escapes C0 inside strings; the line
    breaks of its indentation stay.)"""

    def unsafe(char: str) -> bool:
        code = ord(char)
        return (code in UNSAFE and char not in "\n\r\t") or code in _SURROGATES

    if not any(unsafe(c) for c in encoded):
        return encoded
    return "".join(f"\\u{ord(c):04x}" if unsafe(c) else c for c in encoded)


def pretty_json(value: Any) -> Text:
    """``value`` as indented JSON, coloured on a terminal; what :func:`json_text` escapes stays
    escaped (Rich's own JSON would decode it again), so it is still the same, safe JSON."""
    encoded = json.dumps(value, indent=2, default=_json_default, ensure_ascii=False)
    text = Text(json_text(encoded))
    JSONHighlighter().highlight(text)
    return text


def compact_json(value: Any) -> str:
    encoded = json.dumps(value, default=_json_default, ensure_ascii=False, separators=(", ", ": "))
    return json_text(encoded)
