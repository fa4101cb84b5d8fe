from collections.abc import Sequence

from numpy import uint64
from numpy.typing import NDArray

CHUNK_WORDS: int

def run(
    steps: bytes,
    outputs: bytes,
    ninputs: int,
    ntemps: int,
    planes_in: Sequence[NDArray[uint64]],
    planes_out: Sequence[NDArray[uint64]],
    /,
) -> None: ...
