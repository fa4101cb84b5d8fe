"""Column encodings that spare secure comparisons, and their secret sharing.

For each column the data owner computes, in the clear, the *parts* the custodians will
hold as Shamir shares (``COL.PART``; shape ``(rows,)`` or ``(rows, k)``):

- every column: ``valid`` (1 unless NULL);
- integer/decimal/date: ``val`` (units, 0 for NULL), ``sq`` (units squared: sums of
  squares give VARIANCE; integers and decimals only) and a *thermometer* of
  ``v - min``: when the range has at most :data:`UNARY_MAX` steps one part ``th`` with
  ``th[:, k-1] = [v - min >= k]`` (a range predicate is then a column lookup), otherwise
  base-16 digits ``th0, th1, ...`` (most significant first) with
  ``thj[:, k-1] = [digit_j >= k]`` (a range predicate costs one multiplication per
  digit);
- boolean: ``val``;
- categorical: ``oh`` one-hot over the declared categories (equality, IN and GROUP BY
  become sums and dot products).

Pseudonym columns stay in the clear (``keys``): they are keyed hashes used for joins.
"""

from __future__ import annotations

import csv
import gc
import hashlib
import hmac
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core import m61
from tessera.core.rng import RandomSource, default_rng
from tessera.errors import InputError
from tessera.tables.schema import Column, Schema, parse_value

__all__ = [
    "DIGIT_BASE",
    "FIELD_LIMIT",
    "PRIME",
    "UNARY_MAX",
    "Encoded",
    "Parsed",
    "column_info",
    "csv_reader",
    "digits_of",
    "encode_parsed",
    "encode_rows",
    "parse_rows",
    "parts_of",
    "pseudonymise",
    "pseudonymise_many",
    "read_csv",
    "share_parts",
]

PRIME = 2**61 - 1  # MPyC field of every shared table (secint up to 29-bit comparisons)
UNARY_MAX = 160
DIGIT_BASE = 16
IntArray = npt.NDArray[np.int64]


def digits_of(col: Column) -> int:
    """0 for a one-part thermometer, else the number of base-16 digits of the range."""
    if col.width <= UNARY_MAX:
        return 0
    d = 1
    while DIGIT_BASE**d <= col.width:
        d += 1
    return d


def parts_of(col: Column) -> dict[str, int]:
    """Part name -> number of sub-columns (1 means a vector)."""
    parts = {"valid": 1}
    if col.kind in ("integer", "decimal", "date"):
        parts["val"] = 1
        if col.kind != "date":
            parts["sq"] = 1
        d = digits_of(col)
        if d == 0:
            if col.width > 0:
                parts["th"] = col.width
        else:
            for j in range(d):
                parts[f"th{j}"] = DIGIT_BASE - 1
    elif col.kind == "boolean":
        parts["val"] = 1
    elif col.kind == "categorical":
        parts["oh"] = len(col.categories)
    else:
        return {}
    return parts


def column_info(col: Column) -> dict[str, Any]:
    """What the SQL compiler needs about a column (kind, bounds in units, parts)."""
    return {
        "name": col.name,
        "kind": col.kind,
        "min": col.min,
        "max": col.max,
        "scale": col.scale,
        "categories": list(col.categories),
        "nullable": col.nullable,
        "digits": digits_of(col),
        "parts": parts_of(col),
    }


@dataclass
class Encoded:
    """Encoded valid rows: ``parts`` (name -> int64 array), clear ``keys``, rejects."""

    rows: int
    parts: dict[str, IntArray]
    keys: dict[str, list[str]]
    errors: list[str] = field(default_factory=list)


#: The longest CSV field accepted (csv's own default).  Set on every reader because the
#: limit is process-wide and other libraries raise it (scipy's ARFF reader, for one).
FIELD_LIMIT = 131_072


def csv_reader(lines: Iterable[str]) -> Any:
    """A ``csv.reader`` over ``lines`` that refuses fields over :data:`FIELD_LIMIT`."""
    csv.field_size_limit(FIELD_LIMIT)
    return csv.reader(lines)


def read_csv(data: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a UTF-8 CSV; InputError if unreadable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the CSV is not UTF-8") from None
    reader = csv_reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise InputError("the CSV is empty") from None
    except csv.Error as exc:
        raise InputError(f"CSV line 1: {exc}") from None
    rows: list[tuple[int, list[str]]] = []
    try:
        for row in reader:
            if row:
                rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise InputError(f"CSV line {reader.line_num}: {exc}") from None
    return header, rows


def pseudonymise(value: str, linkage_key: bytes) -> str:
    """The keyed hash stored for a linkage value (HMAC-SHA-256, 128 bits, hex)."""
    return hmac.digest(linkage_key, value.strip().encode(), "sha256")[:16].hex()


def pseudonymise_many(values: Sequence[str], linkage_key: bytes) -> list[str]:
    """:func:`pseudonymise` of every value (HMAC's two keyed SHA-256 states computed
    once, then copied per value: a third of the time)."""
    key = linkage_key if len(linkage_key) <= 64 else hashlib.sha256(linkage_key).digest()
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
    out = []
    for value in values:
        h = inner.copy()
        h.update(value.strip().encode())
        o = outer.copy()
        o.update(h.digest())
        out.append(o.digest()[:16].hex())
    return out


def _thermometer(offsets: IntArray, valid: IntArray, steps: int) -> IntArray:
    """``th[:, k-1] = [offset >= k]`` for valid rows, (rows, steps) in Fortran order:
    each step's column contiguous, as the custodians store it."""
    ks = np.arange(1, steps + 1, dtype=np.int64)
    th = (ks[:, None] <= offsets[None, :]) & (valid[None, :] == 1)  # steps x rows
    out: IntArray = th.astype(np.int64).T
    return out


@dataclass
class Parsed:
    """Parsed CSV rows: per column, units (0 for NULL) and validity of the valid rows,
    the clear keys, and the bad rows (``line N: ...``), left out."""

    rows: int
    units: dict[str, IntArray]
    valid: dict[str, IntArray]
    keys: dict[str, list[str]]
    errors: list[str] = field(default_factory=list)


def _column_index(schema: Schema, header: Sequence[str]) -> dict[str, int]:
    lower = [h.lower() for h in header]
    index: dict[str, int] = {}
    for col in schema.columns:
        if col.name.lower() not in lower:
            raise InputError(f"the CSV has no column {col.name!r}")
        index[col.name] = lower.index(col.name.lower())
    extra = set(lower) - {c.name.lower() for c in schema.columns}
    if extra:
        raise InputError(f"the CSV has columns not in the schema: {', '.join(sorted(extra))}")
    return index


_NULL = -(2**62)  # a NULL cell's units in the parse cache (no value is this large)
_CACHE_LIMIT = 1 << 18  # distinct texts remembered per column (then forgotten)
_UNITS: dict[Column, dict[str, int]] = {}
_BAD: dict[Column, dict[str, str]] = {}


def _parse_column(col: Column, cells: Sequence[str]) -> tuple[IntArray, IntArray, dict[int, str]]:
    """Units and validity of every cell, and the message of each bad cell (by row).

    Each distinct text is parsed once (:func:`tessera.tables.schema.parse_value`, the
    same rules and messages as one cell at a time) and remembered for the next blocks
    of the import (up to :data:`_CACHE_LIMIT` texts per column): a column holds few
    distinct values next to its rows, so this is a dictionary lookup per cell.
    """
    units_of = _UNITS.setdefault(col, {})
    bad_of = _BAD.setdefault(col, {})
    distinct = set(cells)
    new = distinct.difference(units_of).difference(bad_of)
    if len(units_of) + len(new) > _CACHE_LIMIT:
        units_of.clear()
        bad_of.clear()
        new = distinct
    for cell in new:
        try:
            v = parse_value(col, cell)
        except ValueError as exc:
            bad_of[cell] = str(exc)
        else:
            units_of[cell] = _NULL if v is None else v
    n = len(cells)
    bad: dict[int, str] = {}
    if bad_of and not bad_of.keys().isdisjoint(distinct):
        bad = {i: bad_of[c] for i, c in enumerate(cells) if c in bad_of}
        units = np.fromiter((units_of.get(c, 0) for c in cells), dtype=np.int64, count=n)
    else:
        units = np.fromiter(map(units_of.__getitem__, cells), dtype=np.int64, count=n)
    ok = np.ones(n, dtype=bool)
    if bad:
        ok[list(bad)] = False
    valid = (ok & (units != _NULL)).astype(np.int64)
    units = np.where(valid == 1, units, 0)
    return units, valid, bad


def parse_rows(
    schema: Schema,
    header: Sequence[str],
    rows: Sequence[tuple[int, Sequence[str]]],
    *,
    linkage_key: bytes | None = None,
    hash_keys: bool = True,
) -> Parsed:
    """Check and parse CSV rows column by column; bad rows are listed in ``errors``
    (with line numbers, the first bad column of each) and left out.  ``hash_keys``
    False checks key columns without computing their keyed hashes (a first pass)."""
    was = gc.isenabled()
    gc.disable()  # many small objects, no cycles: a collection would walk every row
    try:
        return _parse_rows(schema, header, rows, linkage_key, hash_keys)
    finally:
        if was:
            gc.enable()


def _parse_rows(
    schema: Schema,
    header: Sequence[str],
    rows: Sequence[tuple[int, Sequence[str]]],
    linkage_key: bytes | None,
    hash_keys: bool,
) -> Parsed:
    index = _column_index(schema, header)
    if any(c.kind == "pseudonym" for c in schema.columns) and linkage_key is None and hash_keys:
        raise InputError("the schema has a pseudonym key column: give the linkage key")
    width = len(header)
    errors: dict[int, str] = {}  # row position -> first problem
    shaped = []
    for pos, (line, row) in enumerate(rows):
        if len(row) != width:
            errors[pos] = f"line {line}: {len(row)} fields, expected {width}"
        else:
            shaped.append(pos)
    units: dict[str, IntArray] = {}
    valid: dict[str, IntArray] = {}
    raw_keys: dict[str, list[str]] = {}
    columns = list(zip(*[rows[pos][1] for pos in shaped], strict=True)) if shaped else []
    for col in schema.columns:
        j = index[col.name]
        cells: Sequence[str] = columns[j] if shaped else []
        if col.kind == "pseudonym":
            for k, cell in enumerate(cells):
                if not cell.strip():
                    errors.setdefault(
                        shaped[k], f"line {rows[shaped[k]][0]}: column {col.name}: empty key"
                    )
            raw_keys[col.name] = list(cells)
            continue
        u, v, bad = _parse_column(col, cells)
        for k, message in bad.items():
            pos = shaped[k]
            errors.setdefault(pos, f"line {rows[pos][0]}: column {col.name}: {message}")
        units[col.name], valid[col.name] = u, v
    keep = np.array([pos not in errors for pos in shaped], dtype=bool)
    units = {k: u[keep] for k, u in units.items()}
    valid = {k: v[keep] for k, v in valid.items()}
    keys: dict[str, list[str]] = {}
    for name, cells in raw_keys.items():
        kept = [c for c, k in zip(cells, keep, strict=True) if k]
        if hash_keys:
            assert linkage_key is not None
            keys[name] = pseudonymise_many(kept, linkage_key)
        else:
            keys[name] = kept
    ordered = [errors[pos] for pos in sorted(errors)]
    return Parsed(int(keep.sum()), units, valid, keys, ordered)


def encode_parsed(schema: Schema, parsed: Parsed) -> Encoded:
    """The parts of parsed rows (see the module)."""
    n = parsed.rows
    parts: dict[str, IntArray] = {}
    for col in schema.columns:
        if col.kind == "pseudonym":
            continue
        valid = parsed.valid[col.name]
        vals = parsed.units[col.name]
        parts[f"{col.name}.valid"] = valid
        if col.kind in ("integer", "decimal", "date", "boolean"):
            parts[f"{col.name}.val"] = vals
        if col.kind in ("integer", "decimal"):
            parts[f"{col.name}.sq"] = vals * vals
        if col.kind in ("integer", "decimal", "date"):
            off = np.where(valid == 1, vals - col.min, 0)
            d = digits_of(col)
            if d == 0:
                if col.width > 0:
                    parts[f"{col.name}.th"] = _thermometer(off, valid, col.width)
            else:
                for j in range(d):
                    digit = (off // DIGIT_BASE ** (d - 1 - j)) % DIGIT_BASE
                    parts[f"{col.name}.th{j}"] = _thermometer(digit, valid, DIGIT_BASE - 1)
        if col.kind == "categorical":
            oh = np.zeros((n, len(col.categories)), dtype=np.int64, order="F")
            idx = np.nonzero(valid)[0]
            oh[idx, vals[idx]] = 1
            parts[f"{col.name}.oh"] = oh
    return Encoded(n, parts, parsed.keys, parsed.errors)


def encode_rows(
    schema: Schema,
    header: Sequence[str],
    rows: Sequence[tuple[int, Sequence[str]]],
    *,
    linkage_key: bytes | None = None,
) -> Encoded:
    """Encode CSV rows; bad rows are listed in ``errors`` (with line numbers) and left out."""
    parsed = parse_rows(schema, header, rows, linkage_key=linkage_key)
    return encode_parsed(schema, parsed)


def share_parts(
    parts: dict[str, IntArray], *, n: int, t: int, rng: RandomSource | None = None
) -> list[dict[str, npt.NDArray[np.uint64]]]:
    """Shamir shares in GF(:data:`PRIME`) of every part: element i is party i's f(i+1).

    Vectorised in uint64 (:func:`tessera.core.m61.share`, the compiled kernel when
    built): coefficients from the injected randomness source (default: AES-CTR DRBG
    seeded from the OS), 61-bit draws with the value p redrawn.
    """
    if not 0 <= t < n:
        raise ValueError("need 0 <= t < n")
    rng = default_rng() if rng is None else rng
    out: list[dict[str, npt.NDArray[np.uint64]]] = [{} for _ in range(n)]
    for name, values in parts.items():
        shares = m61.share(values, n=n, t=t, rng=rng)
        for i in range(n):
            out[i][name] = shares[i]
    return out
