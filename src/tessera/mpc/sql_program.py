"""The secure SQL program, run inside every MPyC party (job type ``sql``).

Input: the plan from :mod:`tessera.mpc.sql` (``params["plan"]``, decoded and checked with
:meth:`tessera.mpc.plan.SqlPlan.from_dict`, so a malformed plan stops here) and this
party's shares of the parts it names.  Output, released to the requester only
(re-randomised shares): ``[flag_g ...] + [measure_m,g ...] + [extreme_e,g ...]`` where
``flag_g`` is 1 iff group ``g`` has at least ``min_group`` rows; every other cell of a
suppressed group is 0.

Costs (rows N): a WHERE leaf on a categorical, boolean or small integer is a local
sum of shared columns; each AND/OR is one batched multiplication of N values; a range
on a wide column costs one multiplication round per base-16 digit; COUNT/SUM per group
are inner products (one resharing per output cell); MIN/MAX of a small integer are
inner products with its thermometer plus one comparison per step; the group-size check
is one comparison per group.  The row-level work runs on raw uint64 shares
(:mod:`tessera.mpc.sql_fast`); only per-group values are MPyC secure numbers.

Output checks: when the node put ``checks.json`` in the job folder
(:meth:`tessera.mpc.party.PartyContext.checks`), :func:`tessera.mpc.disclosure.sql_checks`
also counts, inside the MPC, the cells failing the threshold, zeros and dominance rules
and the earlier cohorts failing the differencing rule; only these counts are opened (to
every party) and put in the result's ``meta["checks"]``, and a single-table query
writes this party's share of its WHERE selection to ``cohort.npy``.  The release is the
same.  Cost: 2 comparisons per group, one resharing and 2 comparisons per earlier
cohort, and per summed integer/decimal column about twice a MAX of it (see that module;
about 1 s of CPU per party for 5,000 rows, 4 groups and two summed columns, against
0.05 s without).  Without ``checks.json`` nothing of this runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
from mpyc import asyncoro

from tessera.core import m61
from tessera.mpc._speedups import limb_matmul
from tessera.mpc.plan import ORIGIN, Condition, Extreme, SqlPlan
from tessera.mpc.sql_fast import FastEval, extreme, join_rows, secret
from tessera.mpc.u64 import Shares64

__all__ = ["run"]

Value = Any  # a public numpy int64 array or an MPyC secure array


class _Raw(Mapping[str, np.ndarray]):
    """``alias.column.part`` -> this party's shares, one per (joined) row, read when
    first asked for (``name in raw`` says whether the job lists the part)."""

    def __init__(self, tables: dict[str, Any], sel: dict[str, np.ndarray | None]) -> None:
        self._tables = tables
        self._sel = sel
        self._cache: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            alias, part = name.split(".", 1)
            if alias not in self._tables or part not in self._tables[alias].names:
                raise KeyError(name)
            full = self._tables[alias].part(part).full()
            rows = self._sel[alias]
            self._cache[name] = full if rows is None else full[rows]
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter([f"{a}.{p}" for a, t in self._tables.items() for p in t.names])

    def __len__(self) -> int:
        return sum(len(t.names) for t in self._tables.values())


class _Eval:
    """The plan's row-level values as MPyC secure arrays: what the output checks
    (:mod:`tessera.mpc.disclosure`) work with; the query itself runs on raw shares
    (:mod:`tessera.mpc.sql_fast`)."""

    def __init__(self, ctx: Any, plan: SqlPlan) -> None:
        self.ctx = ctx
        self.mpc = ctx.mpc
        self.plan = plan
        tables = {src.alias: ctx.table(src.alias) for src in plan.sources}
        sel, self.rows = join_rows(tables, plan)
        self.raw: Mapping[str, np.ndarray] = _Raw(tables, sel)
        self.origin_idx: dict[str, np.ndarray] = {}
        self.cache: dict[Any, Value] = {}
        for src in plan.sources:
            info = plan.cols.get(f"{src.alias}.{ORIGIN}")
            labels = [str(x) for x in info.categories] if info is not None else []
            arr = tables[src.alias].origin_index(labels)
            idx = sel[src.alias]
            self.origin_idx[src.alias] = arr if idx is None else arr[idx]

    # ----- values ------------------------------------------------------------------
    def part(self, name: str) -> Value:
        if name not in self.cache:
            self.cache[name] = self.ctx.shared(self.raw[name])
        return self.cache[name]

    def column(self, name: str, k: int) -> Value:
        key = (name, k)
        if key not in self.cache:
            self.cache[key] = self.ctx.shared(self.raw[name][:, k])
        return self.cache[key]

    def digit_onehot_t(self, ref: str, j: int | None) -> Value:
        """This party's shares (base x rows, int64) of digit j's one-hot, from its
        thermometer (j None: the offset's one-hot, from a one-part thermometer)."""
        name = f"{ref}.th" if j is None else f"{ref}.th{j}"
        th = self.raw[name].astype(np.int64)  # rows x (base - 1), shares in [0, p)
        valid = self.raw[f"{ref}.valid"].astype(np.int64).reshape(-1, 1)
        zero = np.zeros((self.rows, 1), dtype=np.int64)
        upper = np.concatenate([valid, th], axis=1)
        lower = np.concatenate([th, zero], axis=1)
        return np.mod(upper - lower, self.ctx.prime).T.copy()

    def raw_int(self, name: str) -> np.ndarray:
        """This party's shares of a part as int64 (values in [0, p))."""
        return self.raw[name].astype(np.int64)

    def ones(self) -> np.ndarray:
        return np.ones(self.rows, dtype=np.int64)

    def zeros(self) -> np.ndarray:
        return np.zeros(self.rows, dtype=np.int64)

    @staticmethod
    def public(v: Value) -> bool:
        return isinstance(v, np.ndarray)

    def secure(self, v: Value) -> Value:
        """A secure array for ``v`` (a public vector becomes a constant sharing)."""
        return self.ctx.shared(np.mod(v.astype(object), self.ctx.prime)) if self.public(v) else v

    def mul(self, a: Value, b: Value) -> Value:
        if self.public(a) and self.public(b):
            return a * b
        if self.public(a):
            a, b = b, a
        return a * b

    def add(self, a: Value, b: Value) -> Value:
        if self.public(a) and not self.public(b):
            a, b = b, a
        return a + b

    def sub(self, a: Value, b: Value) -> Value:
        if self.public(a) and not self.public(b):
            return -b + a
        return a - b

    # ----- predicates ---------------------------------------------------------------
    def valid(self, ref: str) -> Value:
        if self.plan.cols[ref].kind == "origin":
            return self.ones()
        return self.part(f"{ref}.valid")

    def th_ge(self, ref: str, j: int | None, k: int, base: int) -> Value:
        """[digit_j >= k] (j None: the whole offset in a one-part thermometer)."""
        name = f"{ref}.th" if j is None else f"{ref}.th{j}"
        if k <= 0:
            return self.valid(ref)
        if k >= base:
            return self.zeros()
        return self.column(name, k - 1)

    def ge(self, ref: str, c: int) -> Value:
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
            base = 16
            ds = [(off // base ** (digits - 1 - j)) % base for j in range(digits)]
            total: Value = self.th_ge(ref, 0, ds[0] + 1, base)
            prefix: Value = self.sub(self.th_ge(ref, 0, ds[0], base), total)  # digit_0 == ds[0]
            for j in range(1, digits):
                gt = self.th_ge(ref, j, ds[j] + 1, base)
                eq = self.sub(self.th_ge(ref, j, ds[j], base), gt)
                total = self.add(total, self.mul(prefix, gt))
                prefix = self.mul(prefix, eq)
            result = self.add(total, prefix)
        self.cache[key] = result
        return result

    def leaf(self, node: Condition) -> tuple[Value, Value]:
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
        if op == "cat":
            t: Value = self.zeros()
            for i in node.idx:
                t = self.add(t, self.column(f"{ref}.oh", i))
        elif op == "bool":
            val = self.part(f"{ref}.val")
            t = val if node.value else self.sub(valid, val)
        elif op == "range":
            lo, hi = node.lo, node.hi
            upper = self.zeros() if hi is None else self.ge(ref, hi + 1)
            lower = valid if lo is None else self.ge(ref, lo)
            t = (
                self.zeros()
                if (lo is not None and hi is not None and lo > hi)
                else self.sub(lower, upper)
            )
        elif op == "in":
            t = self.zeros()
            for v in node.values:
                t = self.add(t, self.sub(self.ge(ref, v), self.ge(ref, v + 1)))
        else:
            raise ValueError(f"unknown predicate {op}")
        return t, self.sub(valid, t)

    def cond(self, node: Condition, want_false: bool) -> tuple[Value, Value | None]:
        op = node.op
        if op == "not":
            t, f = self.cond(node.args[0], True)
            return f, t
        if op in ("and", "or"):
            (t1, f1), (t2, f2) = (self.cond(a, want_false) for a in node.args)
            if op == "and":
                t = self.mul(t1, t2)
                f = self.sub(self.add(f1, f2), self.mul(f1, f2)) if want_false else None
            else:
                t = self.sub(self.add(t1, t2), self.mul(t1, t2))
                f = self.mul(f1, f2) if want_false else None
            return t, f
        t, f = self.leaf(node)
        return t, (f if want_false else None)

    # ----- groups ---------------------------------------------------------------------
    def group_indicators(self) -> list[Value]:
        combos: list[Value] = [self.ones()]
        for g in self.plan.groups:
            ref = g.ref
            if g.kind == "origin":
                alias = ref.split(".", 1)[0]
                inds = [
                    (self.origin_idx[alias] == i).astype(np.int64) for i in range(len(g.labels))
                ]
            elif g.kind == "boolean":
                val = self.part(f"{ref}.val")
                inds = [self.sub(self.valid(ref), val), val]
            else:
                inds = [
                    self.column(f"{ref}.oh", i)
                    for i in range(len(g.labels))
                    if g.labels[i] is not None
                ]
            if None in g.labels:  # the NULL group, as SQL has it
                inds.append(self.sub(self.ones(), self.valid(ref)))
            combos = [self.mul(c, ind) for c in combos for ind in inds]
        return combos


def _times_local(ev: _Eval, c: Value, raw: np.ndarray) -> Value:
    """Secure ``c @ M`` where this party holds ``raw``, its shares of M (int64 in [0, p)).

    What MPyC's np_matmul does for two secure operands (local product of shares, then
    one resharing per output), without turning M into an array of Python ints.
    """
    mpc = ev.mpc
    sectype = type(c)
    shape = (c.shape[0], raw.shape[1])

    @asyncoro.mpc_coro
    async def product(c):  # type: ignore[no-untyped-def]  # mpc_coro reads annotations
        await mpc.returnType((sectype, shape))
        share = await mpc.gather(c)
        local: Any
        if ev.ctx.prime == m61.P:
            left = np.asarray(share.value, dtype=object).astype(np.uint64)
            local = m61.matmul(left, np.mod(raw, ev.ctx.prime).astype(np.uint64)).astype(object)
        else:
            local = limb_matmul(share.value, raw, ev.ctx.prime)
            if local is None:
                local = (share.value @ raw.astype(object)) % ev.ctx.prime
        return mpc._reshare(ev.ctx.field.array(local))

    return product(c)


def _bits(n: int) -> int:
    return max(2, int(n).bit_length() + 2)


def _select_digit(
    ev: _Eval, th: Value, c: Value, op: str, base: int, gn: int
) -> tuple[Value, Value]:
    """One digit of MIN/MAX over the rows selected in ``c`` (G x rows, 0/1).

    ``th`` (rows x (base-1)) holds [digit >= k].  Returns the chosen digit per group and
    its one-hot (G x base); only inner products and base-1 small comparisons per group.
    """
    mpc = ev.mpc
    counts = _times_local(ev, c, th)  # G x (base-1): selected rows with digit >= k
    if op == "max":
        diff = counts - 1  # some selected row has digit >= k
    else:
        totals = mpc.np_sum(c, axis=1).reshape(gn, 1)
        diff = counts - totals  # every selected row has digit >= k
    ok = 1 - mpc.np_sgn(diff.reshape(-1), l=_bits(ev.rows), LT=True)
    ok = ok.reshape(gn, base - 1)
    digit = mpc.np_sum(ok, axis=1)
    one = ev.secure(np.ones((gn, 1), dtype=np.int64))
    zero = ev.secure(np.zeros((gn, 1), dtype=np.int64))
    upper = mpc.np_concatenate([one, ok], axis=1)  # [digit >= k], k = 0..base-1
    lower = mpc.np_concatenate([ok, zero], axis=1)  # [digit >= k+1]
    return digit, upper - lower  # one-hot of the chosen digit


def _walk(
    ev: _Eval, ref: str, c: Value, op: str, keep_last: bool = False
) -> tuple[list[Value], Value | None]:
    """MIN or MAX over the rows selected in ``c`` (G x rows, 0/1), digit by digit.

    Returns the chosen digit per group for every digit, most significant first (one
    "digit", the whole offset, for a one-part thermometer), and with ``keep_last`` the
    rows (G x rows) that hold the extreme (the "keep" step done for the last digit too).
    """
    info = ev.plan.cols[ref]
    gn = c.shape[0]
    digits = info.digits
    steps = [(None, info.max - info.min + 1)] if digits == 0 else [(j, 16) for j in range(digits)]
    chosen: list[Value] = []
    for i, (j, base) in enumerate(steps):
        th = ev.raw_int(f"{ref}.th" if j is None else f"{ref}.th{j}")  # rows x (base-1)
        digit, onehot = _select_digit(ev, th, c, op, base, gn)
        chosen.append(digit)
        if i == len(steps) - 1 and not keep_last:
            break
        # rows whose digit j equals the chosen one: onehot_g . (their digit's one-hot)
        keep = _times_local(ev, onehot, ev.digit_onehot_t(ref, j))  # G x rows
        c = c * keep
    return chosen, (c if keep_last else None)


def _extreme(ev: _Eval, spec: Extreme, sel: Value, groups: list[Value]) -> Value:
    """Per group: the offset (units - min) of MIN or MAX over selected non-NULL rows.

    One-part thermometers: one inner product per step plus one small comparison each.
    Base-16 digits, most significant first: choose the extreme digit as above, keep the
    rows that have it (one matrix product with the digit's one-hot and one
    multiplication per row), go on with the next digit.  No comparison on row values.
    """
    mpc = ev.mpc
    ref, op = spec.ref, spec.op
    info = ev.plan.cols[ref]
    width = info.max - info.min
    gn = len(groups)
    if width == 0:
        return ev.secure(np.zeros(gn, dtype=np.int64))
    sv = ev.mul(sel, ev.valid(ref))
    c = mpc.np_stack([ev.secure(ev.mul(sv, g)) for g in groups])  # G x rows
    chosen, _ = _walk(ev, ref, c, op)
    digits = info.digits
    if digits == 0:
        return chosen[0]
    total: Value = None
    for j, digit in enumerate(chosen):
        weight = 16 ** (digits - 1 - j)
        total = digit * weight if total is None else total + digit * weight
    return total


async def run(ctx: Any) -> None:
    """Evaluate the plan and release the result cells to the requester."""
    mpc = ctx.mpc
    plan = SqlPlan.from_dict(ctx.params["plan"])
    if ctx.prime != m61.P:  # the stored shares live in this field; no other makes sense
        raise SystemExit("the SQL program computes in GF(2^61 - 1), the tables' field")
    sh = Shares64(mpc, ctx.secint)
    ev = FastEval(ctx, plan, sh)
    sel: Value = ev.ones()
    if plan.where is not None:
        sel, _ = await ev.cond(plan.where, False)
    groups = await ev.group_indicators()
    gn = len(groups)
    weights = await ev.mul_many(
        [(sel, ev.ones() if m.part is None else ev.vector(m.part)) for m in plan.measures]
    )
    cells = sh.secure(await ev.cells(weights, groups))  # K x G
    bits = _bits(ev.rows)
    extremes = [await extreme(ev, e, sel, groups, bits) for e in plan.extremes]
    counts = cells[0]  # measure 0 is COUNT(*)
    flags = 1 - mpc.np_sgn(counts - plan.min_group, l=bits, LT=True)
    flat = await ctx.add_noise(cells.reshape(-1))
    kept = flat.reshape(len(weights), gn) * flags.reshape(1, gn)
    pieces = [flags, kept.reshape(-1)]
    if extremes:
        pieces.append((mpc.np_stack(extremes) * flags.reshape(1, gn)).reshape(-1))
    out = mpc.np_concatenate(pieces)
    meta: dict[str, Any] = {"rows": ev.rows, "groups": gn}
    spec = await ctx.agree_checks()
    if spec is not None:  # the node asks for output checks (see tessera.mpc.disclosure)
        from tessera.mpc import disclosure

        checked = _Eval(ctx, plan)
        sel_m = sh.secure(sel) if secret(sel) else sel
        groups_m = [sh.secure(g) if secret(g) else g for g in groups]
        meta["checks"] = await disclosure.sql_checks(checked, spec, sel_m, groups_m, cells)
        if ctx.history_short:  # the others lack cohorts this custodian holds: hold it
            meta["checks"]["differencing"] = max(1, meta["checks"]["differencing"] or 0)
    await ctx.release(out, meta)
