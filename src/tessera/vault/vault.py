"""The vault: named files kept as k-of-n fragments on n independent stores.

Store ``i`` (1-based, as in the configuration) always holds fragment index ``i``.

Put is atomic.  Fragments stream into ``tmp/`` on all stores at once; when at least
``write_quorum`` stores (default n, never below k+1) have their fragment, they are
renamed into ``data/`` and the signed manifest (which commits to the fragments' tag
lists, :mod:`.tags`) is secret-shared into ``catalog/`` in the same way.  The catalogue
entry is the commit point: until k of its fragments are in place the new version is
invisible and the old one (if any) is untouched; afterwards the owner's signed record
(:mod:`.record`) takes the new version in and the older ones out, and only then are they
deleted.  A put of an existing name is refused unless ``replace``.  A crash journal in
the environment folder lets the next command finish or undo an operation whose process
died.

Every read holds the catalogue against the owner's record and fails closed: files the
record commits to that the stores lost (deleted, or restored from an old copy) make
``ls``/``get`` raise VaultLostError instead of answering with an emptier vault.  Reading
never creates store folders.  Get itself is in :mod:`.restore`.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast

from tessera.core.fragment import FragmentHeader, split_stream
from tessera.core.rng import RandomSource
from tessera.errors import (
    NotFoundError,
    StorageUnavailableError,
    TesseraError,
)
from tessera.vault import catalogue
from tessera.vault.journal import Journal, Record
from tessera.vault.manifest import Manifest, Signer, Verifier, encode
from tessera.vault.record import (
    CatalogueRecord,
    NameTakenError,
    Reconciled,
    RecordFile,
    lost_error,
    reconcile,
)
from tessera.vault.restore import restore
from tessera.vault.results import GetResult, PutResult, RmResult
from tessera.vault.store import Store
from tessera.vault.tags import TagTap
from tessera.vault.transfer import StoreWriter, on_each

__all__ = ["SCHEMES", "Vault"]

SCHEMES = ("shamir", "ssms")
Progress = Callable[[int], None]


class Vault:
    """Named files on ``stores``; ``signer`` is needed only to write (put, rm, refresh)."""

    def __init__(
        self,
        stores: Sequence[Store],
        *,
        k: int,
        verifier: Verifier,
        signer: Signer | None = None,
        state_dir: Path | None = None,
        write_quorum: int | None = None,
        open_timeout_s: float = 30.0,
        read_stall_s: float = 60.0,
        rng: RandomSource | None = None,
    ) -> None:
        self.stores = list(stores)
        self.n = len(self.stores)
        if [s.id for s in self.stores] != list(range(1, self.n + 1)):
            raise ValueError("stores must be given in id order 1..n")
        if not 2 <= k <= self.n <= 255:
            raise ValueError("need 2 <= k <= n <= 255")
        self.k = k
        quorum = self.n if write_quorum is None else write_quorum
        if not min(k + 1, self.n) <= quorum <= self.n:
            raise ValueError(f"write quorum must be between {min(k + 1, self.n)} and {self.n}")
        self.write_quorum = quorum
        self.verifier = verifier
        self.signer = signer
        self.journal = Journal(state_dir / "journal") if state_dir is not None else None
        self.record = RecordFile(state_dir / "catalogue.json") if state_dir is not None else None
        self.open_timeout_s = open_timeout_s
        self.read_stall_s = read_stall_s
        self.rng = rng
        # Catalogue entries never change once written: each is read and checked once.
        self._manifests: dict[str, Manifest] = {}
        self._cache_lock = threading.Lock()

    # -- catalogue -------------------------------------------------------------------
    def owner_record(self) -> CatalogueRecord:
        """The owner's signed record of the catalogue (empty if none was written yet)."""
        return self.record.load(self.verifier) if self.record is not None else CatalogueRecord()

    def too_few(self, listing: catalogue.Listing) -> StorageUnavailableError | None:
        """The error when fewer than k stores could be listed."""
        if len(listing.unreachable) <= self.n - self.k:
            return None
        return StorageUnavailableError(
            f"only {self.n - len(listing.unreachable)} of {self.n} stores reachable, "
            f"need {self.k}: {'; '.join(listing.unreachable.values())}"
        )

    def survey(self) -> tuple[Reconciled, catalogue.Listing]:
        """The catalogue held against the owner's record; never raises for a lost vault."""
        record = self.owner_record()
        listing = catalogue.scan(self.stores, timeout_s=self.read_stall_s)
        too_few = self.too_few(listing)
        if too_few is not None:
            return reconcile(record, [], why=str(too_few)), listing
        with self._cache_lock:
            cache = dict(self._manifests)
        entries = catalogue.read_entries(
            self.stores,
            listing,
            self.verifier,
            k_hint=self.k,
            cache=cache,
            timeout_s=self.read_stall_s,
        )
        with self._cache_lock:
            self._manifests.update(cache)
        return reconcile(record, entries), listing

    def entries(self) -> tuple[list[catalogue.Entry], catalogue.Listing]:
        """Every usable catalogue entry (readable or not) and which stores were listed.

        Fails closed: StorageUnavailableError if fewer than k stores answer, VaultLostError
        if an entry the owner's record commits to is gone (deleted or rolled back stores).
        """
        found, listing = self.survey()
        too_few = self.too_few(listing)
        if too_few is not None:
            raise too_few
        if found.lost:
            raise lost_error(found.lost)
        return found.visible, listing

    def manifests(self) -> dict[str, list[Manifest]]:
        """All readable versions of every name, oldest first."""
        found: dict[str, list[Manifest]] = {}
        for entry in self.entries()[0]:
            if entry.manifest is not None:
                found.setdefault(entry.manifest.name, []).append(entry.manifest)
        for versions in found.values():
            versions.sort(key=Manifest.order_key)
        return found

    def ls(self) -> list[Manifest]:
        """The current version of every name, sorted by name."""
        return [versions[-1] for _, versions in sorted(self.manifests().items())]

    def lookup(self, name: str) -> Manifest:
        """The current version of ``name``; NotFoundError if there is none."""
        versions = self.manifests().get(name)
        if not versions:
            raise NotFoundError(f"no file named {name!r} in the vault")
        return versions[-1]

    # -- put ---------------------------------------------------------------------------
    def _write_all(
        self, paths: dict[int, str], write: Callable[[list[StoreWriter]], Any]
    ) -> tuple[Any, list[int], dict[int, str]]:
        """Run ``write`` over one concurrent writer per store in ``paths``."""
        writers = [
            StoreWriter(self.stores[sid - 1], path, stall_s=self.read_stall_s)
            for sid, path in paths.items()
        ]
        try:
            result = write(writers)
        finally:
            errors = {w.store.id: w.finish() for w in writers}
        ok = [sid for sid, err in errors.items() if err is None]
        failed = {sid: str(err) for sid, err in errors.items() if err is not None}
        return result, ok, failed

    def _commit(self, renames: dict[int, tuple[str, str]]) -> tuple[list[int], dict[int, str]]:
        done = on_each(
            list(renames),
            lambda sid: self.stores[sid - 1].rename(*renames[sid]),
            timeout_s=self.read_stall_s,
        )
        ok = [sid for sid, r in done.items() if not isinstance(r, TesseraError)]
        return ok, {sid: str(r) for sid, r in done.items() if isinstance(r, TesseraError)}

    def _delete_everywhere(self, paths: Sequence[str]) -> dict[int, str]:
        """Delete ``paths`` on every store; the stores that failed, and why."""

        def drop(store: Store) -> None:
            for path in paths:
                store.delete(path)

        done = on_each(self.stores, drop, timeout_s=self.read_stall_s)
        return {s.id: str(r) for s, r in done.items() if isinstance(r, TesseraError)}

    def _quorum_error(self, what: str, ok: list[int], failed: dict[int, str]) -> TesseraError:
        detail = "; ".join(failed.values())
        return StorageUnavailableError(
            f"{what} failed: {len(ok)} of {self.n} stores written, need {self.write_quorum}"
            f" (nothing was changed): {detail}"
        )

    def _publish(self, manifest: Manifest, token: str) -> tuple[list[int], dict[int, str]]:
        """Secret-share ``manifest`` into the catalogue; raise unless a quorum committed."""
        assert self.signer is not None
        shares = catalogue.share_manifest(
            encode(manifest, self.signer),
            k=manifest.k,
            n=self.n,
            entry_id=manifest.entry_id,
            rng=self.rng,
        )
        staged = {s.id: f"tmp/{token}.m{s.id}" for s in self.stores}
        written = on_each(
            list(staged),
            lambda sid: self.stores[sid - 1].write_bytes(staged[sid], shares[sid - 1]),
            timeout_s=self.read_stall_s,
        )
        ok = [sid for sid, r in written.items() if not isinstance(r, TesseraError)]
        failed = {sid: str(r) for sid, r in written.items() if isinstance(r, TesseraError)}
        if len(ok) < self.write_quorum:
            raise self._quorum_error("writing the catalogue", ok, failed)
        committed, commit_failed = self._commit(
            {sid: (staged[sid], manifest.catalog_path()) for sid in ok}
        )
        failed.update(commit_failed)
        if len(committed) < self.write_quorum:
            raise self._quorum_error("committing the catalogue", committed, failed)
        return committed, failed

    def put(
        self,
        source: BinaryIO,
        size: int,
        name: str,
        *,
        scheme: str = "shamir",
        replace: bool = False,
        progress: Progress | None = None,
    ) -> PutResult:
        """Store ``size`` bytes from ``source`` as ``name``.

        An existing ``name`` is refused (NameTakenError) unless ``replace``; its versions
        stay untouched until the new one is committed, and are removed afterwards.
        """
        older = self._before_put(name, scheme, replace=replace)
        token = secrets.token_hex(16)
        object_id = secrets.token_bytes(16)
        entry_id = secrets.token_hex(16)
        staged = {s.id: f"tmp/{token}.d{s.id}" for s in self.stores}
        record = self._put_record(token, entry_id, object_id, staged)
        self._journal(record)
        try:
            header, ok, failed, tap = self._put_fragments(
                source, size, scheme, object_id, staged, progress
            )
            final = f"data/{object_id.hex()}.{header.generation}"
            committed = self._commit_put(record, staged, final, ok, failed)
            manifest = self._new_manifest(
                name, size, scheme, object_id.hex(), header.generation, entry_id, tap
            )
            _, manifest_failed = self._publish(manifest, token)
        except BaseException:
            self._rollback(record)
            raise
        self._finish(record, committed=True, recorded=True)
        self.commit_record(add=[manifest], remove=[m.entry_id for m in older])
        replaced = self._drop(older)
        failed.update({sid: p for sid, p in manifest_failed.items() if sid not in failed})
        return PutResult(
            name=name,
            size=size,
            scheme=scheme,
            k=self.k,
            n=self.n,
            stores_written=sorted(sid for sid in committed if sid not in failed),
            stores_failed=dict(sorted(failed.items())),
            replaced=replaced,
        )

    def _put_record(
        self, token: str, entry_id: str, object_id: bytes, staged: dict[int, str]
    ) -> Record:
        """The journal record of a put: rolled back, it deletes every staged fragment,
        the object's data (item ``n``, narrowed by :meth:`_commit_put`), the catalogue
        entry and the staged manifest shares; committed, the staged files."""
        record = Record(
            "put",
            token,
            entry_id,
            on_rollback=[*staged.values(), f"data/{object_id.hex()}.*", f"catalog/{entry_id}"],
            on_commit=[*staged.values(), *(f"tmp/{token}.m{s.id}" for s in self.stores)],
        )
        record.on_rollback.extend(f"tmp/{token}.m{s.id}" for s in self.stores)
        return record

    def _put_fragments(
        self,
        source: BinaryIO,
        size: int,
        scheme: str,
        object_id: bytes,
        staged: dict[int, str],
        progress: Progress | None,
    ) -> tuple[FragmentHeader, list[int], dict[int, str], TagTap]:
        """Split ``source`` onto the stores' ``staged`` paths; raise unless a quorum
        wrote.  Fragment 1's header, the stores that wrote, those that failed (and why),
        and the digest of the tag lists."""
        tap: list[TagTap] = []
        header, ok, failed = self._write_all(
            staged,
            lambda writers: split_stream(
                source,
                cast(list[BinaryIO], tap_first(writers, tap)),
                k=self.k,
                size=size,
                scheme=scheme,
                rng=self.rng,
                object_id=object_id,
                progress=progress,
            ),
        )
        if len(ok) < self.write_quorum:
            raise self._quorum_error("put", ok, failed)
        return header, ok, failed, tap[0]

    def _commit_put(
        self,
        record: Record,
        staged: dict[int, str],
        final: str,
        ok: list[int],
        failed: dict[int, str],
    ) -> list[int]:
        """Rename the ``staged`` fragments of stores ``ok`` to ``final`` (journalled
        first); raise unless a quorum committed.  Adds the stores that failed to
        ``failed``; returns those that committed."""
        record.on_rollback[self.n] = final
        self._journal(record)
        committed, commit_failed = self._commit({sid: (staged[sid], final) for sid in ok})
        failed.update(commit_failed)
        if len(committed) < self.write_quorum:
            raise self._quorum_error("committing the put", committed, failed)
        return committed

    def _before_put(self, name: str, scheme: str, *, replace: bool) -> list[Manifest]:
        """Check a put's arguments; the versions of ``name`` it replaces."""
        if self.signer is None:
            raise ValueError("this vault was opened read-only (no signing key)")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}")
        if not name or len(name.encode()) > 1024 or any(ord(c) < 32 for c in name):
            raise ValueError("a name is 1 to 1024 bytes of printable text")
        self.recover()
        older = self.manifests().get(name, [])
        if older and not replace:
            raise NameTakenError(f"{name!r} is already in the vault; use --replace to replace it")
        return older

    def _new_manifest(
        self,
        name: str,
        size: int,
        scheme: str,
        object_id: str,
        generation: int,
        entry_id: str,
        tap: TagTap,
    ) -> Manifest:
        assert self.signer is not None
        now = time.time_ns()
        return Manifest(
            name=name,
            size=size,
            created=datetime.fromtimestamp(now / 1e9, UTC).isoformat(timespec="seconds"),
            created_ns=now,
            object_id=object_id,
            generation=generation,
            scheme=scheme,
            k=self.k,
            n=self.n,
            entry_id=entry_id,
            key_id=self.signer.key_id,
            tags=tap.digest.hexdigest(),
        )

    def _drop_older(self, manifest: Manifest) -> int:
        """Remove versions of ``manifest.name`` older than it; how many went."""
        try:
            versions = self.manifests().get(manifest.name, [])
        except TesseraError:
            return 0  # repair removes them later
        older = [m for m in versions if m.order_key() < manifest.order_key()]
        recorded = self.owner_record().entries
        if self.signer is None:  # the record cannot drop them: keep them for a writer
            older = [m for m in older if m.entry_id not in recorded]
        elif any(m.entry_id in recorded for m in older):
            self.commit_record(remove=[m.entry_id for m in older])
        return self._drop(older)

    def _drop(self, versions: Sequence[Manifest]) -> int:
        """Delete ``versions`` (already out of the owner's record) from every store."""
        for old in versions:
            self._delete_everywhere([old.catalog_path(), old.data_path()])
        return len(versions)

    def drop_stale(self) -> int:
        """Delete entries an old copy of the stores brought back; how many went."""
        try:
            found, _listing = self.survey()
        except TesseraError:
            return 0
        return self._drop(found.stale)

    def commit_record(self, *, add: Sequence[Manifest] = (), remove: Sequence[str] = ()) -> None:
        """Write the next generation of the owner's record (needs the signing key).

        Entries committed since the record was last written (a process that died between
        the catalogue commit and this point) are adopted as well.
        """
        if self.record is None:
            return
        if self.signer is None:
            raise ValueError("this vault was opened read-only (no signing key)")
        found, _listing = self.survey()
        self.record.commit(self.verifier, self.signer, add=[*found.pending, *add], remove=remove)

    # -- journal -----------------------------------------------------------------------
    def _journal(self, record: Record) -> None:
        if self.journal is not None:
            self.journal.write(record)

    def _expand(self, store: Store, pattern: str) -> list[str]:
        if not pattern.endswith(".*"):
            return [pattern]
        folder, _, stem = pattern[:-2].partition("/")
        return [f"{folder}/{f}" for f in store.list(folder) if f.startswith(stem + ".")]

    def _clean(self, paths: Sequence[str]) -> bool:
        def drop(store: Store) -> None:
            for pattern in paths:
                for path in self._expand(store, pattern):
                    store.delete(path)

        done = on_each(self.stores, drop, timeout_s=self.read_stall_s)
        return not any(isinstance(r, TesseraError) for r in done.values())

    def _rollback(self, record: Record) -> None:
        if self._clean(record.on_rollback) and self.journal is not None:
            self.journal.remove(record)

    def _finish(self, record: Record, *, committed: bool, recorded: bool = False) -> None:
        """Clean up after ``record``; a commit that replaced catalogue entries first takes
        them out of the owner's record (left for a writer when there is no signing key)."""
        paths = record.on_commit if committed else record.on_rollback
        replaced = [p.partition("/")[2] for p in paths if p.startswith("catalog/")]
        if committed and replaced and not recorded:
            if self.signer is None:
                return
            self.commit_record(remove=replaced)
        if self._clean(paths) and self.journal is not None:
            self.journal.remove(record)

    def _committed(self, entry_id: str) -> bool | None:
        """Whether the entry is in the catalogue (None: too few stores answer to tell)."""
        listing = catalogue.scan(self.stores, timeout_s=self.read_stall_s)
        if self.too_few(listing) is not None:
            return None
        holders = listing.entries.get(entry_id, set())
        if len(holders) < self.k:
            return False
        blobs = on_each(
            sorted(holders),
            lambda sid: self.stores[sid - 1].read_bytes(f"catalog/{entry_id}"),
            timeout_s=self.read_stall_s,
        )
        try:
            catalogue.combine_manifest(
                [b for b in blobs.values() if isinstance(b, bytes)], self.verifier
            )
        except TesseraError:
            return False
        return True

    def recover(self) -> int:
        """Finish or undo operations whose process died; how many were handled."""
        if self.journal is None:
            return 0
        orphans = self.journal.orphans()
        for record in orphans:
            committed = self._committed(record.commit_entry)
            if committed is not None:
                self._finish(record, committed=committed)
        return len(orphans)

    # -- get ---------------------------------------------------------------------------
    def get(
        self,
        name: str,
        out: Path,
        *,
        progress: Progress | None = None,
        manifest: Manifest | None = None,
    ) -> GetResult:
        """Restore ``name`` into ``out``; never leaves a wrong or partial file there.

        ``manifest`` (from :meth:`lookup`) saves reading the catalogue again.
        """
        manifest = manifest if manifest is not None and manifest.name == name else self.lookup(name)
        return restore(self, manifest, out, progress=progress)

    # -- rm ----------------------------------------------------------------------------
    def rm(self, name: str) -> RmResult:
        """Remove every version of ``name`` from every store (idempotent).

        A file the owner's record commits to but the stores lost can be removed too: that
        is how a loss is acknowledged (the record forgets it).
        """
        if self.record is not None and self.signer is None:
            raise ValueError("this vault was opened read-only (no signing key)")
        self.recover()
        found, listing = self.survey()
        too_few = self.too_few(listing)
        if too_few is not None:
            raise too_few
        versions = [e.manifest for e in found.visible if e.manifest and e.manifest.name == name]
        lost = [eid for eid, (lost_name, _why) in found.lost.items() if lost_name == name]
        if versions or lost:
            self.commit_record(remove=[*(m.entry_id for m in versions), *lost])
        self._delete_everywhere([f"catalog/{eid}" for eid in lost])
        for manifest in versions:
            failed = self._delete_everywhere([manifest.catalog_path()])
            if len(failed) >= manifest.k:
                raise StorageUnavailableError(
                    f"cannot remove {name!r}: {len(failed)} stores unreachable: "
                    + "; ".join(failed.values())
                )
            self._delete_everywhere([manifest.data_path()])
        return RmResult(
            name=name, removed=bool(versions or lost), versions=len(versions) + len(lost)
        )


def tap_first(writers: list[StoreWriter], tap: list[TagTap]) -> list[Any]:
    """``writers`` with the first one digesting the tag lists it carries (into ``tap``)."""
    tap.append(TagTap(writers[0]))
    return [tap[0], *writers[1:]]
