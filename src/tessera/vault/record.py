"""The owner's signed record of the catalogue: what the stores must hold, and since when.

The stores cannot be trusted to say what the vault holds: delete enough of them, or
restore them from an old copy, and their catalogue would describe an empty or older
vault that still verifies.  So the owner keeps, in the environment folder (the vault's
state folder, which no store can touch), ``catalogue.json``::

    {"record": {"format": "tessera-vault-catalogue", "version": 1,
                "generation": 7,            # +1 at every commit that changes the catalogue
                "updated_ns": ...,          # when (the owner's clock)
                "key_id": "...",
                "entries": {"<entry id>": {"name": "...", "digest": "<sha256 of manifest>"}},
                "commitment": "<sha256 over the sorted 'entry id:digest' lines>"},
     "signature": "<base64 ML-DSA-65 signature of the canonical record>"}

signed with the vault's signing key (context ``tessera-vault-catalogue-v1``) and
replaced atomically (temporary file, fsync, rename, fsync of the folder) at every commit
point of put, rm, refresh and repair that changes the catalogue.

:func:`reconcile` holds the catalogue read from the stores against it:

* an entry the record commits to that cannot be read (fewer than k fragments, a
  manifest that does not match) is **lost**: the vault fails closed;
* an entry the record does not know, signed after the record was last written, is a
  commit whose process died before updating the record: it is used, and adopted at the
  next commit;
* an entry the record does not know, signed before the record was last written, was
  removed or replaced since: a restored old copy brought it back; it is ignored (stale),
  and ``vault repair`` deletes it.

Names are kept in the record (the environment folder is the owner's) so that a loss is
reported by name.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tessera.errors import IntegrityError, RecoveryError, TesseraError
from tessera.vault.catalogue import Entry
from tessera.vault.manifest import Manifest, Signer, Verifier, digest

__all__ = [
    "NameTakenError",
    "Reconciled",
    "RecordFile",
    "VaultLostError",
    "lost_error",
    "reconcile",
]

FORMAT = "tessera-vault-catalogue"
CONTEXT = b"tessera-vault-catalogue-v1"


class VaultLostError(RecoveryError):
    """Files the owner's record commits to are gone from the stores (deleted, rolled back)."""

    code = "vault_lost"


class NameTakenError(TesseraError):
    """A put would silently replace an existing file."""

    code = "name_exists"


@dataclass
class CatalogueRecord:
    """The verified content of ``catalogue.json`` (empty when there is none yet)."""

    generation: int = 0
    updated_ns: int = 0
    entries: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (name, digest)
    exists: bool = False


def _commitment(entries: dict[str, tuple[str, str]]) -> str:
    lines = "".join(f"{eid}:{entries[eid][1]}\n" for eid in sorted(entries))
    return hashlib.sha256(lines.encode()).hexdigest()


def _canonical(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class RecordFile:
    """``catalogue.json`` in the vault's state folder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.Lock()

    def load(self, verifier: Verifier) -> CatalogueRecord:
        """The record, signature and commitment checked; IntegrityError if they fail."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return CatalogueRecord()
        bad = IntegrityError(f"the vault's catalogue record {self.path} does not verify")
        try:
            doc = json.loads(raw)
            body = doc["record"]
            signature = base64.b64decode(doc["signature"], validate=True)
            verifier.verify(_canonical(body), signature, context=CONTEXT)
            if body["format"] != FORMAT or body["version"] != 1:
                raise bad
            entries = {
                str(eid): (str(v["name"]), str(v["digest"])) for eid, v in body["entries"].items()
            }
            if _commitment(entries) != body["commitment"]:
                raise bad
            return CatalogueRecord(int(body["generation"]), int(body["updated_ns"]), entries, True)
        except (ValueError, TypeError, KeyError, AttributeError, IntegrityError):
            raise bad from None

    def save(self, record: CatalogueRecord, signer: Signer) -> None:
        """Sign and atomically replace the file (temp, fsync, rename, fsync folder)."""
        body = {
            "format": FORMAT,
            "version": 1,
            "generation": record.generation,
            "updated_ns": record.updated_ns,
            "key_id": signer.key_id,
            "entries": {eid: {"name": n, "digest": d} for eid, (n, d) in record.entries.items()},
            "commitment": _commitment(record.entries),
        }
        signature = signer.sign(_canonical(body), context=CONTEXT)
        data = json.dumps(
            {"record": body, "signature": base64.b64encode(signature).decode()}, indent=1
        ).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)
        folder = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def commit(
        self,
        verifier: Verifier,
        signer: Signer,
        *,
        add: Iterable[Manifest],
        remove: Iterable[str],
    ) -> CatalogueRecord:
        """The next generation: ``add`` in, ``remove`` (entry ids) out; saved.

        One writer at a time (a thread lock and an exclusive lock on ``catalogue.lock``),
        so concurrent commits of one or several processes never lose each other's update.
        """
        with self._thread_lock, self._file_lock():
            record = self.load(verifier)
            entries = dict(record.entries)
            for m in add:
                entries[m.entry_id] = (m.name, digest(m))
            for entry_id in remove:
                entries.pop(entry_id, None)
            updated = max(time.time_ns(), record.updated_ns + 1)
            new = CatalogueRecord(record.generation + 1, updated, entries, True)
            self.save(new, signer)
            return new

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name("catalogue.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


@dataclass
class Reconciled:
    """The catalogue read from the stores, held against the owner's record."""

    visible: list[Entry]  # entries to use (readable ones carry their manifest)
    lost: dict[str, tuple[str, str]]  # entry id -> (name, why)
    pending: list[Manifest]  # committed after the record was written: to adopt
    stale: list[Manifest]  # removed or replaced since: brought back by an old copy


def reconcile(record: CatalogueRecord, entries: Sequence[Entry], *, why: str = "") -> Reconciled:
    """Hold ``entries`` against ``record`` (``why``: the reason when none could be read)."""
    by_id = {e.entry_id: e for e in entries}
    lost: dict[str, tuple[str, str]] = {}
    for entry_id, (name, want) in sorted(record.entries.items()):
        entry = by_id.get(entry_id)
        if entry is None:
            lost[entry_id] = (name, why or "catalogue entry gone from the stores")
        elif entry.manifest is None:
            lost[entry_id] = (name, f"catalogue entry unreadable: {entry.problem}")
        elif digest(entry.manifest) != want:
            lost[entry_id] = (name, "catalogue entry does not match the owner's record")
    visible: list[Entry] = []
    pending: list[Manifest] = []
    stale: list[Manifest] = []
    for entry in entries:
        m = entry.manifest
        if m is None or entry.entry_id in record.entries:
            if entry.entry_id not in lost:
                visible.append(entry)
        elif m.created_ns > record.updated_ns:
            visible.append(entry)
            pending.append(m)
        else:
            stale.append(m)
    return Reconciled(visible, lost, pending, stale)


def lost_error(lost: dict[str, tuple[str, str]]) -> VaultLostError:
    """The one-line refusal for a vault whose committed files are gone."""
    names = sorted({name for name, _ in lost.values()})
    shown = ", ".join(repr(n) for n in names[:5]) + (" …" if len(names) > 5 else "")
    return VaultLostError(
        f"the vault is lost or rolled back: {len(names)} committed file(s) missing from the "
        f"stores ({shown}); run 'tessera vault verify'"
    )
