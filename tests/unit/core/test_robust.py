"""Berlekamp-Welch decoding (generic) and the vectorised GF(2^8) byte-row decoder."""

from __future__ import annotations

import doctest

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core import poly, robust
from tessera.core.fields import GF256, Field, PrimeField
from tessera.core.robust import Decoded, UncorrectableError, decode, decode_bytes, find_bad_rows
from tessera.errors import InsufficientSharesError, RecoveryError

P61 = PrimeField(2**61 - 1)


def test_doctests() -> None:
    assert doctest.testmod(robust).failed == 0


@st.composite
def corrupted_codeword(draw: st.DrawFn, extra_errors: int = 0):  # type: ignore[no-untyped-def]
    """(field, true coeffs, points, set of corrupted x) with e + extra_errors errors."""
    choices: list[tuple[Field, int]] = [(GF256, 256), (P61, 2**61 - 1)]
    field, q = draw(st.sampled_from(choices))
    k = draw(st.integers(1, 5))
    m = draw(st.integers(k + 2 * extra_errors, k + 8))
    e = (m - k) // 2
    nerr = draw(st.integers(0, e)) if extra_errors == 0 else e + extra_errors
    coeffs = draw(st.lists(st.integers(0, q - 1), min_size=k, max_size=k))
    xs = draw(st.lists(st.integers(1, 255), min_size=m, max_size=m, unique=True))
    bad_idx = draw(st.lists(st.integers(0, m - 1), min_size=nerr, max_size=nerr, unique=True))
    points = []
    for i, x in enumerate(xs):
        y = poly.evaluate(field, coeffs, x)
        if i in bad_idx:
            y = field.add(y, draw(st.integers(1, q - 1)))
        points.append((x, y))
    return field, coeffs, points, {xs[i] for i in bad_idx}


@settings(max_examples=120, deadline=None)
@given(corrupted_codeword())
def test_corrects_and_names_up_to_e_errors(case) -> None:  # type: ignore[no-untyped-def]
    field, coeffs, points, bad = case
    k = len(coeffs)
    result = decode(field, points, k)
    assert result == Decoded(coeffs, sorted(bad))


@settings(max_examples=120, deadline=None)
@given(corrupted_codeword(extra_errors=1))
def test_one_error_too_many_never_returns_the_truth_silently(case) -> None:  # type: ignore[no-untyped-def]
    """e+1 errors: raise, or a *different* codeword within distance e (undetectable)."""
    field, coeffs, points, _ = case
    k = len(coeffs)
    m = len(points)
    e = (m - k) // 2
    try:
        result = decode(field, points, k)
    except UncorrectableError:
        return
    assert result.coeffs != coeffs
    assert len(result.bad_xs) <= e
    agree = [x for x, y in points if poly.evaluate(field, result.coeffs, x) == y]
    assert len(agree) == m - len(result.bad_xs)


def test_detects_but_cannot_name_with_one_spare() -> None:
    F = PrimeField(101)
    points = [(x, (3 + 4 * x) % 101) for x in (1, 2, 3)]
    assert decode(F, points, 2) == Decoded([3, 4], [])
    points[1] = (2, 0)
    with pytest.raises(UncorrectableError, match="too few to name"):
        decode(F, points, 2)


def test_three_wrong_of_seven_with_k3_raises() -> None:
    F = PrimeField(2**61 - 1)
    coeffs = [11, 22, 33]
    points = [(x, poly.evaluate(F, coeffs, x)) for x in range(1, 8)]
    # e = 2; corrupt 3 values so that they lie on another low-degree line? Here random.
    for i in (0, 3, 5):
        points[i] = (points[i][0], points[i][1] + 1000 + i)
    with pytest.raises(UncorrectableError):
        decode(F, points, 3)


def test_decode_negative_cases() -> None:
    with pytest.raises(InsufficientSharesError):
        decode(GF256, [(1, 2)], 2)
    with pytest.raises(ValueError, match="distinct"):
        decode(GF256, [(1, 2), (1, 3), (2, 4)], 2)
    with pytest.raises(ValueError):
        decode(GF256, [(1, 2)], 0)
    assert issubclass(UncorrectableError, RecoveryError)


def test_decode_reduces_values_mod_p() -> None:
    F = PrimeField(97)
    points = [(1, 5 + 97), (2, 5), (3, 5 - 97)]
    assert decode(F, points, 1) == Decoded([5], [])


# ---- byte rows ------------------------------------------------------------------------


def share_bytes(secret: bytes, xs: list[int], k: int, rng: np.random.Generator) -> np.ndarray:
    """Reference (slow, scalar) Shamir over GF(2^8): one polynomial per byte."""
    rows = np.zeros((len(xs), len(secret)), dtype=np.uint8)
    for col, s in enumerate(secret):
        coeffs = [s, *rng.integers(0, 256, size=k - 1).tolist()]
        for j, x in enumerate(xs):
            rows[j, col] = poly.evaluate(GF256, coeffs, x)
    return rows


@st.composite
def byte_case(draw: st.DrawFn):  # type: ignore[no-untyped-def]
    k = draw(st.integers(1, 5))
    m = draw(st.integers(k, k + 7))
    length = draw(st.integers(1, 80))
    xs = draw(st.lists(st.integers(1, 255), min_size=m, max_size=m, unique=True))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    secret = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
    rows = share_bytes(secret, xs, k, rng)
    e = (m - k) // 2
    mode = draw(st.sampled_from(["whole", "scattered", "single"]))
    nbad = draw(st.integers(0, e))
    bad = sorted(draw(st.lists(st.integers(0, m - 1), min_size=nbad, max_size=nbad, unique=True)))
    named: set[int] = set()
    for r in bad:
        if mode == "whole":
            delta = rng.integers(1, 256, size=length, dtype=np.uint8)
        elif mode == "scattered":
            delta = rng.integers(0, 256, size=length, dtype=np.uint8)
            delta[rng.integers(0, length)] = rng.integers(1, 256)
        else:
            delta = np.zeros(length, dtype=np.uint8)
            delta[rng.integers(0, length)] = rng.integers(1, 256)
        rows[r] ^= delta
        named.add(r)
    return xs, rows, k, secret, sorted(named)


@settings(max_examples=100, deadline=None)
@given(byte_case())
def test_decode_bytes_corrects_and_names(case) -> None:  # type: ignore[no-untyped-def]
    xs, rows, k, secret, bad = case
    m = len(xs)
    got_secret, got_bad = decode_bytes(xs, rows, k)
    assert got_secret == secret
    expected_bad = bad if m > k else []
    assert got_bad == expected_bad
    assert find_bad_rows(xs, rows, k) == expected_bad


def test_different_rows_bad_in_different_columns() -> None:
    """Every row is wrong somewhere, yet each column has <= e errors: still decodes."""
    rng = np.random.default_rng(7)
    xs = list(range(1, 8))  # m = 7
    k = 3  # e = 2
    secret = bytes(range(64))
    rows = share_bytes(secret, xs, k, rng)
    for col in range(64):
        for r in ((col % 7), ((col + 3) % 7)):
            rows[r, col] ^= 0x5A
    got_secret, got_bad = decode_bytes(xs, rows, k)
    assert got_secret == secret
    assert got_bad == list(range(7))


def test_too_many_bad_in_a_column_raises() -> None:
    rng = np.random.default_rng(8)
    xs = [1, 2, 3, 4, 5]
    rows = share_bytes(bytes(64), xs, 2, rng)  # m = 5, k = 2, e = 1
    rows[0, 10] ^= 1
    rows[1, 10] ^= 2
    with pytest.raises(UncorrectableError):
        find_bad_rows(xs, rows, 2)
    with pytest.raises(UncorrectableError):
        decode_bytes(xs, rows, 2)


def test_detect_only_when_one_spare_row() -> None:
    rng = np.random.default_rng(9)
    xs = [3, 9, 200]
    rows = share_bytes(b"secret key material", xs, 2, rng)
    assert find_bad_rows(xs, rows, 2) == []
    rows[2, 0] ^= 0xFF
    with pytest.raises(UncorrectableError, match="too few to name"):
        find_bad_rows(xs, rows, 2)


def test_header_sized_key_with_corrupted_fragments() -> None:
    """The lead's use: 64-byte key, 10 fragments of 4-of-10, 3 headers corrupted."""
    rng = np.random.default_rng(10)
    key = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    xs = list(range(1, 11))
    rows = share_bytes(key, xs, 4, rng)
    rows[0] = 0  # zeroed header
    rows[4, 5:9] ^= 0xFF  # a few flipped bytes
    rows[9] = rows[8]  # swapped in a copy of another fragment
    assert decode_bytes(xs, rows, 4) == (key, [0, 4, 9])


def test_byte_row_input_validation() -> None:
    rows = np.zeros((3, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        find_bad_rows([1, 2, 3], rows.astype(np.int16), 2)
    with pytest.raises(ValueError, match="one x per row"):
        find_bad_rows([1, 2], rows, 2)
    with pytest.raises(ValueError, match="distinct"):
        find_bad_rows([1, 2, 2], rows, 2)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        find_bad_rows([1, 2, 256], rows, 2)
    with pytest.raises(InsufficientSharesError):
        decode_bytes([1, 2, 3], rows, 4)


def test_zero_length_rows() -> None:
    rows = np.zeros((4, 0), dtype=np.uint8)
    assert decode_bytes([1, 2, 3, 4], rows, 2) == (b"", [])


def _field_is_generic(field: Field) -> None:  # keeps the Field protocol honest for mypy
    assert field.order >= 2


def test_fields_satisfy_protocol() -> None:
    _field_is_generic(GF256)
    _field_is_generic(P61)


def test_predict_in_small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bounded-memory path of the vectorised check gives the same answer."""
    monkeypatch.setattr(robust, "_PREDICT_CHUNK", 7)
    rng = np.random.default_rng(11)
    xs = list(range(1, 10))
    key = bytes(range(100))
    rows = share_bytes(key, xs, 3, rng)
    rows[[1, 5], 40:60] ^= 0x33
    rows[8, 99] ^= 1
    assert decode_bytes(xs, rows, 3) == (key, [1, 5, 8])


def test_resolution_of_large_m_scattered() -> None:
    """m = 60, k = 20: 20 rows each wrong in a few scattered bytes."""
    rng = np.random.default_rng(12)
    xs = list(range(1, 61))
    key = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
    rows = share_bytes(key, xs, 20, rng)
    bad = sorted(rng.choice(60, 20, replace=False).tolist())
    for r in bad:
        cols = rng.choice(64, 3, replace=False)
        rows[r, cols] ^= rng.integers(1, 256, 3, dtype=np.uint8)
    assert decode_bytes(xs, rows, 20) == (key, bad)


def test_points_must_be_field_elements() -> None:
    with pytest.raises(ValueError, match="field elements"):
        decode(GF256, [(1, 256), (2, 0), (3, 0)], 2)
    with pytest.raises(ValueError, match="field elements"):
        decode(GF256, [(-1, 1), (2, 0), (3, 0)], 2)
    with pytest.raises(ValueError, match="distinct"):
        decode(PrimeField(7), [(1, 1), (8, 1), (3, 1)], 2)  # 8 = 1 mod 7


def test_exported_members() -> None:
    for module in (robust, poly):
        assert sorted(module.__all__) == module.__all__
        for name in module.__all__:
            assert hasattr(module, name)
