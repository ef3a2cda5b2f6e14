"""The records of the durable calls workflow code makes: what an execution keeps for each call
it awaits (:class:`Pending`), what it hands the worker to run (:class:`ActivityRun`), and the id
a child started without one gets (:func:`child_id`). Plain data, shared by the execution and the
worker that drives it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from typing import Any

from loom.core.history import EventType
from loom.definitions import ActivityDefinition


@dataclass(frozen=True, slots=True)
class ActivityRun:
    """An activity attempt the worker must run: ``seq`` is its ACTIVITY_SCHEDULED event."""

    seq: int
    definition: ActivityDefinition
    args: list[Any]
    kwargs: dict[str, Any]
    step: str | None
    attempt: int = 1
    not_before: float = 0.0


@dataclass(slots=True)
class Pending:
    """A durable call the code awaits (activity, timer, signal wait, child), kept by the seq of
    the event that made it until its outcome is delivered or it is withdrawn."""

    kind: EventType
    future: asyncio.Future[Any]
    name: str | None = None
    deadline: float | None = None
    run: ActivityRun | None = None
    step: str | None = None
    child_id: str | None = None
    abandon: bool = False
    task: asyncio.Future[Any] | None = None
    since: float = 0.0


def child_id(parent_id: str, seq: int) -> str:
    """The id of the child a parent starts at ``seq`` without naming one: ``<parent>/<seq>``,
    or, when that would break the id rule's 200 characters, a digest of the parent id."""
    derived = f"{parent_id}/{seq}"
    if len(derived) <= 200:
        return derived
    digest = hashlib.sha256(parent_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return f"{parent_id[:120]}~{digest}/{seq}"
