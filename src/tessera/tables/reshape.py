"""Widen a stored column's bounds or categories on the shares alone (``tessera table alter``).

A custodian cannot read its shares, but Shamir sharing is linear: a sum of shares is a
share of the sum, and 0 is a valid share of 0.  Widening a column therefore re-encodes
the stored chunks locally, on every custodian, whenever each new part is a linear
combination of the old parts:

- ``valid``, ``val`` and ``sq`` hold absolute values: unchanged;
- a categorical's new categories come after the old ones: the one-hot gains zero
  columns;
- a one-part thermometer (``th[:, k-1] = [v - min >= k]``) gives every ``[v - min' >= x]``
  as one of its columns, ``valid`` or 0, so any new thermometer, one-part or base-16
  digits (``[digit >= k]`` is a sum of differences of such columns), follows from it;
- base-16 digit thermometers with the same minimum gain leading zero digits.

Moving the minimum of a digit-encoded column would need the MPC (digits of ``v - min``
change with carries); it is refused with the fix.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError
from tessera.tables.encode import DIGIT_BASE, PRIME, digits_of, parts_of
from tessera.tables.schema import Column, Schema, format_units

__all__ = ["check_widening", "reshape_column", "reshape_parts"]

U64Array = npt.NDArray[np.uint64]
_P = np.uint64(PRIME)


def check_widening(old: Schema, new: Schema) -> list[str]:
    """The names of the columns ``new`` widens; InputError naming the fix otherwise."""
    if [c.name for c in old.columns] != [c.name for c in new.columns]:
        raise InputError(
            "tessera table alter widens bounds and adds categories; it keeps the columns, "
            "their names and order (remove the table and import it again to change them)"
        )
    changed = []
    for a, b in zip(old.columns, new.columns, strict=True):
        _check_column(a, b)
        if a != b:
            changed.append(a.name)
    return changed


def _check_column(a: Column, b: Column) -> None:
    if (a.kind, a.scale) != (b.kind, b.scale):
        raise InputError(
            f"column {a.name}: alter keeps its type and scale (remove the table and import "
            "it again to change them)"
        )
    if a.nullable and not b.nullable:
        raise InputError(f"column {a.name}: alter cannot make it NOT NULL (keep nullable: true)")
    if a.numeric and (b.min > a.min or b.max < a.max):
        raise InputError(
            f"column {a.name}: alter only widens bounds: give a min of at most "
            f"{format_units(a, a.min)} and a max of at least {format_units(a, a.max)}"
        )
    if a.kind == "categorical" and b.categories[: len(a.categories)] != a.categories:
        raise InputError(
            f"column {a.name}: new categories go after the existing ones, in the same order"
        )
    if a.numeric and digits_of(a) and (b.min != a.min):
        raise InputError(
            f"column {a.name}: its stored digit encoding cannot move its minimum without the "
            "data: widen only its maximum, or remove the table (tessera table rm) and import "
            "the hospitals' CSVs again with the new schema"
        )


def _zeros(rows: int, cols: int) -> U64Array:
    return np.zeros((rows, cols), dtype=np.uint64)


def _add(a: U64Array, b: U64Array) -> U64Array:
    out: U64Array = (a + b) % _P
    return out


def _sub(a: U64Array, b: U64Array) -> U64Array:
    out: U64Array = (a + (_P - b) % _P) % _P
    return out


def _unary_ge(old: Column, parts: dict[str, U64Array], shift: int) -> Callable[[int], U64Array]:
    """``x -> share of [v - new_min >= x]`` from a one-part thermometer (new_min = min - shift)."""
    valid = parts["valid"].astype(np.uint64)
    th = parts.get("th")
    rows = valid.shape[0]

    def ge(x: int) -> U64Array:
        y = x - shift
        if y <= 0:
            return valid
        if y > old.width or th is None:
            return np.zeros(rows, dtype=np.uint64)
        column: U64Array = th[:, y - 1].astype(np.uint64)
        return column

    return ge


def _thermometers(new: Column, ge: Callable[[int], U64Array], top: int) -> dict[str, U64Array]:
    """The new column's thermometer parts from ``ge`` (offsets lie in ``[0, top]``)."""
    d = digits_of(new)
    if d == 0:
        if new.width == 0:
            return {}
        return {"th": np.stack([ge(k) for k in range(1, new.width + 1)], axis=1)}
    out: dict[str, U64Array] = {}
    for j in range(d):
        e = d - 1 - j
        low, high = DIGIT_BASE**e, DIGIT_BASE ** (e + 1)
        cols = []
        for k in range(1, DIGIT_BASE):
            acc = np.zeros_like(ge(0))
            for m in range(top // high + 1):  # [digit_e >= k] = sum over the higher digits
                acc = _add(acc, _sub(ge(m * high + k * low), ge((m + 1) * high)))
            cols.append(acc)
        out[f"th{j}"] = np.stack(cols, axis=1)
    return out


def reshape_column(old: Column, new: Column, parts: dict[str, U64Array]) -> dict[str, U64Array]:
    """One column's shares (part suffix -> array) re-encoded for its widened declaration."""
    _check_column(old, new)
    out = dict(parts)
    if old.kind == "categorical":
        oh = parts["oh"]
        extra = len(new.categories) - len(old.categories)
        out["oh"] = np.concatenate([oh, _zeros(oh.shape[0], extra)], axis=1) if extra else oh
    elif old.numeric:
        for name in [p for p in out if p.startswith("th")]:
            del out[name]
        old_digits = digits_of(old)
        if old_digits == 0:
            shift = old.min - new.min
            out.update(_thermometers(new, _unary_ge(old, parts, shift), old.width + shift))
        else:
            lead = digits_of(new) - old_digits
            rows = parts["valid"].shape[0]
            for j in range(lead):
                out[f"th{j}"] = _zeros(rows, DIGIT_BASE - 1)
            for j in range(old_digits):
                out[f"th{j + lead}"] = parts[f"th{j}"]
    expected = set(parts_of(new))
    if set(out) != expected:
        raise InputError(f"column {old.name}: the stored chunk lacks parts of its encoding")
    return out


def reshape_parts(old: Schema, new: Schema, parts: dict[str, U64Array]) -> dict[str, U64Array]:
    """A chunk's shares (``COL.PART`` -> array) re-encoded from schema ``old`` to ``new``."""
    out: dict[str, U64Array] = {}
    for a, b in zip(old.columns, new.columns, strict=True):
        mine = {k.split(".", 1)[1]: v for k, v in parts.items() if k.split(".", 1)[0] == a.name}
        if a.kind == "pseudonym":
            continue
        done = mine if a == b else reshape_column(a, b, mine)
        out.update({f"{b.name}.{k}": v for k, v in done.items()})
    return out
