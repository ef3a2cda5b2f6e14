"""Payloads to bytes and back.

Everything Loom stores (inputs, state, activity arguments and results, signal payloads) is JSON.
Dataclasses and pydantic models are accepted and stored as JSON objects; when the receiving side
declares such a type (an activity's return annotation) the value is rebuilt as that type.

Encoding happens at the call site, before any side effect: a value that cannot be stored raises
:class:`~loom.errors.PayloadError` there instead of being lost later.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from loom.errors import PayloadError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return dump(mode="json")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    if isinstance(value, str):  # str subclasses such as StrEnum members
        return str(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, dict):
        return dict(value)
    raise TypeError(type(value).__name__)


def dumps(value: Any, *, what: str = "value") -> bytes:
    """Encode ``value`` as JSON bytes, or raise PayloadError naming ``what`` could not be stored."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise PayloadError(
            f"{what} cannot be stored: {exc}. Durable values must be JSON (dict with str keys, "
            "list, str, int, float, bool, None), a dataclass or a pydantic model"
        ) from None


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def to_json(value: Any, *, what: str = "value") -> Any:
    """Round-trip ``value`` through JSON so live code sees exactly what replay will see."""
    return orjson.loads(dumps(value, what=what))


def convert(value: Any, annotation: Any) -> Any:
    """Rebuild a dataclass or pydantic model from its JSON form when ``annotation`` asks for one."""
    if value is None or not isinstance(annotation, type):
        return value
    validate = getattr(annotation, "model_validate", None)
    if callable(validate):
        return validate(value)
    if dataclasses.is_dataclass(annotation) and isinstance(value, dict):
        return annotation(**value)
    return value
