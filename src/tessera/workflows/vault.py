"""The vault use cases: wire the environment's stores and the owner's keys to the vault.

``tessera init`` calls :func:`init_vault` after creating the environment: the vault
owner is the environment's first person, whose ML-DSA-65 key pair is under ``keys/``;
it writes the ``[vault]`` table::

    [vault]
    write_quorum = 5          # stores that must take a fragment for a put to commit (k+1..n)
    open_timeout_s = 30.0     # how long get waits for a store before using the others
    read_stall_s = 60.0       # a store silent this long (list, read, write) is set aside
    scheme = "shamir"         # default for 'vault put'
    signing_key = "keys/owner.key"
    verify_key = "keys/owner.pub"

The private key is always encrypted (scrypt + AES-256-GCM); the command line asks for
its passphrase on a terminal, scripts give ``$TESSERA_PASSPHRASE``.

Unlocking the key is the command line's authentication: it records a ``login`` event
(DICOM 110114 User Authentication) in the gateway log, outcome ``success`` or
``failure`` (wrong passphrase), with the person's name as the user, the OS user in the
detail, and 127.0.0.1, as :func:`tessera.workflows.people.unlock` does.  Nothing about
the passphrase is recorded; a missing passphrase is no authentication attempt and
records no login.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tessera import keys
from tessera.config import Environment
from tessera.errors import ConfigError, IntegrityError, NotFoundError
from tessera.keys.protect import is_encrypted
from tessera.vault import Store, Vault
from tessera.workflows.people import record_login

__all__ = [
    "init_vault",
    "listing",
    "open_vault",
    "unlock_signing_key",
    "vault_owner",
    "vault_settings",
]

DEFAULTS: dict[str, Any] = {
    "open_timeout_s": 30.0,
    "read_stall_s": 60.0,
    "scheme": "shamir",
    "signing_key": "keys/owner.key",
    "verify_key": "keys/owner.pub",
}


def vault_settings(env: Environment) -> dict[str, Any]:
    """The ``[vault]`` table with defaults filled in."""
    table = env.extra.get("vault", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{env.path}: [vault] must be a table")
    return {**DEFAULTS, "write_quorum": env.n, **table}


def init_vault(env: Environment, *, owner: str = "owner", passphrase: bytes | None = None) -> Path:
    """Write [vault]: the vault owner is the person ``owner`` (their key signs manifests).

    The person's key is reused when it exists (``tessera init`` made it); otherwise one is
    made, encrypted under ``passphrase`` (required then).
    """
    settings = vault_settings(env)
    settings["signing_key"] = f"keys/{owner}.key"
    settings["verify_key"] = f"keys/{owner}.pub"
    private = env.home / str(settings["signing_key"])
    if not private.exists():
        if not passphrase:
            raise ConfigError("the vault owner's key needs a passphrase")
        key = keys.generate()
        keys.write_signing_key(private, key, passphrase=passphrase)
        keys.write_verify_key(env.home / str(settings["verify_key"]), key.verify_key)
    env.extra["vault"] = settings
    env.save()
    return private


def unlock_signing_key(env: Environment, key_name: Path) -> keys.SigningKey:
    """Load the owner's signing key; unlocking an encrypted one is recorded as a login."""
    path = env.home / key_name
    try:
        encrypted = is_encrypted(path.read_bytes())
    except FileNotFoundError:
        raise NotFoundError(f"no signing key at {path}") from None
    passphrase = keys.passphrase_from_env()
    if not encrypted or passphrase is None:  # no credential presented: not a login
        return keys.read_signing_key(path, passphrase=passphrase)
    try:
        signer = keys.read_signing_key(path, passphrase=passphrase)
    except IntegrityError:
        record_login(env, key_name.stem, key_name.as_posix(), "failure")
        raise
    record_login(env, key_name.stem, key_name.as_posix(), "success")
    return signer


def vault_owner(env: Environment) -> str:
    """The person whose key signs the vault's manifests."""
    return Path(str(vault_settings(env)["signing_key"])).stem


def open_vault(
    env: Environment, *, write: bool = False, signer: keys.SigningKey | None = None
) -> Vault:
    """The environment's vault, after crash recovery; ``write`` needs the owner's key
    (``signer``, already unlocked, else unlocked with $TESSERA_PASSPHRASE)."""
    settings = vault_settings(env)
    verify_key = keys.read_verify_key(env.home / str(settings["verify_key"]))
    if write and signer is None:
        signer = unlock_signing_key(env, Path(str(settings["signing_key"])))
    if write and signer is not None and signer.verify_key != verify_key:
        raise ConfigError("the owner's signing key does not match its public key")
    try:
        quorum = int(settings["write_quorum"])
        timeout = float(settings["open_timeout_s"])
        stall = float(settings["read_stall_s"])
    except (TypeError, ValueError):
        raise ConfigError(
            f"{env.path}: [vault] write_quorum/open_timeout_s/read_stall_s invalid"
        ) from None
    if timeout <= 0 or stall <= 0:
        raise ConfigError(f"{env.path}: [vault] timeouts must be positive")
    low = min(env.threshold + 1, env.n)
    if not low <= quorum <= env.n:
        raise ConfigError(f"{env.path}: [vault] write_quorum must be between {low} and {env.n}")
    stores = [Store(s.id, s.url, s.options) for s in sorted(env.stores, key=lambda s: s.id)]
    vault = Vault(
        stores,
        k=env.threshold,
        verifier=verify_key,
        signer=signer,
        state_dir=env.home / "vault",
        write_quorum=quorum,
        open_timeout_s=timeout,
        read_stall_s=stall,
    )
    vault.recover()  # finish or undo what a killed process left behind
    return vault


def listing(vault: Vault) -> list[dict[str, Any]]:
    """The ``vault ls --json`` document: one entry per stored name."""
    return [
        {
            "name": m.name,
            "size": m.size,
            "scheme": m.scheme,
            "k": m.k,
            "n": m.n,
            "created": m.created,
            "generation": m.generation,
        }
        for m in vault.ls()
    ]
