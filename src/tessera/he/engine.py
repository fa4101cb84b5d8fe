"""The engine interface: what Tessera asks of a CKKS library, loaded lazily.

Everything else in :mod:`tessera.he` talks to an engine through :class:`PublicEngine`
(what anyone holding a key bundle can do: encrypt, load, add, multiply) and
:class:`SecretEngine` (the owner's: decrypt).  The default engine wraps TenSEAL 0.3.18
(Microsoft SEAL 3.x, Apache-2.0), imported only when first used; another engine, for
example one that runs on a GPU, plugs in with :func:`register_engine` and is chosen per
key set (its name is recorded in the key bundle).  Nothing requires a GPU.

Engines compute on ciphertexts of ``params.slots`` values.  Every multiplication
(ciphertext by ciphertext, or by a number) consumes one level of the modulus chain and
is rescaled and relinearised (the bundle carries relinearisation keys, never rotation
keys), so every ciphertext has two polynomials.
An engine reports, for the evaluator's bookkeeping, the scale its encodings use
(:attr:`PublicEngine.scale`) and the primes of the chain (:attr:`PublicEngine.primes`):
after a rescale by prime ``q`` a ciphertext whose true scale is ``s`` is labelled with
``scale`` but holds ``s / q`` (see :mod:`tessera.he.evaluate`).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tessera.errors import EngineUnavailableError, InputError
from tessera.he.params import Params

__all__ = [
    "DEFAULT_ENGINE",
    "Cipher",
    "KeyMaterial",
    "PublicEngine",
    "SecretEngine",
    "engine_names",
    "keygen",
    "open_public",
    "open_secret",
    "register_engine",
]

DEFAULT_ENGINE = "tenseal"
#: An engine's ciphertext handle (opaque outside the engine).
Cipher = Any

_ENGINES: dict[str, str] = {DEFAULT_ENGINE: "tessera.he._tenseal"}


@dataclass(frozen=True)
class KeyMaterial:
    """A fresh key set: the secret context (secret key included) and the public one."""

    engine: str
    params: Params
    secret_context: bytes
    public_context: bytes


class PublicEngine(Protocol):
    """Operations under a public key bundle (no secret key)."""

    params: Params
    #: The scale values are encoded at (the last middle prime, so one rescale is exact).
    scale: float
    #: The data primes q0 .. qd of the chain (special prime excluded), in chain order.
    primes: tuple[int, ...]

    def encrypt(self, values: npt.NDArray[np.float64]) -> Cipher:
        """One fresh ciphertext of at most ``params.slots`` values."""

    def load(self, blob: bytes, *, max_polys: int, fresh: bool) -> Cipher:
        """A ciphertext from its bytes; InputError unless it is valid for this bundle,
        has at most ``max_polys`` polynomials, holds ``params.slots`` values and (with
        ``fresh``) sits at the top of the chain at the encoding scale."""

    def dump(self, c: Cipher) -> bytes:
        """The ciphertext's bytes."""

    def add(self, a: Cipher, b: Cipher) -> Cipher:
        """a + b (the deeper level wins)."""

    def add_scalar(self, a: Cipher, value: float) -> Cipher:
        """a + value in every slot."""

    def mul(self, a: Cipher, b: Cipher) -> Cipher:
        """a * b slot-wise, relinearised and rescaled (one level)."""

    def mul_scalar(self, a: Cipher, value: float) -> Cipher:
        """a * value, rescaled (one level)."""

    def level(self, c: Cipher) -> int:
        """How many data primes the ciphertext still has (``depth + 1`` when fresh)."""

    def polys(self, c: Cipher) -> int:
        """How many polynomials the ciphertext has (2 after relinearisation)."""


class SecretEngine(PublicEngine, Protocol):
    """Operations under the secret key."""

    def decrypt(self, c: Cipher) -> npt.NDArray[np.float64]:
        """The ``params.slots`` values (float64)."""


def register_engine(name: str, module: str) -> None:
    """Make ``module`` (exposing ``keygen``, ``open_public``, ``open_secret``) engine ``name``."""
    if not name.isidentifier():
        raise ValueError("engine names are identifiers")
    _ENGINES[name] = module


def engine_names() -> list[str]:
    """The registered engine names."""
    return sorted(_ENGINES)


def _module(name: str) -> Any:
    path = _ENGINES.get(name)
    if path is None:
        raise InputError(f"unknown HE engine {name!r} (known: {', '.join(engine_names())})")
    try:
        return importlib.import_module(path)
    except ImportError:
        raise EngineUnavailableError(
            f"the {name} HE engine is not installed (pip install 'tessera[he]')"
        ) from None


def keygen(params: Params, *, engine: str = DEFAULT_ENGINE) -> KeyMaterial:
    """A new key set for ``params`` (the secret key from the OS's randomness)."""
    secret, public = _module(engine).keygen(params)
    return KeyMaterial(engine, params, secret, public)


def open_public(engine: str, params: Params, public_context: bytes) -> PublicEngine:
    """An engine bound to a public bundle; InputError if it holds a secret key or does
    not match ``params``."""
    opened: PublicEngine = _module(engine).open_public(params, public_context)
    return opened


def open_secret(engine: str, params: Params, secret_context: bytes) -> SecretEngine:
    """An engine bound to the owner's secret context."""
    opened: SecretEngine = _module(engine).open_secret(params, secret_context)
    return opened


def as_values(values: Sequence[float] | npt.NDArray[Any], slots: int) -> npt.NDArray[np.float64]:
    """``values`` as float64, checked finite and at most ``slots`` long."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or not 0 < array.size <= slots:
        raise ValueError(f"a ciphertext holds 1 to {slots} values")
    if not np.all(np.isfinite(array)):
        raise ValueError("only finite values can be encrypted")
    return array
