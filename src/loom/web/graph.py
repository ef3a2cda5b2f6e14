"""The step graph of each registered workflow, and its queries, for ``GET /api/definitions``.

Steps come from the definition, in order. What each step calls (activities, sleeps, signal
waits) is read statically from the step's source with :mod:`ast`: a call to
``<ctx>.activity(fn, ...)``, ``<ctx>.sleep(...)`` or ``<ctx>.wait_for_signal(name, ...)`` on the
step's context parameter is listed in source order. Calls made through helpers, or chosen at run
time, are not seen; ``calls`` is None when the source is unavailable.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from typing import Any

from loom.definitions import StepDefinition, WorkflowDefinition

_KINDS = {"activity": "activity", "sleep": "sleep", "wait_for_signal": "signal"}


def definition_graph(definition: WorkflowDefinition) -> dict[str, Any]:
    return {
        "name": definition.name,
        "version": definition.version,
        "description": _clean(definition.description),
        "steps": [_step(definition, step, index) for index, step in enumerate(definition.steps)],
        "signal_handlers": dict(definition.signal_handlers),
        "queries": [
            {
                "name": query.name,
                "parameters": list(query.parameters),
                "description": _clean(query.description),
            }
            for query in definition.queries
        ],
    }


def _clean(text: str | None) -> str | None:
    return inspect.cleandoc(text) if text else None


def _step(definition: WorkflowDefinition, step: StepDefinition, index: int) -> dict[str, Any]:
    return {
        "index": index,
        "name": step.name,
        "attribute": step.attribute,
        "description": _clean(step.description),
        "calls": step_calls(definition.cls, step.attribute),
    }


def step_calls(cls: type[Any], attribute: str) -> list[dict[str, Any]] | None:
    """The durable calls found in the source of ``cls.<attribute>``, in source order."""
    fn = getattr(cls, attribute, None)
    try:
        source = textwrap.dedent(inspect.getsource(fn))  # type: ignore[arg-type]
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return None
    func = next(
        (n for n in tree.body if isinstance(n, ast.AsyncFunctionDef | ast.FunctionDef)), None
    )
    if func is None or len(func.args.args) < 2:
        return None
    ctx_name = func.args.args[1].arg
    namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
    found: list[tuple[int, int, dict[str, Any]]] = []
    for node in ast.walk(func):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == ctx_name
            and node.func.attr in _KINDS
        ):
            continue
        kind = _KINDS[node.func.attr]
        call: dict[str, Any] = {"kind": kind, "name": None}
        if kind == "activity" and node.args:
            call["name"] = _activity_name(node.args[0], namespace)
        elif kind == "signal" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                call["name"] = first.value
            else:
                call["name"] = ast.unparse(first)
        elif kind == "sleep":
            call["name"] = ", ".join(ast.unparse(k) for k in node.keywords) or None
        found.append((node.lineno, node.col_offset, call))
    return [call for _, _, call in sorted(found, key=lambda f: (f[0], f[1]))]


def _activity_name(node: ast.expr, namespace: dict[str, Any]) -> str:
    """The registered name of the activity a call refers to, else the expression's text."""
    from loom.definitions import activity_definition

    text = ast.unparse(node)
    value: Any = None
    if isinstance(node, ast.Name):
        value = namespace.get(node.id)
    elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        value = getattr(namespace.get(node.value.id), node.attr, None)
    if value is not None:
        try:
            return activity_definition(value).name
        except Exception:
            return text
    return text
