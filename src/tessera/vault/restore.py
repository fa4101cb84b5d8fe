"""Get: restore a file from the fastest k stores, falling back to all of them.

Get opens the fragment on every store at once, combines the first k to answer, and on
any error (a store failing mid-read, a damaged or swapped fragment) starts again from
all reachable stores, where the core corrects bad fragments.  The output is written to a
temporary name and renamed only after every block verified and the fragments' tag lists
matched the signed manifest; a failure on the output side (a full disk) is one error and
leaves no partial file.  Stores are opened from daemon threads: one that never answers
is given up after ``open_timeout_s`` and cannot hold up the process's exit.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, cast

from tessera.core.fragment import CombineReport, combine_stream
from tessera.errors import InsufficientSharesError, StorageUnavailableError, TesseraError
from tessera.vault.manifest import Manifest
from tessera.vault.results import GetResult
from tessera.vault.store import Store
from tessera.vault.tags import fragment_digest
from tessera.vault.transfer import StoreReader, in_background

if TYPE_CHECKING:
    from tessera.vault.vault import Vault

__all__ = ["restore"]

Progress = Callable[[int], None]
Pending = dict[Future[IO[bytes]], Store]


def _open_all(vault: Vault, path: str) -> Pending:
    return {in_background(partial(store.open_read, path)): store for store in vault.stores}


def restore(
    vault: Vault, manifest: Manifest, out: Path, *, progress: Progress | None = None
) -> GetResult:
    """Restore the object ``manifest`` names into ``out`` (see :meth:`Vault.get`)."""
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(6)}.part")
    sources: dict[int, StoreReader] = {}
    missing: dict[int, str] = {}
    try:
        pending = _open_all(vault, manifest.data_path())
        # The fastest k stores answer first; the others keep opening meanwhile.
        while pending and len(sources) < manifest.k:
            done, _ = wait(pending, timeout=vault.open_timeout_s, return_when=FIRST_COMPLETED)
            if not done:
                break
            _collect_done(vault, done, pending, sources, missing)
        with open(tmp, "wb") as dst:
            chosen, report = _combine(vault, manifest, pending, sources, missing, dst, progress)
        if pending:  # report stores that failed while we did not need them
            done, _ = wait(pending, timeout=min(1.0, vault.open_timeout_s))
            _collect_done(vault, done, pending, sources, missing)
        # The tag lists are re-read from one fragment: a local one when there is one.
        used = sorted(chosen, key=lambda sid: not sources[sid].store.local)
        _check_content(manifest, report, [sources[sid] for sid in used])
        os.replace(tmp, out)
    except OSError as exc:  # the output side: a full disk, a read-only folder
        raise StorageUnavailableError(
            f"cannot write {out}: {exc.strerror or exc.__class__.__name__}"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
        for source in sources.values():
            source.close()
    return _result(manifest, chosen, report, sources, missing)


def _combine(
    vault: Vault,
    manifest: Manifest,
    pending: Pending,
    sources: dict[int, StoreReader],
    missing: dict[int, str],
    dst: BinaryIO,
    progress: Progress | None,
) -> tuple[list[int], CombineReport]:
    """Combine the first k usable fragments into ``dst``; on an error, again from every
    store that answers in time, until a set of fragments works or none is left to try.
    The stores used and the report."""
    k = manifest.k
    tried: list[list[int]] = []
    last_error: TesseraError | None = None
    while True:
        usable = sorted(sid for sid, s in sources.items() if s.failure is None)
        chosen = usable if tried else usable[:k]
        if len(chosen) < k or chosen in tried:
            raise _unrecoverable(manifest, chosen, sources, missing, last_error)
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
            return chosen, report
        except TesseraError as exc:
            last_error = exc
        if pending:  # fall back: every store that answers in time
            done, _ = wait(pending, timeout=vault.open_timeout_s)
            _collect_done(vault, done, pending, sources, missing)
            for store in pending.values():
                missing[store.id] = f"store {store.label}: no answer in time"
            pending.clear()


def _collect_done(
    vault: Vault,
    done: set[Future[IO[bytes]]],
    pending: Pending,
    sources: dict[int, StoreReader],
    missing: dict[int, str],
) -> None:
    """Take the stores whose open is ``done`` out of ``pending``, into ``sources`` (or
    ``missing`` when the open failed)."""
    for fut in done:
        _collect(vault, fut, pending.pop(fut), sources, missing)


def _result(
    manifest: Manifest,
    chosen: list[int],
    report: CombineReport,
    sources: dict[int, StoreReader],
    missing: dict[int, str],
) -> GetResult:
    """What get reports: every store that failed (at open or while read), and the
    fragments the core corrected (by store)."""
    for sid, source in sources.items():
        if source.failure is not None:
            missing[sid] = source.failure
    corrected = {chosen[b.position]: b.reason for b in report.bad}
    return GetResult(
        name=manifest.name,
        size=manifest.size,
        used=sorted(report.used),
        missing=dict(sorted(missing.items())),
        corrected=dict(sorted(corrected.items())),
    )


def _check_content(manifest: Manifest, report: Any, used: Sequence[StoreReader]) -> None:
    """The restored object is the one the signed manifest names, tags and all."""
    bad = InsufficientSharesError(
        f"fragments of {manifest.name!r} do not match its signed manifest"
    )
    if report.object_id != bytes.fromhex(manifest.object_id) or (report.size != manifest.size):
        raise bad
    if not manifest.tags:
        return  # a version 1 manifest: the fragments' own tags are all there is
    for source in used:  # one fragment with an intact tag list suffices (see docs/vault.md)
        try:
            if fragment_digest(cast(BinaryIO, source)) == manifest.tags:
                return
        except TesseraError:
            continue
    raise bad


def _collect(
    vault: Vault,
    fut: Future[IO[bytes]],
    store: Store,
    sources: dict[int, StoreReader],
    missing: dict[int, str],
) -> None:
    try:
        sources[store.id] = StoreReader(store, fut.result(), stall_s=vault.read_stall_s)
    except TesseraError as exc:
        missing[store.id] = str(exc)


def _unrecoverable(
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
