"""Damage with no spare fragment: exactly k + 1 fragments, one damaged anywhere, still
restore, verify and repair, and only the damaged one is ever named; ties in the tag
lists never blame an honest fragment; refresh makes old fragments useless."""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.fragfmt import HEADER_SIZE, TAG_SIZE, FragmentHeader, block_lengths
from tessera.core.fragment import (
    combine_stream,
    read_header,
    refresh_stream,
    repair_stream,
    split_stream,
    verify_fragments,
)
from tessera.core.fragread import CombineReport, open_fragments, settle_tags
from tessera.core.rng import Drbg
from tessera.core.sealing import PlaneSealer
from tessera.errors import TesseraError

BLOCK = 1024
SIZE = 3000  # padded to 4096: four blocks of 1 KiB
SCHEMES = ["shamir", "ssms"]
SHAPES = [(2, 3), (3, 4)]
CASES = [(scheme, k, n) for scheme in SCHEMES for k, n in SHAPES]


def _data(tag: str) -> bytes:
    return hashlib.shake_256(tag.encode()).digest(SIZE)


@functools.cache
def fragments(scheme: str, k: int, n: int) -> tuple[bytes, tuple[bytes, ...]]:
    data = _data(f"{scheme}{k}{n}")
    dsts = [io.BytesIO() for _ in range(n)]
    split_stream(
        io.BytesIO(data),
        dsts,
        k=k,
        size=len(data),
        scheme=scheme,
        block_size=BLOCK,
        rng=Drbg.from_seed(bytes([k, n]) * 16),
    )
    return data, tuple(d.getvalue() for d in dsts)


def combine(frags: list[bytes]) -> tuple[bytes, CombineReport]:
    out = io.BytesIO()
    report = combine_stream([io.BytesIO(f) for f in frags], out, workers=1)
    return out.getvalue(), report


def layout(frag: bytes) -> tuple[int, list[tuple[int, int, int]]]:
    """(header size, [(record offset, payload length, tag list length)])."""
    h = FragmentHeader.parse(frag[:HEADER_SIZE])
    lengths = block_lengths(h.padded_size, h.block_size)
    plen = (len(frag) - HEADER_SIZE) // len(lengths) - TAG_SIZE * (h.n + 1)
    return HEADER_SIZE, [
        (HEADER_SIZE + b * (plen + TAG_SIZE * (h.n + 1)), plen, TAG_SIZE * (h.n + 1))
        for b in range(len(lengths))
    ]


def damage(frag: bytes, offset: int, flip: int) -> bytes:
    bad = bytearray(frag)
    bad[offset] ^= flip
    return bytes(bad)


def sampled_offsets(frag: bytes) -> list[int]:
    """A few payload and tag-list offsets in every block (first, last, middle, and
    every tag slot)."""
    _hsize, records = layout(frag)
    out = []
    for start, plen, tlen in records:
        out += [start, start + plen // 2, start + plen - 1]
        out += list(range(start + plen, start + plen + tlen, TAG_SIZE - 3))
    return out


def check_one_damaged(
    scheme: str, k: int, n: int, victim: int, offset: int, flip: int | None = None
) -> None:
    """k + 1 fragments (indices 1..k+1), ``victim`` damaged at ``offset``."""
    data, frags = fragments(scheme, k, n)
    chosen = list(frags[: k + 1])
    flip = flip if flip is not None else (offset * 37) % 255 + 1
    chosen[victim] = damage(chosen[victim], offset, flip)
    where = f"{scheme} {k}-of-{n}, fragment {victim + 1}, byte {offset}"
    out, report = combine(chosen)
    assert out == data, where
    named = {b.position for b in report.bad}
    # combine reads k fragments per block: damage it never reads (a spare's payload,
    # any tag list) is not named by it, but nothing else ever is.
    assert named <= {victim}, (where, report.bad)
    if offset < HEADER_SIZE or (victim < k and _in_payload(chosen[victim], offset)):
        assert named == {victim}, (where, report.bad)
    problems = verify_fragments([io.BytesIO(f) for f in chosen]).problems
    assert list(problems) == [victim], (where, problems)
    repaired = io.BytesIO()
    repair_stream([io.BytesIO(f) for f in chosen], victim + 1, repaired)
    assert repaired.getvalue() == frags[victim], where


def _in_payload(frag: bytes, offset: int) -> bool:
    _hsize, records = layout(frag)
    return any(start <= offset < start + plen for start, plen, _t in records)


@pytest.mark.parametrize(("scheme", "k", "n"), CASES)
def test_any_damaged_header_byte_of_k_plus_one(scheme: str, k: int, n: int) -> None:
    """Every header byte, each in one of the k + 1 fragments in turn."""
    for offset in range(HEADER_SIZE):
        check_one_damaged(scheme, k, n, offset % (k + 1), offset)


@pytest.mark.parametrize(("scheme", "k", "n"), CASES)
def test_damaged_payload_or_tag_list_of_k_plus_one(scheme: str, k: int, n: int) -> None:
    _, frags = fragments(scheme, k, n)
    for i, offset in enumerate(sampled_offsets(frags[0])):
        check_one_damaged(scheme, k, n, i % (k + 1), offset)


@settings(max_examples=150, deadline=None)
@given(
    case=st.sampled_from(CASES),
    victim=st.integers(0, 3),
    where=st.integers(0, 10**9),
    flip=st.integers(1, 255),
)
def test_any_damaged_byte_of_k_plus_one(
    case: tuple[str, int, int], victim: int, where: int, flip: int
) -> None:
    scheme, k, n = case
    _, frags = fragments(scheme, k, n)
    check_one_damaged(scheme, k, n, victim % (k + 1), where % len(frags[0]), flip)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_key_share_damage_of_each_fragment_is_named_as_such(scheme: str) -> None:
    data, frags = fragments(scheme, 2, 3)
    for victim in range(3):
        chosen = list(frags)
        chosen[victim] = damage(chosen[victim], 60, 0xFF)
        out, report = combine(chosen)
        assert out == data
        assert [(b.position, b.reason) for b in report.bad] == [
            (victim, "header damaged (key share)")
        ]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_damaged_index_byte_names_only_that_fragment(scheme: str) -> None:
    """An index rewritten to another present index (a duplicate) is set aside, even
    when the rewritten fragment comes first."""
    data, frags = fragments(scheme, 2, 3)
    forged = bytearray(frags[2])
    forged[13] = 1
    for order in ([bytes(forged), frags[0], frags[1]], [frags[0], frags[1], bytes(forged)]):
        out, report = combine(order)
        assert out == data
        pos = order.index(bytes(forged))
        assert [b.position for b in report.bad] == [pos]
        assert list(verify_fragments([io.BytesIO(f) for f in order]).problems) == [pos]


def test_more_damaged_key_shares_than_decoding_corrects_among_many() -> None:
    """8-of-16, five key shares damaged (decoding corrects four): the k-subsets are
    too many to try them all, so they are sampled; the first fragments being the
    damaged ones must not matter."""
    data = _data("many")
    dsts = [io.BytesIO() for _ in range(16)]
    split_stream(io.BytesIO(data), dsts, k=8, size=len(data), block_size=BLOCK)
    frags = [d.getvalue() for d in dsts]
    for i in range(5):
        frags[i] = damage(frags[i], 50 + 7 * i, 0x3C)
    out, report = combine(frags)
    assert out == data
    assert sorted((b.position, b.reason) for b in report.bad) == [
        (i, "header damaged (key share)") for i in range(5)
    ]


# ---------------------------------------------------------------------------- ties


def _tamper_lists(frag: bytes, slots: list[int], n: int) -> bytes:
    """Overwrite tag slots (0-based; n is the block tag) in every block's list."""
    bad = bytearray(frag)
    _hsize, records = layout(frag)
    for start, plen, _tlen in records:
        for slot in slots:
            at = start + plen + slot * TAG_SIZE
            bad[at : at + TAG_SIZE] = bytes(x ^ 0x5A for x in bad[at : at + TAG_SIZE])
    return bytes(bad)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_tie_between_k_tag_lists_blames_no_honest_fragment(scheme: str) -> None:
    """2-of-3 with fragments 1 (hostile tag list) and 2 (honest): the lists tie 1 to 1
    on every tampered slot (fragment 2's, the absent fragment 3's, the block tag's).
    The two payloads authenticate, so every slot follows from them: only the hostile
    list is named, and repair writes the exact fragment 3."""
    data, frags = fragments(scheme, 2, 3)
    for slots in ([2], [3], [2, 3], [1], [1, 2, 3]):
        hostile = _tamper_lists(frags[0], slots, 3)
        for order in ([hostile, frags[1]], [frags[1], hostile]):
            problems = verify_fragments([io.BytesIO(f) for f in order]).problems
            assert list(problems) == [order.index(hostile)], (slots, problems)
            assert problems[order.index(hostile)].startswith("damaged tag list")
            out, report = combine(order)
            assert out == data and report.bad == ()
            repaired = io.BytesIO()
            repair_stream([io.BytesIO(f) for f in order], 3, repaired)
            assert repaired.getvalue() == frags[2]


def test_without_k_authenticated_payloads_a_tie_blames_no_one() -> None:
    """When fewer than k payloads of a block authenticate, slots nothing proves are
    settled by a strict majority only: on a tie no tag list is held wrong."""
    a, b = bytes(range(16)) * 4, bytes(range(1, 17)) * 4
    assert settle_tags([a, b], 3, {}) == [None] * 4
    assert settle_tags([a, b, a], 3, {}) == [a[:16]] * 4
    assert settle_tags([a, b], 3, {1: b[:16]})[1] == b[:16]
    for scheme in SCHEMES:
        _, frags = fragments(scheme, 2, 3)
        _hsize, records = layout(frags[0])
        # Fragment 1: payload of block 1 damaged, slots of fragment 3 and of the block
        # tag tampered everywhere; fragment 2 honest.  Block 1 has one authenticated
        # payload only, so its slot 3 and block-tag slot tie.
        hostile = damage(_tamper_lists(frags[0], [2, 3], 3), records[1][0] + 7, 0x21)
        for order in ([hostile, frags[1]], [frags[1], hostile]):
            problems = verify_fragments([io.BytesIO(f) for f in order]).problems
            assert list(problems) == [order.index(hostile)], problems


@pytest.mark.parametrize("scheme", SCHEMES)
def test_a_crafted_tie_among_active_lists_names_only_the_damaged_fragment(scheme: str) -> None:
    """k + 1 = 3 fragments; fragment 1 has a damaged payload *and* a tag list whose slot
    for fragment 2 is forged, so the two lists combine and repair read first tie on
    fragment 2's tag.  Only fragment 1 is named; fragment 2 is never blamed."""
    data, frags = fragments(scheme, 2, 3)
    _hsize, records = layout(frags[0])
    hostile = damage(_tamper_lists(frags[0], [1], 3), records[1][0] + 5, 0x10)
    chosen = [hostile, frags[1], frags[2]]
    out, report = combine(chosen)
    assert out == data
    assert [b.position for b in report.bad] == [0]
    problems = verify_fragments([io.BytesIO(f) for f in chosen]).problems
    assert list(problems) == [0]
    repaired = io.BytesIO()
    repair_stream([io.BytesIO(f) for f in chosen], 1, repaired)
    assert repaired.getvalue() == frags[0]


# ------------------------------------------------------------------------- refresh


def _refresh(frags: tuple[bytes, ...] | list[bytes]) -> list[bytes]:
    dsts = [io.BytesIO() for _ in frags]
    refresh_stream([io.BytesIO(f) for f in frags], dsts)
    return [d.getvalue() for d in dsts]


@pytest.mark.parametrize(("scheme", "k", "n"), CASES)
def test_refresh_restores_and_old_fragments_do_not_mix(scheme: str, k: int, n: int) -> None:
    data, old = fragments(scheme, k, n)
    new = _refresh(old)
    assert read_header(io.BytesIO(new[0])).generation == 1
    assert combine(new[-k:])[0] == data
    assert verify_fragments([io.BytesIO(f) for f in new]).problems == {}
    mixed = [old[0], *new[1:k]]
    with pytest.raises(TesseraError):
        combine(mixed)
    majority_old = [*old[: k - 1], old[k - 1], new[k]]
    out, report = combine(majority_old)  # k old + 1 new: the new one is set aside
    assert out == data
    assert [(b.position, b.reason) for b in report.bad] == [(k, "from another refresh generation")]
    again = _refresh(new)
    assert combine(again[:k])[0] == data


def _hybrid(header_from: bytes, records_from: bytes) -> bytes:
    return header_from[:HEADER_SIZE] + records_from[HEADER_SIZE:]


def test_ssms_refresh_makes_old_pieces_useless() -> None:
    """New headers (new key shares) over old records do not authenticate, and old
    ciphertext pieces do not decrypt under the new data key."""
    data, old = fragments("ssms", 2, 3)
    new = _refresh(old)
    hybrids = [_hybrid(h, r) for h, r in zip(new, old, strict=True)]
    with pytest.raises(TesseraError):
        combine(hybrids)
    problems = verify_fragments([io.BytesIO(f) for f in hybrids]).problems
    assert sorted(problems) == [0, 1, 2]
    # Old pieces with the new keys: the data key changed, so they decrypt to noise.
    keys_old = open_fragments([io.BytesIO(f) for f in old]).keys
    keys_new = open_fragments([io.BytesIO(f) for f in new]).keys
    assert keys_old.data_key != keys_new.data_key
    assert keys_old.inner_key != keys_new.inner_key
    _hsize, records = layout(old[0])
    start, plen, _t = records[0]
    ct = np.frombuffer(old[0][start : start + plen] + old[1][start : start + plen], np.uint8)
    plain = np.empty(ct.size + 16, dtype=np.uint8)
    PlaneSealer(keys_new.inner_key).open(0, ct.copy(), plain, 16)
    assert plain[16 : 16 + 64].tobytes() != data[:64]
    PlaneSealer(keys_old.inner_key).open(0, ct.copy(), plain, 16)
    assert plain[16 : 16 + 64].tobytes() == data[:64]  # the old keys still would
    # And the pieces themselves are new.
    for a, b in zip(old, new, strict=True):
        assert a[HEADER_SIZE : HEADER_SIZE + plen] != b[HEADER_SIZE : HEADER_SIZE + plen]


def test_shamir_refresh_keeps_the_plaintext_tag_and_renews_shares() -> None:
    data, old = fragments("shamir", 2, 3)
    new = _refresh(old)
    assert combine(new[:2])[0] == data
    assert combine([new[0], new[2]])[0] == data
    out, report = combine([old[0], new[1], new[2]])
    assert out == data
    assert [(b.position, b.reason) for b in report.bad] == [(0, "from another refresh generation")]
    with pytest.raises(TesseraError):  # one of each generation: no majority
        combine([old[0], new[1]])
    # Old and new payloads lie on different polynomials.
    assert all(a[HEADER_SIZE:] != b[HEADER_SIZE:] for a, b in zip(old, new, strict=True))


def test_refresh_needs_every_fragment_intact() -> None:
    _, frags = fragments("ssms", 2, 3)
    _hsize, records = layout(frags[0])
    bad = damage(frags[1], records[2][0] + 3, 1)
    with pytest.raises(TesseraError, match="repair first"):
        _refresh([frags[0], bad, frags[2]])
