"""Client side of a recommendation: share the patient, run parties, reconstruct.

:func:`share_patient` and :func:`reconstruct_result` are what a clinician's client does
in any deployment; :func:`run_local_parties` launches the party processes on this
machine on free loopback ports (the embedded / standalone path, used by the tests and
the benchmark).  Custodian nodes run the same program with their own shares.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tessera.core.prime import InconsistentSharesError, reconstruct_array, share_array
from tessera.core.rng import RandomSource
from tessera.errors import BackendError, IntegrityError
from tessera.mpc.knn_spec import KnnJob, PatientQuery, PlainResult

__all__ = [
    "PartyRun",
    "free_ports",
    "reconstruct_result",
    "run_local_parties",
    "share_patient",
]

U64 = npt.NDArray[np.uint64]


def share_patient(job: KnnJob, query: PatientQuery, rng: RandomSource | None = None) -> list[U64]:
    """One uint64 share vector of the patient's secret inputs per party."""
    shares = share_array(
        np.array(query.secrets(), dtype=object),
        n=job.parties,
        t=job.threshold,
        p=job.prime,
        rng=rng,
    )
    return [np.asarray(row, dtype=object).astype(np.uint64) for row in shares]


def reconstruct_result(job: KnnJob, results: Sequence[U64]) -> PlainResult:
    """Combine every party's result share (checked: all must lie on one polynomial)."""
    if len(results) < job.threshold + 1:
        raise BackendError("too few custodians returned a result")
    try:
        clear = reconstruct_array(
            {i: np.asarray(r, dtype=object) for i, r in enumerate(results)},
            t=job.threshold,
            p=job.prime,
            check=True,
        )
    except InconsistentSharesError as exc:
        raise IntegrityError("the custodians' result shares do not agree") from exc
    values = np.asarray(clear, dtype=object)
    if values.shape != (job.treatments, 3) or (values >= job.rows * 2**32).any():
        raise IntegrityError("the reconstructed result is malformed")
    counts = tuple(int(v) for v in values[:, 0])
    return PlainResult(
        sum(counts),
        counts,
        tuple(int(v) for v in values[:, 1]),
        tuple(int(v) for v in values[:, 2]) if job.event is not None else None,
    )


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on loopback (held open together while chosen)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass(frozen=True)
class PartyRun:
    """Result shares of every party and the wall time of the MPC (seconds)."""

    shares: list[U64]
    seconds: float
    log: str


def _write_npz(path: Path, arrays: Mapping[str, npt.NDArray[np.uint64]]) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    path.write_bytes(buf.getvalue())


def run_local_parties(
    job: KnnJob,
    party_inputs: Sequence[Mapping[str, U64]],
    workdir: Path,
    *,
    timeout: float = 600.0,
    timings: bool = False,
    module: str = "tessera.mpc.knn",
) -> PartyRun:
    """Run ``job.parties`` party processes on loopback and collect their result shares."""
    if len(party_inputs) != job.parties:
        raise ValueError("one input mapping per party")
    workdir.mkdir(parents=True, exist_ok=True)
    job_path = workdir / "job.json"
    job_path.write_text(job.to_json())
    ports = free_ports(job.parties)
    peers = [a for port in ports for a in ("-P", f"127.0.0.1:{port}")]
    procs: list[subprocess.Popen[bytes]] = []
    outs = []
    logs = []
    # One BLAS thread per party: the parties already share the cores between them.
    env = {
        **os.environ,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    start = time.perf_counter()
    try:
        for i, inputs in enumerate(party_inputs):
            in_path = workdir / f"inputs_{i}.npz"
            out_path = workdir / f"result_{i}.npz"
            out_path.unlink(missing_ok=True)
            _write_npz(in_path, inputs)
            log = (workdir / f"party_{i}.log").open("wb")
            logs.append(log)
            outs.append(out_path)
            cmd = [sys.executable, "-m", module, "--job", str(job_path)]
            cmd += ["--inputs", str(in_path), "--result", str(out_path)]
            cmd += [*peers, "-I", str(i), "-T", str(job.threshold), "--no-log"]
            if timings:
                cmd.append("--timings")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env))
        deadline = start + timeout
        # A party that fails leaves the others waiting on it: stop them all at once.
        while True:
            codes = [proc.poll() for proc in procs]  # poll every one (no short-circuit)
            if all(c is not None for c in codes) or any(c not in (None, 0) for c in codes):
                break
            if time.perf_counter() > deadline:
                raise BackendError(f"the MPC parties did not finish within {timeout:.0f} s")
            time.sleep(0.05)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    seconds = time.perf_counter() - start
    logs_text = [
        (workdir / f"party_{i}.log").read_text(errors="replace") for i in range(len(procs))
    ]
    codes = [proc.returncode for proc in procs]
    failed = [i for i, c in enumerate(codes) if c is not None and c > 0]
    failed += [i for i, c in enumerate(codes) if c not in (0, None) and i not in failed]
    if failed or not all(o.exists() for o in outs):
        who = failed[0] if failed else 0
        lines = [ln for ln in logs_text[who].splitlines() if ln.strip()]
        raise BackendError(f"MPC party {who} failed: {(lines or ['no output'])[-1][:200]}")
    shares = []
    for o in outs:
        with np.load(io.BytesIO(o.read_bytes()), allow_pickle=False) as z:
            shares.append(np.asarray(z["result"], dtype=np.uint64))
    return PartyRun(shares, seconds, "".join(logs_text))
