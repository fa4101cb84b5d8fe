from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.prime import reconstruct_array, to_signed
from tessera.core.rng import Drbg
from tessera.errors import InputError, NotFoundError
from tessera.tables.encode import (
    PRIME,
    digits_of,
    encode_rows,
    parts_of,
    pseudonymise,
    read_csv,
    share_parts,
)
from tessera.tables.schema import Column, Schema
from tessera.tables.store import ShareStore, pack_chunk

SCHEMA = Schema(
    (
        Column("pid", "pseudonym", nullable=False),
        Column("age", "integer", 18, 25),
        Column("load", "integer", 0, 5000),
        Column("sex", "categorical", categories=("F", "M")),
        Column("smoker", "boolean"),
    )
)
CSV = b"pid,age,load,sex,smoker\nP1,20,17,F,true\nP2,,4999,M,false\nP3,25,0,,\n"


def _encode() -> tuple[object, dict[str, np.ndarray]]:
    header, rows = read_csv(CSV)
    enc = encode_rows(SCHEMA, header, rows, linkage_key=b"k" * 32)
    return enc, enc.parts


def test_thermometer_and_one_hot() -> None:
    enc, parts = _encode()
    assert enc.rows == 3 and not enc.errors
    th = parts["age.th"]  # offsets 2, NULL, 7 over steps 1..7
    assert th.shape == (3, 7)
    assert th[0].tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert th[1].tolist() == [0] * 7
    assert th[2].tolist() == [1] * 7
    assert parts["age.valid"].tolist() == [1, 0, 1]
    assert parts["sex.oh"].tolist() == [[1, 0], [0, 1], [0, 0]]
    assert parts["smoker.val"].tolist() == [1, 0, 0]
    assert parts["smoker.valid"].tolist() == [1, 1, 0]


def test_digit_thermometers_encode_base_16() -> None:
    col = SCHEMA.column("load")
    d = digits_of(col)
    assert d == 4  # 5000 < 16**4
    _, parts = _encode()
    for j in range(d):
        assert parts_of(col)[f"th{j}"] == 15
    # 4999 = 0x1387: digit j is the count of ones in its thermometer row
    digits = [int(parts[f"load.th{j}"][1].sum()) for j in range(d)]
    assert digits == [1, 3, 8, 7]


def test_pseudonyms_are_keyed_hashes() -> None:
    enc, _ = _encode()
    assert enc.keys["pid"][0] == pseudonymise("P1", b"k" * 32)
    assert pseudonymise("P1", b"k" * 32) != pseudonymise("P1", b"j" * 32)


def test_invalid_rows_are_named_by_line() -> None:
    header, rows = read_csv(b"pid,age,load,sex,smoker\nP1,20,1,F,true\nP2,99,1,F,true\nP3,20,1\n")
    enc = encode_rows(SCHEMA, header, rows, linkage_key=b"k" * 32)
    assert enc.rows == 1
    assert enc.errors[0].startswith("line 3: column age")
    assert enc.errors[1].startswith("line 4:")


def test_missing_columns_refused() -> None:
    header, rows = read_csv(b"pid,age\nP1,20\n")
    with pytest.raises(InputError, match="no column 'load'"):
        encode_rows(SCHEMA, header, rows, linkage_key=b"k" * 32)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=-(2**40), max_value=2**40), min_size=1, max_size=20))
def test_shares_reconstruct_with_core_prime(values: list[int]) -> None:
    parts = {"x.val": np.array(values, dtype=np.int64)}
    shares = share_parts(parts, n=3, t=1, rng=Drbg.from_seed(bytes(32)))
    for pair in ((0, 1), (1, 2), (0, 2)):
        got = reconstruct_array(
            {i: shares[i]["x.val"].astype(object) for i in pair}, t=1, p=PRIME, check=False
        )
        assert to_signed(got, PRIME).tolist() == values
    one = shares[0]["x.val"].astype(object)
    assert not np.array_equal(np.mod(np.array(values, dtype=object), PRIME), one)


def test_store_round_trip_and_refusals(tmp_path: Path) -> None:
    _, parts = _encode()
    shares = share_parts(parts, n=3, t=1)
    store = ShareStore(tmp_path)
    manifest = {"name": "t", "chunks": [{"id": "ab" * 8, "hospital": "H", "rows": 3}]}
    store.append("t", manifest, "ab" * 8, pack_chunk(shares[0], {"pid": ["a", "b", "c"]}))
    loaded = store.load("t", {"age.th"})
    assert set(loaded.parts) == {"age.th"}
    assert np.array_equal(loaded.parts["age.th"], shares[0]["age.th"])
    assert loaded.origins == ["H"] * 3 and loaded.keys == {"pid": ["a", "b", "c"]}
    with pytest.raises(InputError, match="does not list"):
        store.append("t", manifest, "cd" * 8, pack_chunk(shares[0], {}))
    with pytest.raises(InputError, match="malformed"):
        store.append("t", dict(manifest, chunks=[{"id": "ef" * 8, "rows": 3}]), "ef" * 8, b"junk")
    with pytest.raises(NotFoundError):
        store.chunk_dirs("t", ["99" * 8])
    with pytest.raises(InputError, match="invalid table name"):
        store.manifest("../etc")
