"""Re-identification risk under ARX's three attacker models.

For a record in sample class j of size f_j whose population class has size F_j:

* **prosecutor** (the attacker knows the target is in the data): risk ``1/f_j``;
  highest = ``1/min f_j``; average success rate = ``J/n`` (classes per record, i.e.
  ``1 / average class size``, ARX's ``getAverageRisk``).
* **journalist** (the attacker does not know whether the target is in the data, and
  links to the population): risk ``1/F_j``; highest = ``1/min F_j``; average =
  ``(1/n) sum_j f_j/F_j``.  F_j comes from a population table when one is given (exact,
  ARX's "research subset" model); else, given only a population size N, it is the
  expansion estimate ``F_j = f_j * N/n`` (never below f_j); with neither, the data is
  its own population and the journalist risk equals the prosecutor risk, as in ARX.
* **marketer** (the attacker links as many records as possible): expected fraction of
  records re-identified = ``(1/n) sum_j f_j/F_j`` — the journalist average; without a
  population it is ``J/n``.

"Records at risk" is the fraction of records whose risk exceeds the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["AttackerRisk", "ReidentificationRisk", "reidentification_risk"]

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AttackerRisk:
    """Risk figures for one attacker model."""

    highest: float
    average: float
    records_at_risk: float
    records_at_highest_risk: float

    def as_dict(self, threshold: float) -> dict[str, float]:
        """JSON-ready figures (``threshold`` is echoed for the reader)."""
        return {
            "highest": self.highest,
            "average": self.average,
            "records_at_risk": self.records_at_risk,
            "records_at_highest_risk": self.records_at_highest_risk,
            "threshold": threshold,
        }


@dataclass(frozen=True)
class ReidentificationRisk:
    """Prosecutor, journalist and marketer risk, as ARX defines them."""

    threshold: float
    prosecutor: AttackerRisk
    journalist: AttackerRisk
    marketer: float
    population_model: str


def _attacker(sizes: IntArray, denom: FloatArray, threshold: float) -> AttackerRisk:
    n = float(sizes.sum())
    risk = 1.0 / denom
    highest = float(risk.max())
    at_risk = float(sizes[risk > threshold].sum()) / n
    at_highest = float(sizes[risk >= highest * (1 - 1e-12)].sum()) / n
    average = float(np.sum(sizes * risk)) / n
    return AttackerRisk(highest, average, at_risk, at_highest)


def reidentification_risk(
    sizes: IntArray,
    *,
    threshold: float = 0.2,
    population: int | None = None,
    population_sizes: IntArray | None = None,
) -> ReidentificationRisk:
    """Risk for classes of sizes ``sizes``; population class sizes optional, else N."""
    if not 0 < threshold <= 1:
        raise ValueError("the risk threshold must be in (0, 1]")
    f = sizes.astype(np.float64)
    n = float(f.sum())
    prosecutor = _attacker(sizes, f, threshold)
    # The prosecutor's average is J/n by definition; sum(f * 1/f)/n is the same number.
    if population_sizes is not None:
        if population_sizes.shape != sizes.shape or np.any(population_sizes < sizes):
            raise ValueError("population class sizes must cover the sample classes")
        big_f = population_sizes.astype(np.float64)
        model = "population table"
    elif population is not None:
        if population < n:
            raise ValueError("the population cannot be smaller than the sample")
        big_f = np.maximum(f * (population / n), f)
        model = "population size"
    else:
        big_f = f
        model = "sample"
    journalist = _attacker(sizes, big_f, threshold)
    return ReidentificationRisk(threshold, prosecutor, journalist, journalist.average, model)
