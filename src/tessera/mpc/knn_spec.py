"""Job spec and plaintext oracle for secure k-nearest-neighbour treatment recommendation.

A :class:`KnnJob` is everything the custodians may know about a recommendation: the row
count, which shared parts enter the computation, the public similarity weights and
bounds, the bit length of distances, the mode (``k`` or ``radius``) — never the
patient, k, the radius or anything about the result.

**Definition** (what the MPC computes, and what :func:`recommend_plain` computes in
numpy as the test oracle):

- distance of record i to patient q:
  ``d_i = sum_j w_j (x_ij - q_j)^2`` over numeric features (values in table units) plus
  ``sum_m w_m [b_im != q_m]`` over binary markers (for 0/1 values that is also
  ``w_m (b_im - q_m)^2``);
- ``k`` mode: the k records that come first in the order (d_i, i) — ascending distance,
  ties broken by the lower row index.  Exactly k records are selected (1 <= k <= rows);
- ``radius`` mode: every record with ``d_i <= radius``;
- per treatment c: ``count_c`` = selected records with treatment c, ``time_sum_c`` =
  their summed time to failure, and (if an event column is given) ``events_c`` = how
  many of them failed.  The clinician computes the mean = time_sum / count.

Pure: numpy only, no MPyC (the party program is :mod:`tessera.mpc.knn`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError

__all__ = [
    "SEC_PARAM",
    "Feature",
    "KnnJob",
    "PatientQuery",
    "PlainResult",
    "distances_plain",
    "recommend_plain",
]

SEC_PARAM = 30  # statistical hiding of masked openings (MPyC's default)
KINDS = ("numeric", "binary")
MODES = ("k", "radius")


@dataclass(frozen=True)
class Feature:
    """One similarity feature: a numeric (``lo..hi`` in table units) or a 0/1 marker."""

    name: str
    kind: str
    weight: int
    lo: int = 0
    hi: int = 1

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise InputError(f"feature {self.name}: kind must be numeric or binary")
        if self.weight < 0:
            raise InputError(f"feature {self.name}: weight must be a non-negative integer")
        if self.kind == "binary" and (self.lo, self.hi) != (0, 1):
            raise InputError(f"feature {self.name}: a binary marker has bounds 0..1")
        if self.lo > self.hi:
            raise InputError(f"feature {self.name}: lo is above hi")

    @property
    def max_term(self) -> int:
        """Largest contribution this feature can make to a distance."""
        return self.weight * (self.hi - self.lo) ** 2


@dataclass(frozen=True)
class KnnJob:
    """Public description of one recommendation job (JSON round-trips)."""

    rows: int
    features: tuple[Feature, ...]
    treatment: str
    treatments: int
    time: str
    event: str | None = None
    mode: str = "k"
    parties: int = 3
    threshold: int = 1
    prime: int = 2**61 - 1
    extra: dict[str, Any] = field(default_factory=dict)
    #: Exact releases: treatments with fewer of the selected patients than this are
    #: suppressed inside the MPC (every cell multiplied by zero; a flag per treatment
    #: says which).  0: no suppression (local mode, DP releases).
    min_group: int = 0

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise InputError("mode must be 'k' or 'radius'")
        if isinstance(self.min_group, bool) or not isinstance(self.min_group, int):
            raise InputError("min_group must be an integer")
        if not 0 <= self.min_group <= self.rows + 1:
            raise InputError("min_group must be between 0 and the table's rows + 1")
        if self.rows < 1:
            raise InputError("the table has no rows")
        if not self.features:
            raise InputError("no similarity features")
        if self.treatments < 1:
            raise InputError("no treatments")
        if not 0 <= self.threshold < self.parties:
            raise InputError("need 0 <= threshold < parties")
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise InputError("duplicate similarity feature")
        if self.distance_bits + SEC_PARAM + 2 > self.prime.bit_length():
            raise InputError(
                f"distances need {self.distance_bits} bits: too many for the field; "
                "lower the weights or coarsen the features"
            )

    @property
    def max_distance(self) -> int:
        """Upper bound of every distance (from the weights and bounds)."""
        return sum(f.max_term for f in self.features)

    @property
    def distance_bits(self) -> int:
        """Bits of a distance; also fits ``max_distance + 1`` (radius mode)."""
        return max(1, (self.max_distance + 1).bit_length())

    @property
    def index_bits(self) -> int:
        """Bits of a row index (the tie-breaking levels)."""
        return max(1, (self.rows - 1).bit_length())

    @property
    def count_bits(self) -> int:
        """Bits of a secure integer that holds counts, k and distances (with a sign)."""
        return max(self.distance_bits, self.rows.bit_length()) + 2

    def part_names(self) -> list[str]:
        """Shared table parts the custodians load, in a fixed order."""
        names: list[str] = []
        for f in self.features:
            names.append(f"{f.name}.val")
            if f.kind == "numeric":
                names.append(f"{f.name}.sq")
        names.append(f"{self.treatment}.oh")
        names.append(f"{self.time}.val")
        if self.event is not None:
            names.append(f"{self.event}.val")
        return names

    def to_json(self) -> str:
        """Canonical JSON."""
        doc = asdict(self)
        doc["features"] = [asdict(f) for f in self.features]
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> KnnJob:
        """Parse :meth:`to_json` output; InputError if malformed."""
        try:
            doc = json.loads(text)
            feats = tuple(Feature(**f) for f in doc.pop("features"))
            return cls(features=feats, **doc)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"malformed recommendation job ({exc.__class__.__name__})") from None


@dataclass(frozen=True)
class PatientQuery:
    """The clinician's secret inputs, as plain integers before sharing.

    ``vector``: ``-2 w_j q_j`` per feature (the cross term's coefficients);
    ``offset``: ``sum_j w_j q_j^2``; ``k`` (k mode) or the bits of ``radius + 1``, least
    significant first (radius mode).  With the shared parts the custodians then compute
    ``d_i = sum_j w_j sq_ij + sum_j vector_j x_ij + offset`` (``sq = x`` for markers).
    """

    vector: tuple[int, ...]
    offset: int
    k: int = 0
    radius_bits: tuple[int, ...] = ()

    @classmethod
    def build(
        cls,
        job: KnnJob,
        patient: Mapping[str, int],
        *,
        k: int | None = None,
        radius: int | None = None,
    ) -> PatientQuery:
        """Check the patient's values against the job's bounds and encode them."""
        if (k is None) == (radius is None):
            raise InputError("give exactly one of k and radius")
        if job.mode != ("k" if k is not None else "radius"):
            raise InputError("the job's mode does not match k/radius")
        q = _patient_vector(job, patient)
        w = np.array([f.weight for f in job.features], dtype=object)
        vector = tuple(int(v) for v in -2 * w * q)
        offset = int(np.sum(w * q * q))
        if k is not None:
            if not 1 <= k <= job.rows:
                raise InputError(f"k must be between 1 and the row count ({job.rows})")
            return cls(vector, offset, k=k)
        assert radius is not None
        if radius < 0:
            raise InputError("radius must be >= 0")
        bound = min(radius, job.max_distance) + 1
        bits = tuple((bound >> b) & 1 for b in range(job.distance_bits))
        return cls(vector, offset, radius_bits=bits)

    def secrets(self) -> list[int]:
        """All secret inputs in the order the party program reads them."""
        return [*self.vector, self.offset, self.k, *self.radius_bits]


def _patient_vector(job: KnnJob, patient: Mapping[str, int]) -> npt.NDArray[np.object_]:
    missing = [f.name for f in job.features if f.name not in patient]
    if missing:
        raise InputError(f"the patient has no value for {', '.join(missing)}")
    q = np.empty(len(job.features), dtype=object)
    for j, f in enumerate(job.features):
        v = patient[f.name]
        if isinstance(v, bool):
            v = int(v)
        if not isinstance(v, int):
            raise InputError(f"patient value {f.name} must be an integer in table units")
        if not f.lo <= v <= f.hi:
            raise InputError(f"patient value {f.name} is outside [{f.lo}, {f.hi}]")
        q[j] = v
    return q


@dataclass(frozen=True)
class PlainResult:
    """Per-treatment aggregates over the selected records."""

    selected: int
    counts: tuple[int, ...]
    time_sums: tuple[int, ...]
    events: tuple[int, ...] | None


def distances_plain(
    values: npt.NDArray[np.int64], weights: Sequence[int], patient: Sequence[int]
) -> npt.NDArray[np.int64]:
    """Weighted squared Euclidean distances of every row (rows x features) to patient."""
    diff = values.astype(np.int64) - np.asarray(patient, dtype=np.int64)[None, :]
    out: npt.NDArray[np.int64] = (diff * diff * np.asarray(weights, dtype=np.int64)).sum(axis=1)
    return out


def recommend_plain(
    values: npt.NDArray[np.int64],
    weights: Sequence[int],
    patient: Sequence[int],
    treatment: npt.NDArray[np.int64],
    time: npt.NDArray[np.int64],
    event: npt.NDArray[np.int64] | None = None,
    *,
    treatments: int,
    k: int | None = None,
    radius: int | None = None,
) -> PlainResult:
    """The oracle: the same definition as the MPC, in the clear (``treatment`` = codes)."""
    d = distances_plain(values, weights, patient)
    n = len(d)
    selected = np.zeros(n, dtype=bool)
    if k is not None:
        order = np.lexsort((np.arange(n), d))  # by distance, then row index
        selected[order[:k]] = True
    elif radius is not None:
        selected = d <= radius
    else:
        raise ValueError("give k or radius")
    codes = treatment[selected]
    counts = np.bincount(codes, minlength=treatments)
    sums = np.bincount(codes, weights=time[selected].astype(np.float64), minlength=treatments)
    events = None
    if event is not None:
        ev = np.bincount(codes, weights=event[selected].astype(np.float64), minlength=treatments)
        events = tuple(int(v) for v in ev)
    return PlainResult(
        int(selected.sum()),
        tuple(int(v) for v in counts),
        tuple(int(v) for v in sums),
        events,
    )
