"""How Loom records an exception: type, message, traceback and cause chain, bounded in size.

Used for an activity's failed attempt and for a failed step. Describing never raises: an
exception whose ``__str__`` raises, or whose type has no usable name, is still described, so a
misbehaving exception can never stop a worker from recording the failure.
"""

from __future__ import annotations

import traceback
from typing import Any

TRACEBACK_LIMIT = 8000
"""Characters of a failure's traceback kept in its ACTIVITY_FAILED event (the tail: the frame
that raised and the exception line are at the end)."""
MESSAGE_LIMIT = 8000
"""Characters of a failure's message kept."""
CAUSE_DEPTH = 5
"""How many links of an exception's ``__cause__``/``__context__`` chain are described."""


def describe_error(exc: BaseException) -> dict[str, Any]:
    """What an ACTIVITY_FAILED event records of ``exc``; never raises, bounded in size.

    ``type`` and ``message`` are what histories have always held; ``traceback`` is the
    formatted exception (its tail, at most :data:`TRACEBACK_LIMIT` characters) and ``cause``
    the ``__cause__``/``__context__`` chain as nested ``{"type", "message", "cause"}`` (at
    most :data:`CAUSE_DEPTH` deep).
    """
    return {
        "type": _type_name(exc),
        "message": _message(exc),
        "traceback": _format(exc),
        "cause": _cause(exc, depth=1, seen={id(exc)}),
    }


def _cause(exc: BaseException, *, depth: int, seen: set[int]) -> dict[str, Any] | None:
    try:
        if exc.__cause__ is not None:
            link: BaseException | None = exc.__cause__
        else:
            link = None if exc.__suppress_context__ else exc.__context__
    except Exception:
        return None
    if link is None or depth > CAUSE_DEPTH or id(link) in seen:
        return None
    seen.add(id(link))
    return {
        "type": _type_name(link),
        "message": _message(link),
        "cause": _cause(link, depth=depth + 1, seen=seen),
    }


def _type_name(exc: BaseException) -> str:
    try:
        name = type(exc).__name__
    except Exception:
        name = None
    if isinstance(name, str) and name.isprintable() and 0 < len(name) <= 200:
        return name
    return "<unnamed exception type>"


def _message(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:
        return f"<unprintable {_type_name(exc)}>"
    if len(text) > MESSAGE_LIMIT:
        dropped = len(text) - MESSAGE_LIMIT
        text = f"{text[:MESSAGE_LIMIT]}... ({dropped} more characters)"
    return text


def _format(exc: BaseException) -> str | None:
    try:
        text = "".join(traceback.format_exception(exc))
    except Exception:
        try:
            frames = "".join(traceback.format_tb(exc.__traceback__))
        except Exception:
            frames = ""
        text = f"{frames}{_type_name(exc)}: {_message(exc)}\n"
    return tail(text)


def tail(text: str) -> str:
    """At most :data:`TRACEBACK_LIMIT` characters of ``text``, keeping its end."""
    if len(text) <= TRACEBACK_LIMIT:
        return text
    dropped = len(text) - TRACEBACK_LIMIT
    return f"[{dropped} earlier characters not kept]\n{text[-TRACEBACK_LIMIT:]}"
