"""How the command line reports a failure: one line on stderr and a non-zero exit code."""

from __future__ import annotations

import sys

from loom.cli.render import safe
from loom.errors import LoomError
from loom.masking import mask_credentials


class CliError(Exception):
    """A failure the command explains in one line (bad JSON, unimportable module ...)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(text: str) -> str:
    """``text`` on one line, credentials masked and control characters escaped."""
    return safe(" ".join(mask_credentials(str(text)).split()))


def describe(exc: BaseException) -> str:
    """The one-line reason printed for ``exc``: Loom's own messages verbatim, others typed."""
    if isinstance(exc, CliError | LoomError):
        return one_line(str(exc))
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return one_line(f"{exc.strerror or exc}{where}")
    return one_line(f"{type(exc).__name__}: {exc}")


def report(exc: BaseException) -> int:
    """Print ``exc`` as ``error: <reason>`` on stderr; return the exit code to use."""
    sys.stdout.flush()
    print(f"error: {describe(exc)}", file=sys.stderr, flush=True)
    return exc.exit_code if isinstance(exc, CliError) else 1
