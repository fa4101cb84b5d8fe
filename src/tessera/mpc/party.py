"""One MPyC party of a Tessera job (run as ``python -m tessera.mpc.party``).

The custodian node starts this in the job's working folder (which holds the TLS files
MPyC's ``--ssl`` reads from ``.config/``, ``job.json``, the party's input shares and its
noise) with MPyC's own arguments: ``-I i -P host:port ... --ssl``.  The job folder is
passed in ``$TESSERA_MPC_JOB`` because importing ``mpyc.runtime`` parses ``sys.argv``.

The program for the job type (:data:`tessera.mpc.jobs.PROGRAMS`) gets a
:class:`PartyContext` and calls :meth:`PartyContext.release` with the secure results:
they are re-randomised and this party's share is written to ``result.json``; nothing is
opened inside the MPC.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from tessera.mpc.jobs import program_module

__all__ = ["JOB_ENV", "PartyContext", "load_input", "main"]

JOB_ENV = "TESSERA_MPC_JOB"
PRIME = 2**61 - 1


def load_input(folder: Path, alias: str) -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
    """This party's shares (uint64 arrays), clear keys and row origins for ``alias``."""
    with np.load(folder / f"input-{alias}.npz", allow_pickle=False) as z:
        parts = {k[2:]: np.asarray(z[k]) for k in z.files if k.startswith("p:")}
        meta = json.loads(bytes(z["meta"]).decode())
    return parts, meta["keys"], meta["origins"]


class PartyContext:
    """What a party program sees: the runtime, the job, its inputs, its noise, output."""

    def __init__(self, mpc: Any, folder: Path, job: dict[str, Any]) -> None:
        self.mpc = mpc
        self.folder = folder
        self.job = job
        self.params: dict[str, Any] = job["params"]
        self.pid: int = mpc.pid
        self.prime = int(job["params"].get("prime", PRIME))
        self.secint = mpc.SecInt(29, p=self.prime)
        self.field = self.secint.field

    def input(self, alias: str) -> tuple[dict[str, Any], dict[str, list[str]], list[str]]:
        """Local shares (uint64), clear pseudonym keys and origins of input ``alias``."""
        return load_input(self.folder, alias)

    def shared(self, values: Any) -> Any:
        """A secure array whose local share is ``values`` (this party's Shamir shares)."""
        arr = np.asarray(values)
        return self.secint.array(self.field.array(arr.astype(object)))

    def noise(self) -> Any | None:
        """This party's private noise integers (from its node's DP hook), or None."""
        path = self.folder / "noise.npy"
        if not path.exists():
            return None
        return np.load(path, allow_pickle=False).astype(np.int64)

    async def add_noise(self, cells: Any) -> Any:
        """``cells`` plus the sum of every party's private noise vector (if the job asks).

        Each party inputs its own vector (``mpc.input``); only the sum is ever formed.
        """
        spec = self.job.get("noise")
        if not spec:
            return cells
        count = int(spec["cells"])
        mine = self.noise()
        if mine is None or mine.shape != (count,):
            raise SystemExit("noise vector missing or of the wrong length")
        vec = self.secint.array(np.mod(mine.astype(object), self.prime))
        total = cells
        for contribution in self.mpc.input(vec, senders=list(range(len(self.mpc.parties)))):
            total = total + contribution
        return total

    async def release(self, values: Any, meta: dict[str, Any] | None = None) -> None:
        """Re-randomise the secure array ``values`` and write this party's share."""
        fresh = self.mpc._reshare(values)
        share = await self.mpc.gather(fresh)
        flat = [int(v) for v in np.asarray(share.value, dtype=object).reshape(-1)]
        doc = {"party": self.pid, "shares": flat, "meta": meta or {}}
        tmp = self.folder / "result.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.folder / "result.json")


async def _run(mpc: Any, ctx: PartyContext) -> None:
    module = importlib.import_module(program_module(ctx.job["type"]))
    await mpc.start()
    try:
        await module.run(ctx)
    finally:
        await mpc.shutdown()


def main() -> None:
    """Entry point inside a party process."""
    folder = Path(os.environ[JOB_ENV])
    job = json.loads((folder / "job.json").read_text())
    from tessera.mpc import _fastrand

    _fastrand.install()
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    from mpyc.runtime import mpc

    ctx = PartyContext(mpc, folder, job)
    mpc.run(_run(mpc, ctx))


if __name__ == "__main__":
    main()
