"""The input rules every entry point applies: workflow ids and names, and payload sizes.

One rule, checked by the client API (and so by the CLI) and by the web API, so that whatever one
entry point accepts, every other can read, print and address:

* a workflow id, a workflow name or a signal name is a non-empty string of at most
  :data:`MAX_ID_LENGTH` characters, with no control character (C0, DEL, C1: they would corrupt
  a terminal or a log line, and PostgreSQL refuses NUL) and no lone surrogate (it cannot be
  encoded as UTF-8, so no database can store it), and is not ``.`` or ``..`` (a browser takes
  those for steps along a URL's path, even spelled ``%2E``, so no page could address it);
* a payload (a workflow's input, its initial state, a signal's payload) is at most
  ``max_payload_bytes`` bytes as JSON (default :data:`DEFAULT_MAX_PAYLOAD_BYTES`), checked
  before anything is stored.
"""

from __future__ import annotations

import re
from typing import Any

from loom.errors import InvalidIdError, PayloadTooLargeError

MAX_ID_LENGTH = 200
DEFAULT_MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
MAX_INT64 = 2**63 - 1
"""The largest integer both backends store: the bound of every numeric query parameter."""


def _shown(value: str) -> str:
    """``value`` quoted for a message: escaped, and cut short when long."""
    return repr(value if len(value) <= 40 else value[:40] + "...")


_NOT_PRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
"""A control character (C0, DEL, C1) or a lone surrogate."""


def problem(value: Any, what: str = "workflow id") -> str | None:
    """Why ``value`` is not a valid id or name, or None when it is."""
    if not isinstance(value, str):
        return f"{what} must be a string, got {type(value).__name__}"
    if not value:
        return f"{what} must not be empty"
    if len(value) > MAX_ID_LENGTH:
        return (
            f"{what} {_shown(value)} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
        )
    bad = _NOT_PRINTABLE.search(value)  # one scan in C: ids are checked on every start
    if bad is None:
        if value in (".", ".."):
            return f"{what} {value!r} cannot be addressed in a URL; use other characters too"
        return None
    index, code = bad.start(), ord(bad.group())
    if code < 0xD800:
        return (
            f"{what} {_shown(value)} contains the control character U+{code:04X} "
            f"at position {index}; use printable characters only"
        )
    return (
        f"{what} {_shown(value)} contains a lone surrogate U+{code:04X} at position "
        f"{index}; it is not valid Unicode text"
    )


def check_id(value: Any, what: str = "workflow id") -> str:
    """``value`` if it is a valid id or name; else :class:`~loom.errors.InvalidIdError`."""
    reason = problem(value, what)
    if reason is not None:
        raise InvalidIdError(reason)
    return str(value)


def check_text(value: str, what: str) -> str:
    """Free text (a cancel reason): any length the caller allows, newlines and tabs included,
    but no NUL (PostgreSQL cannot store it) and no lone surrogate (not encodable as UTF-8)."""
    for index, char in enumerate(value):
        if char == "\x00" or 0xD800 <= ord(char) <= 0xDFFF:
            raise InvalidIdError(
                f"{what} contains U+{ord(char):04X} at position {index}, which cannot be stored"
            )
    return value


def check_size(data: bytes, limit: int, what: str) -> None:
    """Raise :class:`~loom.errors.PayloadTooLargeError` when ``data`` is above ``limit`` bytes."""
    if len(data) > limit:
        raise PayloadTooLargeError(what, len(data), limit)
