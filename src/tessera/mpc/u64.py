"""Secret-shared vectors as raw uint64 arrays inside an MPyC party (GF(2^61 - 1)).

MPyC keeps every secure array as a numpy array of Python ints: each element costs tens
of nanoseconds per operation and its shares travel pickled as Python ints.  For the
large vectors of a query (one value per row) this module keeps a party's Shamir share
as a uint64 array instead (MPyC's convention: party i holds f(i + 1), degree t):

- sums, differences and products with public values are local (:mod:`tessera.core.m61`
  kernels);
- a product of two secret vectors is a local product (degree 2t) and one resharing
  round (:meth:`Shares64.reshare`, the protocol of MPyC's ``_reshare``, Gennaro, Rabin
  and Rabin 1998: 2t + 1 parties split their local product with fresh randomness and
  every party recombines the sub-shares it receives), its messages raw little-endian
  uint64 buffers;
- small results (counts per group) become MPyC secure arrays for MPyC's comparisons
  (:meth:`Shares64.secure`) and back (:meth:`Shares64.local`).

Both sides hold the same sharing of the same values, so the two representations mix
freely; only the representation of the local share differs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import numpy.typing as npt
from mpyc import asyncoro

from tessera.core import m61
from tessera.core.rng import Drbg

__all__ = ["PIECE", "P", "Shares64"]

P = m61.P
PIECE = 1 << 20  # values per resharing message (8 MiB)
U64 = npt.NDArray[np.uint64]


def _lagrange_at_zero(xs: tuple[int, ...]) -> list[int]:
    """Weights w_j with f(0) = sum_j w_j f(xs[j]) for any f of degree < len(xs)."""
    out = []
    for j, xj in enumerate(xs):
        num, den = 1, 1
        for k, xk in enumerate(xs):
            if k != j:
                num = num * xk % P
                den = den * (xk - xj) % P
        out.append(num * pow(den, -1, P) % P)
    return out


class Shares64:
    """uint64 secret sharing operations of one party (``mpc``: MPyC's runtime)."""

    def __init__(self, mpc: Any, secint: Any) -> None:
        self.mpc = mpc
        self.secint = secint
        self.field = secint.field
        if self.field.modulus != P:
            raise ValueError("Shares64 works in GF(2^61 - 1)")
        self.rng = Drbg()
        self._weights: dict[tuple[int, ...], list[int]] = {}

    # ----- local ---------------------------------------------------------------------
    @staticmethod
    def public(values: Any) -> U64:
        """A public integer vector as field elements (its own constant sharing)."""
        return m61.to_field(np.asarray(values))

    # ----- one round -----------------------------------------------------------------
    async def reshare(self, local: U64) -> U64:
        """A degree-t sharing of the values whose shares of degree at most 2t are
        ``local`` (any shape): this party's uint64 share, same shape.  Large arrays go
        in pieces of :data:`PIECE` values, one round each (bounded buffers)."""
        flat = np.ascontiguousarray(local, dtype=np.uint64).reshape(-1)
        if flat.size <= PIECE:
            one: U64 = await self._round(flat)
            return one.reshape(local.shape)
        out = np.empty(flat.size, dtype=np.uint64)
        for start in range(0, flat.size, PIECE):
            out[start : start + PIECE] = await self._round(flat[start : start + PIECE])
        return out.reshape(local.shape)

    def _round(self, flat: U64) -> Any:
        """One resharing round of the flat array ``flat`` (a Future of the result)."""
        mpc = self.mpc
        shape = flat.shape

        @asyncoro.mpc_coro
        async def round_(x):  # type: ignore[no-untyped-def]  # mpc_coro reads annotations
            await mpc.returnType(asyncio.Future)
            t = mpc.threshold
            if t == 0:
                return x.reshape(shape)
            m = len(mpc.parties)
            uci = mpc._program_counter[0] % m
            own = None
            if (mpc.pid - uci) % m <= 2 * t:
                split = m61.share(x, n=m, t=t, rng=self.rng)
                for peer in range(m):
                    if peer != mpc.pid:
                        mpc._send_message(peer, split[peer].tobytes())
                    else:
                        own = split[peer]
            received: list[Any] = [None] * (2 * t + 1)
            for peer in range(uci, uci + 2 * t + 1):
                if peer % m != mpc.pid:
                    received[peer - uci] = mpc._receive_message(peer % m)
            received = await mpc.gather(received)
            xs: list[int] = []
            arrays: list[Any] = []
            for j, data in enumerate(received):
                if data is not None:
                    xs.append((uci + j) % m + 1)
                    arrays.append(np.frombuffer(data, dtype="<u8"))
            if own is not None:
                xs.append(mpc.pid + 1)
                arrays.append(own)
            return m61.lincomb(self._weights_for(tuple(xs)), arrays).reshape(shape)

        return round_(flat)

    def _weights_for(self, xs: tuple[int, ...]) -> list[int]:
        if xs not in self._weights:
            self._weights[xs] = _lagrange_at_zero(xs)
        return self._weights[xs]

    def input(self, values: U64, senders: list[int]) -> Any:
        """Every sender's private vector ``values`` (what this party passes when it is a
        sender; any array of the same length otherwise) secret-shared to all parties:
        a Future of the list of this party's shares, one per sender (one round)."""
        mpc = self.mpc
        flat = np.ascontiguousarray(values, dtype=np.uint64).reshape(-1)

        @asyncoro.mpc_coro
        async def round_(x):  # type: ignore[no-untyped-def]  # mpc_coro reads annotations
            await mpc.returnType(asyncio.Future)
            m, t = len(mpc.parties), mpc.threshold
            own = None
            if mpc.pid in senders:
                split = m61.share(x, n=m, t=t, rng=self.rng)
                for peer in range(m):
                    if peer != mpc.pid:
                        mpc._send_message(peer, split[peer].tobytes())
                own = split[mpc.pid]
            received: list[Any] = [
                own if j == mpc.pid else mpc._receive_message(j) for j in senders
            ]
            received = await mpc.gather(received)
            return [
                r if isinstance(r, np.ndarray) else np.frombuffer(r, dtype="<u8").copy()
                for r in received
            ]

        return round_(flat)

    def open(self, shares: U64) -> Any:
        """The values of a secret-shared array, to every party: a Future of a uint64
        array (each party sends its share to the others; one round)."""
        mpc = self.mpc
        shape = shares.shape
        flat = np.ascontiguousarray(shares, dtype=np.uint64).reshape(-1)

        @asyncoro.mpc_coro
        async def round_(x):  # type: ignore[no-untyped-def]  # mpc_coro reads annotations
            await mpc.returnType(asyncio.Future)
            m = len(mpc.parties)
            data = x.tobytes()
            for peer in range(m):
                if peer != mpc.pid:
                    mpc._send_message(peer, data)
            received: list[Any] = [x if j == mpc.pid else mpc._receive_message(j) for j in range(m)]
            received = await mpc.gather(received)
            arrays = [
                r if isinstance(r, np.ndarray) else np.frombuffer(r, dtype="<u8") for r in received
            ]
            xs = tuple(range(1, m + 1))
            return m61.lincomb(self._weights_for(xs), arrays).reshape(shape)

        return round_(flat)

    async def mul(self, a: U64, b: U64) -> U64:
        """Secure element-wise product of two secret-shared arrays of one shape."""
        out: U64 = await self.reshare(m61.mul(a, b))
        return out

    # ----- MPyC's secure arrays ------------------------------------------------------
    def secure(self, shares: U64) -> Any:
        """An MPyC secure array whose local share is ``shares``."""
        return self.secint.array(self.field.array(np.asarray(shares).astype(object), check=False))

    async def local(self, x: Any) -> U64:
        """This party's share of the MPyC secure array ``x`` as uint64."""
        value = await self.mpc.gather(x)
        out: U64 = np.asarray(value.value, dtype=object).astype(np.uint64)
        return out
