"""Reading fragments: parse and group headers, recover the object keys, read blocks.

Shared by combine, verify and repair in :mod:`tessera.core.fragment` and refresh in
:mod:`tessera.core.fragrefresh`.  With more than ``k`` fragments, damaged headers are
found by Reed-Solomon decoding of the key shares or, when that cannot decide (``k + 1``
fragments), by trying the keys of k-subsets against the header tags; payloads and tag
lists are judged by :func:`carried_tag` and :func:`settle_tags`, never by a bare vote.
"""

from __future__ import annotations

import hmac
import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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
from tessera.core.rng import default_rng
from tessera.core.robust import decode_bytes, interpolate_bytes
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
    "carried_tag",
    "held",
    "open_fragments",
    "read_header",
    "settle_tags",
    "tag_at",
    "tag_list_wrong",
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
    parsed = _parse_headers(srcs, bad)
    if not parsed:
        raise InsufficientSharesError(too_few(2, 0, bad).replace("need 2", "need k", 1))
    members = _majority(parsed, bad)
    header = members[0].header
    by_index = _by_index(members, fragment_length(header), bad)
    k = header.k
    if len(by_index) < k:
        raise InsufficientSharesError(too_few(k, len(by_index), bad))
    keys, good, rejected = _recover_keys(by_index, k, header.n)
    bad.extend(rejected)
    key_shares = {s.header.index: s.header.key_share for s in good}
    if len(good) < k:
        if not good:
            raise InvalidShareError("no fragment header authenticates (damaged or forged)")
        raise InsufficientSharesError(too_few(k, len(good), bad))
    return Opened(header, good, bad, keys, key_shares)


def _parse_headers(srcs: Sequence[BinaryIO], bad: list[BadFragment]) -> list[Source]:
    """The sources whose header parses; the others are added to ``bad``."""
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
    return parsed


def _majority(parsed: list[Source], bad: list[BadFragment]) -> list[Source]:
    """The sources of the most common object and generation; the others are added to
    ``bad``, saying how they differ."""
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
    return members


def _by_index(
    members: list[Source], expected: int, bad: list[BadFragment]
) -> dict[int, list[Source]]:
    """The members of the ``expected`` file length, by fragment index.  Truncated or
    overlong files are named (added to ``bad``) before anything is read from them."""
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
    return by_index


# At most this many k-subsets of the headers are tried when Reed-Solomon decoding of the
# key shares fails (with m = k + 1 it corrects nothing); each costs one key derivation
# and one header tag per fragment.  All of them when there are no more (k + 1, k + 2
# fragments, ...), else a random sample.
MAX_KEY_SUBSETS = 4096

Judged = tuple[TagKeys, list[Source], list[BadFragment]]


def _recover_keys(by_index: dict[int, list[Source]], k: int, n: int) -> Judged:
    """The object keys and the verdict on every header.

    Fast path: Reed-Solomon decoding of the key shares, which corrects and names up to
    ``(m - k) // 2`` damaged ones.  When that fails, or fewer than ``k`` headers then
    authenticate, the keys of k-subsets are tried (see :func:`_subsets`) and those
    under which most headers (at least ``k``) authenticate are kept: a
    header tag is a MAC under a key only ``k`` fragments give, so no store can forge
    one, and any ``k`` authenticated shares give that same key.
    """
    fast = _decode_keys(by_index, k)
    judged: Judged | None = None
    if fast is not None:
        material, damaged = fast
        judged = _judge(by_index, TagKeys(material, n), lambda s: id(s) in damaged)
        if len(judged[1]) >= k:
            return _exact(judged, k, n)
    pool = [s for index in sorted(by_index) for s in by_index[index]]
    found = _search_keys(pool, k, n)
    if found is None:
        if judged is None:
            raise InvalidShareError("fragment headers are inconsistent beyond repair")
        return judged
    keys, basis = found
    xs = [s.header.index for s in basis]
    rows = np.stack([np.frombuffer(s.header.key_share, dtype=np.uint8) for s in basis])
    predicted = interpolate_bytes(xs, rows, range(1, n + 1))

    def share_wrong(s: Source) -> bool:
        return bool(predicted[s.header.index - 1].tobytes() != s.header.key_share)

    return _exact(_judge(by_index, keys, share_wrong), k, n)


def _exact(judged: Judged, k: int, n: int) -> Judged:
    """The keys from ``k`` authenticated key shares.  A header tag depends on ``K_f``
    only, so keys decoded from a damaged ``K_p`` half still authenticate headers; the
    authenticated shares themselves (the tag covers them) give both halves right."""
    keys, good, bad = judged
    xs = [s.header.index for s in good[:k]]
    rows = np.stack([np.frombuffer(s.header.key_share, dtype=np.uint8) for s in good[:k]])
    material = interpolate_bytes(xs, rows, [0])[0].tobytes()
    if not hmac.compare_digest(material, keys.data_key + keys.fragment_key):
        keys = TagKeys(material, n)
    return keys, good, bad


def _decode_keys(by_index: dict[int, list[Source]], k: int) -> tuple[bytes, set[int]] | None:
    """Key material by Reed-Solomon decoding, and the ids of the sources whose share
    it names as wrong; None when the shares cannot be decoded."""
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
        return None
    return material, {id(basis[row]) for row in bad_rows}


def _authentic(keys: TagKeys, s: Source) -> bool:
    return hmac.compare_digest(keys.header_tag(s.header), s.header.tag)


def _subsets(m: int, k: int) -> Iterator[tuple[int, ...]]:
    """Every k-subset of ``range(m)`` when there are at most :data:`MAX_KEY_SUBSETS`,
    else that many drawn at random (a fixed order would never leave out the first
    fragments, which may be the damaged ones)."""
    if math.comb(m, k) <= MAX_KEY_SUBSETS:
        yield from itertools.combinations(range(m), k)
        return
    rng = default_rng()
    for _ in range(MAX_KEY_SUBSETS):
        ranks = np.frombuffer(rng.random_bytes(8 * m), dtype=np.uint64)
        yield tuple(sorted(int(i) for i in np.argsort(ranks)[:k]))


def _search_keys(pool: list[Source], k: int, n: int) -> tuple[TagKeys, list[Source]] | None:
    """The keys under which headers of most distinct indices (at least ``k``) of
    ``pool`` authenticate, with k authenticated sources; None when no k-subset tried
    gives such keys."""
    best: TagKeys | None = None
    best_auth: list[Source] = []
    best_ids: set[int] = set()
    best_score = k - 1
    seen: set[bytes] = set()
    for chosen in _subsets(len(pool), k):
        subset = [pool[i] for i in chosen]
        if len({s.header.index for s in subset}) < k:
            continue
        if all(id(s) in best_ids for s in subset):
            continue  # authenticated shares all lie on the best key's polynomial
        xs = [s.header.index for s in subset]
        rows = np.stack([np.frombuffer(s.header.key_share, dtype=np.uint8) for s in subset])
        material = interpolate_bytes(xs, rows, [0])[0].tobytes()
        if material[32:] in seen:
            continue  # header tags depend on K_f (the second half) only
        seen.add(material[32:])
        keys = TagKeys(material, n)
        auth = [s for s in pool if _authentic(keys, s)]
        score = len({s.header.index for s in auth})
        if score > best_score:
            best, best_auth, best_score = keys, auth, score
            best_ids = {id(s) for s in auth}
            if len(auth) == len(pool):
                break
    if best is None:
        return None
    # Authenticated shares lie on the keys' polynomial: k of them (distinct indices)
    # predict every index's share.
    basis: dict[int, Source] = {}
    for s in best_auth:
        basis.setdefault(s.header.index, s)
    return best, list(basis.values())[:k]


def _judge(
    by_index: dict[int, list[Source]], keys: TagKeys, share_wrong: Callable[[Source], bool]
) -> Judged:
    """One authenticated source per index under ``keys``; the others named."""
    bad: list[BadFragment] = []
    good: list[Source] = []
    for index in sorted(by_index):
        chosen: Source | None = None
        for s in by_index[index]:
            if not _authentic(keys, s):
                why = "header damaged (key share)" if share_wrong(s) else "header damaged"
                bad.append(BadFragment(s.position, index, why))
            elif chosen is not None:
                bad.append(BadFragment(s.position, index, "duplicate fragment index"))
            else:
                chosen = s
        if chosen is not None:
            good.append(chosen)
    return keys, good, bad


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


def tag_at(tag_list: bytes, slot: int) -> bytes:
    """Entry ``slot`` (0-based: fragment ``slot + 1``, or the block tag at ``n``)."""
    return tag_list[slot * TAG_SIZE : (slot + 1) * TAG_SIZE]


def carried_tag(
    keys: TagKeys, index: int, b: int, payload: np.ndarray, tag_lists: Sequence[bytes]
) -> bytes | None:
    """The tag of fragment ``index``'s payload of block ``b`` when any carried tag list
    holds it in that fragment's slot, else None.

    One match proves the payload intact: tags are MACs under keys only ``k`` fragments
    give, so no store can forge one, and no vote is needed (a tie must not let a
    forged list get an honest fragment named).
    """
    mine = keys.payload_tag(index, b, payload)
    return mine if held(mine, tag_lists, index - 1) else None


def held(tag: bytes, tag_lists: Sequence[bytes], slot: int) -> bool:
    """Whether any of ``tag_lists`` holds ``tag`` in ``slot`` (constant time each)."""
    ok = False
    for t in set(tag_lists):
        ok |= hmac.compare_digest(tag, tag_at(t, slot))
    return ok


def settle_tags(tag_lists: Sequence[bytes], n: int, known: dict[int, bytes]) -> list[bytes | None]:
    """Per slot ``0..n``, the value a tag list must hold: the authenticated tag when
    ``known`` has it (slot -> tag computed from a payload that authenticated), else
    the value a strict majority of ``tag_lists`` carries, else None (a tie: nothing
    proves either side, so no list is held wrong for that slot)."""
    result: list[bytes | None] = []
    for slot in range(n + 1):
        if slot in known:
            result.append(known[slot])
            continue
        votes = Counter(tag_at(t, slot) for t in tag_lists)
        value, count = votes.most_common(1)[0] if votes else (b"", 0)
        result.append(value if 2 * count > len(tag_lists) else None)
    return result


def tag_list_wrong(tag_list: bytes, settled: Sequence[bytes | None]) -> bool:
    """Whether ``tag_list`` differs from a settled value in any slot."""
    wrong = False
    for slot, value in enumerate(settled):
        if value is not None:
            wrong |= not hmac.compare_digest(tag_at(tag_list, slot), value)
    return wrong
