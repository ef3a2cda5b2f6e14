"""Replaying exported histories against the current code: golden tests for workflows.

Export a real run (``loom inspect ID --export order.json`` or the dashboard's "Download
history"), keep the file with the tests, and replay it whenever the code changes::

    Replayer([OrderWorkflow]).replay("histories/order.json")

Replay re-runs every step of the workflow's code, runs no activity and writes nothing; a
decision that differs from the history raises the same :class:`~loom.errors.NonDeterminismError`
a worker would record for that run in production.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loom.core.history_file import ExportedHistory, from_document
from loom.core.verify import verify
from loom.core.workflow import Workflow
from loom.definitions import Registry, workflow_definition
from loom.errors import HistoryFormatError, NonDeterminismError, UnknownWorkflowTypeError
from loom.status import WorkflowStatus


@dataclass(frozen=True, slots=True)
class Replayed:
    """A history the code reproduced: whose it is, and where the code stands at its end."""

    workflow_id: str
    name: str
    version: str
    status: WorkflowStatus
    state: dict[str, Any]
    events: int


class Replayer:
    """Replays exported histories with the given workflow classes (several versions of one
    name may be given; each history is replayed with the version it names)."""

    def __init__(
        self, workflows: Iterable[type[Workflow[Any, Any]]] | type[Workflow[Any, Any]]
    ) -> None:
        self.registry = Registry()
        for cls in [workflows] if isinstance(workflows, type) else workflows:
            self.registry.add_workflow(workflow_definition(cls))

    def replay(
        self, history: str | os.PathLike[str] | Mapping[str, Any] | ExportedHistory
    ) -> Replayed:
        """Replay one exported history (a file path, its parsed JSON, or an ExportedHistory).

        Raises :class:`~loom.errors.NonDeterminismError` when the code does not reproduce it,
        :class:`~loom.errors.HistoryFormatError` for a document that is not an exported
        history, and :class:`~loom.errors.UnknownWorkflowTypeError` when no class given here
        has the history's name (and version).
        """
        exported = history if isinstance(history, ExportedHistory) else _read(history)
        try:
            definition = self.registry.workflow(
                exported.name, exported.workflow_id, exported.version
            )
        except UnknownWorkflowTypeError as exc:
            exc.add_note(f"give its class to the Replayer: Replayer([..., {exported.name}])")
            raise
        verdict = verify(definition, exported.workflow_id, exported.events, exported.status)
        if verdict.nondeterminism is not None:
            raise verdict.nondeterminism
        if verdict.overrun is not None:
            raise NonDeterminismError(exported.workflow_id, verdict.overrun)
        return Replayed(
            exported.workflow_id,
            definition.name,
            definition.version,
            verdict.status,
            verdict.state,
            len(exported.events),
        )

    def replay_all(self, folder: str | os.PathLike[str], pattern: str = "*.json") -> list[Replayed]:
        """Replay every history in ``folder`` (matching ``pattern``), in name order; the first
        one the code does not reproduce raises, naming its file."""
        paths = sorted(Path(folder).glob(pattern))
        if not paths:
            raise HistoryFormatError(f"no history matching {pattern!r} in {os.fspath(folder)!r}")
        replayed = []
        for path in paths:
            try:
                replayed.append(self.replay(path))
            except (NonDeterminismError, UnknownWorkflowTypeError) as exc:
                exc.add_note(f"replaying {os.fspath(path)}")
                raise
        return replayed


def _read(source: str | os.PathLike[str] | Mapping[str, Any]) -> ExportedHistory:
    if isinstance(source, Mapping):
        return from_document(dict(source), "the history given")
    if not isinstance(source, str | os.PathLike):
        raise HistoryFormatError(
            f"replay() takes a file path, a parsed history or an ExportedHistory, got "
            f"{type(source).__name__}"
        )
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise HistoryFormatError(f"cannot read the history {os.fspath(path)!r}: {exc}") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise HistoryFormatError(f"{os.fspath(path)!r} is not JSON: {exc}") from None
    return from_document(document, repr(os.fspath(path)))


__all__ = ["Replayed", "Replayer"]
