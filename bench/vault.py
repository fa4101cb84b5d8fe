"""Vault put/get throughput on local stores next to raw split/combine and ``cp``.

Usage: python bench/vault.py [--mib 1024] [--scheme shamir] [--k 3] [--n 5]
                             [--repeat R] [--json] [--dir DIR]

Every phase runs in its own child process (so its peak RSS is its own, read with
``os.wait4``; the interpreter alone is ~70 MiB) on the same input file, in this one run,
and is timed inside that process, after removing its previous output and ``sync``:

* ``cp``       the ``cp`` command copying the input (what the disk can do);
* ``split``    ``split_stream`` of the input into n fragment files in n local folders;
* ``combine``  ``combine_stream`` of k of those files into an output file;
* ``put``      ``Vault.put`` into n local ``file://`` stores (staging, quorum commit,
               signed and secret-shared manifest);
* ``get``      ``Vault.get`` back into a file (fastest k, verified, renamed into place).

Throughput is plaintext bytes per second.  Targets (issue 4): put >= 50% of split,
get >= 50% of combine, peak RSS < 400 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from envelope import Run, emit, figure, progress_to_stderr, result
from tessera import keys
from tessera.core.fragment import combine_stream, split_stream
from tessera.vault import Store, Vault

CHUNK = 8 << 20


def _make_input(path: Path, size: int) -> None:
    block = os.urandom(CHUNK)
    with open(path, "wb") as out:
        left = size
        while left:
            step = min(left, CHUNK)
            out.write(block[:step])
            left -= step
            block = block[1:] + block[:1]  # cheap variation between chunks


def _vault(root: Path, k: int, n: int) -> Vault:
    key = keys.read_signing_key(root / "owner.key", passphrase=None)
    stores = [Store(i, (root / f"store-{i}").as_uri()) for i in range(1, n + 1)]
    return Vault(stores, k=k, verifier=key.verify_key, signer=key, state_dir=root / "state")


def run_phase(phase: str, work: Path, k: int, n: int, scheme: str) -> float:
    """One phase (in a child process): remove its previous output, sync, time it."""
    src = work / "input.bin"
    size = src.stat().st_size
    folders = [work / "raw" / f"f{i}" for i in range(1, n + 1)]
    vault = _vault(work / "vault", k, n)
    # Every phase starts from nothing, with no dirty pages of earlier phases pending.
    if phase == "put" and vault.manifests():
        vault.rm("input.bin")
    output = {"cp": "copy.bin", "combine": "combined.bin", "get": "restored.bin"}.get(phase)
    if output:
        (work / output).unlink(missing_ok=True)
    if phase == "split":
        for f in folders:
            f.mkdir(parents=True, exist_ok=True)
            (f / "fragment").unlink(missing_ok=True)
    os.sync()
    start = time.perf_counter()
    if phase == "cp":
        subprocess.run(["cp", str(src), str(work / "copy.bin")], check=True)
    elif phase == "split":
        outs = [open(f / "fragment", "wb") for f in folders]  # noqa: SIM115
        with open(src, "rb") as s:
            split_stream(s, outs, k=k, size=size, scheme=scheme)
        for o in outs:
            o.close()
    elif phase == "combine":
        ins = [open(f / "fragment", "rb") for f in folders[n - k :]]  # noqa: SIM115
        with open(work / "combined.bin", "wb") as out:
            combine_stream(ins, out)
        for f in ins:
            f.close()
    elif phase == "put":
        with open(src, "rb") as s:
            vault.put(s, size, "input.bin", scheme=scheme)
    elif phase == "get":
        vault.get("input.bin", work / "restored.bin")
    else:
        raise SystemExit(f"unknown phase {phase}")
    return time.perf_counter() - start


def _child(phase: str, work: Path, args: argparse.Namespace) -> tuple[float, float]:
    cmd = [
        sys.executable,
        __file__,
        "--phase",
        phase,
        "--dir",
        str(work),
        "--k",
        str(args.k),
        "--n",
        str(args.n),
        "--scheme",
        args.scheme,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"phase {phase} failed with {proc.returncode}")
    # Seconds as timed inside the child (interpreter start-up excluded).
    return float(out.decode().split()[-1]), usage.ru_maxrss / 1024  # KiB -> MiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--scheme", default="shamir", choices=["shamir", "ssms"])
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="rounds; best time counts")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--phase", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(run_phase(args.phase, args.dir, args.k, args.n, args.scheme))
        return
    params = {k: getattr(args, k) for k in ("mib", "scheme", "k", "n", "repeat")}
    run = Run("vault", __doc__, params)
    with progress_to_stderr(args.json):
        report = measure(args)
    if args.json:
        emit(run.document(results(report), **report))
        return
    print(f"vault {args.scheme} {args.k}-of-{args.n}, {args.mib} MiB, local stores")
    for phase, r in report["phases"].items():
        print(
            f"  {phase:<8} {r['seconds']:7.2f} s  {r['mb_per_s']:8.1f} MB/s"
            f"  peak RSS {r['peak_rss_mb']:6.1f} MiB"
        )
    for name, value in report["ratios"].items():
        print(f"  {name:<12} {value:5.2f}")


def results(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the common JSON shape (targets of issue 4)."""
    phases = report["phases"]

    def rate(phase: str, label: str) -> dict[str, Any]:
        return figure(label, phases[phase]["mb_per_s"], "MB/s")

    put_split = report["ratios"]["put/split"]
    get_combine = report["ratios"]["get/combine"]
    rows = [
        result(
            "put vs the raw split",
            rate("put", "Vault.put"),
            rate("split", "split_stream"),
            target=">= 0.5",
            met=put_split >= 0.5,
        ),
        result(
            "get vs the raw combine",
            rate("get", "Vault.get"),
            rate("combine", "combine_stream"),
            target=">= 0.5",
            met=get_combine >= 0.5,
        ),
        result("put vs cp", rate("put", "Vault.put"), rate("cp", "cp")),
        result("get vs cp", rate("get", "Vault.get"), rate("cp", "cp")),
    ]
    for phase in ("put", "get"):
        rss = phases[phase]["peak_rss_mb"]
        rows.append(
            result(
                f"peak RSS of {phase} (its own process)",
                figure(phase, rss, "MiB"),
                target="< 400 MB",
                met=rss * 1.048576 < 400,
            )
        )
    return rows


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every phase in its own process, ``--repeat`` interleaved rounds; the report."""
    size = args.mib << 20
    work = Path(tempfile.mkdtemp(prefix="tessera-bench-vault-", dir=args.dir))
    try:
        _make_input(work / "input.bin", size)
        # The owner's key, unencrypted: a benchmark's throwaway key.
        keys.write_signing_key(work / "vault" / "owner.key", keys.generate(), passphrase=None)
        results: dict[str, dict[str, float]] = {}
        for _ in range(args.repeat):  # interleaved rounds; the best time of each phase counts
            for phase in ("cp", "split", "combine", "put", "get"):
                seconds, rss = _child(phase, work, args)
                best = results.setdefault(phase, {"seconds": seconds, "peak_rss_mb": rss})
                best["seconds"] = min(best["seconds"], seconds)
                best["peak_rss_mb"] = max(best["peak_rss_mb"], rss)
                best["mb_per_s"] = size / best["seconds"] / 1e6
        for name in ("restored.bin", "combined.bin"):
            if not _same(work / "input.bin", work / name):
                raise SystemExit(f"{name} differs from the input!")
        ratios = {
            "put/split": results["put"]["mb_per_s"] / results["split"]["mb_per_s"],
            "get/combine": results["get"]["mb_per_s"] / results["combine"]["mb_per_s"],
            "put/cp": results["put"]["mb_per_s"] / results["cp"]["mb_per_s"],
            "get/cp": results["get"]["mb_per_s"] / results["cp"]["mb_per_s"],
        }
        return {
            "mib": args.mib,
            "repeat": args.repeat,
            "scheme": args.scheme,
            "k": args.k,
            "n": args.n,
            "phases": results,
            "ratios": ratios,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _same(a: Path, b: Path) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(CHUNK), fb.read(CHUNK)
            if x != y:
                return False
            if not x:
                return True


if __name__ == "__main__":
    main()
