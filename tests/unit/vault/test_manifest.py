from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera import keys
from tessera.errors import InsufficientSharesError, IntegrityError, InvalidShareError
from tessera.vault.catalogue import combine_manifest, share_manifest
from tessera.vault.manifest import Manifest, decode, encode

from .kit import OWNER

M = Manifest(
    name="patient-17/mri.dcm",
    size=123_456,
    created="2026-01-01T00:00:00+00:00",
    created_ns=1,
    object_id="00" * 16,
    generation=0,
    scheme="shamir",
    k=3,
    n=5,
    entry_id="11" * 16,
    key_id=OWNER.key_id,
)


def test_roundtrip_and_paths() -> None:
    assert decode(encode(M, OWNER), OWNER.verify_key) == M
    assert M.data_path() == f"data/{'00' * 16}.0"
    assert M.catalog_path() == f"catalog/{'11' * 16}"


def test_other_key_is_refused() -> None:
    with pytest.raises(IntegrityError, match="signature"):
        decode(encode(M, keys.generate()), OWNER.verify_key)


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_any_flipped_byte_is_refused(data: st.DataObject) -> None:
    blob = bytearray(encode(M, OWNER))
    position = data.draw(st.integers(0, len(blob) - 1))
    blob[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises((IntegrityError, InvalidShareError)):
        decode(bytes(blob), OWNER.verify_key)


@pytest.mark.parametrize("blob", [b"", b"TSMF", b"TSMF\x02\x00\x00\x00\x00", b"XXXX\x01abcd"])
def test_garbage_is_invalid(blob: bytes) -> None:
    with pytest.raises(InvalidShareError):
        decode(blob, OWNER.verify_key)


def test_catalogue_sharing_hides_the_name() -> None:
    blob = encode(M, OWNER)
    shares = share_manifest(blob, k=3, n=5, entry_id=M.entry_id)
    assert all(b"patient-17" not in s for s in shares)
    assert len({len(s) for s in shares}) == 1
    assert combine_manifest(shares[2:], OWNER.verify_key) == M
    with pytest.raises(InsufficientSharesError):
        combine_manifest(shares[:2], OWNER.verify_key)
