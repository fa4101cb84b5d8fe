"""ssms v2 sealing: GCM per plane gives the planes' inner hashes."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tessera.core.fragfmt import TagKeys
from tessera.core.sealing import PlaneSealer, gf128_mul


def test_gf128_mul_reproduces_the_gcm_spec_ghash() -> None:
    """GCM spec (McGrew-Viega) test case 2: GHASH(H, {}, C) = f38cbb1a..."""
    h = int("66e94bd4ef8a2c3b884cfa59ca342b2e", 16)
    c = int("0388dace60b6a392f328c2b971b2fe78", 16)
    lengths = 128  # len(A) = 0, len(C) = 128 bits
    x = gf128_mul(c, h)
    x = gf128_mul(x ^ lengths, h)
    assert x == int("f38cbb1ad69223dcc3457ae5b6b0f885", 16)
    assert gf128_mul(h, 1 << 127) == h  # the top bit is the field's 1


@pytest.mark.parametrize("plane", [64, 8, 1000, 43_696])
def test_sealed_tags_are_the_inner_hashes_and_open_inverts(plane: int) -> None:
    keys = TagKeys(os.urandom(64), 5)
    sealer = PlaneSealer(keys.inner_key)
    count = 24
    src = np.frombuffer(os.urandom(plane * count), dtype=np.uint8)
    dst = np.zeros(plane * count + 16, dtype=np.uint8)
    inner = sealer.seal(9, src, dst, count)
    ct = dst[: plane * count]
    assert not np.array_equal(ct, src)
    direct = [keys.inner(ct[q * plane : (q + 1) * plane].data) for q in range(count)]
    assert inner.tobytes() == b"".join(direct)
    back = np.zeros(plane * count + 15, dtype=np.uint8)
    sealer.open(9, ct, back, count)
    assert back[: plane * count].tobytes() == src.tobytes()
    # Another block number is another keystream.
    other = np.zeros_like(dst)
    sealer.seal(10, src, other, count)
    assert not np.array_equal(other[: plane * count], ct)


def test_seal_and_open_want_room() -> None:
    sealer = PlaneSealer(bytes(32))
    src = np.zeros(64, dtype=np.uint8)
    with pytest.raises(ValueError, match="room"):
        sealer.seal(0, src, np.zeros(64, dtype=np.uint8), 8)
    with pytest.raises(ValueError, match="room"):
        sealer.open(0, src, np.zeros(70, dtype=np.uint8), 8)
