"""``WorkflowHandle``: one workflow, by id, and what can be read of it or done to it.

A handle holds no state of the workflow: every method reads or acts on its ``Database``, through
the store the database shows (decoded payloads, or placeholders) or its plain parts (status,
tags), so a handle is cheap to make and never stale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from loom import limits
from loom.activity_view import ActivityRow, activity_rows
from loom.core import history_file
from loom.core.history import Event
from loom.errors import (
    ConfigurationError,
    WorkflowCanceledError,
    WorkflowFailedError,
    WorkflowNotFoundError,
)
from loom.status import WorkflowStatus
from loom.store.base import ActivityHeartbeat, CancelOutcome, ResetOutcome, Store, WorkflowRecord
from loom.store.encoded import EncodedStore

if TYPE_CHECKING:
    from loom.client import Database
    from loom.core.workflow import Workflow

StateT = TypeVar("StateT")


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """One run of a workflow id: ``status`` is ``CONTINUED_AS_NEW`` for the runs a
    ``ctx.continue_as_new`` ended, else the workflow's status (the current run); times are
    seconds since the epoch (``ended`` None while it runs)."""

    run_id: str
    number: int
    status: str
    started: float
    ended: float | None
    events: int


class WorkflowHandle(Generic[StateT]):
    """Refers to one workflow by id; every method reads or acts on the database.

    ``workflow`` is the class it was started with (None for ``db.get_workflow(id)``): queries
    run with it, else with the class registered under the workflow's name.
    """

    def __init__(
        self,
        database: Database,
        workflow_id: str,
        workflow: type[Workflow[Any, Any]] | None = None,
    ) -> None:
        self.database = database
        self.workflow_id = workflow_id
        self.workflow = workflow

    def __repr__(self) -> str:
        return f"WorkflowHandle({self.workflow_id!r})"

    async def describe(self) -> WorkflowRecord:
        """The workflow's record. A payload in it that cannot be decoded raises
        ``PayloadDecodeError`` (or reads as the placeholder: ``Database(placeholders=True)``)."""
        return await self._record(self.database._shown)

    async def _record(self, store: Store) -> WorkflowRecord:
        record = await store.get_workflow(self.workflow_id)
        if record is None:
            raise WorkflowNotFoundError(self.workflow_id)
        return record

    async def _decoded(self, record: WorkflowRecord) -> WorkflowRecord:
        """``record``, read from the backend, as :meth:`describe` shows it: decoded in place
        (the row is not read a second time) when the store decodes records."""
        shown = self.database._shown
        if isinstance(shown, EncodedStore):
            return shown.decoded(record)
        return await self.describe()

    async def status(self) -> WorkflowStatus:
        return (await self._record(self.database._plain_parts)).status

    async def state(self) -> StateT:
        """The current state, including changes made by a step that is still running."""
        return (await self.describe()).state  # type: ignore[return-value]

    async def events(self, run_id: str | None = None) -> list[Event]:
        """The current run's whole history, oldest first; with ``run_id``, that of an earlier
        run (see :meth:`runs`)."""
        store = self.database._shown
        if run_id is not None:
            record = await self._record(self.database._plain_parts)
            if run_id != record.run_id:
                found = await store.load_run_history(self.workflow_id, run_id)
                if not found:
                    raise ConfigurationError(
                        f"workflow {self.workflow_id!r} has no run {run_id!r}; its runs are "
                        f"listed by handle.runs() and `loom inspect`"
                    )
                return found
        events = await store.load_history(self.workflow_id)
        if not events:
            await self._record(self.database._plain_parts)  # raises WorkflowNotFoundError
        return events

    async def export_history(self, run_id: str | None = None) -> dict[str, Any]:
        """A run's history as an exported document (JSON values): what ``loom inspect ID
        --export FILE`` writes and ``loom.testing.Replayer`` replays. The current run, or the
        earlier run ``run_id`` (one that continued as new; see :meth:`runs`)."""
        record = await self.describe()
        # Read strictly (not as the displays read): a payload this process cannot decode
        # raises PayloadDecodeError rather than writing a placeholder into a history to replay.
        strict = self.database.store
        if run_id is not None and run_id != record.run_id:
            events = await strict.load_run_history(self.workflow_id, run_id)
            if not events:
                raise ConfigurationError(
                    f"workflow {self.workflow_id!r} has no run {run_id!r}; its runs are "
                    f"listed by handle.runs() and `loom inspect`"
                )
        else:
            events = await strict.load_history(self.workflow_id)
            if not events:  # deleted since its record was read (retention)
                raise WorkflowNotFoundError(self.workflow_id)
            run_id = record.run_id
        # Read after the record: the events may have moved on since, and they say it last.
        ending = history_file.ENDINGS.get(events[-1].type, WorkflowStatus.RUNNING)
        version = events[0].payload.get("version")
        return history_file.to_document(
            name=record.name,
            version=version if isinstance(version, str) else record.version,
            workflow_id=record.workflow_id,
            run_id=run_id,
            status=ending.value,
            events=events,
        )

    async def tags(self) -> dict[str, str]:
        """The tags the workflow was started with."""
        found = await self.database._plain_parts.tags(self.workflow_id)  # tags stay plain
        if not found:
            await self._record(self.database._plain_parts)  # raises WorkflowNotFoundError
        return found

    async def runs(self) -> list[WorkflowRun]:
        """Every run of this workflow id, oldest first: those ended by
        ``ctx.continue_as_new``, then the current one."""
        record = await self._record(self.database._plain_parts)
        earlier = await self.database.store.list_runs(self.workflow_id)
        runs = [
            WorkflowRun(r.run_id, n, "CONTINUED_AS_NEW", r.started, r.ended, r.events)
            for n, r in enumerate(earlier, start=1)
        ]
        current = record.status.value
        ended = None if record.status is WorkflowStatus.RUNNING else record.updated
        started = earlier[-1].ended if earlier else record.created
        runs.append(
            WorkflowRun(
                record.run_id or "", len(runs) + 1, current, started, ended, record.last_seq
            )
        )
        return runs

    async def heartbeats(self) -> list[ActivityHeartbeat]:
        """The last heartbeat of each of its activities that sent one (``loom.heartbeat``), by
        seq: which attempt sent it, when, and the last details sent. Kept while the workflow
        runs; a workflow that ended, or was just reset, has none. Their details are decoded
        like every payload (``PayloadDecodeError``, or the placeholder:
        ``Database(placeholders=True)``)."""
        beats = await self.database._shown.read_heartbeats(self.workflow_id)
        if not beats:
            await self._record(self.database._plain_parts)  # raises WorkflowNotFoundError
        return beats

    async def activities(self) -> list[ActivityRow]:
        """Its current run's activity calls, by seq: each recorded attempt with the worker
        that ran it, and where the next one stands (waiting for a worker of its queue,
        running on the worker holding its task, or where its workflow runs)."""
        record = await self._record(self.database._plain_parts)
        events = await self.database._plain_parts.load_history(self.workflow_id)
        tasks = await self.database._plain_parts.read_tasks(self.workflow_id)
        running = record.status is WorkflowStatus.RUNNING
        return activity_rows(events, tasks, running=running)

    async def result(self, timeout: float | None = None) -> StateT:
        """Wait for the workflow to end and return its final state.

        Raises ``WorkflowFailedError`` (with ``cause``) if it failed, ``WorkflowCanceledError``
        if it was canceled, and ``TimeoutError`` if ``timeout`` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.002
        changed = self.database.workflow_changed
        await self.database.follow_changes()
        while True:
            seen = changed.version
            record = await self._record(self.database._plain_parts)
            if record.status is not WorkflowStatus.RUNNING:
                record = await self._decoded(record)  # the payloads, decoded, once it ended
            if record.status is WorkflowStatus.COMPLETED:
                return record.state  # type: ignore[return-value]
            if record.status is WorkflowStatus.FAILED:
                raise WorkflowFailedError(self.workflow_id, record.error or {})
            if record.status is WorkflowStatus.CANCELED:
                reason = (record.error or {}).get("message")
                raise WorkflowCanceledError(self.workflow_id, reason)
            wait = pause
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"workflow {self.workflow_id!r} did not finish within {timeout} s "
                        f"(it is {record.status.value})"
                    )
                wait = min(wait, left)
            await changed.wait(wait, since=seen)
            # Ends announced by the store (in this process, or PostgreSQL's NOTIFY) wake us at
            # once; otherwise the polls back off to one per 50 ms.
            pause = min(pause * 2, 0.05)

    async def query(self, name: str, /, *args: Any) -> Any:
        """The answer of the workflow's ``@loom.query`` method ``name`` to ``args``.

        Computed from the stored input and state (a running workflow's as of its last write,
        a finished one's final state) on a fresh instance of the class: the workflow is not
        woken, leased, replayed or changed. Raises ``WorkflowNotFoundError``,
        ``QueryNotFoundError``, ``QueryArgumentsError``, ``QueryFailedError`` (the method
        raised), ``PayloadError`` (an answer that is not JSON) and ``ConfigurationError`` (the
        class is not registered in this process).
        """
        return await self.database.query_workflow(
            self.workflow_id, name, args, workflow=self.workflow
        )

    async def signal(self, name: str, payload: Any = None) -> None:
        """Send signal ``name``; it is buffered until the workflow waits for it."""
        limits.check_id(name, "signal name")
        if name.startswith("__loom"):
            raise ConfigurationError(
                f"signal name {name!r}: names starting with '__loom' are Loom's own (a child "
                "workflow's end is delivered to its parent under one); choose another name"
            )
        data = self.database.encode(payload, f"the payload of signal {name!r}", root="payload")
        await self.database.store.send_signal(
            self.workflow_id, name, data, self.database.clock.now()
        )
        for worker in list(self.database.workers):
            worker.signal_arrived(self.workflow_id)
        self.database.work_available.notify()

    async def cancel(self, reason: str | None = None) -> CancelOutcome:
        """Cancel a RUNNING workflow: no further steps run, a pending activity's result is
        discarded. Immediate when no worker holds it. A worker of this process that holds it
        stops it at once (interrupting its running activity); a worker elsewhere stops it at
        its next write, which comes within its ``inline_window`` while activities run (a long
        activity is interrupted within one lease renewal)."""
        if reason is not None:
            limits.check_text(reason, "the cancel reason")
        database = self.database
        outcome = await database.store.cancel(self.workflow_id, reason, database.clock.now())
        if outcome is CancelOutcome.CANCELED and database.metrics is not None:
            record = await database.store.get_workflow(self.workflow_id)
            if record is not None:
                database.metrics.canceled.labels(record.name).inc()
        if outcome is CancelOutcome.REQUESTED:
            for worker in list(self.database.workers):
                worker.interrupt(self.workflow_id)
        self.database.workflow_changed.notify()
        return outcome

    async def reset(self, to_step: str, *, reason: str | None = None) -> ResetOutcome:
        """Restart the workflow, whatever its status, from step ``to_step``, keeping its
        history (a ``WORKFLOW_RESET`` event is appended, with ``reason``).

        The steps before ``to_step`` are not run again and their state changes stay; the steps
        from ``to_step`` on run again, with the state as it was before it, and the signals they
        had received are delivered again. RESET when done at once; REQUESTED when a worker
        holds the workflow: that worker stops it at its next write (within its
        ``inline_window`` while activities run, a lease renewal for a long one) and the reset
        happens then. Raises ``WorkflowNotFoundError``, and ``UnknownStepError`` (listing the
        steps it can be reset to) for a step it does not have or never reached.
        """
        return await self.database.reset_workflow(self.workflow_id, to_step, reason=reason)

    async def retry(self) -> None:
        """Resume a FAILED workflow from the step that failed, keeping its history.

        That step starts afresh; signals its failed attempt had received are delivered again.
        """
        from loom.core.replay_plan import discarded_signals

        history = await self.database.store.load_history(self.workflow_id)
        await self.database.store.retry(
            self.workflow_id, self.database.clock.now(), discarded_signals(history)
        )
        self.database.work_available.notify()
