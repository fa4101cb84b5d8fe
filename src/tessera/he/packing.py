"""Column-wise packing into slots, with hidden sentinel rows and zeroed padding.

Rows are packed column by column: ciphertext ``(column, chunk)`` holds that column's
values for one chunk of rows, one row per slot.  Before packing every value is scaled by
its column's public bounds into ``[0, 1]`` (``(x - lo) / (hi - lo)``), so every slot of
every input is a number the approximations downstream were built for.

A secret set of slot positions (the same in every chunk) holds **sentinel rows** instead
of data: values drawn uniformly from ``[0.05, 0.95]`` (0 or 1 for binary streams such as a
segmentation mask) with the operating system's randomness, known only to the client.
The server cannot tell them from real rows; the client predicts what every job must give
at those positions and checks it (:mod:`tessera.he.verify`).  Real rows fill the other
positions in order; slots after the last row are **padding**, set to zero (the lower
bound: a value inside the bounds, so it cannot push a polynomial off its range).

The number of sentinel positions is every position the rows leave free across the
chunks they need, but at least :data:`MIN_SENTINEL_FRACTION` of the slots (and
:data:`MIN_SENTINELS`) and at most half of them.
"""

from __future__ import annotations

import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError

__all__ = [
    "MIN_SENTINELS",
    "MIN_SENTINEL_FRACTION",
    "SENTINEL_HIGH",
    "SENTINEL_LOW",
    "Layout",
    "Stream",
    "pack",
    "plan_layout",
    "scale_columns",
    "sentinel_values",
]

MIN_SENTINEL_FRACTION = 1 / 64
MIN_SENTINELS = 16
SENTINEL_LOW, SENTINEL_HIGH = 0.05, 0.95


@dataclass(frozen=True)
class Stream:
    """One packed column: its name, public bounds (real units) and kind.

    ``binary`` streams (a segmentation mask) hold 0 or 1 and get 0/1 sentinels.
    """

    name: str
    lo: float
    hi: float
    binary: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi)) or self.lo > self.hi:
            raise InputError(f"column {self.name}: bounds must be finite with lo <= hi")

    @property
    def width(self) -> float:
        """hi - lo (0 for a constant column)."""
        return self.hi - self.lo

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (public: the server folds the bounds into model weights)."""
        return {"name": self.name, "lo": self.lo, "hi": self.hi, "binary": self.binary}

    @classmethod
    def from_dict(cls, doc: Any) -> Stream:
        """Inverse of :meth:`to_dict`; InputError when malformed."""
        try:
            lo, hi = doc["lo"], doc["hi"]
            if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lo, hi)):
                raise TypeError("bounds")
            name = doc["name"]
            if not isinstance(name, str) or not 0 < len(name) <= 128:
                raise TypeError("name")
            return cls(name, float(lo), float(hi), bool(doc.get("binary", False)))
        except (KeyError, TypeError):
            raise InputError("malformed column entry") from None


@dataclass(frozen=True)
class Layout:
    """Where rows and sentinels sit: ``chunks`` ciphertexts per column of ``slots`` slots."""

    slots: int
    rows: int
    chunks: int
    sentinels: tuple[int, ...]

    def __post_init__(self) -> None:
        z = len(self.sentinels)
        if not 0 < z < self.slots or len(set(self.sentinels)) != z:
            raise InputError("sentinel positions are malformed")
        if not all(0 <= p < self.slots for p in self.sentinels):
            raise InputError("sentinel positions are malformed")
        if self.rows < 1 or self.chunks != math.ceil(self.rows / (self.slots - z)):
            raise InputError("the layout's row and chunk counts disagree")

    @property
    def per_chunk(self) -> int:
        """Real rows one chunk holds."""
        return self.slots - len(self.sentinels)

    @property
    def padding(self) -> int:
        """Zeroed slots after the last row (in the last chunk)."""
        return self.chunks * self.per_chunk - self.rows

    def sentinel_index(self) -> npt.NDArray[np.int64]:
        """The sentinel positions, sorted."""
        return np.sort(np.asarray(self.sentinels, dtype=np.int64))

    def real_index(self) -> npt.NDArray[np.int64]:
        """The positions that hold rows (sorted): the complement of the sentinels."""
        mask = np.ones(self.slots, dtype=bool)
        mask[list(self.sentinels)] = False
        return np.flatnonzero(mask).astype(np.int64)

    def row_positions(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(chunk, slot) of every row, in row order."""
        rows = np.arange(self.rows)
        return rows // self.per_chunk, self.real_index()[rows % self.per_chunk]

    def padding_positions(self) -> npt.NDArray[np.int64]:
        """The slots of the last chunk that hold padding."""
        used = self.rows - (self.chunks - 1) * self.per_chunk
        return self.real_index()[used:]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (secret: sealed for the key's owner)."""
        return {
            "slots": self.slots,
            "rows": self.rows,
            "chunks": self.chunks,
            "sentinels": sorted(self.sentinels),
        }

    @classmethod
    def from_dict(cls, doc: Any) -> Layout:
        """Inverse of :meth:`to_dict`."""
        try:
            sentinels = doc["sentinels"]
            if not isinstance(sentinels, list) or not all(type(p) is int for p in sentinels):
                raise TypeError("sentinels")
            return cls(int(doc["slots"]), int(doc["rows"]), int(doc["chunks"]), tuple(sentinels))
        except (KeyError, TypeError, ValueError):
            raise InputError("malformed layout") from None


def plan_layout(rows: int, slots: int) -> Layout:
    """A layout for ``rows`` rows with fresh secret sentinel positions."""
    if rows < 1:
        raise InputError("nothing to encrypt: no rows")
    least = max(MIN_SENTINELS, math.ceil(slots * MIN_SENTINEL_FRACTION))
    chunks = math.ceil(rows / (slots - least))
    count = min(slots // 2, slots - math.ceil(rows / chunks))
    count = max(count, least)
    chunks = math.ceil(rows / (slots - count))
    positions = secrets.SystemRandom().sample(range(slots), count)
    return Layout(slots, rows, chunks, tuple(sorted(positions)))


def _uniform(count: int) -> npt.NDArray[np.float64]:
    """``count`` floats uniform in [0, 1) from the operating system's randomness."""
    raw = np.frombuffer(os.urandom(8 * count), dtype=np.uint64)
    return (raw >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def sentinel_values(streams: Sequence[Stream], layout: Layout) -> npt.NDArray[np.float64]:
    """Fresh sentinel rows: array ``[stream, chunk, sentinel]`` of scaled values."""
    shape = (len(streams), layout.chunks, len(layout.sentinels))
    values = SENTINEL_LOW + (SENTINEL_HIGH - SENTINEL_LOW) * _uniform(math.prod(shape))
    values = values.reshape(shape)
    for i, stream in enumerate(streams):
        if stream.binary:
            values[i] = (values[i] >= 0.5).astype(np.float64)
    return values


def scale_columns(
    values: npt.NDArray[np.float64], streams: Sequence[Stream]
) -> npt.NDArray[np.float64]:
    """``values`` (rows x streams, real units) scaled into [0, 1] by each stream's bounds.

    InputError naming the first column with a value outside its bounds.
    """
    if values.ndim != 2 or values.shape[1] != len(streams):
        raise ValueError("one column of values per stream")
    out = np.empty_like(values, dtype=np.float64)
    for j, stream in enumerate(streams):
        column = values[:, j]
        if not np.all(np.isfinite(column)):
            raise InputError(f"column {stream.name}: values must be finite numbers")
        outside = (column < stream.lo) | (column > stream.hi)
        if outside.any():
            row = int(np.flatnonzero(outside)[0]) + 1
            raise InputError(
                f"column {stream.name}, row {row}: outside the bounds "
                f"[{stream.lo:g}, {stream.hi:g}]"
            )
        out[:, j] = 0.0 if stream.width == 0 else (column - stream.lo) / stream.width
    return out


def pack(
    scaled: npt.NDArray[np.float64], layout: Layout, sentinels: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """The slot values: array ``[stream, chunk, slot]`` (rows, sentinels, zero padding)."""
    streams = scaled.shape[1]
    if scaled.shape[0] != layout.rows or sentinels.shape != (
        streams,
        layout.chunks,
        len(layout.sentinels),
    ):
        raise ValueError("values, sentinels and layout disagree")
    out = np.zeros((streams, layout.chunks, layout.slots), dtype=np.float64)
    chunk, slot = layout.row_positions()
    out[:, chunk, slot] = scaled.T
    out[:, :, layout.sentinel_index()] = sentinels
    return out
