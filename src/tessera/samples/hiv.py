"""Synthetic HIV cohort for treatment recommendation (seeded, reproducible).

``write_cohort(folder, rows, hospitals=3, seed=11)`` writes ``hiv-{h}.csv`` (one file
per hospital, rows split as evenly as possible), ``hiv.schema.yaml`` (a Tessera table
schema with a ``recommend:`` section: similarity weights, treatment, time and event
columns) and ``patient.json`` (a new patient to recommend for).

Columns: age (years), sex_male, cd4_sqrt (square root of the CD4 count, the scale HIV
cohort models use), vl_log10 (log10 viral load, one decimal), line (treatment line
1-4), 30 drug-resistance mutations (booleans, named after the IAS-USA list; more
frequent in later lines), regimen (one of 100 NRTI-backbone + third-agent
combinations), ttf_days (days to treatment failure or censoring) and failed (1 = failure
observed, 0 = censored).  Time to failure is exponential with a rate that grows with
viral load, low CD4, the line and resistance mutations that hit the regimen's drugs, so
that similar patients do have similar outcomes.

    python -m tessera.samples.hiv OUT_DIR [--rows 20000] [--hospitals 3] [--seed 11]
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

__all__ = ["MUTATIONS", "REGIMENS", "generate", "patient", "schema_yaml", "write_cohort"]

BACKBONES = ("TDF/FTC", "TAF/FTC", "ABC/3TC", "AZT/3TC", "TDF/3TC")
THIRD_AGENTS = (
    "EFV", "NVP", "RPV", "ETR", "DOR", "DTG", "BIC", "RAL", "EVG/c", "CAB",
    "DRV/r", "DRV/c", "ATV/r", "ATV/c", "LPV/r", "FPV/r", "SQV/r", "TPV/r", "DTG+DRV/r", "MVC",
)  # fmt: skip
REGIMENS = tuple(f"{b}+{a}" for b in BACKBONES for a in THIRD_AGENTS)
MUTATIONS = (
    "M184V", "K65R", "L74V", "M41L", "D67N", "K70R", "L210W", "T215Y", "K219Q", "Q151M",
    "K103N", "Y181C", "G190A", "V106A", "Y188L", "E138K", "P225H", "K101E",
    "M46I", "I54V", "V82A", "L90M", "I84V", "N88S", "I50L",
    "Q148H", "N155H", "Y143R", "G140S", "E92Q",
)  # fmt: skip
# Which mutation classes hurt which drug classes: NRTI 0-9, NNRTI 10-17, PI 18-24, INSTI 25-29.
_CLASS_OF_AGENT = {
    "EFV": "nnrti", "NVP": "nnrti", "RPV": "nnrti", "ETR": "nnrti", "DOR": "nnrti",
    "DTG": "insti", "BIC": "insti", "RAL": "insti", "EVG/c": "insti", "CAB": "insti",
    "DRV/r": "pi", "DRV/c": "pi", "ATV/r": "pi", "ATV/c": "pi", "LPV/r": "pi", "FPV/r": "pi",
    "SQV/r": "pi", "TPV/r": "pi", "DTG+DRV/r": "insti", "MVC": "entry",
}  # fmt: skip
_CLASS_SLICE = {"nrti": slice(0, 10), "nnrti": slice(10, 18), "pi": slice(18, 25)}
_CLASS_SLICE["insti"] = slice(25, 30)
WEIGHTS = {"age": 1, "sex_male": 30, "cd4_sqrt": 4, "vl_log10": 2, "line": 150}
MUTATION_WEIGHT = 40


def generate(rows: int, seed: int = 11) -> dict[str, np.ndarray]:
    """Column name -> values (ints; vl_log10 in tenths; regimen as a code 0..99)."""
    rng = np.random.default_rng(seed)
    age = np.clip(np.rint(rng.normal(41, 11, rows)), 18, 80).astype(np.int64)
    sex = (rng.random(rows) < 0.72).astype(np.int64)
    line = rng.choice([1, 2, 3, 4], size=rows, p=[0.5, 0.28, 0.15, 0.07]).astype(np.int64)
    cd4 = np.clip(rng.lognormal(np.log(380) - 0.25 * (line - 1), 0.6, rows), 0, 1600)
    cd4_sqrt = np.clip(np.rint(np.sqrt(cd4)), 0, 40).astype(np.int64)
    vl = np.clip(rng.normal(4.3 - 0.03 * (cd4_sqrt - 19), 0.9, rows), 1.3, 7.0)
    vl_tenths = np.rint(vl * 10).astype(np.int64)
    prevalence = np.array([0.1 if i < 10 else 0.07 if i < 18 else 0.04 for i in range(30)])
    mut = (rng.random((rows, 30)) < prevalence[None, :] * (0.4 + 0.8 * line[:, None])).astype(
        np.int64
    )
    # Regimen: later lines and resistance push towards boosted PIs and INSTIs.
    popularity = rng.dirichlet(np.full(len(REGIMENS), 1.0))
    regimen = rng.choice(len(REGIMENS), size=rows, p=popularity).astype(np.int64)
    hits = np.zeros(rows)
    for code, name in enumerate(REGIMENS):
        rows_c = regimen == code
        agent_class = _CLASS_OF_AGENT[name.split("+", 1)[1]]
        hit = mut[rows_c, _CLASS_SLICE["nrti"]].sum(axis=1) * 0.5
        if agent_class in _CLASS_SLICE:
            hit = hit + mut[rows_c, _CLASS_SLICE[agent_class]].sum(axis=1)
        hits[rows_c] = hit
    potency = 0.6 + 0.8 * rng.random(len(REGIMENS))  # regimen-specific effect
    rate = (
        np.exp(0.45 * (vl - 4) - 0.05 * (cd4_sqrt - 19) + 0.3 * (line - 1) + 0.6 * hits)
        / potency[regimen]
        / 2500.0
    )
    failure = rng.exponential(1.0 / rate)
    follow_up = rng.uniform(180, 3650, rows)
    ttf = np.clip(np.rint(np.minimum(failure, follow_up)), 1, 3650).astype(np.int64)
    failed = (failure <= follow_up).astype(np.int64)
    cols: dict[str, np.ndarray] = {
        "age": age,
        "sex_male": sex,
        "cd4_sqrt": cd4_sqrt,
        "vl_log10": vl_tenths,
        "line": line,
    }
    for j, name in enumerate(MUTATIONS):
        cols[name] = mut[:, j]
    cols["regimen"] = regimen
    cols["ttf_days"] = ttf
    cols["failed"] = failed
    return cols


def patient(seed: int = 5) -> dict[str, object]:
    """A new patient (user units, as in patient.json)."""
    one = generate(1, seed)
    doc: dict[str, object] = {}
    for name, values in one.items():
        if name in ("regimen", "ttf_days", "failed"):
            continue
        v = int(values[0])
        if name == "vl_log10":
            doc[name] = f"{v / 10:.1f}"
        elif name == "sex_male" or name in MUTATIONS:
            doc[name] = bool(v)
        else:
            doc[name] = v
    return doc


def schema_yaml() -> str:
    """The table schema (non-nullable columns) with its ``recommend:`` section."""
    lines = [
        "columns:",
        "- {name: age, type: integer, min: 18, max: 80, nullable: false}",
        "- {name: sex_male, type: boolean, nullable: false}",
        "- {name: cd4_sqrt, type: integer, min: 0, max: 40, nullable: false}",
        "- {name: vl_log10, type: decimal, scale: 1, min: '1.0', max: '7.0', nullable: false}",
        "- {name: line, type: integer, min: 1, max: 4, nullable: false}",
    ]
    lines += [f"- {{name: {m}, type: boolean, nullable: false}}" for m in MUTATIONS]
    cats = ", ".join(f"'{r}'" for r in REGIMENS)
    lines.append(f"- {{name: regimen, type: categorical, categories: [{cats}], nullable: false}}")
    lines.append("- {name: ttf_days, type: integer, min: 1, max: 3650, nullable: false}")
    lines.append("- {name: failed, type: boolean, nullable: false}")
    lines += ["recommend:", "  treatment: regimen", "  time: ttf_days", "  event: failed"]
    lines.append("  weights:")
    lines += [f"    {k}: {v}" for k, v in WEIGHTS.items()]
    lines += [f"    {m}: {MUTATION_WEIGHT}" for m in MUTATIONS]
    return "\n".join(lines) + "\n"


def _cell(name: str, v: int) -> str:
    if name == "vl_log10":
        return f"{v / 10:.1f}"
    if name == "regimen":
        return REGIMENS[v]
    if name == "sex_male" or name == "failed" or name in MUTATIONS:
        return "true" if v else "false"
    return str(v)


def write_cohort(folder: Path, rows: int, hospitals: int = 3, seed: int = 11) -> list[Path]:
    """Write the per-hospital CSVs, the schema and a patient; returns the CSV paths."""
    folder.mkdir(parents=True, exist_ok=True)
    cols = generate(rows, seed)
    names = list(cols)
    bounds = np.linspace(0, rows, hospitals + 1).astype(int)
    paths = []
    for h in range(hospitals):
        path = folder / f"hiv-{h + 1}.csv"
        with path.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(names)
            for i in range(bounds[h], bounds[h + 1]):
                w.writerow([_cell(n, int(cols[n][i])) for n in names])
        paths.append(path)
    (folder / "hiv.schema.yaml").write_text(schema_yaml())
    (folder / "patient.json").write_text(json.dumps(patient(seed + 1000), indent=2) + "\n")
    return paths


def main() -> None:
    """Command line: write a cohort."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--hospitals", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    a = ap.parse_args()
    for p in write_cohort(a.out, a.rows, a.hospitals, a.seed):
        print(p)


if __name__ == "__main__":
    main()
