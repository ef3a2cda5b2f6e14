"""Payloads to bytes and back.

Everything Loom stores (inputs, state, activity arguments and results, signal payloads) is JSON.
Dataclasses and pydantic models are accepted and stored as JSON objects; when the receiving side
declares such a type (an activity's return annotation) the value is rebuilt as that type.

Encoding happens at the call site, before any side effect: a value that cannot be stored raises
:class:`~loom.errors.PayloadError` there instead of being lost later.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

import orjson

from loom.errors import PayloadError

if TYPE_CHECKING:
    from pydantic import TypeAdapter

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


def convert(value: Any, annotation: Any, *, what: str = "value") -> Any:
    """Rebuild ``value`` (its JSON form) as ``annotation`` says: dataclasses, pydantic models,
    ``Model | None``, ``list[Model]``, ``dict[str, Model]``, tuples, nested dataclass fields ...

    Validation is pydantic's (lax mode), so whatever pydantic understands works. No annotation
    (``None``, ``Any``) or one pydantic cannot build a schema for (an arbitrary class) leaves the
    value as stored. A value that does not validate raises PayloadError naming ``what``.
    """
    if annotation is None or annotation is Any or annotation is inspect.Parameter.empty:
        return value
    adapter = _adapter(annotation)
    if adapter is None:
        return value
    from pydantic import ValidationError

    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise PayloadError(
            f"{what} does not match its annotation {_type_name(annotation)}: "
            f"{_validation_summary(exc)}"
        ) from None


_NO_ADAPTER: Any = object()
_adapters: dict[Any, Any] = {}
_ADAPTER_CACHE_LIMIT = 1024


def _adapter(annotation: Any) -> TypeAdapter[Any] | None:
    """The (cached) TypeAdapter for ``annotation``; None if pydantic cannot handle it.

    Built once per annotation: building one costs far more than validating with it.
    """
    try:
        cached = _adapters.get(annotation)
    except TypeError:  # unhashable (e.g. Annotated with a list in its metadata): not cached
        return _build_adapter(annotation)
    if cached is None:
        cached = _build_adapter(annotation)
        if len(_adapters) >= _ADAPTER_CACHE_LIMIT:
            _adapters.clear()
        _adapters[annotation] = _NO_ADAPTER if cached is None else cached
    return None if cached is _NO_ADAPTER else cached


def _build_adapter(annotation: Any) -> TypeAdapter[Any] | None:
    from pydantic import PydanticUserError, TypeAdapter

    try:
        return TypeAdapter(annotation)
    except (PydanticUserError, TypeError, NameError):
        return None  # not a type pydantic knows (or an unresolved forward reference)


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _validation_summary(exc: Exception) -> str:
    """pydantic's message without its documentation links."""
    lines = [line for line in str(exc).splitlines() if "errors.pydantic.dev" not in line]
    return " ".join(line.strip() for line in lines)
