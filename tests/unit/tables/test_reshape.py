"""``tessera table alter`` re-encodes stored shares locally: widened bounds, new categories."""

from __future__ import annotations

import numpy as np
import pytest

from tessera.errors import InputError
from tessera.tables.encode import PRIME, encode_rows, share_parts
from tessera.tables.reshape import check_widening, reshape_parts
from tessera.tables.schema import Column, Schema

ROWS = [
    (2, ["20", "F", "100", "2020-01-01"]),
    (3, ["", "M", "", "2021-06-30"]),
    (4, ["35", "", "5000", ""]),
    (5, ["27", "F", "0", "2019-02-03"]),
]
HEADER = ["age", "sex", "load", "visit"]


def _schema(age: tuple[int, int], cats: tuple[str, ...], load: tuple[int, int]) -> Schema:
    return Schema(
        (
            Column("age", "integer", *age),
            Column("sex", "categorical", categories=cats),
            Column("load", "integer", *load),
            Column("visit", "date", 17000, 19000),
        )
    )


def _open(shares: list[dict[str, np.ndarray]], name: str) -> np.ndarray:
    """Reconstruct from parties 1 and 2 (t = 1): f(0) = 2 f(1) - f(2)."""
    a = shares[0][name].astype(object)
    b = shares[1][name].astype(object)
    return np.asarray((2 * a - b) % PRIME, dtype=np.int64)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # one-part thermometer: lower min, higher max, still one part
        (_schema((20, 35), ("F", "M"), (0, 5000)), _schema((3, 100), ("F", "M", "X"), (0, 5000))),
        # one-part thermometer becomes base-16 digits (width above 160)
        (_schema((20, 35), ("F", "M"), (0, 5000)), _schema((0, 400), ("F", "M"), (0, 5000))),
        # digit thermometer: same min, more digits
        (_schema((20, 35), ("F", "M"), (0, 5000)), _schema((20, 35), ("F", "M"), (0, 90000))),
        # visit unchanged, digits with the same number of digits
        (_schema((20, 35), ("F", "M"), (0, 5000)), _schema((20, 35), ("F", "M"), (0, 6000))),
    ],
)
def test_reshaped_shares_open_to_the_new_encoding(old: Schema, new: Schema) -> None:
    assert check_widening(old, new)
    shares = share_parts(encode_rows(old, HEADER, ROWS).parts, n=3, t=1)
    moved = [reshape_parts(old, new, s) for s in shares]
    want = encode_rows(new, HEADER, ROWS).parts
    assert set(moved[0]) == set(want)
    for name, values in want.items():
        assert np.array_equal(_open(moved, name), values), name


@pytest.mark.parametrize(
    ("new", "named"),
    [
        (_schema((21, 35), ("F", "M"), (0, 5000)), "only widens"),
        (_schema((20, 35), ("M", "F"), (0, 5000)), "after the existing ones"),
        (_schema((20, 35), ("F", "M"), (-1, 5000)), "widen only its maximum"),
    ],
)
def test_refusals_name_the_fix(new: Schema, named: str) -> None:
    old = _schema((20, 35), ("F", "M"), (0, 5000))
    with pytest.raises(InputError, match=named):
        check_widening(old, new)


def test_columns_must_stay() -> None:
    old = _schema((20, 35), ("F", "M"), (0, 5000))
    fewer = Schema(old.columns[:2])
    with pytest.raises(InputError, match="keeps the columns"):
        check_widening(old, fewer)
