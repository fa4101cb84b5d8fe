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
    "group_keys",
    "histograms_from_codes",
    "sensitive_histograms",
]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]

_MAX_KEY = 1 << 62
# Count with bincount when the key space is at most this many times the row count.
_DENSE_LIMIT = 4


def encode_column(series: pl.Series, *, ordered: bool = True) -> tuple[IntArray, int]:
    """Dense codes 0..c-1 and c; missing values get their own code.

    With ``ordered`` the codes follow the column's sort order (missing first); without,
    any order (enough for grouping, and cheaper for text).  Hash-based: no sort of the
    rows, only of the few distinct values.
    """
    nulls = series.null_count()
    dtype = series.dtype
    if dtype == pl.Boolean:
        series = series.cast(pl.Int8)
        dtype = series.dtype
    if dtype.is_temporal():
        series = series.to_physical()
        dtype = series.dtype
    mask = series.is_null().to_numpy() if nulls else None
    if dtype == pl.String:
        codes, card = _encode_text(series, mask, ordered)
    elif dtype.is_integer() and nulls < series.len():
        values = series.to_numpy()
        if mask is not None:
            values = np.where(mask, values[~mask][0], values)
        values = values.astype(np.int64, copy=False)
        lo, hi = int(values.min()), int(values.max())
        if hi - lo <= 4 * values.size + 1024:
            offset = values - lo
            present = np.bincount(offset) > 0
            codes = (np.cumsum(present) - 1)[offset]
            card = int(present.sum())
        else:
            uniq, inverse = np.unique(values, return_inverse=True)
            codes, card = inverse.reshape(-1).astype(np.int64), int(uniq.size)
    elif dtype.is_numeric():
        uniq = series.unique().drop_nulls().sort().to_numpy()
        card = uniq.size
        values = series.fill_null(uniq[0] if card else 0).to_numpy()
        codes = np.searchsorted(uniq, values).astype(np.int64)
    else:
        ranks = series.rank("dense")
        codes = ranks.fill_null(1).to_numpy().astype(np.int64) - 1
        card = int(codes.max()) + 1 if codes.size and nulls < series.len() else 0
    if mask is not None:
        codes = codes + 1
        codes[mask] = 0
        card += 1
    return codes, int(card)


def _encode_text(
    series: pl.Series, mask: npt.NDArray[np.bool_] | None, ordered: bool
) -> tuple[IntArray, int]:
    """Text to codes (missing rows get an arbitrary code, fixed up by the caller).

    A Categorical cast is a hash lookup (an Enum cast is ~10x slower); its physical
    codes are renumbered densely, in the sorted order of their labels when ``ordered``.
    """
    n = series.len()
    phys = series.cast(pl.Categorical).to_physical()
    raw = (phys if mask is None else phys.fill_null(0)).to_numpy().astype(np.int64, copy=False)
    top = int(raw.max()) + 1 if n else 0
    if top > 8 * n + 1024:  # a sparse global dictionary: fall back to an Enum cast
        cats = series.unique().drop_nulls().sort()
        enum = series.cast(pl.Enum(cats.to_list())).to_physical()
        return enum.fill_null(0).to_numpy().astype(np.int64), cats.len()
    valid = raw if mask is None else raw[~mask]
    present = np.flatnonzero(np.bincount(valid, minlength=top))
    rank = np.zeros(top, dtype=np.int64)
    if ordered and present.size > 1:
        rows = np.arange(n, dtype=np.int64)
        valid_rows = rows if mask is None else rows[~mask]
        first = np.full(top, -1, dtype=np.int64)
        first[valid[::-1]] = valid_rows[::-1]
        labels = series.gather(first[present])
        present = present[labels.arg_sort().to_numpy()]
    rank[present] = np.arange(present.size, dtype=np.int64)
    return rank[raw], int(present.size)


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


def group_keys(key: IntArray, card: int) -> tuple[IntArray, IntArray, IntArray]:
    """(class of every row, class sizes, first row of every class); classes in key order.

    Small key spaces are counted with ``bincount`` (no sort); large ones use ``unique``.
    """
    n = key.size
    if card <= _DENSE_LIMIT * max(n, 1):
        counts = np.bincount(key, minlength=card)
        present = counts > 0
        remap = np.cumsum(present) - 1
        class_of_row = remap[key]
        sizes = counts[present]
        first = np.empty(sizes.size, dtype=np.int64)
        # fancy assignment keeps the last write: walk rows backwards to keep the first
        first[class_of_row[::-1]] = np.arange(n - 1, -1, -1, dtype=np.int64)
        return class_of_row.astype(np.int64, copy=False), sizes.astype(np.int64), first
    _, first_u, inverse, sizes_u = np.unique(
        key, return_index=True, return_inverse=True, return_counts=True
    )
    return (
        inverse.astype(np.int64, copy=False).reshape(-1),
        sizes_u.astype(np.int64, copy=False),
        first_u.astype(np.int64, copy=False),
    )


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
    pair = class_of_row * width + codes
    span = (int(class_of_row.max()) + 1) * width if class_of_row.size else 0
    if span <= _DENSE_LIMIT * max(pair.size, 1):
        dense = np.bincount(pair, minlength=span)
        uniq = np.flatnonzero(dense)
        counts = dense[uniq]
    else:
        uniq, counts = np.unique(pair, return_counts=True)
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
    key, card = combine_codes([encode_column(df.get_column(c), ordered=False) for c in qi], n)
    class_of_row, sizes, first = group_keys(key, card)
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
