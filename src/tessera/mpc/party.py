"""One MPyC party of a Tessera job (run as ``python -m tessera.mpc.party``).

The custodian node starts this in the job's working folder (which holds the TLS files
MPyC's ``--ssl`` reads from ``.config/``, ``job.json``, the party's input shares and its
noise) with MPyC's own arguments: ``-I i -P host:port ... --ssl``.  The job folder is
passed in ``$TESSERA_MPC_JOB`` because importing ``mpyc.runtime`` parses ``sys.argv``.

The program for the job type (:data:`tessera.mpc.jobs.PROGRAMS`) gets a
:class:`PartyContext` and calls :meth:`PartyContext.release` with the secure results:
they are re-randomised and this party's share is written to ``result.json``; nothing else
is opened inside the MPC.  When the node asks for output checks (``checks.json`` in the
job folder, see :mod:`tessera.mpc.disclosure`) the programs also open, to every party,
the number of result cells failing each disclosure rule, and a single-table SQL job
writes this party's share of its cohort selection to ``cohort.npy``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tessera.mpc.jobs import program_module
from tessera.mpc.stored import LazyKeys, LazyParts, StoredTable, read_inputs
from tessera.version import PROTOCOL_VERSION

__all__ = [
    "CHECKS_FILE",
    "COHORT_FILE",
    "JOB_ENV",
    "NODE_PID_ENV",
    "PartyContext",
    "follow_node",
    "load_history",
    "load_input",
    "main",
]

JOB_ENV = "TESSERA_MPC_JOB"
PROFILE_ENV = "TESSERA_MPC_PROFILE"
PRIME = 2**61 - 1
NODE_PID_ENV = "TESSERA_NODE_PID"  # the node that started this party (its parent)
WATCH_S = 0.2  # how often a party checks that the node that started it is still there
CHECKS_FILE = "checks.json"  # written by the node when the table's policy asks for checks
COHORT_FILE = "cohort.npy"  # this party's share of a SQL job's cohort selection


def follow_node(node_pid: int) -> None:
    """Exit at once when the node process ``node_pid`` that started this party is gone.

    A node killed outright (``kill -9``, a crash) cannot stop its party; left alone the
    party would go on with the job nobody will collect (and keep its peers' MPC alive)
    or wait for one forever.  The check is the parent pid (a dead node's children are
    re-parented), so it holds for the warm party and one started afresh alike; the node
    names itself in ``$TESSERA_NODE_PID``, so a party whose node died while it started
    leaves too.
    """

    def watch() -> None:
        while os.getppid() == node_pid:
            time.sleep(WATCH_S)
        os._exit(1)

    threading.Thread(target=watch, name="tessera-follow-node", daemon=True).start()


def load_input(
    folder: Path, alias: str
) -> tuple[Mapping[str, Any], Mapping[str, list[str]], list[str]]:
    """This party's shares (uint64 arrays), clear keys and row origins for ``alias``.

    The node lists, in ``inputs.json``, the chunk folders of its store (one
    ``PART.npy`` per part, ``keys.json`` and, in version 2, the ``chunk.json`` index);
    they are read in place, memory-mapped, each part and the keys on first access and
    checked against the index (:mod:`tessera.mpc.stored`).
    """
    table = StoredTable(read_inputs(folder)[alias])
    return LazyParts(table), LazyKeys(table), table.origins()


def load_history(path: Path, rows: int, prime: int) -> np.ndarray | None:
    """This party's shares of an earlier cohort (``path``, a 1-D integer ``.npy`` of field
    elements) as int64 of length ``rows``, padded with zeros (rows appended since were
    not in it); None when it is longer than ``rows`` (not comparable).  SystemExit if
    the file is missing or malformed."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"history {path.name}: unreadable ({type(exc).__name__})") from None
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise SystemExit(f"history {path.name}: not a vector of field elements")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= prime):
        raise SystemExit(f"history {path.name}: values outside the field")
    if arr.shape[0] > rows:
        return None
    out = np.zeros(rows, dtype=np.int64)
    out[: arr.shape[0]] = arr.astype(np.int64)
    return out


class PartyContext:
    """What a party program sees: the runtime, the job, its inputs, its noise, output."""

    def __init__(self, mpc: Any, folder: Path, job: dict[str, Any]) -> None:
        self.mpc = mpc
        self.folder = folder
        self.job = job
        self.params: dict[str, Any] = job["params"]
        self.pid: int = mpc.pid
        self.cpu_start = time.process_time()
        self.prime = int(job["params"].get("prime", PRIME))
        self.secint = mpc.SecInt(29, p=self.prime)
        self.field = self.secint.field
        self._checks: dict[str, Any] | None = None
        self._checks_read = False
        self._tables: dict[str, StoredTable] = {}
        self.history_short = False

    def input(self, alias: str) -> tuple[Mapping[str, Any], Mapping[str, list[str]], list[str]]:
        """Local shares (uint64), clear pseudonym keys and origins of input ``alias``."""
        table = self.table(alias)
        return LazyParts(table), LazyKeys(table), table.origins()

    def table(self, alias: str) -> StoredTable:
        """Input ``alias`` as stored: parts memory-mapped per chunk, read when asked."""
        if alias not in self._tables:
            self._tables[alias] = StoredTable(read_inputs(self.folder)[alias])
        return self._tables[alias]

    def shared(self, values: Any) -> Any:
        """A secure array whose local share is ``values`` (this party's Shamir shares)."""
        arr = np.asarray(values)
        return self.secint.array(self.field.array(arr.astype(object)))

    def checks(self) -> dict[str, Any] | None:
        """The output-check settings: the node's ``checks.json`` (its own policy), else
        the ``checks`` the signed job declares (a node that does not enforce runs the
        same program as the others), else None.  SystemExit when malformed."""
        if not self._checks_read:
            path = self.folder / CHECKS_FILE
            declared = self.params.get("checks")
            if path.exists():
                try:
                    doc = json.loads(path.read_text())
                except ValueError:
                    raise SystemExit(f"{CHECKS_FILE} is not JSON") from None
                if not isinstance(doc, dict) or doc.get("version") != 1:
                    raise SystemExit(f"{CHECKS_FILE}: expected an object with version 1")
                self._checks = doc
            elif isinstance(declared, dict):
                self._checks = {"version": 1, **declared, "history": []}
            self._checks_read = True
        return self._checks

    async def agree_checks(self) -> dict[str, Any] | None:
        """:meth:`checks`, once every party agreed on them: one exchange of the settings'
        digest and of the earlier cohorts each holds (named by the job that released
        them); only the cohorts every party holds are compared, in one order.  SystemExit
        when the custodians hold different settings.  No exchange without checks."""
        spec = self.checks()
        if spec is None:
            return None
        settings = {k: v for k, v in spec.items() if k not in ("history", "differencing")}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
        names = [n for n in spec.get("history") or [] if isinstance(n, str)]
        told = await self.mpc.transfer((digest, names))
        if len({d for d, _ in told}) != 1:
            raise SystemExit("the custodians hold different output checks for this job")
        common = set(names)
        for _, theirs in told:
            common &= set(theirs)
        first = list(told[0][1])
        self._checks = {**spec, "history": [n for n in first if n in common]}
        # a cohort this party holds that another does not is compared by nobody: fail
        # closed (the release is held), else one custodian could switch differencing off
        self.history_short = common != set(names)
        return self._checks

    def history(self, rows: int) -> list[np.ndarray | None]:
        """This party's shares of the earlier cohorts ``checks.json`` lists (files in the
        job folder), each as :func:`load_history` gives it for ``rows`` rows."""
        names = (self.checks() or {}).get("history") or []
        if not isinstance(names, list):
            raise SystemExit(f"{CHECKS_FILE}: history must be a list of file names")
        out = []
        for name in names:
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise SystemExit(f"{CHECKS_FILE}: a history entry must name a file in the job")
            out.append(load_history(self.folder / name, rows, self.prime))
        return out

    def write_cohort(self, shares: np.ndarray) -> None:
        """Write this party's shares (int64 field elements) of the cohort to ``cohort.npy``."""
        tmp = self.folder / f"{COHORT_FILE}.tmp"
        with open(tmp, "wb") as fh:
            np.save(fh, np.asarray(shares, dtype=np.int64), allow_pickle=False)
        os.replace(tmp, self.folder / COHORT_FILE)

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
        info = dict(meta or {})
        info["cpu_s"] = round(time.process_time() - self.cpu_start, 3)
        doc = {"party": self.pid, "shares": flat, "meta": info}
        tmp = self.folder / "result.json.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.folder / "result.json")


async def _same_protocol(mpc: Any, pid: int) -> None:
    """Refuse to compute with a party that speaks another protocol version (one round,
    before any input): a clear reason on stderr instead of a garbled computation."""
    spoken = await mpc.transfer(PROTOCOL_VERSION)
    others = {p: v for p, v in enumerate(spoken) if p != pid and v != PROTOCOL_VERSION}
    if others:
        detail = ", ".join(f"node {p + 1} speaks {v}" for p, v in sorted(others.items()))
        sys.stderr.write(
            f"mpc start-up: protocol version mismatch: this node speaks {PROTOCOL_VERSION}, "
            f"{detail}\n"
        )
        sys.stderr.flush()
        os._exit(1)


async def _run(mpc: Any, ctx: PartyContext) -> None:
    module = importlib.import_module(program_module(ctx.job["type"]))
    await mpc.start()
    await _same_protocol(mpc, ctx.pid)
    try:
        await module.run(ctx)
    except BaseException:
        # MPyC's shutdown barrier would wait forever for the other parties' pending
        # rounds: report and leave at once (the node reports the failure).
        traceback.print_exc(file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    await mpc.shutdown()


def main() -> None:
    """Entry point inside a party process."""
    folder = Path(os.environ[JOB_ENV])
    job = json.loads((folder / "job.json").read_text())
    from tessera.mpc import _speedups

    _speedups.install()
    sys.stdout = io.TextIOWrapper(sys.stdout.buffer, line_buffering=True)
    from mpyc.runtime import mpc

    ctx = PartyContext(mpc, folder, job)
    profile_dir = os.environ.get(PROFILE_ENV)
    if profile_dir:  # developer aid: cProfile stats per party
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
        try:
            mpc.run(_run(mpc, ctx))
        finally:
            prof.disable()
            prof.dump_stats(str(Path(profile_dir) / f"party-{ctx.pid}-{job['job_id'][:8]}.prof"))
        return
    mpc.run(_run(mpc, ctx))


def zygote() -> None:
    """Pre-import everything but ``mpyc.runtime``, then wait for one job on stdin.

    The node keeps one such process ready so that a job does not pay for interpreter
    start-up and imports.  Stdin carries one JSON line ``{"folder": ..., "argv": [...]}``
    with MPyC's arguments; ``mpyc.runtime`` is imported only after ``sys.argv`` is set.
    """
    import importlib

    from tessera.mpc import _speedups, jobs

    for module in jobs.PROGRAMS.values():
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)
    import mpyc.asyncoro
    import mpyc.sectypes  # noqa: F401

    _speedups.install()
    line = sys.stdin.readline()
    if not line:
        return
    order = json.loads(line)
    folder = str(order["folder"])
    os.chdir(folder)
    os.environ[JOB_ENV] = folder
    sys.argv = [sys.argv[0], *[str(a) for a in order["argv"]]]
    main()


if __name__ == "__main__":
    follow_node(int(os.environ.get(NODE_PID_ENV) or os.getppid()))
    if sys.argv[1:] == ["--zygote"]:
        zygote()
    else:
        main()
