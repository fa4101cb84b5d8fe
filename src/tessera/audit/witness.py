"""Witnessing other logs' signed tree heads (gateway and nodes cross-check each other).

A witness keeps, per origin, the pinned public key and every head it accepted.  A new
head is accepted only if its signature verifies under the pinned key and an RFC 9162
consistency proof shows the previously accepted tree is a prefix of the new one, so a
log that forks, rewrites or shrinks its history is caught by every party that saw it.
Witnessed heads are then passed to :meth:`AuditLog.verify` so truncation is detected
even if the attacker also removed the log's own heads.

Only the largest accepted head is kept per origin (every earlier one is a prefix of it,
as the proofs showed), so the file stays small however often a log is witnessed; updates
are serialised by a lock file, so concurrent witnessing never moves a head backwards.
A witness *co-signs* what it accepted: :func:`cosignature_message` is the text its own
key signs (``tessera-audit-cosignature/v1``, the witness name, then the head's message).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa

from tessera.audit.heads import TreeHead, verify_head
from tessera.core import merkle
from tessera.errors import ChainBrokenError, InputError

Prover = Callable[[int, int], Sequence[bytes]]

__all__ = ["Witness", "cosignature_message", "verify_cosignature"]


def cosignature_message(witness: str, head: TreeHead) -> bytes:
    """The bytes witness ``witness`` signs to co-sign ``head``."""
    return b"tessera-audit-cosignature/v1\n" + witness.encode() + b"\n" + head.message()


def verify_cosignature(witness: str, head: TreeHead, signature: bytes, public_key: bytes) -> bool:
    """True iff ``signature`` is witness ``witness``'s ML-DSA-65 co-signature of ``head``."""
    try:
        key = mldsa.MLDSA65PublicKey.from_public_bytes(public_key)
        key.verify(signature, cosignature_message(witness, head))
    except (InvalidSignature, ValueError):
        return False
    return True


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

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "lock", "a+b") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def observe(self, head: TreeHead, public_key: bytes, proof: Sequence[bytes]) -> TreeHead:
        """Accept ``head`` if it is signed and consistent with the last one; else raise.

        ``proof`` is the consistency proof from :meth:`latest` to ``head`` (empty on
        first sight).  ChainBrokenError names the origin and what does not hold.
        Returns the head now held (``head``, or the held one when it is the same size).
        """
        with self._locked():
            return self._observe(head, public_key, proof)

    def observe_log(
        self, head: TreeHead, public_key: bytes, log_size: int, prove: Prover
    ) -> TreeHead:
        """:meth:`observe` for a witness that reads the log itself: the proof is computed
        under the lock, from whatever head is held by then (``prove(old, new)`` gives the
        proof that tree ``old`` is a prefix of tree ``new``; ``log_size`` bounds it).

        Jobs run concurrently: a job that read the log's head before another job stored
        a newer one brings an older head.  That is fine when the held head provably
        extends it; anything else is refused as :meth:`observe` refuses it.
        """
        with self._locked():
            pinned, heads = self._load(head.origin)
            last = heads[-1] if heads else None
            same_key = pinned is None or pinned == public_key
            if last is None or not same_key or last.size > log_size:
                return self._observe(head, public_key, [])
            if 0 < head.size < last.size:
                older = merkle.verify_consistency(
                    head.size, last.size, head.root, last.root, prove(head.size, last.size)
                )
                if older and verify_head(head, public_key):
                    return last
                return self._observe(head, public_key, [])
            proof = prove(last.size, head.size) if 0 < last.size < head.size else []
            return self._observe(head, public_key, proof)

    def _observe(self, head: TreeHead, public_key: bytes, proof: Sequence[bytes]) -> TreeHead:
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
                return last
        doc = {"public_key": public_key.hex(), "heads": [head.to_json()]}
        tmp = self._path(head.origin).with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(doc) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self._path(head.origin))
        return head
