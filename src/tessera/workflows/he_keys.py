"""Back up an HE key set in the vault, k-of-n, and restore it: ``tessera he key backup``.

The vault keeps ``he-keys/NAME.hekey``: the key set file exactly as on disk, that is still
sealed under its owner's key, split into the vault's k-of-n fragments across its stores
(fewer than k stores learn nothing about it, not even its sealed bytes).  Restoring needs
k stores *and* the owner's key: the restored file is opened with it before it is
written, so a damaged or foreign copy is never put in place.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera import keys
from tessera.config import Environment
from tessera.errors import ConfigError, InputError
from tessera.he.files import Bundle, KeySetFile
from tessera.vault import Vault
from tessera.workflows.he import bundle_path, keyset_path, unlock_keyset, write_atomic
from tessera.workflows.people import Signer
from tessera.workflows.vault import open_vault

__all__ = ["VAULT_PREFIX", "KeyBackup", "backup_keyset", "restore_keyset", "vault_name"]

VAULT_PREFIX = "he-keys/"


def vault_name(name: str) -> str:
    """The key set's name in the vault."""
    return f"{VAULT_PREFIX}{name}.hekey"


@dataclass(frozen=True)
class KeyBackup:
    """Where a key set went (or came from)."""

    name: str
    vault_name: str
    size: int
    k: int
    n: int
    bundle_digest: str

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document."""
        return {
            "name": self.name,
            "vault_name": self.vault_name,
            "bytes": self.size,
            "k": self.k,
            "n": self.n,
            "bundle_digest": self.bundle_digest,
        }


def backup_keyset(env: Environment, name: str, vault_signer: keys.SigningKey) -> KeyBackup:
    """Put ``HOME/he/NAME.hekey`` into the vault (replacing an older backup of it)."""
    path = keyset_path(env, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"no key set {name} in {path.parent}") from None
    keyset = KeySetFile.from_bytes(data, what=str(path))
    vault = open_vault(env, write=True, signer=vault_signer)
    result = vault.put(io.BytesIO(data), len(data), vault_name(name), replace=True)
    return KeyBackup(name, vault_name(name), len(data), result.k, result.n, keyset.bundle_digest)


def restore_keyset(
    env: Environment, name: str, owner: Signer, *, force: bool = False, vault: Vault | None = None
) -> KeyBackup:
    """Restore key set ``name`` from the vault; it must open with ``owner``'s key.

    An existing key set of that name is replaced only with ``force`` (or when it is the
    same file).
    """
    vault = vault or open_vault(env)
    stored = vault_name(name)
    manifest = vault.lookup(stored)
    with tempfile.TemporaryDirectory(prefix="tessera-he-") as scratch:
        out = Path(scratch) / "keyset"
        vault.get(stored, out, manifest=manifest)
        data = out.read_bytes()
    keyset = KeySetFile.from_bytes(data, what=f"vault copy of {name}")
    if keyset.name != name:
        raise InputError(f"the vault's {stored} holds key set {keyset.name}, not {name}")
    secret = unlock_keyset(keyset, owner)  # opens only with the owner's key: nothing else
    target = keyset_path(env, name)
    if target.exists() and target.read_bytes() != data and not force:
        raise ConfigError(f"{target} exists and differs; --force replaces it")
    write_atomic(target, data, mode=0o600)
    write_atomic(bundle_path(env, name), Bundle.from_bytes(secret.bundle).to_bytes())
    return KeyBackup(name, stored, len(data), manifest.k, manifest.n, keyset.bundle_digest)
