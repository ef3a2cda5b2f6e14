"""Credentials never reach a terminal or a log: :func:`mask_credentials` hides them in any text.

Every command's messages, its error line and its log lines go through it, so a database URL
given with a password (``postgresql://loom:s3cret@db/loom``) prints as
``postgresql://loom:***@db/loom`` wherever it appears: in Loom's own messages, in a store's
error text, in a traceback.
"""

from __future__ import annotations

import logging
import re

_URL_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^\s/]*@", re.IGNORECASE)
_KEY_VALUE_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?:'[^']*'|\"[^\"]*\"|\S+)", re.I)


def mask_credentials(text: str) -> str:
    """``text`` with the password of every URL and every ``password=...`` replaced by ``***``."""
    text = _URL_PASSWORD.sub(r"\g<head>***@", text)
    return _KEY_VALUE_PASSWORD.sub(r"\g<head>***", text)


class MaskingFormatter(logging.Formatter):
    """A formatter whose lines (message, exception and all) are passed through the mask."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))
