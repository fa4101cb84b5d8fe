"""GF(2^61 - 1) kernels: exact against Python integers, compiled and numpy alike."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core import m61
from tessera.core.prime import reconstruct_array
from tessera.core.rng import Drbg

P = m61.P


@pytest.fixture(params=["kernel", "numpy"])
def kernel(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test with the compiled kernel (when built) and with the numpy fallback."""
    saved = m61._kernel
    if request.param == "kernel" and saved is None:
        pytest.skip("the compiled kernel is not built")
    if request.param == "numpy":
        m61._kernel = None
    try:
        yield request.param
    finally:
        m61._kernel = saved


def _field(shape: tuple[int, ...], seed: int, edge: bool = False) -> np.ndarray:
    out = m61.random_below(int(np.prod(shape)), Drbg.from_seed(bytes([seed]) * 32))
    if edge:  # the extremes: p - 1 everywhere a product can overflow
        out[::3] = P - 1
        out[1::5] = 0
    return out.reshape(shape)


def _objects(a: np.ndarray) -> np.ndarray:
    return a.astype(object)


@pytest.mark.parametrize(("n", "t"), [(3, 1), (5, 2), (3, 0), (7, 3)])
def test_shares_reconstruct_from_any_t_plus_one(kernel: str, n: int, t: int) -> None:
    values = np.array([0, 1, -1, P, -P, 2**62, -(2**62), 2**63 - 1, -(2**63), 12345])
    shares = m61.share(values, n=n, t=t, rng=Drbg.from_seed(bytes(32)))
    assert shares.shape == (n, values.size) and shares.dtype == np.uint64
    assert (shares < P).all()
    want = np.mod(values.astype(object), P)
    for first in range(n - t):
        pick = range(first, first + t + 1)
        got = reconstruct_array({i: _objects(shares[i]) for i in pick}, t=t, p=P, check=False)
        assert (np.asarray(got, dtype=object) == want).all()


def test_kernel_and_numpy_give_the_same_shares_for_the_same_randomness() -> None:
    if m61._kernel is None:
        pytest.skip("the compiled kernel is not built")
    values = np.arange(-500, 500, dtype=np.int64).reshape(10, 100)
    fast = m61.share(values, n=5, t=2, rng=Drbg.from_seed(bytes(32)))
    saved, m61._kernel = m61._kernel, None
    try:
        slow = m61.share(values, n=5, t=2, rng=Drbg.from_seed(bytes(32)))
    finally:
        m61._kernel = saved
    assert np.array_equal(fast, slow)


def test_a_coefficient_drawn_equal_to_p_is_redrawn(kernel: str) -> None:
    class FirstAllOnes:  # the first draw masks to p itself everywhere
        def __init__(self) -> None:
            self.inner = Drbg.from_seed(bytes(32))
            self.first = True

        def random_bytes(self, n: int) -> bytes:
            if self.first:
                self.first = False
                return b"\xff" * n
            return self.inner.random_bytes(n)

    values = np.arange(50, dtype=np.int64)
    shares = m61.share(values, n=3, t=1, rng=FirstAllOnes())  # type: ignore[arg-type]
    assert (shares < P).all()
    got = reconstruct_array({0: _objects(shares[0]), 2: _objects(shares[2])}, t=1, p=P)
    assert [int(v) for v in got] == list(range(50))


def test_share_into_a_given_buffer(kernel: str) -> None:
    values = np.arange(12, dtype=np.int64).reshape(3, 4)
    out = np.empty((3, 3, 4), dtype=np.uint64)
    assert m61.share(values, n=3, t=1, out=out) is out
    with pytest.raises(ValueError, match="out must be"):
        m61.share(values, n=3, t=1, out=np.empty((3, 12), dtype=np.uint64))


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 60), st.integers(1, 70), st.integers(1, 5), st.booleans())
def test_products_are_exact(g: int, inner: int, k: int, edge: bool) -> None:
    a = _field((g, inner), 1, edge)
    b = _field((inner, k), 2, edge)
    bt = np.ascontiguousarray(b.T)
    want = (_objects(a) @ _objects(b)) % P if g else np.zeros((0, k), dtype=object)
    saved = m61._kernel
    for kern in [saved, None]:
        m61._kernel = kern
        try:
            assert (_objects(m61.matmul(a, b)) == want).all()
            assert (_objects(m61.matmul_nt(a, bt)) == want).all()
        finally:
            m61._kernel = saved


def test_long_sums_fold_without_overflow(kernel: str) -> None:
    inner = 5000  # many products of (p - 1)^2: 128-bit sums must be reduced in time
    a = np.full((2, inner), P - 1, dtype=np.uint64)
    b = np.full((inner, 3), P - 1, dtype=np.uint64)
    want = (_objects(a) @ _objects(b)) % P
    assert (_objects(m61.matmul(a, b)) == want).all()
    assert (_objects(m61.matmul_nt(a, np.ascontiguousarray(b.T))) == want).all()


def test_element_wise_and_linear_combinations(kernel: str) -> None:
    x = _field((999,), 3, edge=True)
    y = _field((999,), 4, edge=True)
    assert (_objects(m61.mul(x, y)) == (_objects(x) * _objects(y)) % P).all()
    acc = x.copy()
    m61.axpy(acc, y, -7)
    assert (_objects(acc) == (_objects(x) - 7 * _objects(y)) % P).all()
    combo = m61.lincomb([3, P - 1, 2**60], [x, y, x])
    want = (3 * _objects(x) + (P - 1) * _objects(y) + 2**60 * _objects(x)) % P
    assert (_objects(combo) == want).all()


def test_to_field_reduces_every_dtype() -> None:
    assert m61.to_field(np.array([-1, 0, P + 2])).tolist() == [P - 1, 0, 2]
    assert m61.to_field(np.array([2**64 - 1], dtype=np.uint64)).tolist() == [(2**64 - 1) % P]
    assert m61.to_field(np.array([2**70, -(2**70)], dtype=object)).tolist() == [
        2**70 % P,
        -(2**70) % P,
    ]


def test_shapes_that_do_not_fit_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        m61.matmul(np.zeros((2, 3), np.uint64), np.zeros((4, 1), np.uint64))
    with pytest.raises(ValueError, match="do not fit"):
        m61.matmul_nt(np.zeros((2, 3), np.uint64), np.zeros((4, 1), np.uint64))
    with pytest.raises(ValueError, match="need 0 <= t < n"):
        m61.share(np.zeros(3, np.int64), n=2, t=2)
