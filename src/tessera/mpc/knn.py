"""MPyC party program: secure k-nearest-neighbour treatment recommendation.

Run only as its own process, one per custodian::

    python -m tessera.mpc.knn --job JOB.json --inputs SHARES.npz --result RESULT.npz \\
        -P host:port -P host:port -P host:port -I i [--ssl]

``SHARES.npz`` holds this party's Shamir shares (uint64, GF(p), MPyC's convention) of
the table parts named by the job and of the patient's secret inputs (``patient``).
``RESULT.npz`` receives this party's share of the result (``result``: treatments x 3 —
count, summed time to failure, events); only the requester, who collects every
party's file, can reconstruct it.  The custodians open nothing but uniformly masked
values (bit decomposition and comparisons), so they learn neither the patient, k, the
selected records nor how many there are.

Algorithm (see :mod:`tessera.mpc.knn_spec` for the definition):

1. distances: ``d = sq @ w + x @ v + offset`` — one matrix-vector product with the
   patient's secret ``v = -2 w q`` (one resharing per record);
2. bits: ``d`` is masked with random bits (each the XOR of bits drawn by t + 1
   parties) and a random high part, opened, and its L bits recovered with a
   ripple-carry adder against the public masked value (one multiplication per record
   per bit);
3. threshold: the k-th smallest (distance, row index) pair is found most significant
   digit first, two bits (a base-4 digit) per level.  Per level three secret counts of
   the records below the candidate prefixes are compared with k in parallel (three
   small secure comparisons); per record the "prefix equal and digit = v" flags cost
   three multiplications (secret distance digits; none for public row-index digits) and
   the new "prefix equal" flag one resharing.  "Already smaller" is never kept per
   level: it is the inner product of each record's per-level flags with the comparison
   bits, one resharing per record at the end;
4. aggregates: one-hot treatments transposed times [selected, selected * time,
   selected * event] — one resharing per output.
5. DP (node jobs with a ``noise`` spec only, see :func:`run`): every party inputs its
   own noise share per statistic and treatment, drawn by its node from the job's
   release plan, and only the noisy (count, time sum[, events]) are released,
   statistic-major.  Without ``noise`` the exact treatments x 3 release, preceded,
   when the job sets ``min_group``, by one flag per treatment ([count >= min_group]);
   the cells of a smaller treatment are multiplied by zero inside the MPC.
6. Output checks (node jobs whose folder holds ``checks.json``, see
   :mod:`tessera.mpc.disclosure`): the number of treatments whose exact neighbour count
   fails the threshold rule (and, with more than one treatment, the zeros rule) is
   opened to every party and put in the result's meta (``meta["checks"]``; dominance
   and differencing None): 2 small comparisons per treatment.

Tables of 20,000 rows need fast local arithmetic: see :mod:`tessera.mpc.knn_fast`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from mpyc import asyncoro, thresha  # neither parses sys.argv (mpyc.runtime does)

from tessera.core.rng import Drbg
from tessera.mpc import knn_fast, knn_seal
from tessera.mpc.knn_spec import SEC_PARAM, KnnJob

__all__ = ["PROFILE_ENV", "main", "run", "run_program"]

PROFILE_ENV = "TESSERA_KNN_PROFILE"


def _parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="tessera.mpc.knn")
    ap.add_argument("--job", required=True, type=Path)
    ap.add_argument("--inputs", required=True, type=Path)
    ap.add_argument("--result", required=True, type=Path)
    ap.add_argument("--timings", action="store_true", help="print phase timings on stderr")
    return ap.parse_args(argv)


class _Program:
    """One party's run; ``mpc`` is MPyC's runtime (imported only in :func:`main`)."""

    def __init__(self, mpc: Any, job: KnnJob, timings: bool) -> None:
        self.mpc = mpc
        self.job = job
        self.secint = mpc.SecInt(job.count_bits, p=job.prime)
        self.field = self.secint.field
        self.timings = timings
        self.rng = Drbg()
        self._t0 = time.perf_counter()

    def _phase(self, name: str) -> None:
        if self.timings:
            now = time.perf_counter()
            sys.stderr.write(f"knn party {self.mpc.pid}: {name} {now - self._t0:.2f}s\n")
            self._t0 = now

    def load(self, shares: Any) -> Any:
        """A secure array whose local share is ``shares`` (uint64 values in GF(p))."""
        return self.secint.array(self.field.array(np.asarray(shares).astype(object)))

    def mul(self, a: Any, b: Any) -> Any:
        """Secure element-wise a * b (b may be a secure scalar), one resharing each."""
        return _mul(self.mpc, self.secint, a, b)

    def matmul(self, a: Any, b: Any) -> Any:
        """Secure a @ b (2-D) with the limb product; reshared when both are secret."""
        return _matmul(self.mpc, self.secint, a, b)

    async def distances(self, parts: dict[str, Any], v: Any, offset: Any) -> Any:
        """Secure distances of every record to the patient."""
        job = self.job
        cols_x, cols_sq = [], []
        for f in job.features:
            x = parts[f"{f.name}.val"]
            cols_x.append(x)
            cols_sq.append(parts[f"{f.name}.sq"] if f.kind == "numeric" else x)
        w = np.array([[f.weight] for f in job.features], dtype=object)
        p = job.prime
        sq = np.stack(cols_sq, axis=1)
        x = self.load(np.stack(cols_x, axis=1))
        public = self.load(knn_fast.matmul_mod(sq, w % p, p).reshape(job.rows))
        cross = self.matmul(x, v.reshape(len(job.features), 1)).reshape(job.rows)
        return public + cross + offset

    def _contributions(self, values: Any) -> list[Any]:
        """Secure arrays of the values that parties 0..t each drew (their own randomness)."""
        senders = list(range(self.job.threshold + 1))
        mine = self.secint.array(self.field.array(values, check=False))
        shared: list[Any] = self.mpc.input(mine, senders=senders)
        return shared

    def random_bits(self, n: int) -> Any:
        """n secret uniform bits: XOR of bits drawn by t + 1 parties (no t of them know it).

        Cheaper here than MPyC's np_random_bits (PRSS evaluated per element in Python,
        then a modular square root per bit): one input and t multiplications per bit.
        """
        raw = np.frombuffer(self.rng.random_bytes(n), dtype=np.uint8) & np.uint8(1)
        parts = self._contributions(raw.astype(object))
        bits = parts[0]
        for other in parts[1:]:
            bits = bits + other - self.mul(bits, other) * 2
        return bits

    def random_masks(self, n: int, bits: int) -> Any:
        """n secret integers, each a sum of t + 1 parties' uniform draws below 2^bits."""
        raw = np.frombuffer(self.rng.random_bytes(8 * n), dtype=np.uint64)
        raw = raw & np.uint64((1 << bits) - 1)
        parts = self._contributions(raw.astype(object))
        total = parts[0]
        for other in parts[1:]:
            total = total + other
        return total

    async def to_bits(self, d: Any) -> list[Any]:
        """Secure bits of d (least significant first); d must lie in [0, 2^L)."""
        mpc, secint, n, bits_l = self.mpc, self.secint, self.job.rows, self.job.distance_bits
        r_bits = self.random_bits(n * bits_l).reshape(n, bits_l)
        weights = np.array([1 << j for j in range(bits_l)], dtype=object)
        r_lo = r_bits @ weights
        hi_bits = secint.bit_length + SEC_PARAM - bits_l - (self.job.threshold + 1).bit_length()
        r_hi = self.random_masks(n, hi_bits)
        # c = d - r_lo + 2^L r_hi + 2^l is positive, statistically hides d; opening it
        # gives d = (c + r_lo) mod 2^L: an addition of secret bits to public ones.
        masked = d - r_lo + r_hi * (1 << bits_l) + (1 << secint.bit_length)
        c = await mpc.output(masked, raw=True)
        c_lo = np.asarray(c.value, dtype=object) % (1 << bits_l)
        out: list[Any] = []
        carry = None
        for j in range(bits_l):
            cj = (c_lo >> j) & 1
            r = r_bits[:, j]
            x = r + cj - r * (2 * cj)  # r xor c_j, c_j public: local
            if carry is None:
                out.append(x)
                carry = r * cj
            else:
                xc = self.mul(x, carry)
                out.append(x + carry - xc * 2)
                carry = r * cj + xc
        return out

    def select_k(self, bits: list[Any], k: Any) -> Any:
        """0/1 flags of the k records first in (distance, row index) order.

        Two bits per level (a base-4 digit; one bit first when the count is odd): the
        digit's three candidate counts are compared with k in parallel, which halves the
        sequential rounds.  Per level and record: three multiplications for "prefix equal
        and digit = v" (secret digits; none for public index digits) and one resharing
        for the new "prefix equal" flag.
        """
        mpc, n = self.mpc, self.job.rows
        index = np.arange(n)
        levels = [("secret", g) for g in _digit_groups(len(bits))]
        levels += [("public", g) for g in _digit_groups(self.job.index_bits)]
        pairs = [g for kind, g in levels if kind == "secret" and len(g) == 2]
        highs_lows = None
        if pairs:  # h*l of every secret digit, all in one round
            highs = mpc.np_stack([bits[g[0]] for g in pairs], axis=1)
            lows = mpc.np_stack([bits[g[1]] for g in pairs], axis=1)
            highs_lows = self.mul(highs, lows)
        eq: Any = None
        below = self.secint(0)
        flags: list[Any] = []
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
                    both = self.mul(mpc.np_stack(base, axis=1), eq.reshape(n, 1))
                    prods = [both[:, j] for j in range(len(base))]
                e = _digit_indicators(prods, eq)
            else:
                digit = np.zeros(n, dtype=np.int64)
                for b in group:
                    digit = digit * 2 + ((index >> b) & 1)
                onehot = np.eye(1 << len(group), dtype=np.int64)[digit].astype(object)
                e = [eq * onehot[:, v] for v in range(1 << len(group))]  # public: local
            sums = [mpc.np_sum(x) for x in e[:-1]]
            below_v, cum = [], below
            for s_v in sums:
                cum = cum + s_v
                below_v.append(cum < k)  # digit > v  <=>  fewer than k are <= prefix|v
            t_onehot = [1 - below_v[0]]
            t_onehot += [below_v[v - 1] - below_v[v] for v in range(1, len(below_v))]
            t_onehot.append(below_v[-1])
            for g_v, s_v in zip(below_v, sums, strict=True):
                below = below + g_v * s_v
            stacked = mpc.np_stack(e, axis=1)
            eq = self.matmul(stacked, mpc.np_fromlist(t_onehot)[:, None]).reshape(n)
            flags.extend(e[:-1])
            thresholds.extend(below_v)
        smaller = self.matmul(mpc.np_stack(flags, axis=1), mpc.np_fromlist(thresholds)[:, None])
        return smaller.reshape(n) + eq

    def select_radius(self, bits: list[Any], bound_bits: Any) -> Any:
        """0/1 flags of the records with distance < bound (bound = radius + 1, secret bits)."""
        mpc, n = self.mpc, self.job.rows
        eq = None
        flags = []
        thresholds = []
        for b in reversed(range(len(bits))):
            db = bits[b]
            t_b = bound_bits[b]
            if eq is None:
                e, f = db, 1 - db
            else:
                e = self.mul(eq, db)
                f = eq - e
            eq = f + self.mul(e - f, t_b)
            flags.append(f)
            thresholds.append(t_b)
        column = mpc.np_fromlist(thresholds)[:, None]
        return self.matmul(mpc.np_stack(flags, axis=1), column).reshape(n)

    async def select(self, parts: dict[str, Any], patient: Any) -> Any:
        """Secure 0/1 selection flags of the records (k nearest, or within the radius)."""
        nf = len(self.job.features)
        d = await self.distances(parts, patient[:nf], patient[nf])
        self._phase("distances")
        bits = await self.to_bits(d)
        self._phase("bits")
        if self.job.mode == "k":
            return self.select_k(bits, patient[nf + 1])
        return self.select_radius(bits, patient[nf + 2 :])

    async def aggregate(self, parts: dict[str, Any], sel: Any) -> Any:
        """Secure (treatments x 3): count, summed time, events among the selected."""
        job = self.job
        cols = [sel, self.mul(sel, self.load(parts[f"{job.time}.val"]))]
        if job.event is not None:
            cols.append(self.mul(sel, self.load(parts[f"{job.event}.val"])))
        else:
            cols.append(sel * 0)
        onehot_t = self.load(np.ascontiguousarray(parts[f"{job.treatment}.oh"].T))
        return self.matmul(onehot_t, self.mpc.np_stack(cols, axis=1))

    async def compute(self, parts: dict[str, Any], patient: Any) -> Any:
        """The secure (treatments x 3) result for the patient's shares ``patient``."""
        selected = await self.mpc.gather(await self.select(parts, self.load(patient)))
        self._phase("select")
        result = await self.aggregate(parts, self.secint.array(selected))
        self._phase("aggregate")
        return result

    async def run(self, inputs: dict[str, Any]) -> Any:
        """This party's share of the (treatments x 3) result."""
        mpc = self.mpc
        parts = {name: inputs[name] for name in self.job.part_names()}
        await mpc.barrier()
        self._phase("load")
        result = await mpc.gather(await self.compute(parts, inputs["patient"]))
        return np.asarray(result.value, dtype=object).astype(np.uint64)


def _digit_groups(bits: int) -> list[tuple[int, ...]]:
    """Bit positions, most significant first, in groups of two (one single bit first if odd)."""
    groups: list[tuple[int, ...]] = []
    b = bits
    if b % 2:
        groups.append((b - 1,))
        b -= 1
    while b > 0:
        groups.append((b - 1, b - 2))
        b -= 2
    return groups


def _digit_indicators(prods: list[Any], eq: Any) -> list[Any]:
    """[eq and digit = v] for v = 0.. from eq*h, eq*l, eq*h*l (or eq*d); eq None means 1."""
    one = 1 if eq is None else eq
    if len(prods) == 1:
        (d,) = prods
        return [one - d, d]
    h, lo, hl = prods
    return [one - h - lo + hl, lo - hl, h - hl, hl]


def _mul(mpc: Any, secint: Any, a: Any, b: Any) -> Any:
    p = secint.field.modulus
    shape = a.shape if isinstance(b, secint) else np.broadcast_shapes(a.shape, b.shape)

    @asyncoro.mpc_coro
    async def product(a, b):  # type: ignore[no-untyped-def]  # mpc_coro reads annotations
        await mpc.returnType((secint.array, shape))
        a, b = await mpc.gather(a, b)
        c = secint.field.array(knn_fast.mul_mod(a.value, b.value, p), check=False)
        return mpc._reshare(c)

    return product(a, b)


def _matmul(mpc: Any, secint: Any, a: Any, b: Any) -> Any:
    shape = (a.shape[0], b.shape[1])
    both = isinstance(a, secint.array) and isinstance(b, secint.array)
    p = secint.field.modulus

    @asyncoro.mpc_coro
    async def product(a, b):  # type: ignore[no-untyped-def]  # mpc_coro reads annotations
        await mpc.returnType((secint.array, shape))
        if both:
            a, b = await mpc.gather(a, b)
            c = secint.field.array(knn_fast.matmul_mod(a.value, b.value, p), check=False)
            return mpc._reshare(c)
        if isinstance(a, secint.array):
            a = await mpc.gather(a)
            return secint.field.array(knn_fast.matmul_mod(a.value, b % p, p), check=False)
        b = await mpc.gather(b)
        return secint.field.array(knn_fast.matmul_mod(a % p, b.value, p), check=False)

    return product(a, b)


def _load_inputs(path: Path) -> dict[str, Any]:
    with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as z:
        return {k: np.asarray(z[k], dtype=np.uint64) for k in z.files}


def _write_result(path: Path, result: Any) -> None:
    buf = io.BytesIO()
    np.savez(buf, result=result)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)


def run_program(program_type: type[_Program]) -> None:
    """Run one party of ``program_type`` (parses MPyC's options first, then ours)."""
    from mpyc.runtime import mpc  # parses and strips MPyC's options from sys.argv

    args = _parse(sys.argv[1:])
    job = KnnJob.from_json(args.job.read_text())
    inputs = _load_inputs(args.inputs)
    knn_fast.install(thresha)
    program = program_type(mpc, job, args.timings)

    missing = [name for name in [*job.part_names(), "patient"] if name not in inputs]
    if missing:  # before connecting: the other parties see this party fail at once
        raise SystemExit(f"knn party: input {missing[0]!r} missing")

    async def _run() -> Any:
        await mpc.start()
        result = await program.run(inputs)
        # No shutdown after a failure: its barrier would wait for the others forever;
        # the process exits instead and the launcher stops the remaining parties.
        await mpc.shutdown()
        return result

    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir:  # developer aid: cProfile stats per party
        import cProfile

        prof = cProfile.Profile()
        result = prof.runcall(mpc.run, _run())
        prof.dump_stats(str(Path(profile_dir) / f"knn-party-{mpc.pid}.prof"))
    else:
        result = mpc.run(_run())
    _write_result(args.result, result)


def main() -> None:
    """Entry point of one party process (the program on raw shares)."""
    from tessera.mpc.knn_u64 import FastProgram

    run_program(FastProgram)


async def run(ctx: Any) -> None:
    """The ``knn`` job type on custodian nodes (:mod:`tessera.mpc.party` calls this).

    ``ctx.params``: ``job`` (:meth:`KnnJob.to_json`), ``alias`` (the table input),
    ``nonce`` and ``patient`` (one sealed share vector per party, see
    :mod:`tessera.mpc.knn_seal`).  The result is released with ``ctx.release``.
    """
    knn_fast.install(thresha)
    job = KnnJob.from_json(ctx.params["job"])
    parts, _keys, origins = ctx.input(str(ctx.params["alias"]))
    if len(origins) != job.rows:
        raise SystemExit("the table's row count changed since the job was made")
    pid = ctx.mpc.pid
    key_pem = (ctx.folder / ".config" / f"party_{pid}.key").read_bytes()
    blob = ctx.params["patient"][pid]
    raw = knn_seal.open_sealed(key_pem, blob, nonce=str(ctx.params["nonce"]), party=pid)
    inputs = {name: np.asarray(parts[name], dtype=np.uint64) for name in job.part_names()}
    inputs["patient"] = np.frombuffer(raw, dtype="<u8").astype(np.uint64)
    from tessera.mpc.knn_u64 import FastProgram

    program = FastProgram(ctx.mpc, job, timings=False)
    result = await program.compute(inputs, inputs["patient"])
    meta: dict[str, Any] = {"rows": job.rows}
    if not ctx.job.get("noise"):  # exact release: treatments x 3, treatment-major
        cells = result.reshape(job.treatments * 3)
        if job.min_group > 0:  # [flags] + cells, small treatments zeroed inside the MPC
            cells = _suppress_small(ctx.mpc, job, result)
    else:
        cells = _noisy(ctx, program, result)
        meta["noisy"] = True
    spec = await ctx.agree_checks()
    if spec is not None:  # output checks on the exact neighbour counts per treatment
        from tessera.mpc import disclosure

        counts = ctx.mpc.np_transpose(result)[0]
        meta["checks"] = await disclosure.knn_checks(ctx.mpc, spec, counts, job.rows)
    await ctx.release(cells, meta)


def _suppress_small(mpc: Any, job: KnnJob, result: Any) -> Any:
    """``[flag_t ...] + cells``: flag_t = [count_t >= min_group]; other treatments' cells
    are multiplied by zero before anything is opened (as SQL's group-size check)."""
    counts = mpc.np_transpose(result)[0]
    flags = 1 - mpc.np_sgn(counts - job.min_group, l=job.count_bits, LT=True)
    kept = result * flags.reshape(job.treatments, 1)
    return mpc.np_concatenate((flags, kept.reshape(job.treatments * 3)))


def _noisy(ctx: Any, program: _Program, result: Any) -> Any:
    """DP release: (count, time sum[, events]) x treatments, statistic-major, plus noise.

    The job's ``noise.cells`` is ``width * treatments`` (width 2 without an event column,
    3 with one), in the order of the release plan's statistics (count, sum:time,
    sum:event).  Every party inputs its own noise vector (drawn by its node from the
    job's release plan) privately, as ``PartyContext.add_noise`` does for SQL but in this
    program's secure type; only the noisy statistics are ever reconstructed.
    """
    job, mpc = program.job, program.mpc
    cells = int(ctx.job["noise"]["cells"])
    width = 3 if job.event is not None else 2
    mine = ctx.noise()
    if cells != width * job.treatments or mine is None or mine.shape != (cells,):
        raise SystemExit("noise vector missing or of the wrong length for this recommendation")
    total = mpc.np_transpose(result)[:width].reshape(cells)  # statistic-major
    vec = program.secint.array(program.field.array(np.mod(mine.astype(object), job.prime)))
    for contribution in mpc.input(vec, senders=list(range(len(mpc.parties)))):
        total = total + contribution
    return total


if __name__ == "__main__":
    main()
