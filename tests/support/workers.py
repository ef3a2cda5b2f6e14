"""Running workflows in tests: one in-process worker configuration, and event filters."""

from __future__ import annotations

from typing import Any

import loom
from loom import EventType


def worker(db: loom.Database, **options: Any) -> loom.Worker:
    """An in-process worker tuned for tests: polls often (a test waits for it) and runs a few
    workflows at once; any option of :class:`loom.Worker` can be overridden."""
    options.setdefault("concurrency", 4)
    options.setdefault("poll_interval", 0.05)
    options.setdefault("lease_seconds", 10)
    return loom.Worker(db, **options)


def of_type(events: list[loom.Event], kind: EventType) -> list[loom.Event]:
    """The events of one kind, in history order."""
    return [e for e in events if e.type is kind]
