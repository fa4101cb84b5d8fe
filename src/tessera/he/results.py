"""From checked, reduced outputs to what the client reports: statistics, scores, volumes.

All arithmetic here is on the owner's machine, after decryption.  With ``n`` rows, a
column's bounds ``[lo, hi]`` (``w = hi - lo``), ``S1`` the sum of its scaled values and
``P[a, b]`` the sum of scaled products (all over the real positions, sentinels left out):

* sum = ``n lo + w S1``, mean = sum / n;
* covariance(a, b) = ``w_a w_b (P[a, b] - S1_a S1_b / n) / (n - 1)`` (the sample
  covariance; variance is its diagonal), computed on the scaled values so that no large
  offsets cancel;
* a score is the decrypted ``b + w . x`` (or the polynomial), with the sigmoid applied
  here for ``link: sigmoid``;
* an imaging job's volume is the decrypted sum of ``voxel volume x mask``; the voxel
  count is volume / voxel volume, and the mean intensity ``lo + w S / count`` with ``S``
  the sum of ``mask x scaled intensity``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tessera.he.jobs import SIGMOID_POLY, SIGMOID_POLY_ERROR, SIGMOID_POLY_RANGE, Job, Model
from tessera.he.packing import Stream
from tessera.he.verify import Reduced

__all__ = ["summarize", "unit_statistics"]


def _totals(reduced: Sequence[Reduced]) -> dict[str, float]:
    return {r.output.name: float(r.total) for r in reduced if r.total is not None}


def summarize(
    job: Job,
    reduced: Sequence[Reduced],
    streams: Sequence[Stream],
    rows: int,
    *,
    model: Model | None = None,
    ids: list[str] | None = None,
    voxel_mm3: float | None = None,
) -> dict[str, Any]:
    """The result document of ``job`` (what ``tessera he decrypt --json`` prints)."""
    if job.kind == "scores":
        assert model is not None
        return _scores(job, reduced, rows, model, ids)
    if job.kind == "imaging":
        return _imaging(reduced, streams, voxel_mm3)
    totals = _totals(reduced)
    by_name = {s.name: s for s in streams}
    names = list(job.columns) if job.columns else [s.name for s in streams]
    columns = []
    for name in names:
        s = by_name[name]
        s1 = totals[f"sum:{name}"]
        entry: dict[str, Any] = {"name": name, "sum": rows * s.lo + s.width * s1}
        if job.kind != "sum":
            entry["mean"] = entry["sum"] / rows
        square = totals.get(f"prod:{name}:{name}")
        if square is not None:
            variance = _covariance(s1, s1, square, s.width, s.width, rows)
            entry["variance"] = None if variance is None else max(variance, 0.0)
            entry["stddev"] = None if variance is None else math.sqrt(max(variance, 0.0))
        columns.append(entry)
    doc: dict[str, Any] = {"kind": job.kind, "rows": rows, "columns": columns}
    if job.kind == "covariance":
        matrix: list[list[float | None]] = []
        for a in names:
            row: list[float | None] = []
            for b in names:
                first, second = sorted((a, b), key=names.index)
                product = totals[f"prod:{first}:{second}"]
                sa, sb = by_name[a], by_name[b]
                row.append(
                    _covariance(
                        totals[f"sum:{a}"], totals[f"sum:{b}"], product, sa.width, sb.width, rows
                    )
                )
            matrix.append(row)
        doc["covariance"] = {"columns": names, "matrix": matrix}
    return doc


def _covariance(
    s_a: float, s_b: float, product: float, w_a: float, w_b: float, n: int
) -> float | None:
    if n < 2:
        return None
    return w_a * w_b * (product - s_a * s_b / n) / (n - 1)


def _scores(
    job: Job, reduced: Sequence[Reduced], rows: int, model: Model, ids: list[str] | None
) -> dict[str, Any]:
    values = reduced[0].rows
    assert values is not None
    link = job.link_for(model)
    doc: dict[str, Any] = {
        "kind": "scores",
        "rows": rows,
        "model": model.name,
        "model_digest": model.digest,
        "link": link,
    }
    if link == "polynomial":
        doc["approximation"] = {
            "polynomial": list(SIGMOID_POLY),
            "range": [-SIGMOID_POLY_RANGE, SIGMOID_POLY_RANGE],
            "max_error": SIGMOID_POLY_ERROR,
        }
    key = "probability" if link != "identity" else "score"
    out = []
    for i, z in enumerate(values.tolist()):
        item: dict[str, Any] = {"row": i + 1}
        if ids is not None:
            item["id"] = ids[i]
        if link == "sigmoid":
            item["score"] = z
            item["probability"] = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        else:
            item[key] = z
        out.append(item)
    numbers = np.asarray([o[key] for o in out], dtype=np.float64)
    doc["summary"] = {
        key: {
            "min": float(numbers.min()),
            "mean": float(numbers.mean()),
            "max": float(numbers.max()),
        }
    }
    doc["scores"] = out
    return doc


def _imaging(
    reduced: Sequence[Reduced], streams: Sequence[Stream], voxel_mm3: float | None
) -> dict[str, Any]:
    totals = _totals(reduced)
    voxel = float(voxel_mm3 or 0.0)
    volume = totals["volume"]
    count = round(volume / voxel) if voxel > 0 else 0
    intensity = streams[0]
    mean = intensity.lo + intensity.width * totals["intensity"] / count if count else None
    return {
        "kind": "imaging",
        "voxels": count,
        "voxel_mm3": voxel,
        "volume_mm3": volume,
        "volume_ml": volume / 1000.0,
        "mean_intensity": mean,
        "intensity_unit": "HU",
    }


def unit_statistics(
    reduced: Sequence[Reduced], columns: Sequence[dict[str, Any]], rows: int
) -> dict[str, int]:
    """The DP layer's integer statistics: ``count``, ``sum:C``, ``sumsq:C`` in the
    table's integer units (value x 10^decimals), rounded from the decrypted sums."""
    totals = _totals(reduced)
    out = {"count": rows}
    for col in columns:
        name, lo, hi = str(col["name"]), int(col["lo_units"]), int(col["hi_units"])
        width = hi - lo
        s1 = totals.get(f"sum:{name}")
        if s1 is None:
            continue
        out[f"sum:{name}"] = round(rows * lo + width * s1)
        square = totals.get(f"prod:{name}:{name}")
        if square is not None:
            out[f"sumsq:{name}"] = round(
                rows * lo * lo + 2 * lo * width * s1 + width * width * square
            )
    return out
