"""Regenerate cohort.csv: a synthetic demo cohort (no real people), fixed seed."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np

DIAGNOSES = ["I10", "I21", "I50", "C34", "C50", "E11", "J44", "J45", "N18", "F32"]
WEIGHTS = [0.2, 0.06, 0.08, 0.04, 0.05, 0.18, 0.1, 0.09, 0.08, 0.12]


def main() -> None:
    rng = np.random.default_rng(20261122)
    n = 2000
    out = Path(__file__).parent / "risk" / "cohort.csv"
    with out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(
            [
                "patient_id",
                "email",
                "zip",
                "birth_date",
                "sex",
                "age",
                "admitted",
                "diagnosis",
                "length_of_stay",
            ]
        )
        for i in range(n):
            age = int(np.clip(rng.normal(62, 16), 18, 99))
            born = dt.date(2025 - age, int(rng.integers(1, 13)), int(rng.integers(1, 29)))
            admitted = dt.date(2024, 1, 1) + dt.timedelta(days=int(rng.integers(0, 366)))
            zipc = f"{int(rng.choice([21, 22, 23, 24])):02d}{int(rng.integers(0, 1000)):03d}"
            w.writerow(
                [
                    f"P{100000 + i}",
                    f"patient{i}@example.org",
                    zipc,
                    born.isoformat(),
                    rng.choice(["F", "M"]),
                    age,
                    admitted.isoformat(),
                    rng.choice(DIAGNOSES, p=WEIGHTS),
                    int(rng.gamma(2.0, 3.0)) + 1,
                ]
            )


if __name__ == "__main__":
    main()
