"""Benchmark: secure treatment recommendation (issue 6) against a sort-based MPyC baseline.

N records of the synthetic HIV cohort (tessera.samples.hiv) from 3 hospitals, 100
regimens, k = 100, three MPyC parties as local processes on this machine (t = 1).
Prints, measured in one run:

- plaintext: the numpy oracle on the clear table;
- secure: wall time of the three party processes (start-up included), with per-phase
  times of party 0, checked equal to the oracle;
- baseline: the straightforward MPyC program (np_sort of all keys, then one comparison
  per record; same distances, same aggregation, same resharing speed-ups) at two small
  sizes, its growth exponent fitted from them, and its extrapolation to N; also checked
  against the oracle.

    .venv/bin/python bench/recommend.py [--rows 20000] [--k 100] [--baseline 1000,2000]
                                        [--json]
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from envelope import Run, emit, figure, progress_to_stderr, result
from tessera.mpc.knn_local import reconstruct_result, run_local_parties, share_patient
from tessera.mpc.knn_spec import KnnJob, PatientQuery, recommend_plain
from tessera.tables.encode import encode_rows, read_csv, share_parts
from tessera.tables.schema import Schema
from tessera.workflows.recommend import build_job, patient_units, read_profile


def _hiv() -> Any:
    return importlib.import_module("tessera.samples.hiv")


def _setup(rows: int, k: int, folder: Path) -> tuple[Any, ...]:
    hiv = _hiv()
    paths = hiv.write_cohort(folder, rows, hospitals=3, seed=11)
    text = (folder / "hiv.schema.yaml").read_text()
    schema = Schema.from_yaml(text)
    profile = read_profile(text)
    chunks: dict[str, list[Any]] = {}
    for path in paths:
        header, body = read_csv(path.read_bytes())
        enc = encode_rows(schema, header, body)
        for name, v in enc.parts.items():
            chunks.setdefault(name, []).append(v)
    parts = {name: np.concatenate(v) for name, v in chunks.items()}
    job = build_job(schema, profile, rows, mode="k")
    patient = patient_units(schema, job, hiv.patient(seed=1011))
    return schema, job, parts, patient


def _inputs(job: KnnJob, parts: dict[str, Any], patient: dict[str, int], k: int) -> list[Any]:
    wanted = {name: parts[name][: job.rows] for name in job.part_names()}
    inputs = [dict(p) for p in share_parts(wanted, n=job.parties, t=job.threshold)]
    query = PatientQuery.build(job, patient, k=k)
    for i, share in enumerate(share_patient(job, query)):
        inputs[i]["patient"] = share
    return inputs


def _oracle(job: KnnJob, parts: dict[str, Any], patient: dict[str, int], k: int) -> Any:
    n = job.rows
    values = np.stack([parts[f"{f.name}.val"][:n] for f in job.features], axis=1)
    codes = parts[f"{job.treatment}.oh"][:n].argmax(axis=1)
    event = parts[f"{job.event}.val"][:n] if job.event else None
    return recommend_plain(
        values,
        [f.weight for f in job.features],
        [patient[f.name] for f in job.features],
        codes,
        parts[f"{job.time}.val"][:n],
        event,
        treatments=job.treatments,
        k=k,
    )


def _secure(
    job: KnnJob, inputs: list[Any], module: str, work: Path
) -> tuple[Any, float, float, str]:
    """Result, wall seconds (processes included), party 0's compute seconds and phases."""
    run = run_local_parties(job, inputs, work, timings=True, timeout=3600, module=module)
    phases = [ln.split(": ", 1)[1] for ln in run.log.splitlines() if "knn party 0" in ln]
    print(f"  party 0 phases: {', '.join(phases)}")
    compute = sum(float(p.split()[-1].rstrip("s")) for p in phases)
    return reconstruct_result(job, run.shares), run.seconds, compute, ", ".join(phases)


def main() -> int:
    """Run the benchmark and print the figures (or the JSON document)."""
    ap = argparse.ArgumentParser(description="secure kNN treatment recommendation benchmark")
    ap.add_argument("--rows", type=int, default=20_000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--baseline", default="1000,2000", help="baseline sizes ('' to skip)")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    a = ap.parse_args()
    run = Run("recommend", __doc__, {"rows": a.rows, "k": a.k, "baseline": a.baseline})
    with progress_to_stderr(a.json):
        rows, notes = measure(a)
    if a.json:
        emit(run.document(rows, notes))
    return 0


def _against_baseline(
    sizes: list[int], k: int, data: tuple[Any, ...], work: Path, ours: Any, notes: list[str]
) -> list[dict[str, Any]]:
    """The np_sort baseline at ``sizes``, extrapolated to the job's size; printed, its
    rows returned (and a note per size measured)."""
    job, parts, patient = data
    secure = ours["value"]
    times, walls = [], []
    for n in sizes:
        sub = KnnJob.from_json(job.to_json())
        sub = KnnJob(**{**sub.__dict__, "rows": n, "extra": {**sub.extra, "k": k}})
        sub_inputs = _inputs(sub, parts, patient, k)
        module = "tessera.mpc.knn_baseline"
        res, wall, compute, _ = _secure(sub, sub_inputs, module, work / f"b{n}")
        assert res == _oracle(sub, parts, patient, k), "baseline differs from oracle"
        times.append(compute)
        walls.append(wall)
        print(f"baseline np_sort at N={n}: {wall:.1f} s wall, {compute:.1f} s compute")
        notes.append(
            f"np_sort baseline measured at N = {n:,}: {wall:.1f} s wall, "
            f"{compute:.1f} s compute (equal to the oracle)"
        )
    growth = math.log(times[-1] / times[-2]) / math.log(sizes[-1] / sizes[-2])
    growth = max(growth, 1.0)  # a sorting network never grows slower than linearly
    # Only the compute grows; process start-up and shutdown are added back as is.
    fixed = max(0.0, walls[-1] - times[-1])
    projected = fixed + times[-1] * (job.rows / sizes[-1]) ** growth
    print(
        f"baseline extrapolated to N={job.rows}: {projected:.0f} s "
        f"(compute growth measured N^{growth:.2f}, plus {fixed:.1f} s start-up)"
    )

    # Cross-check with the sorting network's own growth, N log^2 N (from the last size).
    def nlog2(n: int) -> float:
        return n * math.log2(n) ** 2

    model = fixed + times[-1] * nlog2(job.rows) / nlog2(sizes[-1])
    print(f"baseline by the N log^2 N model instead: {model:.0f} s")
    print(f"speed-up over the np_sort baseline: {projected / secure:.1f}x (measured growth)")
    print(f"speed-up over the np_sort baseline: {model / secure:.1f}x (N log^2 N model)")
    return [
        result(
            "against the np_sort baseline, extrapolated by its measured growth",
            ours,
            figure("np_sort baseline", projected, "s", {"growth exponent": growth}),
            ratio_of="baseline / ours",
        ),
        result(
            "against the np_sort baseline, extrapolated by N log² N",
            ours,
            figure("np_sort baseline", model, "s"),
            ratio_of="baseline / ours",
        ),
    ]


def measure(a: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The figures, printed as measured; the rows and notes of the JSON document."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="tessera-bench-knn-") as tmp:
        work = Path(tmp)
        _schema, job, parts, patient = _setup(a.rows, a.k, work / "data")
        print(
            f"rows={job.rows} treatments={job.treatments} k={a.k} features={len(job.features)} "
            f"distance bits={job.distance_bits} index bits={job.index_bits} parties=3 (t=1)"
        )
        notes.append(
            f"{job.rows:,} records, {job.treatments} treatments, k = {a.k}, "
            f"{len(job.features)} features, {job.distance_bits} distance bits, "
            "3 local parties (t = 1)"
        )
        t0 = time.perf_counter()
        expected = _oracle(job, parts, patient, a.k)
        plain = time.perf_counter() - t0
        print(f"plaintext (numpy oracle): {plain * 1000:.1f} ms")

        inputs = _inputs(job, parts, patient, a.k)
        got, secure, _, phases = _secure(job, inputs, "tessera.mpc.knn", work / "secure")
        assert got == expected, "secure result differs from the oracle"
        print(f"secure (3 parties, wall, process start-up included): {secure:.1f} s")
        print("secure result equals the oracle: yes")
        notes.append(f"secure result equals the numpy oracle; party 0 phases: {phases}")
        ours = figure("secure, 3 parties (wall)", secure, "s")
        rows.append(
            result(
                "secure recommendation against the plaintext numpy oracle",
                ours,
                figure("numpy, plaintext", plain, "s"),
            )
        )

        sizes = [int(s) for s in a.baseline.split(",") if s.strip()]
        if len(sizes) >= 2:
            rows += _against_baseline(sizes, a.k, (job, parts, patient), work, ours, notes)
            print(f"secure vs plaintext: {secure / plain:.0f}x slower")
    return rows, notes


if __name__ == "__main__":
    sys.exit(main())
