"""Codecs named in one line, for ``--codec`` and ``$LOOM_CODEC``.

A spec is codecs joined by ``+``, applied in that order, each ``NAME`` or ``NAME:OPTION=VALUE,...``:

- ``compress`` (zstd if installed, else zlib), ``zstd``, ``zlib``; options ``min_size=BYTES``,
  ``level=N``;
- ``aesgcm:keyfile=PATH``: AES-GCM with the keys of a keyfile (its first key writes);
- ``MODULE:ATTRIBUTE``: a ``PayloadCodec`` or ``CodecChain`` object of your own, imported
  (``myapp.crypto:CODEC``); it must be the whole spec when it is a chain;
- ``none`` (or nothing): no codec.

So ``compress+aesgcm:keyfile=/etc/loom/keys`` compresses large payloads, then encrypts all.
"""

from __future__ import annotations

import importlib
import os
import re

from loom.errors import ConfigurationError
from loom.payload_codecs.aesgcm import AesGcmCodec
from loom.payload_codecs.base import CodecChain, PayloadCodec
from loom.payload_codecs.compression import DEFAULT_MIN_SIZE, CompressionCodec

FORMS = (
    "'compress', 'zstd', 'zlib' (options min_size=BYTES, level=N), 'aesgcm:keyfile=PATH', "
    "'MODULE:ATTRIBUTE' (a codec object of your own), joined by '+'; or 'none'"
)
_OBJECT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def codec_from_env() -> CodecChain | None:
    """The codec ``$LOOM_CODEC`` names, or None when it is unset or empty."""
    return codec_from_spec(os.environ.get("LOOM_CODEC") or None)


def codec_from_spec(spec: str | None) -> CodecChain | None:
    """The chain ``spec`` names (see the module's documentation); None for no codec."""
    if spec is None or not spec.strip() or spec.strip().lower() == "none":
        return None
    parts = [p.strip() for p in spec.split("+")]
    codecs: list[PayloadCodec] = []
    for part in parts:
        found = _codec(part)
        if isinstance(found, CodecChain):
            if len(parts) > 1:
                raise ConfigurationError(
                    f"codec spec {spec!r}: {part!r} is a whole CodecChain; name it alone"
                )
            return found
        codecs.append(found)
    return CodecChain(*codecs)


def _codec(part: str) -> PayloadCodec | CodecChain:
    name, _, rest = part.partition(":")
    name = name.strip().lower()
    if name in ("compress", "zstd", "zlib"):
        options = _options(part, rest, {"min_size", "level"})
        min_size = _number(part, options, "min_size")
        return CompressionCodec(
            algorithm="auto" if name == "compress" else name,
            min_size=DEFAULT_MIN_SIZE if min_size is None else min_size,
            level=_number(part, options, "level"),
        )
    if name == "aesgcm":
        options = _options(part, rest, {"keyfile"})
        if "keyfile" not in options:
            raise ConfigurationError(f"codec {part!r}: give the keys as aesgcm:keyfile=PATH")
        return AesGcmCodec.from_keyfile(options["keyfile"])
    if _OBJECT.fullmatch(part.strip()):
        return _imported(part.strip())
    raise ConfigurationError(f"unknown codec {part!r}; use {FORMS}")


def _options(part: str, text: str, known: set[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in filter(None, (i.strip() for i in text.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in known:
            raise ConfigurationError(
                f"codec {part!r}: unknown option {item!r}; it takes {', '.join(sorted(known))}"
            )
        options[key] = value.strip()
    return options


def _number(part: str, options: dict[str, str], key: str) -> int | None:
    if key not in options:
        return None
    try:
        return int(options[key])
    except ValueError:
        raise ConfigurationError(
            f"codec {part!r}: {key} must be a whole number, got {options[key]!r}"
        ) from None


def _imported(target: str) -> PayloadCodec | CodecChain:
    module_name, attribute = target.split(":", 1)
    try:
        found: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"codec {target!r}: cannot import {module_name!r}: {exc}"
        ) from None
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise ConfigurationError(
                f"codec {target!r}: {module_name!r} has no attribute {attribute!r}"
            ) from None
    if isinstance(found, PayloadCodec | CodecChain):
        return found
    raise ConfigurationError(
        f"codec {target!r} is not a loom.PayloadCodec or loom.CodecChain (it is a "
        f"{type(found).__name__})"
    )
