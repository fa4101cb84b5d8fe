"""The TenSEAL engine (TenSEAL 0.3.18 over Microsoft SEAL; Apache-2.0): imported lazily.

Key sets are SEAL CKKS contexts.  The bundle (public context) holds the public key and
the relinearisation keys, and no Galois keys: a server can add, multiply and relinearise,
but not rotate slots.  The scale is the chain's last middle prime (about 2^40;
2^40 at depth 0), so the first rescale after a multiplication is exact; TenSEAL labels
every rescaled ciphertext with that scale, and :mod:`tessera.he.evaluate` accounts for
the deeper rescales itself.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.errors import InputError, UnsupportedError
from tessera.he.engine import Cipher, as_values
from tessera.he.params import Params

__all__ = ["TenSEALEngine", "keygen", "open_public", "open_secret"]


def _ts() -> Any:
    import tenseal
    import tenseal.sealapi

    return tenseal


def _chain(ctx: Any) -> tuple[int, tuple[int, ...], tuple[int, ...]]:
    """(ring degree, bit sizes with the special prime, data primes) of a context."""
    seal = ctx.seal_context().data
    key = seal.key_context_data().parms()
    bits = tuple(int(q.bit_count()) for q in key.coeff_modulus())
    primes = tuple(int(q.value()) for q in seal.first_context_data().parms().coeff_modulus())
    return int(key.poly_modulus_degree()), bits, primes


def _scale(params: Params, primes: tuple[int, ...]) -> float:
    return float(primes[-1]) if params.depth >= 1 else float(2**params.scale_bits)


def _check_params(ctx: Any, params: Params, what: str) -> tuple[int, ...]:
    degree, bits, primes = _chain(ctx)
    if degree != params.poly_modulus_degree or bits != params.coeff_mod_bits:
        raise InputError(f"the {what} does not match its stated CKKS parameters")
    return primes


def keygen(params: Params) -> tuple[bytes, bytes]:
    """(secret context, public context) of a fresh key set for ``params``."""
    ts = _ts()
    try:
        ctx = ts.context(
            ts.SCHEME_TYPE.CKKS,
            params.poly_modulus_degree,
            coeff_mod_bit_sizes=list(params.coeff_mod_bits),
        )
    except ValueError as exc:  # SEAL refuses parameters below its security level
        raise InputError(f"SEAL refused the parameters: {exc}") from None
    primes = _check_params(ctx, params, "new context")
    ctx.global_scale = _scale(params, primes)
    ctx.auto_relin = True  # carried into the public context, which cannot change it
    ctx.auto_rescale = True
    ctx.auto_mod_switch = True
    secret = ctx.serialize(
        save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=True
    )
    ctx.make_context_public()
    public = ctx.serialize(
        save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=True
    )
    return secret, public


class TenSEALEngine:
    """A :class:`tessera.he.engine.PublicEngine` (and, with a secret key, SecretEngine)."""

    def __init__(self, params: Params, ctx: Any, primes: tuple[int, ...]) -> None:
        self.params = params
        self.primes = primes
        self.scale = _scale(params, primes)
        self._ts = _ts()
        self._ctx = ctx
        if float(ctx.global_scale) != self.scale:
            raise InputError("the key bundle's scale is not the one its parameters imply")

    # -- ciphertexts in and out ----------------------------------------------------------
    def encrypt(self, values: npt.NDArray[np.float64]) -> Cipher:
        array = as_values(values, self.params.slots)
        if array.size < self.params.slots:
            array = np.concatenate([array, np.zeros(self.params.slots - array.size)])
        return self._ts.ckks_vector(self._ctx, array.tolist())

    def load(self, blob: bytes, *, max_polys: int, fresh: bool) -> Cipher:
        try:
            vector = self._ts.ckks_vector_from(self._ctx, blob)
            parts = vector.ciphertext()
            size = int(vector.size())
        except Exception:  # protobuf or SEAL refused the bytes
            raise InputError("not a ciphertext of this key bundle") from None
        if len(parts) != 1 or size != self.params.slots:
            raise InputError("ciphertext does not have this bundle's layout")
        ct = parts[0]
        polys, level = int(ct.size()), int(ct.coeff_modulus_size())
        if not 2 <= polys <= max_polys or not ct.is_ntt_form() or float(ct.scale) != self.scale:
            raise InputError("ciphertext does not have this bundle's layout")
        if fresh and (polys != 2 or level != self.params.depth + 1):
            raise InputError("ciphertext is not a fresh encryption under this bundle")
        return vector

    def dump(self, c: Cipher) -> bytes:
        data: bytes = c.serialize()
        return data

    # -- arithmetic ----------------------------------------------------------------------
    def add(self, a: Cipher, b: Cipher) -> Cipher:
        return a + b

    def add_scalar(self, a: Cipher, value: float) -> Cipher:
        return a + float(value)

    def mul(self, a: Cipher, b: Cipher) -> Cipher:
        self._room(a, b)
        return a * b

    def mul_scalar(self, a: Cipher, value: float) -> Cipher:
        if value == 0.0:
            raise ValueError("multiply by zero by leaving the term out")
        self._room(a)
        return a * float(value)

    def _room(self, *cts: Cipher) -> None:
        if min(self.level(c) for c in cts) < 2:
            raise UnsupportedError(
                "the computation is deeper than the key set's multiplicative depth "
                f"{self.params.depth}"
            )

    def level(self, c: Cipher) -> int:
        return int(c.ciphertext()[0].coeff_modulus_size())

    def polys(self, c: Cipher) -> int:
        return int(c.ciphertext()[0].size())

    def decrypt(self, c: Cipher) -> npt.NDArray[np.float64]:
        if not self._ctx.is_private():
            raise InputError("decrypting needs the secret key")
        return np.asarray(c.decrypt(), dtype=np.float64)


def open_public(params: Params, public_context: bytes) -> TenSEALEngine:
    """The engine of a key bundle: refused if it holds a secret key or looks wrong."""
    ts = _ts()
    try:
        ctx = ts.context_from(public_context)
    except Exception:
        raise InputError("the key bundle's context is damaged") from None
    if ctx.is_private() or ctx.has_secret_key():
        raise InputError("refused: the key bundle holds a secret key")
    if not ctx.has_public_key():
        raise InputError("the key bundle has no public key")
    if not (ctx.auto_relin and ctx.has_relin_keys()) or ctx.has_galois_keys():
        raise InputError(
            "the key bundle must carry relinearisation keys and no rotation (Galois) keys"
        )
    primes = _check_params(ctx, params, "key bundle")
    ctx.auto_rescale = True
    ctx.auto_mod_switch = True
    return TenSEALEngine(params, ctx, primes)


def open_secret(params: Params, secret_context: bytes) -> TenSEALEngine:
    """The engine of the owner's secret context."""
    ts = _ts()
    try:
        ctx = ts.context_from(secret_context)
    except Exception:
        raise InputError("the secret key material is damaged") from None
    if not ctx.is_private():
        raise InputError("the key set holds no secret key")
    primes = _check_params(ctx, params, "key set")
    return TenSEALEngine(params, ctx, primes)
