"""Prometheus metrics of one ``Database`` in this process, and the endpoint that serves them.

Counters and histograms count what this process did (a process counts its own, as Prometheus
expects; sum them across processes): the client counts the workflows it starts and the cancels
it carries out, the workers the workflows they end (a claim that ends a canceled workflow a
dead worker held included), the activity attempts they run, and how
long each task waited between becoming ready and being claimed. Gauges read the database at
each scrape (``Database.scrape_metrics``): how many tasks are ready, leased, sleeping or
waiting, by queue (one, ``default``, for now), so every process serving metrics shows the
same queue.

Names (each counter also has its ``_created`` sample, as prometheus-client writes):

- ``loom_workflows_started_total{workflow}``, ``..._completed_total``, ``..._failed_total``,
  ``..._canceled_total``, ``..._continued_as_new_total``;
- ``loom_activity_attempts_total{activity}``, ``loom_activity_failures_total{activity}``;
- ``loom_task_latency_seconds{queue,workflow}`` (histogram: ready to claimed);
- ``loom_activity_duration_seconds{activity}`` (histogram: one attempt, start to outcome);
- ``loom_tasks{queue,state}`` (gauge; state is ready, leased, sleeping or waiting),
  ``loom_activity_tasks{queue,state}`` (gauge: routed activities, dispatched to the workers
  of their queue; state is ready, sleeping, leased or done),
  ``loom_oldest_ready_task_age_seconds{queue}``, ``loom_database_up`` (0 when the last
  scrape could not read the database);
- the ``process_*`` and ``python_*`` metrics of prometheus-client's default collectors.

Needs the ``metrics`` extra (``prometheus-client``); without it :class:`Metrics` raises
:class:`~loom.errors.MissingExtraError`. Nothing is recorded unless metrics were enabled, so a
worker without them pays one ``is None`` test per event it would count.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from loom.extras import require

if TYPE_CHECKING:
    from loom.store.base import ActivityTaskCounts, QueueTasks, StoreStats

log = logging.getLogger("loom.metrics")

DEFAULT_QUEUE = "default"
TASK_STATES = ("ready", "leased", "sleeping", "waiting")
ACTIVITY_TASK_STATES = ("ready", "sleeping", "leased", "done")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class Metrics:
    """The metrics one ``Database`` records (see the module's docstring); ``registry`` is the
    prometheus-client ``CollectorRegistry`` holding them, for embedding in a service's own
    endpoint."""

    def __init__(self) -> None:
        prom = require("prometheus_client", "metrics", "Prometheus metrics")
        self._prom = prom
        self.registry = registry = prom.CollectorRegistry()
        self.content_type: str = prom.CONTENT_TYPE_LATEST

        def counter(name: str, what: str, label: str) -> Any:
            return prom.Counter(name, what, [label], registry=registry)

        self.started = counter("loom_workflows_started", "Workflows started.", "workflow")
        self.completed = counter("loom_workflows_completed", "Workflows completed.", "workflow")
        self.failed = counter("loom_workflows_failed", "Workflows that failed.", "workflow")
        self.canceled = counter("loom_workflows_canceled", "Workflows canceled.", "workflow")
        self.continued = counter(
            "loom_workflows_continued_as_new", "Runs that continued as new.", "workflow"
        )
        self.attempts = counter("loom_activity_attempts", "Activity attempts run.", "activity")
        self.failures = counter(
            "loom_activity_failures", "Activity attempts that failed.", "activity"
        )
        self.task_latency = prom.Histogram(
            "loom_task_latency_seconds",
            "From a workflow task becoming ready to a worker claiming it.",
            ["queue", "workflow"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.activity_duration = prom.Histogram(
            "loom_activity_duration_seconds",
            "How long one activity attempt ran, start to outcome.",
            ["activity"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.tasks = prom.Gauge(
            "loom_tasks",
            "Workflow tasks by state, as the database holds them.",
            ["queue", "state"],
            registry=registry,
        )
        # Its own metric, not a label of loom_tasks: summing loom_tasks over its labels still
        # counts workflows, and an activity task is one attempt of one activity.
        self.activity_tasks = prom.Gauge(
            "loom_activity_tasks",
            "Activity tasks (activities routed to the workers of their queue) by state.",
            ["queue", "state"],
            registry=registry,
        )
        self.oldest_ready = prom.Gauge(
            "loom_oldest_ready_task_age_seconds",
            "How long the oldest ready task has waited.",
            ["queue"],
            registry=registry,
        )
        self.database_up = prom.Gauge(
            "loom_database_up",
            "1 when the last scrape could read the database.",
            registry=registry,
        )
        prom.ProcessCollector(registry=registry)
        prom.PlatformCollector(registry=registry)
        prom.GCCollector(registry=registry)

    # -- what the client and the workers report ----------------------------------------------
    def activity_attempt(self, activity: str, seconds: float, *, failed: bool) -> None:
        self.attempts.labels(activity).inc()
        self.activity_duration.labels(activity).observe(max(0.0, seconds))
        if failed:
            self.failures.labels(activity).inc()

    def canceled_at_claim(self, workflow: str) -> None:
        """A worker's claim ended a workflow whose cancel was requested (while a worker that
        died held it) instead of running it."""
        self.canceled.labels(workflow).inc()

    def claimed(
        self, workflow: str, ready_since: float | None, now: float, queue: str = DEFAULT_QUEUE
    ) -> None:
        """A worker claimed a task of ``workflow`` from ``queue`` that became ready at
        ``ready_since``."""
        if ready_since is not None:
            self.task_latency.labels(queue, workflow).observe(max(0.0, now - ready_since))

    def queues(
        self,
        by_queue: Mapping[str, QueueTasks | StoreStats] | None,
        activity_tasks: Mapping[str, ActivityTaskCounts] | None = None,
    ) -> None:
        """Set the gauges from the database's figures, one set per queue
        (``StoreStats.by_queue``, ``StoreStats.activity_tasks``: each queue of either gets
        both sets, at zero where it holds nothing); None: the database could not be read, and
        the task gauges are withdrawn rather than left stale. A queue no longer reported is
        dropped."""
        self.tasks.clear()
        self.oldest_ready.clear()
        self.activity_tasks.clear()
        if by_queue is None:
            self.database_up.set(0)
            return
        self.database_up.set(1)
        for queue, stats in by_queue.items():
            for state in TASK_STATES:
                self.tasks.labels(queue, state).set(getattr(stats, state))
            self.oldest_ready.labels(queue).set(stats.oldest_ready_age or 0.0)
        routed = activity_tasks or {}
        for queue in (*by_queue, *(q for q in routed if q not in by_queue)):
            counts = routed.get(queue)
            for state in ACTIVITY_TASK_STATES:
                value = 0 if counts is None else getattr(counts, state)
                self.activity_tasks.labels(queue, state).set(value)

    def render(self) -> bytes:
        """Every metric in Prometheus's text format (``content_type``)."""
        return bytes(self._prom.generate_latest(self.registry))


# ------------------------------------------------------------------------------ serving
MAX_REQUEST_BYTES = 16 * 1024
REQUEST_TIMEOUT = 10.0


class MetricsServer:
    """A minimal HTTP endpoint on the event loop of a worker: ``GET /metrics`` answers
    ``scrape()`` (awaited, so the gauges are read from the database on the same loop); any
    other path is a 404, any other method a 405. One request per connection; a request that
    is too large or too slow is dropped. ``port`` 0 picks a free port (:attr:`port` says which).
    """

    def __init__(
        self,
        scrape: Callable[[], Awaitable[bytes]],
        content_type: str,
        *,
        host: str = "127.0.0.1",
        port: int = 9464,
    ) -> None:
        self._scrape = scrape
        self._content_type = content_type
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(_read_head(reader), REQUEST_TIMEOUT)
            if request is None:
                return
            method, path = request
            if method not in ("GET", "HEAD"):
                await _answer(writer, 405, b"only GET\n", "text/plain", method, allow=True)
            elif path.split("?", 1)[0] != "/metrics":
                await _answer(writer, 404, b"metrics are at /metrics\n", "text/plain", method)
            else:
                await _answer(writer, 200, await self._scrape(), self._content_type, method)
        except (
            TimeoutError,
            ConnectionError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            UnicodeError,
        ):
            pass  # a client that went away or sent nonsense: nothing to answer
        except Exception:
            log.exception("metrics endpoint: could not answer a scrape")
            with contextlib.suppress(Exception):
                await _answer(writer, 500, b"internal error\n", "text/plain", "GET")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, str] | None:
    """The method and path of a request (its head is bounded by the stream's limit,
    ``MAX_REQUEST_BYTES``); None for a request line that is not HTTP."""
    head = await reader.readuntil(b"\r\n\r\n")  # the stream's limit bounds it
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        return None
    return parts[0], parts[1]


async def _answer(
    writer: asyncio.StreamWriter,
    status: int,
    body: bytes,
    content_type: str,
    method: str,
    *,
    allow: bool = False,
) -> None:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Error"}
    head = (
        f"HTTP/1.1 {status} {reason[status]}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n"
        + ("Allow: GET, HEAD\r\n" if allow else "")
        + "\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if method == "HEAD" else body))
    await writer.drain()
