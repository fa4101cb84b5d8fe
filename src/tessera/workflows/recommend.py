"""Personalised treatment recommendation on secret records (``tessera recommend``).

The clinician's client turns a table schema plus its ``recommend:`` profile (similarity
weights, treatment, time and event columns) into a public :class:`KnnJob`, encodes and
secret-shares the patient, lets the custodians' MPyC parties find the k most similar
records and aggregate per treatment, and reconstructs the per-treatment counts, mean
time to failure and failure share — the only thing anyone learns.

Profile (a top-level ``recommend:`` mapping in the schema YAML, or its own file)::

    recommend:
      treatment: regimen      # categorical column: one entry per category
      time: ttf_days          # integer or decimal column
      event: failed           # optional boolean column (1 = failure observed)
      weights: {age: 1, cd4_sqrt: 4, M184V: 40, ...}   # integer or decimal -> numeric,
                                                       # boolean -> binary marker

:func:`recommend_table` runs the job on the custodian nodes, on a table imported with
``tessera table import``: the job is signed and broadcast, and each node's share of the
patient travels sealed to that node's key inside it (:mod:`tessera.mpc.knn_seal`).
:func:`recommend_local` runs the parties on this machine on CSVs instead (every party
process gets its own shares; the CSV and the patient never leave the client unshared).
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from tessera.config import Environment
from tessera.dp import Aggregate, ReleasePlan
from tessera.dp.policy import OutputChecks
from tessera.errors import InputError, IntegrityError, PolicyError
from tessera.mpc import knn_seal
from tessera.mpc.knn_local import reconstruct_result, run_local_parties, share_patient
from tessera.mpc.knn_spec import Feature, KnnJob, PatientQuery, PlainResult
from tessera.mpc.result import uninformative
from tessera.tables.encode import PRIME, encode_rows, read_csv, share_parts
from tessera.tables.schema import Column, Schema, parse_value
from tessera.tables.store import Catalog
from tessera.workflows.catalog_sync import sync_catalog
from tessera.workflows.dp import PrivateAnswer, run_private_query
from tessera.workflows.job_checks import bound_aggregate
from tessera.workflows.nodes import run_job
from tessera.workflows.people import Signer
from tessera.workflows.policies import effective_policies, node_budgets, remaining
from tessera.workflows.validation import ensure_validated

__all__ = [
    "Profile",
    "build_job",
    "dp_aggregates",
    "exact_document",
    "patient_units",
    "private_document",
    "read_patient",
    "read_profile",
    "recommend_local",
    "recommend_table",
    "result_document",
    "table_profile",
]


@dataclass(frozen=True)
class Profile:
    """Which columns a recommendation uses, and the similarity weights."""

    treatment: str
    time: str
    event: str | None
    weights: dict[str, int]


def read_profile(text: str) -> Profile:
    """The ``recommend:`` section of a schema or profile YAML; InputError if absent/bad."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise InputError("the recommendation profile is not valid YAML") from None
    section = doc.get("recommend") if isinstance(doc, Mapping) else None
    if not isinstance(section, Mapping):
        raise InputError("the schema has no 'recommend:' section (weights, treatment, time)")
    try:
        weights = section["weights"]
        if not isinstance(weights, Mapping) or not weights:
            raise InputError("recommend.weights must map feature columns to integer weights")
        clean: dict[str, int] = {}
        for name, w in weights.items():
            if isinstance(w, bool) or not isinstance(w, int) or w < 0:
                raise InputError(f"recommend.weights.{name} must be a non-negative integer")
            clean[str(name)] = w
        event = section.get("event")
        return Profile(
            str(section["treatment"]),
            str(section["time"]),
            None if event is None else str(event),
            clean,
        )
    except KeyError as exc:
        raise InputError(f"recommend section lacks {exc.args[0]!r}") from None


def _require(schema: Schema, name: str, kinds: tuple[str, ...], role: str) -> Column:
    col = schema.column(name)
    if col.kind not in kinds:
        raise InputError(f"{role} column {name} must be {' or '.join(kinds)}, not {col.kind}")
    if col.nullable:
        raise InputError(f"{role} column {name} must be declared nullable: false")
    return col


def build_job(
    schema: Schema,
    profile: Profile,
    rows: int,
    *,
    mode: str,
    parties: int = 3,
    threshold: int = 1,
) -> KnnJob:
    """The public job: features (bounds from the schema), columns, sizes."""
    features = []
    for name, weight in profile.weights.items():
        col = _require(schema, name, ("integer", "decimal", "boolean"), "feature")
        if col.kind == "boolean":
            features.append(Feature(col.name, "binary", weight))
        else:
            features.append(Feature(col.name, "numeric", weight, col.min, col.max))
    treat = _require(schema, profile.treatment, ("categorical",), "treatment")
    time_col = _require(schema, profile.time, ("integer", "decimal"), "time")
    if time_col.min < 0:
        raise InputError(f"time column {time_col.name} must not be negative")
    event = None
    if profile.event is not None:
        event = _require(schema, profile.event, ("boolean",), "event").name
    return KnnJob(
        rows=rows,
        features=tuple(features),
        treatment=treat.name,
        treatments=len(treat.categories),
        time=time_col.name,
        event=event,
        mode=mode,
        parties=parties,
        threshold=threshold,
        prime=PRIME,
        extra={"time_scale": time_col.scale},
    )


def read_patient(path: Path) -> dict[str, Any]:
    """The patient JSON (a flat object of feature values in user units)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the patient file ({exc.__class__.__name__})") from None
    if isinstance(doc, Mapping) and isinstance(doc.get("features"), Mapping):
        doc = doc["features"]
    if not isinstance(doc, Mapping):
        raise InputError("the patient file must be a JSON object of feature values")
    return dict(doc)


def patient_units(schema: Schema, job: KnnJob, patient: Mapping[str, Any]) -> dict[str, int]:
    """The patient's feature values in table units (checked against the bounds)."""
    lower = {str(k).lower(): v for k, v in patient.items()}
    out: dict[str, int] = {}
    for f in job.features:
        if f.name.lower() not in lower:
            raise InputError(f"the patient has no value for {f.name}")
        raw = lower[f.name.lower()]
        text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
        try:
            units = parse_value(schema.column(f.name), text)
        except ValueError as exc:
            raise InputError(f"patient value {f.name}: {exc}") from None
        if units is None:
            raise InputError(f"patient value {f.name} is empty")
        out[f.name] = units
    return out


def result_document(
    job: KnnJob, schema: Schema, result: PlainResult, seconds: float | None = None
) -> dict[str, Any]:
    """The ``--json`` document: {"k", "treatments": [{treatment, count, mean_...}], ...}."""
    names = schema.column(job.treatment).categories
    scale = 10 ** int(job.extra.get("time_scale", 0))
    entries = []
    for c, name in enumerate(names):
        count = result.counts[c]
        mean = result.time_sums[c] / count / scale if count else None
        entry: dict[str, Any] = {"treatment": name, "count": count, "mean_time_to_failure": mean}
        if result.events is not None:
            entry["failures"] = result.events[c]
            entry["failure_share"] = result.events[c] / count if count else None
        entries.append(entry)
    doc: dict[str, Any] = {
        "k": result.selected,
        "mode": job.mode,
        "rows": job.rows,
        "treatments": entries,
    }
    if seconds is not None:
        doc["seconds"] = round(seconds, 3)
    return doc


def _encode_csvs(schema: Schema, csv_paths: Sequence[Path]) -> dict[str, Any]:
    parts: dict[str, list[Any]] = {}
    for path in csv_paths:
        header, rows = read_csv(path.read_bytes())
        encoded = encode_rows(schema, header, rows)
        if encoded.errors:
            shown = "; ".join(encoded.errors[:3])
            raise InputError(f"{path.name}: {len(encoded.errors)} invalid rows ({shown})")
        for name, values in encoded.parts.items():
            parts.setdefault(name, []).append(values)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def recommend_local(
    csv_paths: Sequence[Path],
    schema_path: Path,
    patient: Mapping[str, Any],
    *,
    k: int | None = None,
    radius: str | int | None = None,
    profile_text: str | None = None,
    parties: int = 3,
    workdir: Path | None = None,
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Recommend for ``patient`` from CSVs, the custodian parties running on this machine."""
    if not csv_paths:
        raise InputError("give at least one CSV")
    text = schema_path.read_text(encoding="utf-8")
    schema = Schema.from_yaml(text)
    profile = read_profile(profile_text if profile_text is not None else text)
    all_parts = _encode_csvs(schema, csv_paths)
    rows = int(next(iter(all_parts.values())).shape[0])
    mode = "k" if k is not None else "radius"
    job = build_job(schema, profile, rows, mode=mode, parties=parties, threshold=(parties - 1) // 2)
    query = _query(schema, job, patient, k, radius)
    wanted = {name: all_parts[name] for name in job.part_names()}
    inputs: list[dict[str, Any]] = [
        dict(p) for p in share_parts(wanted, n=parties, t=job.threshold)
    ]
    for i, share in enumerate(share_patient(job, query)):
        inputs[i]["patient"] = share
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tessera-knn-") as tmp:
        run = run_local_parties(job, inputs, workdir or Path(tmp), timeout=timeout)
    result = reconstruct_result(job, run.shares)
    doc = result_document(job, schema, result, time.perf_counter() - start)
    doc["privacy"] = None  # local mode: the caller's own CSVs, released exactly
    return doc


def _radius_units(radius: str | int) -> int:
    try:
        value = int(radius)
    except ValueError:
        raise InputError("radius must be a non-negative integer (a distance)") from None
    if value < 0:
        raise InputError("radius must be a non-negative integer (a distance)")
    return value


def _query(
    schema: Schema, job: KnnJob, patient: Mapping[str, Any], k: int | None, radius: Any
) -> PatientQuery:
    units = patient_units(schema, job, patient)
    radius_units = None if radius is None else _radius_units(radius)
    return PatientQuery.build(job, units, k=k, radius=radius_units)


def recommend_table(
    env: Environment,
    table: str,
    patient: Mapping[str, Any],
    profile_text: str | None,
    *,
    k: int | None = None,
    radius: str | int | None = None,
    epsilon: float | None = None,
    signer: Signer,
) -> dict[str, Any]:
    """Recommend for ``patient`` from a secret-shared table, computed by the custodian nodes.

    When the table has a DP policy (docs/dp.md) the per-treatment statistics are
    released under it: the budget is reserved before any node runs (a recommendation
    that would overspend raises BudgetExhaustedError and nothing runs), every custodian
    adds its discrete Gaussian share inside the MPC, and the JSON gains intervals and a
    ``privacy`` object (``null`` for an exact release).
    """
    sync_catalog(env)
    manifest = Catalog(env.home).get(table)
    schema = Schema.from_dict(manifest["schema"])
    profile = read_profile(profile_text) if profile_text is not None else table_profile(manifest)
    rows = int(manifest["rows"])
    if rows < 1:
        raise InputError(f"table {table} has no rows")
    mode = "k" if k is not None else "radius"
    job = build_job(schema, profile, rows, mode=mode, parties=env.n, threshold=env.mpc_threshold)
    query = _query(schema, job, patient, k, radius)
    policies = effective_policies(env, [table])
    policy = policies[table]
    if not policy.is_private:
        if epsilon is not None:
            raise PolicyError(
                f"--epsilon: {table} has no differential privacy policy "
                "(tessera table policy NAME --mode dp ...)"
            )
        # the custodians' minimum group: treatments below it are suppressed in the MPC
        job = replace(job, min_group=min(policy.min_group_size, rows + 1))
        start = time.perf_counter()
        values = _run_knn(
            env, table, manifest, job, query, None, signer, checks=policy.output_checks
        )
        return exact_document(job, schema, values, k, time.perf_counter() - start)
    ensure_validated(env, [table], signer)
    factor = 2 if job.mode == "k" else 1
    aggregates = [
        bound_aggregate(a, {"t": table}, policies, {table: manifest}, factor)
        for a in dp_aggregates(schema, job)
    ]
    width = 3 if job.event is not None else 2

    def execute(plan: ReleasePlan) -> dict[str, list[int]]:
        expected = ("count", f"sum:{job.time}", f"sum:{job.event}")[:width]
        if plan.keys != expected:
            raise IntegrityError(f"unexpected release plan statistics {plan.keys}")
        noise = {
            "cells": width * job.treatments,
            "groups": job.treatments,
            "release_plan": plan.to_dict(),
        }
        values = _run_knn(env, table, manifest, job, query, noise, signer)
        if len(values) != width * job.treatments:
            raise IntegrityError("the custodians returned a malformed result")
        n = job.treatments
        return {key: values[i * n : (i + 1) * n] for i, key in enumerate(plan.keys)}

    start = time.perf_counter()

    def budget() -> dict[str, dict[str, float]]:
        return remaining(node_budgets(env, table, researcher=signer.name))

    answer = run_private_query(
        policy=policy,
        aggregates=aggregates,
        cells=job.treatments,
        custodians=env.n,
        threshold=env.mpc_threshold,
        execute=execute,
        epsilon=epsilon,
        budget=budget,
    )
    return private_document(job, schema, answer, k, time.perf_counter() - start)


def table_profile(manifest: Mapping[str, Any]) -> Profile:
    """The ``recommend:`` profile saved with the table's schema at import or create."""
    section = manifest.get("recommend")
    if not isinstance(section, Mapping):
        raise InputError(
            f"table {manifest.get('name')} has no recommendation profile: give --profile FILE "
            "(a YAML with a recommend: section)"
        )
    return read_profile(yaml.safe_dump({"recommend": dict(section)}))


def exact_document(
    job: KnnJob, schema: Schema, values: Sequence[int], k: int | None, seconds: float
) -> dict[str, Any]:
    """The document of an exact release: ``[flag per treatment] + treatments x 3`` cells.

    A treatment whose flag is 0 had fewer than ``job.min_group`` of the selected
    patients: the MPC zeroed its cells; here it is marked ``suppressed`` with a ``note``.
    """
    t = job.treatments
    flags = list(values[:t]) if job.min_group else [1] * t
    cells = values[t:] if job.min_group else values
    if len(cells) != t * 3 or any(v < 0 for v in cells) or any(f not in (0, 1) for f in flags):
        raise IntegrityError("the custodians returned a malformed result")
    grid = np.array(cells, dtype=object).reshape(t, 3)
    counts = tuple(int(v) for v in grid[:, 0])
    selected = min(k, job.rows) if job.mode == "k" and k is not None else sum(counts)
    result = PlainResult(
        selected,
        counts,
        tuple(int(v) for v in grid[:, 1]),
        tuple(int(v) for v in grid[:, 2]) if job.event is not None else None,
    )
    doc = result_document(job, schema, result, seconds)
    for entry, flag in zip(doc["treatments"], flags, strict=True):
        entry["suppressed"] = flag == 0
        if flag == 0:
            entry.update({key: None for key in entry if key not in ("treatment", "suppressed")})
            entry["note"] = (
                f"suppressed: fewer than {job.min_group} of the selected patients "
                "(the table's minimum group size)"
            )
    doc["min_group"] = job.min_group
    doc["privacy"] = None
    return doc


def dp_aggregates(schema: Schema, job: KnnJob) -> list[Aggregate]:
    """What a DP recommendation releases per treatment, with the k-NN sensitivities.

    Statistics (in this order): ``count``, ``sum:TIME`` over times clamped to the
    schema bounds, ``sum:EVENT`` (0/1).  One person can move two records of the k
    nearest (one in, one out: ``sensitivity_factor`` 2); in radius mode only the
    person's own record (1).  See docs/recommend.md, "Differential privacy".
    """
    col = schema.column(job.time)
    factor = 2 if job.mode == "k" else 1
    scale = 10**col.scale
    out = [
        Aggregate("count", label="count", sensitivity_factor=factor),
        Aggregate(
            "avg",
            job.time,
            lower=col.min,
            upper=col.max,
            scale=scale,
            label="mean_time_to_failure",
            sensitivity_factor=factor,
        ),
    ]
    if job.event is not None:
        out.append(Aggregate("sum", job.event, 0, 1, label="failures", sensitivity_factor=factor))
        out.append(
            Aggregate("avg", job.event, 0, 1, label="failure_share", sensitivity_factor=factor)
        )
    return out


def private_document(
    job: KnnJob, schema: Schema, answer: PrivateAnswer, k: int | None, seconds: float
) -> dict[str, Any]:
    """The ``--json`` document of a DP release (docs/architecture.md shape plus ``privacy``).

    Per treatment: the noisy ``count``, ``mean_time_to_failure`` (noisy time sum / noisy
    count, clamped to the schema bounds), ``failures`` and ``failure_share``, each with
    its 95% interval under ``intervals``; ``null`` where the noisy count is below the
    policy's minimum group size.  ``k`` is the requested k (radius mode: the sum of the
    released counts).
    """
    release = answer.release
    names = schema.column(job.treatment).categories
    cols = release.columns
    entries = []
    for c, name in enumerate(names):
        row, ivs = release.rows[c], release.intervals[c]
        entry: dict[str, Any] = {"treatment": name}
        intervals: dict[str, list[float] | None] = {}
        flagged: dict[str, bool] = {}
        for j, col in enumerate(cols):
            value, iv = row[j], ivs[j]
            if col == "failures" and value is not None and iv is not None:
                # A count of failures is >= 0: clamping is post-processing.
                value, iv = max(value, 0.0), (max(iv[0], 0.0), max(iv[1], 0.0))
            if col in ("count", "failures") and value is not None:
                value = round(value)
            entry[col] = value
            intervals[col] = None if iv is None else [float(iv[0]), float(iv[1])]
            agg = release.plan.aggregates[j]
            lo, hi = agg.lower / agg.scale, agg.upper / agg.scale
            flagged[col] = uninformative(agg.func, lo, hi, intervals[col])
        entry["intervals"] = intervals
        entry["uninformative"] = flagged
        entry["suppressed"] = release.suppressed[c]
        if release.suppressed[c]:
            entry["note"] = (
                f"suppressed: noisy count below {release.plan.min_group_size} "
                "(the policy's minimum group size)"
            )
        entries.append(entry)
    privacy = answer.privacy
    if privacy is not None:  # the same clamped intervals in both places
        for column in privacy["columns"]:
            column["intervals"] = [e["intervals"][column["column"]] for e in entries]
    total = sum(e["count"] or 0 for e in entries)
    return {
        "k": k if k is not None else total,
        "mode": job.mode,
        "rows": job.rows,
        "treatments": entries,
        "seconds": round(seconds, 3),
        "privacy": privacy,
    }


def _run_knn(
    env: Environment,
    table: str,
    manifest: Mapping[str, Any],
    job: KnnJob,
    query: PatientQuery,
    noise: dict[str, Any] | None,
    signer: Signer,
    *,
    checks: OutputChecks | None = None,
) -> list[int]:
    """Seal the patient's shares to the nodes, run the ``knn`` job, return its outputs
    (``checks``: the output checks the table's policy asks for, declared in the job)."""
    nonce = secrets.token_hex(16)
    sealed = []
    for i, share in enumerate(share_patient(job, query)):
        cert = (env.home / "pki" / f"node-{i + 1}.crt").read_bytes()
        data = np.asarray(share, dtype="<u8").tobytes()
        sealed.append(knn_seal.seal(cert, data, nonce=nonce, party=i))
    inputs = [
        {
            "alias": "t",
            "table": table,
            "parts": job.part_names(),
            "chunks": [c["id"] for c in manifest["chunks"]],
        }
    ]
    params: dict[str, Any] = {"job": job.to_json(), "alias": "t", "nonce": nonce}
    params |= {"patient": sealed, "prime": PRIME}
    params["checks"] = None if checks is None else checks.to_dict()
    values, _metas = run_job(env, "knn", inputs, params, prime=PRIME, signer=signer, noise=noise)
    return [int(v) for v in values]
