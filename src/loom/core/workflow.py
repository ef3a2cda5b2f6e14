"""``Workflow[InputT, StateT]``: the base class of every workflow.

A workflow is a class of ordered ``@loom.step`` methods. Steps share nothing but the durable
state (``ctx.state``), so a completed step never runs again: after a crash the workflow resumes
at the first step that did not complete, with its state rebuilt from the history.

The engine core imports nothing above it, so ``Workflow.start`` cannot reach for the client
itself: :mod:`loom.client` installs the function that starts a workflow on the default database
(:func:`install_starter`) when it is imported, which ``import loom`` always does.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from loom.definitions import WorkflowBase, WorkflowDefinition, workflow_definition
from loom.errors import ConfigurationError

if TYPE_CHECKING:
    from loom.client import WorkflowHandle

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")


class Starter(Protocol):
    """Starts ``workflow`` on the default database and returns its handle."""

    def __call__(
        self,
        workflow: type[Workflow[Any, Any]],
        workflow_input: Any,
        initial_state: Any,
        workflow_id: str | None,
    ) -> Awaitable[WorkflowHandle[Any]]: ...


_starter: Starter | None = None


def install_starter(starter: Starter) -> None:
    """Set what ``Workflow.start`` calls (done by :mod:`loom.client` at import)."""
    global _starter
    _starter = starter


class Workflow(WorkflowBase, Generic[InputT, StateT]):
    """Subclass with ``Workflow[MyInput, MyState]`` and decorate with ``@loom.workflow``."""

    @classmethod
    async def start(
        cls,
        input: InputT,
        initial_state: StateT | None = None,
        workflow_id: str | None = None,
    ) -> WorkflowHandle[StateT]:
        """Start this workflow on the default database (``$LOOM_DATABASE_URL`` or ``loom.db``).

        The schema is created if missing. Starting with an existing ``workflow_id`` returns that
        workflow's handle when the input is equal and raises ``WorkflowAlreadyExistsError``
        otherwise.
        """
        if _starter is None:
            raise ConfigurationError(
                "Workflow.start needs the Loom client: `import loom` (or loom.client) first"
            )
        return await _starter(cls, input, initial_state, workflow_id)

    @classmethod
    def definition(cls) -> WorkflowDefinition:
        """The frozen :class:`~loom.definitions.WorkflowDefinition` (name, version, steps)."""
        return workflow_definition(cls)
