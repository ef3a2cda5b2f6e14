"""Queries: a workflow's answer to a question, computed from what is stored about it.

A query reads; it never runs the workflow. The ``@loom.query`` method runs on a fresh instance of
the workflow class with a :class:`QueryContext` over the workflow row's ``input`` and ``state``
(as of the workflow's last write: the final state once it has ended). Nothing is replayed, so a
query costs one read however long the history; nothing is leased, recorded or written, so
asking changes nothing a worker, a replay or ``updated_at`` could see.

The method runs on a :class:`~loom.core.loop.DeterministicLoop` of its own, as workflow code
does: an ``async def`` query may await other coroutines, but the durable calls are not there
(``ctx.activity``, ``ctx.sleep``, ``ctx.wait_for_signal``, ``ctx.state.set``), wall-clock timers,
threads and I/O are refused, and an await that does not complete at once (a future, an
``asyncio.Event``) fails the query instead of hanging its caller. Whatever the method raises
comes out as :class:`~loom.errors.QueryFailedError`; the workflow is untouched.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from loom import codec
from loom.core import loop as loop_module
from loom.definitions import QueryDefinition, WorkflowDefinition
from loom.errors import (
    PayloadError,
    QueryArgumentsError,
    QueryFailedError,
    QueryNotFoundError,
    WorkflowSandboxError,
)
from loom.failures import describe_error
from loom.frozen import FrozenState, freeze, freeze_state
from loom.status import WorkflowStatus

InputT = TypeVar("InputT")
StateT = TypeVar("StateT")

_HINT = (
    "a query only reads the workflow; change the state in a step, with "
    "`await ctx.state.set(key, value)`, or send the workflow a signal"
)
_CLEANUP_CALLBACKS = 10_000
"""Callbacks the tasks a query left behind may run while they are cancelled."""


class QueryContext(Generic[InputT, StateT]):
    """Passed to every query: the workflow's input and state, read-only, and two facts.

    ``ctx.state`` reads like a step's (``ctx.state["k"]``, ``.get``, ``.to_dict()`` for a
    mutable copy); changing it, or ``ctx.input``, raises ``ReadOnlyError``. There are no
    durable calls: a query cannot run activities, sleep, wait for signals or change state.
    """

    __slots__ = ("_input", "_state", "_status", "_workflow_id")

    def __init__(
        self, workflow_id: str, status: WorkflowStatus, workflow_input: Any, state: dict[str, Any]
    ) -> None:
        self._workflow_id = workflow_id
        self._status = status
        self._input = workflow_input
        self._state = freeze_state(state, "ctx.state", _HINT)

    @property
    def input(self) -> InputT:
        """The workflow input, as given to ``start`` (a read-only view)."""
        return freeze(self._input, "ctx.input", _HINT)  # type: ignore[no-any-return]

    @property
    def state(self) -> FrozenState:
        """The state as of the workflow's last write (read-only); its final state once ended."""
        return self._state

    @property
    def workflow_id(self) -> str:
        return self._workflow_id

    @property
    def status(self) -> WorkflowStatus:
        """RUNNING, COMPLETED, FAILED or CANCELED, as stored with the state."""
        return self._status

    if not TYPE_CHECKING:  # type checkers report an unknown attribute themselves

        def __getattr__(self, name: str) -> NoReturn:
            raise AttributeError(
                f"a query context has no {name!r}: a query reads ctx.input, ctx.state, "
                "ctx.workflow_id and ctx.status and changes nothing; activities, sleeps, "
                "signal waits and state changes belong in steps"
            )

    def __repr__(self) -> str:
        return f"QueryContext({self._workflow_id!r}, {self._status.value})"


def run_query(
    definition: WorkflowDefinition,
    name: str,
    args: Sequence[Any],
    *,
    workflow_id: str,
    status: WorkflowStatus,
    workflow_input: Any,
    state: dict[str, Any],
) -> Any:
    """Answer query ``name`` of a workflow of type ``definition`` from its stored input and
    state; the answer as JSON values.

    Raises ``QueryNotFoundError`` (no such query), ``QueryArgumentsError`` (arguments that are
    not JSON or that the method does not take; nothing ran), ``QueryFailedError`` (the method
    raised, or awaited something that does not complete at once) and ``PayloadError`` (an
    answer that is not JSON).
    """
    query = definition.query(name)
    if query is None:
        known = [q.name for q in definition.queries]
        raise QueryNotFoundError(workflow_id, definition.name, name, known)
    arguments = _arguments(definition, query, args, workflow_id)
    ctx: QueryContext[Any, Any] = QueryContext(workflow_id, status, workflow_input, state)

    def call() -> Any:
        instance = definition.cls()  # a fresh one, as every step gets
        return getattr(instance, query.attribute)(ctx, *arguments)

    value = _run(call, query.name, workflow_id)
    return codec.to_json(
        value, what=f"the answer of query {query.name!r} of workflow {workflow_id!r}", root="result"
    )


def _arguments(
    definition: WorkflowDefinition, query: QueryDefinition, args: Sequence[Any], workflow_id: str
) -> list[Any]:
    """``args`` as JSON values the method takes, rebuilt as its parameters are annotated."""
    try:
        values: list[Any] = codec.to_json(list(args), what="its arguments", root="args")
    except PayloadError as exc:
        raise QueryArgumentsError(workflow_id, query.name, str(exc)) from None
    signature = inspect.signature(getattr(definition.cls, query.attribute))
    try:
        signature.bind(None, None, *values)
    except TypeError as exc:
        takes = ", ".join(query.parameters) or "no arguments"
        raise QueryArgumentsError(
            workflow_id, query.name, f"{exc} (it takes {takes}; got {len(values)})"
        ) from None
    params = list(signature.parameters.values())[2:]
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = next((p for p in params if p.kind is p.VAR_POSITIONAL), None)
    converted = []
    for index, value in enumerate(values):
        param = positional[index] if index < len(positional) else rest
        assert param is not None  # bind() accepted this many arguments
        try:
            converted.append(
                codec.convert(
                    value, query.arg_types.get(param.name), what=f"argument {param.name!r}"
                )
            )
        except PayloadError as exc:
            raise QueryArgumentsError(workflow_id, query.name, str(exc)) from None
    return converted


def _run(call: Callable[[], Any], name: str, workflow_id: str) -> Any:
    """The value of ``call()`` (awaited if it returns an awaitable), run to the end at once on a
    loop of its own; ``QueryFailedError`` for whatever it raises or cannot finish."""
    loop = loop_module.DeterministicLoop()  # type: ignore[abstract]
    outcome: list[tuple[bool, Any]] = []

    async def main() -> None:
        try:
            value = call()
            if inspect.isawaitable(value):
                value = await value
        except GeneratorExit:
            raise  # the coroutine being closed, not the query failing
        except BaseException as exc:  # sys.exit() in a query must not end the caller's process
            outcome.append((False, exc))
        else:
            outcome.append((True, value))

    task = loop.create_task(main())
    try:
        idle = loop.run_until_idle()
        if not outcome:
            problem = (
                f"it ran {loop_module.SPIN_LIMIT} callbacks without finishing (a busy loop)"
                if not idle
                else f"it awaits {loop_module.awaited(task)}, which does not complete at once"
            )
            outcome[:] = [
                (
                    False,
                    WorkflowSandboxError(
                        f"{problem}; a query answers from ctx.state and ctx.input at once and "
                        "cannot wait for anything"
                    ),
                )
            ]
    finally:
        for pending in loop.pending_tasks():  # tasks it started and left: they stop here
            pending.cancel()
        loop.run_until_idle(limit=_CLEANUP_CALLBACKS)
        loop.close()
    succeeded, value = outcome[0]
    if succeeded:
        return value
    error = describe_error(value)
    raise QueryFailedError(workflow_id, name, error["type"], error["message"]) from value
