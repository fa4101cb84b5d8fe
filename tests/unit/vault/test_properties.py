from __future__ import annotations

import io
import tempfile
import uuid
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.errors import InsufficientSharesError
from tessera.vault import Store, Vault, verify

from .kit import OWNER


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(3, 6),
    data=st.data(),
    payload=st.binary(min_size=0, max_size=5000),
    scheme=st.sampled_from(["shamir", "ssms"]),
)
def test_any_k_stores_restore_and_fewer_refuse(
    n: int, data: st.DataObject, payload: bytes, scheme: str
) -> None:
    k = data.draw(st.integers(2, n))
    root = f"memory://prop-{uuid.uuid4().hex}"
    stores = [Store(i, f"{root}/s{i}") for i in range(1, n + 1)]
    vault = Vault(stores, k=k, verifier=OWNER.verify_key, signer=OWNER)
    vault.put(io.BytesIO(payload), len(payload), "f", scheme=scheme)
    path = vault.lookup("f").data_path()
    lost = data.draw(st.sets(st.integers(1, n), max_size=n))
    for sid in lost:
        stores[sid - 1].delete(path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        if n - len(lost) >= k:
            got = vault.get("f", out)
            assert out.read_bytes() == payload
            assert set(got.missing) == lost
            expected = "healthy" if not lost else "degraded"
            assert verify(vault).status == expected
        else:
            with pytest.raises(InsufficientSharesError):
                vault.get("f", out)
            assert not out.exists()
            assert verify(vault).status == "lost"
