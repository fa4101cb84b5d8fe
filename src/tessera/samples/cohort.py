"""Synthetic multi-hospital cohort for secure SQL (seeded, reproducible).

``write_cohort(folder, rows, hospitals=3, seed=7)`` writes ``hospital-{h}.csv`` (the
``patients`` table), ``labs-{h}.csv`` (a second table keyed by the same patient ids,
for JOINs) and ``patients.schema.yaml`` / ``labs.schema.yaml``.  The shape follows a
population study (Rhineland-Study-like age range, vitals, an HIV-clinic-like viral load
and regimen), with a few missing values in every column but the key.

    python -m tessera.samples.cohort OUT_DIR [--rows 30000] [--hospitals 3] [--seed 7]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
from pathlib import Path

import numpy as np

__all__ = ["LABS_SCHEMA", "PATIENTS_SCHEMA", "write_cohort"]

PATIENTS_SCHEMA = """\
columns:
- {name: patient_id, type: pseudonym, nullable: false}
- {name: age, type: integer, min: 18, max: 100}
- {name: sex, type: categorical, categories: [F, M]}
- {name: bmi, type: decimal, scale: 1, min: '12.0', max: '60.0'}
- {name: viral_load, type: integer, min: 0, max: 1000000}
- {name: cd4, type: integer, min: 0, max: 2000}
- {name: regimen, type: categorical, categories: [A, B, C, D, E]}
- {name: smoker, type: boolean}
- {name: visit, type: date, min: '2015-01-01', max: '2024-12-31'}
"""

LABS_SCHEMA = """\
columns:
- {name: patient_id, type: pseudonym, nullable: false}
- {name: hba1c, type: decimal, scale: 1, min: '3.0', max: '15.0'}
- {name: ldl, type: integer, min: 20, max: 300}
"""


def _nulls(rng: np.random.Generator, n: int, rate: float) -> np.ndarray:
    return rng.random(n) < rate


def write_cohort(folder: Path, rows: int, *, hospitals: int = 3, seed: int = 7) -> list[Path]:
    """Write the CSVs and schemas; the patients CSV paths, one per hospital."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "patients.schema.yaml").write_text(PATIENTS_SCHEMA)
    (folder / "labs.schema.yaml").write_text(LABS_SCHEMA)
    rng = np.random.default_rng(seed)
    sizes = [rows // hospitals + (1 if h < rows % hospitals else 0) for h in range(hospitals)]
    paths = []
    start = dt.date(2015, 1, 1)
    pid = 0
    for h, size in enumerate(sizes, start=1):
        age = np.clip(rng.normal(58 + 3 * h, 14, size).round(), 18, 100).astype(int)
        sex = rng.choice(["F", "M"], size, p=[0.55, 0.45])
        bmi = np.clip(rng.normal(26.5, 4.5, size), 12, 60).round(1)
        vl = np.clip(rng.lognormal(6 + 0.3 * h, 2.2, size), 0, 1_000_000).astype(int)
        cd4 = np.clip(rng.normal(520, 220, size), 0, 2000).astype(int)
        regimen = rng.choice(list("ABCDE"), size, p=[0.35, 0.25, 0.2, 0.15, 0.05])
        smoker = rng.random(size) < 0.22 + 0.03 * h
        visit = rng.integers(0, (dt.date(2024, 12, 31) - start).days + 1, size)
        hba1c = np.clip(rng.normal(5.8, 0.9, size), 3, 15).round(1)
        ldl = np.clip(rng.normal(125, 35, size), 20, 300).astype(int)
        missing = {
            c: _nulls(rng, size, 0.02) for c in ("age", "bmi", "vl", "cd4", "smoker", "visit")
        }
        path = folder / f"hospital-{h}.csv"
        labs = folder / f"labs-{h}.csv"
        with path.open("w", newline="") as fh, labs.open("w", newline="") as lh:
            w = csv.writer(fh)
            lw = csv.writer(lh)
            w.writerow(
                [
                    "patient_id",
                    "age",
                    "sex",
                    "bmi",
                    "viral_load",
                    "cd4",
                    "regimen",
                    "smoker",
                    "visit",
                ]
            )
            lw.writerow(["patient_id", "hba1c", "ldl"])
            for i in range(size):
                pid += 1
                key = f"P{seed:02d}{pid:07d}"
                w.writerow(
                    [
                        key,
                        "" if missing["age"][i] else int(age[i]),
                        sex[i],
                        "" if missing["bmi"][i] else f"{bmi[i]:.1f}",
                        "" if missing["vl"][i] else int(vl[i]),
                        "" if missing["cd4"][i] else int(cd4[i]),
                        regimen[i],
                        "" if missing["smoker"][i] else ("true" if smoker[i] else "false"),
                        ""
                        if missing["visit"][i]
                        else (start + dt.timedelta(days=int(visit[i]))).isoformat(),
                    ]
                )
                if i % 3 != 2:  # two thirds of the patients have labs
                    lw.writerow([key, f"{hba1c[i]:.1f}", int(ldl[i])])
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--hospitals", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    for p in write_cohort(args.out, args.rows, hospitals=args.hospitals, seed=args.seed):
        print(p)


if __name__ == "__main__":
    main()
