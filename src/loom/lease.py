"""Lease renewal: a worker keeps the workflows it drives for as long as it lives.

A claim gives a worker a workflow for ``lease_seconds``. While it drives the workflow, the
worker's :class:`LeaseKeeper` extends the lease every third of a lease, so a slow activity never
costs the lease. A worker that dies simply stops renewing, and another worker claims the workflow
once the lease runs out. Renewal also learns what happened elsewhere: a lease another worker took
over (this worker must stop driving, its writes would be rejected anyway by fencing) and a cancel
requested from another process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import TYPE_CHECKING, Protocol

from loom.clock import WALL_CLOCK, Clock
from loom.outage import Backoff, OutageLog
from loom.tasks import cancel_and_wait

if TYPE_CHECKING:
    from loom.store.base import Store


class Interrupt(Protocol):
    """Stop driving a workflow: its lease was lost, or (``lease_lost=False``) it was canceled."""

    def __call__(self, workflow_id: str, *, lease_lost: bool = ...) -> None: ...


class LeaseKeeper:
    """Renews the leases of the workflows in ``held`` (ids) while it runs.

    For every workflow whose lease was lost, or whose cancel was requested, it calls
    ``interrupt(workflow_id, lease_lost=...)``. ``held`` is read at each renewal, so it follows
    what the worker claims and gives back without being told."""

    def __init__(
        self,
        store: Store,
        worker_id: str,
        lease_seconds: float,
        held: Collection[str],
        interrupt: Interrupt,
        outages: OutageLog,
        clock: Clock = WALL_CLOCK,
    ) -> None:
        self.store = store
        self.clock = clock
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._held = held
        self._interrupt = interrupt
        self._outages = outages
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def ensure_running(self) -> None:
        """Start renewing (in the running event loop) unless already doing so."""
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._renew_loop())

    async def stop(self) -> None:
        """Stop renewing; the leases still held run out on their own."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _renew_loop(self) -> None:
        """Extend held leases every third of a lease. A renewal that fails is simply tried again
        at the next tick: if the database stays away longer than the lease, the leases run out
        and fencing makes sure this worker's late writes are rejected."""
        outage = Backoff("lease renewal", self._outages)
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if not self._held:
                continue
            try:
                await self.renew(self.clock.now() + self.lease_seconds)
            except Exception as exc:
                outage.failed(exc)
                continue
            outage.succeeded()

    async def renew(self, until: float) -> None:
        """Extend the held leases to ``until`` now (before a test clock jumps past them, too);
        interrupt the workflows whose lease was lost or whose cancel was requested."""
        if not self._held:
            return
        lost, cancel = await self.store.renew(self.worker_id, list(self._held), until)
        for wid in lost | cancel:
            self._interrupt(wid, lease_lost=wid in lost)
