"""Checking, repairing and refreshing what the vault holds — never assembling plaintext.

``verify`` reads every fragment of every object (and of its catalogue entry) and names
each problem by store.  ``repair`` rewrites a missing or damaged fragment on its store
(an empty replacement store configured in place of a lost one fills up the same way)
from k good others with :func:`repair_stream`.  ``refresh`` re-randomises all n
fragments of an object with :func:`refresh_stream` (new generation, new catalogue entry);
fragments taken before a refresh are useless together with those taken after it.
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
from tessera.vault.results import ObjectHealth, Problem, RefreshResult, RepairResult, VerifyResult
from tessera.vault.store import FragmentMissingError, Store
from tessera.vault.transfer import StoreReader, StoreWriter, on_each
from tessera.vault.vault import Vault

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


def _open_data(vault: Vault, manifest: Manifest) -> _Check:
    path = manifest.data_path()
    return _check(on_each(vault.stores, lambda s: s.open_read(path)), "data", vault.read_stall_s)


def _open_catalogue(vault: Vault, manifest: Manifest) -> _Check:
    path = manifest.catalog_path()

    def fetch(store: Store) -> IO[bytes]:
        return io.BytesIO(store.read_bytes(path))

    return _check(on_each(vault.stores, fetch), "catalogue", vault.read_stall_s)


def _status(k: int, data: _Check, cat: _Check) -> str:
    if not data.problems and not cat.problems:
        return "healthy"
    if len(data.good) >= k and len(cat.good) >= k:
        return "degraded"
    return "lost"


def _current(vault: Vault, name: str | None) -> tuple[list[Manifest], list[Entry], Listing]:
    """The current version of ``name`` (or of every name), all entries, the listing."""
    entries, listing = vault.entries()
    latest: dict[str, Manifest] = {}
    for entry in entries:
        m = entry.manifest
        if m is not None and (m.name not in latest or latest[m.name].order_key() < m.order_key()):
            latest[m.name] = m
    if name is None:
        return [latest[key] for key in sorted(latest)], entries, listing
    if name not in latest:
        raise NotFoundError(f"no file named {name!r} in the vault")
    return [latest[name]], entries, listing


def _problems(data: _Check, cat: _Check) -> list[Problem]:
    return [
        Problem(sid, text)
        for found in (data.problems, cat.problems)
        for sid, text in sorted(found.items())
    ]


def verify(vault: Vault, name: str | None = None) -> VerifyResult:
    """Check every fragment of ``name`` (or of every object)."""
    manifests, entries, listing = _current(vault, name)
    objects = []
    for m in manifests:
        data, cat = _open_data(vault, m), _open_catalogue(vault, m)
        try:
            objects.append(ObjectHealth(m.name, _status(m.k, data, cat), _problems(data, cat)))
        finally:
            data.close()
            cat.close()
    if name is None:
        for entry in entries:
            if entry.manifest is None and len(entry.stores) >= vault.k:
                problem = f"catalogue entry cannot be read: {entry.problem}"
                objects.append(
                    ObjectHealth(
                        f"(unreadable catalogue entry {entry.entry_id[:8]})",
                        "lost",
                        [Problem(sid, problem) for sid in sorted(entry.stores)],
                    )
                )
    return VerifyResult(objects, dict(listing.unreachable))


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


def repair(vault: Vault, name: str | None = None) -> RepairResult:
    """Rewrite every missing or damaged fragment that k good others allow."""
    vault.recover()
    manifests, _entries, _listing = _current(vault, name)
    result = RepairResult()
    for m in manifests:
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
                token = secrets.token_hex(8)
                for sid in sorted(check.problems):
                    try:
                        _rewrite(vault, check, path, sid, token, small=small)
                    except TesseraError as exc:
                        result.failed.append(
                            ObjectHealth(m.name, "degraded", [Problem(sid, str(exc))])
                        )
                        continue
                    result.repaired.append(Problem(sid, f"{m.name}: {check.problems[sid]}"))
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
        record = Record(
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
        vault._journal(record)
        try:
            sources = [check.handles[sid] for sid in sorted(check.handles)]
            header, ok, failed = vault._write_all(
                staged,
                lambda writers: refresh_stream(
                    cast(list[BinaryIO], sources), cast(list[BinaryIO], writers), rng=vault.rng
                ),
            )
            if failed:
                raise vault._quorum_error("refresh", ok, failed)
            committed, commit_failed = vault._commit({sid: (staged[sid], new_path) for sid in ok})
            if commit_failed:
                raise vault._quorum_error("committing the refresh", committed, commit_failed)
            fresh = dataclasses.replace(
                m, generation=header.generation, entry_id=entry_id, created_ns=time.time_ns()
            )
            vault._publish(fresh, token)
        except BaseException:
            vault._rollback(record)
            raise
        vault._finish(record, committed=True)
        return fresh
    finally:
        check.close()


def refresh(vault: Vault, name: str | None = None) -> RefreshResult:
    """Re-randomise every fragment of ``name`` (or of every object); needs all n stores."""
    if vault.signer is None:
        raise ValueError("this vault was opened read-only (no signing key)")
    vault.recover()
    manifests, _entries, _listing = _current(vault, name)
    result = RefreshResult()
    for m in manifests:
        fresh = _refresh_one(vault, m)
        result.refreshed.append(m.name)
        result.generations[m.name] = fresh.generation
    return result
