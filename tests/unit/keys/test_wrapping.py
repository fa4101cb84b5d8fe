from __future__ import annotations

import pytest

from tessera import keys
from tessera.errors import IntegrityError

ALICE = keys.WrapPrivateKey.generate()


def test_wrap_unwrap_roundtrip() -> None:
    blob = keys.wrap(ALICE.public_key, b"data key" * 4, context=b"vault")
    assert keys.unwrap(ALICE, blob, context=b"vault") == b"data key" * 4


def test_wrong_key_context_or_tamper_fails() -> None:
    blob = keys.wrap(ALICE.public_key, b"secret", context=b"vault")
    with pytest.raises(IntegrityError):
        keys.unwrap(keys.WrapPrivateKey.generate(), blob, context=b"vault")
    with pytest.raises(IntegrityError):
        keys.unwrap(ALICE, blob, context=b"other")
    for position in (5, 5 + 1088, len(blob) - 1):
        bad = bytearray(blob)
        bad[position] ^= 1
        with pytest.raises(IntegrityError):
            keys.unwrap(ALICE, bytes(bad), context=b"vault")
    with pytest.raises(IntegrityError):
        keys.unwrap(ALICE, b"short")


def test_key_serialisation() -> None:
    again = keys.WrapPrivateKey.from_bytes(ALICE.to_bytes())
    assert again.public_key.to_bytes() == ALICE.public_key.to_bytes()
    pub = keys.WrapPublicKey.from_bytes(ALICE.public_key.to_bytes())
    assert keys.unwrap(again, keys.wrap(pub, b"x")) == b"x"
    with pytest.raises(ValueError):
        keys.WrapPublicKey.from_bytes(b"1")
    with pytest.raises(ValueError):
        keys.WrapPrivateKey.from_bytes(b"1")


def test_public_api_is_exported() -> None:
    for name in keys.__all__:
        assert hasattr(keys, name)
