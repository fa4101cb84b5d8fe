"""Small synthetic tables for the knn tests (shared by the unit and party tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tessera.core.prime import share_array
from tessera.mpc.knn_spec import Feature, KnnJob

I64 = npt.NDArray[np.int64]


@dataclass
class Table:
    job: KnnJob
    values: I64
    treatment: I64
    time: I64
    event: I64

    def parts(self) -> dict[str, I64]:
        out: dict[str, I64] = {}
        for j, f in enumerate(self.job.features):
            out[f"{f.name}.val"] = self.values[:, j]
            if f.kind == "numeric":
                out[f"{f.name}.sq"] = self.values[:, j] ** 2
        out[f"{self.job.treatment}.oh"] = np.eye(self.job.treatments, dtype=np.int64)[
            self.treatment
        ]
        out[f"{self.job.time}.val"] = self.time
        if self.job.event is not None:
            out[f"{self.job.event}.val"] = self.event
        return out

    def party_inputs(self) -> list[dict[str, npt.NDArray[np.uint64]]]:
        inputs: list[dict[str, npt.NDArray[np.uint64]]] = [{} for _ in range(self.job.parties)]
        for name, v in self.parts().items():
            sh = share_array(v, n=self.job.parties, t=self.job.threshold, p=self.job.prime)
            for i in range(self.job.parties):
                inputs[i][name] = np.asarray(sh[i], dtype=object).astype(np.uint64)
        return inputs


def make_table(rows: int, seed: int, *, mode: str = "k", treatments: int = 7) -> Table:
    """Coarse features, so that many distances tie."""
    rng = np.random.default_rng(seed)
    feats = (
        Feature("age", "numeric", 2, 0, 3),
        Feature("cd4", "numeric", 1, 0, 5),
        Feature("line", "numeric", 3, 1, 2),
        *(Feature(f"m{i}", "binary", 1 + i % 2) for i in range(4)),
    )
    values = np.stack([rng.integers(f.lo, f.hi + 1, rows) for f in feats], axis=1)
    job = KnnJob(
        rows=rows,
        features=feats,
        treatment="regimen",
        treatments=treatments,
        time="ttf",
        event="failed",
        mode=mode,
    )
    return Table(
        job,
        values.astype(np.int64),
        rng.integers(0, treatments, rows),
        rng.integers(1, 3650, rows),
        rng.integers(0, 2, rows),
    )
