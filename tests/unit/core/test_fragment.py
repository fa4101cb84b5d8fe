"""Streaming fragments: round trips, every kind of damage named, repair and refresh."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.fragfmt import HEADER_SIZE, FragmentHeader, padded_size
from tessera.core.fragment import (
    combine_stream,
    fragment_length,
    read_header,
    refresh_stream,
    repair_stream,
    split_stream,
    verify_fragments,
)
from tessera.core.rng import Drbg
from tessera.errors import (
    InputError,
    InsufficientSharesError,
    InvalidShareError,
    TesseraError,
)

VECTORS = Path(__file__).parents[2] / "vectors"
BLOCK = 4096


def split(data: bytes, k: int, n: int, scheme: str = "shamir", **kw: object) -> list[bytes]:
    dsts = [io.BytesIO() for _ in range(n)]
    split_stream(io.BytesIO(data), dsts, k=k, size=len(data), scheme=scheme, block_size=BLOCK, **kw)  # type: ignore[arg-type]
    return [d.getvalue() for d in dsts]


def combine(frags: list[bytes]) -> tuple[bytes, object]:
    out = io.BytesIO()
    report = combine_stream([io.BytesIO(f) for f in frags], out)
    return out.getvalue(), report


SCHEMES = ["shamir", "ssms"]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("size", [0, 1, 63, 4096 - 16, 4096, 10_000, 3 * 4096 + 5])
def test_every_k_subset_restores(scheme: str, size: int) -> None:
    data = hashlib.shake_256(str(size).encode()).digest(size)
    frags = split(data, 3, 5, scheme)
    for subset in itertools.combinations(range(5), 3):
        out, report = combine([frags[i] for i in subset])
        assert out == data
        assert report.bad == ()  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_threaded_split_restores_and_fresh_randomness_per_slot(scheme: str, workers: int) -> None:
    data = hashlib.shake_256(b"threads").digest(25 * BLOCK + 123)
    frags = split(data, 3, 5, scheme, workers=workers)
    again = split(data, 3, 5, scheme, workers=workers)
    assert frags[0] != again[0]  # fresh randomness every split
    for subset in ((0, 1, 2), (2, 3, 4), (0, 2, 4)):
        out, report = combine([frags[i] for i in subset])
        assert out == data and report.bad == ()  # type: ignore[attr-defined]
    assert verify_fragments([io.BytesIO(f) for f in frags]).problems == {}


def test_deterministic_rng_gives_the_same_bytes_whatever_the_workers() -> None:
    data = hashlib.shake_256(b"kat").digest(9 * BLOCK)
    one = split(data, 2, 3, rng=Drbg.from_seed(bytes(32)), workers=1)
    four = split(data, 2, 3, rng=Drbg.from_seed(bytes(32)), workers=4)
    assert one == four


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fragment_sizes_hide_the_exact_length(scheme: str) -> None:
    a = split(b"x" * 5000, 2, 3, scheme)
    b = split(b"y" * 5100, 2, 3, scheme)
    assert len(a[0]) == len(b[0])
    h = read_header(io.BytesIO(a[0]))
    assert h.padded_size == padded_size(5000 + 16)
    assert fragment_length(h) == len(a[0])


def test_ssms_stores_n_over_k_not_n_times() -> None:
    data = bytes(2_000_000)

    def total(scheme: str) -> int:
        dsts = [io.BytesIO() for _ in range(5)]
        split_stream(io.BytesIO(data), dsts, k=3, size=len(data), scheme=scheme)
        return sum(len(d.getvalue()) for d in dsts)

    shamir, ssms = total("shamir"), total("ssms")
    assert shamir > 4.9 * len(data)
    assert ssms < 1.8 * len(data)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_corrupted_fragment_is_named_and_corrected(scheme: str) -> None:
    data = bytes(range(256)) * 100
    frags = split(data, 3, 5, scheme)
    bad = bytearray(frags[1])
    bad[len(bad) // 2] ^= 0x40
    out, report = combine([frags[0], bytes(bad), frags[2], frags[3]])
    assert out == data
    assert [(b.index, b.reason.split(" in ")[0]) for b in report.bad] == [(2, "damaged data")]  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_too_few_good_fragments_is_refused(scheme: str) -> None:
    frags = split(b"secret" * 1000, 3, 5, scheme)
    bad = bytearray(frags[0])
    bad[-100] ^= 1
    with pytest.raises(InsufficientSharesError, match="need 3 valid fragments"):
        combine(frags[1:3])
    with pytest.raises(InsufficientSharesError, match="fragment 1: damaged"):
        combine([bytes(bad), frags[1], frags[2]])


def test_truncated_and_foreign_and_duplicate_fragments_are_named() -> None:
    a = split(b"a" * 9000, 2, 4)
    b = split(b"b" * 9000, 2, 4)
    out, report = combine([a[0][:-10], b[1], a[0], a[0], a[2]])
    assert out == b"a" * 9000
    reasons = {(x.position, x.reason) for x in report.bad}  # type: ignore[attr-defined]
    assert reasons == {
        (0, "truncated"),
        (1, "belongs to another object"),
        (3, "duplicate fragment index"),
    }
    with pytest.raises(InvalidShareError, match="different objects"):
        combine([a[0], b[1]])
    with pytest.raises(InsufficientSharesError, match="not a Tessera fragment"):
        combine([b"hello world", a[0]])
    with pytest.raises(InputError, match="truncated fragment header"):
        read_header(io.BytesIO(a[0][:50]))


def test_header_key_share_damage_is_corrected_with_spares() -> None:
    data = b"k" * 7000
    frags = split(data, 2, 5)
    bad = bytearray(frags[0])
    bad[60] ^= 0xFF  # inside the key share
    out, report = combine([bytes(bad), frags[1], frags[2], frags[3]])
    assert out == data
    assert [b.index for b in report.bad] == [1]  # type: ignore[attr-defined]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 10**9), st.integers(1, 255), st.sampled_from(SCHEMES))
def test_any_flipped_byte_is_detected(where: int, bit: int, scheme: str) -> None:
    data = b"flip me " * 700
    frags = split(data, 3, 5, scheme, rng=Drbg.from_seed(bytes(32)))
    victim = where % 5
    damaged = bytearray(frags[victim])
    damaged[where % len(damaged)] ^= bit
    frags[victim] = bytes(damaged)
    # Never a wrong answer: either the data, or an error.
    try:
        out, _ = combine(frags[:3])
        assert out == data
    except TesseraError:
        pass
    # verify checks every byte of every fragment and names the damaged one.
    report = verify_fragments([io.BytesIO(f) for f in frags])
    assert list(report.problems) == [victim]
    assert report.recoverable


@pytest.mark.parametrize("scheme", SCHEMES)
def test_repair_rebuilds_the_identical_fragment(scheme: str) -> None:
    frags = split(b"repair" * 3000, 3, 5, scheme)
    for index in (1, 4, 5):
        others = [f for i, f in enumerate(frags, 1) if i != index][:3]
        out = io.BytesIO()
        repair_stream([io.BytesIO(f) for f in others], index, out)
        assert out.getvalue() == frags[index - 1]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_refresh_keeps_the_secret_and_old_fragments_do_not_mix(scheme: str) -> None:
    data = b"refresh" * 2000
    old = split(data, 3, 5, scheme)
    dsts = [io.BytesIO() for _ in range(5)]
    refresh_stream([io.BytesIO(f) for f in old], dsts)
    new = [d.getvalue() for d in dsts]
    assert all(a != b for a, b in zip(old, new, strict=True))
    assert combine(new[2:])[0] == data
    assert read_header(io.BytesIO(new[0])).generation == 1
    with pytest.raises(InsufficientSharesError, match="another refresh generation"):
        combine([old[0], old[1], new[2]])
    # Even a forged generation number does not let stale fragments through: their
    # headers do not authenticate under the refreshed keys.
    forged = bytearray(old[0])
    forged[16] = 1
    with pytest.raises(TesseraError):
        combine([bytes(forged), new[1], new[2]])


def test_refresh_needs_all_fragments() -> None:
    frags = split(b"x" * 100, 2, 3)
    with pytest.raises(InsufficientSharesError, match="repair first"):
        refresh_stream([io.BytesIO(f) for f in frags[:2]], [io.BytesIO(), io.BytesIO()])


def test_input_shorter_than_stated_size() -> None:
    with pytest.raises(InputError, match="ended before"):
        split_stream(io.BytesIO(b"abc"), [io.BytesIO() for _ in range(3)], k=2, size=10)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_format_known_answer(scheme: str) -> None:
    """Fragment bytes for a fixed DRBG seed; regenerate with
    tests/vectors/gen_fragment_v2.py only when the format version changes."""
    vectors = json.loads((VECTORS / "fragment_v2.json").read_text(encoding="utf-8"))
    vector = next(v for v in vectors if v["scheme"] == scheme)
    frags = split(
        bytes.fromhex(vector["plaintext"]),
        vector["k"],
        vector["n"],
        vector["scheme"],
        rng=Drbg.from_seed(bytes.fromhex(vector["seed"])),
    )
    assert [hashlib.sha256(f).hexdigest() for f in frags] == vector["sha256"]
    header = FragmentHeader.parse(frags[0][:HEADER_SIZE])
    assert frags[0][:48].hex() == vector["header_fields"]
    assert (header.version, header.k, header.n, header.index) == (2, 2, 3, 1)
    assert header.scheme == scheme
    assert combine(frags[1:])[0] == bytes.fromhex(vector["plaintext"])


def _v1_files() -> tuple[bytes, dict[str, list[bytes]]]:
    doc = json.loads((VECTORS / "fragment_v1_files.json").read_text(encoding="utf-8"))
    plain = base64.b64decode(doc["plaintext_b64"])
    return plain, {s: [base64.b64decode(f) for f in fs] for s, fs in doc["schemes"].items()}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_format_v1_fragments_still_restore_verify_repair_and_refresh(scheme: str) -> None:
    plain, files = _v1_files()
    frags = files[scheme]
    assert FragmentHeader.parse(frags[0][:HEADER_SIZE]).version == 1
    for subset in ((0, 1), (1, 2), (0, 2)):
        assert combine([frags[i] for i in subset])[0] == plain
    assert verify_fragments([io.BytesIO(f) for f in frags]).problems == {}
    damaged = bytearray(frags[0])
    damaged[HEADER_SIZE + 100] ^= 1
    out, report = combine([bytes(damaged), frags[1], frags[2]])
    assert out == plain and [b.index for b in report.bad] == [1]  # type: ignore[attr-defined]
    repaired = io.BytesIO()
    repair_stream([io.BytesIO(frags[1]), io.BytesIO(frags[2])], 1, repaired)
    assert repaired.getvalue() == frags[0]
    dsts = [io.BytesIO() for _ in range(3)]
    refresh_stream([io.BytesIO(f) for f in frags], dsts)
    fresh = [d.getvalue() for d in dsts]
    # ssms refresh re-encrypts, and writes format v2; shamir keeps its version.
    expected = 2 if scheme == "ssms" else 1
    assert FragmentHeader.parse(fresh[0][:HEADER_SIZE]).version == expected
    assert combine([fresh[0], fresh[2]])[0] == plain
    # v1 and v2 fragments never mix, even of equal parameters.
    v2 = split(plain, 2, 3, scheme)
    with pytest.raises(TesseraError):
        combine([fresh[0], v2[1]])


@pytest.mark.parametrize("scheme", SCHEMES)
def test_many_blocks_and_late_damage(scheme: str) -> None:
    """Damage deep inside a long file is named, and a spare takes over from there."""
    data = hashlib.shake_256(b"blocks").digest(40 * BLOCK + 123)
    frags = split(data, 3, 5, scheme)
    assert combine(frags[2:])[0] == data
    damaged = bytearray(frags[3])
    damaged[len(damaged) // 3] ^= 0x08
    out, report = combine([frags[0], frags[1], frags[2], bytes(damaged), frags[4]])
    assert out == data
    assert report.bad == ()  # type: ignore[attr-defined]
    out, report = combine([frags[1], frags[2], bytes(damaged), frags[4]])
    assert out == data
    assert [b.index for b in report.bad] == [4]  # type: ignore[attr-defined]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("workers", [1, 2, 4])
def test_threaded_combine_names_damage_in_several_blocks(scheme: str, workers: int) -> None:
    """Blocks restored in flight when damage is found still come out right; each
    damaged fragment is named once and spares take over."""
    data = hashlib.shake_256(b"lanes").digest(30 * BLOCK + 7)
    frags = split(data, 2, 5, scheme)
    plen = (len(frags[0]) - HEADER_SIZE) // 31
    bad1, bad2 = bytearray(frags[0]), bytearray(frags[1])
    for blk in (3, 4, 20):
        bad1[HEADER_SIZE + blk * plen + 10] ^= 0x40
    bad2[HEADER_SIZE + 12 * plen + 5] ^= 0x01
    dst = io.BytesIO()
    report = combine_stream(
        [io.BytesIO(f) for f in (bytes(bad1), bytes(bad2), *frags[2:])], dst, workers=workers
    )
    assert dst.getvalue() == data
    assert sorted(b.index for b in report.bad) == [1, 2]
    assert len(report.used) == 2 and 1 not in report.used and 2 not in report.used


@pytest.mark.parametrize("size", [0, 5, 4096, 10_000, 3 * 4096 + 77])
def test_progress_counts_exactly_the_plaintext(size: int) -> None:
    seen: list[int] = []
    split_stream(
        io.BytesIO(bytes(size)),
        [io.BytesIO() for _ in range(3)],
        k=2,
        size=size,
        block_size=BLOCK,
        progress=seen.append,
    )
    assert sum(seen) == size


@settings(max_examples=120, deadline=None)
@given(
    scheme=st.sampled_from(SCHEMES),
    version=st.sampled_from([1, 2]),
    edits=st.lists(
        st.tuples(
            st.integers(0, 4),  # which fragment
            st.sampled_from(["overwrite", "truncate", "extend", "splice"]),
            st.integers(0, 10**6),  # where
            st.binary(min_size=1, max_size=40),
        ),
        min_size=1,
        max_size=4,
    ),
    subset=st.lists(st.integers(0, 4), min_size=1, max_size=6),
)
def test_hostile_fragments_give_the_data_or_a_tessera_error(
    scheme: str, version: int, edits: list[tuple[int, str, int, bytes]], subset: list[int]
) -> None:
    """Whatever happens to the files (overwritten bytes, cuts, junk appended, pieces of
    another object's fragment pasted in), combine and verify either give exactly the
    data or raise a TesseraError: never a wrong answer, never another exception."""
    if version == 1:
        plain, files = _v1_files()
        frags = list(files[scheme][:3])
        frags += [frags[0], frags[1]]  # duplicates: also hostile input
    else:
        plain = b"hostile input " * 600
        frags = split(plain, 3, 5, scheme, rng=Drbg.from_seed(bytes(32)))
    other = split(b"another object " * 400, 3, 5, scheme, rng=Drbg.from_seed(bytes(31) + b"x"))
    work = [bytearray(f) for f in frags]
    for which, how, where, blob in edits:
        f = work[which]
        at = where % (len(f) + 1)
        if how == "overwrite":
            f[at : at + len(blob)] = blob[: max(0, len(f) - at)]
        elif how == "truncate":
            del f[at:]
        elif how == "extend":
            f.extend(blob)
        else:
            donor = other[which]
            f[at : at + len(blob)] = donor[at : at + len(blob)]
    chosen = [bytes(work[i % 5]) for i in subset]
    try:
        out, _ = combine(chosen)
        assert out == plain
    except TesseraError:
        pass
    with contextlib.suppress(TesseraError):
        verify_fragments([io.BytesIO(f) for f in chosen])
