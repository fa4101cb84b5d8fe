"""RFC 9162 Merkle tree: certificate-transparency known answers, proofs, properties."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core import merkle

# Leaves, roots and proofs from the certificate-transparency test vectors (RFC 6962 and
# RFC 9162 share the tree hash); the same constants appear in CT's Go and C++ tests.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (0, 1): [],
}
CT_CONSISTENCY = {
    (1, 8): CT_INCLUSION[(0, 8)],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
HASHES = [merkle.leaf_hash(x) for x in CT_LEAVES]


def test_empty_root_is_sha256_of_nothing() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT


@pytest.mark.parametrize("n", range(1, 9))
def test_known_roots(n: int) -> None:
    assert merkle.root(HASHES[:n]).hex() == CT_ROOTS[n - 1]


@pytest.mark.parametrize(("index", "size"), sorted(CT_INCLUSION))
def test_known_inclusion_proofs(index: int, size: int) -> None:
    proof = merkle.inclusion_proof(HASHES[:size], index)
    assert [p.hex() for p in proof] == CT_INCLUSION[(index, size)]
    root = bytes.fromhex(CT_ROOTS[size - 1])
    assert merkle.verify_inclusion(HASHES[index], index, size, proof, root)


@pytest.mark.parametrize(("old", "new"), sorted(CT_CONSISTENCY))
def test_known_consistency_proofs(old: int, new: int) -> None:
    proof = merkle.consistency_proof(HASHES[:new], old)
    assert [p.hex() for p in proof] == CT_CONSISTENCY[(old, new)]
    old_root = bytes.fromhex(CT_ROOTS[old - 1])
    new_root = bytes.fromhex(CT_ROOTS[new - 1])
    assert merkle.verify_consistency(old, new, old_root, new_root, proof)
    assert not merkle.verify_consistency(old, new, new_root, old_root, proof)


def test_every_small_proof_verifies_and_wrong_ones_fail() -> None:
    for n in range(1, 9):
        root = merkle.root(HASHES[:n])
        for i in range(n):
            proof = merkle.inclusion_proof(HASHES[:n], i)
            assert merkle.verify_inclusion(HASHES[i], i, n, proof, root)
            other = HASHES[(i + 1) % 8]
            if other != HASHES[i]:
                assert not merkle.verify_inclusion(other, i, n, proof, root)
            assert not merkle.verify_inclusion(HASHES[i], n, n, proof, root)
        for m in range(1, n + 1):
            proof = merkle.consistency_proof(HASHES[:n], m)
            old_root = merkle.root(HASHES[:m])
            assert merkle.verify_consistency(m, n, old_root, root, proof)
            if m < n:
                wrong = merkle.root(HASHES[: n - 1])
                assert not merkle.verify_consistency(m, n, old_root, wrong, proof)


def test_misuse_raises() -> None:
    with pytest.raises(ValueError):
        merkle.inclusion_proof(HASHES, 8)
    with pytest.raises(ValueError):
        merkle.consistency_proof(HASHES, 0)
    with pytest.raises(ValueError):
        merkle.TreeBuilder().append(b"short")
    assert not merkle.verify_inclusion(HASHES[0], 3, 2, [], HASHES[0])
    assert not merkle.verify_consistency(3, 2, HASHES[0], HASHES[0], [])


leaf_lists = st.lists(st.binary(max_size=8), min_size=1, max_size=70)


@settings(max_examples=40, deadline=None)
@given(leaf_lists, st.data())
def test_proofs_verify_for_random_trees(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    n = len(hashes)
    builder = merkle.TreeBuilder()
    roots = []
    for h in hashes:
        builder.append(h)
        roots.append(builder.root())
    assert roots[-1] == merkle.root(hashes)
    i = data.draw(st.integers(0, n - 1))
    assert merkle.verify_inclusion(hashes[i], i, n, merkle.inclusion_proof(hashes, i), roots[-1])
    m = data.draw(st.integers(1, n))
    proof = merkle.consistency_proof(hashes, m)
    assert merkle.verify_consistency(m, n, roots[m - 1], roots[-1], proof)


@settings(max_examples=40, deadline=None)
@given(leaf_lists, st.data())
def test_any_changed_leaf_changes_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    i = data.draw(st.integers(0, len(hashes) - 1))
    changed = list(hashes)
    changed[i] = merkle.leaf_hash(leaves[i] + b"!")
    assert merkle.root(changed) != merkle.root(hashes)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=4), max_size=80))
def test_bulk_levels_give_every_prefix_root(leaves: list[bytes]) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    tree = merkle.levels(b"".join(hashes))
    for size in range(len(hashes) + 1):
        assert merkle.root_at(tree, size) == merkle.root(hashes[:size])
    with pytest.raises(ValueError):
        merkle.root_at(tree, len(hashes) + 1)
    with pytest.raises(ValueError):
        merkle.levels(b"x")
