"""The JSON shapes the API returns for workflows, events and statistics."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from loom.client import ActivityHeartbeat, ActivityRow, StoreStats, WorkflowRecord, WorkflowRun
from loom.core.history import Event
from loom.queues import QueueStats
from loom.status import WorkflowStatus


def _iso(timestamp: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _lifetime(status: WorkflowStatus, created: float, updated: float) -> float:
    end = time.time() if status is WorkflowStatus.RUNNING else updated
    return round(max(0.0, end - created), 3)


def summary(record: WorkflowRecord) -> dict[str, Any]:
    """One row of the workflow list (no input or state: those can be large)."""
    return {
        "workflow_id": record.workflow_id,
        "name": record.name,
        "version": record.version,
        "status": record.status.value,
        "current_step": record.current_step,
        "created_at": _iso(record.created),
        "updated_at": _iso(record.updated),
        "updated": record.updated,
        "duration_seconds": _lifetime(record.status, record.created, record.updated),
        "parent_id": record.parent_id,
    }


def detail(record: WorkflowRecord) -> dict[str, Any]:
    """Everything the store knows about one workflow without reading its history."""
    return {
        **summary(record),
        "input": record.input,
        "state": record.state,
        "result": record.result,
        "error": record.error,
        "last_seq": record.last_seq,
        "ready_at": None if record.ready_at is None else _iso(record.ready_at),
        "leased": record.leased,
        "cancel_requested": record.cancel_requested,
        "reset_requested": record.reset_requested,
        "run_id": record.run_id,
        "queue": record.queue,
        "priority": record.priority,
    }


def run(item: WorkflowRun) -> dict[str, Any]:
    return {
        "run_id": item.run_id,
        "number": item.number,
        "status": item.status,
        "started_at": _iso(item.started),
        "ended_at": None if item.ended is None else _iso(item.ended),
        "events": item.events,
    }


def event(item: Event) -> dict[str, Any]:
    return {
        "seq": item.seq,
        "type": item.type.value,
        "payload": item.payload,
        "created_at": _iso(item.timestamp),
        "timestamp": item.timestamp,
    }


def heartbeat(beat: ActivityHeartbeat) -> dict[str, Any]:
    return {
        "seq": beat.seq,
        "activity": beat.activity,
        "attempt": beat.attempt,
        "details": beat.details,
        "sent_at": _iso(beat.at),
        "timestamp": beat.at,
    }


def activity(row: ActivityRow) -> dict[str, Any]:
    document = row.to_json()
    document["scheduled_at"] = _iso(row.scheduled_at)
    for attempt in document["attempts"]:
        attempt["at"] = _iso(attempt["at"])
    return document


def stats(value: StoreStats) -> dict[str, Any]:
    data = dataclasses.asdict(value)
    data["by_status"] = {s.value: value.by_status.get(s.value, 0) for s in WorkflowStatus}
    data["total"] = sum(data["by_status"].values())
    return data


def task_queue(q: QueueStats) -> dict[str, Any]:
    """One task queue: its work, its limits and its oldest waiting item."""
    return {
        "name": q.name,
        "depth": q.depth,
        "running": q.running,
        "concurrency": q.concurrency,
        "rate": None if q.rate is None else str(q.rate),
        "started_in_window": q.started_in_window,
        "oldest_waiting_age_seconds": q.oldest_waiting_age,
    }


def queue(value: StoreStats) -> dict[str, Any]:
    return {
        "ready": value.ready,
        "leased": value.leased,
        "sleeping": value.sleeping,
        "waiting": value.waiting,
        "signals_pending": value.signals_pending,
        "oldest_ready_age_seconds": value.oldest_ready_age,
    }
