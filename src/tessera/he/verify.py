"""The client's side of an answer: check it against the sentinels, then reduce it.

For every output the client knows what each sentinel position must hold (it chose the
sentinel rows, the job and, for scores, read the model the server uses) and which range
every other slot must lie in (the columns' bounds make every real value a number in
``[0, 1]`` before the job).  An answer is refused when any value is not finite, when any
sentinel is off by more than the tolerance, or when any slot lies outside its range by
more than the tolerance.

**What detection means.**  The server sees ciphertexts only (CKKS is IND-CPA secure) and
the bundle gives it no rotation keys, so it can neither find the sentinel positions nor
move slots around.  Dropping or skipping a chunk, a column or a term, answering for
other data or with other weights moves every sentinel position by at least 0.05 of a
scaled unit (the smallest sentinel value), far above the tolerance: detected with
certainty.  Altering ``k`` slot positions it chose blindly escapes with probability at
most ``(1 - z / S) ** k`` for ``z`` sentinel positions out of ``S`` slots
(:func:`escape_probability`); an alteration smaller than the tolerance moves no value by
more than the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.errors import IntegrityError
from tessera.he.evaluate import Output, affine_model, score_range
from tessera.he.jobs import SIGMOID_POLY, Job, Model
from tessera.he.packing import Layout, Stream

__all__ = [
    "TOLERANCE",
    "Reduced",
    "Verdict",
    "check_answer",
    "cubic",
    "escape_probability",
    "expected_sentinels",
    "refuse",
]

#: Allowed deviation, relative to an output's largest possible magnitude.  CKKS noise
#: here is below 1e-8 of it (tests/unit/he measure it); 1e-6 leaves a wide margin.
TOLERANCE = 1e-6
#: The cubic adds two levels of rescaling noise at the larger ring degree.
POLY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Verdict:
    """How an answer fared: sentinel and range checks made and failed."""

    checked: int
    failed: int
    out_of_range: int
    outputs: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return self.failed == 0 and self.out_of_range == 0

    def reason(self) -> str:
        """The one-line refusal (empty when ok)."""
        if self.ok:
            return ""
        where = ", ".join(self.outputs[:3]) + (" …" if len(self.outputs) > 3 else "")
        if self.failed * 10 >= self.checked * 9:
            return (
                f"refused: {self.failed} of {self.checked} sentinel checks failed ({where}): "
                "the answer was not computed on this data with this job (other data, "
                "another key, or altered)"
            )
        return (
            f"refused: {self.failed} of {self.checked} sentinel checks failed and "
            f"{self.out_of_range} values are out of range ({where}): the server dropped, "
            "altered or skipped work"
        )

    def to_dict(self) -> dict[str, object]:
        """The JSON form."""
        return {
            "ok": self.ok,
            "sentinel_checks": self.checked,
            "failed": self.failed,
            "out_of_range": self.out_of_range,
        }


@dataclass(frozen=True)
class Reduced:
    """An output after the checks: its slots added up over the real positions, or (per
    chunk outputs) one value per row."""

    output: Output
    total: float | None
    rows: npt.NDArray[np.float64] | None


def escape_probability(altered: int, sentinels: int, slots: int) -> float:
    """The chance that ``altered`` blindly chosen slot positions miss every sentinel."""
    if altered <= 0:
        return 1.0
    if altered > slots - sentinels:
        return 0.0
    log = sum(math.log((slots - sentinels - i) / (slots - i)) for i in range(altered))
    return math.exp(log)


def cubic(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The sigmoid polynomial at ``z``."""
    c0, c1, c2, c3 = SIGMOID_POLY
    return c0 + c1 * z + c2 * z * z + c3 * z * z * z


def _score_bounds(weights: dict[int, float], intercept: float, link: str) -> tuple[float, float]:
    low, high = score_range(weights, intercept)
    if link != "polynomial":
        return low, high
    grid = np.linspace(low, high, 4097)
    values = cubic(grid)
    return float(values.min()), float(values.max())


def expected_sentinels(
    out: Output,
    sentinels: npt.NDArray[np.float64],
    *,
    chunk: int = 0,
    model: tuple[dict[int, float], float, str] | None = None,
    voxel_mm3: float | None = None,
) -> npt.NDArray[np.float64]:
    """What ``out`` must hold at the sentinel positions (``sentinels[stream, chunk, k]``)."""
    if out.kind == "sum":
        return np.asarray(sentinels[out.streams[0]].sum(axis=0), dtype=np.float64)
    if out.kind in ("prod", "intensity"):
        a, b = out.streams
        return np.asarray((sentinels[a] * sentinels[b]).sum(axis=0), dtype=np.float64)
    if out.kind == "volume":
        total = sentinels[out.streams[0]].sum(axis=0)
        return np.asarray(float(voxel_mm3 or 0.0) * total, dtype=np.float64)
    assert model is not None
    weights, intercept, link = model
    z = intercept + sum(w * sentinels[j, chunk] for j, w in weights.items())
    return cubic(np.asarray(z)) if link == "polynomial" else np.asarray(z)


def check_answer(
    outputs: Sequence[Output],
    decrypted: Sequence[Sequence[npt.NDArray[np.float64]]],
    *,
    layout: Layout,
    sentinels: npt.NDArray[np.float64],
    streams: Sequence[Stream],
    job: Job,
    model: Model | None = None,
    voxel_mm3: float | None = None,
) -> tuple[Verdict, list[Reduced]]:
    """Check every output; the verdict and the reduced outputs (use them only if ok)."""
    spots, real = layout.sentinel_index(), layout.real_index()
    affine = None
    if model is not None:
        weights, intercept = affine_model(model, streams)
        affine = (weights, intercept, job.link_for(model))
    checked = failed = out_of_range = 0
    bad: list[str] = []
    reduced: list[Reduced] = []
    for out, parts in zip(outputs, decrypted, strict=True):
        low, high = _bounds(out, layout, affine, voxel_mm3)
        tol = (POLY_TOLERANCE if affine and affine[2] == "polynomial" else TOLERANCE) * max(
            1.0, abs(low), abs(high)
        )
        fails = outside = 0
        for chunk, values in enumerate(parts):
            if values.shape != (layout.slots,) or not np.all(np.isfinite(values)):
                fails += len(spots)
                checked += len(spots)
                continue
            want = expected_sentinels(
                out, sentinels, chunk=chunk, model=affine, voxel_mm3=voxel_mm3
            )
            fails += int(np.count_nonzero(np.abs(values[spots] - want) > tol))
            checked += len(spots)
            outside += int(
                np.count_nonzero((values[real] < low - tol) | (values[real] > high + tol))
            )
            if out.per_chunk and chunk == layout.chunks - 1 and layout.padding:
                assert affine is not None
                pad = expected_sentinels(
                    out, np.zeros((len(streams), 1, 1)), model=affine, voxel_mm3=voxel_mm3
                )
                gap = np.abs(values[layout.padding_positions()] - pad[0])
                fails += int(np.count_nonzero(gap > tol))
                checked += layout.padding
        if fails or outside:
            bad.append(out.name)
        failed += fails
        out_of_range += outside
        reduced.append(_reduce(out, parts, layout, real))
    return Verdict(checked, failed, out_of_range, tuple(bad)), reduced


def _bounds(
    out: Output,
    layout: Layout,
    affine: tuple[dict[int, float], float, str] | None,
    voxel_mm3: float | None,
) -> tuple[float, float]:
    """The range every real slot of ``out`` must lie in."""
    if out.kind == "score":
        assert affine is not None
        return _score_bounds(*affine)
    top = float(layout.chunks)
    if out.kind == "volume":
        top *= float(voxel_mm3 or 0.0)
    return 0.0, top


def _reduce(
    out: Output,
    parts: Sequence[npt.NDArray[np.float64]],
    layout: Layout,
    real: npt.NDArray[np.int64],
) -> Reduced:
    if out.per_chunk:
        if any(p.shape != (layout.slots,) for p in parts):
            return Reduced(out, None, None)
        chunk, slot = layout.row_positions()
        stacked = np.stack(list(parts))
        return Reduced(out, None, stacked[chunk, slot])
    values = parts[0]
    if values.shape != (layout.slots,):
        return Reduced(out, None, None)
    return Reduced(out, float(math.fsum(values[real].tolist())), None)


def refuse(verdict: Verdict) -> None:
    """Raise the one-line IntegrityError for a failed verdict."""
    if not verdict.ok:
        raise IntegrityError(verdict.reason())
