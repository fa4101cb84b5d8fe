"""Key management: ML-DSA-65 signatures, ML-KEM-768+X25519 hybrid wrapping, key files.

::

    from tessera import keys
    sk = keys.generate()                       # ML-DSA-65
    sig = sk.sign(b"job", context=b"mpc-job")
    sk.verify_key.verify(b"job", sig, context=b"mpc-job")   # IntegrityError if not
    keys.write_signing_key(path, sk, passphrase=keys.passphrase_from_env())
"""

from __future__ import annotations

from tessera.keys.files import (
    read_signing_key as read_signing_key,
)
from tessera.keys.files import (
    read_verify_key as read_verify_key,
)
from tessera.keys.files import (
    write_signing_key as write_signing_key,
)
from tessera.keys.files import (
    write_verify_key as write_verify_key,
)
from tessera.keys.protect import PASSPHRASE_ENV as PASSPHRASE_ENV
from tessera.keys.protect import passphrase_from_env as passphrase_from_env
from tessera.keys.signing import SigningKey as SigningKey
from tessera.keys.signing import VerifyKey as VerifyKey
from tessera.keys.signing import generate as generate
from tessera.keys.wrapping import WrapPrivateKey as WrapPrivateKey
from tessera.keys.wrapping import WrapPublicKey as WrapPublicKey
from tessera.keys.wrapping import unwrap as unwrap
from tessera.keys.wrapping import wrap as wrap

__all__ = [
    "PASSPHRASE_ENV",
    "SigningKey",
    "VerifyKey",
    "WrapPrivateKey",
    "WrapPublicKey",
    "generate",
    "passphrase_from_env",
    "read_signing_key",
    "read_verify_key",
    "unwrap",
    "wrap",
    "write_signing_key",
    "write_verify_key",
]
