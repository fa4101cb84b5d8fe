"""Columnar chunks (format version 2): upload blocks, staged writes, checksums, and the
version-1 chunks written before it, which still read."""

from __future__ import annotations

import errno
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tessera.core import chunkfile
from tessera.core.chunkfile import pack_block, unpack_block
from tessera.errors import InputError, IntegrityError, NotFoundError, StorageUnavailableError
from tessera.mpc.party import load_input
from tessera.mpc.stored import StoredTable
from tessera.tables.encode import PRIME, encode_rows, read_csv, share_parts
from tessera.tables.schema import Column, Schema
from tessera.tables.store import ShareStore, pack_chunk
from tessera.tables.stream import block_bodies

SCHEMA = Schema(
    (
        Column("pid", "pseudonym", nullable=False),
        Column("age", "integer", 18, 25),
        Column("load", "integer", 0, 5000),
        Column("sex", "categorical", categories=("F", "M")),
    )
)
ROWS = 10
CSV = "pid,age,load,sex\n" + "".join(
    f"P{i},{18 + i % 8},{i * 411},{'FM'[i % 2]}\n" for i in range(ROWS)
)
CHUNK = "ab" * 16


def _encoded() -> Any:
    header, rows = read_csv(CSV.encode())
    return encode_rows(SCHEMA, header, rows, linkage_key=b"k" * 32)


def _manifest(rows: int = ROWS, chunk: str = CHUNK) -> dict[str, Any]:
    return {"name": "t", "chunks": [{"id": chunk, "hospital": "H", "rows": rows}], "party": 0}


def _blocks(sizes: list[int]) -> tuple[list[bytes], dict[str, np.ndarray]]:
    """Party 0's upload blocks of the encoded rows in runs of ``sizes``, and its shares."""
    enc = _encoded()
    bodies, start = [], 0
    shares: dict[str, list[np.ndarray]] = {}
    for size in sizes:
        part = type(enc)(
            size,
            {k: v[start : start + size] for k, v in enc.parts.items()},
            {k: v[start : start + size] for k, v in enc.keys.items()},
        )
        body = block_bodies(part, n=3, t=1, chunk_rows=ROWS, first_row=start)[0].getvalue()
        bodies.append(body)
        for name, arr in unpack_block(body).parts.items():
            shares.setdefault(name, []).append(np.asarray(arr).T)
        start += size
    return bodies, {k: np.concatenate(v).reshape(ROWS, -1) for k, v in shares.items()}


def test_a_block_round_trips() -> None:
    parts = {
        "a.th": np.arange(6, dtype=np.uint64).reshape(2, 3),
        "a.valid": np.ones((1, 3), np.uint64),
    }
    body = pack_block(
        parts, {"a.th": 2, "a.valid": 0}, {"pid": ["x", "y", "z"]}, chunk_rows=9, first_row=3
    )
    block = unpack_block(body)
    assert (block.chunk_rows, block.first_row, block.rows) == (9, 3, 3)
    assert block.cols == {"a.th": 2, "a.valid": 0}
    assert np.array_equal(block.parts["a.th"], parts["a.th"])
    assert block.keys == {"pid": ["x", "y", "z"]}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"XXXXXXXX" + b[8:], "magic"),
        (lambda b: b[:8] + b"\x09\x00" + b[10:], "version"),
        (lambda b: b[:-8], "length does not fit"),
        (lambda b: b + bytes(8), "length does not fit"),
        (lambda b: b[:-8] + (2**61 - 1).to_bytes(8, "little"), "outside the field"),
    ],
)
def test_a_malformed_block_is_refused(mutate: Any, message: str) -> None:
    body = pack_block(
        {"a.val": np.arange(3, dtype=np.uint64).reshape(1, 3)},
        {"a.val": 0},
        {},
        chunk_rows=3,
        first_row=0,
    )
    with pytest.raises(InputError, match=message):
        unpack_block(mutate(body))


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ({"chunk_rows": 2, "first_row": 0, "rows": 3, "parts": [], "keys": {}}, "beyond"),
        (
            {"chunk_rows": 3, "first_row": 0, "rows": 3, "parts": [["../x", 0]], "keys": {}},
            "part name",
        ),
        (
            {
                "chunk_rows": 3,
                "first_row": 0,
                "rows": 3,
                "parts": [["a.b", 0], ["a.b", 0]],
                "keys": {},
            },
            "part a.b",
        ),
        ({"chunk_rows": 3, "first_row": 0, "rows": 3, "parts": [], "keys": {"pid": ["x"]}}, "keys"),
        ({"chunk_rows": 3, "first_row": 0, "rows": 3, "parts": [], "keys": {}, "x": 1}, "fields"),
        ({"chunk_rows": -1, "first_row": 0, "rows": 0, "parts": [], "keys": {}}, "row numbers"),
    ],
)
def test_a_block_header_that_lies_is_refused(header: dict[str, Any], message: str) -> None:
    text = json.dumps(header).encode()
    pad = -(16 + len(text)) % 8
    body = chunkfile.BLOCK_MAGIC + (1).to_bytes(2, "little") + bytes(2)
    body += len(text).to_bytes(4, "little") + text + bytes(pad)
    with pytest.raises(InputError, match=message):
        unpack_block(body)


def test_blocks_are_staged_and_stored_with_the_last(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    bodies, shares = _blocks([4, 4, 2])
    store.append("t", _manifest(), CHUNK, bodies[0])
    store.append("t", _manifest(), CHUNK, bodies[1])
    assert store.tables() == []  # nothing visible before the last block
    with pytest.raises(NotFoundError):
        store.manifest("t")
    store.append("t", _manifest(), CHUNK, bodies[2])
    loaded = store.load("t")
    for name, arr in shares.items():
        assert np.array_equal(loaded.parts[name].reshape(ROWS, -1), arr)
    assert loaded.keys["pid"] == _encoded().keys["pid"]
    folder = Path(store.chunk_dirs("t")[0]["dir"])
    index = chunkfile.read_index(folder)
    assert index is not None and index.rows == ROWS and set(index.parts) == set(shares)
    th = np.load(folder / "age.th.npy", mmap_mode="r")
    assert th.flags.f_contiguous and th.shape == (ROWS, 7)  # every sub-column contiguous
    with pytest.raises(InputError, match="already stored"):
        store.append("t", _manifest(), CHUNK, bodies[2])


def test_blocks_out_of_order_or_of_another_upload_are_refused(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    bodies, _ = _blocks([4, 4, 2])
    with pytest.raises(InputError, match="no upload in progress"):
        store.append("t", _manifest(), CHUNK, bodies[1])
    store.append("t", _manifest(), CHUNK, bodies[0])
    with pytest.raises(InputError, match="does not continue"):
        store.append("t", _manifest(), CHUNK, bodies[2])  # skips rows 4..7
    assert not (tmp_path / "tables" / "t" / f".upload-{CHUNK}").exists()  # dropped
    other, _ = _blocks([10])
    with pytest.raises(InputError, match="chunk size differs"):
        store.append("t", _manifest(rows=9), CHUNK, other[0])


def test_a_damaged_part_or_keys_file_is_named_when_read(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    bodies, _ = _blocks([ROWS])
    store.append("t", _manifest(), CHUNK, bodies[0])
    folder = Path(store.chunk_dirs("t")[0]["dir"])
    spec = {"parts": ["age.th", "age.valid"], "chunks": store.chunk_dirs("t")}
    path = folder / "age.th.npy"
    data = bytearray(path.read_bytes())
    data[chunkfile.HEADER_BYTES + 8 * ROWS * 3 + 5] ^= 1  # a byte of sub-column 3
    path.write_bytes(bytes(data))
    table = StoredTable(spec)
    assert table.part("age.th").column(2).shape == (ROWS,)  # the others still read
    with pytest.raises(IntegrityError, match=r"age\.th\[3\] is damaged"):
        table.part("age.th").column(3)
    with pytest.raises(IntegrityError, match="damaged"):
        store.load("t", {"age.th"})
    keys = folder / "keys.json"
    keys.write_bytes(keys.read_bytes().replace(b'"', b"'", 1))
    with pytest.raises(IntegrityError, match="keys are damaged"):
        table.keys()


def test_an_index_from_a_newer_version_is_refused_naming_it(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    store.append("t", _manifest(), CHUNK, _blocks([ROWS])[0][0])
    folder = Path(store.chunk_dirs("t")[0]["dir"])
    doc = json.loads((folder / "chunk.json").read_text())
    (folder / "chunk.json").write_text(json.dumps({**doc, "version": 3}))
    with pytest.raises(InputError, match="version 3 is not one this custodian reads"):
        store.load("t")


def _version_1_chunk(
    folder: Path, shares: dict[str, np.ndarray], keys: dict[str, list[str]]
) -> None:
    """A chunk as Tessera wrote it before version 2: C-order .npy parts, keys.json."""
    folder.mkdir(parents=True)
    for part, arr in shares.items():
        np.save(folder / f"{part}.npy", arr)
    (folder / "keys.json").write_text(json.dumps(keys))


def test_version_1_chunks_still_read(tmp_path: Path) -> None:
    enc = _encoded()
    shares = share_parts(enc.parts, n=3, t=1)[0]
    store = ShareStore(tmp_path)
    manifest = {"name": "t", "chunks": [{"id": CHUNK, "hospital": "H", "rows": ROWS}]}
    table_dir = tmp_path / "tables" / "t"
    _version_1_chunk(table_dir / CHUNK, shares, enc.keys)
    (table_dir / "manifest.json").write_text(json.dumps(manifest))
    loaded = store.load("t")
    assert all(np.array_equal(loaded.parts[k], v) for k, v in shares.items())
    stored = StoredTable({"parts": list(shares), "chunks": store.chunk_dirs("t")})
    assert np.array_equal(stored.part("age.th").column(4), shares["age.th"][:, 4])
    blocks = list(stored.part("load.th1").blocks_t())
    assert np.array_equal(blocks[0], shares["load.th1"].T)
    assert stored.keys() == enc.keys


def test_an_npz_upload_from_an_older_client_is_stored_as_version_2(tmp_path: Path) -> None:
    enc = _encoded()
    shares = share_parts(enc.parts, n=3, t=1)[0]
    store = ShareStore(tmp_path)
    store.append("t", _manifest(), CHUNK, pack_chunk(shares, enc.keys))
    folder = Path(store.chunk_dirs("t")[0]["dir"])
    assert chunkfile.read_index(folder) is not None
    bad = {**shares, "age.val": np.full(ROWS, PRIME, dtype=np.uint64)}
    with pytest.raises(InputError, match="outside the field"):
        store.append("t", _manifest(chunk="cd" * 16), "cd" * 16, pack_chunk(bad, {}))


def test_parts_read_in_place_across_chunks(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    enc = _encoded()
    shares = share_parts(enc.parts, n=3, t=1)[0]
    chunks = []
    for n, (lo, hi) in enumerate([(0, 6), (6, 10)]):
        cid = f"{n:02d}" * 16
        chunks.append({"id": cid, "hospital": f"H{n}", "rows": hi - lo})
        part = {k: v[lo:hi] for k, v in shares.items()}
        keys = {k: v[lo:hi] for k, v in enc.keys.items()}
        store.append("t", {"name": "t", "chunks": list(chunks)}, cid, pack_chunk(part, keys))
    spec = {"parts": ["age.th", "age.valid", "sex.oh"], "chunks": store.chunk_dirs("t")}
    table = StoredTable(spec)
    assert table.rows == ROWS and table.chunk_rows == [6, 4]
    assert table.origins() == ["H0"] * 6 + ["H1"] * 4
    assert table.origin_index(["H1", "H0"]).tolist() == [1] * 6 + [0] * 4
    assert np.array_equal(table.part("age.valid").vector(), shares["age.valid"])
    assert np.array_equal(table.part("sex.oh").full(), shares["sex.oh"])
    stacked = np.concatenate(list(table.part("age.th").blocks_t()), axis=1)
    assert np.array_equal(stacked, shares["age.th"].T)
    with pytest.raises(KeyError):
        table.part("load.val")  # not listed for the job


def test_load_input_reads_lazily(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    enc = _encoded()
    shares = share_parts(enc.parts, n=3, t=1)[0]
    store.append("t", _manifest(), CHUNK, pack_chunk(shares, enc.keys))
    (tmp_path / "inputs.json").write_text(
        json.dumps({"p": {"parts": ["age.valid"], "chunks": store.chunk_dirs("t")}})
    )
    parts, keys, origins = load_input(tmp_path, "p")
    assert list(parts) == ["age.valid"] and origins == ["H"] * ROWS
    assert np.array_equal(parts["age.valid"], shares["age.valid"])
    assert keys["pid"] == enc.keys["pid"]


def test_the_index_checksums_are_crc32_of_each_sub_column(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    bodies, _ = _blocks([3, 7])
    store.append("t", _manifest(), CHUNK, bodies[0])
    store.append("t", _manifest(), CHUNK, bodies[1])
    folder = Path(store.chunk_dirs("t")[0]["dir"])
    index = chunkfile.read_index(folder)
    assert index is not None
    th = np.load(folder / "age.th.npy")
    assert index.parts["age.th"].crc32[5] == zlib.crc32(np.ascontiguousarray(th[:, 5]).tobytes())
    assert index.keys_crc32 == zlib.crc32((folder / "keys.json").read_bytes())


def test_a_custodian_whose_disk_is_full_refuses_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    store = ShareStore(tmp_path)
    with pytest.raises(StorageUnavailableError, match=r"cannot store the chunk \(No space left"):
        store.append("t", _manifest(), CHUNK, _blocks([ROWS])[0][0])
    assert not list((tmp_path / "tables" / "t").glob(".upload-*"))  # nothing half-written
