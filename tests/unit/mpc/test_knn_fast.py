"""Exact fast paths of the knn party program (limb matrix products, bulk resharing)."""

from __future__ import annotations

import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.prime import reconstruct_array
from tessera.core.rng import Drbg
from tessera.mpc import knn_fast

P = 2**61 - 1


@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    n=st.integers(1, 6),
    k=st.integers(1, 40),
    m=st.integers(1, 4),
    p=st.sampled_from([P, 2**64 - 59, 101]),
)
def test_matmul_mod_equals_python_ints(seed: int, n: int, k: int, m: int, p: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, p, (n, k), dtype=np.uint64, endpoint=False)
    b = rng.integers(0, p, (k, m), dtype=np.uint64, endpoint=False)
    a[0, 0] = p - 1
    b[0, 0] = p - 1
    expected = (a.astype(object) @ b.astype(object)) % p
    assert (knn_fast.matmul_mod(a, b, p) == expected).all()


def test_matmul_mod_refuses_what_it_cannot_do_exactly() -> None:
    with pytest.raises(ValueError, match="2\\^64"):
        knn_fast.matmul_mod(np.ones((1, 1)), np.ones((1, 1)), 2**127 - 1)


@pytest.mark.parametrize(("t", "m"), [(1, 3), (2, 5), (0, 2)])
def test_split_uint64_is_shamir_in_mpyc_convention(t: int, m: int) -> None:
    secret = np.array([0, 1, 5, P - 1], dtype=np.uint64)
    shares = knn_fast.split_uint64(secret, t, m, P, Drbg.from_seed(bytes(32)))
    assert shares.shape == (m, 4)
    back = reconstruct_array({i: shares[i].astype(object) for i in range(m)}, t=t, p=P)
    assert back.tolist() == secret.astype(object).tolist()


def test_random_coefficients_are_below_p() -> None:
    c = knn_fast.random_coefficients(Drbg.from_seed(bytes(32)), 10_000, 2**13 - 1)
    assert int(c.max()) < 2**13 - 1 and len(set(c.tolist())) > 4000


def test_install_replaces_and_falls_back() -> None:
    calls = []

    def original(field: object, s: object, t: int, m: int) -> str:
        calls.append(m)
        return "mpyc"

    module = types.SimpleNamespace(np_random_split=original)
    assert knn_fast.install(module) is original  # type: ignore[arg-type]

    class Field:
        modulus = P

        class array:  # noqa: N801 - mimics MPyC's field.array
            def __init__(self, value: object) -> None:
                self.value = value

    out = module.np_random_split(Field, np.array([3, 4], dtype=object), 1, 3)
    back = reconstruct_array({i: out[i] for i in range(3)}, t=1, p=P)
    assert back.tolist() == [3, 4] and calls == []

    class Big(Field):
        modulus = 2**64 - 189

    assert module.np_random_split(Big, np.array([1], dtype=object), 1, 3) == "mpyc"
