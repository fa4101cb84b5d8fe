"""Create an embedded Tessera environment (``tessera init``)."""

from __future__ import annotations

from pathlib import Path

from tessera.config import Environment, NodeConfig, StoreConfig
from tessera.errors import ConfigError, UsageError
from tessera.keys.people import valid_name
from tessera.workflows.nodes_pki import create_pki
from tessera.workflows.people import check_new_passphrase, found_environment

__all__ = ["BASE_PORT", "init_environment"]

BASE_PORT = 47100


def init_environment(
    home: Path,
    *,
    nodes: int = 5,
    threshold: int | None = None,
    founder: str = "owner",
    passphrase: bytes,
) -> Environment:
    """Make ``home`` an embedded environment: ``nodes`` local stores and node entries.

    ``threshold`` (k for vault files) defaults to a majority, ``nodes // 2 + 1``.
    ``founder`` is the first person (steward, officer and researcher); their key and the
    CA key are encrypted under ``passphrase``, and every custodian pins a roster naming
    them.  Refuses to overwrite an existing environment.
    """
    check_new_passphrase(passphrase)
    valid_name(founder)
    if not 2 <= nodes <= 255:
        raise UsageError("--nodes must be between 2 and 255")
    k = threshold if threshold is not None else nodes // 2 + 1
    if not 2 <= k <= nodes:
        raise UsageError(f"--threshold must be between 2 and --nodes ({nodes})")
    home = home.resolve()
    if (home / "tessera.toml").exists():
        raise ConfigError(f"{home} already holds a Tessera environment")
    stores_root = home / "stores"
    stores = []
    for i in range(1, nodes + 1):
        folder = stores_root / f"node-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        stores.append(StoreConfig(i, folder.as_uri()))
    env = Environment(
        home=home,
        name=home.name or "tessera",
        threshold=k,
        stores=stores,
        nodes=[NodeConfig(i, "127.0.0.1", BASE_PORT + i) for i in range(1, nodes + 1)],
        mpc_threshold=(nodes - 1) // 2,
    )
    env.save()
    create_pki(env, passphrase)  # node PKI: CA (encrypted key), node/client certificates
    found_environment(env, founder, passphrase)
    return env
