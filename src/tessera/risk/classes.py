"""Equivalence classes: encode quasi-identifiers once, group once, keep sparse histograms.

Every metric in :mod:`tessera.risk` is computed from a :class:`ClassTable`:

* each quasi-identifier column is turned into dense integer codes (polars ``rank``),
* the codes are combined into one int64 key per row (mixed radix, re-densified whenever
  the product of cardinalities would overflow), and one ``np.unique`` gives the class
  of every row and the class sizes,
* the sensitive attribute is coded in its natural order (numbers numerically, text
  lexically), and one more ``np.unique`` over ``class * m + value`` gives the per-class
  histograms as a sparse (class, value, count) table sorted by class then value.

Missing values are a value of their own (they sort first), as in ARX.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from tessera.errors import InputError

__all__ = [
    "ClassTable",
    "SensitiveHistograms",
    "build_classes",
    "combine_codes",
    "encode_column",
    "histograms_from_codes",
    "sensitive_histograms",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_MAX_KEY = 1 << 62


def encode_column(series: pl.Series) -> tuple[IntArray, int]:
    """Dense codes 0..c-1 in the column's sort order (missing values first) and c.

    Hash-based: the distinct values are found and sorted (cheap, there are few), then
    every row is looked up (an Enum cast for text, ``searchsorted`` for numbers).
    """
    nulls = series.null_count()
    dtype = series.dtype
    if dtype == pl.Boolean:
        series = series.cast(pl.Int8)
        dtype = series.dtype
    if dtype.is_temporal():
        series, dtype = series.to_physical(), series.to_physical().dtype
    if dtype == pl.String:
        cats = series.unique().drop_nulls().sort()
        phys = series.cast(pl.Enum(cats.to_list())).to_physical()
        codes = phys.fill_null(0).to_numpy().astype(np.int64)
        card = cats.len()
    elif dtype.is_numeric():
        uniq = series.unique().drop_nulls().sort().to_numpy()
        card = uniq.size
        values = series.fill_null(uniq[0] if card else 0).to_numpy()
        codes = np.searchsorted(uniq, values).astype(np.int64)
    else:
        ranks = series.rank("dense")
        codes = ranks.fill_null(1).to_numpy().astype(np.int64) - 1
        card = int(codes.max()) + 1 if codes.size and nulls < series.len() else 0
    if nulls:
        mask = series.is_null().to_numpy()
        codes = codes + 1
        codes[mask] = 0
        card += 1
    return codes, int(card)


def _densify(key: IntArray) -> tuple[IntArray, int]:
    uniq, inverse = np.unique(key, return_inverse=True)
    return inverse.astype(np.int64, copy=False).reshape(-1), int(uniq.size)


def combine_codes(codes: Sequence[tuple[IntArray, int]], n: int) -> tuple[IntArray, int]:
    """One int64 key per row from several (codes, cardinality) pairs, exactly."""
    key = np.zeros(n, dtype=np.int64)
    card = 1
    for col, c in codes:
        c = max(c, 1)
        if card * c >= _MAX_KEY:
            key, card = _densify(key)
        key = key * c + col
        card *= c
    return key, card


@dataclass(frozen=True)
class SensitiveHistograms:
    """Per-class counts of a sensitive attribute, sparse and sorted by (class, value)."""

    labels: list[str]
    ordered: bool
    cls: IntArray
    value: IntArray
    count: IntArray
    prior: FloatArray

    @property
    def m(self) -> int:
        """Number of distinct sensitive values in the whole table."""
        return len(self.labels)


@dataclass(frozen=True)
class ClassTable:
    """Equivalence classes of a table over its quasi-identifiers."""

    n: int
    class_of_row: IntArray
    sizes: IntArray
    first_row: IntArray
    sensitive: SensitiveHistograms | None

    @property
    def num_classes(self) -> int:
        """Number of equivalence classes."""
        return int(self.sizes.size)


def _labels(series: pl.Series) -> list[str]:
    uniq = series.unique().sort(nulls_last=False)
    return ["" if v is None else str(v) for v in uniq.to_list()]


def sensitive_histograms(
    class_of_row: IntArray, num_classes: int, series: pl.Series
) -> SensitiveHistograms:
    """Sparse per-class histograms of ``series`` for the given row-to-class map."""
    codes, m = encode_column(series)
    ordered = series.dtype.is_numeric() or series.dtype.is_temporal()
    return histograms_from_codes(class_of_row, codes, m, _labels(series), ordered)


def histograms_from_codes(
    class_of_row: IntArray, codes: IntArray, m: int, labels: list[str], ordered: bool
) -> SensitiveHistograms:
    """Sparse per-class histograms of pre-encoded sensitive values ``codes`` (0..m-1)."""
    width = max(m, 1)
    uniq, counts = np.unique(class_of_row * width + codes, return_counts=True)
    prior = np.bincount(codes, minlength=m).astype(np.float64) / max(codes.size, 1)
    return SensitiveHistograms(
        labels=labels,
        ordered=ordered,
        cls=(uniq // width).astype(np.int64, copy=False),
        value=(uniq % width).astype(np.int64, copy=False),
        count=counts.astype(np.int64, copy=False),
        prior=prior,
    )


def _check_columns(df: pl.DataFrame, names: Sequence[str], role: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise InputError(f"unknown {role} column(s): {', '.join(missing)}")


def build_classes(df: pl.DataFrame, qi: Sequence[str], sensitive: str | None = None) -> ClassTable:
    """Group ``df`` by the quasi-identifiers ``qi``; histogram ``sensitive`` per class."""
    if not qi:
        raise InputError("at least one quasi-identifier column is required")
    if len(set(qi)) != len(qi):
        raise InputError("quasi-identifier columns repeat")
    _check_columns(df, qi, "quasi-identifier")
    if sensitive is not None:
        _check_columns(df, [sensitive], "sensitive")
        if sensitive in qi:
            raise InputError(f"column {sensitive} cannot be both quasi-identifier and sensitive")
    n = df.height
    if n == 0:
        raise InputError("the table has no rows")
    key, _ = combine_codes([encode_column(df.get_column(c)) for c in qi], n)
    _, first, inverse, sizes = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True
    )
    class_of_row = inverse.astype(np.int64, copy=False).reshape(-1)
    hist = (
        sensitive_histograms(class_of_row, int(sizes.size), df.get_column(sensitive))
        if sensitive is not None
        else None
    )
    return ClassTable(
        n=n,
        class_of_row=class_of_row,
        sizes=sizes.astype(np.int64, copy=False),
        first_row=first.astype(np.int64, copy=False),
        sensitive=hist,
    )
