"""Splitting a stream into fragments (see :mod:`tessera.core.fragfmt` for the format).

Each block is read into a reused slot (no page faults per block), shared and tagged
in place by a worker thread, and its n records written in order by the calling thread
(:mod:`tessera.core.pipeline`).  The heavy steps release the GIL: keystream straight
into the fragments (AES-CTR), the compiled XOR kernel, GHASH (OpenSSL).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from tessera.core.bitslice import XorProgram, from_elements, to_elements
from tessera.core.fragfmt import (
    INNER_HEADER_SIZE,
    KEY_MATERIAL,
    MAX_BLOCKS,
    SCHEMES,
    VERSION,
    FragmentHeader,
    TagKeys,
    block_lengths,
    inner_header,
    padded_size,
    payload_length,
)
from tessera.core.pipeline import default_workers, run_ordered
from tessera.core.rng import Drbg, RandomSource, default_rng
from tessera.core.sealing import PlaneSealer
from tessera.core.shamir import (
    as_planes,
    check_parameters,
    evaluation_program,
    interpolate_block,
    split_block,
)
from tessera.errors import InputError

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "BlockSplitter",
    "default_block_size",
    "derived_tag_list",
    "gcm_nonce",
    "make_headers",
    "share_keys",
    "split_stream",
]

DEFAULT_BLOCK_SIZE = 1 << 20
"""Block size of shamir splits with few fragments (see :func:`default_block_size`)."""
_SLOT_TARGET = 64 << 20
Progress = Callable[[int], None]
U8 = npt.NDArray[np.uint8]
U64 = npt.NDArray[np.uint64]


def share_keys(material: bytes, k: int, n: int, rng: RandomSource) -> list[bytes]:
    """Byte-wise Shamir shares of the key material (one GF(2^8) element per byte)."""
    outs = [np.empty((8, KEY_MATERIAL // 64), dtype=np.uint64) for _ in range(n)]
    split_block(as_planes(from_elements(material)), outs, k, rng)
    return [to_elements(o.reshape(-1).view(np.uint8)).tobytes() for o in outs]


def make_headers(
    *,
    scheme: str,
    k: int,
    n: int,
    object_id: bytes,
    generation: int,
    padded: int,
    block_size: int,
    key_shares: Sequence[bytes],
    keys: TagKeys,
    version: int = VERSION,
) -> list[FragmentHeader]:
    """The n authenticated headers of one object generation."""
    result = []
    for i in range(1, n + 1):
        h = FragmentHeader(
            version=version,
            scheme=scheme,
            k=k,
            n=n,
            index=i,
            object_id=object_id,
            generation=generation,
            padded_size=padded,
            block_size=block_size,
            key_share=key_shares[i - 1],
        )
        result.append(replace(h, tag=keys.header_tag(h)))
    return result


def default_block_size(scheme: str, k: int, n: int) -> int:
    """Plaintext bytes per block when the caller does not choose.

    Measured here: shamir is fastest at ~1 MiB (its n full-size shares per block
    stream through the caches), ssms at ~4 MiB (its per-plane calls amortise).  Large
    n shrinks the block so one block's buffers stay near 64 MiB.
    """
    target = DEFAULT_BLOCK_SIZE if scheme == "shamir" else 4 * DEFAULT_BLOCK_SIZE
    per_byte = 1 + (n if scheme == "shamir" else n / k)
    cap = int(_SLOT_TARGET / per_byte)
    return max(64 << 10, min(target, cap)) // 64 * 64


def gcm_nonce(block: int) -> bytes:
    """AES-GCM nonce of block ``block`` (ssms, format v1)."""
    return block.to_bytes(12, "big")


class _Reader:
    """Reads exactly ``size`` bytes from a stream, then zero padding."""

    def __init__(self, src: BinaryIO, size: int) -> None:
        self.src = src
        self.left = size

    def fill(self, view: memoryview) -> None:
        pos = 0
        want = min(len(view), self.left)
        while pos < want:
            got = self.src.readinto(view[pos:want])  # type: ignore[attr-defined]
            if not got:
                raise InputError("input ended before its stated size (was it changed?)")
            pos += got
        self.left -= want
        if want < len(view):
            view[want:] = bytes(len(view) - want)


# Keystream is written straight into the fragments (no copy): AES-CTR's update_into
# wants 15 bytes of room past the end, so the payload region carries a little slack.
_SLACK = 64
# Slots beyond one per worker let the calling thread read the next block while the
# workers compute; past this many bytes per slot, fewer slots are used.
_SLOT_BUDGET = 96 << 20


class BlockSplitter:
    """One slot: the buffers of one block, and the keys and randomness to share it.

    Each slot is used by one thread at a time, so it has its own AES contexts and its
    own random generator (see :func:`_slot_rngs`).
    """

    def __init__(
        self,
        scheme: str,
        k: int,
        n: int,
        material: bytes,
        rng: RandomSource,
        object_id: bytes,
        block_size: int,
    ) -> None:
        self.scheme, self.k, self.n = scheme, k, n
        self.keys, self.rng, self.object_id = TagKeys(material, n), rng, object_id
        self.sealer = PlaneSealer(self.keys.inner_key) if scheme == "ssms" else None
        plen = payload_length(scheme, block_size, k)
        # ssms encrypts the block padded with zeros to k whole pieces.
        self.plain = np.empty(k * plen if scheme == "ssms" else block_size, dtype=np.uint8)
        self.region = np.empty(n * plen + _SLACK, dtype=np.uint8)

    def outs(self, blen: int) -> list[U8]:
        """The n payload views of a block of ``blen`` plaintext bytes."""
        plen = payload_length(self.scheme, blen, self.k)
        return [self.region[i * plen : (i + 1) * plen] for i in range(self.n)]

    def share(self, b: int, blen: int) -> bytes:
        """Share and encode block ``b`` (read into ``plain``); return its tag list."""
        k, n = self.k, self.n
        outs = self.outs(blen)
        plen = outs[0].size
        if self.sealer is None:
            plain = self.plain[:blen]
            # Fragments 1..k-1 are keystream, written in place in one call.
            _keystream(self.rng, self.region, (k - 1) * plen)
            known, targets = (0, *range(1, k)), tuple(range(k, n + 1))
            inputs = [as_planes(block) for block in (plain, *outs[: k - 1])]
            interpolate_block(known, inputs, targets, [as_planes(o) for o in outs[k - 1 :]])
            program = evaluation_program(known, targets)
            inner = _inner_hashes(self.keys, [plain, *outs[: k - 1]])
            last = self.keys.block_tag(b, inner[:8].tobytes())
            return _tag_list(self.keys, b, inner, 8, plen // 8, k, program, n, last)
        padded = self.plain[: k * plen]
        padded[blen:] = 0
        inner = self.sealer.seal(b, padded, self.region, 8 * k)
        known, targets = tuple(range(1, k + 1)), tuple(range(k + 1, n + 1))
        if n > k:
            interpolate_block(
                known, [as_planes(o) for o in outs[:k]], targets, [as_planes(o) for o in outs[k:]]
            )
        program = evaluation_program(known, targets)
        last = self.keys.block_tag(b, inner.tobytes())
        return _tag_list(self.keys, b, inner, 0, plen // 8, k + 1, program, n, last)


def _keystream(rng: RandomSource, region: U8, count: int) -> None:
    """Overwrite ``region[:count]`` with random bytes (in place for a Drbg)."""
    if isinstance(rng, Drbg):
        rng.fill_prefix(region, count)
    else:
        rng.fill(region[:count])


def _slot_rngs(rng: RandomSource | None, count: int) -> list[RandomSource]:
    """A generator per slot: fresh DRBGs keyed from the system (or from ``rng``), or
    ``rng`` itself for a single slot."""
    if rng is None:
        return [Drbg() for _ in range(count)] if count > 1 else [default_rng()]
    if count == 1:
        return [rng]
    return [Drbg(rng.random_bytes(32)) for _ in range(count)]


def split_stream(
    src: BinaryIO,
    dsts: Sequence[BinaryIO],
    *,
    k: int,
    size: int,
    scheme: str = "shamir",
    rng: RandomSource | None = None,
    object_id: bytes | None = None,
    block_size: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> FragmentHeader:
    """Split ``size`` bytes of ``src`` into ``len(dsts)`` fragments (``dsts[i]`` gets
    index ``i + 1``), any ``k`` of which restore it.  Returns fragment 1's header.

    ``block_size`` defaults to :func:`default_block_size`.  Blocks are shared on
    ``workers`` threads (default: one per CPU, see
    :func:`tessera.core.pipeline.default_workers`) and written in order from the
    calling thread.  A deterministic ``rng`` (tests) forces one worker, so its draws
    keep their order.
    """
    n = len(dsts)
    block_size = _checked_block_size(scheme, k, n, size, block_size)
    base_rng = rng or default_rng()
    oid = object_id if object_id is not None else base_rng.random_bytes(16)
    if len(oid) != 16:
        raise ValueError("object_id must be 16 bytes")
    padded = padded_size(size + INNER_HEADER_SIZE)
    if -(-padded // block_size) > MAX_BLOCKS:
        raise ValueError(f"a file this large needs blocks over {padded // MAX_BLOCKS} bytes")
    material = base_rng.random_bytes(KEY_MATERIAL)
    headers = _write_headers(dsts, scheme, k, oid, padded, block_size, material, base_rng)
    lengths = block_lengths(padded, block_size)
    block = min(block_size, padded)
    nworkers = _worker_count(workers, base_rng, len(lengths))
    slots = _make_slots(scheme, k, n, material, rng, oid, block, nworkers)
    reader = _Reader(src, size)
    _run_blocks(reader, dsts, slots, lengths, size, progress, nworkers)
    if reader.left:
        raise InputError("input is longer than its stated size")
    return headers[0]


def _checked_block_size(scheme: str, k: int, n: int, size: int, block_size: int | None) -> int:
    """Check split_stream's parameters; the block size (the default when None)."""
    check_parameters(k, n)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (shamir or ssms)")
    if block_size is None:
        block_size = default_block_size(scheme, k, n)
    if block_size <= 0 or block_size % 64:
        raise ValueError("block_size must be a positive multiple of 64")
    if size < 0:
        raise ValueError("size must be >= 0")
    return block_size


def _write_headers(
    dsts: Sequence[BinaryIO],
    scheme: str,
    k: int,
    oid: bytes,
    padded: int,
    block_size: int,
    material: bytes,
    rng: RandomSource,
) -> list[FragmentHeader]:
    """Make the n headers of a new object (key shares drawn from ``rng``) and write
    ``dsts[i]``'s to it."""
    n = len(dsts)
    keys = TagKeys(material, n)
    headers = make_headers(
        scheme=scheme,
        k=k,
        n=n,
        object_id=oid,
        generation=0,
        padded=padded,
        block_size=block_size,
        key_shares=share_keys(material, k, n, rng),
        keys=keys,
    )
    for dst, h in zip(dsts, headers, strict=True):
        dst.write(h.to_bytes())
    return headers


def _worker_count(workers: int | None, rng: RandomSource, blocks: int) -> int:
    """Worker threads for ``blocks`` blocks: one for a deterministic ``rng``."""
    nworkers = workers if workers is not None else default_workers()
    if getattr(rng, "deterministic", False):
        nworkers = 1
    return max(1, min(nworkers, blocks))


def _make_slots(
    scheme: str,
    k: int,
    n: int,
    material: bytes,
    rng: RandomSource | None,
    oid: bytes,
    block: int,
    nworkers: int,
) -> list[BlockSplitter]:
    """The slots of ``nworkers`` workers: one more than them, within the byte budget."""
    per_slot = block + n * payload_length(scheme, block, k)
    nslots = 1 if nworkers == 1 else max(1, min(nworkers + 1, _SLOT_BUDGET // per_slot))
    return [BlockSplitter(scheme, k, n, material, r, oid, block) for r in _slot_rngs(rng, nslots)]


def _run_blocks(
    reader: _Reader,
    dsts: Sequence[BinaryIO],
    slots: list[BlockSplitter],
    lengths: Sequence[int],
    size: int,
    progress: Progress | None,
    nworkers: int,
) -> None:
    """Read, share and write every block: blocks are loaded and stored in order on the
    calling thread, shared on ``nworkers`` threads."""

    def load(b: int, sp: BlockSplitter) -> None:
        blen = lengths[b]
        view = sp.plain.data
        if b == 0:
            view[:INNER_HEADER_SIZE] = inner_header(size)
            reader.fill(view[INNER_HEADER_SIZE:blen])
        else:
            reader.fill(view[:blen])

    def work(b: int, sp: BlockSplitter) -> bytes:
        return sp.share(b, lengths[b])

    def store(b: int, sp: BlockSplitter, tags: bytes) -> None:
        for out, dst in zip(sp.outs(lengths[b]), dsts, strict=True):
            dst.write(out.data)
            dst.write(tags)
        if progress:
            # Block b holds plaintext bytes [b*B - 16, b*B - 16 + blen); count only
            # real bytes, not the inner header or the padding.
            start = max(b * lengths[0] - INNER_HEADER_SIZE, 0)
            end = min(size, b * lengths[0] - INNER_HEADER_SIZE + lengths[b])
            if end > start:
                progress(end - start)

    run_ordered(range(len(lengths)), slots, load, work, store, workers=nworkers)


@lru_cache(maxsize=256)
def _derivation(
    program: XorProgram, derived: int, inputs: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """For the ``derived`` fragments' planes: which input planes each XORs
    (rows x 8*inputs) and whether that count is even (the inner hash then gains a
    zero plane's)."""
    rows = program.sources[: 8 * derived]
    select = np.zeros((len(rows), 8 * inputs), dtype=bool)
    for r, row in enumerate(rows):
        select[r, list(row)] = True
    even = select.sum(axis=1) % 2 == 0
    return select, even


def _inner_hashes(keys: TagKeys, payloads: Sequence[U8]) -> U64:
    """Inner hashes of the 8 planes of every payload, as a (8m, 2) uint64 array."""
    joined = b"".join(h for p in payloads for h in keys.inner_planes(p))
    return np.frombuffer(joined, dtype=np.uint64).reshape(-1, 2)


def _tag_list(
    keys: TagKeys,
    b: int,
    inner: U64,
    own: int,
    plane_bytes: int,
    first_derived: int,
    program: XorProgram,
    n: int,
    last: bytes,
) -> bytes:
    """The tag list of block b from the inner hashes of the program's input planes.

    Fragments ``1 .. first_derived-1`` are inputs: their rows of ``inner`` start at
    row ``own`` (shamir: 8, after the plaintext's planes; ssms: 0).  The others are
    XORs of input planes, so their inner hashes combine linearly (see
    :class:`TagKeys`), all at once in numpy.  ``last`` closes the list (the plaintext
    or data tag).
    """
    tags = [
        keys.fragment_tag_raw(index, b, inner[own + 8 * (index - 1) : own + 8 * index].tobytes())
        for index in range(1, first_derived)
    ]
    if first_derived <= n:
        select, even = _derivation(program, n + 1 - first_derived, inner.shape[0] // 8)
        derived = np.bitwise_xor.reduce(np.where(select[:, :, None], inner[None], 0), axis=1)
        derived[even] ^= np.frombuffer(keys.zero(plane_bytes), dtype=np.uint64)
        raw = derived.tobytes()
        for j, index in enumerate(range(first_derived, n + 1)):
            tags.append(keys.fragment_tag_raw(index, b, raw[128 * j : 128 * (j + 1)]))
    return b"".join(tags) + last


@lru_cache(maxsize=256)
def _selection(
    xs: tuple[int, ...], targets: tuple[int, ...]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """For the planes at ``targets`` from those at ``xs``: the input planes each XORs,
    flattened (an empty row points at an extra zero row ``8 * len(xs)``), where each
    row starts, and whether its count is even (see :func:`_derivation`)."""
    select, even = _derivation(evaluation_program(xs, targets), len(targets), len(xs))
    flat: list[int] = []
    starts: list[int] = []
    for row in select:
        starts.append(len(flat))
        picked = np.flatnonzero(row).tolist()
        flat += picked or [8 * len(xs)]
    return np.array(flat, dtype=np.intp), np.array(starts, dtype=np.intp), even


def derived_tag_list(
    keys: TagKeys,
    b: int,
    header: FragmentHeader,
    xs: Sequence[int],
    inner: U64,
    plane_bytes: int,
) -> bytes:
    """The whole tag list of block ``b`` from the inner hashes (an ``(8k, 2)`` uint64
    array, 8 rows per payload) of ``k`` authenticated payloads at ``xs``: every
    fragment's payload, the plaintext (shamir) and the ciphertext pieces (ssms) are
    XORs of their planes, so their inner hashes follow (see :class:`TagKeys`)."""
    n, k = header.n, header.k
    shamir = header.scheme == "shamir"
    targets = (*range(1, n + 1), 0) if shamir else tuple(range(1, n + 1))
    flat, starts, even = _selection(tuple(xs), targets)
    padded = np.concatenate([inner, np.zeros((1, 2), dtype=np.uint64)])
    derived = np.bitwise_xor.reduceat(padded[flat], starts, axis=0)
    derived[even] ^= np.frombuffer(keys.zero(plane_bytes), dtype=np.uint64)
    raw = derived.tobytes()
    tags = [keys.fragment_tag_raw(i, b, raw[128 * (i - 1) : 128 * i]) for i in range(1, n + 1)]
    if shamir:
        last = keys.block_tag(b, raw[128 * n : 128 * (n + 1)])
    elif header.version > 1:
        last = keys.block_tag(b, raw[: 128 * k])  # pieces 1..k: the ciphertext
    else:
        last = bytes(16)  # v1 ssms: the AES-GCM tag inside the ciphertext
    return b"".join(tags) + last
