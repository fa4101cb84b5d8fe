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
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.core.bitslice import XorProgram, from_elements, to_elements
from tessera.core.fragfmt import (
    INNER_HEADER_SIZE,
    KEY_MATERIAL,
    SCHEMES,
    TAG_SIZE,
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
from tessera.core.shamir import (
    as_planes,
    check_parameters,
    evaluation_program,
    split_block,
)
from tessera.errors import InputError

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "gcm_nonce",
    "make_headers",
    "share_keys",
    "split_stream",
]

DEFAULT_BLOCK_SIZE = 1 << 20
Progress = Callable[[int], None]
ZERO_TAG = bytes(TAG_SIZE)
U8 = npt.NDArray[np.uint8]


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
) -> list[FragmentHeader]:
    """The n authenticated headers of one object generation."""
    result = []
    for i in range(1, n + 1):
        h = FragmentHeader(
            version=VERSION,
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


def gcm_nonce(block: int) -> bytes:
    """AES-GCM nonce of block ``block`` (ssms)."""
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


class _BlockSplitter:
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
        self.gcm = AESGCM(self.keys.data_key) if scheme == "ssms" else None
        plen = payload_length(scheme, block_size, k)
        self.plain = np.empty(block_size, dtype=np.uint8)
        self.region = np.empty(n * plen + _SLACK, dtype=np.uint8)
        self.tag_list = b""

    def outs(self, blen: int) -> list[U8]:
        """The n payload views of a block of ``blen`` plaintext bytes."""
        plen = payload_length(self.scheme, blen, self.k)
        return [self.region[i * plen : (i + 1) * plen] for i in range(self.n)]

    def share(self, b: int, blen: int) -> bytes:
        """Share and encode block ``b`` (read into ``plain``); return its tag list."""
        k, n = self.k, self.n
        plain = self.plain[:blen]
        outs = self.outs(blen)
        plen = outs[0].size
        if self.gcm is None:
            # Fragments 1..k-1 are keystream, written in place in one call.
            _keystream(self.rng, self.region, (k - 1) * plen)
            program = evaluation_program((0, *range(1, k)), tuple(range(k, n + 1)))
            program.run(
                [row for block in (plain, *outs[: k - 1]) for row in as_planes(block)],
                [row for block in outs[k - 1 :] for row in as_planes(block)],
            )
            inputs = [plain, *outs[: k - 1]]
            first_derived = k
        else:
            ct = self.region[: plen * k]
            written = self.gcm.encrypt_into(
                gcm_nonce(b), plain.data, self.object_id, ct[: blen + TAG_SIZE].data
            )
            ct[written:] = 0
            program = evaluation_program(tuple(range(1, k + 1)), tuple(range(k + 1, n + 1)))
            if n > k:
                program.run(
                    [row for block in outs[:k] for row in as_planes(block)],
                    [row for block in outs[k:] for row in as_planes(block)],
                )
            inputs = outs[:k]
            first_derived = k + 1
        return split_tags(
            self.keys, b, inputs, first_derived, program, n, plaintext=self.gcm is None
        )


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
    block_size: int = DEFAULT_BLOCK_SIZE,
    progress: Progress | None = None,
    workers: int | None = None,
) -> FragmentHeader:
    """Split ``size`` bytes of ``src`` into ``len(dsts)`` fragments (``dsts[i]`` gets
    index ``i + 1``), any ``k`` of which restore it.  Returns fragment 1's header.

    Blocks are shared on ``workers`` threads (default: one per CPU, see
    :func:`tessera.core.pipeline.default_workers`) and written in order from the
    calling thread.  A deterministic ``rng`` (tests) forces one worker, so its draws
    keep their order.
    """
    n = len(dsts)
    check_parameters(k, n)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (shamir or ssms)")
    if block_size <= 0 or block_size % 64:
        raise ValueError("block_size must be a positive multiple of 64")
    if size < 0:
        raise ValueError("size must be >= 0")
    base_rng = rng or default_rng()
    oid = object_id if object_id is not None else base_rng.random_bytes(16)
    if len(oid) != 16:
        raise ValueError("object_id must be 16 bytes")
    padded = padded_size(size + INNER_HEADER_SIZE)
    material = base_rng.random_bytes(KEY_MATERIAL)
    keys = TagKeys(material, n)
    headers = make_headers(
        scheme=scheme,
        k=k,
        n=n,
        object_id=oid,
        generation=0,
        padded=padded,
        block_size=block_size,
        key_shares=share_keys(material, k, n, base_rng),
        keys=keys,
    )
    for dst, h in zip(dsts, headers, strict=True):
        dst.write(h.to_bytes())
    lengths = block_lengths(padded, block_size)
    block = min(block_size, padded)
    nworkers = workers if workers is not None else default_workers()
    if getattr(base_rng, "deterministic", False):
        nworkers = 1
    nworkers = max(1, min(nworkers, len(lengths)))
    per_slot = block + n * payload_length(scheme, block, k)
    nslots = 1 if nworkers == 1 else max(1, min(nworkers + 1, _SLOT_BUDGET // per_slot))
    rngs = _slot_rngs(rng, nslots)
    slots = [_BlockSplitter(scheme, k, n, material, r, oid, block) for r in rngs]
    reader = _Reader(src, size)

    def load(b: int, sp: _BlockSplitter) -> None:
        blen = lengths[b]
        view = sp.plain.data
        if b == 0:
            view[:INNER_HEADER_SIZE] = inner_header(size)
            reader.fill(view[INNER_HEADER_SIZE:blen])
        else:
            reader.fill(view[:blen])

    def work(b: int, sp: _BlockSplitter) -> bytes:
        return sp.share(b, lengths[b])

    def store(b: int, sp: _BlockSplitter, tags: bytes) -> None:
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
    if reader.left:
        raise InputError("input is longer than its stated size")
    return headers[0]


@lru_cache(maxsize=256)
def _derivation(
    program: XorProgram, first_derived: int, n: int, inputs: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """For the derived fragments' planes: which input planes they XOR (rows x 8*inputs)
    and whether that count is even (the inner hash then gains a zero plane's)."""
    rows = program.sources[: 8 * (n + 1 - first_derived)]
    select = np.zeros((len(rows), 8 * inputs), dtype=bool)
    for r, row in enumerate(rows):
        select[r, list(row)] = True
    even = select.sum(axis=1) % 2 == 0
    return select, even


def split_tags(
    keys: TagKeys,
    b: int,
    inputs: Sequence[U8],
    first_derived: int,
    program: XorProgram,
    n: int,
    *,
    plaintext: bool,
) -> bytes:
    """The tag list of block b, hashing only the program's inputs.

    Fragments below ``first_derived`` are inputs (shamir: inputs[1:], the random
    fragments; ssms: all k data pieces); the others are XORs of input planes whose
    inner hashes combine linearly (see :class:`TagKeys`), all at once in numpy.
    """
    inner_list = [h for arr in inputs for h in keys.inner_planes(arr)]
    inner = np.frombuffer(b"".join(inner_list), dtype=np.uint64).reshape(-1, 2)
    plane_bytes = inputs[0].size // 8
    select, even = _derivation(program, first_derived, n, len(inputs))
    derived = np.bitwise_xor.reduce(np.where(select[:, :, None], inner[None], 0), axis=1)
    zero = np.frombuffer(keys.zero(plane_bytes), dtype=np.uint64)
    derived[even] ^= zero
    derived_bytes = derived.tobytes()
    offset = 1 if plaintext else 0  # shamir: input 0 is the plaintext itself
    tags = []
    for index in range(1, first_derived):
        own = inner_list[8 * (index - 1 + offset) : 8 * (index + offset)]
        tags.append(keys.fragment_tag(index, b, own))
    for j, index in enumerate(range(first_derived, n + 1)):
        own_bytes = derived_bytes[128 * j : 128 * (j + 1)]
        tags.append(keys.fragment_tag_raw(index, b, own_bytes))
    ptag = keys.plaintext_tag(b, inner_list[:8]) if plaintext else ZERO_TAG
    return b"".join(tags) + ptag
