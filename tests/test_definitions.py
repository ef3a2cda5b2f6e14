"""Defining workflows: the decorators, bare and with arguments, and the mistakes they refuse.

A malformed definition must fail where it is written (at decoration time, i.e. import), with a
message that says what is wrong and how to fix it, never later inside a worker.
"""

from __future__ import annotations

from typing import Any

import pytest

import loom
from loom import EventType

# --------------------------------------------------------------------------- bare decorators


@loom.activity
async def defs_bare_double(x: int) -> int:
    return 2 * x


@loom.workflow
class DefsBareWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step
    async def compute(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("doubled", await ctx.activity(defs_bare_double, ctx.input["x"]))


# --------------------------------------------------------------------- decorators with arguments


@loom.activity(name="defs_triple_named", retry_count=2, timeout_seconds=5, retry_delay=0.01)
async def defs_triple(x: int) -> int:
    return 3 * x


@loom.workflow(name="defs_Configured", version="2.5.0", description="Configured on purpose.")
class DefsConfiguredWorkflow(loom.Workflow[dict[str, Any], dict[str, Any]]):
    @loom.step(name="first_named", description="the first step")
    async def first(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("tripled", await ctx.activity(defs_triple, ctx.input["x"]))

    @loom.step(name="second_named")
    async def second(self, ctx: loom.WorkflowContext[dict[str, Any], dict[str, Any]]) -> None:
        await ctx.state.set("plus_one", ctx.state["tripled"] + 1)


# ------------------------------------------------------------------------------ inheritance


class DefsBase(loom.Workflow[None, dict[str, Any]]):
    """Not registered itself: it only contributes steps to its subclasses."""

    @loom.step
    async def alpha(self, ctx: loom.WorkflowContext[None, dict[str, Any]]) -> None:
        await ctx.state.update(trail=lambda t: [*(t or []), "alpha"])

    @loom.step
    async def beta(self, ctx: loom.WorkflowContext[None, dict[str, Any]]) -> None:
        await ctx.state.update(trail=lambda t: [*(t or []), "beta"])

    @loom.step
    async def gamma(self, ctx: loom.WorkflowContext[None, dict[str, Any]]) -> None:
        await ctx.state.update(trail=lambda t: [*(t or []), "gamma"])


@loom.workflow(name="defs_Inherited")
class DefsInherited(DefsBase):
    @loom.step
    async def delta(self, ctx: loom.WorkflowContext[None, dict[str, Any]]) -> None:
        await ctx.state.update(trail=lambda t: [*(t or []), "delta"])

    # An override of a base step keeps the base step's position.
    @loom.step
    async def beta(self, ctx: loom.WorkflowContext[None, dict[str, Any]]) -> None:
        await ctx.state.update(trail=lambda t: [*(t or []), "beta-overridden"])


# ------------------------------------------------------------------------------------ tests


async def run_to_end(db: loom.Database, cls: type[loom.Workflow[Any, Any]], **kw: Any) -> Any:
    handle = await db.start_workflow(cls, **kw)
    async with loom.Worker(db, concurrency=4, poll_interval=0.05, lease_seconds=10):
        state = await handle.result(timeout=10)
    return handle, state


def step_names(cls: type[loom.Workflow[Any, Any]]) -> list[str]:
    return [s.name for s in cls.definition().steps]


async def test_bare_decorators_use_the_python_names(db: loom.Database) -> None:
    definition = DefsBareWorkflow.definition()
    assert definition.name == "DefsBareWorkflow"
    assert step_names(DefsBareWorkflow) == ["compute"]
    # A bare @loom.activity returns the function itself, still callable directly.
    assert await defs_bare_double(4) == 8

    handle, state = await run_to_end(db, DefsBareWorkflow, workflow_input={"x": 21})
    assert state == {"doubled": 42}
    assert await handle.status() == loom.WorkflowStatus.COMPLETED
    scheduled = [e for e in await handle.events() if e.type is EventType.ACTIVITY_SCHEDULED]
    assert [e.payload["name"] for e in scheduled] == ["defs_bare_double"]


async def test_decorators_with_arguments_apply_names_version_and_policy(
    db: loom.Database,
) -> None:
    definition = DefsConfiguredWorkflow.definition()
    assert (definition.name, definition.version) == ("defs_Configured", "2.5.0")
    assert definition.description == "Configured on purpose."
    assert step_names(DefsConfiguredWorkflow) == ["first_named", "second_named"]
    assert definition.steps[0].description == "the first step"

    handle, state = await run_to_end(db, DefsConfiguredWorkflow, workflow_input={"x": 5})
    assert state == {"tripled": 15, "plus_one": 16}
    events = await handle.events()
    started = [e.payload["step"] for e in events if e.type is EventType.STEP_STARTED]
    assert started == ["first_named", "second_named"]
    scheduled = [e for e in events if e.type is EventType.ACTIVITY_SCHEDULED]
    assert [e.payload["name"] for e in scheduled] == ["defs_triple_named"]
    assert events[0].payload["version"] == "2.5.0"
    [summary] = await db.list_workflows()
    assert (summary.name, summary.version) == ("defs_Configured", "2.5.0")


async def test_inherited_steps_count_and_keep_their_order(db: loom.Database) -> None:
    assert step_names(DefsInherited) == ["alpha", "beta", "gamma", "delta"]

    handle, state = await run_to_end(db, DefsInherited)
    assert state["trail"] == ["alpha", "beta-overridden", "gamma", "delta"]
    started = [e.payload["step"] for e in await handle.events() if e.type is EventType.STEP_STARTED]
    assert started == ["alpha", "beta", "gamma", "delta"]


# ------------------------------------------------------------- mistakes refused at decoration


def test_workflow_without_steps_is_refused() -> None:
    with pytest.raises(loom.DefinitionError) as info:

        @loom.workflow(name="defs_NoSteps")
        class NoSteps(loom.Workflow[None, None]):
            async def not_a_step(self, ctx: Any) -> None: ...

    message = str(info.value)
    assert "no steps" in message
    assert "NoSteps" in message
    assert "@loom.step" in message
    with pytest.raises(loom.UnknownWorkflowTypeError):
        loom.default_registry.workflow("defs_NoSteps")


def test_sync_step_is_refused() -> None:
    with pytest.raises(loom.DefinitionError) as info:

        class SyncStep(loom.Workflow[None, None]):
            @loom.step
            def run(self, ctx: Any) -> None: ...

    message = str(info.value)
    assert "async def" in message
    assert "run" in message


@pytest.mark.parametrize(
    ("signature", "shown"),
    [
        ("(self)", "(self)"),
        ("(self, ctx, extra)", "(self, ctx, extra)"),
        ("(self, ctx, *, flag)", "(self, ctx, flag)"),
        ("(ctx)", "(ctx)"),
    ],
)
def test_step_with_wrong_parameters_is_refused(signature: str, shown: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"async def run{signature}: pass", namespace)
    with pytest.raises(loom.DefinitionError) as info:
        loom.step(namespace["run"])
    message = str(info.value)
    assert "must take exactly (self, ctx)" in message
    assert f"it takes {shown}" in message


def test_step_with_optional_extra_parameters_is_accepted() -> None:
    async def run(self: Any, ctx: Any, verbose: bool = False) -> None: ...

    assert loom.step(run) is run


def test_step_on_a_staticmethod_is_refused() -> None:
    with pytest.raises(loom.DefinitionError, match=r"async def name\(self, ctx\)"):

        class StaticStep(loom.Workflow[None, None]):
            @loom.step
            @staticmethod
            async def run(ctx: Any) -> None: ...


@pytest.mark.parametrize(
    "target",
    [len, 42, "defs_not_a_function", type("Callable", (), {"__call__": lambda self: None})()],
    ids=["builtin", "int", "str", "callable-instance"],
)
def test_activity_that_is_not_a_function_is_refused(target: Any) -> None:
    with pytest.raises(loom.DefinitionError) as info:
        loom.activity(target)
    assert "must decorate a function" in str(info.value)

    with pytest.raises(loom.DefinitionError):
        loom.activity(name="defs_bad_activity")(target)


def test_activity_on_a_class_is_refused() -> None:
    with pytest.raises(loom.DefinitionError, match="must decorate a function"):

        @loom.activity
        class NotAFunction:
            pass


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"retry_count": -1}, "retry_count"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"timeout_seconds": True}, "timeout_seconds must be a finite number"),
        ({"timeout_seconds": 10**400}, "timeout_seconds must be a finite number"),
        ({"heartbeat_timeout": 0}, "heartbeat_timeout must be > 0"),
        ({"heartbeat_timeout": -1.5}, "heartbeat_timeout must be > 0"),
        ({"heartbeat_timeout": float("nan")}, "heartbeat_timeout must be a finite number"),
        ({"heartbeat_timeout": float("inf")}, "heartbeat_timeout must be a finite number"),
        ({"heartbeat_timeout": "5"}, "heartbeat_timeout must be a finite number"),
        ({"heartbeat_timeout": True}, "heartbeat_timeout must be a finite number"),
        ({"heartbeat_timeout": 60}, r"heartbeat_timeout \(60 s\) must be shorter than timeout_s"),
        ({"heartbeat_timeout": 5, "timeout_seconds": 2}, "must be shorter than timeout_seconds"),
        ({"retry_delay": None}, "retry_delay must be a finite number"),
        ({"retry_backoff": 0.5}, "retry_backoff"),
        ({"non_retryable": ("ValueError",)}, "non_retryable"),
    ],
)
def test_activity_with_a_bad_policy_is_refused(options: dict[str, Any], words: str) -> None:
    async def charge() -> None: ...

    with pytest.raises(loom.DefinitionError, match=words):
        loom.activity(**options)(charge)


def test_heartbeat_timeout_is_kept_on_the_definition() -> None:
    async def watch() -> None: ...

    definition = loom.activity(heartbeat_timeout=2.5, timeout_seconds=None)(watch)
    assert loom.definitions.activity_definition(definition).heartbeat_timeout == 2.5
    assert loom.definitions.activity_definition(defs_triple).heartbeat_timeout is None


def test_duplicate_step_names_are_refused() -> None:
    with pytest.raises(loom.DefinitionError) as info:

        @loom.workflow(name="defs_DuplicateSteps")
        class DuplicateSteps(loom.Workflow[None, None]):
            @loom.step(name="same")
            async def one(self, ctx: Any) -> None: ...

            @loom.step(name="same")
            async def two(self, ctx: Any) -> None: ...

    message = str(info.value)
    assert "'same'" in message
    assert "'one'" in message and "'two'" in message
    assert "unique" in message
    with pytest.raises(loom.UnknownWorkflowTypeError):
        loom.default_registry.workflow("defs_DuplicateSteps")


def test_workflow_decorator_on_a_non_workflow_class_is_refused() -> None:
    with pytest.raises(loom.DefinitionError) as info:

        @loom.workflow(name="defs_NotAWorkflow")
        class NotAWorkflow:
            @loom.step
            async def run(self, ctx: Any) -> None: ...

    message = str(info.value)
    assert "loom.Workflow" in message
    assert "NotAWorkflow" in message

    with pytest.raises(loom.DefinitionError, match=r"loom\.Workflow"):
        loom.workflow(lambda: None)  # type: ignore[call-overload]


def test_two_classes_with_one_workflow_name_and_version_are_refused() -> None:
    with pytest.raises(loom.DefinitionError) as info:

        @loom.workflow(name="defs_Configured", version="2.5.0")
        class Impostor(loom.Workflow[None, None]):
            @loom.step
            async def run(self, ctx: Any) -> None: ...

    message = str(info.value)
    assert "defs_Configured" in message and "'2.5.0'" in message
    assert "name=" in message and "version=" in message
    assert loom.default_registry.workflow("defs_Configured").cls is DefsConfiguredWorkflow


def test_another_version_of_a_workflow_name_registers_beside_it() -> None:
    registry = loom.Registry()

    @loom.workflow(name="defs_Twice", version="1", registry=registry)
    class First(loom.Workflow[None, None]):
        @loom.step
        async def run(self, ctx: Any) -> None: ...

    @loom.workflow(name="defs_Twice", version="2", registry=registry)
    class Second(loom.Workflow[None, None]):
        @loom.step
        async def run(self, ctx: Any) -> None: ...

    assert sorted(d.version for d in registry.workflows()) == ["1", "2"]
    assert registry.workflow("defs_Twice").cls is Second  # the newest
    assert registry.workflow("defs_Twice", version="1").cls is First

    @loom.workflow(name="defs_Twice", version="3", registry=registry)
    class Second(loom.Workflow[None, None]):  # type: ignore[no-redef]  # edited and reloaded
        @loom.step
        async def run(self, ctx: Any) -> None: ...

    assert sorted(d.version for d in registry.workflows()) == ["1", "3"]


def test_two_functions_with_one_activity_name_are_refused() -> None:
    with pytest.raises(loom.DefinitionError) as info:

        @loom.activity(name="defs_bare_double")
        async def impostor(x: int) -> int:
            return x

    message = str(info.value)
    assert "defs_bare_double" in message
    assert "impostor" in message
    assert "name=" in message
    assert {a.name: a.fn for a in loom.default_registry.activities()}[
        "defs_bare_double"
    ] is defs_bare_double


def test_the_same_activity_defined_again_by_a_reloaded_module_is_accepted() -> None:
    registry = loom.Registry()
    source = "async def defs_reloaded(x):\n    return x\n"
    for _ in range(2):
        namespace: dict[str, Any] = {"__name__": "defs_reloaded_module"}
        exec(source, namespace)
        loom.activity(namespace["defs_reloaded"], registry=registry)
    assert [a.fn for a in registry.activities()] == [namespace["defs_reloaded"]]


async def test_starting_an_undecorated_class_is_refused(db: loom.Database) -> None:
    with pytest.raises(loom.DefinitionError, match=r"@loom\.workflow"):
        await db.start_workflow(DefsBase)
    assert await db.list_workflows() == []
