"""Which Tessera mechanisms fit a data request: a transparent, rule-based decision model.

Input is a :class:`Request` (what data, how many custodians, what output, who receives
it, how far the compute provider is trusted, latency, how many releases, measured
risk).  Every mechanism has one rule function that returns whether it is recommended,
the reasons (each a sentence naming the fact it rests on) and its parameters.  Nothing
is learned or weighted: the rules below are the whole model, and docs/risk.md lists
them.

Mechanisms: ``vault`` (k-of-n fragments at rest), ``secure_sql`` (MPC across
custodians), ``dp_release`` (differentially private statistics, with a suggested
epsilon), ``homomorphic_encryption`` (CKKS on an untrusted server),
``deidentification`` (generalise/suppress to a target k; DICOM PS3.15 for images) and
``synthetic_data``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from tessera.errors import InputError

__all__ = [
    "MECHANISMS",
    "MechanismAdvice",
    "Recommendation",
    "Request",
    "RiskSummary",
    "recommend",
    "risk_level",
]

MECHANISMS = (
    "vault",
    "secure_sql",
    "dp_release",
    "homomorphic_encryption",
    "deidentification",
    "synthetic_data",
)
DATA_TYPES = ("tabular", "imaging", "genomic", "free_text", "time_series")
OUTPUTS = ("none", "aggregate", "model", "record_level")
RECIPIENTS = ("internal", "external", "public")
TRUST = ("trusted", "semi_trusted", "untrusted")
LATENCY = ("interactive", "batch")
SENSITIVITY = ("normal", "high")

# Suggested total epsilon per study by sensitivity; halved for public release.
EPSILON_TOTAL = {"normal": 3.0, "high": 1.0}
# Target k for record-level releases by recipient (El Emam's 0.2/0.09/0.05 thresholds).
TARGET_K = {"internal": 5, "external": 11, "public": 20}
# Risk levels from the highest prosecutor risk and the population uniqueness.
HIGH_RISK = 0.2
MEDIUM_RISK = 0.05
HIGH_UNIQUENESS = 0.01


@dataclass(frozen=True)
class RiskSummary:
    """Measured risk of the data involved (from ``tessera risk assess``)."""

    k_anonymity: int | None = None
    prosecutor_highest: float | None = None
    population_uniqueness: float | None = None
    direct_identifiers: int = 0

    @classmethod
    def from_assessment(cls, doc: Mapping[str, Any]) -> RiskSummary:
        """From the ``risk assess --json`` document (or its ``as_dict``)."""
        pop = doc.get("population_uniqueness")
        return cls(
            k_anonymity=doc.get("k_anonymity"),
            prosecutor_highest=(doc.get("prosecutor") or {}).get("highest"),
            population_uniqueness=None if not pop else pop.get("population_uniqueness"),
            direct_identifiers=len(doc.get("direct_identifiers") or []),
        )


@dataclass(frozen=True)
class Request:
    """A data request as the recommender sees it."""

    name: str = "request"
    data_types: tuple[str, ...] = ("tabular",)
    parties: int = 1
    output: str = "aggregate"
    recipients: str = "internal"
    compute_trust: str = "trusted"
    latency: str = "batch"
    queries: int = 1
    sensitivity: str = "normal"
    target_k: int | None = None
    risk: RiskSummary = field(default_factory=RiskSummary)

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Request:
        """Validate a parsed REQUEST.yaml; unknown keys or values raise InputError."""
        if not isinstance(raw, Mapping):
            raise InputError("the request must be a mapping")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise InputError(f"unknown request field: {unknown[0]}")
        types = raw.get("data_types", ["tabular"])
        if isinstance(types, str):
            types = [types]
        if not isinstance(types, list) or not types:
            raise InputError("data_types must be a non-empty list")
        for t in types:
            _choice("data_types", t, DATA_TYPES)
        risk_raw = raw.get("risk") or {}
        if not isinstance(risk_raw, Mapping):
            raise InputError("risk must be a mapping")
        bad = sorted(set(risk_raw) - set(RiskSummary.__dataclass_fields__))
        if bad:
            raise InputError(f"unknown risk field: {bad[0]}")
        try:
            risk = RiskSummary(**dict(risk_raw))
        except TypeError as exc:
            raise InputError("malformed risk block") from exc
        return cls(
            name=str(raw.get("name", "request")),
            data_types=tuple(str(t) for t in types),
            parties=_int("parties", raw.get("parties", 1), 1),
            output=_choice("output", raw.get("output", "aggregate"), OUTPUTS),
            recipients=_choice("recipients", raw.get("recipients", "internal"), RECIPIENTS),
            compute_trust=_choice("compute_trust", raw.get("compute_trust", "trusted"), TRUST),
            latency=_choice("latency", raw.get("latency", "batch"), LATENCY),
            queries=_int("queries", raw.get("queries", 1), 1),
            sensitivity=_choice("sensitivity", raw.get("sensitivity", "normal"), SENSITIVITY),
            target_k=None if raw.get("target_k") is None else _int("target_k", raw["target_k"], 2),
            risk=risk,
        )


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InputError(f"{name} must be one of {', '.join(allowed)} (got {value!r})")
    return str(value)


def _int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InputError(f"{name} must be an integer >= {low}")
    return value


@dataclass(frozen=True)
class MechanismAdvice:
    """The verdict on one mechanism."""

    mechanism: str
    recommended: bool
    reasons: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Recommendation:
    """All verdicts, the primary mechanism and the risk level they rest on."""

    request: Request
    risk_level: str
    primary: str
    advice: list[MechanismAdvice]

    @property
    def recommended(self) -> list[str]:
        """Names of the recommended mechanisms, primary first."""
        names = [a.mechanism for a in self.advice if a.recommended]
        return sorted(names, key=lambda m: (m != self.primary, MECHANISMS.index(m)))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready recommendation (``risk recommend --json``)."""
        req = asdict(self.request)
        req["data_types"] = list(self.request.data_types)
        return {
            "request": req,
            "risk_level": self.risk_level,
            "primary": self.primary,
            "recommended": self.recommended,
            "mechanisms": [asdict(a) for a in self.advice],
        }


def risk_level(risk: RiskSummary) -> str:
    """high / medium / low / unknown from the measured risk (thresholds in the module)."""
    highest = risk.prosecutor_highest
    if highest is None and risk.k_anonymity:
        highest = 1.0 / risk.k_anonymity
    if highest is None and risk.population_uniqueness is None:
        return "high" if risk.direct_identifiers else "unknown"
    uniq = risk.population_uniqueness or 0.0
    if risk.direct_identifiers or (highest or 0) > HIGH_RISK or uniq > HIGH_UNIQUENESS:
        return "high"
    if (highest or 0) > MEDIUM_RISK or uniq > 0:
        return "medium"
    return "low"


def _vault(r: Request, level: str) -> MechanismAdvice:
    reasons = ["every source file is kept as k-of-n fragments, so no single custodian holds it"]
    if r.output == "none":
        reasons.append("no computation is requested: storing in the vault is all that is needed")
    return MechanismAdvice("vault", True, reasons)


def _tabular(r: Request) -> bool:
    return "tabular" in r.data_types or "time_series" in r.data_types


def _secure_sql(r: Request, level: str) -> MechanismAdvice:
    reasons: list[str] = []
    if r.output not in ("aggregate", "model"):
        return MechanismAdvice("secure_sql", False, [f"output is {r.output}, not statistics"])
    if not _tabular(r):
        return MechanismAdvice("secure_sql", False, ["secure SQL works on tables only"])
    ok = r.parties >= 2 or r.compute_trust != "trusted"
    if r.parties >= 2:
        reasons.append(f"{r.parties} custodians must compute jointly without pooling their data")
    elif r.compute_trust != "trusted":
        reasons.append("no single trusted party may see the data; custodians compute on shares")
    else:
        reasons.append("a single trusted custodian can compute in the clear")
    if ok and r.latency == "interactive":
        reasons.append("note: MPC answers take seconds to minutes, not milliseconds")
    return MechanismAdvice("secure_sql", ok, reasons)


def suggest_epsilon(r: Request) -> tuple[float, float]:
    """(total epsilon for the study, epsilon per release)."""
    total = EPSILON_TOTAL[r.sensitivity] * (0.5 if r.recipients == "public" else 1.0)
    return total, total / r.queries


def _dp(r: Request, level: str) -> MechanismAdvice:
    if r.output not in ("aggregate", "model"):
        return MechanismAdvice("dp_release", False, [f"output is {r.output}, not statistics"])
    reasons = []
    ok = r.recipients != "internal" or level == "high" or r.sensitivity == "high"
    if r.recipients != "internal":
        reasons.append(f"results leave the environment ({r.recipients} recipients)")
    if level == "high":
        reasons.append("the measured re-identification risk is high")
    if r.sensitivity == "high":
        reasons.append("the data is of high sensitivity")
    if not ok:
        reasons.append("internal recipients and low risk: exact statistics are acceptable")
    total, per = suggest_epsilon(r)
    params = {"epsilon_total": total, "epsilon_per_release": per, "releases": r.queries}
    if ok:
        reasons.append(
            f"suggested epsilon {total:g} in total ({r.sensitivity} sensitivity"
            + (", halved for public release" if r.recipients == "public" else "")
            + f"), {per:.3g} for each of {r.queries} release(s)"
        )
    return MechanismAdvice("dp_release", ok, reasons, params if ok else {})


def _he(r: Request, level: str) -> MechanismAdvice:
    if r.output not in ("aggregate", "model"):
        return MechanismAdvice(
            "homomorphic_encryption", False, [f"output is {r.output}, not computed values"]
        )
    if r.compute_trust != "untrusted":
        return MechanismAdvice(
            "homomorphic_encryption", False, ["the compute provider is trusted enough"]
        )
    if r.parties >= 2:
        return MechanismAdvice(
            "homomorphic_encryption",
            False,
            ["several custodians: secure SQL across them avoids one key holder"],
        )
    if not _tabular(r):
        return MechanismAdvice(
            "homomorphic_encryption", False, ["CKKS here computes on numeric tables only"]
        )
    reasons = ["one data owner and an untrusted server: CKKS lets the server compute blind"]
    if r.latency == "interactive":
        reasons.append("sums, means and linear scores return in well under a second")
    return MechanismAdvice("homomorphic_encryption", True, reasons, {"scheme": "CKKS"})


def _target_k(r: Request) -> int:
    return r.target_k or TARGET_K[r.recipients]


def _deid(r: Request, level: str) -> MechanismAdvice:
    if r.output != "record_level":
        return MechanismAdvice("deidentification", False, [f"output is {r.output}, not records"])
    if "genomic" in r.data_types:
        return MechanismAdvice(
            "deidentification",
            False,
            ["genomes identify their owner; no generalisation fixes that"],
        )
    target = _target_k(r)
    reasons = [f"record-level output for {r.recipients} recipients: target k = {target}"]
    params: dict[str, Any] = {"target_k": target}
    measured = r.risk.k_anonymity
    if measured is not None:
        if measured < target:
            reasons.append(f"the data is {measured}-anonymous: generalise/suppress to k = {target}")
        else:
            reasons.append(f"the data is already {measured}-anonymous")
    if r.risk.direct_identifiers:
        reasons.append(f"remove {r.risk.direct_identifiers} direct identifier column(s) first")
    if "imaging" in r.data_types:
        reasons.append("images: DICOM PS3.15 de-identification (tessera dicom deidentify)")
    ok = not (r.recipients == "public" and r.sensitivity == "high")
    if not ok:
        reasons.append("public release of high-sensitivity records: prefer synthetic data")
    return MechanismAdvice("deidentification", ok, reasons, params)


def _synthetic(r: Request, level: str) -> MechanismAdvice:
    if r.output != "record_level":
        return MechanismAdvice("synthetic_data", False, [f"output is {r.output}, not records"])
    reasons = []
    if r.recipients == "public":
        reasons.append("records are to be published")
    if r.sensitivity == "high":
        reasons.append("the data is of high sensitivity")
    if "genomic" in r.data_types:
        reasons.append("real genomes cannot be de-identified")
    if level == "high":
        reasons.append("the measured re-identification risk is high")
    ok = bool(reasons)
    if ok:
        reasons.append("confirm findings on the real data with secure SQL")
    else:
        reasons.append("de-identified records keep more utility at this risk")
    return MechanismAdvice("synthetic_data", ok, reasons)


_RULES: dict[str, Callable[[Request, str], MechanismAdvice]] = {
    "vault": _vault,
    "secure_sql": _secure_sql,
    "dp_release": _dp,
    "homomorphic_encryption": _he,
    "deidentification": _deid,
    "synthetic_data": _synthetic,
}

# Which recommended mechanism answers the request, by output kind, in order of preference.
_PRIMARY = {
    "none": ("vault",),
    "aggregate": ("secure_sql", "homomorphic_encryption", "dp_release", "vault"),
    "model": ("secure_sql", "homomorphic_encryption", "dp_release", "vault"),
    "record_level": ("deidentification", "synthetic_data", "vault"),
}


def recommend(request: Request | Mapping[str, Any]) -> Recommendation:
    """Apply every rule to ``request``; the primary mechanism answers it."""
    r = request if isinstance(request, Request) else Request.from_mapping(request)
    level = risk_level(r.risk)
    advice = [_RULES[m](r, level) for m in MECHANISMS]
    chosen = {a.mechanism for a in advice if a.recommended}
    order = list(_PRIMARY[r.output])
    if r.parties == 1 and "homomorphic_encryption" in order:
        # one owner: encrypting for the server beats sharing among custodians
        order.remove("homomorphic_encryption")
        order.insert(0, "homomorphic_encryption")
    primary = next(m for m in order if m in chosen)
    return Recommendation(r, level, primary, advice)
