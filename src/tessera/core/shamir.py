"""Shamir k-of-n secret sharing of byte strings over GF(2^8), a whole block at a time.

Fragment ``i`` (1-based) holds the value at ``x = i`` of a random polynomial ``f`` of
degree ``k - 1`` with ``f(0) = secret``, byte by byte, in the bit-sliced layout of
:mod:`tessera.core.bitslice`.  Instead of drawing the ``k - 1`` random *coefficients*,
we draw the ``k - 1`` random *values* ``f(1) .. f(k-1)`` — the same uniform distribution
over polynomials with ``f(0) = secret`` — so fragments ``1 .. k-1`` are keystream
written straight into place and only fragments ``k .. n`` cost arithmetic: each is a
fixed GF(2^8)-linear combination of the secret and the random fragments (Lagrange
interpolation through ``x = 0 .. k-1``), compiled once into a plane-XOR program.

The same "evaluate the polynomial through these points at those points" operation also
combines (target ``x = 0``), repairs a lost fragment (target ``x = i``) and, for the
``ssms`` scheme, is a systematic Reed-Solomon erasure code.

>>> from tessera.core.rng import Drbg
>>> secret = bytes(range(64))
>>> shares = split_bytes(secret, k=2, n=3, rng=Drbg.from_seed(bytes(32)))
>>> combine_bytes({1: shares[0], 3: shares[2]}) == secret
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from tessera.core.bitslice import BLOCK_ALIGN, XorProgram, compile_linear_map
from tessera.core.fields import GF256
from tessera.core.poly import lagrange_coefficients
from tessera.core.rng import RandomSource, default_rng
from tessera.errors import InsufficientSharesError

__all__ = [
    "MAX_SHARES",
    "Planes",
    "as_planes",
    "combine_bytes",
    "evaluation_program",
    "interpolate_block",
    "split_block",
    "split_bytes",
]

MAX_SHARES = 255
Planes = npt.NDArray[np.uint64]
"""A block as an (8, words) uint64 array: row p is bit-plane p."""


def as_planes(buf: npt.NDArray[np.uint8] | bytearray | memoryview) -> Planes:
    """View a writable or read-only byte buffer (length a multiple of 64) as planes."""
    arr = np.frombuffer(buf, dtype=np.uint8) if not isinstance(buf, np.ndarray) else buf
    if arr.size % BLOCK_ALIGN:
        raise ValueError("block length must be a multiple of 64 bytes")
    return arr.view(np.uint64).reshape(8, -1)


def check_parameters(k: int, n: int) -> None:
    """ValueError unless 2 <= k <= n <= 255."""
    if not (isinstance(k, int) and isinstance(n, int)):
        raise TypeError("k and n must be integers")
    if not 2 <= k <= n <= MAX_SHARES:
        raise ValueError(f"need 2 <= k <= n <= {MAX_SHARES} (got k={k}, n={n})")


@lru_cache(maxsize=1024)
def evaluation_program(known: tuple[int, ...], targets: tuple[int, ...]) -> XorProgram:
    """Program mapping the values at ``known`` x's to the values at ``targets``."""
    if len(set(known)) != len(known):
        raise ValueError("duplicate x coordinates")
    rows = [lagrange_coefficients(GF256, list(known), at=t) for t in targets]
    return compile_linear_map(rows)


def _planes_list(blocks: Sequence[Planes]) -> list[npt.NDArray[np.uint64]]:
    return [row for block in blocks for row in block]


def interpolate_block(
    known: Sequence[int], blocks: Sequence[Planes], targets: Sequence[int], outs: Sequence[Planes]
) -> None:
    """Fill ``outs[j]`` with the value at ``targets[j]`` of the polynomial through
    ``(known[i], blocks[i])`` (degree ``len(known) - 1``)."""
    program = evaluation_program(tuple(known), tuple(targets))
    program.run(_planes_list(blocks), _planes_list(outs))


def split_block(secret: Planes, outs: Sequence[Planes], k: int, rng: RandomSource) -> None:
    """Write the n = len(outs) Shamir shares of one block; ``outs[i]`` is x = i + 1."""
    n = len(outs)
    check_parameters(k, n)
    for i in range(k - 1):
        rng.fill(outs[i].reshape(-1).view(np.uint8))
    if n >= k:
        known = (0, *range(1, k))
        interpolate_block(known, [secret, *outs[: k - 1]], range(k, n + 1), outs[k - 1 :])


def split_bytes(secret: bytes, *, k: int, n: int, rng: RandomSource | None = None) -> list[bytes]:
    """Shamir-share a byte string whose length is a multiple of 64 (in memory)."""
    check_parameters(k, n)
    src = as_planes(np.frombuffer(secret, dtype=np.uint8))
    outs = [np.empty_like(src) for _ in range(n)]
    split_block(src, outs, k, rng or default_rng())
    return [o.tobytes() for o in outs]


def combine_bytes(shares: Mapping[int, bytes]) -> bytes:
    """Restore a secret from shares given as {x: share bytes} (the first k are used)."""
    if len(shares) < 2:
        raise InsufficientSharesError("at least two shares are needed")
    xs = sorted(shares)
    blocks = [as_planes(np.frombuffer(shares[x], dtype=np.uint8)) for x in xs]
    out = np.empty_like(blocks[0])
    interpolate_block(xs, blocks, [0], [out])
    return out.tobytes()
