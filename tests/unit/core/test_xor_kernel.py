"""The compiled plane-XOR kernel agrees with the numpy reference on every program."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core import bitslice
from tessera.core.bitslice import XorProgram, compile_linear_map
from tessera.core.shamir import evaluation_program

needs_kernel = pytest.mark.skipif(bitslice.KERNEL is None, reason="kernel not built")


def test_kernel_is_built() -> None:
    # `make install` compiles it; the numpy fallback exists only for machines
    # without a compiler.  Set TESSERA_NO_KERNEL_OK=1 to run the suite there.
    if os.environ.get("TESSERA_NO_KERNEL_OK") != "1":
        assert bitslice.KERNEL == "c"


def _planes(count: int, words: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, 2**64, size=words, dtype=np.uint64) for _ in range(count)]


def _assert_kernel_matches(program: XorProgram, words: int) -> None:
    rng = np.random.default_rng(words)
    ins = _planes(program.inputs, words, rng)
    fast = [np.full(words, 7, dtype=np.uint64) for _ in program.outputs]
    slow = [np.empty(words, dtype=np.uint64) for _ in program.outputs]
    program.run(ins, fast)
    program.run_numpy(ins, slow)
    for a, b in zip(fast, slow, strict=True):
        assert np.array_equal(a, b)


@needs_kernel
@pytest.mark.parametrize(
    ("known", "targets"),
    [((0, 1), (2, 3)), ((0, 1, 2), (3, 4, 5)), ((3, 4, 5), (0,)), ((1, 2, 3), (4, 5, 6, 7))],
)
@pytest.mark.parametrize("words", [0, 1, 3, 8, 255, 256, 257, 1000, 4096])
def test_kernel_matches_numpy(known: tuple[int, ...], targets: tuple[int, ...], words: int) -> None:
    _assert_kernel_matches(evaluation_program(known, targets), words)


@needs_kernel
@settings(max_examples=60, deadline=None)
@given(
    matrix=st.lists(st.lists(st.integers(0, 255), min_size=3, max_size=3), min_size=1, max_size=4),
    words=st.integers(0, 600),
)
def test_kernel_matches_numpy_on_any_map(matrix: list[list[int]], words: int) -> None:
    """Zero rows, identical rows, identity rows (outputs that are inputs) included."""
    _assert_kernel_matches(compile_linear_map([*matrix, matrix[0], [0, 0, 0], [1, 0, 0]]), words)


@needs_kernel
def test_kernel_rejects_bad_calls() -> None:
    from tessera.core import _xor  # type: ignore[attr-defined]

    program = evaluation_program((0, 1), (2,))
    steps, outputs = program.packed
    ins = [np.zeros(8, dtype=np.uint64) for _ in range(program.inputs)]
    outs = [np.zeros(8, dtype=np.uint64) for _ in program.outputs]
    with pytest.raises(ValueError, match="plane counts"):
        _xor.run(steps, outputs, program.inputs, program.temps, ins[:-1], outs)
    with pytest.raises(ValueError, match="one length"):
        _xor.run(steps, outputs, program.inputs, program.temps, ins, [*outs[:-1], np.zeros(9)])
    with pytest.raises(ValueError, match="out of range"):
        _xor.run(b"\x00" * 12, outputs, program.inputs, program.temps, ins, outs)
    with pytest.raises(ValueError, match="malformed"):
        _xor.run(steps[:-1], outputs, program.inputs, program.temps, ins, outs)
    read_only = np.zeros(8, dtype=np.uint64)
    read_only.flags.writeable = False
    with pytest.raises((BufferError, ValueError, TypeError)):
        _xor.run(steps, outputs, program.inputs, program.temps, ins, [*outs[:-1], read_only])
