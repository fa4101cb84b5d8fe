"""A consortium client's table catalogue, read from the custodians.

Each custodian keeps the manifest of every table it holds shares of (its own party
number in it); a client machine that did not import a table itself learns it from them:
:func:`sync_catalog` keeps every manifest that a majority of the custodians hold
identically (party number aside) and writes it to ``HOME/tables``.  Only consortium
clients need it; on an embedded environment the importer's catalogue is the catalogue.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from tessera.config import Environment
from tessera.errors import StorageUnavailableError, TesseraError
from tessera.tables.store import Catalog

__all__ = ["sync_catalog"]


def sync_catalog(env: Environment) -> list[str]:
    """Refresh a consortium client's catalogue from the custodians; the tables written.

    Does nothing on an embedded environment; StorageUnavailableError when fewer than a
    majority of the custodians answer (naming why).
    """
    if "consortium" not in env.extra:
        return []
    from tessera.workflows.nodes import NodeClient

    held: dict[str, Counter[str]] = {}
    answered = 0
    errors: list[str] = []
    for node in env.nodes:
        client = NodeClient(env, node.id, node.host, node.port)
        try:
            manifests: list[dict[str, Any]] = client.request("GET", "/v1/tables")
        except TesseraError as exc:
            errors.append(str(exc))
            continue
        finally:
            client.close()
        answered += 1
        for manifest in manifests:
            if isinstance(manifest, dict) and isinstance(manifest.get("name"), str):
                plain = {k: v for k, v in manifest.items() if k != "party"}
                held.setdefault(manifest["name"], Counter())[json.dumps(plain, sort_keys=True)] += 1
    majority = env.n // 2 + 1
    if answered < majority:
        raise StorageUnavailableError(
            f"only {answered} of {env.n} custodians answer ({'; '.join(errors)[:300]})"
        )
    catalog = Catalog(env.home)
    written = []
    for name, versions in sorted(held.items()):
        text, count = versions.most_common(1)[0]
        if count < majority:
            continue
        manifest = json.loads(text)
        if catalog.exists(name) and catalog.get(name) == manifest:
            continue
        catalog.put(name, manifest)
        written.append(name)
    return written
