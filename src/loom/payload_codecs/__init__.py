"""Payload codecs: what ``Database(codec=...)`` applies to every payload before it is stored.

- :mod:`~loom.payload_codecs.base`: the contract (:class:`PayloadCodec`), the chain of codecs
  and the envelope a stored payload becomes;
- :mod:`~loom.payload_codecs.compression`: zstd or zlib for large payloads;
- :mod:`~loom.payload_codecs.aesgcm`: AES-GCM encryption with key rotation;
- :mod:`~loom.payload_codecs.spec`: a chain named in one line (``--codec``, ``$LOOM_CODEC``).

Which parts of which record are payloads is the store's business (``loom.store.encoded``).
"""

from loom.payload_codecs.aesgcm import AesGcmCodec
from loom.payload_codecs.base import (
    ENVELOPE_MARK,
    PLACEHOLDER,
    CodecChain,
    Encoded,
    PayloadCodec,
    as_chain,
    is_envelope,
)
from loom.payload_codecs.compression import CompressionCodec
from loom.payload_codecs.spec import codec_from_env, codec_from_spec

__all__ = [
    "ENVELOPE_MARK",
    "PLACEHOLDER",
    "AesGcmCodec",
    "CodecChain",
    "CompressionCodec",
    "Encoded",
    "PayloadCodec",
    "as_chain",
    "codec_from_env",
    "codec_from_spec",
    "is_envelope",
]
