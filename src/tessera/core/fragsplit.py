"""Splitting a stream into fragments (see :mod:`tessera.core.fragfmt` for the format).

Each block is read into a reused slot (no page faults per block), shared and tagged
in place, and its n records written.  Worker threads and worker processes were both
measured here and dropped: numpy's many short XOR calls fight over the GIL (threads ran
slower than one), and forked workers gained at most ~10-25 % while fragments to disk are
write-bound anyway (~5 bytes written per byte split at 3-of-5).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
from tessera.core.rng import RandomSource, default_rng
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


@dataclass
class _Slot:
    """Buffers of one block (reused, so no page faults per block)."""

    plain: U8
    region: U8  # the n payloads back to back; for ssms the first k are the ciphertext


class _BlockSplitter:
    """Shares and tags one block held in a slot."""

    def __init__(
        self, scheme: str, k: int, n: int, keys: TagKeys, rng: RandomSource, object_id: bytes
    ) -> None:
        self.scheme, self.k, self.n = scheme, k, n
        self.keys, self.rng, self.object_id = keys, rng, object_id
        self.gcm = AESGCM(keys.data_key) if scheme == "ssms" else None
        self.slot = _Slot(np.empty(0, dtype=np.uint8), np.empty(0, dtype=np.uint8))

    def allocate(self, block_size: int) -> None:
        """Buffers for blocks of up to ``block_size`` bytes."""
        plen = payload_length(self.scheme, block_size, self.k)
        self.slot = _Slot(
            np.empty(block_size, dtype=np.uint8), np.empty(self.n * plen, dtype=np.uint8)
        )

    def outs(self, slot: _Slot, blen: int) -> list[U8]:
        """The n payload views of a block of ``blen`` plaintext bytes."""
        plen = payload_length(self.scheme, blen, self.k)
        return [slot.region[i * plen : (i + 1) * plen] for i in range(self.n)]

    def tags(self, b: int, blen: int) -> bytes:
        """Share and encode block ``b`` (read into the slot); return its tag list."""
        k, n = self.k, self.n
        slot = self.slot
        plain = slot.plain[:blen]
        outs = self.outs(slot, blen)
        if self.gcm is None:
            split_block(as_planes(plain), [as_planes(o) for o in outs], k, self.rng)
            inputs = [plain, *outs[: k - 1]]
            first_derived = k
            program = evaluation_program((0, *range(1, k)), tuple(range(k, n + 1)))
        else:
            plen = outs[0].size
            ct = slot.region[: plen * k]
            written = self.gcm.encrypt_into(
                gcm_nonce(b), plain.data, self.object_id, ct[: blen + TAG_SIZE].data
            )
            ct[written:] = 0
            if n > k:
                interpolate_block(
                    range(1, k + 1),
                    [as_planes(o) for o in outs[:k]],
                    range(k + 1, n + 1),
                    [as_planes(o) for o in outs[k:]],
                )
            inputs = outs[:k]
            first_derived = k + 1
            program = evaluation_program(tuple(range(1, k + 1)), tuple(range(k + 1, n + 1)))
        return split_tags(
            self.keys, b, inputs, first_derived, program, n, plaintext=self.gcm is None
        )


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
) -> FragmentHeader:
    """Split ``size`` bytes of ``src`` into ``len(dsts)`` fragments (``dsts[i]`` gets
    index ``i + 1``), any ``k`` of which restore it.  Returns fragment 1's header.

    """
    n = len(dsts)
    check_parameters(k, n)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r} (shamir or ssms)")
    if block_size <= 0 or block_size % 64:
        raise ValueError("block_size must be a positive multiple of 64")
    if size < 0:
        raise ValueError("size must be >= 0")
    rng = rng or default_rng()
    oid = object_id if object_id is not None else rng.random_bytes(16)
    if len(oid) != 16:
        raise ValueError("object_id must be 16 bytes")
    padded = padded_size(size + INNER_HEADER_SIZE)
    material = rng.random_bytes(KEY_MATERIAL)
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
    reader = _Reader(src, size)
    lengths = block_lengths(padded, block_size)
    splitter = _BlockSplitter(scheme, k, n, keys, rng, oid)
    splitter.allocate(min(block_size, padded))
    _pipeline(splitter, reader, dsts, lengths, size, progress)
    if reader.left:
        raise InputError("input is longer than its stated size")
    return headers[0]


def _pipeline(
    splitter: _BlockSplitter,
    reader: _Reader,
    dsts: Sequence[BinaryIO],
    lengths: list[int],
    size: int,
    progress: Progress | None,
) -> None:
    """Read each block into the slot, share it, write the n records."""
    slot = splitter.slot
    for b, blen in enumerate(lengths):
        view = slot.plain.data
        if b == 0:
            view[:INNER_HEADER_SIZE] = inner_header(size)
            reader.fill(view[INNER_HEADER_SIZE:blen])
        else:
            reader.fill(view[:blen])
        tags = splitter.tags(b, blen)
        for out, dst in zip(splitter.outs(slot, blen), dsts, strict=True):
            dst.write(out.data)
            dst.write(tags)
        if progress:
            # Block b holds plaintext bytes [b*B - 16, b*B - 16 + blen); count only
            # real bytes, not the inner header or the padding.
            start = max(b * lengths[0] - INNER_HEADER_SIZE, 0)
            end = min(size, b * lengths[0] - INNER_HEADER_SIZE + blen)
            if end > start:
                progress(end - start)


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
    inner hashes combine linearly (see :class:`TagKeys`).
    """
    inner = [h for arr in inputs for h in keys.inner_planes(arr)]
    plane_bytes = inputs[0].size // 8
    offset = 1 if plaintext else 0  # shamir: input 0 is the plaintext itself
    tags = []
    for index in range(1, first_derived):
        own = inner[8 * (index - 1 + offset) : 8 * (index + offset)]
        tags.append(keys.fragment_tag(index, b, own))
    for j, index in enumerate(range(first_derived, n + 1)):
        rows = program.sources[8 * j : 8 * (j + 1)]
        combined = [keys.combine_inner([inner[q] for q in row], plane_bytes) for row in rows]
        tags.append(keys.fragment_tag(index, b, combined))
    ptag = keys.plaintext_tag(b, inner[:8]) if plaintext else ZERO_TAG
    return b"".join(tags) + ptag
