"""Loom: durable, event-sourced workflows for Python.

Write a workflow as a class of ordered ``@loom.step`` methods, put side effects in
``@loom.activity`` functions, and Loom records every change as an immutable event. A workflow is
rebuilt from its history, so it survives a crash of any process at any instant.
"""

from importlib import metadata as _metadata

from loom.activity_context import ActivityInfo, activity_info, heartbeat
from loom.client import (
    ActivityHeartbeat,
    CancelOutcome,
    Database,
    ReplayReport,
    ResetOutcome,
    StartRequest,
    WorkflowHandle,
    WorkflowRun,
    WorkflowSummary,
    run_once,
)
from loom.core.context import StateProxy, WorkflowContext
from loom.core.history import Event, EventType
from loom.core.query import QueryContext
from loom.core.workflow import Workflow
from loom.definitions import (
    ActivityDefinition,
    QueryDefinition,
    Registry,
    StepDefinition,
    WorkflowDefinition,
    activity,
    default_registry,
    query,
    queue,
    step,
    workflow,
)
from loom.errors import (  # LeaseLostError: never raised, importable for old code, not exported
    ActivityCancelledError,
    ActivityFailedError,
    ActivityHeartbeatTimeoutError,
    ChildWorkflowFailedError,
    ConfigurationError,
    DatabaseUnavailableError,
    DefinitionError,
    HistoryFormatError,
    InvalidScheduleError,
    LeaseLostError,  # noqa: F401
    LoomError,
    MissingExtraError,
    NonDeterminismError,
    NotInActivityError,
    PayloadDecodeError,
    PayloadError,
    QueryArgumentsError,
    QueryFailedError,
    QueryNotFoundError,
    ReadOnlyError,
    ScheduleAlreadyExistsError,
    ScheduleError,
    ScheduleNotFoundError,
    StoreError,
    UnawaitedCallError,
    UnknownStepError,
    UnknownWorkflowTypeError,
    WorkflowAlreadyExistsError,
    WorkflowCanceledError,
    WorkflowError,
    WorkflowFailedError,
    WorkflowNotFoundError,
    WorkflowNotRunningError,
    WorkflowSandboxError,
)
from loom.logs import JsonFormatter, activity_logger
from loom.metrics import Metrics, MetricsServer
from loom.payload_codecs import AesGcmCodec, CodecChain, CompressionCodec, PayloadCodec
from loom.queues import QueueLimits, QueueStats
from loom.schedules import ScheduleDescription, ScheduleInfo
from loom.scheduling import schedule
from loom.schemas.state import Input, State
from loom.signal_handlers import signal
from loom.status import WorkflowStatus
from loom.worker import Worker, WorkerStats

try:  # the installed distribution's version: pyproject.toml is the one place it is written
    __version__ = _metadata.version("loom-core")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = [
    "ActivityCancelledError",
    "ActivityDefinition",
    "ActivityFailedError",
    "ActivityHeartbeat",
    "ActivityHeartbeatTimeoutError",
    "ActivityInfo",
    "AesGcmCodec",
    "CancelOutcome",
    "ChildWorkflowFailedError",
    "CodecChain",
    "CompressionCodec",
    "ConfigurationError",
    "Database",
    "DatabaseUnavailableError",
    "DefinitionError",
    "Event",
    "EventType",
    "HistoryFormatError",
    "Input",
    "InvalidScheduleError",
    "JsonFormatter",
    "LoomError",
    "Metrics",
    "MetricsServer",
    "MissingExtraError",
    "NonDeterminismError",
    "NotInActivityError",
    "PayloadCodec",
    "PayloadDecodeError",
    "PayloadError",
    "QueryArgumentsError",
    "QueryContext",
    "QueryDefinition",
    "QueryFailedError",
    "QueryNotFoundError",
    "QueueLimits",
    "QueueStats",
    "ReadOnlyError",
    "Registry",
    "ReplayReport",
    "ResetOutcome",
    "ScheduleAlreadyExistsError",
    "ScheduleDescription",
    "ScheduleError",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "StartRequest",
    "State",
    "StateProxy",
    "StepDefinition",
    "StoreError",
    "UnawaitedCallError",
    "UnknownStepError",
    "UnknownWorkflowTypeError",
    "Worker",
    "WorkerStats",
    "Workflow",
    "WorkflowAlreadyExistsError",
    "WorkflowCanceledError",
    "WorkflowContext",
    "WorkflowDefinition",
    "WorkflowError",
    "WorkflowFailedError",
    "WorkflowHandle",
    "WorkflowNotFoundError",
    "WorkflowNotRunningError",
    "WorkflowRun",
    "WorkflowSandboxError",
    "WorkflowStatus",
    "WorkflowSummary",
    "__version__",
    "activity",
    "activity_info",
    "activity_logger",
    "default_registry",
    "heartbeat",
    "query",
    "queue",
    "run_once",
    "schedule",
    "signal",
    "step",
    "workflow",
]
