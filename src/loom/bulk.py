"""Bulk actions: cancel, retry or reset many workflows, each on its own (``loom cancel
--status ...``, the dashboard's selection). One workflow's failure (it finished meanwhile, it
has no such step) is reported for it and does not stop the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loom.errors import ConfigurationError, LoomError

if TYPE_CHECKING:
    from loom.client import Database
    from loom.definitions import Registry

ACTIONS = ("cancel", "retry", "reset")
AT_ONCE = 8
"""Workflows acted on at the same time."""


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What became of one workflow of a bulk action: ``outcome`` is CANCELED or REQUESTED
    (cancel), RETRIED, RESET or REQUESTED (reset) when ``ok``, else the error's type, with its
    message in ``error``."""

    workflow_id: str
    ok: bool
    outcome: str
    error: str | None = None


async def act_on_each(
    db: Database,
    action: str,
    workflow_ids: Sequence[str],
    *,
    reason: str | None = None,
    to_step: str | None = None,
    registry: Registry | None = None,
) -> list[BulkResult]:
    """Apply ``action`` to each of ``workflow_ids`` (a few at a time); the results in order,
    one per workflow: an id given twice is acted on once (a reset, say, is not done twice)."""
    workflow_ids = list(dict.fromkeys(workflow_ids))
    if action not in ACTIONS:
        raise ConfigurationError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    if action == "reset" and to_step is None:
        raise ConfigurationError("a reset needs the step to restart from (to_step)")

    async def one(workflow_id: str) -> BulkResult:
        try:
            if action == "cancel":
                outcome = (await db.get_workflow(workflow_id).cancel(reason)).value
            elif action == "retry":
                await db.get_workflow(workflow_id).retry()
                outcome = "RETRIED"
            else:
                assert to_step is not None
                reset = await db.reset_workflow(
                    workflow_id, to_step, reason=reason, registry=registry
                )
                outcome = reset.value
        except LoomError as exc:
            return BulkResult(workflow_id, False, type(exc).__name__, str(exc))
        return BulkResult(workflow_id, True, outcome)

    results: list[BulkResult | None] = [None] * len(workflow_ids)
    todo = iter(enumerate(workflow_ids))

    async def lane() -> None:
        for index, workflow_id in todo:  # the lanes share one iterator: each id once
            results[index] = await one(workflow_id)

    await asyncio.gather(*(lane() for _ in range(min(AT_ONCE, len(workflow_ids)))))
    return [r for r in results if r is not None]
