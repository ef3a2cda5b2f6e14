"""``loom worker``: a long-running worker process with a live status line.

The first SIGINT/SIGTERM stops claiming; workflows in flight park after their current activity
and are released, and the process exits 0. A second signal exits at once: the leases it held
expire after ``--lease-seconds`` and other workers take the workflows over.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler

import loom
from loom.cli import render
from loom.cli.common import (
    CodecOption,
    DatabaseOption,
    ModulesOption,
    bounded,
    open_database,
    run,
)
from loom.cli.errors import CliError
from loom.cli.status_line import StatusLine
from loom.extras import require
from loom.logs import JsonFormatter
from loom.masking import MaskingFormatter
from loom.modules import import_modules, load_codec, require_workflows
from loom.outage import OUTAGE_ERRORS, Backoff
from loom.queues import check_queue

PLAIN_STATUS_SECONDS = 10.0
log = logging.getLogger("loom.cli")


class LogFormat(enum.StrEnum):
    text = "text"
    json = "json"


def worker_command(
    workers: Annotated[
        int, typer.Option("--workers", help="Workflows run at once (concurrency, 1 to 10000).")
    ] = 4,
    poll_interval: Annotated[
        float,
        typer.Option(
            "--poll-interval",
            help="Longest wait, in seconds, before looking for work (0.001 to 3600).",
        ),
    ] = 0.5,
    lease_seconds: Annotated[
        float,
        typer.Option(
            "--lease-seconds",
            help="How long a stopped worker's workflows stay locked (0.1 to 86400 seconds).",
        ),
    ] = 10.0,
    activity_threads: Annotated[
        int | None,
        typer.Option(
            "--activity-threads",
            min=1,
            help="Sync activities run at once, on the worker's own threads "
            "[default: max(8, 4 x workers)].",
        ),
    ] = None,
    give_up_after: Annotated[
        float | None,
        typer.Option(
            "--give-up-after",
            min=0,
            help="Exit 1 if the database cannot be reached for this many seconds at start "
            "[default: wait for it as long as it takes].",
        ),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            "--queue",
            help="A task queue to serve (repeat for several) [default: every queue].",
        ),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (0: a free port, logged) "
            "[needs loom-core[metrics]].",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="The address --metrics-port listens on.")
    ] = "127.0.0.1",
    log_format: Annotated[
        LogFormat,
        typer.Option(
            "--log-format",
            help="text (a live status line on a terminal), or json: one object per line, "
            "with the workflow, run, step, activity and attempt of each record.",
        ),
    ] = LogFormat.text,
    modules: ModulesOption = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No status line; warnings and errors only.")
    ] = False,
    codec: CodecOption = None,
    database: DatabaseOption = None,
) -> None:
    """Run workflows until SIGINT/SIGTERM (a second signal exits at once)."""
    bounded(workers, "--workers", 1, 10_000)
    bounded(poll_interval, "--poll-interval", 0.001, 3600)
    bounded(lease_seconds, "--lease-seconds", 0.1, 86_400)
    if metrics_port is not None:
        require("prometheus_client", "metrics", "--metrics-port")
    out = render.console(stderr=True)
    _configure_logging(out, quiet, log_format)
    names = import_modules(modules)
    load_codec(codec)  # a bad spec or keyfile fails now, not after waiting for the database
    run(
        _serve(
            database,
            names,
            workers,
            poll_interval,
            lease_seconds,
            out,
            quiet,
            activity_threads,
            give_up_after,
            codec,
            None if metrics_port is None else (metrics_host, metrics_port),
            live=log_format is LogFormat.text,
            queues=_queues(queue),
        )
    )


def _queues(given: list[str] | None) -> list[str] | None:
    if not given:
        return None
    try:
        return [check_queue(q) for q in given]
    except loom.LoomError as exc:
        raise CliError(f"--queue: {exc}") from None


class SafeFormatter(MaskingFormatter):
    """Log lines with credentials masked and control characters (from ids, names, errors)
    escaped; line breaks of tracebacks are kept."""

    def format(self, record: logging.LogRecord) -> str:
        return render.safe(super().format(record), newlines=True)


def _configure_logging(out: Console, quiet: bool, log_format: LogFormat) -> None:
    handler: logging.Handler
    if log_format is LogFormat.json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    elif out.is_terminal:
        handler = RichHandler(console=out, show_path=False, markup=False)
        handler.setFormatter(SafeFormatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if quiet else logging.INFO)


async def _serve(
    database: str | None,
    names: list[str],
    concurrency: int,
    poll_interval: float,
    lease_seconds: float,
    out: Console,
    quiet: bool,
    activity_threads: int | None = None,
    give_up_after: float | None = None,
    codec: str | None = None,
    metrics: tuple[str, int] | None = None,
    *,
    live: bool = True,
    queues: list[str] | None = None,
) -> None:
    async with (
        _reachable_database(database, give_up_after, codec) as db,
        _metrics_endpoint(db, metrics),
    ):
        require_workflows(db.registry, names)
        worker = loom.Worker(
            db,
            concurrency=concurrency,
            poll_interval=poll_interval,
            lease_seconds=lease_seconds,
            activity_threads=activity_threads,
            queues=queues,
        )
        status = StatusLine(worker)
        loop = asyncio.get_running_loop()
        received: list[int] = []

        def on_signal(signum: int) -> None:
            received.append(signum)
            name = signal.Signals(signum).name
            if len(received) > 1:
                log.warning(
                    "%s again: exiting now; the leases held expire within %s s", name, lease_seconds
                )
                logging.shutdown()
                sys.stdout.flush()
                os._exit(128 + signum)
            status.stopping = True
            log.info(
                "%s: stopping; finishing %d workflow(s) in flight (send it again to exit at once)",
                name,
                worker.in_flight,
            )
            worker.stop()

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, on_signal, signum)
        try:
            workflows = ", ".join(sorted(d.name for d in db.registry.workflows()))
            log.info(
                "worker %s ready on %s: %d at once (%d activity threads), polling every %s s; "
                "workflows: %s; queues: %s",
                worker.worker_id,
                db.url,
                concurrency,
                worker.activity_pool.size,
                poll_interval,
                workflows,
                "every queue" if worker.queues is None else ", ".join(worker.queues),
            )
            running = loop.create_task(worker.run())
            await _show_status(running, status, out, quiet, live=live)
            await worker.stop_and_wait()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        log.info("worker %s stopped: %s", worker.worker_id, status.summary())


@contextlib.asynccontextmanager
async def _metrics_endpoint(
    db: loom.Database, where: tuple[str, int] | None
) -> AsyncIterator[None]:
    """Serve ``db``'s metrics at http://HOST:PORT/metrics while the worker runs (``where``)."""
    if where is None:
        yield
        return
    host, port = where
    server = db.serve_metrics(port, host)
    try:
        await server.start()
    except OSError as exc:
        raise CliError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    bound = f"[{host}]" if ":" in host else host
    log.info("metrics at http://%s:%d/metrics", bound, server.port)
    try:
        yield
    finally:
        await server.close()


@contextlib.asynccontextmanager
async def _reachable_database(
    url: str | None, give_up_after: float | None, codec: str | None = None
) -> AsyncIterator[loom.Database]:
    """The database, once it can be reached: a worker started during an outage (the server is
    restarting, the network is not up yet) waits for it with backoff, as a running worker
    rides out an outage, instead of exiting. Only an outage is waited out: a wrong URL or a
    database never initialized fails at once."""
    started = time.monotonic()
    delay = Backoff.first
    while True:
        stack = contextlib.AsyncExitStack()
        try:
            db = await stack.enter_async_context(open_database(url, codec=codec))
        except OUTAGE_ERRORS as exc:
            waited = time.monotonic() - started
            if give_up_after is not None and waited >= give_up_after:
                raise CliError(
                    f"the database is still unreachable after {waited:.0f} s: {exc}"
                ) from None
            if delay == Backoff.first:
                log.warning(
                    "the database is unreachable (%s); waiting for it%s",
                    exc,
                    "" if give_up_after is None else f" for up to {give_up_after:g} s",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, Backoff.limit)
            continue
        if delay != Backoff.first:
            log.warning("the database is reachable; starting")
        async with stack:
            yield db
        return


async def _show_status(
    running: asyncio.Task[None], status: StatusLine, out: Console, quiet: bool, *, live: bool
) -> None:
    """Wait for the worker to stop, showing its status (live on a terminal, unless the logs
    are JSON; else periodic log lines)."""
    if quiet:
        await running
    elif out.is_terminal and live:
        with Live(get_renderable=status.rich, console=out, refresh_per_second=4):
            await running
    else:
        last = status.snapshot()
        while not running.done():
            await asyncio.wait({running}, timeout=PLAIN_STATUS_SECONDS)
            if not running.done() and status.snapshot() != last:
                last = status.snapshot()
                log.info("worker %s: %s", status.worker.worker_id, status.plain())
        await running
