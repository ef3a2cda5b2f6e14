"""``loom``'s public names: exactly these, each importable; a change here is an API change."""

from __future__ import annotations

import importlib
import importlib.metadata

import pytest

import loom

EXPORTED = [
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


def test_the_exported_names_are_exactly_these() -> None:
    assert sorted(loom.__all__) == EXPORTED
    assert len(set(loom.__all__)) == len(loom.__all__)


@pytest.mark.parametrize("name", EXPORTED)
def test_each_exported_name_is_importable(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from loom import {name}", namespace)
    assert namespace[name] is getattr(loom, name)


def test_star_import_gives_exactly_the_exported_names() -> None:
    namespace: dict[str, object] = {}
    exec("from loom import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == EXPORTED


def test_the_version_is_the_installed_distributions() -> None:
    assert loom.__version__ == importlib.metadata.version("loom-core")


def test_lease_lost_error_is_no_longer_exported_but_old_imports_still_work() -> None:
    from loom.errors import LeaseLostError

    assert "LeaseLostError" not in loom.__all__
    assert issubclass(LeaseLostError, loom.StoreError)
    assert importlib.import_module("loom").LeaseLostError is LeaseLostError
