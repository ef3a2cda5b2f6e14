"""Copying a whole Loom database to another one, on any backend, and proving the copy identical.

:func:`copy_database` is what ``loom migrate --from URL --to URL`` runs: it brings the target's
schema up to date, copies every workflow (its row, its history, its buffered signals) in batches,
each batch one transaction on the target, then reads both databases again and compares them
workflow by workflow.

Semantics worth knowing:

* The copy is a snapshot: stop the workers of the source first. Leases are not copied; a
  workflow some worker held when it was copied becomes claimable on the target when that lease
  would have expired, exactly as if the worker had died (:attr:`TransferReport.leased`).
* Activity tasks (activities routed to the workers of their queue, not yet recorded by their
  workflow) are copied with their workflow: one waiting for a worker waits on the target; one
  a worker was running is ready there when its lease would have run out, as if that worker
  had died, and its attempt runs again (at least once, as any attempt whose worker dies); one
  done, its outcome not yet recorded, keeps that outcome for its workflow. One asked to stop
  (its workflow no longer awaits it) is left behind (:attr:`TransferReport.activity_tasks`).
* Running it again is safe: workflows already in the target with the same contents are skipped,
  so a copy that was interrupted is completed by running the same command again. A workflow id
  present in the target with *different* contents (the target was used meanwhile, or holds other
  data under the same id) stops the copy with a :class:`~loom.errors.StoreError`; the batch it was
  in is not written.
* Verification requires the target to hold exactly the source's workflows: a target that
  already had other workflows fails verification (after the copy).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from loom.errors import ConfigurationError, LoomError, StoreError
from loom.masking import mask_credentials
from loom.store import open_store
from loom.store.base import Store, WorkflowDump
from loom.store.common import migrations

Progress = Callable[[int, int], None]
"""Called after each batch with (workflows copied or skipped so far, workflows in the source)."""


@dataclass(frozen=True, slots=True)
class TransferReport:
    """What :func:`copy_database` did; it returns only once the copy has been verified."""

    source: str
    target: str
    workflows: int
    """Workflows in the source, and (verified) in the target."""
    copied: int
    """Workflows written to the target by this run."""
    already_present: int
    """Workflows the target already held with the same contents (an earlier run copied them)."""
    events: int
    signals: int
    by_status: dict[str, int] = field(default_factory=dict)
    leased: int = 0
    """Workflows a worker held in the source when they were copied (not held in the target)."""
    migrations_applied: list[str] = field(default_factory=list)
    """Schema migrations this run applied to the target (empty when it was up to date)."""
    verified: bool = True
    schedules: int = 0
    """Schedules in the source, and (verified, definition and progress) in the target."""
    activity_tasks: int = 0
    """Activity tasks in the source, as copied, and (verified) in the target."""


def display_url(url: str) -> str:
    """``url`` without its password, for printing (:func:`loom.masking.mask_credentials`)."""
    return mask_credentials(url)


def _identity(url: str) -> tuple[str, ...]:
    """What names one database, however its URL is spelled."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        return ("sqlite", str(Path(path).expanduser().resolve()))
    if scheme in {"postgres", "postgresql"}:
        host = (parts.hostname or "localhost").lower()
        if host in {"localhost", "127.0.0.1", "::1"}:
            host = "localhost"
        return ("postgres", host, str(parts.port or 5432), parts.path.strip("/"))
    return (scheme, url)


def _require_source(url: str) -> None:
    """A SQLite source must exist: copying must not create an empty one."""
    kind, *where = _identity(url)
    if kind == "sqlite" and not Path(where[0]).is_file():
        raise StoreError(f"source database {display_url(url)} does not exist ({where[0]})")


@contextlib.asynccontextmanager
async def _opened(url: str, role: str, *, create: bool) -> AsyncIterator[Store]:
    try:
        store = open_store(url, create=create)
        await store.open()
    except ConfigurationError as exc:
        raise ConfigurationError(f"{role} database: {exc}") from exc
    except LoomError as exc:
        raise StoreError(f"{role} database: {exc}") from exc
    try:
        yield store
    finally:
        await store.close()


async def _pages(store: Store, batch: int) -> AsyncGenerator[WorkflowDump, None]:
    after: str | None = None
    while True:
        page = await store.export_rows(after, batch)
        for dump in page:
            yield dump
        if len(page) < batch:
            return
        after = page[-1].workflow_id


async def _count(store: Store) -> int:
    stats = await store.stats(0.0)
    return sum(stats.by_status.values())


async def copy_database(
    source_url: str, target_url: str, *, batch: int = 500, progress: Progress | None = None
) -> TransferReport:
    """Copy every workflow (and every schedule) of ``source_url`` into ``target_url``, then
    verify the copy.

    The target's schema is created or upgraded first; the source is only read (it must be
    initialized and at the schema version this Loom knows). Raises
    :class:`~loom.errors.ConfigurationError` for unusable arguments (the same database twice, a
    batch below 1) and :class:`~loom.errors.StoreError` when a database fails, a workflow id in
    the target holds something else, or verification finds any difference.
    """
    if batch < 1:
        raise ConfigurationError(f"the batch size must be at least 1, not {batch}")
    if _identity(source_url) == _identity(target_url):
        raise ConfigurationError(
            f"the source and the target are the same database ({display_url(source_url)}); "
            "migrate to another one"
        )
    source_name, target_name = display_url(source_url), display_url(target_url)
    _require_source(source_url)
    async with (
        _opened(source_url, "source", create=False) as source,
        _opened(target_url, "target", create=True) as target,
    ):
        version = await source.schema_version()
        expected = max((v for v, _, _ in migrations(source.dialect)), default=0)
        if version == 0:
            raise StoreError(f"source database {source_name} is not initialized; nothing to copy")
        if version != expected:
            raise StoreError(
                f"source database {source_name} is at schema version {version} but this Loom "
                f"uses {expected}; run `loom init -d SOURCE` with this Loom first"
            )
        applied = await target.migrate()
        total = await _count(source)

        copied = done = 0
        after: str | None = None
        while True:
            page = await source.export_rows(after, batch)
            if not page:
                break
            copied += await target.import_rows(page)
            done += len(page)
            after = page[-1].workflow_id
            if progress is not None:
                progress(done, total)
            if len(page) < batch:
                break

        await target.import_schedules(await source.list_schedules())
        # Queue limits: the target's are replaced by the source's (a rate window starts anew).
        limits = await source.queue_limits()
        for queue in limits:
            await target.set_queue(queue, time.time())
        verified = await _verify(source, target, batch, source_name, target_name)
        schedules = await source.list_schedules()
        if schedules != await target.list_schedules():
            raise _failed("the schedules differ", source_name, target_name)
        if {q.name: q for q in await target.queue_limits()} != {q.name: q for q in limits}:
            raise _failed("the queue limits differ", source_name, target_name)
    return TransferReport(
        source=source_name,
        target=target_name,
        workflows=verified.workflows,
        copied=copied,
        already_present=done - copied,
        events=verified.events,
        signals=verified.signals,
        by_status=dict(sorted(verified.by_status.items())),
        leased=verified.leased,
        migrations_applied=applied,
        schedules=len(schedules),
        activity_tasks=verified.tasks,
    )


def _failed(detail: str, source_name: str, target_name: str) -> StoreError:
    return StoreError(
        f"verification failed: {detail}; the target {target_name} holds what was copied "
        f"so far; stop every worker on {source_name} and run the same command again"
    )


@dataclass(slots=True)
class _Counts:
    """What verification counted in the source (the same as in the target)."""

    workflows: int = 0
    events: int = 0
    signals: int = 0
    leased: int = 0
    tasks: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


async def _verify(
    source: Store, target: Store, batch: int, source_name: str, target_name: str
) -> _Counts:
    """Walk both databases in id order side by side; every workflow must be the same."""

    def failed(detail: str) -> StoreError:
        return _failed(detail, source_name, target_name)

    mine, theirs = _pages(source, batch), _pages(target, batch)
    counts = _Counts()
    by_status = counts.by_status
    try:
        while True:
            a = await anext(mine, None)
            b = await anext(theirs, None)
            if a is None and b is None:
                break
            if b is None or (a is not None and a.workflow_id < b.workflow_id):
                assert a is not None
                raise failed(f"workflow {a.workflow_id!r} is missing from the target")
            if a is None or b.workflow_id < a.workflow_id:
                raise failed(
                    f"the target holds workflow {b.workflow_id!r}, which the source does not"
                )
            differ = a.differences(b)
            if differ:
                raise failed(f"workflow {a.workflow_id!r} differs: {', '.join(differ)}")
            counts.workflows += 1
            counts.events += len(a.events)
            counts.signals += len(a.signals)
            counts.leased += a.lease_owner is not None
            counts.tasks += len(a.tasks)
            by_status[a.status] = by_status.get(a.status, 0) + 1
    finally:
        await mine.aclose()
        await theirs.aclose()
    return counts


__all__ = ["Progress", "TransferReport", "copy_database", "display_url"]
