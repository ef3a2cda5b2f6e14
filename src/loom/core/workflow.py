"""``Workflow[InputT, StateT]``: the base class of every workflow.

A workflow is a class of ordered ``@loom.step`` methods. Steps share nothing but the durable
state (``ctx.state``), so a completed step never runs again: after a crash the workflow resumes
at the first step that did not complete, with its state rebuilt from the history.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from loom.client import WorkflowHandle

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")


class Workflow(Generic[InputT, StateT]):
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
        from loom.client import default_database

        db = await default_database()
        return await db.start_workflow(
            cls, workflow_input=input, initial_state=initial_state, workflow_id=workflow_id
        )

    @classmethod
    def definition(cls) -> Any:
        """The frozen :class:`~loom.definitions.WorkflowDefinition` (name, version, steps)."""
        from loom.definitions import workflow_definition

        return workflow_definition(cls)
