"""Refreshing fragments: new fragments of the same file, with which the old ones are
useless (see ``docs/formats.md``, *Refresh*).

* ``shamir``: a random sharing of zero is added to every payload (fresh shares of the
  same plaintext) and the fragment-tag key ``K_f`` is replaced; ``K_p`` keeps its value
  under new key shares.  Old and new payloads lie on different polynomials.
* ``ssms``: the payloads are ciphertext pieces, so re-randomising the key shares alone
  would leave old pieces decryptable with the new ones' keys.  Every block is decrypted
  with the old keys and encrypted again under fresh ``K_p || K_f`` (a new data key),
  erasure-coded and tagged anew, one block at a time (constant memory; the plaintext
  of one block is held on the client, which already holds all n fragments).  Format
  version 1 ``ssms`` fragments come out as version 2.

Both need all n fragments intact (repair first); the generation goes up by one and
the object id stays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.core.fragfmt import (
    KEY_MATERIAL,
    TAG_SIZE,
    VERSION,
    FragmentHeader,
    TagKeys,
    piece_length,
)
from tessera.core.fragread import Blocks, Opened, carried_tag, held, open_fragments, tag_at
from tessera.core.fragsplit import BlockSplitter, gcm_nonce, make_headers, share_keys
from tessera.core.rng import RandomSource, default_rng
from tessera.core.sealing import PlaneSealer
from tessera.core.shamir import as_planes, interpolate_block, split_block
from tessera.errors import InsufficientSharesError, IntegrityError, InvalidShareError

__all__ = ["refresh_stream"]


def refresh_stream(
    srcs: Sequence[BinaryIO], dsts: Sequence[BinaryIO], *, rng: RandomSource | None = None
) -> FragmentHeader:
    """Write all n fragments anew (same file, new generation); ``dsts[i]`` receives
    index ``i + 1``.  Returns fragment 1's new header.

    Needs every fragment intact (repair first).  Stale fragments never combine with
    refreshed ones, and (ssms) their ciphertext pieces are useless under the new keys.
    """
    rng = rng or default_rng()
    opened = open_fragments(srcs)
    h = opened.header
    if len(opened.sources) != h.n or len(dsts) != h.n:
        raise InsufficientSharesError("refresh needs all n fragments intact (repair first)")
    if h.scheme == "ssms":
        return _reencrypt(opened, dsts, rng)
    return _rerandomise(opened, dsts, rng)


def _write_headers(
    opened: Opened,
    dsts: Sequence[BinaryIO],
    shares: list[bytes],
    keys: TagKeys,
    version: int,
) -> FragmentHeader:
    h = opened.header
    headers = make_headers(
        scheme=h.scheme,
        k=h.k,
        n=h.n,
        object_id=h.object_id,
        generation=h.generation + 1,
        padded=h.padded_size,
        block_size=h.block_size,
        key_shares=shares,
        keys=keys,
        version=version,
    )
    for dst, nh in zip(dsts, headers, strict=True):
        dst.write(nh.to_bytes())
    return headers[0]


def _checked(opened: Opened, readers: list[Blocks], b: int) -> tuple[list[np.ndarray], list[bytes]]:
    """Block ``b`` of all n fragments (sources sorted by index), every payload
    authenticated, and their tag lists."""
    reads = [r.read(b) for r in readers]
    lists = [t for _p, t in reads]
    for i, (p, _t) in enumerate(reads):
        if carried_tag(opened.keys, i + 1, b, p, lists) is None:
            raise InvalidShareError(f"fragment {i + 1} is damaged in block {b}: repair first")
    return [p for p, _t in reads], lists


# ---------------------------------------------------------------------------- shamir


def _rerandomise(opened: Opened, dsts: Sequence[BinaryIO], rng: RandomSource) -> FragmentHeader:
    """shamir: add a random sharing of zero to every payload, replace ``K_f``."""
    h = opened.header
    n, k = h.n, h.k
    # K_p keeps its value under new shares; K_f is replaced.
    zero_p = share_keys(bytes(KEY_MATERIAL), k, n, rng)
    new_f = rng.random_bytes(32)
    fresh_f = share_keys(bytes(32) + new_f, k, n, rng)
    shares = []
    for i in range(1, n + 1):
        old = np.frombuffer(opened.key_shares[i], dtype=np.uint8)
        zp = np.frombuffer(zero_p[i - 1], dtype=np.uint8)
        ff = np.frombuffer(fresh_f[i - 1], dtype=np.uint8)
        shares.append((old[:32] ^ zp[:32]).tobytes() + ff[32:].tobytes())
    keys = TagKeys(opened.keys.data_key + new_f, n)
    first = _write_headers(opened, dsts, shares, keys, h.version)
    readers = [Blocks(s) for s in opened.sources]
    zeros = np.zeros(0, dtype=np.uint8)
    for b in range(len(readers[0].lengths)):
        payloads, lists = _checked(opened, readers, b)
        block_tag = _plaintext_tag(opened, b, payloads, lists)
        if zeros.size != payloads[0].size:
            zeros = np.zeros(payloads[0].size, dtype=np.uint8)
        deltas = [np.empty_like(zeros) for _ in range(n)]
        split_block(as_planes(zeros), [as_planes(d) for d in deltas], k, rng)
        for p, d in zip(payloads, deltas, strict=True):
            np.bitwise_xor(p, d, out=p)
        new_tags = b"".join(keys.payload_tag(i + 1, b, payloads[i]) for i in range(n))
        for dst, p in zip(dsts, payloads, strict=True):
            dst.write(p.data)
            dst.write(new_tags + block_tag)
    return first


def _plaintext_tag(opened: Opened, b: int, payloads: list[np.ndarray], lists: list[bytes]) -> bytes:
    """The plaintext tag of block ``b`` (kept: ``K_p`` survives a shamir refresh): the
    value a strict majority of the n lists carries, else the one the restored
    plaintext proves (formed in memory for this block only)."""
    n, k = opened.header.n, opened.header.k
    value, count = Counter(tag_at(t, n) for t in lists).most_common(1)[0]
    if 2 * count > len(lists):
        return value
    plain = np.empty_like(payloads[0])
    interpolate_block(
        list(range(1, k + 1)), [as_planes(p) for p in payloads[:k]], [0], [as_planes(plain)]
    )
    mine = opened.keys.plaintext_tag(b, opened.keys.inner_planes(plain))
    if not held(mine, lists, n):
        raise IntegrityError(f"block {b} does not authenticate: repair first")
    return mine


# ------------------------------------------------------------------------------ ssms


class _Decryptor:
    """Decrypts one ssms block at a time from its k ciphertext pieces (fragments
    1..k), after authenticating them (v2: the data tag; v1: the AES-GCM tag)."""

    def __init__(self, opened: Opened) -> None:
        h = opened.header
        self.h, self.keys = h, opened.keys
        size = h.k * piece_length(min(h.block_size, h.padded_size), h.k)
        self.ct = np.empty(size, dtype=np.uint8)
        self.out = np.empty(size + TAG_SIZE, dtype=np.uint8)  # AES-CTR wants room
        self.sealer = PlaneSealer(self.keys.inner_key) if h.version > 1 else None
        self.gcm = AESGCM(self.keys.data_key) if h.version == 1 else None

    def open(self, b: int, blen: int, pieces: list[np.ndarray], lists: list[bytes]) -> np.ndarray:
        """The plaintext of block ``b`` (a view valid until the next call)."""
        k, plen = self.h.k, pieces[0].size
        ct = self.ct[: k * plen]
        for j, piece in enumerate(pieces):
            ct[j * plen : (j + 1) * plen] = piece
        if self.sealer is not None:
            inner = b"".join(
                x for j in range(k) for x in self.keys.inner_planes(ct[j * plen : (j + 1) * plen])
            )
            if not held(self.keys.block_tag(b, inner), lists, self.h.n):
                raise IntegrityError(f"block {b} does not authenticate: repair first")
            self.sealer.open(b, ct, self.out, 8 * k)
            return self.out[:blen]
        assert self.gcm is not None
        try:
            self.gcm.decrypt_into(
                gcm_nonce(b), ct[: blen + TAG_SIZE].data, self.h.object_id, self.out[:blen].data
            )
        except InvalidTag:
            raise IntegrityError(f"block {b} does not authenticate: repair first") from None
        return self.out[:blen]


def _reencrypt(opened: Opened, dsts: Sequence[BinaryIO], rng: RandomSource) -> FragmentHeader:
    """ssms: decrypt every block and split it again under fresh keys (format v2)."""
    h = opened.header
    n, k = h.n, h.k
    material = rng.random_bytes(KEY_MATERIAL)
    keys = TagKeys(material, n)
    first = _write_headers(opened, dsts, share_keys(material, k, n, rng), keys, VERSION)
    block = min(h.block_size, h.padded_size)
    splitter = BlockSplitter("ssms", k, n, material, rng, h.object_id, block)
    decryptor = _Decryptor(opened)
    readers = [Blocks(s) for s in opened.sources]
    for b, blen in enumerate(readers[0].lengths):
        payloads, lists = _checked(opened, readers, b)
        splitter.plain[:blen] = decryptor.open(b, blen, payloads[:k], lists)
        tags = splitter.share(b, blen)
        for out, dst in zip(splitter.outs(blen), dsts, strict=True):
            dst.write(out.data)
            dst.write(tags)
    return first
