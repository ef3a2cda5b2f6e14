"""Read-only views of durable values: ``ctx.input`` and what ``ctx.state`` hands out.

The input and the state live in the history. If workflow code could change them in place
(``ctx.state["items"].append(2)``), the change would be seen by the next step only while the
worker keeps the workflow in memory, and lost after a restart or a cache eviction, when the
values are rebuilt from the events: the same code would give two results. So workflow code
reads them through these views, which raise :class:`~loom.errors.ReadOnlyError` on any change
and name the durable call to use instead.

Views are lazy: a nested dict or list is wrapped when it is read, so reading a large input costs
nothing up front. ``copy.deepcopy(view)`` (or ``view.copy()``) gives a plain, mutable copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NoReturn, SupportsIndex, overload

import orjson

from loom.errors import ReadOnlyError


class _Origin:
    """Where a view's value lives, for the error message: its path and how to change it."""

    __slots__ = ("hint", "root")

    def __init__(self, root: str, hint: str) -> None:
        self.root = root
        self.hint = hint


def freeze(value: Any, root: str, hint: str) -> Any:
    """``value`` as a read-only view if it is a dict or list, else ``value`` itself."""
    if isinstance(value, dict | list):
        return _wrap(value, _Origin(root, hint), "")
    return value


_IMMUTABLE = frozenset({str, int, float, bool, type(None)})


def thaw(value: Any) -> Any:
    """A plain, mutable deep copy of a durable value (views included)."""
    kind = type(value)
    if kind is dict or kind is list:  # the usual cases first: no ABC isinstance checks
        return orjson.loads(orjson.dumps(value)) if value else kind()
    if kind in _IMMUTABLE:
        return value
    if isinstance(value, FrozenDict | FrozenList):
        value = value._raw
    if isinstance(value, dict | list):
        return orjson.loads(orjson.dumps(value))
    return value


def raw(value: Any) -> Any:
    """The plain value behind a view (not a copy: never mutate it)."""
    if isinstance(value, FrozenDict | FrozenList):
        return value._raw
    return value


def _wrap(value: Any, origin: _Origin, path: str) -> Any:
    if isinstance(value, dict):
        return FrozenDict(value, origin, path)
    if isinstance(value, list):
        return FrozenList(value, origin, path)
    return value


class _View:
    __slots__ = ("_origin", "_path", "_raw")
    _raw: Any
    _origin: _Origin
    _path: str

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        where = self._origin.root + self._path
        raise ReadOnlyError(
            f"{where} is read-only: {self._origin.hint}. For a scratch copy you may change, "
            f"use copy.deepcopy({where})"
        )

    def copy(self) -> Any:
        """A plain, mutable deep copy."""
        return thaw(self._raw)

    def __copy__(self) -> Any:
        return thaw(self._raw)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return thaw(self._raw)

    def __reduce__(self) -> tuple[Any, ...]:
        return (thaw, (self._raw,))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _View):
            other = other._raw
        return bool(self._raw == other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._raw)

    def __bool__(self) -> bool:
        return bool(self._raw)


class FrozenDict(_View, Mapping[str, Any]):
    """A read-only view of a durable JSON object."""

    __slots__ = ()

    def __init__(self, value: dict[str, Any], origin: _Origin, path: str) -> None:
        self._raw = value
        self._origin = origin
        self._path = path

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._raw[key], self._origin, f"{self._path}[{key!r}]")

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, key: object) -> bool:
        return key in self._raw

    def __or__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**thaw(self._raw), **raw(other)}

    def __ror__(self, other: Mapping[str, Any]) -> dict[str, Any]:
        return {**raw(other), **thaw(self._raw)}

    __setitem__ = __delitem__ = _View._refuse
    clear = pop = popitem = setdefault = update = __ior__ = _View._refuse


class FrozenState(FrozenDict):
    """A read-only view of a whole workflow state, read as a step reads ``ctx.state``:
    ``to_dict()`` is a mutable copy, and ``set``/``update`` raise instead of changing it (a
    query's ``ctx.state``)."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """A plain, mutable deep copy of the state."""
        return thaw(self._raw)  # type: ignore[no-any-return]

    set = _View._refuse


def freeze_state(state: dict[str, Any], root: str, hint: str) -> FrozenState:
    """``state`` as a :class:`FrozenState` named ``root`` in errors, which give ``hint``."""
    return FrozenState(state, _Origin(root, hint), "")


class FrozenList(_View, Sequence[Any]):
    """A read-only view of a durable JSON array."""

    __slots__ = ()

    def __init__(self, value: list[Any], origin: _Origin, path: str) -> None:
        self._raw = value
        self._origin = origin
        self._path = path

    @overload
    def __getitem__(self, index: SupportsIndex) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Any: ...

    def __getitem__(self, index: SupportsIndex | slice) -> Any:
        if isinstance(index, slice):
            return thaw(self._raw[index])
        i = index.__index__()
        return _wrap(self._raw[i], self._origin, f"{self._path}[{i}]")

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[Any]:
        for i, item in enumerate(self._raw):
            yield _wrap(item, self._origin, f"{self._path}[{i}]")

    def __contains__(self, item: object) -> bool:
        return raw(item) in self._raw

    def __add__(self, other: Sequence[Any]) -> list[Any]:
        return thaw(self._raw) + list(raw(other))  # type: ignore[no-any-return]

    def __radd__(self, other: Sequence[Any]) -> list[Any]:
        return list(raw(other)) + thaw(self._raw)  # type: ignore[no-any-return]

    def __mul__(self, n: int) -> list[Any]:
        return thaw(self._raw) * n  # type: ignore[no-any-return]

    __rmul__ = __mul__

    def __lt__(self, other: object) -> bool:
        return bool(self._raw < raw(other))

    __setitem__ = __delitem__ = _View._refuse
    append = extend = insert = pop = remove = reverse = sort = clear = _View._refuse
    __iadd__ = __imul__ = _View._refuse
