"""The vocabulary of the store's rules: statements, and what each SQL dialect spells its way.

A *rule* (the ``*_rules`` modules, ``copying``) is a generator that yields the statements it needs,
each an :data:`Op` written with ``?`` placeholders, and receives each statement's rows back,
deciding from them what to write next. A rule never touches a connection, so the same rule runs on
SQLite's dedicated thread with blocking calls and on PostgreSQL's pool with ``await``.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from loom.core.history import Event
from loom.store.common import dump

T = TypeVar("T")

EventRow = tuple[str, int, str, str, float]
"""One ``events`` row to insert: (workflow_id, seq, type, payload JSON, created_at)."""


Op = tuple[str, str, Sequence[Any]]
"""One statement of a rule: (kind, SQL, arguments). Kind ``rows`` answers the rows read,
``run`` nothing, ``many`` runs the statement once per tuple of the arguments, ``events``
inserts the arguments, :data:`EventRow` tuples (the dialect picks the fastest bulk insert).
Plain tuples: a commit yields a few of them, on the hot path."""

Rule = Generator[Op, Any, T]


def rows(sql: str, *args: Any) -> Op:
    return ("rows", sql, args)


def run(sql: str, *args: Any) -> Op:
    return ("run", sql, args)


def many(sql: str, args: Sequence[Any]) -> Op:
    return ("many", sql, args)


def events(written: Sequence[EventRow]) -> Op:
    return ("events", "", written)


def one(op: Op) -> Rule[Any]:
    """A rule of one statement."""
    return (yield op)


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells what the rules need."""

    name: str
    """The migrations folder: ``sqlite``, ``postgres``."""
    lock: str
    """Appended to a SELECT to lock the rows it reads until the transaction ends."""
    skip_locked: str
    """Appended to a claim's SELECT so concurrent claimers pass each other's rows by."""
    list_param: bool
    """A list is one array parameter (``= ANY(?)``), else one parameter a value (``IN``)."""
    contains: str
    """``id`` contains the (lower-case) parameter, ignoring case."""
    minutes_ago: str
    """Whole minutes from ``updated_at`` to the parameter."""
    no_limit: Any
    """The LIMIT parameter meaning none."""
    migration_lock: str | None = None
    """A statement that serialises concurrent migrations (beyond the write transaction)."""

    def among(
        self, column: str, values: Sequence[Any], kind: str = "text"
    ) -> tuple[str, tuple[Any, ...]]:
        """``column`` is one of ``values``: the condition and its parameters."""
        if self.list_param:
            return f"{column} = ANY(?::{kind}[])", (list(values),)
        if len(values) == 1:
            return f"{column} = ?", tuple(values)
        return f"{column} IN ({','.join('?' * len(values))})", tuple(values)


def wake_parked(row: Any, workflow_id: str, now: float) -> Rule[bool]:
    """Make the workflow of ``row`` (its ``lease_owner`` and ``ready_at``, read under its row
    lock) ready at once if it is parked: leased to nobody and not due yet. True if it was."""
    if row["lease_owner"] is None and (row["ready_at"] is None or row["ready_at"] > now):
        yield run("UPDATE workflows SET ready_at = ? WHERE id = ?", now, workflow_id)
        return True
    return False


def event_rows(workflow_id: str, events: Sequence[Event]) -> list[EventRow]:
    return [(workflow_id, e.seq, e.type.value, dump(e.payload), e.timestamp) for e in events]
