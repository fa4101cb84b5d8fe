"""The recommendation's row-level work on raw uint64 shares (see :mod:`tessera.mpc.knn`).

Same algorithm, same openings and same result as :class:`tessera.mpc.knn._Program`
(which the sorting baseline still extends), but every vector with one entry per record
is this party's uint64 Shamir share (:mod:`tessera.mpc.u64`): local products with the
GF(2^61 - 1) kernels, products of secret vectors in one resharing round each, the
parties' random bits and masks input and the masked distances opened as raw buffers.
Only the per-level counts, their comparisons with k and the per-treatment results are
MPyC secure arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core import m61
from tessera.mpc.knn import _digit_groups, _Program
from tessera.mpc.knn_spec import SEC_PARAM
from tessera.mpc.u64 import Shares64

__all__ = ["FastProgram"]

U64 = npt.NDArray[np.uint64]
_P = np.uint64(m61.P)


def _add(a: U64, b: U64) -> U64:
    s = a + b
    out: U64 = np.where(s >= _P, s - _P, s)
    return out


def _neg(a: U64) -> U64:
    out: U64 = np.where(a == 0, a, _P - a)
    return out


def _sub(a: U64, b: U64) -> U64:
    return _add(a, _neg(b))


def _const(value: int, shape: Any) -> U64:
    return np.full(shape, value % m61.P, dtype=np.uint64)


class FastProgram(_Program):
    """One party's run of the recommendation on raw shares."""

    def __init__(self, mpc: Any, job: Any, timings: bool) -> None:
        super().__init__(mpc, job, timings)
        self.sh = Shares64(mpc, self.secint)

    async def distances_u64(self, parts: dict[str, Any], v: U64, offset: U64) -> U64:
        """Shares of every record's distance: sq @ w + x @ v + offset, one resharing."""
        job = self.job
        cols_x, cols_sq = [], []
        for f in job.features:
            x = np.asarray(parts[f"{f.name}.val"], dtype=np.uint64)
            cols_x.append(x)
            cols_sq.append(
                np.asarray(parts[f"{f.name}.sq"], dtype=np.uint64) if f.kind == "numeric" else x
            )
        w = np.array([[f.weight % m61.P] for f in job.features], dtype=np.uint64)
        public = m61.matmul(np.stack(cols_sq, axis=1), w).reshape(job.rows)  # degree t
        cross = m61.matmul(np.stack(cols_x, axis=1), v.reshape(-1, 1)).reshape(job.rows)
        local = _add(_add(cross, public), _const(int(offset[0]), job.rows))  # degree 2t
        return await self.sh.reshare(local)

    async def _contribute(self, values: U64) -> list[U64]:
        """Shares of the vectors parties 0..t each drew (their own randomness)."""
        out: list[U64] = await self.sh.input(values, list(range(self.job.threshold + 1)))
        return out

    async def random_bits_u64(self, n: int) -> U64:
        """n secret uniform bits: XOR of bits drawn by t + 1 parties."""
        raw = (np.frombuffer(self.rng.random_bytes(n), dtype=np.uint8) & 1).astype(np.uint64)
        parts = await self._contribute(raw)
        bits = parts[0]
        for other in parts[1:]:  # a xor b = a + b - 2ab
            ab = await self.sh.mul(bits, other)
            bits = _sub(_add(bits, other), _add(ab, ab))
        return bits

    async def to_bits_u64(self, d: U64) -> list[U64]:
        """Shares of the bits of d (least significant first); d in [0, 2^L)."""
        n, bits_l = self.job.rows, self.job.distance_bits
        r_bits = (await self.random_bits_u64(n * bits_l)).reshape(n, bits_l)
        weights = np.array([[1 << j] for j in range(bits_l)], dtype=np.uint64)
        r_lo = m61.matmul(r_bits, weights).reshape(n)
        hi_bits = (
            self.secint.bit_length + SEC_PARAM - bits_l - (self.job.threshold + 1).bit_length()
        )
        raw = np.frombuffer(self.rng.random_bytes(8 * n), dtype=np.uint64)
        masks = await self._contribute(raw & np.uint64((1 << hi_bits) - 1))
        r_hi = masks[0]
        for other in masks[1:]:
            r_hi = _add(r_hi, other)
        # c = d - r_lo + 2^L r_hi + 2^l: positive, statistically hides d; opened,
        # d = (c + r_lo) mod 2^L is an addition of secret bits to public ones.
        masked = _sub(d, r_lo)
        masked = _add(masked, m61.mul(r_hi, _const(1 << bits_l, n)))
        masked = _add(masked, _const(1 << self.secint.bit_length, n))
        c = await self.sh.open(masked)
        c_lo = c & np.uint64((1 << bits_l) - 1)
        out: list[U64] = []
        carry: U64 | None = None
        for j in range(bits_l):
            cj = ((c_lo >> np.uint64(j)) & np.uint64(1)).astype(bool)
            r = np.ascontiguousarray(r_bits[:, j])
            x = np.where(cj, _sub(_const(1, n), r), r)  # r xor c_j, c_j public: local
            rc = np.where(cj, r, np.uint64(0))  # r * c_j
            if carry is None:
                out.append(x)
                carry = rc
            else:
                xc = await self.sh.mul(x, carry)
                out.append(_sub(_add(x, carry), _add(xc, xc)))
                carry = _add(rc, xc)
        return out

    async def _counts(self, sums: list[U64]) -> Any:
        return self.sh.secure(np.array([int(s) for s in sums], dtype=np.uint64))

    async def select_k_u64(self, bits: list[U64], k: Any) -> U64:
        """0/1 flags (shares) of the k records first in (distance, row index) order; k is
        an MPyC secure scalar (see :meth:`tessera.mpc.knn._Program.select_k`)."""
        mpc, sh, n = self.mpc, self.sh, self.job.rows
        index = np.arange(n)
        levels = [("secret", g) for g in _digit_groups(len(bits))]
        levels += [("public", g) for g in _digit_groups(self.job.index_bits)]
        pairs = [g for kind, g in levels if kind == "secret" and len(g) == 2]
        highs_lows: U64 | None = None
        if pairs:  # h*l of every secret digit, all in one round
            highs = np.stack([bits[g[0]] for g in pairs], axis=1)
            lows = np.stack([bits[g[1]] for g in pairs], axis=1)
            highs_lows = await sh.mul(highs, lows)
        eq: U64 | None = None
        below: Any = self.secint(0)
        flags: list[U64] = []
        thresholds: list[Any] = []
        pair_no = 0
        for kind, group in levels:
            if kind == "secret":
                if len(group) == 1:
                    base = [bits[group[0]]]
                else:
                    assert highs_lows is not None
                    base = [bits[group[0]], bits[group[1]], highs_lows[:, pair_no]]
                    pair_no += 1
                if eq is None:
                    prods = base
                else:
                    both = await sh.mul(
                        np.stack(base, axis=1), np.repeat(eq[:, None], len(base), axis=1)
                    )
                    prods = [np.ascontiguousarray(both[:, j]) for j in range(len(base))]
                e = _indicators(prods, eq)
            else:
                digit = np.zeros(n, dtype=np.int64)
                for b in group:
                    digit = digit * 2 + ((index >> b) & 1)
                assert eq is not None
                e = [np.where(digit == v, eq, np.uint64(0)) for v in range(1 << len(group))]
            sums = [
                m61.matmul(x.reshape(1, -1), np.ones((n, 1), dtype=np.uint64))[0, 0] for x in e[:-1]
            ]
            s_vec = await self._counts(sums)
            below_v, cum = [], below
            for v in range(len(sums)):
                cum = cum + s_vec[v]
                below_v.append(cum < k)  # digit > v  <=>  fewer than k are <= prefix|v
            t_onehot = [1 - below_v[0]]
            t_onehot += [below_v[v - 1] - below_v[v] for v in range(1, len(below_v))]
            t_onehot.append(below_v[-1])
            for g_v, v in zip(below_v, range(len(sums)), strict=True):
                below = below + g_v * s_vec[v]
            t_u = await sh.local(mpc.np_fromlist(t_onehot))
            eq = await sh.reshare(m61.matmul(np.stack(e, axis=1), t_u.reshape(-1, 1)).reshape(n))
            flags.extend(e[:-1])
            thresholds.extend(below_v)
        thr = await sh.local(mpc.np_fromlist(thresholds))
        smaller = await sh.reshare(
            m61.matmul(np.stack(flags, axis=1), thr.reshape(-1, 1)).reshape(n)
        )
        assert eq is not None
        return _add(smaller, eq)

    async def select_radius_u64(self, bits: list[U64], bound_bits: U64) -> U64:
        """0/1 flags (shares) of the records with distance < bound (secret bits)."""
        sh, n = self.sh, self.job.rows
        eq: U64 | None = None
        flags: list[U64] = []
        thresholds: list[int] = []
        for b in reversed(range(len(bits))):
            db = bits[b]
            t_b = _const(int(bound_bits[b]), n)
            if eq is None:
                e, f = db, _sub(_const(1, n), db)
            else:
                e = await sh.mul(eq, db)
                f = _sub(eq, e)
            eq = _add(f, await sh.mul(_sub(e, f), t_b))
            flags.append(f)
            thresholds.append(int(bound_bits[b]))
        column = np.array(thresholds, dtype=np.uint64).reshape(-1, 1)
        return await sh.reshare(m61.matmul(np.stack(flags, axis=1), column).reshape(n))

    async def aggregate_u64(self, parts: dict[str, Any], sel: U64) -> U64:
        """Shares of (treatments x 3): count, summed time, events among the selected."""
        job, sh = self.job, self.sh
        time_ = np.asarray(parts[f"{job.time}.val"], dtype=np.uint64)
        if job.event is not None:
            event = np.asarray(parts[f"{job.event}.val"], dtype=np.uint64)
            both = await sh.mul(np.stack([sel, sel]), np.stack([time_, event]))
            cols = np.stack([sel, both[0], both[1]])
        else:
            timed = await sh.mul(sel, time_)
            cols = np.stack([sel, timed, np.zeros_like(sel)])
        onehot = np.ascontiguousarray(np.asarray(parts[f"{job.treatment}.oh"], dtype=np.uint64))
        result = await sh.reshare(m61.matmul(cols, onehot))  # 3 x treatments
        return np.ascontiguousarray(result.T)

    async def compute(self, parts: dict[str, Any], patient: U64) -> Any:
        """The secure (treatments x 3) result (an MPyC secure array) for the patient's
        shares ``patient``."""
        job = self.job
        nf = len(job.features)
        d = await self.distances_u64(parts, patient[:nf], patient[nf : nf + 1])
        self._phase("distances")
        bits = await self.to_bits_u64(d)
        self._phase("bits")
        if job.mode == "k":
            k = self.sh.secure(patient[nf + 1 : nf + 2])[0]
            sel = await self.select_k_u64(bits, k)
        else:
            sel = await self.select_radius_u64(bits, patient[nf + 2 :])
        self._phase("select")
        result = await self.aggregate_u64(parts, sel)
        self._phase("aggregate")
        return self.sh.secure(result)


def _indicators(prods: list[U64], eq: U64 | None) -> list[U64]:
    """[eq and digit = v] for v = 0.. from eq*h, eq*l, eq*h*l (or eq*d); eq None: 1
    (as :func:`tessera.mpc.knn._digit_indicators`, on shares)."""
    n = prods[0].shape[0]
    one = _const(1, n) if eq is None else eq
    if len(prods) == 1:
        (d,) = prods
        return [_sub(one, d), d]
    h, lo, hl = prods
    return [_add(_sub(_sub(one, h), lo), hl), _sub(lo, hl), _sub(h, hl), hl]
