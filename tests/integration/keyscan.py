"""Find private keys stored in the clear under a folder (for the after-demo scans).

A person's key, a job-signing seed or a CA key must never be readable without its
passphrase.  Allowed in the clear: the TLS keys of custodian nodes (``pki/node-*`` of an
embedded environment, ``tls/node.key`` of a federated node made by ``tessera node
init``) and of the requester (transport only; a node runs unattended) and the data
owners' linkage key (a keyed hash key for pseudonyms, not a signing key).  The audit
logs' tree-head signing keys are sealed (``tessera-audit-key``, AES-256-GCM under the
account's unlock key); a bare seed or an unsealed one is reported.  The unlock key
itself belongs to the OS account, not to an environment: it is allowed only where the
account's configuration lives (``.config/tessera/audit-unlock.key``, which the demo
keeps beside its environments).
"""

from __future__ import annotations

import json
from pathlib import Path

TRANSPORT = ("client.key",)


def _allowed(path: Path) -> bool:
    name = path.name
    if path.parent.name == "pki" and (name.startswith("node-") or name in TRANSPORT):
        return True
    if path.parent.name == "tls" and name == "node.key":
        return True
    if name == "audit-unlock.key" and path.parent.name == "tessera":
        return path.parent.parent.name == ".config"
    return name == "linkage.key"


def plain_keys(folder: Path) -> list[str]:
    """Every file under ``folder`` that holds a private key or seed in the clear."""
    found = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        try:
            head = path.read_bytes()[:65536]
        except OSError:
            continue
        problem = None
        if path.suffix == ".seed" or (len(head) == 32 and path.suffix in (".key", ".seed")):
            problem = "a raw 32-byte seed"
        elif b"PRIVATE KEY-----" in head and b"ENCRYPTED PRIVATE KEY" not in head:
            problem = "an unencrypted PEM private key"
        elif b'"tessera-audit-key"' in head:
            try:
                doc = json.loads(head)
            except ValueError:
                doc = {}
            if doc.get("encryption") != "aes256gcm" or "seed" in doc or "key" in doc:
                problem = "an audit signing key that is not sealed"
        elif b'"tessera-key"' in head:
            try:
                doc = json.loads(head)
            except ValueError:
                doc = {}
            if doc.get("encryption") != "scrypt-aes256gcm":
                problem = "a Tessera key file without encryption"
        if problem and not _allowed(path):
            found.append(f"{path.relative_to(folder)}: {problem}")
    return found
