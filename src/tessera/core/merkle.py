"""RFC 9162 (Certificate Transparency 2.0) Merkle tree hashes and proofs, SHA-256.

* ``leaf_hash(d) = SHA-256(0x00 || d)``, ``node_hash(l, r) = SHA-256(0x01 || l || r)``;
* the tree over ``n`` leaves splits at ``k``, the largest power of two below ``n``;
* the empty tree hashes to ``SHA-256("")``.

:class:`TreeBuilder` appends leaf hashes in O(1) amortised time and gives the root of the
current tree in O(log n) (it keeps only the roots of the perfect subtrees on the right
edge), which is how the audit log checks each signed tree head in one pass.
Proof generation works on an in-memory sequence of leaf hashes; verification follows the
algorithms of RFC 9162 sections 2.1.3.2 and 2.1.4.2 literally.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "TreeBuilder",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "levels",
    "node_hash",
    "root",
    "root_at",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """The RFC 9162 hash of one leaf entry."""
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 hash of an interior node."""
    return hashlib.sha256(_NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


class TreeBuilder:
    """An append-only Merkle tree that keeps only its right-edge subtree roots."""

    __slots__ = ("_hashes", "_sizes", "size")

    def __init__(self) -> None:
        self._hashes: list[bytes] = []
        self._sizes: list[int] = []
        self.size = 0

    def append(self, leaf: bytes) -> None:
        """Add one leaf *hash* (see :func:`leaf_hash`)."""
        if len(leaf) != HASH_SIZE:
            raise ValueError("a leaf hash is 32 bytes")
        h, s = leaf, 1
        hashes, sizes = self._hashes, self._sizes
        while sizes and sizes[-1] == s:
            h = hashlib.sha256(_NODE + hashes.pop() + h).digest()
            s += sizes.pop()
        hashes.append(h)
        sizes.append(s)
        self.size += 1

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaf hashes."""
        for leaf in leaves:
            self.append(leaf)

    def frontier(self) -> list[bytes]:
        """The roots of the right-edge perfect subtrees, largest first: with
        :attr:`size` they are the whole state (:meth:`from_frontier`)."""
        return list(self._hashes)

    @classmethod
    def from_frontier(cls, size: int, hashes: Sequence[bytes]) -> TreeBuilder:
        """The builder that :meth:`frontier` described (one subtree per set bit of
        ``size``, largest first); ValueError when they cannot belong together."""
        sizes = [1 << b for b in range(size.bit_length() - 1, -1, -1) if size >> b & 1]
        if size < 0 or len(hashes) != len(sizes) or any(len(h) != HASH_SIZE for h in hashes):
            raise ValueError("a frontier has one 32-byte hash per set bit of its size")
        builder = cls()
        builder._hashes = list(hashes)
        builder._sizes = sizes
        builder.size = size
        return builder

    def root(self) -> bytes:
        """The root of the tree over every leaf appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = hashlib.sha256(_NODE + left + h).digest()
        return h


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash over a sequence of leaf hashes."""
    builder = TreeBuilder()
    builder.extend(leaves)
    return builder.root()


def levels(leaves: bytes) -> list[bytes]:
    """Every level of the complete (power-of-two aligned) subtrees, built in bulk.

    ``leaves`` is the concatenation of the leaf hashes; level ``k`` concatenates the roots
    of the aligned perfect subtrees of 2**k leaves.  With these, :func:`root_at` gives
    the root of any prefix of the tree in O(log n), so checking many signed heads costs
    one pass of about n node hashes.
    """
    if len(leaves) % HASH_SIZE:
        raise ValueError("leaf hashes are 32 bytes each")
    out = [leaves]
    sha = hashlib.sha256
    current = leaves
    while len(current) >= 2 * HASH_SIZE:
        pairs = len(current) // (2 * HASH_SIZE)
        current = b"".join(
            [sha(_NODE + current[64 * i : 64 * i + 64]).digest() for i in range(pairs)]
        )
        out.append(current)
    return out


def root_at(tree_levels: Sequence[bytes], size: int) -> bytes:
    """The root of the tree over the first ``size`` leaves (see :func:`levels`)."""
    if size < 0 or size * HASH_SIZE > len(tree_levels[0]):
        raise ValueError("size outside the tree")
    if size == 0:
        return EMPTY_ROOT
    parts: list[bytes] = []
    offset = 0
    for k in range(size.bit_length() - 1, -1, -1):
        if size >> k & 1:
            index = offset >> k
            parts.append(tree_levels[k][index * HASH_SIZE : (index + 1) * HASH_SIZE])
            offset += 1 << k
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def _mth(leaves: Sequence[bytes], lo: int, hi: int) -> bytes:
    if hi - lo == 1:
        return leaves[lo]
    k = _split(hi - lo)
    return node_hash(_mth(leaves, lo, lo + k), _mth(leaves, lo + k, hi))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path for leaf ``index`` in the tree over ``leaves`` (RFC 9162 2.1.3.1)."""
    if not 0 <= index < len(leaves):
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    lo, hi, m = 0, len(leaves), index
    while hi - lo > 1:
        k = _split(hi - lo)
        if m < k:
            path.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaves, lo, lo + k))
            lo, m = lo + k, m - k
    path.reverse()
    return path


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """Proof that the tree of size ``old_size`` is a prefix of the tree over ``leaves``."""
    n = len(leaves)
    if not 0 < old_size <= n:
        raise ValueError("old size must be between 1 and the tree size")
    path: list[bytes] = []
    lo, hi, m, complete = 0, n, old_size, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            path.append(_mth(leaves, lo + k, hi))
            hi = lo + k
        else:
            path.append(_mth(leaves, lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    if not complete:
        path.append(_mth(leaves, lo, hi))
    path.reverse()
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """True iff ``proof`` shows leaf hash ``leaf`` at ``index`` in the tree ``expected_root``."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """True iff ``proof`` shows tree ``old_root`` (old_size) is a prefix of ``new_root``."""
    if old_size < 0 or new_size < old_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if old_size == 0:
        return not proof
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == old_root and sr == new_root and sn == 0
