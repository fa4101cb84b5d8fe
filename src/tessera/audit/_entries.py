"""Bulk check of ``records.jsonl``: sequence numbers and leaf hashes, in parallel.

The record file is cut at line boundaries into one range per worker process; each worker
reads its range in 32 MiB chunks, checks that sequence numbers run on from its first
line, and returns the leaf hashes.  The parent stitches the ranges together, so the
result is exactly what a single pass would give.  Small logs are checked in-process.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from tessera.core import merkle

__all__ = ["check_entries"]

_CHUNK = 32 << 20
_PARALLEL_FROM = 64 << 20  # bytes of records before worker processes pay off
_SEQ = 12


def _parse_seq(line: bytes) -> int | None:
    head = line[:_SEQ]
    if len(line) <= _SEQ or line[_SEQ : _SEQ + 1] != b" " or not head.isdigit():
        return None
    return int(head)


def _scan_range(
    path: str, lo: int, hi: int, last: bool
) -> tuple[int, int | None, int | None, bytes, bool]:
    """(lines, first seq, first out-of-order line, leaf hashes, incomplete tail)."""
    sha = hashlib.sha256
    count = 0
    first: int | None = None
    wrong: int | None = None
    hashes: list[bytes] = []
    carry = b""
    incomplete = False
    with open(path, "rb") as fh:
        fh.seek(lo)
        remaining = hi - lo
        while True:
            block = fh.read(min(_CHUNK, remaining)) if remaining > 0 else b""
            remaining -= len(block)
            data = carry + block
            if not block:
                if not data:
                    break
                incomplete = last
                lines = [data]
            else:
                lines = data.split(b"\n")
                carry = lines.pop()
            if first is None and lines:
                first = _parse_seq(lines[0])
                if first is None:
                    wrong = 0
                    first = -1
            if wrong is None and first is not None:
                base = first + count
                wrong = next(
                    (
                        count + k
                        for k, line in enumerate(lines)
                        if not line.startswith(b"%012d " % (base + k))
                    ),
                    None,
                )
            hashes.append(b"".join([sha(b"\x00" + line).digest() for line in lines]))
            count += len(lines)
            if not block:
                break
    return count, first, wrong, b"".join(hashes), incomplete


def _cuts(path: Path, size: int, parts: int) -> list[int]:
    cuts = [0]
    with open(path, "rb") as fh:
        for j in range(1, parts):
            fh.seek(max(cuts[-1], size * j // parts))
            fh.readline()
            pos = fh.tell()
            if cuts[-1] < pos < size:
                cuts.append(pos)
    cuts.append(size)
    return cuts


def check_entries(
    path: Path, stored: bytes, findings: list[tuple[int, str]], workers: int | None = None
) -> tuple[int, bytes]:
    """Check every line of ``path``; add (index, problem) findings.

    Returns the number of entries and the leaf hashes of entries beyond ``stored``.
    """
    size = path.stat().st_size
    if workers is None:
        workers = min(os.cpu_count() or 1, 8) if size >= _PARALLEL_FROM else 1
    cuts = _cuts(path, size, max(1, workers))
    ranges = [(str(path), cuts[j], cuts[j + 1], j == len(cuts) - 2) for j in range(len(cuts) - 1)]
    if len(ranges) == 1:
        results = [_scan_range(*ranges[0])]
    else:
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(ranges), mp_context=context) as pool:
            results = list(pool.map(_scan_range, *zip(*ranges, strict=True)))
    step = merkle.HASH_SIZE
    n = 0
    misplaced: int | None = None
    modified: int | None = None
    extra: list[bytes] = []
    for count, first, wrong, hashes, incomplete in results:
        if misplaced is None:
            if count and first != n:
                misplaced = n
            elif wrong is not None:
                misplaced = n + wrong
        lo, hi = n * step, min((n + count) * step, len(stored))
        if modified is None and lo < hi and hashes[: hi - lo] != stored[lo:hi]:
            k = next(
                k
                for k in range(0, hi - lo, step)
                if hashes[k : k + step] != stored[lo + k : lo + k + step]
            )
            modified = n + k // step
        if (n + count) * step > len(stored):
            extra.append(hashes[max(0, len(stored) - lo) :])
        if incomplete:
            findings.append((n + count - 1, "the last entry is incomplete"))
        n += count
    if misplaced is not None:
        findings.append((misplaced, "entry is out of place (deleted, inserted or reordered)"))
    if modified is not None:
        findings.append((modified, "entry does not match its leaf hash (modified)"))
    return n, b"".join(extra)
