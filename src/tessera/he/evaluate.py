"""The server's side: evaluate a job on an encrypted data set, with exact scale accounting.

Every job is a fixed circuit over the packed ciphertexts (:mod:`tessera.he.packing`):

============  =====================================================  =====  ==========
job           outputs                                                depth  per chunk
============  =====================================================  =====  ==========
sum, mean     ``sum:C`` = sum over chunks of column C                0      no
variance      ``sum:C``, ``prod:C:C`` (sum of squares)               1      no
covariance    ``sum:C`` and ``prod:A:B`` for every pair A <= B       1      no
scores        ``score``: intercept + sum_j w_j x_j (or p(that))      1 / 3  yes
imaging       ``volume`` = voxel volume x mask, ``intensity`` = mask  1      no
              x scaled intensity
============  =====================================================  =====  ==========

Aggregates stay slot-wise (each slot sums its position over the chunks); the client
adds the slots up after decryption, leaving the sentinel positions out.  No rotation is
needed, and the bundle carries no Galois keys.

**Scale accounting.**  The engine labels every rescaled ciphertext with the encoding
scale ``D``, but a rescale by prime ``q`` of a product of true scales ``s1 * s2`` leaves
``s1 * s2 / q``: the decrypted value is off by the *ratio* ``s / D``.  :class:`Evaluator`
tracks that ratio and folds it into the next multiplication by a number, so every output
decrypts to its value exactly (up to CKKS noise).  Model weights are folded with each
column's bounds the same way: the server multiplies the scaled inputs by
``w_j * (hi_j - lo_j)`` and adds ``b + sum_j w_j * lo_j``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tessera.errors import InputError, UnsupportedError
from tessera.he.engine import Cipher, PublicEngine
from tessera.he.jobs import SIGMOID_POLY, SIGMOID_POLY_RANGE, Job, Model
from tessera.he.packing import Stream

__all__ = [
    "EncryptedSet",
    "Evaluator",
    "Output",
    "Tracked",
    "affine_model",
    "evaluate",
    "plan_outputs",
]


@dataclass(frozen=True)
class Output:
    """One output of a job: its name, what it is, the streams it reads, per chunk or not."""

    name: str
    kind: str  # sum | prod | score | volume | intensity
    streams: tuple[int, ...]
    per_chunk: bool = False


@dataclass
class EncryptedSet:
    """A data set as the server holds it: public stream metadata and ciphertexts."""

    kind: str  # table | image
    streams: tuple[Stream, ...]
    chunks: int
    cipher: list[list[Cipher]]  # [stream][chunk]
    voxel_mm3: float | None = None

    def index(self, name: str) -> int:
        """The position of stream ``name``; InputError if the data has no such column."""
        for i, s in enumerate(self.streams):
            if s.name == name:
                return i
        raise InputError(f"the encrypted data has no column {name!r}")


@dataclass(frozen=True)
class Tracked:
    """A ciphertext and its scale ratio (decrypted value = true value x ratio)."""

    cipher: Cipher
    ratio: float = 1.0


class Evaluator:
    """Arithmetic on :class:`Tracked` ciphertexts that keeps every ratio accounted for."""

    def __init__(self, engine: PublicEngine) -> None:
        self.engine = engine
        self.scale = engine.scale
        self.primes = engine.primes

    def _dropped(self, *items: Tracked) -> float:
        """The prime the next rescale of these operands divides by."""
        level = min(self.engine.level(t.cipher) for t in items)
        if level < 2:
            raise UnsupportedError(
                "the job is deeper than the key set's multiplicative depth "
                f"{self.engine.params.depth} (tessera he keygen --depth N)"
            )
        return float(self.primes[level - 1])

    def times(self, a: Tracked, value: float, *, then: float = 1.0) -> Tracked:
        """``value * a`` with ratio ``then`` (1: exact), one level down."""
        gain = a.ratio * self.scale / self._dropped(a)
        return Tracked(self.engine.mul_scalar(a.cipher, value * then / gain), then)

    def product(self, a: Tracked, b: Tracked) -> Tracked:
        """``a * b`` slot-wise, one level down (its ratio is the product's)."""
        gain = a.ratio * b.ratio * self.scale / self._dropped(a, b)
        return Tracked(self.engine.mul(a.cipher, b.cipher), gain)

    def plus(self, a: Tracked, b: Tracked) -> Tracked:
        """``a + b``; both must carry the same ratio."""
        if a.ratio != b.ratio:
            raise ValueError("adding ciphertexts of different scale ratios")
        return Tracked(self.engine.add(a.cipher, b.cipher), a.ratio)

    def plus_constant(self, a: Tracked, value: float) -> Tracked:
        """``a + value``."""
        return Tracked(self.engine.add_scalar(a.cipher, value * a.ratio), a.ratio)

    def total(self, items: Sequence[Tracked]) -> Tracked:
        """The slot-wise sum of ``items``."""
        acc = items[0]
        for item in items[1:]:
            acc = self.plus(acc, item)
        return acc

    def cubic(self, z: Tracked, coefficients: Sequence[float]) -> Tracked:
        """``c0 + c1 z + c3 z^3`` (c2 = 0) in depth 2 on top of ``z``, ratio 1.

        ``c3 z^3`` is ``(c3' z) * (z * z)`` with ``c3'`` chosen so the product decrypts
        to ``c3 z^3`` exactly: its ratio is known before it is computed.
        """
        c0, c1, c2, c3 = coefficients
        if c2 != 0.0 or z.ratio != 1.0:
            raise ValueError("the cubic takes an odd polynomial of an exact input")
        q_first = self._dropped(z)  # what both z*z and c*z divide by
        square = self.product(z, z)
        q_second = self._dropped(square)
        # (k z r1) * (z^2 r2) * D / q_second must equal c3 z^3, with r1 = r2 = D / q_first
        k = c3 * q_first * q_first * q_second / self.scale**3
        cube = Tracked(self.engine.mul(self.engine.mul_scalar(z.cipher, k), square.cipher), 1.0)
        linear = self.times(z, c1)
        return self.plus_constant(self.plus(cube, linear), c0)


def affine_model(model: Model, streams: Sequence[Stream]) -> tuple[dict[int, float], float]:
    """The model on scaled inputs: {stream index: weight} and the intercept.

    ``score = intercept + sum w_j x_j`` with ``x_j = lo_j + (hi_j - lo_j) x'_j`` becomes
    ``(intercept + sum w_j lo_j) + sum (w_j (hi_j - lo_j)) x'_j``.
    """
    names = {s.name: i for i, s in enumerate(streams)}
    missing = [f for f in model.features if f not in names]
    if missing:
        raise InputError(
            f"the encrypted data has no column {missing[0]!r} that model {model.name} needs"
        )
    weights: dict[int, float] = {}
    intercept = model.intercept
    for feature, w in zip(model.features, model.weights, strict=True):
        stream = streams[names[feature]]
        intercept += w * stream.lo
        if w != 0.0 and stream.width != 0.0:
            weights[names[feature]] = w * stream.width
    if not weights:
        raise InputError(f"model {model.name} gives every row the same score")
    return weights, intercept


def score_range(weights: dict[int, float], intercept: float) -> tuple[float, float]:
    """The least and greatest score over the bounds (scaled inputs in [0, 1])."""
    low = intercept + sum(min(w, 0.0) for w in weights.values())
    high = intercept + sum(max(w, 0.0) for w in weights.values())
    return low, high


def plan_outputs(job: Job, data_kind: str, streams: Sequence[Stream]) -> list[Output]:
    """The outputs ``job`` produces, in answer order (the client recomputes the same)."""
    if job.kind == "imaging":
        if data_kind != "image" or [s.name for s in streams] != ["intensity", "mask"]:
            raise InputError("an imaging job needs an encrypted image and mask")
        return [Output("volume", "volume", (1,)), Output("intensity", "intensity", (0, 1))]
    if data_kind != "table":
        raise InputError(f"a {job.kind} job needs an encrypted table, not an image")
    if job.kind == "scores":
        return [Output("score", "score", tuple(range(len(streams))), per_chunk=True)]
    names = [s.name for s in streams]
    chosen = list(job.columns) if job.columns else names
    for name in chosen:
        if name not in names:
            raise InputError(f"the encrypted data has no column {name!r}")
    index = [names.index(n) for n in chosen]
    outputs = [Output(f"sum:{streams[i].name}", "sum", (i,)) for i in index]
    if job.kind == "variance":
        outputs += [
            Output(f"prod:{streams[i].name}:{streams[i].name}", "prod", (i, i)) for i in index
        ]
    if job.kind == "covariance":
        outputs += [
            Output(f"prod:{streams[i].name}:{streams[j].name}", "prod", (i, j))
            for a, i in enumerate(index)
            for j in index[a:]
        ]
    return outputs


def evaluate(
    engine: PublicEngine, data: EncryptedSet, job: Job, model: Model | None = None
) -> list[tuple[Output, list[Cipher]]]:
    """Run ``job`` on ``data``: each output with its ciphertexts (one, or one per chunk)."""
    ev = Evaluator(engine)
    outputs = plan_outputs(job, data.kind, data.streams)
    fresh = [[Tracked(c) for c in column] for column in data.cipher]
    results: list[tuple[Output, list[Cipher]]] = []
    for out in outputs:
        if out.kind == "sum":
            results.append((out, [ev.total(fresh[out.streams[0]]).cipher]))
        elif out.kind in ("prod", "intensity"):
            a, b = out.streams
            products = [ev.product(x, y) for x, y in zip(fresh[a], fresh[b], strict=True)]
            summed = ev.total(products)
            if summed.ratio != 1.0:  # fresh inputs are rescaled by the scale's own prime
                raise ValueError("a product of fresh ciphertexts must decrypt exactly")
            results.append((out, [summed.cipher]))
        elif out.kind == "volume":
            if data.voxel_mm3 is None or not data.voxel_mm3 > 0:
                raise InputError("the encrypted image states no voxel size")
            count = ev.total(fresh[out.streams[0]])
            results.append((out, [ev.times(count, data.voxel_mm3).cipher]))
        else:
            if model is None:
                raise InputError("a scores job needs the model")
            results.append((out, _scores(ev, fresh, data, job, model)))
    return results


def _scores(
    ev: Evaluator, fresh: list[list[Tracked]], data: EncryptedSet, job: Job, model: Model
) -> list[Cipher]:
    weights, intercept = affine_model(model, data.streams)
    link = job.link_for(model)
    if link == "polynomial":
        low, high = score_range(weights, intercept)
        if max(abs(low), abs(high)) > SIGMOID_POLY_RANGE:
            raise InputError(
                f"model {model.name} reaches scores of {low:.3g} to {high:.3g} within the "
                f"columns' bounds; the polynomial sigmoid holds on [-{SIGMOID_POLY_RANGE:g}, "
                f"{SIGMOID_POLY_RANGE:g}] only: use link sigmoid (applied after decryption)"
            )
    out = []
    for c in range(data.chunks):
        terms = [ev.times(fresh[j][c], w) for j, w in sorted(weights.items())]
        z = ev.plus_constant(ev.total(terms), intercept)
        if link == "polynomial":
            z = ev.cubic(z, SIGMOID_POLY)
        out.append(z.cipher)
    return out
