"""Parameters from depth at 128-bit security (HE Standard), and the container format."""

from __future__ import annotations

import pytest

from tessera.errors import InputError, UnsupportedError
from tessera.he.container import digest, pack, unpack
from tessera.he.params import MAX_DEPTH, MAX_LOG_Q_128, Params, params_for_depth


@pytest.mark.parametrize(
    ("depth", "degree"),
    [(0, 8192), (1, 8192), (2, 8192), (3, 16384), (7, 16384), (8, 32768), (MAX_DEPTH, 32768)],
)
def test_smallest_ring_that_holds_the_chain_at_128_bits(depth: int, degree: int) -> None:
    p = params_for_depth(depth)
    assert p.poly_modulus_degree == degree
    assert p.coeff_mod_bits == (60, *([40] * depth), 60)
    assert p.total_bits <= MAX_LOG_Q_128[degree]
    smaller = degree // 2
    assert smaller < 8192 or p.total_bits > MAX_LOG_Q_128[smaller]  # the smallest that fits
    assert p.to_dict()["security_bits"] == 128 and Params.from_dict(p.to_dict()) == p


def test_too_deep_or_insecure_parameters_are_refused() -> None:
    with pytest.raises(UnsupportedError):
        params_for_depth(MAX_DEPTH + 1)
    with pytest.raises(InputError, match="128-bit bound"):
        Params(8192, (60, 60, 60, 60), 2)  # 240 bits > 218 at N = 8192
    doc = params_for_depth(1).to_dict()
    with pytest.raises(InputError):
        Params.from_dict({**doc, "poly_modulus_degree": 4096})
    with pytest.raises(InputError):
        Params.from_dict({**doc, "security_bits": 80})
    with pytest.raises(InputError):
        Params.from_dict({**doc, "depth": True})


def test_container_round_trip_and_refusals() -> None:
    raw = pack({"format": "x", "version": 1, "a": [1, 2]}, [b"one", b"", b"three"])
    box = unpack(raw, expect="x")
    assert box.header == {"format": "x", "version": 1, "a": [1, 2]}
    assert box.blobs == (b"one", b"", b"three")
    assert digest(raw).startswith("sha256:") and len(digest(raw)) == 71
    bad = {
        "truncated": raw[:-1],
        "trailing": raw + b"\0",
        "magic": b"XXXXX" + raw[5:],
        "version": raw[:5] + b"\x02" + raw[6:],
        "empty": b"",
        "header size": raw[:6] + b"\xff\xff\xff\xff" + raw[10:],
    }
    for name, data in bad.items():
        with pytest.raises(InputError):
            unpack(data, expect="x")
        assert name
    with pytest.raises(InputError, match="not a y"):
        unpack(raw, expect="y")
    with pytest.raises(InputError, match="too many"):
        unpack(raw, expect="x", max_blobs=2)
    with pytest.raises(InputError, match="too many or oversized"):
        unpack(raw, expect="x", max_blob=4)
