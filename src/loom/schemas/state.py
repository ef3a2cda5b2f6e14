"""Bases for workflow input and state types.

Both are ``TypedDict`` bases: subclass them with your fields, and pass plain dicts (or the class
called like a dict) when starting a workflow. State fields that have not been set read as ``None``
through ``ctx.state.get(key)``.
"""

from __future__ import annotations

from typing import TypedDict


class Input(TypedDict):
    """Base of a workflow input type: ``class OrderInput(Input): order_id: str``."""


class State(TypedDict):
    """Base of a workflow state type: ``class OrderState(State): paid: bool | None``."""


__all__ = ["Input", "State"]
