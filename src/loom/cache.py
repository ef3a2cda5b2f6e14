"""The worker's execution cache: workflows it parked, kept rebuilt in memory.

Rebuilding a workflow means replaying its history, which costs more the longer the workflow has
run. A worker that parks a workflow keeps its live execution here, so that when it claims the
workflow again and nothing was recorded in between (no other worker drove it), it carries on
from memory instead of replaying. The cache only saves time: an execution that is missing,
stale or evicted is rebuilt by replay with the same result.
"""

from __future__ import annotations

import collections
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.core.replay import WorkflowExecution


class ExecutionCache:
    """The ``size`` most recently parked executions, by workflow id (least recently used out).

    An execution leaves the cache when it is taken: the worker that drives it owns it until it
    parks it again (:meth:`remember`) or drops it (:meth:`evict`). Every execution that leaves
    for good is closed, which ends its suspended steps."""

    def __init__(
        self,
        size: int,
        executions: collections.OrderedDict[str, WorkflowExecution] | None = None,
    ) -> None:
        """``executions``: where to keep them (a caller that wants to look at them passes its
        own, empty), else a dict of the cache's own."""
        self.size = size
        self._executions = collections.OrderedDict() if executions is None else executions

    def __len__(self) -> int:
        return len(self._executions)

    def __contains__(self, workflow_id: object) -> bool:
        return workflow_id in self._executions

    def take(
        self, workflow_id: str, last_seq: int, run_id: str | None = None
    ) -> WorkflowExecution | None:
        """The cached execution of ``workflow_id`` if it is still current: the same run
        (``run_id``; a run continued as new is another), its history ends at ``last_seq`` (what
        is stored now) and it has not finished. A stale one is closed."""
        cached = self._executions.pop(workflow_id, None)
        if cached is None:
            return None
        if cached.last_seq == last_seq and not cached.finished and cached.run_id == run_id:
            return cached
        cached.close()
        return None

    def remember(self, execution: WorkflowExecution) -> None:
        """Keep a parked execution; close the least recently parked ones beyond ``size``."""
        executions = self._executions
        executions[execution.workflow_id] = execution
        while len(executions) > self.size:
            _, old = executions.popitem(last=False)
            old.close()

    def evict(self, workflow_id: str, execution: WorkflowExecution | None) -> None:
        """Forget ``workflow_id`` and close ``execution`` (the one being driven, if any): it
        finished, or what it holds can no longer be trusted (an error, a lost lease)."""
        self._executions.pop(workflow_id, None)
        if execution is not None:
            with contextlib.suppress(BaseException):
                execution.close()
