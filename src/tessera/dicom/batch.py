"""De-identify many files: recursive discovery, a process pool, one report entry each."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.dicom.files import Outcome, deidentify_file
from tessera.dicom.profile import Option, Profile
from tessera.dicom.pseudonym import Pseudonymizer
from tessera.dicom.stores import IdentityStore, ObjectSink
from tessera.errors import NotFoundError, TesseraError

__all__ = ["BatchSettings", "discover", "run_batch"]

_INLINE_BELOW = 16  # starting worker processes costs more than it saves below this


@dataclass(frozen=True)
class BatchSettings:
    """What each worker needs (picklable): options, safe-private list, key, policy."""

    options: frozenset[Option]
    safe_private: frozenset[tuple[str, int, int]]
    key: bytes
    keep_burned_in: bool = False

    @classmethod
    def of(cls, profile: Profile, key: bytes, *, keep_burned_in: bool = False) -> BatchSettings:
        """Settings for ``profile`` under ``key``."""
        return cls(profile.options, profile.safe_private, key, keep_burned_in)


def discover(source: Path) -> list[Path]:
    """``source`` itself if it is a file, else every file below it (sorted, recursive)."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise NotFoundError(f"no such file or folder: {source}")
    found = []
    for root, dirs, files in os.walk(source):
        dirs.sort()
        found += [Path(root) / name for name in sorted(files) if not name.startswith(".")]
    return found


_worker: tuple[Profile, Pseudonymizer, bool] | None = None


def _init(settings: BatchSettings) -> None:
    global _worker  # one profile and pseudonymizer per worker process
    _worker = (
        Profile(settings.options, settings.safe_private),
        Pseudonymizer(settings.key),
        settings.keep_burned_in,
    )


def _work(path: Path) -> Outcome:
    assert _worker is not None
    profile, pseudo, keep = _worker
    try:
        return deidentify_file(path, profile, pseudo, keep_burned_in=keep)
    except Exception as exc:  # the batch goes on whatever one file does
        return Outcome("failed", f"cannot de-identify this file ({type(exc).__name__})")


def _outcomes(paths: list[Path], settings: BatchSettings, workers: int) -> Iterator[Outcome]:
    if workers <= 1 or len(paths) < _INLINE_BELOW:
        _init(settings)
        yield from map(_work, paths)
        return
    chunk = max(1, min(32, len(paths) // (workers * 4)))
    done = 0
    try:
        with ProcessPoolExecutor(workers, initializer=_init, initargs=(settings,)) as pool:
            for outcome in pool.map(_work, paths, chunksize=chunk):
                done += 1
                yield outcome
    except BrokenProcessPool:  # a worker died (killed, out of memory): report, go on
        for _ in paths[done:]:
            yield Outcome("failed", "worker process died while handling this batch")


def run_batch(
    paths: list[Path],
    settings: BatchSettings,
    sink: ObjectSink,
    identities: IdentityStore,
    *,
    workers: int | None = None,
    on_done: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """De-identify ``paths``; store outputs and identities; one report entry per file."""
    workers = workers if workers is not None else os.cpu_count() or 1
    entries = []
    for path, outcome in zip(paths, _outcomes(paths, settings, workers), strict=True):
        entry: dict[str, Any] = {"input": str(path), "output": None}
        if outcome.status == "deidentified" and outcome.data is not None and outcome.name:
            try:
                report = outcome.report
                if report is not None and report.identity and report.pseudonym:
                    identities.put(report.pseudonym, report.identity)
                entry["output"] = sink.put(outcome.name, outcome.data)
            except (OSError, TesseraError) as exc:
                outcome = Outcome("failed", f"cannot store the output ({type(exc).__name__})")
        entry.update(outcome.summary())
        entries.append(entry)
        if on_done is not None:
            on_done()
    return entries
