"""The codec contract, and the chain that turns a payload's bytes into a stored envelope.

A :class:`PayloadCodec` transforms the bytes of one payload (its JSON) and back: compression,
encryption, or a user's own (a KMS, an HSM). A :class:`CodecChain` applies its codecs in order
(compress, then encrypt) and writes the result as an *envelope*, a JSON object that takes the
payload's place in the database::

    {"_loom_codec": "zstd+aesgcm", "key": "k1", "data": "<base64>"}

``_loom_codec`` names the codecs that were applied, in order (a codec may decline a payload:
compression leaves small ones out, and a payload no codec changed is stored as it was), ``key``
the key id the encrypting codec used, ``data`` the result. Decoding reads the names backwards
and asks the chain's codec of each name: a chain decodes whatever any of its codecs wrote,
whatever the order it writes in now, so codecs and keys can be changed without rewriting what
is stored. The key ``_loom_codec`` is reserved in payloads for that reason
(:func:`loom.codec.dumps` refuses it).
"""

from __future__ import annotations

import abc
import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loom import extras
from loom.errors import ConfigurationError, PayloadDecodeError, PayloadError

ENVELOPE_MARK = "_loom_codec"
"""The key that makes a JSON object an envelope (and that payloads may not use)."""

PLACEHOLDER = "<encrypted>"
"""What a payload this process cannot decode reads as where placeholders are asked for (the
CLI, the dashboard): shown instead of failing."""

NAME_RULE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")
"""A codec's name: lower-case letters, digits, ``_ . -``; at most 40 characters."""
KEY_ID_RULE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A key id: letters, digits, ``_ . -``; at most 64 characters."""


@dataclass(frozen=True, slots=True)
class Encoded:
    """What a codec made of a payload's bytes: ``data``, under the name ``codec`` (one of the
    codec's :attr:`PayloadCodec.names`), and the id of the ``key`` it used, if any."""

    data: bytes
    codec: str
    key: str | None = None


class PayloadCodec(abc.ABC):
    """One transformation of a payload's bytes. Subclass it for a codec of your own.

    ``names`` are the names it writes and reads (a compression codec reads both ``zlib`` and
    ``zstd``). :meth:`encode` may return None to leave a payload as it is; :meth:`decode` gets
    back what :meth:`encode` returned, and raises :class:`~loom.errors.PayloadDecodeError`
    when it cannot (any other exception it raises is reported as one).
    """

    names: tuple[str, ...] = ()

    @abc.abstractmethod
    def encode(self, data: bytes) -> Encoded | None:
        """``data`` encoded, or None to store it unchanged."""

    @abc.abstractmethod
    def decode(self, encoded: Encoded) -> bytes:
        """The bytes that :meth:`encode` was given."""

    def describe(self) -> str:
        """How messages name this codec: its names, and the keys it holds."""
        return "+".join(self.names) or type(self).__name__


class CodecChain:
    """The codecs a database applies to every payload, in order, and whether errors' messages
    are encoded too.

    ``errors=True`` (the default) encodes the message, traceback and cause chain of every
    recorded error and the reasons given to cancel; ``False`` keeps them readable by anyone
    who can read the database (their type, step and activity are always kept plain).
    """

    def __init__(self, *codecs: PayloadCodec, errors: bool = True) -> None:
        if not codecs:
            raise ConfigurationError("a CodecChain needs at least one codec")
        self.codecs: tuple[PayloadCodec, ...] = codecs
        self.errors = bool(errors)
        self._by_name: dict[str, PayloadCodec] = {}
        for codec in codecs:
            if not isinstance(codec, PayloadCodec):
                raise ConfigurationError(
                    f"{codec!r} is not a codec: subclass loom.PayloadCodec (or use "
                    "loom.CompressionCodec, loom.AesGcmCodec)"
                )
            if not codec.names:
                raise ConfigurationError(f"codec {type(codec).__name__} names no codec (names)")
            for name in codec.names:
                if not isinstance(name, str) or not NAME_RULE.fullmatch(name):
                    raise ConfigurationError(
                        f"codec name {name!r} of {type(codec).__name__}: use 1 to 40 lower-case "
                        "letters, digits, '_', '.' or '-'"
                    )
                if name in self._by_name:
                    raise ConfigurationError(f"two codecs of the chain are named {name!r}")
                self._by_name[name] = codec

    def __repr__(self) -> str:
        return f"CodecChain({self.describe()}, errors={self.errors})"

    def describe(self) -> str:
        return " then ".join(c.describe() for c in self.codecs)

    def encode(self, data: bytes) -> dict[str, str] | None:
        """The envelope of ``data``, or None when no codec changed it (store it as it is)."""
        names: list[str] = []
        key: str | None = None
        for codec in self.codecs:
            try:
                out = codec.encode(data)
            except (PayloadError, ConfigurationError):
                raise
            except Exception as exc:
                raise PayloadError(
                    f"codec {codec.describe()} failed to encode a payload: "
                    f"{type(exc).__name__}: {exc}; nothing was stored"
                ) from exc
            if out is None:
                continue
            if (
                not isinstance(out, Encoded)
                or not isinstance(out.data, bytes)
                or out.codec not in codec.names
                or (out.key is not None and not _key_id(out.key))
            ):
                raise PayloadError(
                    f"codec {codec.describe()} returned {out!r:.200}; encode() must return None "
                    "or Encoded(data: bytes, codec: one of its names, key: a key id or None)"
                )
            if out.key is not None:
                if key is not None:
                    raise PayloadError("only one codec of a chain may use keys")
                key = out.key
            data = out.data
            names.append(out.codec)
        if not names:
            return None
        envelope = {ENVELOPE_MARK: "+".join(names), "data": base64.b64encode(data).decode()}
        if key is not None:
            envelope["key"] = key
        return envelope

    def decode(self, envelope: Mapping[str, Any]) -> bytes:
        """The bytes an envelope holds; :class:`PayloadDecodeError` if they cannot be had."""
        label, key, data = parse_envelope(envelope)
        for name in reversed(label.split("+")):
            codec = self._by_name.get(name)
            if codec is None:
                raise PayloadDecodeError(
                    f"it was encoded with {label!r}, and no codec here reads {name!r} "
                    f"(this database's codecs: {self.describe()})",
                    codec=label,
                    key=key,
                )
            try:
                data = codec.decode(Encoded(data, name, key))
            except PayloadDecodeError:
                raise
            except Exception as exc:
                raise PayloadDecodeError(
                    f"codec {name!r} could not decode it: {type(exc).__name__}: {exc}",
                    codec=label,
                    key=key,
                ) from exc
            if not isinstance(data, bytes):
                raise PayloadDecodeError(
                    f"codec {name!r} decoded it to a {type(data).__name__}, not bytes",
                    codec=label,
                    key=key,
                )
        return data


def parse_envelope(envelope: Mapping[str, Any]) -> tuple[str, str | None, bytes]:
    """``(codec label, key id, data)`` of an envelope; :class:`PayloadDecodeError` when it
    is malformed."""
    label, key, text = envelope.get(ENVELOPE_MARK), envelope.get("key"), envelope.get("data")
    if (
        not isinstance(label, str)
        or not all(NAME_RULE.fullmatch(n) for n in label.split("+"))
        or not (key is None or (isinstance(key, str) and _key_id(key)))
        or not isinstance(text, str)
    ):
        raise PayloadDecodeError(
            "it is a malformed envelope (expected {'_loom_codec': NAMES, 'key': ID, "
            "'data': BASE64})",
            codec=str(label)[:80],
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise PayloadDecodeError(
            f"its data ({label!r}) is not valid base64", codec=label, key=key
        ) from None
    return label, key, data


def is_envelope(value: Any) -> bool:
    return type(value) is dict and ENVELOPE_MARK in value


def as_chain(codec: PayloadCodec | CodecChain | Sequence[PayloadCodec] | None) -> CodecChain | None:
    """What ``Database(codec=...)`` accepts, as a chain: a codec, a chain, or a sequence of
    codecs applied in order."""
    if codec is None or isinstance(codec, CodecChain):
        return codec
    if isinstance(codec, PayloadCodec):
        return CodecChain(codec)
    if isinstance(codec, Sequence) and not isinstance(codec, str | bytes):
        return CodecChain(*codec)
    raise ConfigurationError(
        f"codec must be a loom.PayloadCodec, a loom.CodecChain, a list of codecs or a codec spec "
        f"string, got {type(codec).__name__}"
    )


def _key_id(key: str) -> bool:
    return isinstance(key, str) and KEY_ID_RULE.fullmatch(key) is not None


def require(module: str, feature: str) -> Any:
    """Import ``module`` (of the ``crypto`` extra), or raise ``MissingExtraError`` (a
    ``ConfigurationError``) saying which extra to install."""
    return extras.require(module, "crypto", feature)
