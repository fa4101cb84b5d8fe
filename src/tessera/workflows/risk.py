"""Risk use cases: assess a CSV, anonymise it, recommend mechanisms for a request.

These glue files (CSV, YAML) to :mod:`tessera.risk`; the approval workflow calls
:func:`recommend_for_request` with the request it is deciding on and, when it has one,
the risk assessment of the data involved.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tessera.errors import InputError
from tessera.risk import (
    AnonymizationResult,
    Criteria,
    Recommendation,
    Request,
    RiskReport,
    RiskSummary,
    anonymize,
    assess,
    parse_hierarchies,
    read_csv,
    recommend,
)
from tessera.risk.tables import write_csv

__all__ = [
    "anonymize_csv",
    "assess_csv",
    "load_mapping",
    "recommend_file",
    "recommend_for_request",
]


def load_mapping(path: str | Path, what: str) -> Any:
    """Parse a YAML (or JSON) file; malformed content raises InputError."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"no such {what} file: {p}")
    try:
        text = p.read_text(encoding="utf-8")
        return json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{p.name} is not a valid {what} file ({type(exc).__name__})") from exc


def assess_csv(
    path: str | Path,
    qi: Sequence[str],
    sensitive: str | None = None,
    *,
    population: int | None = None,
    population_table: str | Path | None = None,
    threshold: float = 0.2,
    recursive_l: int | None = None,
    worst: int = 5,
) -> RiskReport:
    """Read ``path`` and :func:`tessera.risk.assess` it."""
    df = read_csv(path)
    pop = read_csv(population_table) if population_table is not None else None
    return assess(
        df,
        qi,
        sensitive,
        population=population,
        population_table=pop,
        threshold=threshold,
        recursive_l=recursive_l,
        worst=worst,
    )


def anonymize_csv(
    path: str | Path,
    qi: Sequence[str],
    criteria: Criteria,
    hierarchies: str | Path,
    *,
    sensitive: str | None = None,
    out: str | Path | None = None,
    max_nodes: int = 5000,
    drop: Sequence[str] = (),
) -> AnonymizationResult:
    """Anonymise the CSV at ``path`` with the hierarchies file; write ``out`` atomically.

    ``drop`` names columns (direct identifiers) removed from the output altogether.
    """
    spec = parse_hierarchies(load_mapping(hierarchies, "hierarchies"))
    text = [c for c, h in spec.items() if h.kind in ("prefix", "category")]
    df = read_csv(path, text_columns=text)
    unknown = [c for c in drop if c not in df.columns]
    if unknown:
        raise InputError(f"unknown column(s) to drop: {', '.join(unknown)}")
    clash = [c for c in drop if c in qi or c == sensitive]
    if clash:
        raise InputError(f"cannot drop {clash[0]}: it is a quasi-identifier or sensitive")
    df = df.drop(list(drop))
    result = anonymize(df, qi, criteria, spec, sensitive=sensitive, max_nodes=max_nodes)
    if out is not None:
        write_csv(result.data, out)
    return result


def recommend_for_request(
    request: Request | Mapping[str, Any], assessment: RiskReport | Mapping[str, Any] | None = None
) -> Recommendation:
    """Recommend mechanisms for ``request``, using ``assessment`` as its measured risk."""
    req = request if isinstance(request, Request) else Request.from_mapping(request)
    if assessment is not None:
        doc = assessment.as_dict() if isinstance(assessment, RiskReport) else assessment
        req = Request(**{**req.__dict__, "risk": RiskSummary.from_assessment(doc)})
    return recommend(req)


def recommend_file(path: str | Path, *, data: str | Path | None = None) -> Recommendation:
    """Recommend for the REQUEST.yaml at ``path``.

    The request may name the data (``assess: {csv: ..., qi: [...], sensitive: ...,
    population: N}``, a path relative to the request file); then it is assessed first
    and the measured risk replaces any ``risk`` block.
    """
    raw = load_mapping(path, "request")
    if not isinstance(raw, Mapping):
        raise InputError("the request must be a mapping")
    raw = dict(raw)
    spec = raw.pop("assess", None)
    assessment: RiskReport | None = None
    if data is not None and spec is None:
        raise InputError("--data needs an 'assess' block in the request naming the columns")
    if spec is not None:
        if not isinstance(spec, Mapping) or "csv" not in spec or "qi" not in spec:
            raise InputError("assess must be a mapping with 'csv' and 'qi'")
        csv = Path(str(spec["csv"]))
        if not csv.is_absolute():
            csv = Path(path).parent / csv
        qi = spec["qi"]
        if not isinstance(qi, list) or not qi:
            raise InputError("assess.qi must be a non-empty list of columns")
        population = spec.get("population")
        if population is not None and (not isinstance(population, int) or population < 1):
            raise InputError("assess.population must be a positive integer")
        assessment = assess_csv(
            data or csv, [str(c) for c in qi], spec.get("sensitive"), population=population
        )
    return recommend_for_request(Request.from_mapping(raw), assessment)
