"""Checking, repairing and refreshing what the vault holds — never assembling plaintext.

``verify`` reads every fragment of every object (and of its catalogue entry) and names
each problem by store.  ``repair`` rewrites a missing or damaged fragment on its store
(an empty replacement store configured in place of a lost one fills up the same way)
from k good others with :func:`repair_stream`.  ``refresh`` re-randomises all n
fragments of an object with :func:`refresh_stream` (new generation, new catalogue entry);
fragments taken before a refresh are useless together with those taken after it.

All three hold the catalogue against the owner's signed record (:mod:`.record`): a file
the record commits to that the stores no longer hold is reported ``lost`` by ``verify``
and ``repair`` (never an empty, healthy vault), and ``refresh`` refuses to run.
"""

from __future__ import annotations

import dataclasses
import io
import secrets
import time
from typing import IO, BinaryIO, cast

from tessera.core.fragment import refresh_stream, repair_stream, verify_fragments
from tessera.errors import NotFoundError, RecoveryError, TesseraError
from tessera.vault.catalogue import Entry, Listing
from tessera.vault.journal import Record
from tessera.vault.manifest import Manifest
from tessera.vault.record import Reconciled
from tessera.vault.results import ObjectHealth, Problem, RefreshResult, RepairResult, VerifyResult
from tessera.vault.store import FragmentMissingError, Store
from tessera.vault.tags import TagTap, fragment_digest
from tessera.vault.transfer import StoreReader, StoreWriter, on_each
from tessera.vault.vault import Vault, tap_first

__all__ = ["refresh", "repair", "verify"]


@dataclasses.dataclass
class _Check:
    """Per-store verdicts on one set of fragments (data or catalogue) of one object."""

    good: list[int]
    problems: dict[int, str]
    handles: dict[int, StoreReader]

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


def _check(opened: dict[Store, IO[bytes] | TesseraError], what: str, stall_s: float) -> _Check:
    handles = {
        s.id: StoreReader(s, h, stall_s=stall_s)
        for s, h in opened.items()
        if not isinstance(h, TesseraError)
    }
    problems: dict[int, str] = {}
    for store, h in opened.items():
        if isinstance(h, FragmentMissingError):
            problems[store.id] = f"{what} fragment missing"
        elif isinstance(h, TesseraError):
            problems[store.id] = f"{what} fragment unreadable: {h}"
    ids = sorted(handles)
    while ids:
        for sid in ids:
            handles[sid].seek(0)
        try:
            report = verify_fragments(cast(list[BinaryIO], [handles[i] for i in ids]))
        except TesseraError:
            failed = [sid for sid in ids if handles[sid].failure is not None]
            if not failed:
                raise
            for sid in failed:  # a store that broke while being read: check the rest again
                problems[sid] = f"{what} fragment unreadable: {handles[sid].failure}"
            ids = [sid for sid in ids if sid not in failed]
            continue
        for pos, sid in enumerate(ids):
            if pos in report.problems:
                problems[sid] = f"{what} fragment: {report.problems[pos]}"
            elif report.indices.get(pos) != sid:
                problems[sid] = f"{what} fragment has index {report.indices.get(pos)}, not {sid}"
        break
    good = [sid for sid in ids if sid not in problems]
    return _Check(good, problems, handles)


def _tags_match(check: _Check, tags: str) -> bool:
    for sid in check.good:
        try:
            if fragment_digest(cast(BinaryIO, check.handles[sid])) == tags:
                return True
        except TesseraError:
            continue
    return False


def _open_data(vault: Vault, manifest: Manifest) -> _Check:
    path = manifest.data_path()
    opened = on_each(vault.stores, lambda s: s.open_read(path), timeout_s=vault.read_stall_s)
    check = _check(opened, "data", vault.read_stall_s)
    if manifest.tags and check.good and not _tags_match(check, manifest.tags):
        # self-consistent fragments, but not the ones the owner signed
        for sid in check.good:
            check.problems[sid] = "data fragment does not match the signed manifest"
        check.good = []
    return check


def _open_catalogue(vault: Vault, manifest: Manifest) -> _Check:
    path = manifest.catalog_path()

    def fetch(store: Store) -> IO[bytes]:
        return io.BytesIO(store.read_bytes(path))

    opened = on_each(vault.stores, fetch, timeout_s=vault.read_stall_s)
    return _check(opened, "catalogue", vault.read_stall_s)


def _status(k: int, data: _Check, cat: _Check) -> str:
    if not data.problems and not cat.problems:
        return "healthy"
    if len(data.good) >= k and len(cat.good) >= k:
        return "degraded"
    return "lost"


@dataclasses.dataclass
class _Current:
    """The current version of each name asked for, and what the stores lost."""

    manifests: list[Manifest]
    entries: list[Entry]
    listing: Listing
    lost: list[ObjectHealth]


def _lost(vault: Vault, found: Reconciled, listing: Listing) -> list[ObjectHealth]:
    """One ``lost`` object per file the owner's record commits to and the stores lost."""
    lost = []
    for entry_id, (name, why) in sorted(found.lost.items(), key=lambda kv: kv[1]):
        holders = listing.entries.get(entry_id, set())
        problems = [
            Problem(s.id, listing.unreachable.get(s.id, "catalogue fragment missing"))
            for s in vault.stores
            if s.id not in holders
        ]
        if len(holders) >= vault.k or not problems:
            problems = [Problem(sid, why) for sid in sorted(holders)] or problems
        lost.append(ObjectHealth(name, "lost", problems))
    return lost


def _current(vault: Vault, name: str | None) -> _Current:
    """The current version of ``name`` (or of every name), all entries, the listing."""
    found, listing = vault.survey()
    lost = _lost(vault, found, listing)
    too_few = vault.too_few(listing)
    if too_few is not None and not lost:
        raise too_few
    latest: dict[str, Manifest] = {}
    for entry in found.visible:
        m = entry.manifest
        if m is not None and (m.name not in latest or latest[m.name].order_key() < m.order_key()):
            latest[m.name] = m
    if name is None:
        return _Current([latest[key] for key in sorted(latest)], found.visible, listing, lost)
    lost = [o for o in lost if o.name == name]
    if name not in latest and not lost:
        raise NotFoundError(f"no file named {name!r} in the vault")
    return _Current([latest[name]] if name in latest else [], found.visible, listing, lost)


def _problems(data: _Check, cat: _Check) -> list[Problem]:
    return [
        Problem(sid, text)
        for found in (data.problems, cat.problems)
        for sid, text in sorted(found.items())
    ]


def verify(vault: Vault, name: str | None = None) -> VerifyResult:
    """Check every fragment of ``name`` (or of every object)."""
    current = _current(vault, name)
    objects = list(current.lost)
    for m in current.manifests:
        data, cat = _open_data(vault, m), _open_catalogue(vault, m)
        try:
            objects.append(ObjectHealth(m.name, _status(m.k, data, cat), _problems(data, cat)))
        finally:
            data.close()
            cat.close()
    if name is None:
        for entry in current.entries:
            if entry.manifest is None and len(entry.stores) >= vault.k:
                problem = f"catalogue entry cannot be read: {entry.problem}"
                objects.append(
                    ObjectHealth(
                        f"(unreadable catalogue entry {entry.entry_id[:8]})",
                        "lost",
                        [Problem(sid, problem) for sid in sorted(entry.stores)],
                    )
                )
    objects.sort(key=lambda o: o.name)
    return VerifyResult(objects, dict(current.listing.unreachable))


def _rewrite(vault: Vault, check: _Check, path: str, sid: int, token: str, *, small: bool) -> None:
    """Write fragment ``sid`` of ``path`` from the good fragments in ``check``."""
    good = [check.handles[g] for g in check.good]
    for handle in good:
        handle.seek(0)
    store = vault.stores[sid - 1]
    staged = f"tmp/{token}.r{sid}"
    if small:
        out = io.BytesIO()
        repair_stream(cast(list[BinaryIO], good), sid, out)
        store.write_bytes(staged, out.getvalue())
    else:
        writer = StoreWriter(store, staged)
        try:
            repair_stream(cast(list[BinaryIO], good), sid, cast(BinaryIO, writer))
        finally:
            error = writer.finish()
        if error is not None:
            store.delete(staged)
            raise error if isinstance(error, TesseraError) else TesseraError(str(error))
    store.rename(staged, path)


def _rewrite_all(
    vault: Vault, m: Manifest, check: _Check, path: str, result: RepairResult, *, small: bool
) -> None:
    """Rewrite every bad fragment in ``check``; the journal removes what a crash leaves."""
    token = secrets.token_hex(8)
    staged = [f"tmp/{token}.r{sid}" for sid in sorted(check.problems)]
    record = Record("repair", token, m.entry_id, on_rollback=staged, on_commit=list(staged))
    vault._journal(record)
    for sid in sorted(check.problems):
        try:
            _rewrite(vault, check, path, sid, token, small=small)
        except TesseraError as exc:
            result.failed.append(ObjectHealth(m.name, "degraded", [Problem(sid, str(exc))]))
            continue
        result.repaired.append(Problem(sid, f"{m.name}: {check.problems[sid]}"))
    vault._finish(record, committed=True, recorded=True)


def repair(vault: Vault, name: str | None = None) -> RepairResult:
    """Rewrite every missing or damaged fragment that k good others allow."""
    vault.recover()
    current = _current(vault, name)
    result = RepairResult(failed=list(current.lost))
    if name is None:
        result.removed += vault.drop_stale()
    for m in current.manifests:
        result.removed += vault._drop_older(m)
        for small, opener, path in (
            (False, _open_data, m.data_path()),
            (True, _open_catalogue, m.catalog_path()),
        ):
            check = opener(vault, m)
            try:
                if not check.problems:
                    continue
                if len(check.good) < m.k:
                    result.failed.append(
                        ObjectHealth(
                            m.name,
                            "lost",
                            [Problem(s, p) for s, p in sorted(check.problems.items())],
                        )
                    )
                    continue
                _rewrite_all(vault, m, check, path, result, small=small)
            finally:
                check.close()
    return result


def _refresh_one(vault: Vault, m: Manifest) -> Manifest:
    check = _open_data(vault, m)
    try:
        if check.problems:
            raise RecoveryError(
                f"{m.name!r} is not healthy ({len(check.problems)} fragment problems): "
                "run 'tessera vault repair' first"
            )
        token = secrets.token_hex(16)
        entry_id = secrets.token_hex(16)
        staged = {s.id: f"tmp/{token}.d{s.id}" for s in vault.stores}
        new_path = f"data/{m.object_id}.{m.generation + 1}"
        record = _refresh_record(vault, m, token, entry_id, staged, new_path)
        vault._journal(record)
        try:
            fresh = _refresh_data(vault, m, check, staged, new_path, entry_id)
            vault._publish(fresh, token)
        except BaseException:
            vault._rollback(record)
            raise
        vault.commit_record(add=[fresh], remove=[m.entry_id])
        vault._finish(record, committed=True, recorded=True)
        return fresh
    finally:
        check.close()


def _refresh_record(
    vault: Vault, m: Manifest, token: str, entry_id: str, staged: dict[int, str], new_path: str
) -> Record:
    """The journal record of a refresh: rolled back, it deletes the staged files and the
    new generation; committed, the staged files and the old generation."""
    return Record(
        "refresh",
        token,
        entry_id,
        on_rollback=[
            *staged.values(),
            *(f"tmp/{token}.m{s.id}" for s in vault.stores),
            new_path,
            f"catalog/{entry_id}",
        ],
        on_commit=[
            *staged.values(),
            *(f"tmp/{token}.m{s.id}" for s in vault.stores),
            m.data_path(),
            m.catalog_path(),
        ],
    )


def _refresh_data(
    vault: Vault, m: Manifest, check: _Check, staged: dict[int, str], new_path: str, entry_id: str
) -> Manifest:
    """Write the refreshed fragments of ``m`` from ``check``'s to ``staged`` and commit
    them to ``new_path`` on every store (all n are needed); the new manifest."""
    sources = [check.handles[sid] for sid in sorted(check.handles)]
    tap: list[TagTap] = []
    header, ok, failed = vault._write_all(
        staged,
        lambda writers: refresh_stream(
            cast(list[BinaryIO], sources),
            cast(list[BinaryIO], tap_first(writers, tap)),
            rng=vault.rng,
        ),
    )
    if failed:
        raise vault._quorum_error("refresh", ok, failed)
    committed, commit_failed = vault._commit({sid: (staged[sid], new_path) for sid in ok})
    if commit_failed:
        raise vault._quorum_error("committing the refresh", committed, commit_failed)
    return dataclasses.replace(
        m,
        generation=header.generation,
        entry_id=entry_id,
        created_ns=time.time_ns(),
        tags=tap[0].digest.hexdigest(),
    )


def refresh(vault: Vault, name: str | None = None) -> RefreshResult:
    """Re-randomise every fragment of ``name`` (or of every object); needs all n stores."""
    if vault.signer is None:
        raise ValueError("this vault was opened read-only (no signing key)")
    vault.recover()
    vault.entries()  # fails closed: nothing is re-signed over a lost or rolled-back vault
    current = _current(vault, name)
    result = RefreshResult()
    for m in current.manifests:
        fresh = _refresh_one(vault, m)
        result.refreshed.append(m.name)
        result.generations[m.name] = fresh.generation
    return result
