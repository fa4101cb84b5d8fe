"""Columnar table chunks: the files a custodian keeps and the blocks a client uploads.

A *chunk* is what one hospital appended to a shared table; a custodian keeps its Shamir
shares (uint64 elements of GF(2^61 - 1)) in one folder, one file per *part* (see
``tessera.tables.encode``).  Reference: docs/formats.md, "Table chunk".

- **Version 2** (written since 0.x): ``PART.npy`` in NumPy's ``.npy`` format with a
  128-byte header, ``<u8``, Fortran order for the parts with sub-columns (every
  sub-column is contiguous, so a predicate that reads one column of a thermometer reads
  only that column), memory-mapped by the MPC parties; ``keys.json`` (the clear
  pseudonym keys) and ``chunk.json``, the index: row count, every part's sub-columns and
  the CRC-32 of every sub-column and of ``keys.json``, checked when read.
- **Version 1** (no ``chunk.json``): ``PART.npy`` in C order, ``keys.json``; read as
  before, without checksums.

An upload is a sequence of *blocks* (:func:`pack_block`), each a run of consecutive rows
of every part, sub-column by sub-column, so that a custodian writes each sub-column of
a block straight into place in the chunk's files (:class:`ChunkWriter`) and the client
never holds more than one block.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import mmap
import os
import re
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tessera.core.direct_io import DirectWriter
from tessera.errors import InputError, IntegrityError

__all__ = [
    "BLOCK_MAGIC",
    "CHUNK_INDEX",
    "FORMAT",
    "KEYS_FILE",
    "VERSION",
    "Block",
    "ChunkIndex",
    "ChunkWriter",
    "PartInfo",
    "block_header",
    "check_part_name",
    "keep_freed_memory",
    "npy_header",
    "open_part",
    "pack_block",
    "read_index",
    "release",
    "unpack_block",
    "verify_column",
    "verify_keys",
]

FORMAT = "tessera-chunk"
VERSION = 2
CHUNK_INDEX = "chunk.json"
KEYS_FILE = "keys.json"
HEADER_BYTES = 128  # the .npy header of every part file (magic, length, dict, padding)
BLOCK_MAGIC = b"TSSRBLCK"
BLOCK_VERSION = 1
MAX_PARTS = 4096
MAX_COLS = 4096
MAX_ROWS = 1 << 40
_MAX_BLOCK_HEADER = 64 << 20
_PRIME = (1 << 61) - 1
_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}\.[a-z]{1,8}[0-9]{0,2}$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
U64 = npt.NDArray[np.uint64]


def check_part_name(name: str) -> str:
    """``name`` if it names a part (``COLUMN.part``), else InputError."""
    if not isinstance(name, str) or not _PART.match(name):
        raise InputError(f"malformed part name {str(name)[:70]!r}")
    return name


@dataclass(frozen=True)
class PartInfo:
    """One part of a chunk: sub-columns (0 for a vector) and each one's CRC-32."""

    cols: int
    crc32: tuple[int, ...]


@dataclass(frozen=True)
class ChunkIndex:
    """``chunk.json``: what a version-2 chunk folder holds."""

    rows: int
    parts: Mapping[str, PartInfo]
    keys_crc32: int

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "rows": self.rows,
            "parts": {
                name: {"cols": p.cols, "crc32": list(p.crc32)}
                for name, p in sorted(self.parts.items())
            },
            "keys": {"crc32": self.keys_crc32},
        }

    @classmethod
    def from_dict(cls, doc: Any) -> ChunkIndex:
        """Parse and check an index; InputError naming what is wrong."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise InputError("malformed table chunk index (not a tessera-chunk document)")
        version = doc.get("version")
        if version != VERSION:
            raise InputError(
                f"table chunk format version {version!r} is not one this custodian reads "
                f"(it reads versions 1 and {VERSION}): upgrade Tessera"
            )
        rows = doc.get("rows")
        parts = doc.get("parts")
        keys = doc.get("keys")
        if type(rows) is not int or not 0 <= rows <= MAX_ROWS or not isinstance(parts, dict):
            raise InputError("malformed table chunk index (rows, parts)")
        if not isinstance(keys, dict) or type(keys.get("crc32")) is not int:
            raise InputError("malformed table chunk index (keys)")
        out: dict[str, PartInfo] = {}
        for name, info in parts.items():
            check_part_name(name)
            cols = info.get("cols") if isinstance(info, dict) else None
            crcs = info.get("crc32") if isinstance(info, dict) else None
            if type(cols) is not int or not 0 <= cols <= MAX_COLS or not isinstance(crcs, list):
                raise InputError(f"malformed table chunk index (part {name})")
            if len(crcs) != max(cols, 1) or not all(type(c) is int for c in crcs):
                raise InputError(f"malformed table chunk index (checksums of {name})")
            out[name] = PartInfo(cols, tuple(crcs))
        return cls(rows, out, int(keys["crc32"]))


def read_index(folder: Path) -> ChunkIndex | None:
    """The index of the chunk in ``folder``; None for a version-1 chunk (no index)."""
    try:
        text = (folder / CHUNK_INDEX).read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise InputError("malformed table chunk index (not JSON)") from None
    return ChunkIndex.from_dict(doc)


def npy_header(rows: int, cols: int) -> bytes:
    """The 128-byte ``.npy`` header of a part: uint64, ``(rows,)`` or Fortran-order
    ``(rows, cols)``."""
    shape = f"({rows},)" if cols == 0 else f"({rows}, {cols})"
    order = "True" if cols else "False"
    text = f"{{'descr': '<u8', 'fortran_order': {order}, 'shape': {shape}, }}".encode()
    pad = HEADER_BYTES - 10 - len(text) - 1
    if pad < 0:  # pragma: no cover - rows and cols are bounded far below this
        raise InputError("part too large for its header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", HEADER_BYTES - 10) + text + b" " * pad + b"\n"


def open_part(folder: Path, name: str, index: ChunkIndex | None) -> U64:
    """Part ``name`` of the chunk in ``folder``, memory-mapped read-only: ``(rows,)`` or
    ``(rows, cols)`` (its ``base`` is the map: :func:`release` drops its pages from the
    process).  With an index (version 2) its shape is checked against it; the checksums
    are checked by :func:`verify_column` (per sub-column, when read)."""
    check_part_name(name)
    path = folder / f"{name}.npy"
    try:
        with open(path, "rb") as fh:
            major, _ = np.lib.format.read_magic(fh)
            if major == 1:
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
            size = os.fstat(fh.fileno()).st_size
            count = int(np.prod(shape)) if shape else 1
            if dtype != np.dtype("<u8") or len(shape) not in (1, 2) or size != offset + 8 * count:
                raise IntegrityError(f"table part {name} is not a uint64 vector or matrix")
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if count else None
    except FileNotFoundError:
        raise InputError(f"the chunk has no part {name}") from None
    except (OSError, ValueError) as exc:
        raise IntegrityError(f"table part {name} is unreadable ({type(exc).__name__})") from None
    order: Literal["C", "F"] = "F" if fortran else "C"
    if mapped is None:
        arr: U64 = np.zeros(shape, dtype=np.uint64, order=order)
    else:
        arr = np.ndarray(shape, dtype="<u8", buffer=mapped, offset=offset, order=order)
    if index is not None:
        info = index.parts.get(name)
        want = (index.rows,) if info is None or info.cols == 0 else (index.rows, info.cols)
        if info is None or arr.shape != want:
            raise IntegrityError(f"table part {name} does not match the chunk's index")
    return arr


def release(arr: Any) -> None:
    """Drop the pages of a memory-mapped part (from :func:`open_part`) from this
    process: they stay in the page cache, and are read again if touched."""
    base = arr.base
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if isinstance(base, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
        with contextlib.suppress(OSError, ValueError):
            base.madvise(mmap.MADV_DONTNEED)


def verify_column(arr: U64, index: ChunkIndex, name: str, col: int | None) -> None:
    """IntegrityError unless sub-column ``col`` (None: the vector) of part ``name`` has
    the CRC-32 the index gives."""
    info = index.parts[name]
    data = arr if col is None else arr[:, col]
    crc = zlib.crc32(np.ascontiguousarray(data).data.cast("B"))
    if crc != info.crc32[0 if col is None else col]:
        where = name if col is None else f"{name}[{col}]"
        raise IntegrityError(f"table part {where} is damaged (its checksum does not match)")


def verify_keys(data: bytes, index: ChunkIndex) -> None:
    """IntegrityError unless ``keys.json`` (its bytes) has the CRC-32 of the index."""
    if zlib.crc32(data) != index.keys_crc32:
        raise IntegrityError("the chunk's keys are damaged (their checksum does not match)")


# ----- upload blocks ------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """Rows ``first_row .. first_row + rows`` of a chunk of ``chunk_rows`` rows.

    ``parts``: name -> ``(max(cols, 1), rows)`` uint64, sub-column by sub-column;
    ``cols``: name -> sub-columns (0 for a vector); ``keys``: column -> clear keys.
    """

    chunk_rows: int
    first_row: int
    rows: int
    cols: Mapping[str, int]
    parts: Mapping[str, U64]
    keys: Mapping[str, list[str]]


def block_header(
    cols: Mapping[str, int],
    keys: Mapping[str, Sequence[str]],
    *,
    rows: int,
    chunk_rows: int,
    first_row: int,
) -> bytes:
    """The bytes of an upload block before its parts' data: magic, version, flags,
    header length, the JSON header and padding to 8 bytes."""
    header = json.dumps(
        {
            "chunk_rows": chunk_rows,
            "first_row": first_row,
            "rows": rows,
            "parts": [[name, c] for name, c in cols.items()],
            "keys": {k: list(v) for k, v in keys.items()},
        },
        separators=(",", ":"),
    ).encode()
    pad = -(16 + len(header)) % 8
    return BLOCK_MAGIC + struct.pack("<HHI", BLOCK_VERSION, 0, len(header)) + header + bytes(pad)


def pack_block(
    parts: Mapping[str, U64],
    cols: Mapping[str, int],
    keys: Mapping[str, Sequence[str]],
    *,
    chunk_rows: int,
    first_row: int,
) -> bytes:
    """One upload block: ``parts[name]`` is ``(max(cols, 1), rows)`` C-contiguous uint64
    (sub-column by sub-column), values below 2^61 - 1, in the order of ``cols``."""
    rows = -1
    for name in cols:
        arr = parts[name]
        if arr.ndim != 2 or arr.shape[0] != max(cols[name], 1):
            raise ValueError(f"part {name}: expected (sub-columns, rows)")
        rows = arr.shape[1] if rows < 0 else rows
        if arr.shape[1] != rows:
            raise ValueError("every part of a block has the same rows")
    head = block_header(cols, keys, rows=max(rows, 0), chunk_rows=chunk_rows, first_row=first_row)
    pieces: list[Any] = [head]
    pieces += [np.ascontiguousarray(parts[name], dtype="<u8").data.cast("B") for name in cols]
    return b"".join(pieces)


def unpack_block(data: bytes) -> Block:
    """Parse and check an upload block (zero-copy views into ``data``); InputError
    naming what is wrong."""
    if len(data) < 16 or data[:8] != BLOCK_MAGIC:
        raise InputError("malformed table block (no TSSRBLCK magic)")
    version, flags, length = struct.unpack_from("<HHI", data, 8)
    if version != BLOCK_VERSION or flags != 0:
        raise InputError(f"unsupported table block version {version}")
    if length > _MAX_BLOCK_HEADER or 16 + length > len(data):
        raise InputError("malformed table block (header length)")
    try:
        head = json.loads(bytes(data[16 : 16 + length]))
    except (ValueError, RecursionError):
        raise InputError("malformed table block (header not JSON)") from None
    if not isinstance(head, dict) or set(head) != {
        "chunk_rows",
        "first_row",
        "rows",
        "parts",
        "keys",
    }:
        raise InputError("malformed table block (header fields)")
    chunk_rows, first, rows = head["chunk_rows"], head["first_row"], head["rows"]
    if not all(type(v) is int and 0 <= v <= MAX_ROWS for v in (chunk_rows, first, rows)):
        raise InputError("malformed table block (row numbers)")
    if first + rows > chunk_rows:
        raise InputError("malformed table block (rows beyond the chunk)")
    listed = head["parts"]
    if not isinstance(listed, list) or len(listed) > MAX_PARTS:
        raise InputError("malformed table block (parts)")
    cols: dict[str, int] = {}
    for item in listed:
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
            raise InputError("malformed table block (parts)")
        name, c = check_part_name(item[0]), item[1]
        if type(c) is not int or not 0 <= c <= MAX_COLS or name in cols:
            raise InputError(f"malformed table block (part {name})")
        cols[name] = c
    keys = head["keys"]
    if not isinstance(keys, dict) or not all(
        isinstance(k, str)
        and _KEY.match(k)
        and isinstance(v, list)
        and len(v) == rows
        and all(isinstance(x, str) for x in v)
        for k, v in keys.items()
    ):
        raise InputError("malformed table block (keys)")
    offset = 16 + length + (-(16 + length) % 8)
    need = offset + 8 * rows * sum(max(c, 1) for c in cols.values())
    if len(data) != need:
        raise InputError("malformed table block (its length does not fit its header)")
    parts: dict[str, U64] = {}
    for name, c in cols.items():
        count = max(c, 1) * rows
        arr = np.frombuffer(data, dtype="<u8", count=count, offset=offset)
        offset += 8 * count
        if count and int(arr.max()) >= _PRIME:
            raise InputError(f"malformed table block (part {name} holds values outside the field)")
        parts[name] = arr.reshape(max(c, 1), rows).astype(np.uint64, copy=False)
    return Block(chunk_rows, first, rows, cols, parts, keys)


# ----- writing a chunk ----------------------------------------------------------------


_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters
_M_MMAP_THRESHOLD = -3
_tuned = False


def keep_freed_memory(limit: int = 256 << 20) -> None:
    """Ask the C allocator (glibc) to keep up to ``limit`` bytes of freed memory for the
    next upload block instead of returning it to the system at once.  Blocks of
    megabytes are allocated and freed by the thousand in an import (request bodies,
    shares): returned every time, each new one costs page faults (about a fifth of a
    custodian's CPU when measured).  A no-op elsewhere, once per process."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(None)
        libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)  # blocks come from the heap ...
        libc.mallopt(_M_TRIM_THRESHOLD, limit)  # ... which keeps what is freed


class ChunkWriter:
    """Writes a version-2 chunk into ``folder`` block by block (rows in order).

    The part files are created at their final size when the first block arrives; each
    block's sub-columns are written into place and every sub-column's CRC-32 carried
    on; the progress is kept in ``upload.json`` so that the blocks of one upload may
    arrive in separate requests.  :meth:`finish` writes ``keys.json`` and the index.
    """

    STATE = "upload.json"

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _state(self) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] = json.loads((self.folder / self.STATE).read_text())
        except FileNotFoundError:
            return None
        return doc

    def _save(self, state: dict[str, Any]) -> None:
        tmp = self.folder / f".{self.STATE}.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / self.STATE)

    def write(self, block: Block) -> bool:
        """Write ``block``; True once the chunk's last row is written.  InputError when
        it does not continue the rows written so far or names other parts or keys."""
        state = self._state()
        if state is None:
            if block.first_row != 0:
                raise InputError("the first block of a chunk must start at row 0")
            self.folder.mkdir(parents=True, exist_ok=True)
            state = {
                "rows": block.chunk_rows,
                "done": 0,
                "cols": dict(block.cols),
                "crc": {name: [0] * max(c, 1) for name, c in block.cols.items()},
                "keys": sorted(block.keys),
            }
            for name, c in block.cols.items():
                with open(self.folder / f"{name}.npy", "wb") as fh:
                    fh.write(npy_header(block.chunk_rows, c))
                    size = HEADER_BYTES + 8 * block.chunk_rows * max(c, 1)
                    try:  # the disk space up front: a full disk fails here, not midway
                        os.posix_fallocate(fh.fileno(), 0, size)
                    except (AttributeError, OSError) as exc:
                        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
                            raise
                        fh.truncate(size)
        if (
            block.chunk_rows != state["rows"]
            or block.first_row != state["done"]
            or dict(block.cols) != state["cols"]
            or sorted(block.keys) != state["keys"]
        ):
            raise InputError("this block does not continue the chunk's upload")
        total = state["rows"]
        for name, data in block.parts.items():
            crcs = state["crc"][name]
            # around the page cache where it can: gigabytes per import would otherwise
            # wait on the kernel's write-back (see tessera.core.direct_io)
            with DirectWriter(self.folder / f"{name}.npy") as out:
                for j in range(data.shape[0]):
                    view = np.ascontiguousarray(data[j]).data.cast("B")
                    out.write(view, HEADER_BYTES + 8 * (j * total + block.first_row))
                    crcs[j] = zlib.crc32(view, crcs[j])
        if block.keys:
            (self.folder / f"keys-{block.first_row:012d}.json").write_text(
                json.dumps(dict(block.keys))
            )
        state["done"] += block.rows
        self._save(state)
        return bool(state["done"] == total)

    def finish(self) -> ChunkIndex:
        """Write ``keys.json`` (from the blocks' keys, in row order) and ``chunk.json``."""
        state = self._state()
        if state is None or state["done"] != state["rows"]:
            raise InputError("the chunk's upload is not complete")
        pieces = sorted(self.folder.glob("keys-*.json"))
        crc = 0
        with open(self.folder / KEYS_FILE, "wb") as out:

            def put(chunk: bytes) -> None:
                nonlocal crc
                out.write(chunk)
                crc = zlib.crc32(chunk, crc)

            put(b"{")
            for n, column in enumerate(state["keys"]):
                put((", " if n else "").encode() + json.dumps(column).encode() + b": [")
                first = True
                for piece in pieces:
                    values = json.loads(piece.read_text())[column]
                    if values:
                        text = json.dumps(values)[1:-1].encode()
                        put(text if first else b", " + text)
                        first = False
                put(b"]")
            put(b"}")
        for piece in pieces:
            piece.unlink()
        parts = {
            name: PartInfo(int(c), tuple(int(x) for x in state["crc"][name]))
            for name, c in state["cols"].items()
        }
        index = ChunkIndex(int(state["rows"]), parts, crc)
        (self.folder / CHUNK_INDEX).write_text(json.dumps(index.to_dict(), indent=1))
        (self.folder / self.STATE).unlink()
        return index
