"""Authenticated encryption of payloads: AES-GCM (the ``cryptography`` package), with key
rotation.

Each payload is encrypted under the *write key* with a fresh random 96-bit nonce, and its
envelope names the key's id; every key held can read. Rotating is adding a new key as the write
key and keeping the old ones for reading: what was written before stays readable, what is
written now uses the new key. A payload altered in the database fails GCM's authentication tag
and is refused (:class:`~loom.errors.PayloadDecodeError`), never decoded into something else.

A keyfile holds one key a line, ``KEY_ID BASE64_KEY`` (16, 24 or 32 bytes: AES-128/192/256),
the write key first; blank lines and ``#`` comments are ignored::

    # written with k2; k1 kept to read what it wrote
    k2 9c1B0...=
    k1 W2p4k...=

Messages never show key material. Random nonces bound how much one key may write: rotate the
write key before it has encrypted about 2**32 payloads (NIST SP 800-38D).
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loom.errors import ConfigurationError, PayloadDecodeError
from loom.payload_codecs.base import KEY_ID_RULE, Encoded, PayloadCodec, require

NONCE_BYTES = 12
KEY_SIZES = (16, 24, 32)


class AesGcmCodec(PayloadCodec):
    """Encrypt every payload with AES-GCM under ``keys[write_key]`` (default: the first key);
    read with any key of ``keys`` (key id -> 16, 24 or 32 bytes, or their base64)."""

    names = ("aesgcm",)

    def __init__(self, keys: Mapping[str, bytes | str], *, write_key: str | None = None) -> None:
        aead = require("cryptography.hazmat.primitives.ciphers.aead", "AES-GCM encryption")
        self._invalid_tag: type[Exception] = require(
            "cryptography.exceptions", "AES-GCM encryption"
        ).InvalidTag
        if not isinstance(keys, Mapping) or not keys:
            raise ConfigurationError("AesGcmCodec needs at least one key: {key_id: key_bytes}")
        self._ciphers: dict[str, Any] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not KEY_ID_RULE.fullmatch(key_id):
                raise ConfigurationError(
                    f"key id {str(key_id)[:80]!r}: use 1 to 64 letters, digits, '_', '.' or '-'"
                )
            self._ciphers[key_id] = aead.AESGCM(_key_bytes(key_id, key))
        self.write_key = next(iter(keys)) if write_key is None else write_key
        if self.write_key not in self._ciphers:
            raise ConfigurationError(
                f"write_key {self.write_key!r} is not one of the keys ({', '.join(self._ciphers)})"
            )

    @classmethod
    def from_keyfile(cls, path: str | os.PathLike[str]) -> AesGcmCodec:
        """The codec of a keyfile (see the module's documentation): its first key writes."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read keyfile {str(path)!r}: {exc}") from None
        keys: dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), start=1):
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            if len(words) != 2:
                raise ConfigurationError(
                    f"keyfile {str(path)!r}, line {number}: expected 'KEY_ID BASE64_KEY'"
                )
            if words[0] in keys:
                raise ConfigurationError(
                    f"keyfile {str(path)!r}, line {number}: key id {words[0]!r} appears twice"
                )
            keys[words[0]] = words[1]
        if not keys:
            raise ConfigurationError(f"keyfile {str(path)!r} holds no key")
        try:
            return cls(keys)
        except ConfigurationError as exc:
            raise ConfigurationError(f"keyfile {str(path)!r}: {exc}") from None

    @staticmethod
    def generate_key(size: int = 32) -> str:
        """A new random key (``size`` bytes: 16, 24 or 32), base64: a keyfile line's second
        word."""
        if size not in KEY_SIZES:
            raise ConfigurationError(f"an AES key is 16, 24 or 32 bytes, not {size}")
        return base64.b64encode(os.urandom(size)).decode()

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def describe(self) -> str:
        return f"AES-GCM (writes with key {self.write_key!r}, reads {', '.join(self._ciphers)})"

    def encode(self, data: bytes) -> Encoded:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.write_key].encrypt(nonce, data, _aad(self.write_key))
        return Encoded(nonce + sealed, "aesgcm", self.write_key)

    def decode(self, encoded: Encoded) -> bytes:
        key = encoded.key
        cipher = self._ciphers.get(key) if key is not None else None
        if cipher is None:
            held = ", ".join(repr(k) for k in self._ciphers)
            raise PayloadDecodeError(
                f"it is encrypted with key {key!r}, which this process does not hold (it holds "
                f"{held}); add that key to the keyfile to read it (old keys stay for reading)",
                codec="aesgcm",
                key=key,
            )
        assert key is not None
        data = encoded.data
        try:
            if len(data) < NONCE_BYTES + 16:
                raise self._invalid_tag()
            plain: bytes = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], _aad(key))
        except self._invalid_tag:
            raise PayloadDecodeError(
                f"it fails authentication with key {key!r}: the key is not the one it was "
                "written with, or the stored data was altered",
                codec="aesgcm",
                key=key,
            ) from None
        return plain


def _aad(key_id: str) -> bytes:
    """Authenticated with every payload: the key id, so an envelope cannot name another key."""
    return b"loom-aesgcm:" + key_id.encode()


def _key_bytes(key_id: str, key: bytes | str) -> bytes:
    if isinstance(key, str):
        try:
            key = base64.b64decode(key.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"key {key_id!r} is not valid base64") from None
    if not isinstance(key, bytes) or len(key) not in KEY_SIZES:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise ConfigurationError(
            f"key {key_id!r} must be 16, 24 or 32 bytes (AES-128/192/256), got {size}; "
            "make one with loom.AesGcmCodec.generate_key()"
        )
    return key
