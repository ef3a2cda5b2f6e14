"""Which parts of what Loom stores are payloads, and their encoding with a codec chain.

A payload is a value that came from the user's code or callers: a workflow's input, its state
(each key's value: the keys are names the code chose, and stay plain), activity arguments and
results, an activity's heartbeat details, signal payloads, a child's input, state and result,
and, when the chain says so (``errors=True``), errors' messages, tracebacks and cause chains and
cancel reasons. Everything else stays plain: ids, names, types, steps, sequence numbers, times,
statuses, versions, patch ids, and tags (lookup keys the store filters on). That is what the
CLI and the dashboard show without a key, and what the store's own rules read (a child's id
and name, a parent, a state key), so those rules work on encoded data unchanged: they copy an
encoded value from where it was decided to where it lands (a child's first event and row,
the next run of a workflow that continued as new, a child's end in its parent's signals),
and apply an encoded STATE_SET to the materialised state key by key.

Reading, an envelope anywhere a payload may be is decoded; one this process cannot decode
raises :class:`~loom.errors.PayloadDecodeError`, or reads as :data:`PLACEHOLDER` where
placeholders were asked for (the CLI, the dashboard).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from loom import codec
from loom.core.history import CHILD_OUTCOME, Event, EventType
from loom.errors import PayloadDecodeError
from loom.payload_codecs.base import ENVELOPE_MARK, PLACEHOLDER, CodecChain

VALUE, STATE, ERROR, TEXT = "value", "state", "error", "text"
"""How a field is a payload: one value; a state (a mapping whose values are each one value); an
error (its message, traceback and cause chain); a text encoded only with errors (a reason)."""

EVENT_FIELDS: dict[EventType, tuple[tuple[str, str], ...]] = {
    EventType.WORKFLOW_STARTED: (("input", VALUE), ("state", STATE)),
    EventType.WORKFLOW_COMPLETED: (("state", STATE),),
    EventType.WORKFLOW_FAILED: (("error", ERROR),),
    EventType.WORKFLOW_CANCELED: (("reason", TEXT),),
    EventType.WORKFLOW_CONTINUED_AS_NEW: (("input", VALUE), ("state", STATE)),
    EventType.STATE_SET: (("value", VALUE),),
    EventType.STATE_UPDATE: (("values", STATE),),
    EventType.ACTIVITY_SCHEDULED: (("args", VALUE), ("kwargs", VALUE)),
    EventType.ACTIVITY_COMPLETED: (("result", VALUE),),
    EventType.ACTIVITY_FAILED: (("error", ERROR),),
    EventType.SIGNAL_RECEIVED: (("payload", VALUE),),
    EventType.CHILD_WORKFLOW_STARTED: (("input", VALUE), ("state", STATE)),
    EventType.CHILD_WORKFLOW_COMPLETED: (("result", VALUE),),
    EventType.CHILD_WORKFLOW_FAILED: (("error", ERROR),),
}
"""The payload fields of each kind of event (the others have none)."""

ERROR_TEXTS = ("message", "traceback")
"""The fields of an error that are encoded (with ``cause``, the same way, link by link)."""

CHILD_OUTCOME_FIELDS = (("result", VALUE), ("error", ERROR))
"""The payload fields of the message a child's end leaves in its parent's signals."""

RECORD_FIELDS = (("input", VALUE), ("state", STATE), ("result", VALUE), ("error", ERROR))
"""The payload columns of a workflow's row."""


class Unreadable(Exception):
    """A payload could not be decoded; ``where`` is filled in on the way out."""

    def __init__(self, cause: PayloadDecodeError, where: str = "") -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.where = where


class Payloads:
    """Encodes the payloads of what is written and decodes those of what is read, with
    ``chain`` (None: nothing is encoded, and a stored envelope cannot be decoded)."""

    def __init__(self, chain: CodecChain | None, *, placeholders: bool = False) -> None:
        self.chain = chain
        self.placeholders = placeholders
        self.errors = chain is not None and chain.errors

    def reading(self, *, placeholders: bool) -> Payloads:
        """The same codecs, reading with or without placeholders."""
        if placeholders == self.placeholders:
            return self
        return Payloads(self.chain, placeholders=placeholders)

    # -- writing ---------------------------------------------------------------------------
    def value(self, value: Any) -> Any:
        assert self.chain is not None
        envelope = self.chain.encode(codec.dumps(value, envelopes=True))
        return value if envelope is None else envelope

    def json_text(self, text: str) -> str:
        """A payload already written as JSON text (heartbeat details), encoded: its envelope
        as JSON text, or the text itself when no codec changed it."""
        assert self.chain is not None
        envelope = self.chain.encode(text.encode())
        return text if envelope is None else orjson.dumps(envelope).decode()

    def state(self, state: Any) -> Any:
        if type(state) is not dict:
            return self.value(state)
        return {key: self.value(item) for key, item in state.items()}

    def error(self, error: Any) -> Any:
        if not self.errors or error is None:
            return error
        if type(error) is not dict:
            return self.value(error)
        encoded = dict(error)
        for name in ERROR_TEXTS:
            if encoded.get(name) is not None:
                encoded[name] = self.value(encoded[name])
        if encoded.get("cause") is not None:
            encoded["cause"] = self.error(encoded["cause"])
        return encoded

    def text(self, text: Any) -> Any:
        return self.value(text) if self.errors and text is not None else text

    def fields(
        self, payload: dict[str, Any], fields: tuple[tuple[str, str], ...]
    ) -> dict[str, Any]:
        encoded = dict(payload)
        for name, kind in fields:
            if name in encoded:
                encoded[name] = self._writers[kind](self, encoded[name])
        return encoded

    def event(self, event: Event) -> Event:
        fields = EVENT_FIELDS.get(event.type)
        if not fields:
            return event
        return Event(event.seq, event.type, self.fields(event.payload, fields), event.timestamp)

    _writers: dict[str, Callable[[Payloads, Any], Any]] = {
        VALUE: value,
        STATE: state,
        ERROR: error,
        TEXT: text,
    }

    # -- reading ---------------------------------------------------------------------------
    def read_value(self, value: Any) -> Any:
        if type(value) is not dict or ENVELOPE_MARK not in value:
            return value
        try:
            if self.chain is None:
                label = value.get(ENVELOPE_MARK)
                raise PayloadDecodeError(
                    f"it is encoded ({label!r}) and this database was opened without a codec; "
                    "open it with its codec: loom.Database(url, codec=...), or --codec / "
                    "$LOOM_CODEC for the CLI and the dashboard",
                    codec=str(label),
                    key=value.get("key") if isinstance(value.get("key"), str) else None,
                )
            data = self.chain.decode(value)
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                raise PayloadDecodeError(
                    "it decodes to bytes that are not JSON", codec=str(value.get(ENVELOPE_MARK))
                ) from None
        except PayloadDecodeError as exc:
            if self.placeholders:
                return PLACEHOLDER
            raise Unreadable(exc) from None

    def read_state(self, state: Any) -> Any:
        if type(state) is not dict:
            return self.read_value(state)
        if ENVELOPE_MARK in state:
            return self.read_value(state)
        decoded: dict[str, Any] | None = None
        for key, item in state.items():
            if type(item) is dict and ENVELOPE_MARK in item:
                if decoded is None:
                    decoded = dict(state)
                try:
                    decoded[key] = self.read_value(item)
                except Unreadable as exc:
                    exc.where = f"[{key!r}]{exc.where}"
                    raise
        return state if decoded is None else decoded

    def read_error(self, error: Any) -> Any:
        if type(error) is not dict:
            return error
        if ENVELOPE_MARK in error:
            return self.read_value(error)
        decoded: dict[str, Any] | None = None
        for name in (*ERROR_TEXTS, "cause"):
            item = error.get(name)
            if type(item) is not dict:
                continue
            try:
                found = self.read_error(item) if name == "cause" else self.read_value(item)
            except Unreadable as exc:
                exc.where = f"[{name!r}]{exc.where}"
                raise
            if found is not item:
                if decoded is None:
                    decoded = dict(error)
                decoded[name] = found
        return error if decoded is None else decoded

    def read_fields(
        self, payload: dict[str, Any], fields: tuple[tuple[str, str], ...]
    ) -> dict[str, Any]:
        """``payload`` with its ``fields`` decoded (itself when none was encoded)."""
        decoded: dict[str, Any] | None = None
        for name, kind in fields:
            item = payload.get(name)
            if type(item) is not dict:
                continue
            try:
                found = self._readers[kind](self, item)
            except Unreadable as exc:
                exc.where = f"{name}{exc.where}"
                raise
            if found is not item:
                if decoded is None:
                    decoded = dict(payload)
                decoded[name] = found
        return payload if decoded is None else decoded

    def read_event(self, event: Event) -> Event:
        fields = EVENT_FIELDS.get(event.type)
        if not fields:
            return event
        try:
            payload = self.read_fields(event.payload, fields)
        except Unreadable as exc:
            exc.where = f"the {exc.where} of its event {event.seq} ({event.type.value})"
            raise
        if payload is event.payload:
            return event
        return Event(event.seq, event.type, payload, event.timestamp)

    def read_signal(self, name: str, payload: Any) -> Any:
        try:
            if name == CHILD_OUTCOME and type(payload) is dict:
                return self.read_fields(payload, CHILD_OUTCOME_FIELDS)
            return self.read_value(payload)
        except Unreadable as exc:
            exc.where = f"the payload{exc.where} of its buffered signal {name!r}"
            raise

    _readers: dict[str, Callable[[Payloads, Any], Any]] = {
        VALUE: read_value,
        STATE: read_state,
        ERROR: read_error,
        TEXT: read_value,
    }


def unreadable(exc: Unreadable, workflow_id: str) -> PayloadDecodeError:
    """The error a caller sees: which workflow, where in it, and why."""
    cause = exc.cause
    return PayloadDecodeError(
        f"cannot decode {exc.where or 'a payload'} of workflow {workflow_id!r}: {cause}",
        codec=cause.codec,
        key=cause.key,
        workflow_id=workflow_id,
    )
