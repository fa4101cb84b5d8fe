"""DirectWriter: what lands in the file is exactly what was written, whichever path
(direct pages, cached edges, or the cache alone where O_DIRECT is refused) it took."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core import direct_io
from tessera.core.direct_io import PAGE, DirectWriter

SIZE = 64 * PAGE


def _file(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(b"\0" * SIZE)
    return path


@settings(max_examples=40, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.integers(0, SIZE - 1), st.integers(1, 40 * PAGE)), min_size=1, max_size=8
    )
)
def test_any_offsets_and_lengths_land_exactly(tmp_path_factory: pytest.TempPathFactory, writes):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("dio")
    path = _file(folder, "part.npy")
    want = bytearray(SIZE)
    rng = np.random.default_rng(len(writes))
    with DirectWriter(path) as out:
        for offset, length in writes:
            length = min(length, SIZE - offset)
            data = rng.integers(0, 256, size=length, dtype=np.uint8).tobytes()
            out.write(memoryview(data), offset)
            want[offset : offset + length] = data
    assert path.read_bytes() == bytes(want)


def test_large_aligned_runs_go_around_the_cache(tmp_path: Path) -> None:
    path = _file(tmp_path, "part.npy")
    with DirectWriter(path) as out:
        if out._direct is None:
            pytest.skip("this file system refuses O_DIRECT")
        data = os.urandom(20 * PAGE + 100)
        out.write(memoryview(data), 3 * PAGE - 50)  # cached head, direct pages, cached tail
        assert out._direct is not None  # still direct: the write was accepted
    assert path.read_bytes()[3 * PAGE - 50 : 23 * PAGE + 50] == data


def test_a_file_system_that_refuses_direct_writes_gets_cached_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, "part.npy")
    real = os.pwrite
    with DirectWriter(path) as out:
        direct = out._direct
        if direct is None:
            pytest.skip("this file system refuses O_DIRECT")

        def refusing(fd: int, data: memoryview, offset: int) -> int:
            if fd == direct:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(fd, data, offset)

        monkeypatch.setattr(direct_io.os, "pwrite", refusing)
        data = os.urandom(30 * PAGE)
        out.write(memoryview(data), PAGE)
        assert out._direct is None  # given up for good, nothing lost
        out.write(memoryview(data[:PAGE]), 40 * PAGE)
    monkeypatch.undo()
    content = path.read_bytes()
    assert content[PAGE : 31 * PAGE] == data and content[40 * PAGE : 41 * PAGE] == data[:PAGE]


def test_without_o_direct_everything_goes_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(direct_io.os, "O_DIRECT", raising=False)
    path = _file(tmp_path, "part.npy")
    data = os.urandom(33 * PAGE)
    with DirectWriter(path) as out:
        assert out._direct is None
        out.write(memoryview(data), 7)
    assert path.read_bytes()[7 : 7 + len(data)] == data


def test_other_write_errors_are_not_swallowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _file(tmp_path, "part.npy")

    def full(fd: int, data: memoryview, offset: int) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with DirectWriter(path) as out:
        monkeypatch.setattr(direct_io.os, "pwrite", full)
        with pytest.raises(OSError, match="No space"):
            out.write(memoryview(os.urandom(30 * PAGE)), 0)
