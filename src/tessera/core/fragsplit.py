"""Splitting a stream into fragments (see :mod:`tessera.core.fragfmt` for the format).

Blocks are processed by a small pipeline: the calling thread reads plaintext blocks
and writes finished fragment records in order, while two worker threads share,
encode and tag blocks.  numpy's XOR loops and OpenSSL (AES-CTR, AES-GCM, GHASH) release
the GIL, so on two cores the arithmetic of one block overlaps with the next one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
WORKERS = 2
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
    """Buffers of one block in flight (reused, so no page faults per block)."""

    plain: U8
    payloads: list[U8]
    ct: U8  # ssms: the k data pieces are views into this buffer


class _BlockSplitter:
    """Shares and tags one block; safe to call from several threads at once."""

    def __init__(
        self, scheme: str, k: int, n: int, keys: TagKeys, rng: RandomSource, object_id: bytes
    ) -> None:
        self.scheme, self.k, self.n = scheme, k, n
        self.keys, self.rng, self.object_id = keys, rng, object_id
        self.gcm = AESGCM(keys.data_key) if scheme == "ssms" else None

    def slot(self, block_size: int) -> _Slot:
        plen = payload_length(self.scheme, block_size, self.k)
        ct = np.empty(plen * self.k if self.gcm else 0, dtype=np.uint8)
        if self.gcm:
            payloads = [ct[j * plen : (j + 1) * plen] for j in range(self.k)]
            payloads += [np.empty(plen, dtype=np.uint8) for _ in range(self.n - self.k)]
        else:
            payloads = [np.empty(plen, dtype=np.uint8) for _ in range(self.n)]
        return _Slot(np.empty(block_size, dtype=np.uint8), payloads, ct)

    def __call__(self, b: int, blen: int, slot: _Slot) -> tuple[list[U8], bytes]:
        k, n = self.k, self.n
        plen = payload_length(self.scheme, blen, k)
        plain = slot.plain[:blen]
        if self.gcm is None:
            outs = [p[:plen] for p in slot.payloads]
            split_block(as_planes(plain), [as_planes(o) for o in outs], k, self.rng)
            inputs = [plain, *outs[: k - 1]]
            first_derived = k
            program = evaluation_program((0, *range(1, k)), tuple(range(k, n + 1)))
        else:
            ct = slot.ct[: plen * k]
            written = self.gcm.encrypt_into(
                gcm_nonce(b), plain.data, self.object_id, ct[: blen + TAG_SIZE].data
            )
            ct[written:] = 0
            outs = [ct[j * plen : (j + 1) * plen] for j in range(k)]
            outs += [p[:plen] for p in slot.payloads[k:]]
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
        tags = split_tags(
            self.keys, b, inputs, first_derived, program, n, plaintext=self.gcm is None
        )
        return outs, tags


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
    index ``i + 1``), any ``k`` of which restore it.  Returns fragment 1's header."""
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
    # A deterministic source (tests, known answers) must see blocks in order.
    workers = 1 if len(lengths) == 1 or getattr(rng, "deterministic", False) else WORKERS
    window = workers + 1
    slots = [splitter.slot(min(block_size, padded)) for _ in range(min(window, len(lengths)))]
    pending: deque[tuple[Future[tuple[list[U8], bytes]], int]] = deque()

    def drain_one() -> None:
        future, done_len = pending.popleft()
        outs, tags = future.result()
        for out, dst in zip(outs, dsts, strict=True):
            dst.write(out.data)
            dst.write(tags)
        if progress:
            progress(done_len)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tessera-split") as pool:
        try:
            for b, blen in enumerate(lengths):
                if len(pending) == len(slots):
                    drain_one()
                slot = slots[b % len(slots)]
                view = slot.plain.data
                if b == 0:
                    view[:INNER_HEADER_SIZE] = inner_header(size)
                    reader.fill(view[INNER_HEADER_SIZE:blen])
                else:
                    reader.fill(view[:blen])
                if workers == 1:
                    future: Future[tuple[list[U8], bytes]] = Future()
                    future.set_result(splitter(b, blen, slot))
                else:
                    future = pool.submit(splitter, b, blen, slot)
                pending.append((future, blen - INNER_HEADER_SIZE if b == 0 else blen))
            while pending:
                drain_one()
        finally:
            for future, _len in pending:
                future.cancel()
    if reader.left:
        raise InputError("input is longer than its stated size")
    return headers[0]


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
