"""The vault: named files kept as k-of-n fragments on n independent stores.

Store ``i`` (1-based, as in the configuration) always holds fragment index ``i``.

Put is atomic.  Fragments stream into ``tmp/`` on all stores at once; when at least
``write_quorum`` stores (default n, never below k+1) have their fragment, they are
renamed into ``data/`` and the signed manifest is secret-shared into ``catalog/`` in the
same way.  The catalogue entry is the commit point: until k of its fragments are in
place the new version is invisible and the old one (if any) is untouched; afterwards
older versions of the name are removed.  A crash journal in the environment folder lets
the next command finish or undo an operation whose process died.

Get opens the fragment on every store at once, combines the first k to answer, and on
any error (a store failing mid-read, a damaged or swapped fragment) starts again from
all reachable stores, where the core corrects bad fragments.  The output is written to a
temporary name and renamed only after every block verified.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from tessera.core.fragment import combine_stream, split_stream
from tessera.core.rng import RandomSource
from tessera.errors import (
    InsufficientSharesError,
    NotFoundError,
    StorageUnavailableError,
    TesseraError,
)
from tessera.vault import catalogue
from tessera.vault.journal import Journal, Record
from tessera.vault.manifest import Manifest, Signer, Verifier, encode
from tessera.vault.results import GetResult, PutResult, RmResult
from tessera.vault.store import Store
from tessera.vault.transfer import StoreReader, StoreWriter, on_each

__all__ = ["SCHEMES", "Vault"]

SCHEMES = ("shamir", "ssms")
Progress = Callable[[int], None]


class Vault:
    """Named files on ``stores``; ``signer`` is needed only to write (put, refresh)."""

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
        self.open_timeout_s = open_timeout_s
        self.read_stall_s = read_stall_s
        self.rng = rng
        # Catalogue entries never change once written: each is read and checked once.
        self._manifests: dict[str, Manifest] = {}
        self._cache_lock = threading.Lock()

    # -- catalogue -------------------------------------------------------------------
    def entries(self) -> tuple[list[catalogue.Entry], catalogue.Listing]:
        """Every catalogue entry (readable or not) and which stores were listed."""
        listing = catalogue.scan(self.stores)
        if len(listing.unreachable) > self.n - self.k:
            detail = "; ".join(listing.unreachable.values())
            raise StorageUnavailableError(
                f"only {self.n - len(listing.unreachable)} of {self.n} stores reachable, "
                f"need {self.k}: {detail}"
            )
        with self._cache_lock:
            cache = dict(self._manifests)
        entries = catalogue.read_entries(
            self.stores, listing, self.verifier, k_hint=self.k, cache=cache
        )
        with self._cache_lock:
            self._manifests.update(cache)
        return entries, listing

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
        writers = [StoreWriter(self.stores[sid - 1], path) for sid, path in paths.items()]
        try:
            result = write(writers)
        finally:
            errors = {w.store.id: w.finish() for w in writers}
        ok = [sid for sid, err in errors.items() if err is None]
        failed = {sid: str(err) for sid, err in errors.items() if err is not None}
        return result, ok, failed

    def _commit(self, renames: dict[int, tuple[str, str]]) -> tuple[list[int], dict[int, str]]:
        done = on_each(list(renames), lambda sid: self.stores[sid - 1].rename(*renames[sid]))
        ok = [sid for sid, r in done.items() if not isinstance(r, TesseraError)]
        return ok, {sid: str(r) for sid, r in done.items() if isinstance(r, TesseraError)}

    def _delete_everywhere(self, paths: Sequence[str]) -> dict[int, str]:
        """Delete ``paths`` on every store; the stores that failed, and why."""

        def drop(store: Store) -> None:
            for path in paths:
                store.delete(path)

        done = on_each(self.stores, drop)
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
        progress: Progress | None = None,
    ) -> PutResult:
        """Store ``size`` bytes from ``source`` as ``name`` (replacing an older version)."""
        if self.signer is None:
            raise ValueError("this vault was opened read-only (no signing key)")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}")
        if not name or len(name.encode()) > 1024 or any(ord(c) < 32 for c in name):
            raise ValueError("a name is 1 to 1024 bytes of printable text")
        self.recover()
        token = secrets.token_hex(16)
        object_id = secrets.token_bytes(16)
        entry_id = secrets.token_hex(16)
        staged = {s.id: f"tmp/{token}.d{s.id}" for s in self.stores}
        record = Record(
            "put",
            token,
            entry_id,
            on_rollback=[*staged.values(), f"data/{object_id.hex()}.*", f"catalog/{entry_id}"],
            on_commit=[*staged.values(), *(f"tmp/{token}.m{s.id}" for s in self.stores)],
        )
        record.on_rollback.extend(f"tmp/{token}.m{s.id}" for s in self.stores)
        self._journal(record)
        try:
            header, ok, failed = self._write_all(
                staged,
                lambda writers: split_stream(
                    source,
                    cast(list[BinaryIO], writers),
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
            final = f"data/{object_id.hex()}.{header.generation}"
            record.on_rollback[self.n] = final
            self._journal(record)
            committed, commit_failed = self._commit({sid: (staged[sid], final) for sid in ok})
            failed.update(commit_failed)
            if len(committed) < self.write_quorum:
                raise self._quorum_error("committing the put", committed, failed)
            now = time.time_ns()
            manifest = Manifest(
                name=name,
                size=size,
                created=datetime.fromtimestamp(now / 1e9, UTC).isoformat(timespec="seconds"),
                created_ns=now,
                object_id=object_id.hex(),
                generation=header.generation,
                scheme=scheme,
                k=self.k,
                n=self.n,
                entry_id=entry_id,
                key_id=self.signer.key_id,
            )
            _, manifest_failed = self._publish(manifest, token)
        except BaseException:
            self._rollback(record)
            raise
        self._finish(record, committed=True)
        replaced = self._drop_older(manifest)
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

    def _drop_older(self, manifest: Manifest) -> int:
        """Remove versions of ``manifest.name`` older than it; how many went."""
        try:
            versions = self.manifests().get(manifest.name, [])
        except TesseraError:
            return 0  # repair removes them later
        older = [m for m in versions if m.order_key() < manifest.order_key()]
        for old in older:
            self._delete_everywhere([old.catalog_path(), old.data_path()])
        return len(older)

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

        return not any(isinstance(r, TesseraError) for r in on_each(self.stores, drop).values())

    def _rollback(self, record: Record) -> None:
        if self._clean(record.on_rollback) and self.journal is not None:
            self.journal.remove(record)

    def _finish(self, record: Record, *, committed: bool) -> None:
        paths = record.on_commit if committed else record.on_rollback
        if self._clean(paths) and self.journal is not None:
            self.journal.remove(record)

    def _committed(self, entry_id: str) -> bool:
        holders = catalogue.scan(self.stores).entries.get(entry_id, set())
        if len(holders) < self.k:
            return False
        blobs = on_each(
            sorted(holders), lambda sid: self.stores[sid - 1].read_bytes(f"catalog/{entry_id}")
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
            self._finish(record, committed=self._committed(record.commit_entry))
        return len(orphans)

    # -- get ---------------------------------------------------------------------------
    def _open_all(self, path: str, pool: ThreadPoolExecutor) -> dict[Future[IO[bytes]], Store]:
        return {pool.submit(store.open_read, path): store for store in self.stores}

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
        k = manifest.k
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.part")
        sources: dict[int, StoreReader] = {}
        missing: dict[int, str] = {}
        pool = ThreadPoolExecutor(max_workers=self.n)
        try:
            pending = self._open_all(manifest.data_path(), pool)
            # The fastest k stores answer first; the others keep opening meanwhile.
            while pending and len(sources) < k:
                done, _ = wait(pending, timeout=self.open_timeout_s, return_when=FIRST_COMPLETED)
                if not done:
                    break
                for fut in done:
                    self._collect(fut, pending.pop(fut), sources, missing)
            tried: list[list[int]] = []
            last_error: TesseraError | None = None
            with open(tmp, "wb") as dst:
                while True:
                    usable = sorted(sid for sid, s in sources.items() if s.failure is None)
                    chosen = usable if tried else usable[:k]
                    if len(chosen) < k or chosen in tried:
                        raise self._unrecoverable(manifest, chosen, sources, missing, last_error)
                    tried.append(chosen)
                    try:
                        for sid in chosen:
                            sources[sid].seek(0)
                        dst.seek(0)
                        dst.truncate()
                        report = combine_stream(
                            cast(list[BinaryIO], [sources[sid] for sid in chosen]),
                            dst,
                            progress=progress,
                        )
                        break
                    except TesseraError as exc:
                        last_error = exc
                    if pending:  # fall back: every store that answers in time
                        done, _ = wait(pending, timeout=self.open_timeout_s)
                        for fut in done:
                            self._collect(fut, pending.pop(fut), sources, missing)
                        for store in pending.values():
                            missing[store.id] = f"store {store.label}: no answer in time"
                        pending = {}
            if pending:  # report stores that failed while we did not need them
                done, _ = wait(pending, timeout=min(1.0, self.open_timeout_s))
                for fut in done:
                    self._collect(fut, pending.pop(fut), sources, missing)
            if report.object_id != bytes.fromhex(manifest.object_id) or (
                report.size != manifest.size
            ):
                raise InsufficientSharesError(
                    f"fragments of {name!r} do not match its signed manifest"
                )
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
            for source in sources.values():
                source.close()
            pool.shutdown(wait=False, cancel_futures=True)
        for sid, source in sources.items():
            if source.failure is not None:
                missing[sid] = source.failure
        corrected = {chosen[b.position]: b.reason for b in report.bad}
        return GetResult(
            name=name,
            size=manifest.size,
            used=sorted(report.used),
            missing=dict(sorted(missing.items())),
            corrected=dict(sorted(corrected.items())),
        )

    def _collect(
        self,
        fut: Future[IO[bytes]],
        store: Store,
        sources: dict[int, StoreReader],
        missing: dict[int, str],
    ) -> None:
        try:
            sources[store.id] = StoreReader(store, fut.result(), stall_s=self.read_stall_s)
        except TesseraError as exc:
            missing[store.id] = str(exc)

    def _unrecoverable(
        self,
        manifest: Manifest,
        usable: list[int],
        sources: dict[int, StoreReader],
        missing: dict[int, str],
        error: TesseraError | None = None,
    ) -> TesseraError:
        down = sorted(set(missing) | {sid for sid, s in sources.items() if s.failure})
        what = f"stores {', '.join(map(str, down))} unavailable" if down else "no store down"
        reason = f"; {error}" if error is not None else ""
        return InsufficientSharesError(
            f"cannot restore {manifest.name!r}: {len(usable)} readable fragments, "
            f"need {manifest.k} valid ones ({what}){reason}"
        )

    # -- rm ----------------------------------------------------------------------------
    def rm(self, name: str) -> RmResult:
        """Remove every version of ``name`` from every store (idempotent)."""
        self.recover()
        versions = self.manifests().get(name, [])
        for manifest in versions:
            failed = self._delete_everywhere([manifest.catalog_path()])
            if len(failed) >= manifest.k:
                raise StorageUnavailableError(
                    f"cannot remove {name!r}: {len(failed)} stores unreachable: "
                    + "; ".join(failed.values())
                )
            self._delete_everywhere([manifest.data_path()])
        return RmResult(name=name, removed=bool(versions), versions=len(versions))
