from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera import keys
from tessera.errors import IntegrityError
from tessera.keys.signing import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, SigningKey, VerifyKey

SK = keys.generate()


def test_sign_verify_roundtrip() -> None:
    sig = SK.sign(b"manifest", context=b"vault")
    assert len(sig) == SIGNATURE_SIZE
    SK.verify_key.verify(b"manifest", sig, context=b"vault")


def test_wrong_message_context_or_key_fails() -> None:
    sig = SK.sign(b"manifest", context=b"vault")
    with pytest.raises(IntegrityError):
        SK.verify_key.verify(b"manifest!", sig, context=b"vault")
    with pytest.raises(IntegrityError):
        SK.verify_key.verify(b"manifest", sig, context=b"mpc-job")
    with pytest.raises(IntegrityError):
        keys.generate().verify_key.verify(b"manifest", sig, context=b"vault")
    with pytest.raises(IntegrityError):
        SK.verify_key.verify(b"manifest", sig[:-1], context=b"vault")


@settings(max_examples=25, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=SIGNATURE_SIZE - 1))
def test_any_flipped_signature_byte_fails(message: bytes, position: int) -> None:
    sig = bytearray(SK.sign(message))
    sig[position] ^= 0x01
    with pytest.raises(IntegrityError):
        SK.verify_key.verify(message, bytes(sig))


def test_seed_roundtrip_gives_same_key() -> None:
    again = SigningKey(SK.seed_bytes())
    assert again.verify_key == SK.verify_key
    assert again.key_id == SK.key_id and len(SK.key_id) == 16
    raw = SK.verify_key.to_bytes()
    assert len(raw) == PUBLIC_KEY_SIZE
    assert VerifyKey.from_bytes(raw) == SK.verify_key


def test_bad_sizes_are_value_errors() -> None:
    with pytest.raises(ValueError):
        SigningKey(b"short")
    with pytest.raises(ValueError):
        VerifyKey.from_bytes(b"short")
    with pytest.raises(ValueError):
        SK.sign(b"x", context=b"c" * 256)


def test_repr_hides_secret() -> None:
    assert SK.seed_bytes().hex() not in repr(SK)
