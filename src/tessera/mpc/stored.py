"""A party's inputs as the custodian stores them: memory-mapped, checked when read.

The node lists, in the job folder's ``inputs.json``, the chunk folders of its store that
an input reads (``{"parts": [...], "chunks": [{"dir", "rows", "hospital"}]}``).  A party
reads them in place (:mod:`tessera.core.chunkfile`): every part is a memory map per
chunk, nothing is copied until a program asks for a vector or a sub-column, and every
sub-column read is checked against the chunk's CRC-32 once (version-2 chunks).  The
SQL program multiplies stored thermometers by secret vectors chunk by chunk with the
GF(2^61 - 1) kernels (:func:`tessera.core.m61.matmul_nt`), without forming the matrix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core import chunkfile

__all__ = ["LazyKeys", "LazyParts", "StoredPart", "StoredTable", "read_inputs"]

U64 = npt.NDArray[np.uint64]


class StoredPart:
    """One part of an input across its chunks (this party's shares)."""

    def __init__(self, name: str, chunks: list[tuple[Path, chunkfile.ChunkIndex | None]]) -> None:
        self.name = name
        self._maps = [chunkfile.open_part(folder, name, index) for folder, index in chunks]
        self._indexes = [index for _, index in chunks]
        self._checked: set[tuple[int, int | None]] = set()
        shapes = {m.shape[1:] for m in self._maps}
        if len(shapes) > 1:
            raise SystemExit(f"part {name}: chunks of different widths")
        tail = shapes.pop() if shapes else ()
        self.cols = int(tail[0]) if tail else 0
        self.rows = sum(int(m.shape[0]) for m in self._maps)

    def _check(self, n: int, col: int | None) -> None:
        index = self._indexes[n]
        if index is None or (n, col) in self._checked:
            return
        chunkfile.verify_column(self._maps[n], index, self.name, col)
        self._checked.add((n, col))

    def vector(self) -> U64:
        """The whole part (a vector) as one uint64 array."""
        if self.cols:
            raise ValueError(f"part {self.name} has sub-columns")
        for n in range(len(self._maps)):
            self._check(n, None)
        out = _concat([np.asarray(m) for m in self._maps])
        self.release()
        return out

    def column(self, k: int) -> U64:
        """Sub-column ``k`` (0-based) as one uint64 array."""
        if not 0 <= k < self.cols:
            raise IndexError(f"part {self.name} has no sub-column {k}")
        for n in range(len(self._maps)):
            self._check(n, k)
        out = _concat([np.asarray(m[:, k]) for m in self._maps])
        self.release()
        return out

    def release(self) -> None:
        """Drop the pages read so far from this process (they stay in the page cache)."""
        for m in self._maps:
            chunkfile.release(m)

    def blocks_t(self) -> Iterator[U64]:
        """Per chunk, the sub-columns as rows: ``(cols, chunk rows)`` C-contiguous (a
        view of a version-2 chunk's Fortran-order file; a copy for version 1)."""
        for n, m in enumerate(self._maps):
            for col in range(self.cols) if self.cols else [None]:
                self._check(n, col)
            t = m.reshape(m.shape[0], -1).T
            yield t if t.flags.c_contiguous else np.ascontiguousarray(t)
            chunkfile.release(m)  # this chunk is done with: its pages leave this process

    def full(self) -> U64:
        """The whole part, ``(rows,)`` or ``(rows, cols)``, in memory."""
        for n in range(len(self._maps)):
            for col in range(self.cols) if self.cols else [None]:
                self._check(n, col)
        if not self._maps:
            return np.zeros((0, self.cols) if self.cols else 0, dtype=np.uint64)
        out = np.concatenate([np.asarray(m) for m in self._maps]).astype(np.uint64, copy=False)
        self.release()
        return out


def _concat(arrays: list[Any]) -> U64:
    if not arrays:
        return np.zeros(0, dtype=np.uint64)
    out: U64 = np.concatenate(arrays).astype(np.uint64, copy=False)
    return out


class StoredTable:
    """One input of a job: its chunks (rows and public origin of each), parts and keys."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        chunks = spec["chunks"]
        self.names = [str(p) for p in spec["parts"]]
        self.chunk_rows = [int(c["rows"]) for c in chunks]
        self.chunk_origins = [str(c["hospital"]) for c in chunks]
        self.rows = sum(self.chunk_rows)
        self._folders = [Path(c["dir"]) for c in chunks]
        self._indexes = [chunkfile.read_index(f) for f in self._folders]
        for folder, index, rows in zip(self._folders, self._indexes, self.chunk_rows, strict=True):
            if index is not None and index.rows != rows:
                raise SystemExit(f"chunk {folder.name[:12]}: stored rows differ from the manifest")
        self._parts: dict[str, StoredPart] = {}
        self._keys: dict[str, list[str]] | None = None

    def part(self, name: str) -> StoredPart:
        """Part ``name`` (one the job lists)."""
        if name not in self.names:
            raise KeyError(name)
        if name not in self._parts:
            chunks = list(zip(self._folders, self._indexes, strict=True))
            self._parts[name] = StoredPart(name, chunks)
        return self._parts[name]

    def keys(self) -> dict[str, list[str]]:
        """The clear pseudonym keys, column -> one per row (read on first use)."""
        if self._keys is None:
            keys: dict[str, list[str]] = {}
            for folder, index in zip(self._folders, self._indexes, strict=True):
                data = (folder / chunkfile.KEYS_FILE).read_bytes()
                if index is not None:
                    chunkfile.verify_keys(data, index)
                for k, v in json.loads(data).items():
                    keys.setdefault(k, []).extend(v)
            self._keys = keys
        return self._keys

    def origins(self) -> list[str]:
        """The public origin label of every row."""
        out: list[str] = []
        for label, rows in zip(self.chunk_origins, self.chunk_rows, strict=True):
            out.extend([label] * rows)
        return out

    def origin_index(self, labels: list[str]) -> npt.NDArray[np.int64]:
        """Per row, the index of its origin in ``labels`` (-1 if absent)."""
        codes = [labels.index(o) if o in labels else -1 for o in self.chunk_origins]
        return np.repeat(np.array(codes, dtype=np.int64), self.chunk_rows)


class LazyParts(Mapping[str, Any]):
    """``name -> (rows,) or (rows, cols)`` uint64 in memory, read on first access."""

    def __init__(self, table: StoredTable) -> None:
        self._table = table
        self._cache: dict[str, U64] = {}

    def __getitem__(self, name: str) -> U64:
        if name not in self._cache:
            self._cache[name] = self._table.part(name).full()
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.names)

    def __len__(self) -> int:
        return len(self._table.names)


class LazyKeys(Mapping[str, list[str]]):
    """The clear keys of a table, read on first access."""

    def __init__(self, table: StoredTable) -> None:
        self._table = table

    def __getitem__(self, name: str) -> list[str]:
        return self._table.keys()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._table.keys())

    def __len__(self) -> int:
        return len(self._table.keys())


def read_inputs(folder: Path) -> dict[str, Any]:
    """The job folder's ``inputs.json`` (alias -> spec)."""
    doc: dict[str, Any] = json.loads((folder / "inputs.json").read_text())
    return doc
