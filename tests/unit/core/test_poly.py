"""Polynomial helpers over GF(2^8) and GF(p), cross-checked against MPyC."""

from __future__ import annotations

import doctest

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mpyc import finfields, gfpx, thresha

from tessera.core import poly
from tessera.core.fields import GF256, Field, PrimeField

P61 = PrimeField(2**61 - 1)
FIELDS: list[tuple[str, Field, int]] = [("gf256", GF256, 256), ("p61", P61, 2**61 - 1)]


def field_and_order() -> st.SearchStrategy[tuple[Field, int]]:
    return st.sampled_from([(f, q) for _, f, q in FIELDS])


@st.composite
def poly_and_points(draw: st.DrawFn) -> tuple[Field, list[int], list[int]]:
    field, q = draw(field_and_order())
    k = draw(st.integers(1, 8))
    coeffs = draw(st.lists(st.integers(0, q - 1), min_size=k, max_size=k))
    xs = draw(st.lists(st.integers(1, min(q, 2**16) - 1), min_size=k, max_size=12, unique=True))
    return field, coeffs, xs


def test_doctests() -> None:
    assert doctest.testmod(poly).failed == 0


def test_evaluate_known_answers() -> None:
    F = PrimeField(97)
    assert poly.evaluate(F, [5, 3, 2], 4) == 49
    assert poly.evaluate(F, [], 4) == 0
    # GF(2^8): f(x) = 0x57 + x, at 0x83: XOR
    assert poly.evaluate(GF256, [0x57, 1], 0x83) == 0x57 ^ 0x83
    # f(x) = 0x57 x at x = 0x83 is the FIPS-197 product 0xC1
    assert poly.evaluate(GF256, [0, 0x57], 0x83) == 0xC1


@settings(max_examples=60, deadline=None)
@given(poly_and_points())
def test_interpolate_recovers_polynomial(case: tuple[Field, list[int], list[int]]) -> None:
    field, coeffs, xs = case
    points = [(x, poly.evaluate(field, coeffs, x)) for x in xs]
    assert poly.interpolate(field, points) == poly.trim(coeffs)
    for at in (0, xs[0], 7):
        w = poly.lagrange_coefficients(field, xs, at=at)
        acc = 0
        for wi, (_, y) in zip(w, points, strict=True):
            acc = field.add(acc, field.mul(wi, y))
        assert acc == poly.evaluate(field, coeffs, at)


@settings(max_examples=60, deadline=None)
@given(
    field_and_order().flatmap(
        lambda fq: st.tuples(
            st.just(fq[0]),
            st.lists(st.integers(0, fq[1] - 1), max_size=8),
            st.lists(st.integers(0, fq[1] - 1), min_size=1, max_size=6).filter(
                lambda b: b[-1] != 0
            ),
        )
    )
)
def test_divmod_identity(case: tuple[Field, list[int], list[int]]) -> None:
    field, a, b = case
    q, r = poly.divmod_poly(field, a, b)
    assert poly.add(field, poly.mul(field, q, b), r) == poly.trim(a)
    assert poly.degree(r) < poly.degree(b)
    assert poly.sub(field, poly.add(field, a, b), b) == poly.trim(a)
    assert poly.scale(field, a, 1) == poly.trim(a)


def test_negative_cases() -> None:
    with pytest.raises(ValueError, match="distinct"):
        poly.lagrange_coefficients(GF256, [1, 2, 1])
    with pytest.raises(ValueError, match="distinct"):
        poly.interpolate(P61, [(3, 1), (3, 2)])
    with pytest.raises(ValueError):
        poly.lagrange_coefficients(GF256, [])
    with pytest.raises(ZeroDivisionError):
        poly.divmod_poly(GF256, [1, 2], [0, 0])
    assert poly.degree([]) == -1
    assert poly.degree([0, 0]) == -1
    assert poly.mul(P61, [], [1, 2]) == []


MPYC_GF256 = finfields.GF(gfpx.GFpX(2)(283))  # AES polynomial 0x11B


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 255), min_size=1, max_size=6),
    st.lists(st.integers(1, 255), min_size=6, max_size=10, unique=True),
    st.integers(0, 255),
)
def test_gf256_lagrange_matches_mpyc(coeffs: list[int], xs: list[int], at: int) -> None:
    xs = xs[: len(coeffs) + 1]
    ys = [poly.evaluate(GF256, coeffs, x) for x in xs]
    points = [(x, [MPYC_GF256(y)]) for x, y in zip(xs, ys, strict=True)]
    theirs = int(thresha.recombine(MPYC_GF256, points, at)[0])
    w = poly.lagrange_coefficients(GF256, xs, at=at)
    ours = 0
    for wi, y in zip(w, ys, strict=True):
        ours ^= GF256.mul(wi, y)
    assert ours == theirs == poly.evaluate(GF256, coeffs, at)


def test_gf256_shares_from_mpyc_split_interpolate() -> None:
    secrets_ = [0, 1, 0x53, 0xFF]
    shares = thresha.random_split(MPYC_GF256, [MPYC_GF256(s) for s in secrets_], 2, 5)
    for h, s in enumerate(secrets_):
        # MPyC gives party i the value at the field element i+1 (int -> bit pattern)
        points = [(i + 1, int(shares[i][h])) for i in (1, 3, 4)]
        assert poly.evaluate(GF256, poly.interpolate(GF256, points), 0) == s


def test_lagrange_matrix_rows() -> None:
    F = PrimeField(101)
    xs = [1, 2, 5]
    rows = poly.lagrange_matrix(F, xs, [0, 2, 7, 103])
    assert rows[1] == [0, 1, 0]  # at a share's own x: the unit vector
    assert rows[3] == rows[1]  # 103 = 2 mod 101
    assert rows[0] == poly.lagrange_coefficients(F, xs, at=0)
    coeffs = [4, 0, 9]
    ys = [poly.evaluate(F, coeffs, x) for x in xs]
    got = sum(w * y for w, y in zip(rows[2], ys, strict=True)) % 101
    assert got == poly.evaluate(F, coeffs, 7)
    with pytest.raises(ValueError, match="distinct"):
        poly.lagrange_matrix(F, [1, 102], [0])  # equal mod p
