"""The vault: files kept as k-of-n fragments across independent fsspec stores.

::

    from tessera.vault import Store, Vault, verify
    vault = Vault([Store(i, url) for i, url in enumerate(urls, 1)], k=3,
                  verifier=owner_key.verify_key, signer=owner_key, state_dir=home / "vault")
    vault.put(open("scan.dcm", "rb"), size, "scan.dcm")
    vault.get("scan.dcm", Path("restored.dcm"))

Every read holds the stores' catalogue against the owner's signed record in
``state_dir`` (:mod:`tessera.vault.record`) and fails closed with VaultLostError; a put
of an existing name raises NameTakenError unless ``replace=True``.

Manifests are signed by whatever :class:`~tessera.vault.manifest.Signer` is given
(``tessera.keys.SigningKey`` in practice; ``workflows.vault`` wires them together).
"""

from __future__ import annotations

from tessera.vault.health import refresh as refresh
from tessera.vault.health import repair as repair
from tessera.vault.health import verify as verify
from tessera.vault.manifest import Manifest as Manifest
from tessera.vault.manifest import Signer as Signer
from tessera.vault.manifest import Verifier as Verifier
from tessera.vault.record import NameTakenError as NameTakenError
from tessera.vault.record import VaultLostError as VaultLostError
from tessera.vault.results import GetResult as GetResult
from tessera.vault.results import PutResult as PutResult
from tessera.vault.results import VerifyResult as VerifyResult
from tessera.vault.store import Store as Store
from tessera.vault.vault import Vault as Vault

__all__ = [
    "GetResult",
    "Manifest",
    "NameTakenError",
    "PutResult",
    "Signer",
    "Store",
    "Vault",
    "VaultLostError",
    "Verifier",
    "VerifyResult",
    "refresh",
    "repair",
    "verify",
]
