"""Streaming a CSV in blocks, column-wise parsing (same answers as cell by cell), and
upload bodies read like files."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.chunkfile import unpack_block
from tessera.errors import InputError
from tessera.tables import encode
from tessera.tables.encode import FIELD_LIMIT, encode_rows, parse_rows, pseudonymise, read_csv
from tessera.tables.schema import Column, Schema, parse_value
from tessera.tables.stream import BLOCK_BYTES, Body, CsvSource, block_bodies, block_rows

SCHEMA = Schema(
    (
        Column("pid", "pseudonym", nullable=False),
        Column("age", "integer", 18, 25),
        Column("bmi", "decimal", 120, 600, 1),
        Column("visit", "date", 16436, 20088),
        Column("sex", "categorical", categories=("F", "M")),
        Column("smoker", "boolean"),
    )
)
CELLS = {
    "pid": ["P1", "P2", " P3 ", "", "P4"],
    "age": ["18", "25", "26", "x", "", "NA", " 20 ", "+19", "1_9"],
    "bmi": ["12.0", "60", "60.1", "25.55", "abc", "", "3e1", "NaN"],
    "visit": ["2015-01-01", "2024-12-31", "2025-01-01", "2020-02-30", "", "null"],
    "sex": ["F", "M", "f", "", "X"],
    "smoker": ["true", "0", "yes", "maybe", "", "N"],
}


def _reference(rows: list[tuple[int, list[str]]]) -> tuple[dict[str, list[int | None]], list[str]]:
    """Cell by cell, as Tessera parsed before: each row's first bad column, or its units."""
    units: dict[str, list[int | None]] = {
        c.name: [] for c in SCHEMA.columns if c.kind != "pseudonym"
    }
    errors = []
    for line, row in rows:
        if len(row) != len(SCHEMA.columns):
            errors.append(f"line {line}: {len(row)} fields, expected {len(SCHEMA.columns)}")
            continue
        parsed, bad = {}, None
        for col, cell in zip(SCHEMA.columns, row, strict=True):
            if col.kind == "pseudonym":
                if not cell.strip():
                    bad = f"line {line}: column {col.name}: empty key"
                    break
                continue
            try:
                parsed[col.name] = parse_value(col, cell)
            except ValueError as exc:
                bad = f"line {line}: column {col.name}: {exc}"
                break
        if bad:
            errors.append(bad)
            continue
        for name, v in parsed.items():
            units[name].append(v)
    return units, errors


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60))
def test_column_wise_parsing_gives_the_cell_by_cell_answers(seed: int, n: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        row = [rng.choice(CELLS[c.name]) for c in SCHEMA.columns]
        if rng.random() < 0.05:
            row = row[:-1]
        rows.append((i + 2, row))
    encode._UNITS.clear()  # a cold cache and then a warm one give the same answers
    for _ in range(2):
        parsed = parse_rows(SCHEMA, [c.name for c in SCHEMA.columns], rows, linkage_key=b"k" * 16)
        units, errors = _reference(rows)
        assert parsed.errors == errors
        for name, want in units.items():
            assert parsed.valid[name].tolist() == [int(v is not None) for v in want]
            assert parsed.units[name].tolist() == [0 if v is None else v for v in want]
        assert parsed.rows == n - len(errors)  # each bad row named once, left out


def test_the_parse_cache_forgets_when_full(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encode, "_CACHE_LIMIT", 3)
    col = Column("age", "integer", 0, 100)
    for start in range(0, 40, 10):
        units, _, bad = encode._parse_column(col, [str(v) for v in range(start, start + 10)])
        assert units.tolist() == list(range(start, start + 10)) and not bad
        assert len(encode._UNITS[col]) <= 10


def test_keyed_hashes_in_bulk_equal_one_by_one() -> None:
    values = [" P1 ", "x", "", "ünï", "P" * 300]
    for key in (b"k" * 32, b"short", bytes(range(100))):
        assert encode.pseudonymise_many(values, key) == [pseudonymise(v, key) for v in values]


def test_encoded_parts_keep_their_shape_and_values() -> None:
    header, rows = read_csv(b"pid,age,bmi,visit,sex,smoker\nP1,20,25.5,2016-01-01,M,true\n")
    enc = encode_rows(SCHEMA, header, rows, linkage_key=b"k" * 32)
    assert enc.parts["age.th"].shape == (1, 7) and enc.parts["age.th"][0].tolist()[:3] == [1, 1, 0]
    assert enc.parts["age.th"].flags.f_contiguous  # each step's column contiguous
    assert enc.parts["sex.oh"].tolist() == [[0, 1]]


def _csv(tmp_path: Path, text: str, name: str = "a.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode())
    return path


def test_blocks_keep_line_numbers_and_skip_empty_lines(tmp_path: Path) -> None:
    text = 'a,b\n1,"two\nlines"\n\n3,4\n5,6\n'
    source = CsvSource(_csv(tmp_path, text))
    read: list[int] = []
    blocks = list(source.blocks(2, read.append))
    assert source.header == ["a", "b"]
    assert [[line for line, _ in b] for b in blocks] == [[3, 5], [6]]
    assert blocks[0][0][1] == ["1", "two\nlines"]
    assert sum(read) == len(text.encode())  # every byte reported once
    assert list(source.blocks(10)) == [blocks[0] + blocks[1]]  # read again, same rows


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"a,b\n\xff\xfe,1\n", "not UTF-8"),
        (b"a\n" + b"x" * 200_000 + b"\n", "CSV line 2: field larger"),
    ],
)
def test_unreadable_csvs_are_refused_in_one_line(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(data)
    with pytest.raises(InputError, match=message):
        list(CsvSource(path).blocks(100))
    with pytest.raises(InputError, match="no such file"):
        CsvSource(tmp_path / "missing.csv")


def test_a_body_streams_its_buffers_with_its_length_known(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Body, "PIECE", 16)
    pieces = [b"head", np.arange(5, dtype=np.uint64), b"", np.arange(3, dtype=np.uint64)]
    body = Body(pieces)
    whole = b"".join(bytes(memoryview(p).cast("B")) for p in pieces)
    assert len(body) == len(whole) and body.getvalue() == whole
    sent = [bytes(chunk) for chunk in body]
    assert b"".join(sent) == whole and max(len(c) for c in sent) <= 16
    assert body.seek(0, io.SEEK_END) == len(whole) and body.tell() == len(whole)
    assert body.seek(-3, io.SEEK_CUR) == len(whole) - 3 and body.seek(0) == 0
    assert not hasattr(body, "read")  # httpx sends the buffers as they are


def test_block_bodies_hold_each_custodians_shares() -> None:
    header, rows = read_csv(
        b"pid,age,bmi,visit,sex,smoker\nP1,20,25.5,2016-01-01,M,true\nP2,,,,,\n"
    )
    enc = encode_rows(SCHEMA, header, rows, linkage_key=b"k" * 32)
    bodies = block_bodies(enc, n=3, t=1, chunk_rows=5, first_row=1)
    blocks = [unpack_block(b.getvalue()) for b in bodies]
    assert all((b.chunk_rows, b.first_row, b.rows) == (5, 1, 2) for b in blocks)
    for name, values in enc.parts.items():  # any two custodians reconstruct every part
        s0 = blocks[0].parts[name].astype(object)
        s1 = blocks[1].parts[name].astype(object)
        secret = (2 * s0 - s1) % encode.PRIME  # f(0) from f(1), f(2)
        assert np.array_equal(secret.T.reshape(values.shape), np.mod(values, encode.PRIME))
    assert blocks[2].keys == enc.keys


def test_block_rows_stay_within_the_block_size() -> None:
    assert block_rows(317) * 8 * 317 <= BLOCK_BYTES and block_rows(10**9) >= 1024
    # a block's sub-column is long enough for the custodians' direct writes (64 KiB)
    assert block_rows(317) * 8 >= 64 << 10


def test_field_limit_holds_even_when_another_library_raised_it(tmp_path: Path) -> None:
    csv.field_size_limit(1 << 40)  # what scipy's ARFF reader does, process-wide
    path = tmp_path / "big.csv"
    path.write_bytes(b"a\n" + b"x" * (FIELD_LIMIT + 1) + b"\n")
    with pytest.raises(InputError, match="CSV line 2: field larger"):
        list(CsvSource(path).blocks(100))
    with pytest.raises(InputError, match="CSV line 2: field larger"):
        read_csv(path.read_bytes())
