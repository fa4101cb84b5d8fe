"""The ``validate`` job: custodians check, together, that uploaded shares encode valid rows.

Each custodian holds shares it cannot read, so it cannot tell whether a hospital
uploaded an age of 10^6 or a "bit" of 7.  A DP sensitivity, and the group-size
suppression, hold only for rows that the encoding of :mod:`tessera.tables.encode`
describes.  This program checks every constraint of that encoding on the listed
chunks, opening nothing but one field element per chunk that is zero exactly when all
hold for that chunk's rows (with probability 1 - 1/p otherwise):

* ``valid``, thermometer, boolean and one-hot entries are bits;
* thermometers are monotone (``th_k <= th_{k-1}``, ``th_1 <= valid``), so a unary
  thermometer sums to ``v - min`` in ``[0, max - min]``, and a digit thermometer to one
  base-16 digit; for digit columns ``v - min <= max - min`` is checked digit by digit;
* ``val = min * valid + (v - min)`` from the thermometer, ``sq = val^2``, a boolean's
  ``val <= valid``, a categorical's one-hot sums to ``valid``.

Constraint residuals are combined with public coefficients drawn *after* the shares
were loaded, from a seed the parties generate jointly inside the MPC (so the uploader
could not adapt to them): the quadratic constraints of a chunk then cost one secure dot
product (a single resharing), the linear ones nothing.  Each party writes, per chunk,
whether the opened sum was zero; its custodian records the chunks as validated or failed
(:mod:`tessera.node.service`).  Which columns and parts are checked is the custodian's
own table manifest, which it compares with the job (``params.columns``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["challenge", "run"]

_NUMERIC = ("integer", "decimal", "date")
_BASE = 16
_SEED_DRAWS = 4  # 4 x 28 bits: 112-bit seed for the challenge coefficients


def challenge(seed: int, label: int, count: int, p: int) -> Any:
    """``count`` public coefficients in [1, p) expanded from ``seed`` with SHAKE-256."""
    tag = b"tessera-validate-v1" + seed.to_bytes(16, "big") + label.to_bytes(8, "big")
    raw = hashlib.shake_256(tag).digest(8 * count)
    words = np.frombuffer(raw, dtype=np.uint64).astype(object)
    return (words % (p - 1)) + 1


class _Checks:
    """Accumulates r-weighted residuals per row, summed per chunk at the end.

    Every term is kept as a secure array with one row per table row, so that each
    chunk's rows give that chunk's own sum: a chunk is judged on its rows alone.
    """

    def __init__(self, ctx: Any, seed: int, rows: int) -> None:
        self.ctx = ctx
        self.seed = seed
        self.rows = rows
        self.used = 0
        self.linear: list[Any] = []  # rows x k, already weighted
        self.left: list[Any] = []  # quadratic terms: sum(left * right), rows x k
        self.right: list[Any] = []

    def coeffs(self, shape: tuple[int, ...]) -> Any:
        count = int(np.prod(shape))
        out = challenge(self.seed, self.used, count, self.ctx.prime).reshape(shape)
        self.used += 1
        return out

    def _rows(self, x: Any) -> Any:
        return x.reshape(self.rows, -1)

    def zero(self, residual: Any) -> None:
        """Require the secure array ``residual`` (one row per table row) to be zero."""
        flat = self._rows(residual)
        if flat.size:
            self.linear.append(flat * self.coeffs(flat.shape))

    def product_is(self, x: Any, y: Any, z: Any) -> None:
        """Require ``x * y == z`` elementwise (secure arrays of one shape)."""
        xs, ys, zs = self._rows(x), self._rows(y), self._rows(z)
        if not xs.size:
            return
        r = self.coeffs(xs.shape)
        self.left.append(xs * r)
        self.right.append(ys)
        self.linear.append(-(zs * r))

    def bits(self, b: Any) -> None:
        """Require every entry of ``b`` to be 0 or 1 (b * b == b)."""
        self.product_is(b, b, b)

    def totals(self, sizes: list[int]) -> list[Any]:
        """One secure sum per chunk (its rows, in order): zero iff its rows are valid."""
        mpc = self.ctx.mpc
        out = []
        start = 0
        for size in sizes:
            end = start + size
            acc: Any = None
            if self.left and size:
                left = mpc.np_concatenate([t[start:end].reshape(-1) for t in self.left])
                right = mpc.np_concatenate([t[start:end].reshape(-1) for t in self.right])
                acc = left @ right
            for term in self.linear:
                if size:
                    part = term[start:end].sum()
                    acc = part if acc is None else acc + part
            out.append(acc)
            start = end
        return out


def _thermometer(checks: _Checks, th: Any, valid: Any) -> Any:
    """Check one thermometer (rows x k): bits, monotone, zero on NULL rows; its sum."""
    checks.bits(th)
    first = th[:, 0]
    checks.product_is(first, valid, first)  # th_1 <= valid
    if th.shape[1] > 1:
        upper, lower = th[:, 1:], th[:, :-1]
        checks.product_is(upper, lower, upper)  # th_k <= th_{k-1}
    return th.sum(axis=1)


def _digits_above(ctx: Any, ths: list[Any], valid: Any, width: int) -> Any:
    """[v - min > width] from base-16 digit thermometers (most significant first)."""
    digits = []
    for _ in ths:
        digits.append(width % _BASE)
        width //= _BASE
    digits.reverse()
    above: Any = None
    prefix = valid  # all higher digits equal so far (valid rows)
    for th, w in zip(ths, digits, strict=True):
        greater = th[:, w] if w < _BASE - 1 else None
        ge_w = valid if w == 0 else th[:, w - 1]
        if greater is not None:
            term = prefix * greater
            above = term if above is None else above + term
            equal = ge_w - greater
        else:
            equal = ge_w
        prefix = prefix * equal
    return above


def _numeric(ctx: Any, checks: _Checks, parts: dict[str, Any], info: dict[str, Any]) -> None:
    name, lo, hi = info["name"], int(info["min"]), int(info["max"])
    valid = ctx.shared(parts[f"{name}.valid"])
    val = ctx.shared(parts[f"{name}.val"])
    width = hi - lo
    if int(info["digits"]) == 0:
        offset = _thermometer(checks, ctx.shared(parts[f"{name}.th"]), valid) if width else None
    else:
        ths = [ctx.shared(parts[f"{name}.th{j}"]) for j in range(int(info["digits"]))]
        offset = None
        for th in ths:
            digit = _thermometer(checks, th, valid)
            offset = digit if offset is None else offset * _BASE + digit
        above = _digits_above(ctx, ths, valid, width)
        if above is not None:
            checks.zero(above)
    expected = valid * lo if offset is None else valid * lo + offset
    checks.zero(val - expected)
    if f"{name}.sq" in parts:
        checks.product_is(val, val, ctx.shared(parts[f"{name}.sq"]))


def _column(ctx: Any, checks: _Checks, parts: dict[str, Any], info: dict[str, Any]) -> None:
    kind, name = info["kind"], info["name"]
    if kind == "pseudonym":
        return
    valid = ctx.shared(parts[f"{name}.valid"])
    checks.bits(valid)
    if kind in _NUMERIC:
        _numeric(ctx, checks, parts, info)
    elif kind == "boolean":
        val = ctx.shared(parts[f"{name}.val"])
        checks.bits(val)
        checks.product_is(val, valid, val)  # val <= valid
    elif kind == "categorical":
        onehot = ctx.shared(parts[f"{name}.oh"])
        checks.bits(onehot)
        checks.zero(onehot.sum(axis=1) - valid)


def _chunk_sizes(ctx: Any, alias: str) -> list[int]:
    """Rows of each listed chunk, as stored (not as a manifest claims), in job order."""
    spec = json.loads((ctx.folder / "inputs.json").read_text())[alias]
    sizes = []
    for chunk in spec["chunks"]:
        first = sorted(Path(chunk["dir"]).glob("*.valid.npy"))
        sizes.append(int(np.load(first[0], mmap_mode="r").shape[0]) if first else 0)
    return sizes


async def run(ctx: Any) -> None:
    """Check each listed chunk of the job's one input; write which are valid."""
    mpc = ctx.mpc
    alias = str(ctx.params["alias"])
    parts, _keys, origins = ctx.input(alias)
    sizes = _chunk_sizes(ctx, alias)
    if sum(sizes) != len(origins):
        raise SystemExit("chunk sizes disagree with the rows loaded")
    from mpyc import random as mpc_random

    seed = 0
    for _ in range(_SEED_DRAWS):  # a public seed drawn jointly, after the shares loaded
        seed = (seed << 28) | int(await mpc.output(mpc_random.getrandbits(ctx.secint, 28)))
    checks = _Checks(ctx, seed, len(origins))
    for info in ctx.params["columns"]:
        _column(ctx, checks, parts, info)
    totals = checks.totals(sizes)
    opened = [0 if t is None else int(await mpc.output(t)) for t in totals]
    doc = {
        "party": ctx.pid,
        "shares": [],
        "meta": {
            "valid": [v == 0 for v in opened],
            "rows": len(origins),
            "cpu_s": round(time.process_time() - ctx.cpu_start, 3),
        },
    }
    tmp = ctx.folder / "result.json.tmp"
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, ctx.folder / "result.json")
