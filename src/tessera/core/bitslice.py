"""Bit-sliced GF(2^8) linear maps over whole blocks, as straight-line XOR programs.

Layout.  A block of ``B`` bytes (``B`` a multiple of 64) is read as ``B`` elements of
GF(2^8) in *bit-sliced* form: the block is 8 consecutive *planes* of ``B/8`` bytes, and
element ``j`` has bit ``p`` equal to bit ``j`` of plane ``p`` (bits numbered little-endian
inside little-endian 64-bit words).  Any byte string is a valid block, so data never
needs transposing: secrets, shares and parity are all stored in this layout, and
applying the same linear maps in the same layout gives back the original bytes.

Multiplying every element by a public constant ``c`` is then an 8 x 8 matrix over GF(2)
acting on the planes: output plane ``i`` is the XOR of the input planes ``j`` where bit
``i`` of ``c * x^j`` is set.  A whole GF(2^8)-linear map ``out_r = sum_c A[r][c] * in_c``
becomes a ``8R x 8C`` GF(2) matrix, compiled once into a straight-line program of plane
XORs whose count is reduced by greedy common-subexpression elimination (Paar's
algorithm).

Running a program.  The compiled kernel (``tessera.core._xor``, C, built at install)
runs every step on a cache-sized chunk of all planes before moving to the next chunk,
so temporaries stay in L1 and each plane crosses memory once; it releases the GIL, so
blocks can be shared on several threads.  Without a C compiler the package falls back
to numpy, which runs each XOR on whole planes (one Python call per XOR per block,
several times slower); :data:`KERNEL` tells which is in use.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from types import ModuleType

import numpy as np
import numpy.typing as npt

from tessera.core.fields import GF256

_kernel: ModuleType | None
try:  # the compiled kernel; optional at build time (see setup.py)
    from tessera.core import _xor as _kernel
except ImportError:  # pragma: no cover - exercised on machines without a compiler
    _kernel = None

KERNEL: str | None = "c" if _kernel is not None else None
"""``"c"`` when the compiled plane-XOR kernel is loaded, None on the numpy fallback."""

__all__ = [
    "BLOCK_ALIGN",
    "KERNEL",
    "XorProgram",
    "compile_linear_map",
    "from_elements",
    "mul_matrix",
    "to_elements",
]

BLOCK_ALIGN = 64
"""Blocks are multiples of 64 bytes: 8 planes of whole 64-bit words."""

U64Array = npt.NDArray[np.uint64]

# Paar's greedy elimination is quadratic in the number of rows; past this size the
# program is built per output row with pair-sharing only inside each 8 x 8 product.
_PAAR_MAX_ONES = 4096


def mul_matrix(c: int) -> tuple[int, ...]:
    """Rows of the 8 x 8 GF(2) matrix of ``a -> c * a``: bit j of row i is M[i][j]."""
    columns = [GF256.mul(c, 1 << j) for j in range(8)]
    return tuple(sum(((columns[j] >> i) & 1) << j for j in range(8)) for i in range(8))


@dataclass(frozen=True)
class XorProgram:
    """A straight-line program computing ``outputs`` planes from ``inputs`` planes.

    Signals ``0 .. inputs-1`` are the input planes; every step ``(dst, a, b)`` sets
    signal ``dst`` to ``a XOR b``; ``outputs[r]`` is the signal holding output plane
    ``r`` (or ``-1`` for an all-zero output).  Temporaries are register-allocated into
    ``temps`` scratch planes (signals ``inputs .. inputs+temps-1``).
    """

    inputs: int
    temps: int
    steps: tuple[tuple[int, int, int], ...]
    outputs: tuple[int, ...]
    sources: tuple[tuple[int, ...], ...] = ()
    """For every output plane, the input planes whose XOR it is (before CSE)."""

    @property
    def xor_count(self) -> int:
        """Number of plane XORs per block."""
        return len(self.steps)

    @cached_property
    def packed(self) -> tuple[bytes, bytes]:
        """Steps and outputs as int32 arrays, the compiled kernel's input."""
        steps = np.array(self.steps, dtype=np.int32).reshape(-1)
        return steps.tobytes(), np.array(self.outputs, dtype=np.int32).tobytes()

    def run(self, planes_in: Sequence[U64Array], planes_out: Sequence[U64Array]) -> None:
        """Apply the map: ``planes_out[r] = XOR of the inputs selected for row r``.

        All arrays are contiguous uint64 of one length; outputs must not alias inputs.
        """
        if len(planes_in) != self.inputs or len(planes_out) != len(self.outputs):
            raise ValueError("plane counts do not match the program")
        if _kernel is not None:
            steps, outputs = self.packed
            _kernel.run(steps, outputs, self.inputs, self.temps, planes_in, planes_out)
            return
        self.run_numpy(planes_in, planes_out)

    def run_numpy(self, planes_in: Sequence[U64Array], planes_out: Sequence[U64Array]) -> None:
        """:meth:`run` in numpy, one whole-plane XOR per step (the fallback)."""
        if len(planes_in) != self.inputs or len(planes_out) != len(self.outputs):
            raise ValueError("plane counts do not match the program")
        words = planes_in[0].shape[0]
        signals: list[U64Array] = [*planes_in, *_scratch(self.temps, words)[: self.temps]]
        # A register that ends up holding an output lives in that output array from the
        # start (registers of outputs are never reused after their final value), which
        # saves one copy per output plane.
        owner: dict[int, int] = {}
        for row, sig in enumerate(self.outputs):
            if sig >= self.inputs and sig not in owner:
                owner[sig] = row
                signals[sig] = planes_out[row]
        xor = np.bitwise_xor
        for dst, a, b in self.steps:
            xor(signals[a], signals[b], out=signals[dst])
        for row, sig in enumerate(self.outputs):
            if sig < 0:
                planes_out[row].fill(0)
            elif owner.get(sig) != row:
                np.copyto(planes_out[row], signals[sig])


_local = threading.local()


def _scratch(count: int, words: int) -> list[U64Array]:
    pool: dict[int, list[U64Array]] = getattr(_local, "pool", None) or {}
    _local.pool = pool
    planes = pool.get(words)
    if planes is None or len(planes) < count:
        planes = [np.empty(words, dtype=np.uint64) for _ in range(max(count, 1))]
        pool[words] = planes
    return planes


def compile_linear_map(matrix: Sequence[Sequence[int]]) -> XorProgram:
    """Compile ``out_r = sum_c matrix[r][c] * in_c`` over GF(2^8) into plane XORs.

    ``matrix`` is R x C with entries in 0..255; the program reads ``8C`` planes
    (input ``c`` is planes ``8c .. 8c+7``) and writes ``8R`` planes.
    """
    key = tuple(tuple(int(v) for v in row) for row in matrix)
    return _compile(key)


@lru_cache(maxsize=512)
def _compile(matrix: tuple[tuple[int, ...], ...]) -> XorProgram:
    cols = len(matrix[0]) if matrix else 0
    if any(len(row) != cols for row in matrix):
        raise ValueError("ragged matrix")
    rows_bits: list[set[int]] = []
    for row in matrix:
        for i in range(8):
            bits: set[int] = set()
            for c, value in enumerate(row):
                if value < 0 or value > 255:
                    raise ValueError("entries must be bytes")
                if value:
                    m = mul_matrix(value)[i]
                    bits.update(8 * c + j for j in range(8) if (m >> j) & 1)
            rows_bits.append(bits)
    inputs = 8 * cols
    total_ones = sum(len(b) for b in rows_bits)
    if total_ones <= _PAAR_MAX_ONES:
        steps, outputs, nsignals = _paar(rows_bits, inputs)
    else:
        steps, outputs, nsignals = _chain(rows_bits, inputs)
    program = _allocate(inputs, nsignals, steps, outputs)
    return XorProgram(
        inputs=program.inputs,
        temps=program.temps,
        steps=program.steps,
        outputs=program.outputs,
        sources=tuple(tuple(sorted(b)) for b in rows_bits),
    )


def _paar(rows: list[set[int]], inputs: int) -> tuple[list[tuple[int, int, int]], list[int], int]:
    """Greedy CSE: repeatedly name the pair of signals that most rows share."""
    rows = [set(r) for r in rows]
    steps: list[tuple[int, int, int]] = []
    nxt = inputs
    while True:
        counts: dict[tuple[int, int], int] = {}
        for r in rows:
            if len(r) < 2:
                continue
            ordered = sorted(r)
            for i, a in enumerate(ordered):
                for b in ordered[i + 1 :]:
                    counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        (a, b), best = max(counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if best < 2:
            # No sharing left: finish every row as a chain.
            for r in rows:
                while len(r) >= 2:
                    x, y = sorted(r)[:2]
                    steps.append((nxt, x, y))
                    r.difference_update((x, y))
                    r.add(nxt)
                    nxt += 1
            break
        steps.append((nxt, a, b))
        for r in rows:
            if a in r and b in r:
                r.difference_update((a, b))
                r.add(nxt)
        nxt += 1
    outputs = [next(iter(r)) if r else -1 for r in rows]
    return steps, outputs, nxt


def _chain(rows: list[set[int]], inputs: int) -> tuple[list[tuple[int, int, int]], list[int], int]:
    steps: list[tuple[int, int, int]] = []
    outputs: list[int] = []
    nxt = inputs
    for r in rows:
        ordered = sorted(r)
        if not ordered:
            outputs.append(-1)
            continue
        acc = ordered[0]
        for x in ordered[1:]:
            steps.append((nxt, acc, x))
            acc = nxt
            nxt += 1
        outputs.append(acc)
    return steps, outputs, nxt


def _allocate(
    inputs: int, nsignals: int, steps: list[tuple[int, int, int]], outputs: list[int]
) -> XorProgram:
    """Map temporaries onto as few scratch planes as liveness allows."""
    last_use: dict[int, int] = {}
    for pos, (_dst, a, b) in enumerate(steps):
        last_use[a] = pos
        last_use[b] = pos
    end = len(steps)
    for sig in outputs:
        if sig >= 0:
            last_use[sig] = end  # outputs live to the end
    free: list[int] = []
    mapping: dict[int, int] = {i: i for i in range(inputs)}
    count = 0
    new_steps: list[tuple[int, int, int]] = []
    for pos, (dst, a, b) in enumerate(steps):
        ra, rb = mapping[a], mapping[b]
        for sig in (a, b):
            if sig >= inputs and last_use.get(sig) == pos and mapping[sig] not in free:
                free.append(mapping[sig])
        if free:
            reg = free.pop()
        else:
            reg = inputs + count
            count += 1
        mapping[dst] = reg
        new_steps.append((reg, ra, rb))
        if last_use.get(dst) is None:  # dead value (cannot happen for Paar output)
            free.append(reg)
    # Registers holding outputs must not be reused by a later step: guaranteed because
    # outputs live to the end.  Two rows may share a signal (identical rows).
    return XorProgram(
        inputs=inputs,
        temps=count,
        steps=tuple(new_steps),
        outputs=tuple(mapping[s] if s >= 0 else -1 for s in outputs),
    )


def to_elements(block: bytes | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """The GF(2^8) elements of a bit-sliced block, one per byte (for scalar code)."""
    data = np.frombuffer(block, dtype=np.uint8) if isinstance(block, bytes) else block
    if data.size % BLOCK_ALIGN:
        raise ValueError("block length must be a multiple of 64 bytes")
    planes = data.reshape(8, -1)
    bits = np.unpackbits(planes, axis=1, bitorder="little")  # (8, B): bit p of element j
    return np.packbits(bits.T, axis=1, bitorder="little").reshape(-1)


def from_elements(elements: bytes | npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Inverse of :func:`to_elements`."""
    data = np.frombuffer(elements, dtype=np.uint8) if isinstance(elements, bytes) else elements
    if data.size % BLOCK_ALIGN:
        raise ValueError("length must be a multiple of 64 bytes")
    bits = np.unpackbits(data.reshape(-1, 1), axis=1, bitorder="little")  # (B, 8)
    return np.packbits(bits.T, axis=1, bitorder="little").reshape(-1)
