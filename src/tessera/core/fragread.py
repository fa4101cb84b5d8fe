"""Reading fragments: parse and group headers, recover the object keys, read blocks.

Shared by combine, verify, repair and refresh in :mod:`tessera.core.fragment`.
"""

from __future__ import annotations

import hmac
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from tessera.core.fragfmt import (
    HEADER_SIZE,
    TAG_SIZE,
    FragmentHeader,
    TagKeys,
    block_lengths,
    fragment_length,
    payload_length,
    record_length,
)
from tessera.core.robust import decode_bytes
from tessera.errors import (
    InputError,
    InsufficientSharesError,
    InvalidShareError,
    RecoveryError,
)

__all__ = [
    "BadFragment",
    "Blocks",
    "CombineReport",
    "Opened",
    "Source",
    "VerifyReport",
    "consensus",
    "fragment_ok",
    "open_fragments",
    "read_header",
    "too_few",
]


def read_header(f: BinaryIO) -> FragmentHeader:
    """Read and parse a fragment header at the current position."""
    return FragmentHeader.parse(f.read(HEADER_SIZE))


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


@dataclass
class Source:
    position: int
    f: BinaryIO
    header: FragmentHeader


@dataclass
class Opened:
    """A consistent set of fragments of one object with its recovered keys."""

    header: FragmentHeader  # any one of the group (index differs)
    sources: list[Source]  # good, distinct indices, sorted by index
    bad: list[BadFragment]
    keys: TagKeys
    key_shares: dict[int, bytes]  # index -> share (all, including from bad-tag headers)


def _file_length(f: BinaryIO) -> int:
    here = f.tell()
    end = f.seek(0, 2)
    f.seek(here)
    return end


def open_fragments(srcs: Sequence[BinaryIO]) -> Opened:
    """Parse headers, keep one object's consistent fragments, recover the keys."""
    bad: list[BadFragment] = []
    parsed: list[Source] = []
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
        parsed.append(Source(pos, f, h))
    if not parsed:
        raise InsufficientSharesError(too_few(2, 0, bad).replace("need 2", "need k", 1))
    groups = Counter(s.header.group for s in parsed)
    (best, count), *rest = groups.most_common()
    if rest and rest[0][1] == count:
        raise InvalidShareError("fragments belong to different objects (no majority)")
    members: list[Source] = []
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
    by_index: dict[int, list[Source]] = {}
    for s in members:
        try:
            length = _file_length(s.f)
        except OSError:
            bad.append(BadFragment(s.position, s.header.index, "unreadable"))
            continue
        if length != expected:
            what = "truncated" if length < expected else "has trailing data"
            bad.append(BadFragment(s.position, s.header.index, what))
        else:
            by_index.setdefault(s.header.index, []).append(s)
    k = header.k
    if len(by_index) < k:
        raise InsufficientSharesError(too_few(k, len(by_index), bad))
    # Keys come from fragments whose index is unambiguous when there are enough of
    # them: a damaged index byte must not push the genuine fragment aside.
    unique = [c[0] for c in by_index.values() if len(c) == 1]
    basis = unique if len(unique) >= k else [c[0] for c in by_index.values()]
    basis.sort(key=lambda s: s.header.index)
    xs = [s.header.index for s in basis]
    rows = np.stack([np.frombuffer(s.header.key_share, dtype=np.uint8) for s in basis])
    try:
        material, bad_rows = decode_bytes(xs, rows, k)
    except RecoveryError:
        raise InvalidShareError("fragment headers are inconsistent beyond repair") from None
    keys = TagKeys(material, header.n)
    damaged_shares = {id(basis[row]) for row in bad_rows}
    good: list[Source] = []
    for index in sorted(by_index):
        chosen: Source | None = None
        for s in by_index[index]:
            if id(s) in damaged_shares:
                bad.append(BadFragment(s.position, index, "header damaged (key share)"))
            elif not hmac.compare_digest(keys.header_tag(s.header), s.header.tag):
                bad.append(BadFragment(s.position, index, "header damaged"))
            elif chosen is not None:
                bad.append(BadFragment(s.position, index, "duplicate fragment index"))
            else:
                chosen = s
        if chosen is not None:
            good.append(chosen)
    key_shares = {s.header.index: s.header.key_share for s in good}
    if len(good) < k:
        if not good:
            raise InvalidShareError("no fragment header authenticates (damaged or forged)")
        raise InsufficientSharesError(too_few(k, len(good), bad))
    return Opened(header, good, bad, keys, key_shares)


def too_few(k: int, have: int, bad: Sequence[BadFragment]) -> str:
    named = "; ".join(_describe(b) for b in bad)
    return f"need {k} valid fragments, have {have}" + (f" ({named})" if named else "")


def _describe(b: BadFragment) -> str:
    who = f"fragment {b.index}" if b.index is not None else f"input {b.position + 1}"
    return f"{who}: {b.reason}"


class Blocks:
    """Random access to the block records of one fragment."""

    def __init__(self, source: Source) -> None:
        self.source = source
        h = source.header
        self.lengths = block_lengths(h.padded_size, h.block_size)
        self.offsets: list[int] = []
        off = HEADER_SIZE
        for blen in self.lengths:
            self.offsets.append(off)
            off += record_length(h, blen)
        self.buf = np.empty(0, dtype=np.uint8)

    def read(self, b: int, into: np.ndarray | None = None) -> tuple[np.ndarray, bytes]:
        """(payload array, tag list bytes) of block ``b``, in ``into`` or a buffer of
        this reader's own (overwritten by the next read)."""
        h = self.source.header
        plen = payload_length(h.scheme, self.lengths[b], h.k)
        total = plen + TAG_SIZE * (h.n + 1)
        if into is None:
            if self.buf.size != total:
                self.buf = np.empty(total, dtype=np.uint8)
            buf = self.buf
        else:
            buf = into[:total]
        f = self.source.f
        f.seek(self.offsets[b])
        view = buf.data
        pos = 0
        while pos < total:
            got = f.readinto(view[pos:])  # type: ignore[attr-defined]
            if not got:
                raise InputError("fragment ended early")
            pos += got
        return buf[:plen], buf[plen:].tobytes()


def consensus(tag_lists: Sequence[bytes], n: int) -> list[bytes]:
    """Per slot, the tag most fragments carry (each fragment carries all n + 1)."""
    result = []
    for slot in range(n + 1):
        votes = Counter(t[slot * TAG_SIZE : (slot + 1) * TAG_SIZE] for t in tag_lists)
        result.append(votes.most_common(1)[0][0])
    return result


def fragment_ok(keys: TagKeys, index: int, b: int, payload: np.ndarray, expected: bytes) -> bool:
    return hmac.compare_digest(keys.payload_tag(index, b, payload), expected)
