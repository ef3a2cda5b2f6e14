"""The worker's parts on their own: the execution cache, lease renewal and stopping its
background tasks.

The worker's behaviour as a whole is covered by the engine tests (test_lifecycle, test_fencing,
test_inline, ...); these pin down what each part promises, so that it can be changed alone."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

import loom
from loom.cache import ExecutionCache
from loom.client import run_once
from loom.core.replay import WorkflowExecution
from loom.lease import LeaseKeeper
from loom.outage import OutageLog
from loom.store.base import Store
from loom.tasks import cancel_and_wait
from loom.worker import Worker, WorkerStats
from support import eventually


class FakeExecution:
    """What the cache looks at in an execution: its id, where its history ends, whether it
    finished, and closing it."""

    def __init__(self, workflow_id: str, last_seq: int = 3, *, finished: bool = False) -> None:
        self.workflow_id = workflow_id
        self.last_seq = last_seq
        self.finished = finished
        self.closed = False
        self.run_id: str | None = None

    def close(self) -> None:
        self.closed = True


def execution(workflow_id: str, last_seq: int = 3, *, finished: bool = False) -> Any:
    return FakeExecution(workflow_id, last_seq, finished=finished)


def test_the_worker_is_imported_as_before() -> None:
    assert loom.Worker is Worker
    assert loom.WorkerStats is WorkerStats
    assert loom.run_once is run_once


def test_cache_gives_back_an_execution_whose_history_has_not_moved() -> None:
    cache = ExecutionCache(10)
    ex = execution("a", last_seq=3)
    cache.remember(cast(WorkflowExecution, ex))
    assert cache.take("a", 3) is ex
    assert not ex.closed
    assert "a" not in cache  # the driver owns it until it parks it again
    assert cache.take("a", 3) is None


@pytest.mark.parametrize("moved, finished", [(True, False), (False, True)])
def test_cache_closes_a_stale_or_finished_execution(moved: bool, finished: bool) -> None:
    cache = ExecutionCache(10)
    ex = execution("a", last_seq=3, finished=finished)
    cache.remember(cast(WorkflowExecution, ex))
    assert cache.take("a", 4 if moved else 3) is None  # another worker recorded more: replay
    assert ex.closed
    assert len(cache) == 0


def test_cache_closes_the_least_recently_parked_beyond_its_size() -> None:
    cache = ExecutionCache(2)
    a, b, c = execution("a"), execution("b"), execution("c")
    for ex in (a, b):
        cache.remember(cast(WorkflowExecution, ex))
    assert cache.take("a", 3) is a
    cache.remember(cast(WorkflowExecution, a))  # parked again: now the most recent
    cache.remember(cast(WorkflowExecution, c))
    assert b.closed and not a.closed and not c.closed
    assert "b" not in cache and "a" in cache and "c" in cache


def test_cache_of_size_zero_keeps_nothing() -> None:
    cache = ExecutionCache(0)
    ex = execution("a")
    cache.remember(cast(WorkflowExecution, ex))
    assert ex.closed
    assert cache.take("a", 3) is None


def test_cache_evict_forgets_and_closes() -> None:
    cache = ExecutionCache(10)
    ex = execution("a")
    cache.remember(cast(WorkflowExecution, ex))
    cache.evict("a", cast(WorkflowExecution, ex))
    assert ex.closed and "a" not in cache
    cache.evict("gone", None)  # nothing held: nothing to do


class FakeStore:
    """A store whose renewals are recorded; the first one fails (an outage)."""

    def __init__(self, lost: set[str], cancel: set[str]) -> None:
        self.calls: list[tuple[str, list[str], float]] = []
        self.lost = lost
        self.cancel = cancel

    async def renew(
        self, worker_id: str, workflow_ids: list[str], lease_until: float
    ) -> tuple[set[str], set[str]]:
        self.calls.append((worker_id, workflow_ids, lease_until))
        if len(self.calls) == 1:
            raise ConnectionError("database away")
        return self.lost & set(workflow_ids), self.cancel & set(workflow_ids)


async def test_lease_keeper_renews_what_is_held_and_reports_lost_and_canceled() -> None:
    store = FakeStore(lost={"b"}, cancel={"c"})
    held = {"a": 1, "b": 2, "c": 3}
    interrupted: list[tuple[str, bool]] = []

    def interrupt(workflow_id: str, *, lease_lost: bool = False) -> None:
        interrupted.append((workflow_id, lease_lost))
        held.pop(workflow_id, None)

    keeper = LeaseKeeper(cast(Store, store), "w-1", 0.15, held, interrupt, OutageLog("w-1"))
    keeper.ensure_running()
    keeper.ensure_running()  # already running: not a second renewer
    try:

        async def renewed_after_the_outage() -> bool:
            return len(store.calls) >= 2

        await eventually(renewed_after_the_outage)
        worker_id, ids, lease_until = store.calls[1]
        assert worker_id == "w-1"
        assert sorted(ids) == ["a", "b", "c"]
        assert lease_until > time.time()  # extended into the future
        assert sorted(interrupted) == [("b", True), ("c", False)]

        async def renews_only_what_is_still_held() -> bool:
            return len(store.calls) >= 3

        await eventually(renews_only_what_is_still_held)
        assert store.calls[2][1] == ["a"]
    finally:
        await keeper.stop()
    assert not keeper.running


async def test_stopping_a_background_task_keeps_a_cancel_of_the_one_stopping_it() -> None:
    """The stopped task's own cancellation ends the wait quietly; a cancel of the task that
    waits (a shutdown bounded by a timeout, Ctrl-C) is raised, even while the stopped task
    takes its time to end."""
    ending = asyncio.Event()

    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await ending.wait()  # cleanup that takes a while

    quiet = asyncio.get_running_loop().create_task(asyncio.sleep(3600))
    await cancel_and_wait(quiet)  # no error: it ended as asked
    assert quiet.cancelled()

    background = asyncio.get_running_loop().create_task(slow_to_end())
    await asyncio.sleep(0)
    stopper = asyncio.get_running_loop().create_task(cancel_and_wait(background))
    await asyncio.sleep(0)
    stopper.cancel()
    ending.set()
    await asyncio.wait({stopper}, timeout=5)
    assert stopper.cancelled()
    assert background.cancelled()


def test_cache_never_gives_an_earlier_run_for_a_run_that_continued_as_new() -> None:
    cache = ExecutionCache(10)
    ex = execution("a", last_seq=3)
    ex.run_id = "run-1"
    cache.remember(cast(WorkflowExecution, ex))
    assert cache.take("a", 3, "run-2") is None  # the next run, at the same seq: replay it
    assert ex.closed
