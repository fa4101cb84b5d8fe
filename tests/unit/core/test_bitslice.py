"""Bit-sliced linear maps: every compiled program equals scalar GF(2^8) arithmetic."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.core.bitslice import compile_linear_map, from_elements, mul_matrix, to_elements
from tessera.core.fields import GF256


def _apply(matrix: list[list[int]], inputs: list[np.ndarray]) -> list[np.ndarray]:
    program = compile_linear_map(matrix)
    planes_in = [row for x in inputs for row in from_elements(x).view(np.uint64).reshape(8, -1)]
    words = planes_in[0].size
    planes_out = [np.empty(words, dtype=np.uint64) for _ in range(8 * len(matrix))]
    program.run(planes_in, planes_out)
    return [
        to_elements(np.concatenate(planes_out[8 * r : 8 * r + 8]).view(np.uint8))
        for r in range(len(matrix))
    ]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 5), st.data())
def test_program_matches_scalar_arithmetic(rows: int, cols: int, data: st.DataObject) -> None:
    matrix = [[data.draw(st.integers(0, 255)) for _ in range(cols)] for _ in range(rows)]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    inputs = [rng.integers(0, 256, 128, dtype=np.uint8) for _ in range(cols)]
    outputs = _apply(matrix, inputs)
    for r in range(rows):
        expected = np.zeros(128, dtype=np.uint8)
        for c in range(cols):
            expected ^= np.array([GF256.mul(matrix[r][c], int(v)) for v in inputs[c]], np.uint8)
        assert (outputs[r] == expected).all()


def test_mul_matrix_of_one_is_identity() -> None:
    assert mul_matrix(1) == tuple(1 << i for i in range(8))


def test_xtime_matrix() -> None:
    # Multiplying by 2 shifts bits up and folds bit 7 into bits 0, 1, 3, 4 (0x11B).
    m = mul_matrix(2)
    assert m[0] == 0b10000000 and m[1] == 0b10000001 and m[2] == 0b00000010


def test_common_subexpressions_save_xors() -> None:
    program = compile_linear_map([[3, 7, 11], [5, 9, 13], [2, 4, 6]])
    naive = sum(
        max(bin(mul_matrix(v)[i]).count("1") for i in range(8))
        for v in (3, 7, 11, 5, 9, 13, 2, 4, 6)
    )
    assert program.xor_count < 8 * naive
    assert len(program.sources) == 24
