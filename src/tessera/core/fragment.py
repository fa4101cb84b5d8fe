"""Streaming k-of-n fragments of whole files: split, combine, verify, repair, refresh.

The format is described in :mod:`tessera.core.fragfmt` and ``docs/formats.md``.  All
operations stream block by block (default 1 MiB of plaintext), so memory stays bounded
whatever the file size, and every block is authenticated before it is used:

* ``combine_stream`` checks each restored block against its plaintext tag (shamir), or
  its ciphertext against the data tag (ssms; format v1: the AES-GCM tag), before
  writing it; when a check fails it checks the fragments'
  own tags, names the damaged ones, replaces them with spares and retries the block.
* ``verify_fragments`` checks every block of every fragment without restoring data.
* ``repair_stream`` computes a lost fragment from ``k`` others (Lagrange at its x).
* ``refresh_stream`` (:mod:`tessera.core.fragrefresh`) writes all n fragments anew:
  shamir adds a random sharing of zero, ssms re-encrypts under a fresh data key.

Sources are seekable binary files.  Output may be partly written when an error is
raised: callers write to a temporary name and rename after success.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.core.bitslice import from_elements, to_elements
from tessera.core.fragfmt import (
    INNER_HEADER_SIZE,
    KEY_MATERIAL,
    TAG_SIZE,
    FragmentHeader,
    TagKeys,
    fragment_length,
    parse_inner_header,
    payload_length,
    piece_length,
)
from tessera.core.fragread import (
    BadFragment,
    Blocks,
    CombineReport,
    Opened,
    VerifyReport,
    carried_tag,
    held,
    open_fragments,
    read_header,
    settle_tags,
    tag_at,
    tag_list_wrong,
    too_few,
)
from tessera.core.fragrefresh import refresh_stream
from tessera.core.fragsplit import (
    DEFAULT_BLOCK_SIZE,
    derived_tag_list,
    gcm_nonce,
    split_stream,
)
from tessera.core.pipeline import default_workers, run_ordered
from tessera.core.sealing import PlaneSealer
from tessera.core.shamir import as_planes, interpolate_block
from tessera.errors import (
    InputError,
    InsufficientSharesError,
    IntegrityError,
    InvalidShareError,
)

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "BadFragment",
    "CombineReport",
    "FragmentHeader",
    "VerifyReport",
    "combine_stream",
    "fragment_length",
    "read_header",
    "refresh_stream",
    "repair_stream",
    "split_stream",
    "verify_fragments",
]

Progress = Callable[[int], None]


# ------------------------------------------------------------------------- combine


class _Restorer:
    """Restores plaintext blocks from k active fragments, swapping in spares."""

    def __init__(self, opened: Opened) -> None:
        self.o = opened
        self.h = opened.header
        self.readers = [Blocks(s) for s in opened.sources]
        self.active = list(range(self.h.k))
        self.spares = list(range(self.h.k, len(self.readers)))
        self.bad = list(opened.bad)
        self.slot = self.new_slot()

    def new_slot(self) -> _Slot:
        """Buffers and cipher contexts for one block (one thread at a time): k records,
        the plaintext, the ssms ciphertext."""
        h = self.h
        record = payload_length(h.scheme, h.block_size, h.k) + TAG_SIZE * (h.n + 1)
        ssms = h.scheme == "ssms"
        ct = piece_length(h.block_size, h.k) * h.k if ssms else 0
        keys = self.o.keys
        return _Slot(
            records=[np.empty(record, dtype=np.uint8) for _ in range(h.k)],
            # v2 ssms decrypts whole pieces, plus room for AES-CTR's update_into
            out=np.empty(max(h.block_size, ct + 16), dtype=np.uint8),
            ct=np.empty(ct, dtype=np.uint8),
            keys=TagKeys(keys.data_key + keys.fragment_key, h.n),
            gcm=AESGCM(keys.data_key) if ssms and h.version == 1 else None,
            sealer=PlaneSealer(keys.inner_key) if ssms and h.version > 1 else None,
        )

    def _drop(self, reader_pos: int, reason: str) -> None:
        src = self.o.sources[reader_pos]
        self.bad.append(BadFragment(src.position, src.header.index, reason))
        self.active.remove(reader_pos)
        if not self.spares:
            raise InsufficientSharesError(too_few(self.h.k, len(self.active), self.bad))
        self.active.append(self.spares.pop(0))
        self.active.sort()

    def read(self, b: int, slot: _Slot) -> tuple[list[int], list[bytes], list[np.ndarray]]:
        """Read block ``b`` of the active fragments into ``slot``: (xs, tag lists,
        payload views)."""
        reads = [
            self.readers[i].read(b, into=rec)
            for i, rec in zip(self.active, slot.records, strict=False)
        ]
        xs = [self.o.sources[i].header.index for i in self.active]
        return xs, [t for _p, t in reads], [p for p, _t in reads]

    def restore(
        self,
        b: int,
        xs: list[int],
        tag_lists: list[bytes],
        payloads: list[np.ndarray],
        slot: _Slot,
    ) -> bool:
        """Restore and authenticate block ``b`` into ``slot.out``."""
        blen = self.readers[0].lengths[b]
        out = slot.out[:blen]
        keys = slot.keys
        if self.h.scheme == "shamir":
            interpolate_block(xs, [as_planes(p) for p in payloads], [0], [as_planes(out)])
            mine = keys.plaintext_tag(b, keys.inner_planes(out))
            return _carried(mine, tag_lists, self.h.n)
        k = self.h.k
        plen = payloads[0].size
        ct = slot.ct[: plen * k]
        missing = [x for x in range(1, k + 1) if x not in xs]
        for j, x in enumerate(xs):
            if x <= k:
                ct[(x - 1) * plen : x * plen] = payloads[j]
        if missing:
            outs = [ct[(x - 1) * plen : x * plen] for x in missing]
            interpolate_block(
                xs, [as_planes(p) for p in payloads], missing, [as_planes(o) for o in outs]
            )
        if slot.sealer is not None:
            # v2: check the ciphertext pieces, then decrypt them (encrypt-then-MAC).
            inner = b"".join(
                h for x in range(k) for h in keys.inner_planes(ct[x * plen : (x + 1) * plen])
            )
            if not _carried(keys.block_tag(b, inner), tag_lists, self.h.n):
                return False
            slot.sealer.open(b, ct, slot.out, 8 * k)
            return True
        assert slot.gcm is not None
        try:
            slot.gcm.decrypt_into(
                gcm_nonce(b), ct[: blen + TAG_SIZE].data, self.h.object_id, out.data
            )
        except InvalidTag:
            return False
        return True

    def block(self, b: int) -> memoryview:
        """The verified plaintext of block ``b``, setting damaged fragments aside."""
        slot = self.slot
        while True:
            xs, tag_lists, payloads = self.read(b, slot)
            if self.restore(b, xs, tag_lists, payloads, slot):
                return slot.out.data[: self.readers[0].lengths[b]]
            # The restored block failed its check: find the damaged fragment(s).  A
            # payload is intact iff any carried list holds its tag (no vote).
            culprits = [
                pos
                for pos, payload in zip(self.active, payloads, strict=True)
                if carried_tag(self.o.keys, self.o.sources[pos].header.index, b, payload, tag_lists)
                is None
            ]
            if not culprits:
                raise IntegrityError(f"block {b} does not authenticate and no fragment is named")
            for pos in culprits:
                self._drop(pos, f"damaged data in block {b}")


def _carried(mine: bytes, tag_lists: list[bytes], n: int) -> bool:
    """Whether any carried tag list ends with the block tag ``mine``.  Any match proves
    the block: forging one needs the key, which only k fragments give."""
    at = n * TAG_SIZE
    return any(hmac.compare_digest(mine, t[at : at + TAG_SIZE]) for t in set(tag_lists))


@dataclass
class _Slot:
    records: list[np.ndarray]
    out: np.ndarray
    ct: np.ndarray
    keys: TagKeys
    gcm: AESGCM | None
    sealer: PlaneSealer | None
    read: tuple[list[int], list[bytes], list[np.ndarray]] | None = None


class _Writer:
    """Writes restored blocks in order, dropping the inner header and the padding."""

    def __init__(self, dst: BinaryIO, padded: int, progress: Progress | None) -> None:
        self.dst, self.padded, self.progress = dst, padded, progress
        self.size = -1
        self.left = 0

    def write(self, b: int, data: memoryview) -> None:
        start = 0
        if b == 0:
            self.size = parse_inner_header(data[:INNER_HEADER_SIZE].tobytes(), self.padded)
            self.left = self.size
            start = INNER_HEADER_SIZE
        take = min(self.left, len(data) - start)
        if take:
            self.dst.write(data[start : start + take])
            self.left -= take
            if self.progress:
                self.progress(take)


def combine_stream(
    srcs: Sequence[BinaryIO],
    dst: BinaryIO,
    *,
    progress: Progress | None = None,
    workers: int | None = None,
) -> CombineReport:
    """Restore the file from ``k`` or more fragments into ``dst``.

    Blocks are read and written in order on the calling thread and restored on
    ``workers`` threads (default: one per CPU).  A block that fails its check is
    redone on the calling thread by :meth:`_Restorer.block`, which names the damaged
    fragments and swaps in spares for the blocks that follow.
    """
    opened = open_fragments(srcs)
    r = _Restorer(opened)
    h = opened.header
    writer = _Writer(dst, h.padded_size, progress)
    blocks = len(r.readers[0].lengths)
    nworkers = max(1, min(workers if workers is not None else default_workers(), blocks))
    lanes = [r.slot] if nworkers == 1 else [r.new_slot() for _ in range(nworkers + 1)]

    def load(b: int, slot: _Slot) -> None:
        slot.read = r.read(b, slot)

    def work(b: int, slot: _Slot) -> bool:
        assert slot.read is not None
        return r.restore(b, *slot.read, slot)

    def store(b: int, slot: _Slot, ok: bool) -> None:
        blen = r.readers[0].lengths[b]
        writer.write(b, slot.out.data[:blen] if ok else r.block(b))

    run_ordered(range(blocks), lanes, load, work, store, workers=nworkers)
    used = tuple(opened.sources[i].header.index for i in r.active)
    return CombineReport(h.object_id, writer.size, used, tuple(r.bad))


# -------------------------------------------------------------------------- verify


def verify_fragments(srcs: Sequence[BinaryIO]) -> VerifyReport:
    """Check every block of every fragment given; never restores any data."""
    try:
        opened = open_fragments(srcs)
    except (InsufficientSharesError, InvalidShareError):
        report = VerifyReport(None, 0, 0)
        for pos, f in enumerate(srcs):
            try:
                f.seek(0)
                h = read_header(f)
                report.indices[pos] = h.index
                report.k, report.n = h.k, h.n
            except (InputError, OSError):
                pass
            report.problems.setdefault(pos, "cannot be authenticated (too few fragments)")
        return report
    h = opened.header
    report = VerifyReport(h.object_id, h.k, h.n)
    for b_ in opened.bad:
        report.problems[b_.position] = b_.reason
        if b_.index is not None:
            report.indices[b_.position] = b_.index
    readers = [Blocks(s) for s in opened.sources]
    for s in opened.sources:
        report.indices[s.position] = s.header.index
    for b in range(len(readers[0].lengths)):
        _verify_block(opened, readers, b, report.problems)
    return report


def _verify_block(opened: Opened, readers: list[Blocks], b: int, problems: dict[int, str]) -> None:
    """Check block ``b`` of every fragment; record the first problem of each."""
    keys = opened.keys
    reads: list[tuple[np.ndarray, bytes]] = []
    for r in readers:
        try:
            reads.append(r.read(b))
        except (InputError, OSError):
            reads.append((np.empty(0, np.uint8), b""))
    lists = [t for _p, t in reads if t]
    own: dict[int, bytes | None] = {}  # index -> its payload's tag, if carried
    inners: dict[int, bytes] = {}  # index -> inner hashes of an authenticated payload
    for r, (payload, tlist) in zip(readers, reads, strict=True):
        if tlist:
            index = r.source.header.index
            inner = b"".join(keys.inner_planes(payload))
            mine = keys.fragment_tag_raw(index, b, inner)
            own[index] = mine if held(mine, lists, index - 1) else None
            if own[index] is not None:
                inners[index] = inner
    expected = _expected_tags(opened, b, lists, own, inners, reads[0][0].size // 8)
    for r, (_payload, tlist) in zip(readers, reads, strict=True):
        pos = r.source.position
        if pos in problems:
            continue
        if not tlist:
            problems[pos] = f"unreadable block {b}"
        elif own[r.source.header.index] is None:
            problems[pos] = f"damaged data in block {b}"
        elif tag_list_wrong(tlist, expected):
            problems[pos] = f"damaged tag list in block {b}"


def _expected_tags(
    opened: Opened,
    b: int,
    lists: list[bytes],
    own: dict[int, bytes | None],
    inners: dict[int, bytes],
    plane_bytes: int,
) -> list[bytes | None]:
    """What every slot of block ``b``'s tag list must hold.  When the lists disagree
    and ``k`` payloads authenticate, every slot follows from those exactly (as when
    splitting).  Otherwise a slot is known from an authenticated payload or a strict
    majority of the lists (all of them, when they agree), and left open (None: nobody
    is blamed) on a tie."""
    h = opened.header
    if len(set(lists)) > 1 and len(inners) >= h.k and plane_bytes:
        xs = sorted(inners)[: h.k]
        joined = b"".join(inners[x] for x in xs)
        inner = np.frombuffer(joined, dtype=np.uint64).reshape(-1, 2)
        derived = derived_tag_list(opened.keys, b, h, xs, inner, plane_bytes)
        return [tag_at(derived, slot) for slot in range(h.n + 1)]
    return settle_tags(lists, h.n, {i - 1: t for i, t in own.items() if t is not None})


# -------------------------------------------------------------------------- repair


def _verified_payloads(
    opened: Opened,
    readers: list[Blocks],
    active: list[int],
    spares: list[int],
    b: int,
    bad: list[BadFragment],
) -> tuple[list[np.ndarray], list[bytes], list[bytes]]:
    """Payloads of block b from k fragments that authenticate (some carried list holds
    their tag: no vote), their tag lists, and their 8 inner hashes each (joined)."""
    keys = opened.keys
    while True:
        reads = [readers[i].read(b) for i in active]
        lists = [t for _p, t in reads]
        inners = [b"".join(keys.inner_planes(p)) for p, _t in reads]
        failing = []
        for i, inner in zip(active, inners, strict=True):
            index = opened.sources[i].header.index
            if not held(keys.fragment_tag_raw(index, b, inner), lists, index - 1):
                failing.append(i)
        if not failing:
            return [p for p, _t in reads], lists, inners
        for i in failing:
            src = opened.sources[i]
            bad.append(BadFragment(src.position, src.header.index, f"damaged data in block {b}"))
            active.remove(i)
            if not spares:
                raise InsufficientSharesError(too_few(opened.header.k, len(active), bad))
            active.append(spares.pop(0))
        active.sort()


def repair_stream(srcs: Sequence[BinaryIO], index: int, dst: BinaryIO) -> FragmentHeader:
    """Write fragment ``index`` anew from ``k`` good others, never forming plaintext."""
    opened = open_fragments(srcs)
    h = opened.header
    if not 1 <= index <= h.n:
        raise ValueError(f"index must be in 1..{h.n}")
    k = h.k
    # The key share for `index` lies on the same polynomial as the others.
    xs = sorted(opened.key_shares)[:k]
    rows = [from_elements(opened.key_shares[x]) for x in xs]
    share = np.empty(KEY_MATERIAL, dtype=np.uint8)
    interpolate_block(xs, [as_planes(r) for r in rows], [index], [as_planes(share)])
    new = replace(
        opened.sources[0].header, index=index, key_share=to_elements(share).tobytes(), tag=b""
    )
    new = replace(new, tag=opened.keys.header_tag(new))
    dst.write(new.to_bytes())
    readers = [Blocks(s) for s in opened.sources]
    active = list(range(k))
    spares = list(range(k, len(readers)))
    bad = list(opened.bad)
    for b in range(len(readers[0].lengths)):
        payloads, lists, inners = _verified_payloads(opened, readers, active, spares, b, bad)
        xs = [opened.sources[i].header.index for i in active]
        out = np.empty_like(payloads[0])
        interpolate_block(xs, [as_planes(p) for p in payloads], [index], [as_planes(out)])
        # Every tag follows from the authenticated payloads (nothing is voted); the
        # repaired payload's must also be one that some fragment carries.
        inner = np.frombuffer(b"".join(inners), dtype=np.uint64).reshape(-1, 2)
        tags = derived_tag_list(opened.keys, b, h, xs, inner, out.size // 8)
        if not held(tag_at(tags, index - 1), lists, index - 1):
            raise IntegrityError(f"repaired block {b} does not match its recorded tag")
        dst.write(out.data)
        dst.write(tags)
    return new
