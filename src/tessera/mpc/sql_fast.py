"""The SQL program's row-level work on raw uint64 shares (see :mod:`tessera.mpc.sql_program`).

Every value with one entry per row is either public (an int64 numpy array: origins,
constants) or this party's uint64 Shamir share of a secret vector (:mod:`tessera.mpc.u64`).
Stored parts are read in place (:class:`tessera.mpc.stored.StoredTable`): a predicate on
a small integer reads one sub-column of its thermometer, not the part.  Sums and
products with public vectors are local; products of two secret vectors are batched into
one resharing round per level of the WHERE tree, of the GROUP BY combinations and of the
measures.  Per-group results (counts, sums, the digits of MIN and MAX) are small: they
become MPyC secure arrays for the comparisons and the release.

MIN/MAX without comparing row values (as before, :func:`tessera.mpc.sql_program._walk`):
per digit, the selected rows with digit >= k per group are the product of the G x N
selection with the thermometer's sub-columns (:func:`tessera.core.m61.matmul_nt`, chunk
by chunk on the memory maps), then base - 1 small comparisons per group; the rows whose
digit is the chosen one are a linear combination of the thermometer's sub-columns with
the chosen digit's secret one-hot (:func:`tessera.core.m61.matmul`), one resharing, and
one multiplication per row and group keeps them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core import m61
from tessera.mpc.plan import ORIGIN, Condition, Extreme, SqlPlan
from tessera.mpc.stored import StoredTable
from tessera.mpc.u64 import Shares64

__all__ = ["FastEval", "extreme", "join_rows", "match_keys"]

Value = npt.NDArray[Any]  # int64: public; uint64: this party's share of a secret vector
U64 = npt.NDArray[np.uint64]
_P = np.uint64(m61.P)


def secret(v: Value) -> bool:
    """Whether ``v`` is a share of a secret vector (uint64), not a public one (int64)."""
    return bool(v.dtype == np.uint64)


def field(v: Value) -> U64:
    """``v`` as field elements (a public vector is its own constant sharing)."""
    return v if secret(v) else m61.to_field(v)


def join_rows(
    tables: dict[str, StoredTable], plan: SqlPlan
) -> tuple[dict[str, npt.NDArray[np.int64] | None], int]:
    """Per alias, the row of each joined pair (None without a JOIN), and the row count."""
    sel: dict[str, npt.NDArray[np.int64] | None] = {alias: None for alias in tables}
    join = plan.join
    if join is None:
        return sel, tables[plan.sources[0].alias].rows
    la, lc = join.left.split(".", 1)
    ra, rc = join.right.split(".", 1)
    ia, ib = match_keys(tables[la].keys()[lc], tables[ra].keys()[rc])
    sel[la], sel[ra] = ia, ib
    return sel, len(ia)


def match_keys(
    left: Sequence[str], right: Sequence[str]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Every pair (i, j) with ``left[i] == right[j]``, ordered by i, then j (an inner
    equi-join of the clear pseudonym keys): keys coded as integers, then sorted."""
    if not len(left) or not len(right):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    codes: dict[str, int] = {}
    was = gc.isenabled()
    gc.disable()  # a million small objects, no cycles: collections would walk them all
    try:
        rk = np.fromiter(
            (codes.setdefault(k, len(codes)) for k in right), dtype=np.int64, count=len(right)
        )
        lk = np.fromiter((codes.get(k, -1) for k in left), dtype=np.int64, count=len(left))
    finally:
        if was:
            gc.enable()
    order = np.argsort(rk, kind="stable")  # equal keys keep j ascending
    ranked = rk[order]
    lo = np.searchsorted(ranked, lk, side="left")
    hi = np.searchsorted(ranked, lk, side="right")
    counts = (hi - lo).astype(np.int64)
    ia = np.repeat(np.arange(len(lk), dtype=np.int64), counts)
    starts = np.repeat(lo.astype(np.int64), counts)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    ib = order[starts + np.arange(len(ia), dtype=np.int64) - first].astype(np.int64)
    return ia, ib


class FastEval:
    """Row-level values of a plan at one party (see the module)."""

    def __init__(self, ctx: Any, plan: SqlPlan, sh: Shares64) -> None:
        self.ctx = ctx
        self.plan = plan
        self.sh = sh
        self.mpc = ctx.mpc
        self.tables = {src.alias: ctx.table(src.alias) for src in plan.sources}
        self.sel, self.rows = join_rows(self.tables, plan)
        self.origin_idx: dict[str, npt.NDArray[np.int64]] = {}
        for src in plan.sources:
            info = plan.cols.get(f"{src.alias}.{ORIGIN}")
            labels = [str(x) for x in info.categories] if info is not None else []
            idx = self.tables[src.alias].origin_index(labels)
            rows = self.sel[src.alias]
            self.origin_idx[src.alias] = idx if rows is None else idx[rows]
        self.cache: dict[Any, Value] = {}

    # ----- stored values -------------------------------------------------------------
    def _split(self, name: str) -> tuple[str, StoredTable, npt.NDArray[np.int64] | None, str]:
        alias, part = name.split(".", 1)
        return alias, self.tables[alias], self.sel[alias], part

    def vector(self, name: str) -> U64:
        """The shares of part ``alias.column.part`` (a vector), one per (joined) row."""
        if name not in self.cache:
            _, table, rows, part = self._split(name)
            v = table.part(part).vector()
            self.cache[name] = v if rows is None else v[rows]
        out: U64 = self.cache[name]
        return out

    def column(self, name: str, k: int) -> U64:
        """Sub-column ``k`` of part ``name``, one share per (joined) row."""
        key = (name, k)
        if key not in self.cache:
            _, table, rows, part = self._split(name)
            v = table.part(part).column(k)
            self.cache[key] = v if rows is None else v[rows]
        out: U64 = self.cache[key]
        return out

    def release(self, name: str) -> None:
        """Drop the pages of part ``name`` read so far from this process."""
        _, table, _, part = self._split(name)
        table.part(part).release()

    def blocks_t(self, name: str) -> Iterator[tuple[int, U64]]:
        """Part ``name`` as (first row, sub-columns x rows) blocks covering every row,
        one chunk at a time (its pages released once the next is asked for)."""
        _, table, rows, part = self._split(name)
        stored = table.part(part)
        if rows is not None:  # joined rows: gather them (one copy)
            full = stored.full().reshape(stored.rows, -1)[rows]
            yield 0, np.ascontiguousarray(full.T)
            return
        start = 0
        for block in stored.blocks_t():
            yield start, block
            start += block.shape[1]

    def ones(self) -> Value:
        return np.ones(self.rows, dtype=np.int64)

    def zeros(self) -> Value:
        return np.zeros(self.rows, dtype=np.int64)

    # ----- arithmetic ----------------------------------------------------------------
    @staticmethod
    def add(a: Value, b: Value) -> Value:
        if not secret(a) and not secret(b):
            return a + b
        s = field(a) + field(b)
        return np.where(s >= _P, s - _P, s)

    @staticmethod
    def neg(a: Value) -> Value:
        if not secret(a):
            return -a
        return np.where(a == 0, a, _P - a)

    def sub(self, a: Value, b: Value) -> Value:
        return self.add(a, self.neg(b))

    async def mul_many(self, pairs: Sequence[tuple[Value, Value]]) -> list[Value]:
        """Element-wise products; those of two secret vectors in one resharing round."""
        out: list[Value] = []
        both: list[int] = []
        for a, b in pairs:
            a, b = np.broadcast_arrays(a, b)
            if secret(a) and secret(b):
                both.append(len(out))
                out.append(m61.mul(a, b))  # degree 2t: reshared below
            elif secret(a) or secret(b):
                s, p = (a, b) if secret(a) else (b, a)
                out.append(m61.mul(s, field(p)))
            else:
                out.append(a * b)
        if both:
            local = np.concatenate([out[i].reshape(-1) for i in both])
            fresh = await self.sh.reshare(local)
            start = 0
            for i in both:
                size = out[i].size
                out[i] = fresh[start : start + size].reshape(out[i].shape)
                start += size
        return out

    async def mul(self, a: Value, b: Value) -> Value:
        (out,) = await self.mul_many([(a, b)])
        return out

    # ----- predicates ----------------------------------------------------------------
    def valid(self, ref: str) -> Value:
        if self.plan.cols[ref].kind == "origin":
            return self.ones()
        return self.vector(f"{ref}.valid")

    def th_ge(self, ref: str, j: int | None, k: int, base: int) -> Value:
        """[digit_j >= k] (j None: the whole offset in a one-part thermometer)."""
        if k <= 0:
            return self.valid(ref)
        if k >= base:
            return self.zeros()
        return self.column(f"{ref}.th" if j is None else f"{ref}.th{j}", k - 1)

    async def ge(self, ref: str, c: int) -> Value:
        """[v >= c] for v in units (0 for NULL)."""
        key = ("ge", ref, c)
        if key in self.cache:
            return self.cache[key]
        info = self.plan.cols[ref]
        off = c - info.min
        width = info.max - info.min
        digits = info.digits
        if off <= 0:
            result = self.valid(ref)
        elif off > width:
            result = self.zeros()
        elif digits == 0:
            result = self.th_ge(ref, None, off, width + 1)
        else:
            ds = [(off // 16 ** (digits - 1 - j)) % 16 for j in range(digits)]
            total = self.th_ge(ref, 0, ds[0] + 1, 16)
            prefix = self.sub(self.th_ge(ref, 0, ds[0], 16), total)  # digit_0 == ds[0]
            for j in range(1, digits):
                gt = self.th_ge(ref, j, ds[j] + 1, 16)
                eq = self.sub(self.th_ge(ref, j, ds[j], 16), gt)
                above, prefix = await self.mul_many([(prefix, gt), (prefix, eq)])
                total = self.add(total, above)
            result = self.add(total, prefix)
        self.cache[key] = result
        return result

    async def leaf(self, node: Condition) -> tuple[Value, Value]:
        op = node.op
        if op == "const":
            return (self.ones(), self.zeros()) if node.value else (self.zeros(), self.ones())
        if op == "origin":
            alias = node.ref.split(".", 1)[0]
            pub = np.isin(self.origin_idx[alias], list(node.idx)).astype(np.int64)
            return pub, 1 - pub
        ref = node.ref
        valid = self.valid(ref)
        if op == "isnull":
            return self.sub(self.ones(), valid), valid
        t: Value
        if op == "cat":
            t = self.zeros()
            for i in node.idx:
                t = self.add(t, self.column(f"{ref}.oh", i))
        elif op == "bool":
            val = self.vector(f"{ref}.val")
            t = val if node.value else self.sub(valid, val)
        elif op == "range":
            lo, hi = node.lo, node.hi
            if lo is not None and hi is not None and lo > hi:
                t = self.zeros()
            else:
                upper = self.zeros() if hi is None else await self.ge(ref, hi + 1)
                lower = valid if lo is None else await self.ge(ref, lo)
                t = self.sub(lower, upper)
        elif op == "in":
            t = self.zeros()
            for v in node.values:
                t = self.add(t, self.sub(await self.ge(ref, v), await self.ge(ref, v + 1)))
        else:
            raise ValueError(f"unknown predicate {op}")
        return t, self.sub(valid, t)

    async def cond(self, node: Condition, want_false: bool) -> tuple[Value, Value | None]:
        op = node.op
        if op == "not":
            t, f = await self.cond(node.args[0], True)
            assert f is not None
            return f, t
        if op in ("and", "or"):
            t1, f1 = await self.cond(node.args[0], want_false)
            t2, f2 = await self.cond(node.args[1], want_false)
            pairs = [(t1, t2)]
            if want_false:
                assert f1 is not None and f2 is not None
                pairs.append((f1, f2))
            prods = await self.mul_many(pairs)
            if op == "and":
                t = prods[0]
                f = self.sub(self.add(f1, f2), prods[1]) if want_false else None  # type: ignore[arg-type]
            else:
                t = self.sub(self.add(t1, t2), prods[0])
                f = prods[1] if want_false else None
            return t, f
        t, f = await self.leaf(node)
        return t, (f if want_false else None)

    # ----- groups and cells ----------------------------------------------------------
    async def group_indicators(self) -> list[Value]:
        combos: list[Value] = [self.ones()]
        for g in self.plan.groups:
            ref = g.ref
            inds: list[Value]
            if g.kind == "origin":
                alias = ref.split(".", 1)[0]
                inds = [
                    (self.origin_idx[alias] == i).astype(np.int64) for i in range(len(g.labels))
                ]
            elif g.kind == "boolean":
                val = self.vector(f"{ref}.val")
                inds = [self.sub(self.valid(ref), val), val]
            else:
                inds = [
                    self.column(f"{ref}.oh", i)
                    for i in range(len(g.labels))
                    if g.labels[i] is not None
                ]
            if None in g.labels:  # the NULL group, as SQL has it
                inds.append(self.sub(self.ones(), self.valid(ref)))
            combos = await self.mul_many([(c, ind) for c in combos for ind in inds])
        return combos

    async def cells(self, weights: list[Value], groups: list[Value]) -> U64:
        """Shares of ``weights @ groups`` (measures x groups, degree t)."""
        w = np.stack([field(v) for v in weights]) if self.rows else None
        g = np.stack([field(v) for v in groups]) if self.rows else None
        if w is None or g is None:
            return np.zeros((len(weights), len(groups)), dtype=np.uint64)
        local = m61.matmul_nt(w, g)
        if any(secret(v) for v in weights) and any(secret(v) for v in groups):
            out: U64 = await self.sh.reshare(local)
            return out
        return local


async def extreme(ev: FastEval, spec: Extreme, sel: Value, groups: list[Value], bits: int) -> Any:
    """Per group (an MPyC secure vector): the offset (units - min) of MIN or MAX over the
    selected non-NULL rows (see the module); ``bits``: of the secure comparisons."""
    mpc, sh = ev.mpc, ev.sh
    ref, op = spec.ref, spec.op
    info = ev.plan.cols[ref]
    gn = len(groups)
    if info.max == info.min:
        return ev.ctx.secint.array(ev.ctx.field.array(np.zeros(gn, dtype=object)))
    sv = await ev.mul(sel, ev.valid(ref))
    c = np.stack([field(v) for v in await ev.mul_many([(sv, g) for g in groups])])  # G x N
    steps = (
        [(None, info.max - info.min + 1)]
        if info.digits == 0
        else [(j, 16) for j in range(info.digits)]
    )
    chosen: list[Any] = []
    for i, (j, base) in enumerate(steps):
        name = f"{ref}.th" if j is None else f"{ref}.th{j}"
        counts = np.zeros((gn, base - 1), dtype=np.uint64)
        for start, th_t in ev.blocks_t(name):  # selected rows with digit >= k, per group, k
            part = m61.matmul_nt(np.ascontiguousarray(c[:, start : start + th_t.shape[1]]), th_t)
            counts = ev.add(counts, part)
        ev.release(name)
        counts = await sh.reshare(counts)
        if op == "max":  # some selected row has digit >= k
            diff = ev.sub(counts, np.ones(counts.shape, dtype=np.int64))
        else:  # every selected row has digit >= k
            totals = m61.matmul_nt(c, np.ones((1, ev.rows), dtype=np.uint64))  # G x 1
            diff = ev.sub(counts, np.repeat(totals, base - 1, axis=1))
        ok = 1 - mpc.np_sgn(sh.secure(diff.reshape(-1)), l=bits, LT=True)
        ok = ok.reshape(gn, base - 1)
        chosen.append(mpc.np_sum(ok, axis=1))
        if i == len(steps) - 1:
            break
        okl = await sh.local(ok)  # G x (base-1): [digit >= k], k = 1 .. base-1
        # keep the rows whose digit is the chosen one: sum_b onehot_b [digit = b] =
        # onehot_0 valid + sum_{b>=1} (onehot_b - onehot_{b-1}) th_b, with onehot_0 =
        # 1 - ok_1, onehot_b = ok_b - ok_{b+1}, onehot_{base-1} = ok_{base-1}
        upper = np.concatenate([np.ones((gn, 1), dtype=np.uint64), okl], axis=1)
        lower = np.concatenate([okl, np.zeros((gn, 1), dtype=np.uint64)], axis=1)
        onehot = ev.sub(upper, lower)  # G x base
        coef = np.ascontiguousarray(ev.sub(onehot[:, 1:], onehot[:, :-1]))  # for th_b
        keep = np.zeros((gn, ev.rows), dtype=np.uint64)
        for start, th_t in ev.blocks_t(name):
            keep[:, start : start + th_t.shape[1]] = m61.matmul(coef, th_t)
        ev.release(name)
        valid = field(ev.valid(ref))
        for g in range(gn):
            m61.axpy(keep[g], valid, int(onehot[g, 0]))
        keep = await sh.reshare(keep)
        c = await sh.mul(c, keep)
    total: Any = None
    for j, digit in enumerate(chosen):
        weight = 16 ** (info.digits - 1 - j) if info.digits else 1
        total = digit * weight if total is None else total + digit * weight
    return total
