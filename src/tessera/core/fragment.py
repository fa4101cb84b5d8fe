"""Streaming k-of-n fragments of whole files: split, combine, verify, repair, refresh.

The format is described in :mod:`tessera.core.fragfmt` and ``docs/formats.md``.  All
operations stream block by block (default 1 MiB of plaintext), so memory stays bounded
whatever the file size, and every block is authenticated before it is used:

* ``combine_stream`` checks each restored block against its plaintext tag (shamir) or
  AES-GCM tag (ssms) before writing it; when a check fails it checks the fragments'
  own tags, names the damaged ones, replaces them with spares and retries the block.
* ``verify_fragments`` checks every block of every fragment without restoring data.
* ``repair_stream`` computes a lost fragment from ``k`` others (Lagrange at its x).
* ``refresh_stream`` adds a random sharing of zero and re-keys the fragment tags.

Sources are seekable binary files.  Output may be partly written when an error is
raised: callers write to a temporary name and rename after success.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tessera.core.bitslice import XorProgram, from_elements, to_elements
from tessera.core.fragfmt import (
    HEADER_SIZE,
    INNER_HEADER_SIZE,
    KEY_MATERIAL,
    SCHEMES,
    TAG_SIZE,
    VERSION,
    FragmentHeader,
    TagKeys,
    block_lengths,
    fragment_length,
    inner_header,
    padded_size,
    parse_inner_header,
    payload_length,
    piece_length,
    record_length,
)
from tessera.core.rng import RandomSource, default_rng
from tessera.core.robust import decode_bytes
from tessera.core.shamir import (
    as_planes,
    check_parameters,
    evaluation_program,
    interpolate_block,
    split_block,
)
from tessera.errors import (
    InputError,
    InsufficientSharesError,
    IntegrityError,
    InvalidShareError,
    RecoveryError,
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

DEFAULT_BLOCK_SIZE = 1 << 20
Progress = Callable[[int], None]
_ZERO_TAG = bytes(TAG_SIZE)


@dataclass(frozen=True)
class BadFragment:
    """A fragment that could not be used: its position among the sources, its index
    (when its header could be read) and why."""

    position: int
    index: int | None
    reason: str


@dataclass(frozen=True)
class CombineReport:
    """What ``combine_stream`` restored and which fragments it had to set aside."""

    object_id: bytes
    size: int
    used: tuple[int, ...]
    bad: tuple[BadFragment, ...]


@dataclass
class VerifyReport:
    """Per-source verdicts of ``verify_fragments``."""

    object_id: bytes | None
    k: int
    n: int
    problems: dict[int, str] = field(default_factory=dict)  # position -> first problem
    indices: dict[int, int] = field(default_factory=dict)  # position -> fragment index

    @property
    def good(self) -> list[int]:
        """Positions of fragments with no problem."""
        return [p for p in self.indices if p not in self.problems]

    @property
    def recoverable(self) -> bool:
        """At least k intact fragments with distinct indices."""
        return len({self.indices[p] for p in self.good}) >= self.k

    @property
    def healthy(self) -> bool:
        """All n fragments present and intact."""
        return not self.problems and len(set(self.indices.values())) == self.n


def read_header(f: BinaryIO) -> FragmentHeader:
    """Read and parse a fragment header at the current position."""
    return FragmentHeader.parse(f.read(HEADER_SIZE))


# --------------------------------------------------------------------------- split


def _new_object_id(rng: RandomSource) -> bytes:
    return rng.random_bytes(16)


def _share_keys(material: bytes, k: int, n: int, rng: RandomSource) -> list[bytes]:
    """Byte-wise Shamir shares of the key material (one GF(2^8) element per byte)."""
    outs = [np.empty((8, KEY_MATERIAL // 64), dtype=np.uint64) for _ in range(n)]
    split_block(as_planes(from_elements(material)), outs, k, rng)
    return [to_elements(o.reshape(-1).view(np.uint8)).tobytes() for o in outs]


def _headers(
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
    oid = object_id if object_id is not None else _new_object_id(rng)
    if len(oid) != 16:
        raise ValueError("object_id must be 16 bytes")
    padded = padded_size(size + INNER_HEADER_SIZE)
    material = rng.random_bytes(KEY_MATERIAL)
    keys = TagKeys(material, n)
    headers = _headers(
        scheme=scheme,
        k=k,
        n=n,
        object_id=oid,
        generation=0,
        padded=padded,
        block_size=block_size,
        key_shares=_share_keys(material, k, n, rng),
        keys=keys,
    )
    for dst, h in zip(dsts, headers, strict=True):
        dst.write(h.to_bytes())
    reader = _Reader(src, size)
    plain = np.empty(block_size, dtype=np.uint8)
    plain_view = plain.data
    lengths = block_lengths(padded, block_size)
    gcm = AESGCM(keys.data_key) if scheme == "ssms" else None
    ct_buf = np.empty(piece_length(block_size, k) * k, dtype=np.uint8) if gcm else None
    outs: list[np.ndarray] = []
    for b, blen in enumerate(lengths):
        if b == 0:
            plain_view[:INNER_HEADER_SIZE] = inner_header(size)
            reader.fill(plain_view[INNER_HEADER_SIZE:blen])
        else:
            reader.fill(plain_view[:blen])
        plen = payload_length(scheme, blen, k)
        if len(outs) != n or outs[0].size != plen:
            outs = [np.empty(plen, dtype=np.uint8) for _ in range(n)]
        if gcm is None:
            split_block(as_planes(plain[:blen]), [as_planes(o) for o in outs], k, rng)
            inputs = [plain[:blen], *outs[: k - 1]]
            first_derived = k
            program = evaluation_program((0, *range(1, k)), tuple(range(k, n + 1)))
        else:
            assert ct_buf is not None
            ct = ct_buf[: plen * k]
            written = gcm.encrypt_into(
                _gcm_nonce(b), plain_view[:blen], oid, ct[: blen + TAG_SIZE].data
            )
            ct[written:] = 0
            for j in range(k):
                outs[j][:] = ct[j * plen : (j + 1) * plen]
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
        tags = _split_tags(keys, b, inputs, first_derived, program, n, plaintext=gcm is None)
        for i, dst in enumerate(dsts):
            dst.write(outs[i].data)
            dst.write(tags)
        if progress:
            progress(blen if b else blen - INNER_HEADER_SIZE)
    if reader.left:
        raise InputError("input is longer than its stated size")
    return headers[0]


def _split_tags(
    keys: TagKeys,
    b: int,
    inputs: Sequence[np.ndarray],
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
        tags.append(
            keys.fragment_tag(index, b, inner[8 * (index - 1 + offset) : 8 * (index + offset)])
        )
    for j, index in enumerate(range(first_derived, n + 1)):
        rows = program.sources[8 * j : 8 * (j + 1)]
        tags.append(
            keys.fragment_tag(
                index, b, [keys.combine_inner([inner[q] for q in row], plane_bytes) for row in rows]
            )
        )
    ptag = keys.plaintext_tag(b, inner[:8]) if plaintext else _ZERO_TAG
    return b"".join(tags) + ptag


def _gcm_nonce(block: int) -> bytes:
    return block.to_bytes(12, "big")


# ----------------------------------------------------------------- opening sources


@dataclass
class _Source:
    position: int
    f: BinaryIO
    header: FragmentHeader


@dataclass
class _Opened:
    """A consistent set of fragments of one object with its recovered keys."""

    header: FragmentHeader  # any one of the group (index differs)
    sources: list[_Source]  # good, distinct indices, sorted by index
    bad: list[BadFragment]
    keys: TagKeys
    key_shares: dict[int, bytes]  # index -> share (all, including from bad-tag headers)


def _file_length(f: BinaryIO) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end


def _open(srcs: Sequence[BinaryIO]) -> _Opened:
    """Parse headers, keep one object's consistent fragments, recover the keys."""
    bad: list[BadFragment] = []
    parsed: list[_Source] = []
    for pos, f in enumerate(srcs):
        try:
            f.seek(0)
            h = read_header(f)
        except InputError as exc:
            bad.append(BadFragment(pos, None, str(exc)))
            continue
        except OSError as exc:
            bad.append(BadFragment(pos, None, f"unreadable ({exc.__class__.__name__})"))
            continue
        parsed.append(_Source(pos, f, h))
    if not parsed:
        raise InsufficientSharesError(_too_few(2, 0, bad).replace("need 2", "need k", 1))
    groups = Counter(s.header.group for s in parsed)
    (best, count), *rest = groups.most_common()
    if rest and rest[0][1] == count:
        raise InvalidShareError("fragments belong to different objects (no majority)")
    members: list[_Source] = []
    for s in parsed:
        g = s.header.group
        if g != best:
            why = (
                "belongs to another object"
                if g[0] != best[0]
                else "from another refresh generation"
                if g[1] != best[1]
                else "header disagrees with the others"
            )
            bad.append(BadFragment(s.position, s.header.index, why))
        else:
            members.append(s)
    header = members[0].header
    # Truncated or overlong files are named before anything is read from them.
    expected = fragment_length(header)
    kept: list[_Source] = []
    seen: set[int] = set()
    for s in members:
        try:
            length = _file_length(s.f)
        except OSError:
            bad.append(BadFragment(s.position, s.header.index, "unreadable"))
            continue
        if length != expected:
            what = "truncated" if length < expected else "has trailing data"
            bad.append(BadFragment(s.position, s.header.index, what))
        elif s.header.index in seen:
            bad.append(BadFragment(s.position, s.header.index, "duplicate fragment index"))
        else:
            seen.add(s.header.index)
            kept.append(s)
    sources = sorted(kept, key=lambda s: s.header.index)
    k = header.k
    if len(sources) < k:
        raise InsufficientSharesError(_too_few(k, len(sources), bad))
    xs = [s.header.index for s in sources]
    rows = np.stack([np.frombuffer(s.header.key_share, dtype=np.uint8) for s in sources])
    try:
        material, bad_rows = decode_bytes(xs, rows, k)
    except RecoveryError:
        raise InvalidShareError("fragment headers are inconsistent beyond repair") from None
    key_shares = {s.header.index: s.header.key_share for s in sources}
    keys = TagKeys(material, header.n)
    good: list[_Source] = []
    for row, s in enumerate(sources):
        if row in bad_rows:
            bad.append(BadFragment(s.position, s.header.index, "header damaged (key share)"))
        elif not hmac.compare_digest(keys.header_tag(s.header), s.header.tag):
            bad.append(BadFragment(s.position, s.header.index, "header damaged"))
        else:
            good.append(s)
    if len(good) < k:
        if not good:
            raise InvalidShareError("no fragment header authenticates (damaged or forged)")
        raise InsufficientSharesError(_too_few(k, len(good), bad))
    return _Opened(header, good, bad, keys, key_shares)


def _too_few(k: int, have: int, bad: Sequence[BadFragment]) -> str:
    named = "; ".join(_describe(b) for b in bad)
    return f"need {k} valid fragments, have {have}" + (f" ({named})" if named else "")


def _describe(b: BadFragment) -> str:
    who = f"fragment {b.index}" if b.index is not None else f"input {b.position + 1}"
    return f"{who}: {b.reason}"


class _Blocks:
    """Random access to the block records of one fragment."""

    def __init__(self, source: _Source) -> None:
        self.source = source
        h = source.header
        self.lengths = block_lengths(h.padded_size, h.block_size)
        self.offsets: list[int] = []
        off = HEADER_SIZE
        for blen in self.lengths:
            self.offsets.append(off)
            off += record_length(h, blen)
        self.buf = np.empty(0, dtype=np.uint8)

    def read(self, b: int) -> tuple[np.ndarray, bytes]:
        """(payload array, tag list bytes) of block ``b``."""
        h = self.source.header
        plen = payload_length(h.scheme, self.lengths[b], h.k)
        total = plen + TAG_SIZE * (h.n + 1)
        if self.buf.size != total:
            self.buf = np.empty(total, dtype=np.uint8)
        f = self.source.f
        f.seek(self.offsets[b])
        view = self.buf.data
        pos = 0
        while pos < total:
            got = f.readinto(view[pos:])  # type: ignore[attr-defined]
            if not got:
                raise InputError("fragment ended early")
            pos += got
        return self.buf[:plen], self.buf[plen:].tobytes()


def _consensus(tag_lists: Sequence[bytes], n: int) -> list[bytes]:
    """Per slot, the tag most fragments carry (each fragment carries all n + 1)."""
    result = []
    for slot in range(n + 1):
        votes = Counter(t[slot * TAG_SIZE : (slot + 1) * TAG_SIZE] for t in tag_lists)
        result.append(votes.most_common(1)[0][0])
    return result


def _fragment_ok(keys: TagKeys, index: int, b: int, payload: np.ndarray, expected: bytes) -> bool:
    return hmac.compare_digest(keys.payload_tag(index, b, payload), expected)


# ------------------------------------------------------------------------- combine


class _Restorer:
    """Restores plaintext blocks from k active fragments, swapping in spares."""

    def __init__(self, opened: _Opened) -> None:
        self.o = opened
        self.h = opened.header
        self.readers = [_Blocks(s) for s in opened.sources]
        self.active = list(range(self.h.k))
        self.spares = list(range(self.h.k, len(self.readers)))
        self.bad = list(opened.bad)
        self.gcm = AESGCM(opened.keys.data_key) if self.h.scheme == "ssms" else None
        self.out = np.empty(self.h.block_size, dtype=np.uint8)
        self.ct = np.empty(piece_length(self.h.block_size, self.h.k) * self.h.k, dtype=np.uint8)

    def _drop(self, reader_pos: int, reason: str) -> None:
        src = self.o.sources[reader_pos]
        self.bad.append(BadFragment(src.position, src.header.index, reason))
        self.active.remove(reader_pos)
        if not self.spares:
            raise InsufficientSharesError(_too_few(self.h.k, len(self.active), self.bad))
        self.active.append(self.spares.pop(0))
        self.active.sort()

    def block(self, b: int) -> memoryview:
        """The verified plaintext of block ``b``."""
        blen = self.readers[0].lengths[b]
        while True:
            reads = [self.readers[i].read(b) for i in self.active]
            payloads = [p for p, _t in reads]
            tags = _consensus([t for _p, t in reads], self.h.n)
            if self._restore(b, blen, payloads, [t for _p, t in reads]):
                return self.out.data[:blen]
            # The restored block failed its check: find the damaged fragment(s).
            culprits = [
                pos
                for pos, payload in zip(self.active, payloads, strict=True)
                if not _fragment_ok(
                    self.o.keys,
                    self.o.sources[pos].header.index,
                    b,
                    payload,
                    tags[self.o.sources[pos].header.index - 1],
                )
            ]
            if not culprits:
                raise IntegrityError(f"block {b} does not authenticate and no fragment is named")
            for pos in culprits:
                self._drop(pos, f"damaged data in block {b}")

    def _restore(
        self, b: int, blen: int, payloads: list[np.ndarray], tag_lists: list[bytes]
    ) -> bool:
        xs = [self.o.sources[i].header.index for i in self.active]
        out = self.out[:blen]
        if self.gcm is None:
            interpolate_block(xs, [as_planes(p) for p in payloads], [0], [as_planes(out)])
            mine = self.o.keys.plaintext_tag(b, self.o.keys.inner_planes(out))
            slot = self.h.n * TAG_SIZE
            # Any carried plaintext tag that matches proves the block: forging one
            # needs the key, which only k fragments give.
            return any(hmac.compare_digest(mine, t[slot : slot + TAG_SIZE]) for t in set(tag_lists))
        k = self.h.k
        plen = payloads[0].size
        ct = self.ct[: plen * k]
        missing = [x for x in range(1, k + 1) if x not in xs]
        for j, x in enumerate(xs):
            if x <= k:
                ct[(x - 1) * plen : x * plen] = payloads[j]
        if missing:
            outs = [ct[(x - 1) * plen : x * plen] for x in missing]
            interpolate_block(
                xs, [as_planes(p) for p in payloads], missing, [as_planes(o) for o in outs]
            )
        try:
            self.gcm.decrypt_into(
                _gcm_nonce(b), ct[: blen + TAG_SIZE].data, self.h.object_id, out.data
            )
        except InvalidTag:
            return False
        return True


def combine_stream(
    srcs: Sequence[BinaryIO], dst: BinaryIO, *, progress: Progress | None = None
) -> CombineReport:
    """Restore the file from ``k`` or more fragments into ``dst``."""
    opened = _open(srcs)
    r = _Restorer(opened)
    h = opened.header
    first = r.block(0)
    size = parse_inner_header(first[:INNER_HEADER_SIZE].tobytes(), h.padded_size)
    left = size
    nblocks = len(r.readers[0].lengths)
    for b in range(nblocks):
        data = first if b == 0 else r.block(b)
        start = INNER_HEADER_SIZE if b == 0 else 0
        take = min(left, len(data) - start)
        if take:
            dst.write(data[start : start + take])
            left -= take
        if progress and take:
            progress(take)
    used = tuple(opened.sources[i].header.index for i in r.active)
    return CombineReport(h.object_id, size, used, tuple(r.bad))


# -------------------------------------------------------------------------- verify


def verify_fragments(srcs: Sequence[BinaryIO]) -> VerifyReport:
    """Check every block of every fragment given; never restores any data."""
    try:
        opened = _open(srcs)
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
    readers = [_Blocks(s) for s in opened.sources]
    for s in opened.sources:
        report.indices[s.position] = s.header.index
    for b in range(len(readers[0].lengths)):
        reads = []
        for r in readers:
            try:
                reads.append(r.read(b))
            except (InputError, OSError):
                reads.append((np.empty(0, np.uint8), b""))
        tags = _consensus([t for _p, t in reads if t], h.n)
        for r, (payload, tlist) in zip(readers, reads, strict=True):
            pos = r.source.position
            if pos in report.problems:
                continue
            if not tlist:
                report.problems[pos] = f"unreadable block {b}"
            elif not _fragment_ok(
                opened.keys, r.source.header.index, b, payload, tags[r.source.header.index - 1]
            ):
                report.problems[pos] = f"damaged data in block {b}"
            elif tlist != b"".join(tags):
                report.problems[pos] = f"damaged tag list in block {b}"
    return report


# -------------------------------------------------------------------------- repair


def _verified_payloads(
    opened: _Opened,
    readers: list[_Blocks],
    active: list[int],
    spares: list[int],
    b: int,
    bad: list[BadFragment],
) -> tuple[list[np.ndarray], list[bytes]]:
    """Payloads of block b from k fragments that pass their own tags."""
    while True:
        reads = [readers[i].read(b) for i in active]
        payloads = [p for p, _t in reads]
        tags = _consensus([t for _p, t in reads], opened.header.n)
        failing = [
            i
            for i, p in zip(active, payloads, strict=True)
            if not _fragment_ok(
                opened.keys,
                opened.sources[i].header.index,
                b,
                p,
                tags[opened.sources[i].header.index - 1],
            )
        ]
        if not failing:
            return payloads, tags
        for i in failing:
            src = opened.sources[i]
            bad.append(BadFragment(src.position, src.header.index, f"damaged data in block {b}"))
            active.remove(i)
            if not spares:
                raise InsufficientSharesError(_too_few(opened.header.k, len(active), bad))
            active.append(spares.pop(0))
        active.sort()


def repair_stream(srcs: Sequence[BinaryIO], index: int, dst: BinaryIO) -> FragmentHeader:
    """Write fragment ``index`` anew from ``k`` good others, never forming plaintext."""
    opened = _open(srcs)
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
    readers = [_Blocks(s) for s in opened.sources]
    active = list(range(k))
    spares = list(range(k, len(readers)))
    bad = list(opened.bad)
    for b in range(len(readers[0].lengths)):
        payloads, tags = _verified_payloads(opened, readers, active, spares, b, bad)
        known = [opened.sources[i].header.index for i in active]
        out = np.empty_like(payloads[0])
        interpolate_block(known, [as_planes(p) for p in payloads], [index], [as_planes(out)])
        if not _fragment_ok(opened.keys, index, b, out, tags[index - 1]):
            raise IntegrityError(f"repaired block {b} does not match its recorded tag")
        dst.write(out.data)
        dst.write(b"".join(tags))
    return new


# ------------------------------------------------------------------------- refresh


def refresh_stream(
    srcs: Sequence[BinaryIO], dsts: Sequence[BinaryIO], *, rng: RandomSource | None = None
) -> FragmentHeader:
    """Re-randomise all n fragments (same secret, new shares, new tag key).

    Needs every fragment intact (repair first); ``dsts[i]`` receives index ``i + 1``.
    Stale fragments cannot be combined with refreshed ones.
    """
    rng = rng or default_rng()
    opened = _open(srcs)
    h = opened.header
    if len(opened.sources) != h.n or len(dsts) != h.n:
        raise InsufficientSharesError("refresh needs all n fragments intact (repair first)")
    n, k = h.n, h.k
    # K_p keeps its value under new shares; K_f is replaced.
    zero_p = _share_keys(bytes(KEY_MATERIAL), k, n, rng)
    new_f = rng.random_bytes(32)
    fresh_f = _share_keys(bytes(32) + new_f, k, n, rng)
    shares = []
    for i in range(1, n + 1):
        old = np.frombuffer(opened.key_shares[i], dtype=np.uint8)
        zp = np.frombuffer(zero_p[i - 1], dtype=np.uint8)
        ff = np.frombuffer(fresh_f[i - 1], dtype=np.uint8)
        shares.append((old[:32] ^ zp[:32]).tobytes() + ff[32:].tobytes())
    keys = TagKeys(opened.keys.data_key + new_f, n)
    headers = _headers(
        scheme=h.scheme,
        k=k,
        n=n,
        object_id=h.object_id,
        generation=h.generation + 1,
        padded=h.padded_size,
        block_size=h.block_size,
        key_shares=shares,
        keys=keys,
    )
    for dst, nh in zip(dsts, headers, strict=True):
        dst.write(nh.to_bytes())
    readers = [_Blocks(s) for s in opened.sources]
    zeros = np.zeros(0, dtype=np.uint8)
    for b in range(len(readers[0].lengths)):
        reads = [r.read(b) for r in readers]
        payloads = [p for p, _t in reads]
        tags = _consensus([t for _p, t in reads], n)
        for i, p in enumerate(payloads):
            if not _fragment_ok(opened.keys, i + 1, b, p, tags[i]):
                raise InvalidShareError(f"fragment {i + 1} is damaged in block {b}: repair first")
        if h.scheme == "shamir":
            if zeros.size != payloads[0].size:
                zeros = np.zeros(payloads[0].size, dtype=np.uint8)
            deltas = [np.empty_like(zeros) for _ in range(n)]
            split_block(as_planes(zeros), [as_planes(d) for d in deltas], k, rng)
            for p, d in zip(payloads, deltas, strict=True):
                np.bitwise_xor(p, d, out=p)
        new_tags = b"".join(keys.payload_tag(i + 1, b, payloads[i]) for i in range(n)) + tags[n]
        for dst, p in zip(dsts, payloads, strict=True):
            dst.write(p.data)
            dst.write(new_tags)
    return headers[0]
