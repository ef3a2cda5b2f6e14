"""``loom query``: ask a workflow a question (a ``@loom.query`` method) and print the answer.

The answer comes from the workflow's stored state and input, computed in this process with the
workflow's class (so its module must be importable here: ``-m``, ``$LOOM_MODULES`` or
``[tool.loom]``); the workflow is not woken, leased or changed.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loom import limits
from loom.cli import render
from loom.cli.common import (
    CodecOption,
    DatabaseOption,
    ModulesOption,
    open_database,
    parse_json,
    run,
)
from loom.cli.errors import CliError
from loom.modules import import_modules

_KINDS = {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}


def query_command(
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW_ID", help="The workflow's id.")],
    name: Annotated[str, typer.Argument(metavar="NAME", help="The query's name.")],
    args_json: Annotated[
        str | None,
        typer.Option(
            "--args", "-a", metavar="JSON", help="The arguments, as a JSON array: '[1, \"x\"]'."
        ),
    ] = None,
    modules: ModulesOption = None,
    codec: CodecOption = None,
    database: DatabaseOption = None,
) -> None:
    """Ask a workflow a @loom.query question; print the answer as JSON. Changes nothing."""
    limits.check_id(workflow_id)
    limits.check_id(name, "query name")
    args = query_arguments(args_json)
    import_modules(modules)

    async def ask() -> Any:
        async with open_database(database, codec=codec) as db:
            return await db.get_workflow(workflow_id).query(name, *args)

    answer = run(ask())
    render.console().print(render.pretty_json(answer))


def query_arguments(text: str | None) -> list[Any]:
    """``--args``: a JSON array (none given: no arguments)."""
    if text is None:
        return []
    value = parse_json(text, "--args")
    if not isinstance(value, list):
        kind = _KINDS.get(type(value), "a number")
        raise CliError(
            f"--args must be a JSON array of the query's arguments, such as '[1, \"x\"]' "
            f"(one argument that is itself an array: '[[1, 2]]'); got {kind}"
        )
    return value
