"""The worker's side of heartbeats: recording them durably, handing them to the next attempt.

Each :class:`~loom.driver.WorkflowDriver` (one claimed workflow) has a :class:`HeartbeatKeeper`.
For every attempt the driver starts, the keeper makes its
:class:`~loom.activity_context.AttemptControl`, holding the details of the last heartbeat an
earlier run of that activity sent: from memory when this driver ran it, else from the store,
read once per claim when an activity is about to start (never on a workflow's first claim:
nothing can have run before it, so the common case costs no read).

Heartbeats are written through :meth:`~loom.store.base.Store.record_heartbeat`, throttled per
attempt: the first at once, then at most once per :func:`write_interval`, always the latest;
and, whatever the throttle, before a failed attempt's outcome is handed to the workflow, so
its retry (here, or anywhere after a crash) starts from its last details. Each write is fenced
by the lease epoch like a commit (a routed attempt's by its activity task's lease epoch): a worker
that lost its lease writes nothing, and learns so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from loom.activity_context import AttemptControl, Beat
from loom.core.calls import ActivityRun
from loom.outage import OUTAGE_ERRORS
from loom.store.base import CommitOutcome, HeartbeatRow, Store

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from loom.lease import Interrupt

log = logging.getLogger("loom.worker")

MIN_INTERVAL = 0.1
MAX_INTERVAL = 1.0


def write_interval(heartbeat_timeout: float | None) -> float:
    """How often one attempt's heartbeats are written at most: a third of its heartbeat timeout
    (so a missed write or two still leave a recent one), within 0.1 s and 1 s."""
    if heartbeat_timeout is None:
        return MAX_INTERVAL
    return min(MAX_INTERVAL, max(MIN_INTERVAL, heartbeat_timeout / 3))


@dataclass(slots=True)
class _Writer:
    """The writes of one attempt's heartbeats: at most one in flight, the next one not before
    ``next_at`` (monotonic)."""

    control: AttemptControl
    interval: float
    next_at: float = 0.0
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None
    closed: bool = False


_NONE_WARNED: frozenset[int] = frozenset()  # shared: ``frozenset()`` makes a new object


class HeartbeatKeeper:
    """The heartbeats of one claimed workflow's attempts (see the module's docstring).

    ``interrupt(workflow_id, lease_lost=...)`` is called when a write finds that the workflow
    left this worker: its lease moved on (``lease_lost``), or it was canceled or its cancel was
    requested."""

    __slots__ = (  # one is made for every claim
        "_controls",
        "_interrupt",
        "_loaded",
        "_now",
        "_record",
        "_stored",
        "_warned",
        "_writers",
        "known",
        "lease_epoch",
        "max_bytes",
        "run_id",
        "store",
        "workflow_id",
    )

    def __init__(
        self,
        store: Store,
        workflow_id: str,
        lease_epoch: int,
        *,
        first_claim: bool,
        max_bytes: int,
        interrupt: Interrupt,
        now: Callable[[], float] = time.time,
        run_id: str | None = None,
        record: Callable[[HeartbeatRow], Awaitable[CommitOutcome]] | None = None,
    ) -> None:
        self.store = store
        self._record = record
        """How a beat is written, fenced: by an activity task's lease (a routed attempt:
        ``loom.activity_tasks``); None: by the workflow's lease (its driver)."""
        self._now = now
        self.workflow_id = workflow_id
        self.run_id = run_id
        self.lease_epoch = lease_epoch
        self.max_bytes = max_bytes
        self._interrupt = interrupt
        self._loaded = first_claim
        self._stored = not first_claim
        self.known: dict[int, tuple[str, str]] = {}
        """The latest details (JSON text) of each activity, by seq, with the activity's name."""
        self._controls: dict[int, AttemptControl] = {}
        """The attempts running now, by seq."""
        self._writers: dict[int, _Writer] | None = None
        """The heartbeat writes of those of them that beat (made at the first beat)."""
        self._warned: frozenset[int] = _NONE_WARNED
        """Activities whose heartbeats the database refused (warned about once)."""

    @property
    def loaded(self) -> bool:
        """Whether what earlier runs recorded is known (:meth:`load` has nothing to do)."""
        return self._loaded

    @property
    def stored(self) -> bool:
        """Whether the store may hold heartbeats of this workflow: False on a first claim (or
        after :meth:`load` found none) until this keeper writes one, so a workflow's end
        deletes them only when there can be some."""
        return self._stored

    async def load(self) -> None:
        """Read what earlier runs recorded, once per claim (nothing to read on a first claim)."""
        if self._loaded:
            return
        beats = await self.store.read_heartbeats(self.workflow_id)
        self._stored = bool(beats)  # no attempt, so no write of this keeper, came before
        for beat in beats:
            if beat.details is not None and beat.seq not in self.known:
                self.known[beat.seq] = (beat.activity, orjson.dumps(beat.details).decode())
        self._loaded = True

    def control(self, run: ActivityRun) -> AttemptControl:
        """The control of a new attempt of ``run``, with the activity's last known details.

        Details recorded under another activity's name at that seq (a run whose scheduling was
        never written, replayed with other inputs) are not handed over. Its writer is made at
        its first beat: most attempts never beat."""
        definition = run.definition
        known = self.known.get(run.seq)
        same = known is not None and known[0] == definition.name
        control = AttemptControl(
            workflow_id=self.workflow_id,
            run_id=self.run_id,
            activity_name=definition.name,
            seq=run.seq,
            step=run.step,
            attempt=run.attempt,
            timeout=definition.timeout_seconds,
            heartbeat_timeout=definition.heartbeat_timeout,
            previous_details=known[1] if known is not None and same else None,
            max_bytes=self.max_bytes,
            listener=self,
            loop=asyncio.get_running_loop(),
            now=self._now,
        )
        self._controls[run.seq] = control
        return control

    # -- cancelling -----------------------------------------------------------------------
    def cancel(self, seq: int, reason: str) -> None:
        """Cancel the attempt of ``seq`` running now, if any (``is_cancelled()``, ``heartbeat()``
        raises); interrupting its task is the driver's job."""
        control = self._controls.get(seq)
        if control is not None:
            control.cancel(reason)

    def cancel_all(self, reason: str) -> None:
        for control in list(self._controls.values()):
            control.cancel(reason)

    # -- writing --------------------------------------------------------------------------
    def beaten(self, control: AttemptControl) -> None:
        """An attempt beat (on the event loop): write now, or when the throttle allows."""
        seq = control.seq
        if self._controls.get(seq) is not control:
            return  # that attempt is over (a task it left behind beats on): nothing to record
        if self._writers is None:
            self._writers = {}
        writer = self._writers.get(seq)
        if writer is None:
            interval = write_interval(control.heartbeat_timeout)
            writer = self._writers[seq] = _Writer(control, interval)
        if writer.task is not None or writer.timer is not None:
            return  # a write is pending already: it will take the latest beat
        delay = writer.next_at - time.monotonic()
        loop = asyncio.get_running_loop()
        if delay > 0:
            writer.timer = loop.call_later(delay, self._write_now, writer)
        else:
            self._write_now(writer)

    def _write_now(self, writer: _Writer) -> None:
        writer.timer = None
        if not writer.closed:
            writer.task = asyncio.get_running_loop().create_task(self._write_latest(writer))

    async def _write_latest(self, writer: _Writer) -> None:
        try:
            beat = writer.control.take_unwritten()
            if beat is not None and not await self._write(writer.control, beat):
                writer.control.put_back(beat)  # not written: the next write takes it again
        finally:
            writer.task = None
            writer.next_at = time.monotonic() + writer.interval
            if not writer.closed and writer.control.has_unwritten():
                self.beaten(writer.control)

    async def _write(self, control: AttemptControl, beat: Beat) -> bool:
        """Write one beat; False when it could not be written (the database refused it)."""
        self._stored = True  # before the write: it may be stored even if its answer is lost
        try:
            row = HeartbeatRow(
                control.seq, control.activity_name, control.attempt, beat.details, beat.at
            )
            if self._record is None:
                recorded = await self.store.record_heartbeat(
                    self.workflow_id, self.lease_epoch, row
                )
            else:
                recorded = await self._record(row)
        except OUTAGE_ERRORS as exc:  # logged once by the worker's outage log; kept for later
            log.debug("workflow %s: heartbeat not recorded: %s", self.workflow_id, exc)
            return False
        except Exception as exc:  # the database refused it: kept, and tried again later
            if control.seq in self._warned:
                return False
            self._warned |= {control.seq}
            log.warning(
                "workflow %s: the heartbeats of activity %r (seq %d) cannot be recorded: %s",
                self.workflow_id,
                control.activity_name,
                control.seq,
                exc,
            )
            return False
        if recorded is not CommitOutcome.OK:  # the driver cancels its attempts
            self._interrupt(self.workflow_id, lease_lost=recorded is CommitOutcome.FENCED)
        return True

    # -- an attempt's end -----------------------------------------------------------------
    async def finish(self, seq: int, *, failed: bool) -> None:
        """The attempt of ``seq`` ended; ``failed``: its latest beat is written now (after the
        write in flight, if any), so the next attempt, wherever it runs, starts from it."""
        control = self._controls.get(seq)
        writer = self._close(seq)
        if control is None or not failed:
            return
        if writer is not None and writer.task is not None:
            with contextlib.suppress(Exception):
                await writer.task
        beat = control.take_unwritten()
        if beat is not None:
            await self._write(control, beat)

    def succeeded(self, seq: int) -> None:
        """The attempt of ``seq`` succeeded: :meth:`finish` without a failure, which writes
        nothing more, so it needs no await."""
        self._close(seq)

    def drop(self, seq: int) -> None:
        """The attempt of ``seq`` was interrupted: nothing more of it is written."""
        writer = self._close(seq)
        if writer is not None and writer.task is not None:
            writer.task.cancel()

    def close(self) -> None:
        """The workflow leaves this worker: stop writing for every attempt."""
        for seq in list(self._controls):
            self.drop(seq)

    def _close(self, seq: int) -> _Writer | None:
        """Forget the attempt of ``seq`` (keeping its latest details); its writer, if it beat."""
        control = self._controls.pop(seq, None)
        if control is not None and control.details is not None:
            self.known[seq] = (control.activity_name, control.details)
        writer = None if self._writers is None else self._writers.pop(seq, None)
        if writer is None:
            return None
        writer.closed = True
        if writer.timer is not None:
            writer.timer.cancel()
            writer.timer = None
        return writer
