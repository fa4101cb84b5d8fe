"""Streaming a CSV into upload blocks: bounded memory whatever the file's size.

A table import reads its CSV twice, block by block of rows (:class:`CsvSource`): the
first pass checks every row (and infers the schema when none is given), the second
encodes, splits and uploads one block at a time (:func:`block_bodies`), so the client
holds a few blocks, never the file nor its shares.  Both passes report the bytes they
read (a progress bar on a terminal).
"""

from __future__ import annotations

import contextlib
import csv
import gc
import io
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from tessera.core import m61
from tessera.core.chunkfile import block_header
from tessera.core.rng import RandomSource
from tessera.errors import InputError
from tessera.tables.encode import Encoded, csv_reader

__all__ = ["BLOCK_BYTES", "Body", "CsvSource", "block_bodies", "block_rows", "no_gc"]

BLOCK_BYTES = 32 << 20  # shares per custodian in one upload block (about)
MIN_BLOCK_ROWS = 1024
Rows = list[tuple[int, list[str]]]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector paused: bulk parsing makes millions of small lists
    and tuples (no cycles), and every collection would walk all of them."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


class CsvSource:
    """A UTF-8 CSV file read in blocks of rows, as many times as needed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.size = path.stat().st_size
        except FileNotFoundError:
            raise InputError(f"no such file: {path}") from None
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror}") from None
        with self._open() as text:
            reader = csv_reader(text)
            try:
                self.header = [h.strip() for h in next(reader)]
            except StopIteration:
                raise InputError("the CSV is empty") from None
            except csv.Error as exc:
                raise InputError(f"CSV line 1: {exc}") from None
            except UnicodeDecodeError:
                raise InputError("the CSV is not UTF-8") from None

    def _open(self) -> io.TextIOWrapper:
        try:
            return open(self.path, encoding="utf-8-sig", newline="", buffering=1 << 20)
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror}") from None

    def blocks(self, rows: int, report: Callable[[int], None] | None = None) -> Iterator[Rows]:
        """The data rows (line number, cells), ``rows`` at a time, empty lines skipped;
        ``report`` hears how many more bytes were read after each block."""
        with self._open() as text:
            reader = csv_reader(text)
            done = 0
            try:
                next(reader)  # the header
                while True:
                    with no_gc():  # only while reading: the caller's work may make cycles
                        block: Rows = []
                        for row in reader:
                            if row:
                                block.append((reader.line_num, row))
                                if len(block) >= rows:
                                    break
                    if report is not None:
                        at = cast(io.BufferedReader, text.buffer).tell() if block else self.size
                        report(at - done)
                        done = at
                    if not block:
                        return
                    yield block
            except csv.Error as exc:
                raise InputError(f"CSV line {reader.line_num}: {exc}") from None
            except UnicodeDecodeError:
                raise InputError("the CSV is not UTF-8") from None


def block_rows(subcolumns: int) -> int:
    """Rows per upload block for a table with ``subcolumns`` shared values per row."""
    return max(MIN_BLOCK_ROWS, BLOCK_BYTES // (8 * max(subcolumns, 1)))


class Body:
    """An upload block as a sequence of buffers that the HTTP client sends one by one
    (its length known up front: ``tell``/``seek``), so the block is never joined into
    one more copy.  Deliberately without ``read``: httpx would then copy it in 64 KiB
    pieces, each through its whole stack."""

    PIECE = 4 << 20  # largest buffer handed over at once

    def __init__(self, pieces: Sequence[Any]) -> None:
        self._pieces = [memoryview(p).cast("B") for p in pieces]
        self.size = sum(len(p) for p in self._pieces)
        self._pos = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[memoryview]:
        for piece in self._pieces:
            for start in range(0, len(piece), self.PIECE):
                yield piece[start : start + self.PIECE]

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = min(max(base + offset, 0), self.size)
        return self._pos

    def getvalue(self) -> bytes:
        """The whole block (one copy)."""
        return b"".join(self._pieces)

    def release(self) -> None:
        """Let go of the buffers (once sent: the HTTP client may keep this object
        alive for a while)."""
        self._pieces = []


def block_bodies(
    encoded: Encoded,
    *,
    n: int,
    t: int,
    chunk_rows: int,
    first_row: int,
    rng: RandomSource | None = None,
) -> list[Body]:
    """The upload block of ``encoded`` (rows ``first_row ..`` of a chunk of
    ``chunk_rows``) for each of ``n`` custodians: its own Shamir shares, sub-column by
    sub-column (the format of :func:`tessera.core.chunkfile.pack_block`)."""
    cols: dict[str, int] = {}
    pieces: list[list[Any]] = [[] for _ in range(n)]
    rows = encoded.rows
    for name, values in encoded.parts.items():
        cols[name] = 0 if values.ndim == 1 else int(values.shape[1])
        secret = values.reshape(rows, max(cols[name], 1)).T  # a view for Fortran-order parts
        shares = m61.share(np.ascontiguousarray(secret), n=n, t=t, rng=rng)  # (n, cols, rows)
        for i in range(n):
            pieces[i].append(shares[i])
    head = block_header(cols, encoded.keys, rows=rows, chunk_rows=chunk_rows, first_row=first_row)
    return [Body([head, *pieces[i]]) for i in range(n)]


def split_block(rows: Sequence[tuple[int, Sequence[str]]], size: int) -> Iterator[Rows]:
    """``rows`` in runs of at most ``size``."""
    for start in range(0, len(rows), size):
        yield [(line, list(cells)) for line, cells in rows[start : start + size]]
