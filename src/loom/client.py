"""``Database``: the public API that users, the CLI and the dashboard call (with its handles,
``loom.handles``).

A ``Database`` owns one store (picked from its URL) and, lazily, one in-process worker used by
:func:`loom.run_once`. The CLI and the dashboard read and act only through this module, never
the store: the records it returns (``WorkflowRecord``, ``StoreStats``, ``CancelOutcome``,
``ActivityHeartbeat``) are re-exported here for them. It also carries two in-process notifiers,
so a worker in the same process wakes the moment work is started and ``handle.result()``
returns the moment a workflow ends; across processes both fall back to polling the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
import uuid
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from loom import codec, limits, retention, telemetry
from loom.activity_view import ActivityRow as ActivityRow
from loom.bulk import BulkResult as BulkResult
from loom.clock import WALL_CLOCK, Clock
from loom.core import workflow as workflow_module
from loom.core.history import Event, EventType
from loom.core.query import run_query
from loom.definitions import Registry, WorkflowDefinition, default_registry, workflow_definition
from loom.errors import (
    ConfigurationError,
    DatabaseUnavailableError,
    LoomError,
    StoreError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyExistsError,
    WorkflowNotFoundError,
)
from loom.handles import WorkflowHandle as WorkflowHandle
from loom.handles import WorkflowRun as WorkflowRun
from loom.metrics import DEFAULT_QUEUE, Metrics, MetricsServer
from loom.payload_codecs import CodecChain, PayloadCodec, as_chain, codec_from_env, codec_from_spec
from loom.queues import QueueLimits, QueueStats, Rate, check_priority, check_queue
from loom.schedules import ScheduleMethods
from loom.status import WorkflowStatus
from loom.store import open_store, resolve_url
from loom.store.base import ActivityHeartbeat as ActivityHeartbeat
from loom.store.base import CancelOutcome as CancelOutcome
from loom.store.base import HistoryMoved, NewWorkflow, ResetRequest, Store
from loom.store.base import ResetOutcome as ResetOutcome
from loom.store.base import StoreStats as StoreStats
from loom.store.base import WorkflowRecord as WorkflowRecord
from loom.store.common import canonical, migrations
from loom.store.encoded import EncodedStore
from loom.store.payloads import Payloads

if TYPE_CHECKING:
    from loom.core.workflow import Workflow
    from loom.worker import Worker

StateT = TypeVar("StateT")


log = logging.getLogger("loom.client")

RESET_ATTEMPTS = 20
"""How often a reset is planned again when the workflow recorded progress meanwhile."""


class Notifier:
    """Wakes every coroutine waiting on it; lost wake-ups are covered by the waiters' timeouts."""

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[None]] = set()
        self.version = 0
        """Counts notifications: a waiter that read it before looking can tell it missed one."""

    def notify(self) -> None:
        self.version += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait(self, timeout: float, since: int | None = None) -> None:
        """Wait for the next notification, at most ``timeout`` seconds; return at once if one
        came after ``version`` was ``since``."""
        if since is not None and since != self.version:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait((waiter,), timeout=max(0.0, timeout))
        finally:
            self._waiters.discard(waiter)


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """One row of ``list_workflows``."""

    workflow_id: str
    name: str
    version: str
    status: WorkflowStatus
    current_step: str | None
    created_at: datetime
    updated_at: datetime
    parent_id: str | None = None

    @classmethod
    def of(cls, record: WorkflowRecord) -> WorkflowSummary:
        return cls(
            record.workflow_id,
            record.name,
            record.version,
            record.status,
            record.current_step,
            record.created_at,
            record.updated_at,
            record.parent_id,
        )


@dataclass(frozen=True, slots=True)
class StartRequest:
    """One workflow of :meth:`Database.start_workflows`: its class, input, id (default: a new
    UUID) and initial state, as :meth:`Database.start_workflow` takes them."""

    workflow: type[Workflow[Any, Any]]
    input: Any = None
    workflow_id: str | None = None
    initial_state: Any = None
    tags: Mapping[str, str] | None = None
    queue: str | None = None
    """Its task queue (default: the workflow class's)."""
    priority: int = 0
    """Smaller runs first among the ready work of its queue."""


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """Whether the current code reproduces one stored history (``loom replay``)."""

    workflow_id: str
    name: str
    ok: bool
    problem: str | None


class Database(ScheduleMethods):
    """A Loom database. ``url`` defaults to ``$LOOM_DATABASE_URL``, else ``sqlite:///loom.db``.

    Use it as an async context manager; ``migrate_up()`` creates or upgrades the schema. With
    ``create=False``, opening a database that does not exist raises ``StoreError``.

    Schedules (``create_schedule``, ``list_schedules``, ``describe_schedule``, ``pause_schedule``,
    ``resume_schedule``, ``trigger_schedule``, ``delete_schedule``) come from
    :class:`~loom.schedules.ScheduleMethods`.

    Workflow ids and names follow one rule (:mod:`loom.limits`; ``InvalidIdError``), and a
    workflow's input, its initial state and a signal's payload are each at most
    ``max_payload_bytes`` as JSON (``PayloadTooLargeError``, raised before anything is stored).

    ``clock`` is where it and its workers read the time of day (default: the wall clock;
    ``loom.testing`` gives a virtual one that skips waits).
    ``metrics=True`` records Prometheus metrics (:attr:`metrics`; the ``metrics`` extra).
    Workflows are traced with OpenTelemetry when a tracer provider is configured globally, or
    with ``tracer_provider`` (the ``otel`` extra); see :mod:`loom.telemetry`.

    ``codec`` encodes every payload before it is stored and decodes it when read (see
    :mod:`loom.payload_codecs`): a ``PayloadCodec``, a ``CodecChain``, a list of codecs applied
    in order, or a spec string (``"compress+aesgcm:keyfile=/path"``); default ``$LOOM_CODEC``,
    else none (``"none"`` for none whatever the environment says). A stored payload this
    process cannot decode raises ``PayloadDecodeError`` when read; with ``placeholders``, the
    records and histories read show :data:`~loom.payload_codecs.PLACEHOLDER` in its place
    instead (for displays: the CLI and the dashboard). What decides or writes (queries,
    retries, workers) always reads strictly.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        registry: Registry | None = None,
        create: bool = True,
        max_payload_bytes: int = limits.DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Clock | None = None,
        metrics: bool = False,
        tracer_provider: Any = None,
        codec: PayloadCodec | CodecChain | Sequence[PayloadCodec] | str | None = None,
        placeholders: bool = False,
    ) -> None:
        if (
            not isinstance(max_payload_bytes, int)
            or isinstance(max_payload_bytes, bool)
            or max_payload_bytes < 1
        ):
            raise ConfigurationError(
                f"max_payload_bytes must be a positive number of bytes, got {max_payload_bytes!r}"
            )
        self.max_payload_bytes = max_payload_bytes
        self.clock: Clock = clock or WALL_CLOCK
        self.tracing = telemetry.Tracing(tracer_provider)
        self.metrics: Metrics | None = Metrics() if metrics else None
        """What this process records about this database for Prometheus (None: nothing)."""
        self.url = resolve_url(url)
        self.registry = registry or default_registry
        chain = (
            codec_from_env()
            if codec is None
            else codec_from_spec(codec)
            if isinstance(codec, str)
            else as_chain(codec)
        )
        self.codec: CodecChain | None = chain
        """The codecs every payload passes through (None: payloads are stored as they are)."""
        self.placeholders = bool(placeholders)
        backend = open_store(self.url, create=create)
        encoded = EncodedStore(backend, Payloads(chain))
        self.store: Store = encoded
        """The store, its payloads encoded and decoded (strictly): what workers write with."""
        self._shown: Store = encoded.reading(placeholders=True) if placeholders else encoded
        """What records and histories are read from for display."""
        self._plain_parts: Store = backend
        """For reads that use no payload (status, summaries, runs): nothing is decoded."""
        if self.metrics is not None:
            backend.claim_canceled = self.metrics.canceled_at_claim
        self.work_available = Notifier()
        self.workflow_changed = Notifier()
        self._opened = 0
        self._worker: Worker | None = None
        self._following: asyncio.Task[None] | None = None
        self.workers: weakref.WeakSet[Worker] = weakref.WeakSet()
        """The workers of this process on this database (:meth:`register_worker`): a signal or
        a cancel reaches them at once."""

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_open(self) -> bool:
        return self._opened > 0

    async def open(self) -> None:
        if self._opened == 0:
            await self.store.open()
            _active.setdefault(asyncio.get_running_loop(), []).append(self)
        self._opened += 1

    async def close(self) -> None:
        if self._opened == 0:
            return
        self._opened -= 1
        if self._opened == 0:
            if self._worker is not None:
                await self._worker.stop_and_wait()
                self._worker = None
            with contextlib.suppress(ValueError):
                _active.get(asyncio.get_running_loop(), []).remove(self)
            if self._following is not None:
                self._following = None
                with contextlib.suppress(Exception):
                    await self.store.unlisten(self.workflow_changed.notify, topic="changes")
            await self.store.close()

    async def follow_changes(self) -> None:
        """Have ``workflow_changed`` also wake on changes made by other processes (PostgreSQL
        LISTEN); without it, or on SQLite, waiters poll. Idempotent; returns once listening."""
        if not self.is_open:
            return
        if self._following is None:
            self._following = asyncio.get_running_loop().create_task(
                self.store.listen(self.workflow_changed.notify, topic="changes")
            )
        try:
            await asyncio.shield(self._following)
        except Exception:  # an optimisation: waiters poll regardless
            log.debug("cannot listen for workflow changes; polling", exc_info=True)
            self._following = None

    def register_worker(self, worker: Worker) -> None:
        """Let ``worker`` (of this process) hear at once of signals and cancels sent through
        this database; it is forgotten when garbage collected."""
        self.workers.add(worker)

    # -- observability -----------------------------------------------------------------------
    def enable_metrics(self) -> Metrics:
        """Start recording Prometheus metrics (if not already): :attr:`metrics`.
        ``MissingExtraError`` without the ``metrics`` extra."""
        if self.metrics is None:
            self.metrics = Metrics()
            self._plain_parts.claim_canceled = self.metrics.canceled_at_claim
        return self.metrics

    async def scrape_metrics(self) -> bytes:
        """Every metric in Prometheus's text format, the queue gauges read from the database
        now (enabling metrics if they were not)."""
        metrics = self.enable_metrics()
        try:
            stats: StoreStats | None = await self.stats()
        except StoreError as exc:
            log.warning("metrics: cannot read the queue from the database: %s", exc)
            stats = None
        if stats is None:
            metrics.queues(None)
        else:  # an empty database still reports its default queue, at zero
            metrics.queues(stats.by_queue or {DEFAULT_QUEUE: stats}, stats.activity_tasks)
        return metrics.render()

    def serve_metrics(self, port: int = 9464, host: str = "127.0.0.1") -> MetricsServer:
        """An HTTP endpoint serving :meth:`scrape_metrics` at ``/metrics``: ``async with
        db.serve_metrics(9464):`` beside a worker (``port`` 0 picks a free one, then
        ``server.port``). Enables metrics (``MissingExtraError`` without the extra)."""
        metrics = self.enable_metrics()
        return MetricsServer(self.scrape_metrics, metrics.content_type, host=host, port=port)

    async def schema_version(self) -> int:
        """The newest migration applied; 0 for a database never initialized."""
        return await self.store.schema_version()

    def required_schema_version(self) -> int:
        """The schema version this Loom needs: its newest migration (``migrate_up`` applies
        what a database lacks). A worker on an older schema would fail its writes."""
        return max(version for version, _, _ in migrations(self.store.dialect))

    async def migrate_up(self) -> list[str]:
        """Create or upgrade the schema. Idempotent: returns the migrations applied now."""
        return await self.store.migrate()

    # -- starting -------------------------------------------------------------------------
    async def start_workflow(
        self,
        workflow: type[Workflow[Any, StateT]],
        *,
        workflow_input: Any = None,
        initial_state: Any = None,
        workflow_id: str | None = None,
        version: str | None = None,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> WorkflowHandle[StateT]:
        """Record a new workflow and make it ready for a worker; return its handle.

        An existing ``workflow_id`` returns that workflow's handle if its input is equal, and
        raises ``WorkflowAlreadyExistsError`` otherwise. The run stays on the version of
        ``workflow`` (or, with ``version``, that registered version of its name). ``tags``
        (string keys and values) are stored with it, indexed: ``list_workflows(tags=...)``.
        ``queue`` (default: the workflow's own, ``@loom.workflow(queue=...)``) is the task
        queue it runs on; ``priority`` (an int, smaller first, default 0) orders it among the
        ready work of that queue.
        """
        definition = workflow_definition(workflow)
        if version is not None and version != definition.version:
            definition = self.registry.workflow(definition.name, workflow_id, version)
        return await self._start(
            definition, workflow_input, initial_state, workflow_id, tags, queue, priority
        )

    async def start_workflow_by_name(
        self,
        name: str,
        *,
        workflow_input: Any = None,
        initial_state: Any = None,
        workflow_id: str | None = None,
        version: str | None = None,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> WorkflowHandle[Any]:
        """Start a registered workflow by its name (as the CLI and dashboard do): its newest
        version, or ``version``."""
        definition = self.registry.workflow(
            limits.check_id(name, "workflow name"), workflow_id, version
        )
        return await self._start(
            definition, workflow_input, initial_state, workflow_id, tags, queue, priority
        )

    async def start_workflows(self, requests: Iterable[StartRequest]) -> list[WorkflowHandle[Any]]:
        """Start every workflow of ``requests`` in one transaction: all of them or none, for
        the batch job that enqueues many at once. Returns their handles, in order.

        Each id is idempotent as with :meth:`start_workflow`: one that exists with the same
        workflow and input is kept (and its handle returned); one that exists with another
        input, or appears twice in ``requests`` with different ones, raises
        ``WorkflowAlreadyExistsError`` naming it, and nothing is written. Inputs are encoded
        (``PayloadError``) before anything is written.
        """
        if isinstance(requests, StartRequest | str | bytes | Mapping) or not isinstance(
            requests, Iterable
        ):
            raise ConfigurationError(
                "start_workflows takes a list of loom.StartRequest, got a "
                f"{type(requests).__name__}"
            )
        now = self.clock.now()
        prepared: dict[str, tuple[NewWorkflow, Event]] = {}
        handles: list[WorkflowHandle[Any]] = []
        for position, request in enumerate(requests):
            try:
                new, first, cls = self._prepare_request(request, now)
                twin = prepared.setdefault(new.workflow_id, (new, first))[0]
                if twin.name != new.name or canonical(twin.input) != canonical(new.input):
                    raise WorkflowAlreadyExistsError(
                        new.workflow_id, "twice in this batch, with different workflows or inputs"
                    )
            except LoomError as exc:
                # Which of thousands of requests is wrong: the error keeps its type and fields.
                exc.args = (f"start_workflows item {position}: {exc}",)
                raise
            handles.append(WorkflowHandle(self, new.workflow_id, cls))
        if prepared and await self.store.create_workflows(list(prepared.values())):
            self.work_available.notify()
        return handles

    def _prepare_request(
        self, request: StartRequest, now: float
    ) -> tuple[NewWorkflow, Event, type[Workflow[Any, Any]]]:
        if not isinstance(request, StartRequest):
            raise ConfigurationError(
                f"start_workflows takes loom.StartRequest items, not a {type(request).__name__}"
            )
        definition = workflow_definition(request.workflow)
        new, first = self._prepare(
            definition,
            request.input,
            request.initial_state,
            request.workflow_id,
            now,
            request.tags,
            request.queue,
            request.priority,
        )
        return new, first, definition.cls

    async def _start(
        self,
        definition: WorkflowDefinition,
        workflow_input: Any,
        initial_state: Any,
        workflow_id: str | None,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> WorkflowHandle[Any]:
        new, first = self._prepare(
            definition,
            workflow_input,
            initial_state,
            workflow_id,
            self.clock.now(),
            tags,
            queue,
            priority,
        )
        wid, name, stored_input = new.workflow_id, new.name, new.input
        tracer = self.tracing.tracer()
        if tracer is None:
            existing = await self.store.create_workflow(new, first)
        else:
            with telemetry.starting(tracer, name, wid) as span:
                first.payload[telemetry.TRACE_KEY] = telemetry.carrier(span)
                existing = await self.store.create_workflow(new, first)
                span.set_attribute("loom.workflow.existing", existing is not None)
        if existing is not None:
            if existing.name != name:
                raise WorkflowAlreadyExistsError(wid, f"as a {existing.name!r} workflow")
            if canonical(existing.input) != canonical(stored_input):
                raise WorkflowAlreadyExistsError(wid, "with a different input")
        else:
            self.work_available.notify()
            if self.metrics is not None:
                self.metrics.started.labels(name).inc()
        return WorkflowHandle(self, wid, definition.cls)

    def _prepare(
        self,
        definition: WorkflowDefinition,
        workflow_input: Any,
        initial_state: Any,
        workflow_id: str | None,
        now: float,
        tags: Mapping[str, str] | None = None,
        queue: str | None = None,
        priority: int = 0,
    ) -> tuple[NewWorkflow, Event]:
        """A new workflow's row and first event, its input and state encoded (nothing is
        written: a value that cannot be stored raises here)."""
        name, version = definition.name, definition.version
        limits.check_id(name, "workflow name")
        wid = str(uuid.uuid4()) if workflow_id is None else limits.check_id(workflow_id)
        tag_pairs = check_tags(tags)
        queue = definition.queue if queue is None else check_queue(queue)
        priority = check_priority(priority)
        stored_input = self.encode(workflow_input, f"the input of workflow {wid!r}", root="input")
        state = self.encode(
            initial_state or {}, f"the initial state of workflow {wid!r}", root="initial_state"
        )
        if not isinstance(state, dict):
            raise ConfigurationError(
                f"initial_state of workflow {wid!r} must be a mapping, got {type(state).__name__}"
            )
        first = Event(
            1,
            EventType.WORKFLOW_STARTED,
            {"name": name, "version": version, "input": stored_input, "state": state},
            now,
        )
        new = NewWorkflow(wid, name, version, stored_input, state, now, tag_pairs, queue, priority)
        return new, first

    def encode(self, value: Any, what: str, root: str = "value") -> Any:
        """``value`` as stored (round-tripped through JSON), within ``max_payload_bytes``;
        ``root`` names it in an error about one of its parts (``input['a'][2] is nan``)."""
        data = codec.dumps(value, what=what, root=root)
        limits.check_size(data, self.max_payload_bytes, what)
        return codec.loads(data)

    # -- reading ----------------------------------------------------------------------------
    def get_workflow(self, workflow_id: str) -> WorkflowHandle[Any]:
        """A handle to an existing workflow (no I/O; its methods raise if the id is unknown).

        An id that breaks the id rule raises ``InvalidIdError`` here.
        """
        return WorkflowHandle(self, limits.check_id(workflow_id))

    async def list_workflows(
        self,
        status: WorkflowStatus | str | None = None,
        limit: int = 50,
        *,
        name: str | None = None,
        offset: int = 0,
        parent_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
    ) -> list[WorkflowSummary]:
        """Newest first. ``status`` filters by RUNNING, COMPLETED, FAILED or CANCELED;
        ``parent_id`` keeps the children of that workflow; ``tags`` those started with every
        one of these tags; ``created_after`` (included) and ``created_before`` a time range
        (aware datetimes or epoch seconds). Every filter is answered by an index."""
        wanted = None
        if status is not None:
            try:
                wanted = WorkflowStatus(str(status).upper())
            except ValueError:
                raise ConfigurationError(
                    f"unknown status {status!r}; use one of "
                    f"{', '.join(s.value for s in WorkflowStatus)}"
                ) from None
        records = await self._list(
            self._plain_parts,  # a summary shows no payload: nothing to decode
            wanted,
            limit,
            name=name,
            offset=offset,
            parent_id=parent_id,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
        )
        return [WorkflowSummary.of(r) for r in records]

    async def workflow_ids(
        self,
        status: WorkflowStatus | str | None = None,
        *,
        name: str | None = None,
        id_contains: str | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
    ) -> list[str]:
        """The ids of every workflow matching these filters (as :meth:`list_workflows`, with
        no limit), newest first: the selection of a bulk action."""
        if name is not None:
            limits.check_id(name, "workflow name")
        return await self.store.workflow_ids(
            status=status_of(status),
            name=name,
            id_contains=id_contains,
            tags=check_tags(tags),
            created_after=_epoch(created_after, "created_after"),
            created_before=_epoch(created_before, "created_before"),
        )

    async def bulk_action(
        self,
        action: str,
        workflow_ids: Sequence[str],
        *,
        reason: str | None = None,
        to_step: str | None = None,
        registry: Registry | None = None,
    ) -> list[BulkResult]:
        """``cancel``, ``retry`` or ``reset`` (to ``to_step``) each of ``workflow_ids`` on its
        own, as its handle would; a workflow the action fails for (it finished meanwhile, it
        has no such step) is reported in its result and does not stop the others."""
        from loom.bulk import act_on_each

        return await act_on_each(
            self, action, workflow_ids, reason=reason, to_step=to_step, registry=registry
        )

    async def count_finished(
        self,
        older_than: float | timedelta,
        statuses: Sequence[WorkflowStatus | str] | None = None,
        *,
        now: float | None = None,
    ) -> int:
        """How many finished workflows (of ``statuses``, default all: COMPLETED, FAILED,
        CANCELED) ended more than ``older_than`` (seconds or a timedelta) before ``now`` (an
        epoch time; default: now)."""
        before = self._cutoff(older_than, now)
        return await self.store.count_finished(before, retention.finished_statuses(statuses))

    async def delete_finished(
        self,
        older_than: float | timedelta,
        statuses: Sequence[WorkflowStatus | str] | None = None,
        *,
        batch: int = retention.BATCH,
        now: float | None = None,
    ) -> int:
        """Delete the finished workflows :meth:`count_finished` counts, with their histories,
        earlier runs and buffered signals, ``batch`` per short transaction with a pause
        between (see :mod:`loom.retention`); return how many were deleted. Given the ``now``
        of a count, it deletes no workflow that ended after that count: what was counted (and
        confirmed) is the most it deletes."""
        if isinstance(batch, bool) or not isinstance(batch, int) or not 1 <= batch <= 10_000:
            raise ConfigurationError(f"batch must be from 1 to 10000, got {batch!r}")
        before = self._cutoff(older_than, now)
        statuses = retention.finished_statuses(statuses)
        deleted = await retention.sweep(self.store, before, statuses, batch=batch)
        if deleted:
            self.workflow_changed.notify()
        return deleted

    def _cutoff(self, older_than: float | timedelta, now: float | None) -> float:
        period = retention.period_seconds(older_than, "older_than")
        if now is None:
            return self.clock.now() - period
        if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise ConfigurationError(f"now must be an epoch time in seconds, got {now!r}")
        return now - period

    async def list_records(
        self,
        status: WorkflowStatus | None = None,
        limit: int = 50,
        *,
        name: str | None = None,
        id_contains: str | None = None,
        offset: int = 0,
        parent_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
    ) -> list[WorkflowRecord]:
        """Like :meth:`list_workflows`, with whole records and a search by part of the id."""
        return await self._list(
            self._shown,
            status,
            limit,
            name=name,
            id_contains=id_contains,
            offset=offset,
            parent_id=parent_id,
            tags=tags,
            created_after=created_after,
            created_before=created_before,
        )

    @staticmethod
    async def _list(
        store: Store,
        status: WorkflowStatus | None,
        limit: int,
        *,
        name: str | None = None,
        id_contains: str | None = None,
        offset: int = 0,
        parent_id: str | None = None,
        tags: Mapping[str, str] | None = None,
        created_after: datetime | float | None = None,
        created_before: datetime | float | None = None,
    ) -> list[WorkflowRecord]:
        return await store.list_workflows(
            status=status,
            name=name,
            id_contains=id_contains,
            limit=limit,
            offset=offset,
            parent_id=parent_id,
            tags=check_tags(tags),
            created_after=_epoch(created_after, "created_after"),
            created_before=_epoch(created_before, "created_before"),
        )

    async def find_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        """The stored record of ``workflow_id``, or None if there is no such workflow."""
        return await self._shown.get_workflow(workflow_id)

    async def history(
        self, workflow_id: str, after_seq: int = 0, limit: int | None = None
    ) -> list[Event]:
        """The events of ``workflow_id`` after ``after_seq``, oldest first (none if unknown):
        all of them, or the first ``limit``."""
        return await self._shown.load_history(workflow_id, after_seq=after_seq, limit=limit)

    async def changed_since(
        self, after: float, limit: int, after_id: str = ""
    ) -> list[WorkflowRecord]:
        """Up to ``limit`` workflows changed after the cursor ``(after, after_id)``, in the order
        of ``(updated, workflow_id)``: one page of a stream of changes; page on with the last
        record's ``updated`` and ``workflow_id``."""
        return await self._shown.changed_since(after, limit, after_id)

    async def stats(self) -> StoreStats:
        return await self.store.stats(self.clock.now())

    # -- task queues ----------------------------------------------------------------------------
    async def set_queue(
        self,
        name: str,
        *,
        concurrency: int | None = None,
        rate: str | Rate | None = None,
        keep: Collection[str] = (),
    ) -> QueueLimits:
        """Store the limits of queue ``name`` (None: no limit), for every worker of this
        database from its next claim on: at most ``concurrency`` of its items in progress at
        once, at most ``rate`` (``"100/m"``) starts per period. The limits named in ``keep``
        (``"concurrency"``, ``"rate"``) stay as stored, whatever another process changes
        meanwhile (``loom queue set`` changes one limit so). Bad values raise a typed error and
        store nothing. Returns the limits now stored."""
        if isinstance(keep, str) or not set(keep) <= {"concurrency", "rate"}:
            raise ConfigurationError(
                f"keep names limits to leave as stored: 'concurrency', 'rate'; got {keep!r}"
            )
        limits = QueueLimits.of(
            name,
            None if "concurrency" in keep else concurrency,
            None if "rate" in keep else rate,
        )
        stored = await self.store.set_queue(limits, time.time(), tuple(keep))
        self.work_available.notify()
        return stored

    async def queue_limits(self) -> list[QueueLimits]:
        """The limits stored for each queue."""
        return await self.store.queue_limits()

    async def queues(self) -> list[QueueStats]:
        """Each queue holding work or limits: depth (ready, waiting for a worker), running,
        limits and the age of the oldest waiting item."""
        return await self.store.queue_stats(time.time())

    # -- queries ------------------------------------------------------------------------------
    def definition_for(
        self, record: WorkflowRecord, registry: Registry | None = None
    ) -> WorkflowDefinition:
        """The definition registered in this process (``registry``, default: this database's)
        under the workflow's name; ``ConfigurationError`` naming how to register it if none.

        The class of the workflow's own version when it is registered, else the newest
        version's: a query reads only the stored state, which versions usually share.
        """
        chosen = registry or self.registry
        try:
            return chosen.workflow(record.name, record.workflow_id, record.version)
        except UnknownWorkflowTypeError:
            pass
        try:
            return chosen.workflow(record.name, record.workflow_id)
        except UnknownWorkflowTypeError:
            raise ConfigurationError(
                f"workflow {record.workflow_id!r} is of type {record.name!r}, and no class of that "
                "name is registered in this process: import the module that defines it "
                "(the loom command and `loom web` take -m MODULE, $LOOM_MODULES or "
                "[tool.loom] modules in pyproject.toml)"
            ) from None

    async def query_workflow(
        self,
        workflow_id: str,
        name: str,
        args: Sequence[Any] = (),
        *,
        registry: Registry | None = None,
        workflow: type[Workflow[Any, Any]] | None = None,
    ) -> Any:
        """Answer query ``name`` of ``workflow_id`` from its stored input and state (see
        :meth:`WorkflowHandle.query`), with the class ``workflow`` if given (and of the
        workflow's type), else the one ``registry`` (default: this database's) has."""
        limits.check_id(workflow_id)
        limits.check_id(name, "query name")
        record = await self.store.get_workflow(workflow_id)
        if record is None:
            raise WorkflowNotFoundError(workflow_id)
        definition = None
        if workflow is not None:
            definition = workflow_definition(workflow)
        if definition is None or definition.name != record.name:
            definition = self.definition_for(record, registry)
        return run_query(
            definition,
            name,
            args,
            workflow_id=workflow_id,
            status=record.status,
            workflow_input=record.input,
            state=record.state,
        )

    async def reset_workflow(
        self,
        workflow_id: str,
        to_step: str,
        *,
        reason: str | None = None,
        registry: Registry | None = None,
    ) -> ResetOutcome:
        """Restart ``workflow_id`` from step ``to_step`` (see :meth:`WorkflowHandle.reset`);
        its class, when ``registry`` (default: this database's) has it, names its steps."""
        from loom.core.reset import plan_reset

        limits.check_id(workflow_id)
        limits.check_id(to_step, "step name")
        if reason is not None:
            limits.check_text(reason, "the reset reason")
        for _ in range(RESET_ATTEMPTS):
            record = await self.store.get_workflow(workflow_id)
            if record is None:
                raise WorkflowNotFoundError(workflow_id)
            try:  # its own version's steps: another version's may differ in name and order
                steps = [
                    s.name
                    for s in (registry or self.registry)
                    .workflow(record.name, workflow_id, record.version)
                    .steps
                ]
            except UnknownWorkflowTypeError:
                steps = None  # the history alone names the steps reached
            history = await self._history_of(workflow_id)
            plan = plan_reset(workflow_id, record.name, history, to_step, steps)
            request = ResetRequest(
                plan.to_step,
                plan.index,
                plan.state,
                tuple(plan.resend),
                plan.last_seq,
                reason,
                record.run_id,  # read before the history: a run that moved on since is seen
            )
            try:
                outcome = await self.store.reset(workflow_id, request, self.clock.now())
            except HistoryMoved:
                continue  # it moved on meanwhile: plan again from what it recorded since
            if outcome is ResetOutcome.REQUESTED:
                for worker in list(self.workers):
                    worker.interrupt(workflow_id)
            else:
                self.work_available.notify()
            self.workflow_changed.notify()
            return outcome
        raise DatabaseUnavailableError(
            f"workflow {workflow_id!r} kept recording progress while it was being reset "
            f"({RESET_ATTEMPTS} attempts); try again"
        )

    async def check_replay(
        self, workflow_ids: list[str] | None = None, *, limit: int | None = None
    ) -> list[ReplayReport]:
        """Replay stored histories against the code registered now (all steps, no side effects).

        Reports, for each workflow (all of them when ``workflow_ids`` is None), whether the
        current code reproduces its history: a determinism check to run before deploying.
        """
        listed = workflow_ids is None
        if workflow_ids is None:
            records = await self._plain_parts.list_workflows(limit=limit or 1_000_000)
            workflow_ids = [r.workflow_id for r in records]
        reports = []
        for wid in workflow_ids:
            try:
                reports.append(await self._check_one(wid))
            except WorkflowNotFoundError:
                if not listed:
                    raise
                # deleted since it was listed (retention): nothing of it is left to check
        return reports

    async def _history_of(self, workflow_id: str) -> list[Event]:
        """The history of a workflow whose record was just read. Every stored workflow has
        one, so none means it was deleted in between (retention): ``WorkflowNotFoundError``,
        not a history that fails to replay."""
        history = await self.store.load_history(workflow_id)
        if not history:
            raise WorkflowNotFoundError(workflow_id)
        return history

    async def _check_one(self, workflow_id: str) -> ReplayReport:
        from loom.core.verify import verify

        record = await self.store.get_workflow(workflow_id)
        if record is None:
            raise WorkflowNotFoundError(workflow_id)
        history = await self._history_of(workflow_id)
        try:
            definition = self.registry.workflow(record.name, workflow_id, record.version)
        except UnknownWorkflowTypeError as exc:
            return ReplayReport(workflow_id, record.name, False, str(exc))
        problem = verify(definition, workflow_id, history, record.status).problem
        return ReplayReport(workflow_id, record.name, problem is None, problem)

    # -- the in-process worker behind loom.run_once() --------------------------------------
    def default_worker(self) -> Worker:
        if self._worker is None:
            from loom.worker import Worker

            self._worker = Worker(self)
        return self._worker


def status_of(value: WorkflowStatus | str | None) -> WorkflowStatus | None:
    """A status filter as given (``"failed"`` works too), or ``ConfigurationError``."""
    if value is None:
        return None
    try:
        return WorkflowStatus(str(value).upper())
    except ValueError:
        raise ConfigurationError(
            f"unknown status {value!r}; use one of {', '.join(s.value for s in WorkflowStatus)}"
        ) from None


# -- the default database (used by Workflow.start and loom.run_once()) ----------------------

_defaults: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Database]] = (
    weakref.WeakKeyDictionary()
)
_active: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[Database]] = (
    weakref.WeakKeyDictionary()
)


async def default_database(url: str | None = None) -> Database:
    """The database for ``url`` (default: ``$LOOM_DATABASE_URL`` or ``loom.db``) in this loop.

    Reuses a ``Database`` already open on that URL in this event loop; otherwise opens one,
    creates the schema if missing, and keeps it open for the life of the loop.
    """
    resolved = resolve_url(url)
    loop = asyncio.get_running_loop()
    for active in reversed(_active.get(loop, [])):
        if active.url == resolved and active.is_open:
            return active
    per_loop = _defaults.setdefault(loop, {})
    db = per_loop.get(resolved)
    if db is None or not db.is_open:
        db = Database(resolved)
        await db.open()
        await db.migrate_up()
        per_loop[resolved] = db
    return db


MAX_TAGS = 64


def check_tags(tags: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Tags as stored: (key, value) pairs of strings that follow the id rule, at most
    :data:`MAX_TAGS`; anything else raises ``ConfigurationError`` or ``InvalidIdError``."""
    if not tags:
        return ()
    if not isinstance(tags, Mapping):
        raise ConfigurationError(f"tags must be a mapping of strings to strings, got {tags!r}")
    if len(tags) > MAX_TAGS:
        raise ConfigurationError(f"at most {MAX_TAGS} tags, got {len(tags)}")
    pairs = []
    for key, value in tags.items():
        if not isinstance(value, str):
            raise ConfigurationError(
                f"tag {key!r}: values are strings, got {type(value).__name__} {value!r}"
            )
        pairs.append((limits.check_id(key, "tag key"), limits.check_id(value, f"tag {key!r}")))
    return tuple(sorted(pairs))


def parse_tags(given: Sequence[str]) -> dict[str, str]:
    """``key=value`` texts (the CLI's ``--tag``, the API's ``tag=``) as tags."""
    tags: dict[str, str] = {}
    for text in given:
        key, sep, value = text.partition("=")
        if not sep:
            raise ConfigurationError(f"a tag is key=value, got {text!r}")
        tags[key] = value
    check_tags(tags)
    return tags


def _epoch(when: datetime | float | None, what: str) -> float | None:
    if when is None:
        return None
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ConfigurationError(f"{what} needs an aware datetime (with a time zone)")
        return when.timestamp()
    if isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise ConfigurationError(f"{what} is a datetime or epoch seconds, got {when!r}")
    return float(when)


async def _start_on_default_database(
    workflow: type[Workflow[Any, Any]],
    workflow_input: Any,
    initial_state: Any,
    workflow_id: str | None,
) -> WorkflowHandle[Any]:
    """What ``Workflow.start`` runs: start ``workflow`` on the default database."""
    db = await default_database()
    return await db.start_workflow(
        workflow,
        workflow_input=workflow_input,
        initial_state=initial_state,
        workflow_id=workflow_id,
    )


async def open_database() -> Database:
    """The database this process works on when a call is given none (``loom.run_once()``).

    That is the one ``Database`` open in this event loop (``async with loom.Database(url)``, or
    the default one ``Workflow.start`` opened). With none open, ``$LOOM_DATABASE_URL`` if set;
    otherwise, and when several are open, ``ConfigurationError`` says which to pass, instead of
    silently running on an empty ``loom.db``.
    """
    from loom.transfer import display_url

    loop = asyncio.get_running_loop()
    candidates = [db for db in _active.get(loop, []) if db.is_open]
    urls = list(dict.fromkeys(db.url for db in candidates))
    if len(urls) == 1:
        return candidates[0]
    if len(urls) > 1:
        raise ConfigurationError(
            f"{len(urls)} databases are open in this event loop "
            f"({', '.join(display_url(u) for u in urls)}); pass the one to run: "
            "`await loom.run_once(db)`"
        )
    if os.environ.get("LOOM_DATABASE_URL"):
        return await default_database()
    raise ConfigurationError(
        "no database is open in this event loop and $LOOM_DATABASE_URL is not set; pass the "
        "database to run (`async with loom.Database(url) as db: await loom.run_once(db)`)"
    )


# Workflow.start (loom.core) cannot import this module: give it the way to start a workflow.
workflow_module.install_starter(_start_on_default_database)


async def run_once(database: Database | None = None) -> bool:
    """Execute one ready workflow task; True if there was one.

    Uses ``database``, else the database open in this event loop (the ``loom.Database`` the
    program opened, or the default one ``Workflow.start`` opened), else ``$LOOM_DATABASE_URL``.
    Raises ``ConfigurationError`` if that is ambiguous (several open) or there is none. Call it
    in a loop until it returns False to run everything that is ready now.
    """
    if database is None:
        database = await open_database()
    return await database.default_worker().run_once()
