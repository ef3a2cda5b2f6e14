"""Payloads to bytes and back.

Everything Loom stores (inputs, state, activity arguments and results, signal payloads) is JSON.
Dataclasses and pydantic models are accepted and stored as JSON objects; when the receiving side
declares such a type (an activity's return annotation) the value is rebuilt as that type.

Encoding happens at the call site, before any side effect: a value that cannot be stored raises
:class:`~loom.errors.PayloadError` there instead of being lost later, naming where in the value
the problem is (``input['items'][2] is nan``). orjson writes NaN and Infinity as ``null``, which
would silently change the value, so they are refused too; the check walks the value only when
the encoded bytes contain ``null`` at all, which keeps the common case a single ``memmem``.

The key ``_loom_codec`` is reserved: it marks a payload a codec encoded (an *envelope*, see
:mod:`loom.payload_codecs`), so a value holding it could be mistaken for one; it is refused like
NaN, found by the same kind of ``memmem`` first.

Sets are stored as sorted lists: their iteration order depends on the process's hash seed, and a
stored value must not depend on which process stored it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import uuid
from typing import TYPE_CHECKING, Any

import orjson

from loom.errors import PayloadError
from loom.frozen import FrozenDict, FrozenList
from loom.payload_codecs.base import ENVELOPE_MARK

if TYPE_CHECKING:
    from pydantic import TypeAdapter

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_SUBCLASS
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson can encode
_RESERVED = orjson.dumps(ENVELOPE_MARK)


def _default(value: Any) -> Any:
    if isinstance(value, FrozenDict | FrozenList):  # ctx.input / ctx.state views
        return value._raw
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model
        return dump(mode="json")
    if isinstance(value, set | frozenset):
        return _sorted(value)
    if isinstance(value, tuple):
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


def _sorted(items: set[Any] | frozenset[Any]) -> list[Any]:
    try:
        return sorted(items)
    except TypeError:  # mixed types: order by encoding, which is as stable
        return sorted(items, key=lambda item: orjson.dumps(item, default=_default, option=_OPTIONS))


def dumps(
    value: Any, *, what: str = "value", root: str = "value", envelopes: bool = False
) -> bytes:
    """Encode ``value`` as JSON bytes, or raise PayloadError naming ``what`` could not be stored.

    ``root`` names ``value`` in the message, which points at the offending part of it
    (``root['key'][2]``). ``envelopes``: the value may hold encoded payloads (the store
    writing what a codec encoded); otherwise the key ``_loom_codec`` is refused.
    """
    try:
        data = orjson.dumps(value, default=_default, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        try:
            problem = _find_problem(value, root) or str(exc)
        except RecursionError:  # nested deeper than the walk can follow
            problem = f"{root} is nested too deeply ({exc})"
        raise PayloadError(
            f"{what} cannot be stored: {problem}. Durable values must be JSON (dict with str keys, "
            "list, str, int, float, bool, None), a dataclass or a pydantic model"
        ) from None
    # NaN and Infinity are written as null. (find, not ``in``: ``bytes in bytes`` first tries
    # the operand as an int and clears the TypeError, which costs more than the search.)
    if data.find(b"null") != -1 and not _all_finite(value):
        non_finite = _find_problem(value, root, floats_only=True)
        raise PayloadError(f"{what} cannot be stored: {non_finite}")
    if not envelopes and data.find(_RESERVED) != -1:  # find, not ``in``: see above
        reserved = _find_reserved(orjson.loads(data), root)
        if reserved is not None:
            raise PayloadError(
                f"{what} cannot be stored: {reserved} has the key {ENVELOPE_MARK!r}, which Loom "
                "reserves for encoded payloads; rename that key"
            )
    return data


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


def to_json(value: Any, *, what: str = "value", root: str = "value") -> Any:
    """Round-trip ``value`` through JSON so live code sees exactly what replay will see."""
    return orjson.loads(dumps(value, what=what, root=root))


_PLAIN = (str, int, bool, type(None))


def _find_reserved(value: Any, path: str) -> str | None:
    """The path of the first dict of ``value`` (plain JSON) holding the reserved key."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if type(item) is dict:
            if ENVELOPE_MARK in item:
                return where
            stack.extend((v, f"{where}[{k!r}]") for k, v in reversed(item.items()))
        elif type(item) is list:
            stack.extend((v, f"{where}[{i}]") for i, v in reversed(list(enumerate(item))))
    return None


def _all_finite(value: Any) -> bool:
    """False if a NaN or an Infinity hides in ``value``: the quick check, without paths."""
    kind = type(value)
    if kind is float:
        return math.isfinite(value)
    if kind is dict:
        items = value.values()
    elif kind is list:
        items = value
    elif kind in _PLAIN:
        return True
    else:
        return _find_problem(value, "", floats_only=True) is None  # rare types: the slow walk
    for item in items:
        if type(item) in _PLAIN:
            continue
        if not _all_finite(item):
            return False
    return True


def _find_problem(value: Any, path: str, *, floats_only: bool = False) -> str | None:
    """Why ``value`` (named ``path``) cannot be stored faithfully, or None if it can.

    ``floats_only``: look for NaN and Infinity only (the value is known to encode).
    """
    if isinstance(value, str) and not floats_only:
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{path} is a str with a lone surrogate, which is not valid UTF-8"
        return None
    if value is None or isinstance(value, str | bool | uuid.UUID):
        return None
    if isinstance(value, enum.Enum):
        return _find_problem(value.value, path, floats_only=floats_only)
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return (
            f"{path} is {value!r}, which JSON cannot represent (it would be stored as null); "
            "use None, a string or a finite number"
        )
    if isinstance(value, int):
        if _INT_MIN <= value <= _INT_MAX:
            return None
        return f"{path} is an integer beyond 64 bits ({value}); store it as a string"
    if isinstance(value, dict):
        for key, item in value.items():
            if type(key) is not str and not floats_only:
                return f"{path} has a key that is not a str: {key!r}"
            problem = _find_problem(item, f"{path}[{key!r}]", floats_only=floats_only)
            if problem is not None:
                return problem
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            problem = _find_problem(item, f"{path}[{i}]", floats_only=floats_only)
            if problem is not None:
                return problem
        return None
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            problem = _find_problem(
                getattr(value, field.name), f"{path}.{field.name}", floats_only=floats_only
            )
            if problem is not None:
                return problem
        return None
    try:
        converted = _default(value)
    except TypeError:
        if floats_only:
            return None
        return f"{path} is a {type(value).__module__}.{type(value).__qualname__}"
    if converted is value:
        return None
    return _find_problem(converted, path, floats_only=floats_only)


def convert(value: Any, annotation: Any, *, what: str = "value") -> Any:
    """Rebuild ``value`` (its JSON form) as ``annotation`` says: dataclasses, pydantic models,
    ``Model | None``, ``list[Model]``, ``dict[str, Model]``, tuples, nested dataclass fields ...

    Validation is pydantic's (lax mode), so whatever pydantic understands works. No annotation
    (``None``, ``Any``) or one pydantic cannot build a schema for (an arbitrary class) leaves the
    value as stored. A value that does not validate raises PayloadError naming ``what``.
    """
    if annotation is None or annotation is Any or annotation is inspect.Parameter.empty:
        return value
    if type(value) is annotation and annotation in SCALARS:
        return value  # what pydantic returns too (the very object), for a fraction of the cost
    adapter = _adapter(annotation)
    if adapter is None:
        return value
    try:
        return adapter.validate_python(value)
    except Exception as exc:
        from pydantic import ValidationError  # imported here: pydantic's lazy import is slow

        if not isinstance(exc, ValidationError):
            raise
        raise PayloadError(
            f"{what} does not match its annotation {_type_name(annotation)}: "
            f"{_validation_summary(exc)}"
        ) from None


SCALARS = frozenset({int, float, str, bool})
"""Types whose exact instances :func:`convert` (pydantic's lax validation) returns unchanged."""

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
