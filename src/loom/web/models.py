"""The shapes of the API's responses, declared so /openapi.json documents what each operation
returns (and schemathesis can hold the server to it). They mirror :mod:`loom.web.serialize`;
extra fields are allowed, so a field added there reaches clients before it is declared here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loom.status import WorkflowStatus


class ErrorBody(BaseModel):
    """Every error response: a one-line message (and, for a malformed request, its details)."""

    error: str
    detail: list[dict[str, Any]] | None = None


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class WorkflowSummary(_Open):
    workflow_id: str
    name: str
    version: str
    status: WorkflowStatus
    current_step: str | None
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str = Field(description="ISO 8601, UTC")
    updated: float = Field(description="Seconds since the epoch; the list stream's cursor")
    duration_seconds: float
    parent_id: str | None = Field(
        default=None, description="The workflow that started this one as its child"
    )


class WorkflowDetail(WorkflowSummary):
    input: Any
    state: dict[str, Any]
    result: Any
    error: dict[str, Any] | None
    last_seq: int
    ready_at: str | None
    leased: bool
    cancel_requested: bool
    run_id: str | None = Field(default=None, description="The current run (see /runs)")
    tags: dict[str, str] = Field(default_factory=dict, description="Given at start")


class RunHistory(_Open):
    run_id: str
    events: list[HistoryEvent]


class WorkflowList(_Open):
    workflows: list[WorkflowSummary]
    limit: int
    offset: int
    has_more: bool


class Run(_Open):
    run_id: str
    number: int
    status: str = Field(description="CONTINUED_AS_NEW, or the workflow's status (current run)")
    started_at: str
    ended_at: str | None
    events: int


class RunList(_Open):
    runs: list[Run]


class HistoryEvent(_Open):
    seq: int
    type: str
    payload: dict[str, Any] | None
    created_at: str
    timestamp: float


class ExportedEvent(_Open):
    seq: int
    type: str
    payload: dict[str, Any]
    created_at: float = Field(description="Seconds since the epoch")


class ExportedHistory(_Open):
    """The format ``loom inspect ID --export`` writes and ``loom.testing.Replayer`` reads."""

    format: str = Field(description='Always "loom-history"')
    format_version: int
    workflow: str = Field(description="The workflow's name")
    version: str
    workflow_id: str
    run_id: str | None
    status: str = Field(description="RUNNING, or how the run ended")
    events: list[ExportedEvent]


class EventPage(_Open):
    workflow_id: str
    events: list[HistoryEvent]
    has_more: bool
    next_after_seq: int = Field(description="The after_seq of the next page")


class Heartbeat(_Open):
    seq: int = Field(description="The seq of the activity's ACTIVITY_SCHEDULED event")
    activity: str
    attempt: int
    details: Any = Field(description="The last details sent (JSON), or null")
    sent_at: str = Field(description="ISO 8601, UTC")
    timestamp: float


class Heartbeats(_Open):
    workflow_id: str
    heartbeats: list[Heartbeat]


class ActivityAttempt(_Open):
    attempt: int
    outcome: str = Field(description="completed or failed")
    worker: str | None = Field(
        description="The id of the worker that ran it (null in histories written before it "
        "was recorded)"
    )
    at: str = Field(description="When its outcome was recorded, ISO 8601, UTC")
    error_type: str | None


class Activity(_Open):
    seq: int = Field(description="The seq of the activity's ACTIVITY_SCHEDULED event")
    activity: str
    step: str | None
    scheduled_at: str = Field(description="ISO 8601, UTC")
    status: str = Field(
        description="completed, failed, canceled, pending (runs where its workflow runs), "
        "waiting (routed: no worker of its queue has claimed it yet), running (routed: on "
        "`worker`), done (routed: ended on `worker`, not recorded yet) or abandoned"
    )
    attempt: int = Field(description="The latest attempt")
    worker: str | None = Field(description="Where the latest attempt ran or runs, when known")
    queue: str | None = Field(description="The queue its routed attempt was sent to")
    where: str = Field(description="The same, in words")
    attempts: list[ActivityAttempt]


class Activities(_Open):
    workflow_id: str
    activities: list[Activity]


class SignalAccepted(_Open):
    workflow_id: str
    signal: str
    accepted: bool


class CancelResult(_Open):
    workflow_id: str
    outcome: str = Field(description="CANCELED, or REQUESTED when a worker holds the workflow")


class ResetResult(_Open):
    workflow_id: str
    outcome: str = Field(description="RESET, or REQUESTED when a worker holds the workflow")
    to_step: str


class BulkItem(_Open):
    workflow_id: str
    ok: bool
    outcome: str = Field(description="What the action did, or the type of the error it met")
    error: str | None


class BulkOutcome(_Open):
    action: str
    matched: int = Field(description="How many workflows the ids or the filter selected")
    preview: bool
    succeeded: int | None = None
    failed: int | None = None
    results: list[BulkItem] | None = None


class QueryAnswer(_Open):
    result: Any = Field(description="The query's answer (any JSON value)")


class Queue(_Open):
    ready: int
    leased: int
    sleeping: int
    waiting: int
    signals_pending: int
    oldest_ready_age_seconds: float | None


class TaskQueue(_Open):
    name: str
    depth: int = Field(description="Ready items waiting for a worker.")
    running: int = Field(description="Items in progress now (held under a live lease).")
    concurrency: int | None = Field(description="At most this many in progress; null: no limit.")
    rate: str | None = Field(description="At most this many starts per period (100/m); null: none.")
    started_in_window: int
    oldest_waiting_age_seconds: float | None


class TaskQueues(_Open):
    queues: list[TaskQueue]


class Stats(_Open):
    by_status: dict[str, int]
    total: int
    ready: int
    leased: int
    sleeping: int
    waiting: int
    oldest_ready_age: float | None
    events: int
    signals_pending: int
    completed_last_minute: int
    completed_per_minute: list[int]
    failed_per_minute: list[int]


class StepCall(_Open):
    kind: str
    name: str | None
    """The activity or signal it names; None where the call names none (``ctx.sleep()``)."""


class Step(_Open):
    index: int
    name: str
    attribute: str
    description: str | None
    calls: list[StepCall] | None


class Query(_Open):
    name: str
    parameters: list[str] = Field(description="What it takes, in order (`*rest`: any number)")
    description: str | None


class Definition(_Open):
    name: str
    version: str
    description: str | None
    steps: list[Step]
    queries: list[Query]
    signal_handlers: dict[str, str] = {}
    """Signal name -> the ``@loom.signal`` method that applies it."""


class Definitions(_Open):
    definitions: list[Definition]
