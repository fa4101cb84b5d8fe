"""Run a node job's MPyC parties directly: one real ``python -m tessera.mpc.party``
process per custodian on loopback, each in its own job folder laid out as a node lays
it out (``job.json``, ``inputs.json`` naming chunk folders of ``PART.npy`` shares,
``checks.json`` and history shares when asked), without the nodes around them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from tessera.core.prime import reconstruct_array, share_array
from tessera.mpc.knn_local import free_ports
from tessera.mpc.party import JOB_ENV
from tessera.tables.encode import PRIME, share_parts

PARTIES = 3
THRESHOLD = 1  # MPyC's default for three parties
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Chunk:
    """Rows ``start:stop`` of the table, uploaded by ``hospital``."""

    hospital: str
    start: int
    stop: int


@dataclass(frozen=True)
class TableShares:
    """A table for a job: clear parts (shared here), the parts the job reads, chunks and
    clear pseudonym keys (column -> one key per row)."""

    parts: Mapping[str, I64]
    read: Sequence[str]
    chunks: Sequence[Chunk]
    keys: Mapping[str, Sequence[str]] | None = None


@dataclass
class PartyResults:
    """What every party wrote: result.json documents and cohort shares (or None)."""

    docs: list[dict[str, Any]]
    cohorts: list[I64 | None]
    seconds: float

    @property
    def metas(self) -> list[dict[str, Any]]:
        return [d["meta"] for d in self.docs]

    def values(self) -> list[int]:
        """The released values (reconstructed from every party's shares, checked)."""
        shares = {i: np.array(d["shares"], dtype=object) for i, d in enumerate(self.docs)}
        return [int(v) for v in reconstruct_array(shares, t=THRESHOLD, p=PRIME)]

    def cohort(self) -> list[int]:
        """The cohort selection reconstructed from the parties' ``cohort.npy``."""
        assert all(c is not None for c in self.cohorts)
        shares = {i: np.asarray(c, dtype=object) for i, c in enumerate(self.cohorts)}
        return [int(v) for v in reconstruct_array(shares, t=THRESHOLD, p=PRIME)]


def share_vector(values: Sequence[int]) -> list[I64]:
    """Shamir shares (int64 field elements) of a clear vector, one per party."""
    sh = share_array(np.array(values, dtype=object), n=PARTIES, t=THRESHOLD, p=PRIME)
    return [np.asarray(row, dtype=object).astype(np.int64) for row in sh]


def _write_table(
    folder: Path, alias: str, shares: Mapping[str, npt.NDArray[np.uint64]], table: TableShares
) -> dict[str, Any]:
    located = []
    for n, ch in enumerate(table.chunks):
        d = folder / "store" / alias / f"chunk{n}"
        d.mkdir(parents=True)
        for part in table.read:
            np.save(d / f"{part}.npy", shares[part][ch.start : ch.stop])
        keys = {k: list(v[ch.start : ch.stop]) for k, v in (table.keys or {}).items()}
        (d / "keys.json").write_text(json.dumps(keys))
        located.append({"dir": str(d), "hospital": ch.hospital, "rows": ch.stop - ch.start})
    return {"parts": list(table.read), "chunks": located}


def prepare(
    workdir: Path,
    job: dict[str, Any],
    tables: Mapping[str, TableShares],
    *,
    checks: Mapping[str, Any] | None = None,
    history: Sequence[Sequence[int]] = (),
) -> list[Path]:
    """One job folder per party for the tables (by alias); ``history``: clear earlier
    cohorts, shared here and listed in ``checks.json`` (written only with ``checks``)."""
    shared = {
        alias: share_parts(dict(t.parts), n=PARTIES, t=THRESHOLD) for alias, t in tables.items()
    }
    hist = [share_vector(h) for h in history]
    folders = []
    for i in range(PARTIES):
        folder = workdir / f"party{i}"
        folder.mkdir(parents=True)
        inputs = {
            alias: _write_table(folder, alias, shared[alias][i], table)
            for alias, table in tables.items()
        }
        (folder / "inputs.json").write_text(json.dumps(inputs))
        (folder / "job.json").write_text(json.dumps(job))
        if checks is not None:
            names = [f"history-{n}.npy" for n in range(len(hist))]
            for name, h in zip(names, hist, strict=True):
                np.save(folder / name, h[i])
            (folder / "checks.json").write_text(json.dumps({**checks, "history": names}))
        folders.append(folder)
    return folders


def run_parties(folders: Sequence[Path], *, timeout: float = 300.0) -> PartyResults:
    """Start one party per folder, wait for all, and read what they wrote."""
    ports = free_ports(len(folders))
    peers = [a for port in ports for a in ("-P", f"127.0.0.1:{port}")]
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    procs = []
    start = time.perf_counter()
    try:
        for i, folder in enumerate(folders):
            cmd = [sys.executable, "-m", "tessera.mpc.party", "-I", str(i), *peers, "--no-log"]
            log = (folder / "party.log").open("wb")
            procs.append(
                subprocess.Popen(
                    cmd, cwd=folder, env={**env, JOB_ENV: str(folder)}, stdout=log, stderr=log
                )
            )
            log.close()
        deadline = start + timeout
        while any(p.poll() is None for p in procs):
            if any(p.poll() not in (None, 0) for p in procs) or time.perf_counter() > deadline:
                break
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    seconds = time.perf_counter() - start
    for folder, p in zip(folders, procs, strict=True):
        text = (folder / "party.log").read_text(errors="replace")
        assert p.returncode == 0, f"party in {folder.name} failed:\n{text[-3000:]}"
    docs = [json.loads((f / "result.json").read_text()) for f in folders]
    cohorts = [
        np.load(f / "cohort.npy", allow_pickle=False) if (f / "cohort.npy").exists() else None
        for f in folders
    ]
    return PartyResults(docs, cohorts, seconds)
