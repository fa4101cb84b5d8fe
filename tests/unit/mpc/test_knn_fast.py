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


def test_mulmod61_equals_python_ints() -> None:
    rng = np.random.default_rng(5)
    a = rng.integers(0, P, 5000, dtype=np.uint64)
    b = rng.integers(0, P, 5000, dtype=np.uint64)
    a[:3] = [P - 1, P - 1, 0]
    b[:3] = [P - 1, 1, P - 1]
    expected = (a.astype(object) * b.astype(object)) % P
    assert (knn_fast.mulmod61(a, b).astype(object) == expected).all()
    assert (knn_fast.mul_mod(a, b, P) == expected).all()
    small = knn_fast.mul_mod(np.array([3, 100]), np.array([5, 2]), 101)
    assert small.tolist() == [15, 99]


def test_install_resharing_on_a_copy_of_thresha() -> None:
    """Bulk split + recombine agree with MPyC's own on its GF(2^61 - 1) arrays."""
    from mpyc import finfields, thresha

    module = types.SimpleNamespace(
        np_random_split=thresha.np_random_split,
        np_recombine=thresha.np_recombine,
        _recombination_vector=thresha._recombination_vector,
    )
    original = knn_fast.install(module)  # type: ignore[arg-type]
    assert original is thresha.np_random_split
    field = finfields.GF(P)
    secret = field.array(np.array([0, 7, P - 1], dtype=object))
    shares = module.np_random_split(field, secret, 1, 3)
    assert shares.dtype == np.uint64 and shares.shape == (3, 3)
    points = [(i + 1, shares[i]) for i in (0, 2)]
    assert module.np_recombine(field, points).value.tolist() == [0, 7, P - 1]
    assert thresha.np_recombine(field, points).value.tolist() == [0, 7, P - 1]
    other = finfields.GF(2**64 - 59)  # falls back to MPyC's own
    big = module.np_random_split(other, other.array(np.array([1], dtype=object)), 1, 3)
    assert big.dtype == object
