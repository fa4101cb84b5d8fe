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
import hashlib
import hmac
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core.rng import RandomSource, default_rng
from tessera.errors import InputError
from tessera.tables.schema import Column, Schema, parse_value

__all__ = [
    "DIGIT_BASE",
    "PRIME",
    "UNARY_MAX",
    "Encoded",
    "column_info",
    "digits_of",
    "encode_rows",
    "parts_of",
    "pseudonymise",
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


def read_csv(data: bytes) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and (line number, cells) rows of a UTF-8 CSV; InputError if unreadable."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the CSV is not UTF-8") from None
    reader = csv.reader(io.StringIO(text, newline=""))
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
    return hmac.new(linkage_key, value.strip().encode(), hashlib.sha256).hexdigest()[:32]


def _thermometer(offsets: IntArray, valid: IntArray, steps: int) -> IntArray:
    ks = np.arange(1, steps + 1, dtype=np.int64)
    th: IntArray = ((offsets[:, None] >= ks[None, :]) & (valid[:, None] == 1)).astype(np.int64)
    return th


def encode_rows(
    schema: Schema,
    header: Sequence[str],
    rows: Sequence[tuple[int, Sequence[str]]],
    *,
    linkage_key: bytes | None = None,
) -> Encoded:
    """Encode CSV rows; bad rows are listed in ``errors`` (with line numbers) and left out."""
    lower = [h.lower() for h in header]
    index: dict[str, int] = {}
    for col in schema.columns:
        if col.name.lower() not in lower:
            raise InputError(f"the CSV has no column {col.name!r}")
        index[col.name] = lower.index(col.name.lower())
    extra = set(lower) - {c.name.lower() for c in schema.columns}
    if extra:
        raise InputError(f"the CSV has columns not in the schema: {', '.join(sorted(extra))}")
    if any(c.kind == "pseudonym" for c in schema.columns) and linkage_key is None:
        raise InputError("the schema has a pseudonym key column: give the linkage key")
    units: dict[str, list[int | None]] = {c.name: [] for c in schema.columns}
    keys: dict[str, list[str]] = {c.name: [] for c in schema.columns if c.kind == "pseudonym"}
    errors: list[str] = []
    for line, row in rows:
        if len(row) != len(header):
            errors.append(f"line {line}: {len(row)} fields, expected {len(header)}")
            continue
        parsed: dict[str, int | None] = {}
        key_vals: dict[str, str] = {}
        bad = None
        for col in schema.columns:
            cell = row[index[col.name]]
            if col.kind == "pseudonym":
                if not cell.strip():
                    bad = f"line {line}: column {col.name}: empty key"
                    break
                assert linkage_key is not None
                key_vals[col.name] = pseudonymise(cell, linkage_key)
                continue
            try:
                parsed[col.name] = parse_value(col, cell)
            except ValueError as exc:
                bad = f"line {line}: column {col.name}: {exc}"
                break
        if bad is not None:
            errors.append(bad)
            continue
        for name, v in parsed.items():
            units[name].append(v)
        for name, k in key_vals.items():
            keys[name].append(k)
    n = len(rows) - len(errors)
    parts: dict[str, IntArray] = {}
    for col in schema.columns:
        if col.kind == "pseudonym":
            continue
        raw = units[col.name]
        valid = np.array([v is not None for v in raw], dtype=np.int64)
        vals = np.array([0 if v is None else v for v in raw], dtype=np.int64)
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
            oh = np.zeros((n, len(col.categories)), dtype=np.int64)
            idx = np.nonzero(valid)[0]
            oh[idx, vals[idx]] = 1
            parts[f"{col.name}.oh"] = oh
    return Encoded(n, parts, keys, errors)


def share_parts(
    parts: dict[str, IntArray], *, n: int, t: int, rng: RandomSource | None = None
) -> list[dict[str, npt.NDArray[np.uint64]]]:
    """Shamir shares in GF(:data:`PRIME`) of every part: element i is party i's f(i+1).

    Vectorised: coefficients from the injected randomness source (default: AES-CTR DRBG
    seeded from the OS), masked to 61 bits and resampled when equal to the prime.
    """
    if not 0 <= t < n:
        raise ValueError("need 0 <= t < n")
    rng = default_rng() if rng is None else rng
    p = PRIME
    out: list[dict[str, npt.NDArray[np.uint64]]] = [{} for _ in range(n)]
    mask = np.uint64(p)  # 2^61 - 1 is also the 61-bit mask
    for name, values in parts.items():
        secret = np.mod(values.astype(object), p)
        coeffs = []
        for _ in range(t):
            c = np.frombuffer(rng.random_bytes(8 * values.size), dtype=np.uint64) & mask
            while (bad := c == mask).any():
                c = c.copy()
                c[bad] = np.frombuffer(rng.random_bytes(8 * int(bad.sum())), np.uint64) & mask
            coeffs.append(c.reshape(values.shape).astype(object))
        for i in range(n):
            x = i + 1
            acc = np.zeros(values.shape, dtype=object)
            for c in reversed(coeffs):
                acc = (acc + c) * x % p
            out[i][name] = ((acc + secret) % p).astype(np.uint64)
    return out
