"""What a client asks an untrusted server to compute, and the models a server holds.

A **job** (``JOB.yaml``; its JSON form travels to the server)::

    kind: variance            # sum | mean | variance | covariance | scores | imaging
    columns: [age, bmi]       # sum .. covariance: these columns (default: all)
    model: readmission        # scores: a model the server holds
    model_digest: sha256:...  # scores, optional: refuse any other version of it
    link: sigmoid             # scores: identity (linear models), sigmoid (logistic, applied
                              # by the client after decryption; the default), polynomial
                              # (the server evaluates SIGMOID_POLY on [-8, 8])

A **model** (a JSON file the server holds; the client reads it to check the answer)::

    {"format": "tessera-he-model", "version": 1, "name": "readmission",
     "kind": "logistic", "features": ["age", "bmi"], "weights": [0.03, 0.05],
     "intercept": -4.1, "description": "..."}

The score of a row is ``intercept + sum(weights[i] * row[features[i]])``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from tessera.errors import InputError

__all__ = [
    "JOB_KINDS",
    "LINKS",
    "SIGMOID_POLY",
    "SIGMOID_POLY_ERROR",
    "SIGMOID_POLY_RANGE",
    "Job",
    "Model",
    "canonical",
]

JOB_KINDS = ("sum", "mean", "variance", "covariance", "scores", "imaging")
LINKS = ("identity", "sigmoid", "polynomial")
#: p(z) = c0 + c1 z + c2 z^2 + c3 z^3: the least-squares cubic fit of the logistic
#: function on [-8, 8] (Kim, Song, Kim, Lee and Cheon, "Secure logistic regression based
#: on homomorphic encryption", BMC Medical Genomics 2018).
SIGMOID_POLY = (0.5, 0.15012, 0.0, -0.001593)
SIGMOID_POLY_RANGE = 8.0
#: max |p(z) - 1 / (1 + exp(-z))| over [-8, 8] (at the ends of the range).
SIGMOID_POLY_ERROR = 0.1144
#: Multiplicative depth of each job's circuit.
DEPTHS = {"sum": 0, "mean": 0, "variance": 1, "covariance": 1, "imaging": 1}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
MAX_FEATURES = 4096


def canonical(doc: Any) -> bytes:
    """The canonical JSON bytes of ``doc`` (sorted keys, no spaces): what digests cover."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def _digest(doc: Any) -> str:
    return "sha256:" + hashlib.sha256(canonical(doc)).hexdigest()


def _names(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InputError(f"{what} must be a list of names")
    if len(set(value)) != len(value) or len(value) > MAX_FEATURES:
        raise InputError(f"{what} names each column once (at most {MAX_FEATURES})")
    return tuple(value)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"{what} must be a finite number")
    return float(value)


@dataclass(frozen=True)
class Model:
    """A linear or logistic model held in plaintext by the server."""

    name: str
    kind: str
    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    description: str = ""

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise InputError("a model name is 1-64 letters, digits, '.', '_' or '-'")
        if self.kind not in ("linear", "logistic"):
            raise InputError("a model's kind is linear or logistic")
        if not self.features or len(self.features) != len(self.weights):
            raise InputError("a model needs one weight per feature")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what the server publishes and the digest covers)."""
        return {
            "format": "tessera-he-model",
            "version": 1,
            "name": self.name,
            "kind": self.kind,
            "features": list(self.features),
            "weights": list(self.weights),
            "intercept": self.intercept,
            "description": self.description,
        }

    @property
    def digest(self) -> str:
        """``sha256:`` of the canonical JSON form."""
        return _digest(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Any) -> Model:
        """Parse a model document; InputError naming the problem."""
        if not isinstance(doc, dict) or doc.get("format") != "tessera-he-model":
            raise InputError("not a Tessera HE model (format tessera-he-model)")
        if doc.get("version") != 1:
            raise InputError("unsupported model version")
        allowed = {"format", "version", "name", "kind", "features", "weights", "intercept"}
        unknown = set(doc) - allowed - {"description"}
        if unknown:
            raise InputError(f"unknown model field {sorted(unknown)[0]!r}")
        weights = doc.get("weights")
        if not isinstance(weights, list):
            raise InputError("weights must be a list of numbers")
        description = doc.get("description", "")
        if not isinstance(description, str) or len(description) > 2000:
            raise InputError("description must be text (at most 2000 characters)")
        return cls(
            name=str(doc.get("name", "")),
            kind=str(doc.get("kind", "")),
            features=_names(doc.get("features"), "features"),
            weights=tuple(_number(w, "a weight") for w in weights),
            intercept=_number(doc.get("intercept"), "intercept"),
            description=description,
        )


@dataclass(frozen=True)
class Job:
    """One computation on one encrypted data set."""

    kind: str
    columns: tuple[str, ...] = ()
    model: str | None = None
    model_digest: str | None = None
    link: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in JOB_KINDS:
            raise InputError(f"job kind must be one of {', '.join(JOB_KINDS)}")
        if self.kind == "scores":
            if self.model is None or not _NAME.match(self.model):
                raise InputError("a scores job names the model the server holds (model: NAME)")
            if self.link is not None and self.link not in LINKS:
                raise InputError(f"link must be one of {', '.join(LINKS)}")
            if self.columns:
                raise InputError("a scores job takes its columns from the model")
        elif self.model is not None or self.link is not None or self.model_digest is not None:
            raise InputError("model, model_digest and link belong to scores jobs")
        if self.kind == "imaging" and self.columns:
            raise InputError("an imaging job takes no columns")
        if self.model_digest is not None and not _DIGEST.match(self.model_digest):
            raise InputError("model_digest must be sha256: and 64 hex digits")

    def link_for(self, model: Model) -> str:
        """The link this job applies to ``model``'s score (checked against its kind)."""
        link = self.link or ("sigmoid" if model.kind == "logistic" else "identity")
        if model.kind == "linear" and link != "identity":
            raise InputError(f"model {model.name} is linear: its scores take no {link} link")
        return link

    @property
    def depth(self) -> int:
        """Multiplicative depth of the job's circuit (scores: 3 with the polynomial)."""
        if self.kind == "scores":
            return 3 if self.link == "polynomial" else 1
        return DEPTHS[self.kind]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form sent to the server (only the fields that are set)."""
        doc: dict[str, Any] = {"kind": self.kind}
        if self.columns:
            doc["columns"] = list(self.columns)
        for key in ("model", "model_digest", "link"):
            if getattr(self, key) is not None:
                doc[key] = getattr(self, key)
        return doc

    @property
    def digest(self) -> str:
        """``sha256:`` of the canonical JSON form."""
        return _digest(self.to_dict())

    @classmethod
    def from_dict(cls, doc: Any) -> Job:
        """Parse a job document (the YAML file's mapping); InputError naming the problem."""
        if not isinstance(doc, dict):
            raise InputError("a job is a mapping with a 'kind'")
        unknown = set(doc) - {"kind", "columns", "model", "model_digest", "link"}
        if unknown:
            raise InputError(f"unknown job field {sorted(unknown)[0]!r}")
        for key in ("kind", "model", "model_digest", "link"):
            if key in doc and not isinstance(doc[key], str):
                raise InputError(f"job field {key} must be text")
        columns = _names(doc["columns"], "columns") if "columns" in doc else ()
        return cls(
            kind=str(doc.get("kind", "")),
            columns=columns,
            model=doc.get("model"),
            model_digest=doc.get("model_digest"),
            link=doc.get("link"),
        )
