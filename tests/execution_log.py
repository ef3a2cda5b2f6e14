"""An execution log outside Loom: what activities really ran, in which process.

Tests compare it with the stored histories to show at-least-once execution next to
exactly-once recording.
"""

from __future__ import annotations

import os


def record(log: str, what: str, workflow_id: str, label: str) -> None:
    """Append one line to the execution log: one write with O_APPEND, safe across processes."""
    line = f"{what} {workflow_id} {label} {os.getpid()}\n".encode()
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
