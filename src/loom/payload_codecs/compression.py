"""Compression of large payloads: zstd when the ``zstandard`` package is installed, else zlib.

Small payloads stay as they are: below ``min_size`` bytes of JSON compression gains little and
the envelope costs more than it saves. A payload that would not get smaller is left as it is
too. Decompression is bounded (``max_size``), so a damaged or hostile stored value cannot
make a reader allocate without limit.
"""

from __future__ import annotations

import io
import zlib
from typing import Any

from loom.errors import ConfigurationError, PayloadDecodeError
from loom.payload_codecs.base import Encoded, PayloadCodec, require

DEFAULT_MIN_SIZE = 512
"""Payloads smaller than this many bytes (as JSON) are not compressed."""
DEFAULT_MAX_SIZE = 64 * 1024 * 1024
"""The largest payload compressed, and the most a stored one may decompress to."""


def zstd_available() -> bool:
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


class CompressionCodec(PayloadCodec):
    """Compress payloads of at least ``min_size`` bytes with ``algorithm``: ``"auto"`` (zstd
    if ``zstandard`` is installed, else zlib), ``"zstd"`` or ``"zlib"``. ``level`` is the
    algorithm's (default: zstd 3, zlib 6). Reads both, whichever it writes."""

    names = ("zlib", "zstd")

    def __init__(
        self,
        *,
        algorithm: str = "auto",
        min_size: int = DEFAULT_MIN_SIZE,
        level: int | None = None,
        max_size: int = DEFAULT_MAX_SIZE,
    ) -> None:
        if algorithm == "auto":
            algorithm = "zstd" if zstd_available() else "zlib"
        if algorithm not in self.names:
            raise ConfigurationError(
                f"unknown compression {algorithm!r}; use 'auto', 'zstd' or 'zlib'"
            )
        for option, value in (("min_size", min_size), ("max_size", max_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigurationError(f"{option} must be a number of bytes, got {value!r}")
        self.algorithm = algorithm
        self.min_size = min_size
        self.max_size = max_size
        self._zstd: Any = None
        if algorithm == "zstd":
            self._zstd = require("zstandard", "zstd compression")
            level = 3 if level is None else level
            if not isinstance(level, int) or not -7 <= level <= 22:
                raise ConfigurationError(f"zstd level must be -7 to 22, got {level!r}")
            self._compressor = self._zstd.ZstdCompressor(level=level)
        else:
            level = 6 if level is None else level
            if not isinstance(level, int) or not 0 <= level <= 9:
                raise ConfigurationError(f"zlib level must be 0 to 9, got {level!r}")
        self.level = level

    def describe(self) -> str:
        return f"{self.algorithm} compression"

    def encode(self, data: bytes) -> Encoded | None:
        if not self.min_size <= len(data) <= self.max_size:
            return None
        if self.algorithm == "zstd":
            packed = self._compressor.compress(data)
        else:
            packed = zlib.compress(data, self.level)
        if len(packed) >= len(data):
            return None
        return Encoded(packed, self.algorithm)

    def decode(self, encoded: Encoded) -> bytes:
        limit = self.max_size
        if encoded.codec == "zstd":
            zstd = self._zstd or require("zstandard", "reading a zstd-compressed payload")
            try:
                with zstd.ZstdDecompressor().stream_reader(io.BytesIO(encoded.data)) as reader:
                    parts: list[bytes] = []
                    size = 0
                    while size <= limit:
                        part = reader.read(limit + 1 - size)
                        if not part:
                            break
                        parts.append(part)
                        size += len(part)
                data = b"".join(parts)
            except zstd.ZstdError as exc:
                raise PayloadDecodeError(
                    f"its zstd data is damaged ({exc})", codec="zstd"
                ) from None
        else:
            inflate = zlib.decompressobj()
            try:
                data = inflate.decompress(encoded.data, limit + 1)
            except zlib.error as exc:
                raise PayloadDecodeError(
                    f"its zlib data is damaged ({exc})", codec="zlib"
                ) from None
            if len(data) <= limit and not inflate.eof:
                raise PayloadDecodeError("its zlib data is truncated", codec="zlib")
        if len(data) > limit:
            raise PayloadDecodeError(
                f"it decompresses to more than {limit} bytes (max_size)", codec=encoded.codec
            )
        return data
