"""The codecs themselves, without a database: compression chosen by size, AES-GCM keys and
keyfiles, the chain and its envelopes, codecs of one's own that misbehave, and the one-line
specs of ``--codec``/``$LOOM_CODEC``."""

from __future__ import annotations

import base64
import os
import sys
import zlib
from pathlib import Path

import orjson
import pytest

import loom
from loom.payload_codecs import (
    AesGcmCodec,
    CodecChain,
    CompressionCodec,
    Encoded,
    PayloadCodec,
    codec_from_spec,
)

KEY = AesGcmCodec.generate_key()
TEXT = orjson.dumps({"items": [{"sku": f"item-{i}", "qty": i} for i in range(200)]})


def round_trip(chain: CodecChain, data: bytes) -> tuple[dict[str, str] | None, bytes]:
    envelope = chain.encode(data)
    return envelope, data if envelope is None else chain.decode(envelope)


# -- compression ---------------------------------------------------------------------------------


def test_compression_leaves_small_and_incompressible_payloads_plain() -> None:
    chain = CodecChain(CompressionCodec())
    assert chain.encode(b'{"a": 1}') is None  # below min_size (512 bytes)
    assert chain.encode(os.urandom(4096)) is None  # would not get smaller


@pytest.mark.parametrize("algorithm", ["zstd", "zlib"])
def test_compression_shrinks_large_payloads_and_reads_both_algorithms(algorithm: str) -> None:
    writer = CodecChain(CompressionCodec(algorithm=algorithm))
    envelope, back = round_trip(writer, TEXT)
    assert envelope is not None and envelope["_loom_codec"] == algorithm
    assert len(base64.b64decode(envelope["data"])) < len(TEXT) / 3
    assert back == TEXT
    other = "zlib" if algorithm == "zstd" else "zstd"
    assert CodecChain(CompressionCodec(algorithm=other)).decode(envelope) == TEXT


def test_auto_compression_is_zstd_when_installed() -> None:
    assert CompressionCodec().algorithm == "zstd"


@pytest.mark.parametrize("algorithm", ["zstd", "zlib"])
def test_a_payload_that_decompresses_beyond_max_size_is_refused(algorithm: str) -> None:
    bomb = CodecChain(CompressionCodec(algorithm=algorithm)).encode(b"0" * 1_000_000)
    assert bomb is not None
    small = CodecChain(CompressionCodec(algorithm=algorithm, max_size=1000))
    with pytest.raises(loom.PayloadDecodeError, match="more than 1000 bytes"):
        small.decode(bomb)


def test_damaged_compressed_data_is_a_decode_error() -> None:
    damaged = {"_loom_codec": "zlib", "data": base64.b64encode(b"not zlib at all").decode()}
    with pytest.raises(loom.PayloadDecodeError, match="zlib data is damaged"):
        CodecChain(CompressionCodec()).decode(damaged)
    truncated = zlib.compress(TEXT)[:50]
    cut = {"_loom_codec": "zlib", "data": base64.b64encode(truncated).decode()}
    with pytest.raises(loom.PayloadDecodeError, match="truncated"):
        CodecChain(CompressionCodec()).decode(cut)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"algorithm": "lz4"}, "unknown compression 'lz4'"),
        ({"min_size": -1}, "min_size must be a number of bytes"),
        ({"algorithm": "zlib", "level": 12}, "zlib level must be 0 to 9"),
        ({"algorithm": "zstd", "level": 99}, "zstd level must be -7 to 22"),
    ],
)
def test_compression_options_are_checked(options: dict[str, object], message: str) -> None:
    with pytest.raises(loom.ConfigurationError, match=message):
        CompressionCodec(**options)  # type: ignore[arg-type]


# -- AES-GCM -------------------------------------------------------------------------------------


def test_encryption_names_its_key_and_every_key_held_reads() -> None:
    old, new = AesGcmCodec.generate_key(), AesGcmCodec.generate_key(16)
    written = CodecChain(AesGcmCodec({"old": old})).encode(TEXT)
    assert written is not None and written["key"] == "old"
    assert TEXT not in base64.b64decode(written["data"])
    rotated = CodecChain(AesGcmCodec({"new": new, "old": old}))
    assert rotated.decode(written) == TEXT
    again = rotated.encode(TEXT)
    assert again is not None and again["key"] == "new"
    assert CodecChain(AesGcmCodec({"new": new, "old": old}, write_key="old")).encode(TEXT)


def test_every_encryption_uses_a_fresh_nonce() -> None:
    chain = CodecChain(AesGcmCodec({"k": KEY}))
    first, second = chain.encode(b"same"), chain.encode(b"same")
    assert first is not None and second is not None and first["data"] != second["data"]


def test_the_key_id_is_authenticated_with_the_data() -> None:
    both = CodecChain(AesGcmCodec({"a": KEY, "b": KEY}))  # one key under two ids
    written = both.encode(TEXT)
    assert written is not None
    with pytest.raises(loom.PayloadDecodeError, match="fails authentication with key 'b'"):
        both.decode({**written, "key": "b"})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({}, "at least one key"),
        ({"k": b"short"}, "must be 16, 24 or 32 bytes"),
        ({"k": "not base64!"}, "not valid base64"),
        ({"bad id": KEY}, "key id 'bad id'"),
    ],
)
def test_bad_keys_are_refused_without_showing_key_material(
    keys: dict[str, str | bytes], message: str
) -> None:
    with pytest.raises(loom.ConfigurationError, match=message) as caught:
        AesGcmCodec(keys)
    for key in keys.values():
        assert str(key) not in str(caught.value) or len(str(key)) < 12


def test_a_write_key_must_be_held() -> None:
    with pytest.raises(loom.ConfigurationError, match="write_key 'k2' is not one of the keys"):
        AesGcmCodec({"k1": KEY}, write_key="k2")


def test_a_keyfile_lists_keys_the_first_writing(tmp_path: Path) -> None:
    new, old = AesGcmCodec.generate_key(), AesGcmCodec.generate_key()
    path = tmp_path / "keys"
    path.write_text(f"# rotated\n\nk2 {new}\nk1 {old}  # kept for reading\n")
    codec = AesGcmCodec.from_keyfile(path)
    assert codec.write_key == "k2" and codec.key_ids == ("k2", "k1")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "holds no key"),
        ("# nothing\n", "holds no key"),
        (f"k1 {KEY} extra\n", "line 1: expected 'KEY_ID BASE64_KEY'"),
        (f"k1 {KEY}\nk1 {KEY}\n", "line 2: key id 'k1' appears twice"),
        ("k1 c2hvcnQ=\n", "key 'k1' must be 16, 24 or 32 bytes"),
    ],
    ids=["empty", "comments-only", "three-words", "twice", "short-key"],
)
def test_keyfile_mistakes_are_named_by_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "keys"
    path.write_text(text)
    with pytest.raises(loom.ConfigurationError, match=message) as caught:
        AesGcmCodec.from_keyfile(path)
    assert KEY not in str(caught.value)


def test_a_missing_keyfile_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(loom.ConfigurationError, match="cannot read keyfile"):
        AesGcmCodec.from_keyfile(tmp_path / "nope")


# -- the chain and its envelopes ----------------------------------------------------------------


def test_a_chain_compresses_then_encrypts_and_decodes_in_reverse() -> None:
    chain = CodecChain(CompressionCodec(), AesGcmCodec({"k1": KEY}))
    envelope, back = round_trip(chain, TEXT)
    assert envelope is not None and envelope["_loom_codec"] == "zstd+aesgcm"
    assert back == TEXT
    small, back = round_trip(chain, b'"tiny"')
    assert small is not None and small["_loom_codec"] == "aesgcm" and back == b'"tiny"'


@pytest.mark.parametrize(
    "envelope",
    [
        {"_loom_codec": "aesgcm", "key": "k1", "data": "***"},
        {"_loom_codec": "aesgcm", "key": "k1"},
        {"_loom_codec": 7, "data": ""},
        {"_loom_codec": "AES GCM", "data": ""},
        {"_loom_codec": "aesgcm", "key": "k 1", "data": ""},
        {"_loom_codec": "aesgcm", "key": "k1", "data": ""},  # too short for a nonce and tag
        {"_loom_codec": "rot13", "data": ""},
    ],
)
def test_malformed_or_unknown_envelopes_are_decode_errors(envelope: dict[str, object]) -> None:
    chain = CodecChain(CompressionCodec(), AesGcmCodec({"k1": KEY}))
    with pytest.raises(loom.PayloadDecodeError):
        chain.decode(envelope)


class Reverse(PayloadCodec):
    """A codec of one's own: reverses the bytes."""

    names = ("reverse",)

    def encode(self, data: bytes) -> Encoded | None:
        return Encoded(data[::-1], "reverse")

    def decode(self, encoded: Encoded) -> bytes:
        return encoded.data[::-1]


class Broken(PayloadCodec):
    names = ("broken",)

    def __init__(self, returns: object = None, fails: bool = False) -> None:
        self.returns, self.fails = returns, fails

    def encode(self, data: bytes) -> Encoded | None:
        if self.fails:
            raise RuntimeError("the key service is down")
        return self.returns  # type: ignore[return-value]

    def decode(self, encoded: Encoded) -> bytes:
        raise RuntimeError("the key service is down")


def test_a_codec_of_ones_own_joins_a_chain() -> None:
    chain = CodecChain(Reverse(), AesGcmCodec({"k1": KEY}))
    envelope, back = round_trip(chain, TEXT)
    assert envelope is not None and envelope["_loom_codec"] == "reverse+aesgcm" and back == TEXT


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        (Broken(fails=True), "failed to encode a payload: RuntimeError: the key service is down"),
        (Broken(returns=b"raw"), "encode\\(\\) must return None or Encoded"),
        (Broken(returns=Encoded(b"x", "other")), "encode\\(\\) must return None or Encoded"),
        (Broken(returns=Encoded(b"x", "broken", "bad key")), "encode\\(\\) must return None"),
    ],
)
def test_a_codec_that_misbehaves_while_encoding_stores_nothing(
    codec: PayloadCodec, message: str
) -> None:
    with pytest.raises(loom.PayloadError, match=message):
        CodecChain(codec).encode(TEXT)


def test_a_codec_that_raises_while_decoding_is_a_decode_error() -> None:
    envelope = {"_loom_codec": "broken", "data": ""}
    with pytest.raises(loom.PayloadDecodeError, match="codec 'broken' could not decode it"):
        CodecChain(Broken()).decode(envelope)


def test_chains_are_checked_when_made() -> None:
    with pytest.raises(loom.ConfigurationError, match="at least one codec"):
        CodecChain()
    with pytest.raises(loom.ConfigurationError, match="is not a codec"):
        CodecChain("aesgcm")  # type: ignore[arg-type]
    with pytest.raises(loom.ConfigurationError, match="two codecs of the chain are named"):
        CodecChain(CompressionCodec(), CompressionCodec())
    two_keys = CodecChain(AesGcmCodec({"a": KEY}), Broken(Encoded(b"x", "broken", "b")))
    with pytest.raises(loom.PayloadError, match="only one codec of a chain may use keys"):
        two_keys.encode(TEXT)


def test_database_refuses_what_is_not_a_codec() -> None:
    with pytest.raises(loom.ConfigurationError, match="codec must be"):
        loom.Database("sqlite:///unused.db", codec=42)  # type: ignore[arg-type]


# -- specs ---------------------------------------------------------------------------------------


def test_specs_name_chains(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"k1 {KEY}\n")
    assert codec_from_spec(None) is None and codec_from_spec(" none ") is None
    assert codec_from_spec("") is None
    chain = codec_from_spec(f"compress:min_size=100,level=5+aesgcm:keyfile={keyfile}")
    assert chain is not None
    compress, encrypt = chain.codecs
    assert isinstance(compress, CompressionCodec) and compress.min_size == 100
    assert compress.level == 5 and compress.algorithm == "zstd"
    assert isinstance(encrypt, AesGcmCodec) and encrypt.key_ids == ("k1",)
    zlib_only = codec_from_spec("zlib:min_size=0")
    assert zlib_only is not None and zlib_only.codecs[0].algorithm == "zlib"  # type: ignore[attr-defined]
    assert zlib_only.codecs[0].min_size == 0  # type: ignore[attr-defined]


def test_a_spec_may_name_a_codec_object_of_ones_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "my_codecs.py").write_text(
        "import loom\n"
        f"CHAIN = loom.CodecChain(loom.AesGcmCodec({{'k1': {KEY!r}}}), errors=False)\n"
        "ONE = loom.CompressionCodec(algorithm='zlib')\n"
        "NOT_A_CODEC = 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    chain = codec_from_spec("my_codecs:CHAIN")
    assert chain is not None and chain.errors is False
    one = codec_from_spec("my_codecs:ONE+aesgcm:keyfile=" + str(_keyfile(tmp_path)))
    assert one is not None and [type(c) for c in one.codecs] == [CompressionCodec, AesGcmCodec]
    with pytest.raises(loom.ConfigurationError, match="a whole CodecChain; name it alone"):
        codec_from_spec("zlib+my_codecs:CHAIN")
    with pytest.raises(
        loom.ConfigurationError, match=r"is not a loom\.PayloadCodec .*\(it is a int\)"
    ):
        codec_from_spec("my_codecs:NOT_A_CODEC")
    with pytest.raises(loom.ConfigurationError, match="has no attribute 'MISSING'"):
        codec_from_spec("my_codecs:MISSING")
    with pytest.raises(loom.ConfigurationError, match="cannot import 'no_such_module'"):
        codec_from_spec("no_such_module:CODEC")
    sys.modules.pop("my_codecs", None)


def _keyfile(folder: Path) -> Path:
    path = folder / "keys"
    path.write_text(f"k1 {KEY}\n")
    return path


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("rot13", "unknown codec 'rot13'"),
        ("aesgcm", "give the keys as aesgcm:keyfile=PATH"),
        ("aesgcm:key=abc", "unknown option 'key=abc'"),
        ("zstd:min_size=big", "min_size must be a whole number"),
        ("compress:level", "unknown option 'level'"),
        ("aesgcm:keyfile=/no/such/file", "cannot read keyfile"),
    ],
)
def test_bad_specs_say_what_is_accepted(spec: str, message: str) -> None:
    with pytest.raises(loom.ConfigurationError, match=message):
        codec_from_spec(spec)


def test_the_database_takes_its_codec_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOM_CODEC", f"aesgcm:keyfile={_keyfile(tmp_path)}")
    db = loom.Database(f"sqlite:///{tmp_path / 'env.db'}")
    assert db.codec is not None and isinstance(db.codec.codecs[0], AesGcmCodec)
    assert loom.Database(f"sqlite:///{tmp_path / 'env.db'}", codec="none").codec is None
    monkeypatch.setenv("LOOM_CODEC", "rot13")
    with pytest.raises(loom.ConfigurationError, match="unknown codec 'rot13'"):
        loom.Database(f"sqlite:///{tmp_path / 'env.db'}")
