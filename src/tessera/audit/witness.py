"""Witnessing other logs' signed tree heads (gateway and nodes cross-check each other).

A witness keeps, per origin, the pinned public key and every head it accepted.  A new
head is accepted only if its signature verifies under the pinned key and an RFC 9162
consistency proof shows the previously accepted tree is a prefix of the new one, so a
log that forks, rewrites or shrinks its history is caught by every party that saw it.
Witnessed heads are then passed to :meth:`AuditLog.verify` so truncation is detected
even if the attacker also removed the log's own heads.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from tessera.audit.heads import TreeHead, verify_head
from tessera.core import merkle
from tessera.errors import ChainBrokenError, InputError

__all__ = ["Witness"]


def _safe(origin: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in origin)


class Witness:
    """Heads of other logs seen by one party, kept in a folder (one JSON file per origin)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, origin: str) -> Path:
        return self.folder / f"{_safe(origin)}.json"

    def _load(self, origin: str) -> tuple[bytes | None, list[TreeHead]]:
        try:
            doc = json.loads(self._path(origin).read_text(encoding="utf-8"))
            return bytes.fromhex(doc["public_key"]), [TreeHead.from_json(h) for h in doc["heads"]]
        except FileNotFoundError:
            return None, []
        except (KeyError, TypeError, ValueError):
            raise InputError(f"witness file for {origin} is malformed") from None

    def heads(self, origin: str) -> list[TreeHead]:
        """Every head of ``origin`` this witness accepted, oldest first."""
        return self._load(origin)[1]

    def pinned_key(self, origin: str) -> bytes | None:
        """The public key pinned for ``origin`` on first sight."""
        return self._load(origin)[0]

    def latest(self, origin: str) -> TreeHead | None:
        """The newest accepted head of ``origin``."""
        heads = self.heads(origin)
        return heads[-1] if heads else None

    def observe(self, head: TreeHead, public_key: bytes, proof: Sequence[bytes]) -> None:
        """Accept ``head`` if it is signed and consistent with the last one; else raise.

        ``proof`` is the consistency proof from :meth:`latest` to ``head`` (empty on
        first sight).  ChainBrokenError names the origin and what does not hold.
        """
        pinned, heads = self._load(head.origin)
        if pinned is not None and pinned != public_key:
            raise ChainBrokenError(f"log {head.origin} changed its signing key")
        if not verify_head(head, public_key):
            raise ChainBrokenError(f"log {head.origin}: tree head {head.size} has a bad signature")
        if heads:
            last = heads[-1]
            if head.size < last.size:
                raise ChainBrokenError(
                    f"log {head.origin} shrank from {last.size} to {head.size} entries"
                )
            if not merkle.verify_consistency(last.size, head.size, last.root, head.root, proof):
                raise ChainBrokenError(
                    f"log {head.origin}: head {head.size} is not consistent with head {last.size}"
                )
            if head.size == last.size:
                return
        heads.append(head)
        self.folder.mkdir(parents=True, exist_ok=True)
        doc = {"public_key": public_key.hex(), "heads": [h.to_json() for h in heads]}
        tmp = self._path(head.origin).with_suffix(".tmp")
        tmp.write_text(json.dumps(doc) + "\n", encoding="utf-8")
        os.replace(tmp, self._path(head.origin))
