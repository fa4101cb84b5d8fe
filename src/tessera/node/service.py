"""A custodian node's work: table shares, signed-job checks, MPyC party processes.

The HTTP layer (:mod:`tessera.node.app`) is a thin shell over :class:`NodeService`.

DP hook: a job whose ``noise`` is not null needs one private integer per released cell
from this custodian.  :class:`NodeService` takes a ``noise_source`` callable
``(spec, party, parties) -> Sequence[int]``; by default it samples with
``tessera.dp.sample_noise_share`` from the release plan this custodian derived from its
own copy of the table's policy (an enforcing custodian refuses a job whose plan differs;
see :mod:`tessera.workflows.custodian`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tessera.config import Environment, parse_max_jobs
from tessera.core.audit_sink import Action, AuditEvent, AuditSink
from tessera.errors import (
    BackendError,
    ConfigError,
    InputError,
    IntegrityError,
    JobAbortedError,
    NodeBusyError,
    NotFoundError,
    PolicyError,
    ReplayError,
    TesseraError,
)
from tessera.keys.documents import SignedDocument
from tessera.mpc.jobs import validate_job
from tessera.node.outputs import OutputDesk
from tessera.node.parties import PartyPool
from tessera.tables.store import ShareStore
from tessera.workflows.airlock import Airlock
from tessera.workflows.custodian import Admission, Custodian, store_root

__all__ = [
    "JOB_WINDOW_S",
    "NodeService",
    "NoiseSource",
    "ReplayError",
    "check_party",
    "max_jobs_of",
    "store_root",
]

JOB_WINDOW_S = 300
NoiseSource = Callable[[Mapping[str, Any], int, int], Sequence[int]]


def max_jobs_of(env: Environment) -> int:
    """How many jobs a node runs at once: ``[node] max_jobs`` in tessera.toml, else twice
    the cores (at least 4).  Each running job holds one MPC party process."""
    raw = env.extra.get("node", {}).get("max_jobs")
    given = parse_max_jobs(raw, f"{env.path}: [node] max_jobs")
    return given if given is not None else max(4, 2 * (os.cpu_count() or 1))


def _default_noise_source() -> NoiseSource | None:
    """This custodian's DP noise from :mod:`tessera.dp` (OpenDP's exact samplers).

    The noise spec carries ``release_plan`` (``tessera.dp.ReleasePlan.to_dict``, one
    statistic per plan measure, in order: the custodian's own plan when it enforces) and
    ``groups``; the noise is
    ``sample_noise_share(plan, cells=groups)`` flattened measure-major.
    """
    try:
        from tessera.dp import ReleasePlan, sample_noise_share
    except ImportError:  # pragma: no cover - dp is part of the distribution
        return None

    def source(spec: Mapping[str, Any], party: int, parties: int) -> Sequence[int]:
        if not isinstance(spec.get("release_plan"), dict):
            raise InputError("noise spec without a release_plan")
        plan = ReleasePlan.from_dict(spec["release_plan"])
        noise = sample_noise_share(plan, cells=int(spec.get("groups", 1)))
        return [int(v) for v in noise.reshape(-1)]

    return source


class NodeService:
    """Custodian ``node_id`` of environment ``env``."""

    def __init__(
        self,
        env: Environment,
        node_id: int,
        *,
        noise_source: NoiseSource | None = None,
        party_timeout: float = 600.0,
        max_jobs: int | None = None,
        warm: bool = True,
        audit: AuditSink | None = None,
        enforce: bool = True,
    ) -> None:
        if not any(n.id == node_id for n in env.nodes):
            raise ConfigError(f"node {node_id} is not in {env.path}")
        self.env = env
        self.node_id = node_id
        self.party = node_id - 1
        self.root = store_root(env, node_id)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ShareStore(self.root)
        self.pki = env.home / "pki"
        self.noise_source = noise_source if noise_source is not None else _default_noise_source()
        self.party_timeout = party_timeout
        self.max_jobs = max_jobs if max_jobs is not None else max_jobs_of(env)
        self._slots = 0  # jobs holding a slot (verified, admitted or running)
        self._lock = threading.Lock()
        self._replay = sqlite3.connect(self.root / "replay.sqlite", check_same_thread=False)
        self._replay.execute(
            "CREATE TABLE IF NOT EXISTS seen (job_id TEXT PRIMARY KEY, issued_at REAL)"
        )
        self._replay.commit()
        self.custodian = Custodian(
            self.root,
            parties=len(env.nodes),
            threshold=env.mpc_threshold,
            enforce=enforce,
        )
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._last_request = time.monotonic()
        self._in_flight = 0
        self._aborted: set[str] = set()
        # held while this service lives: a second process serving the same store must not
        # settle the reservations of jobs the first one is running, nor remove their folders
        self._store_lock = _lock_store(self.root)
        if self._store_lock is not None:
            self._settle_leftovers()
            self._clean_jobs()
        self.parties = PartyPool(self.root, warm=warm)
        self.audit = audit if audit is not None else _node_audit(env, node_id)
        self.outputs = OutputDesk(self, Airlock(self.root))
        # the warm party is started when the first job is announced (free_port) or a
        # table is uploaded, not here: a node that never runs a job never pays for one

    def _settle_leftovers(self) -> None:
        """Settle the budget a previous run of this node reserved for jobs it was killed
        during (see :meth:`Custodian.settle_leftovers`): before ``_clean_jobs``, which
        removes the job folders that tell whether its party had finished."""
        jobs = self.root / "jobs"
        finished = (
            {p.name for p in jobs.iterdir() if (p / "result.json").exists()}
            if jobs.is_dir()
            else set()
        )
        for job_id, outcome in self.custodian.settle_leftovers(finished).items():
            _log.warning(
                "node %d: job %s was cut short when this node stopped; its budget reservation "
                "is %s",
                self.node_id,
                job_id[:12],
                outcome,
            )

    def _clean_jobs(self) -> None:
        """Remove what a previous run of this node left (job folders hold key copies)."""
        jobs = self.root / "jobs"
        if not jobs.is_dir():
            return
        for path in jobs.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith("zygote-"):
                path.unlink(missing_ok=True)

    # ----- tables --------------------------------------------------------------------
    def tables(self) -> list[dict[str, Any]]:
        """Manifests of the tables this node holds shares of."""
        return self.store.tables()

    def append_chunk(self, name: str, chunk_id: str, manifest: dict[str, Any], data: bytes) -> None:
        """Store one appended chunk of shares (the manifest names this node's party)."""
        check_party(manifest, self.party)
        self.parties.refill()  # queries follow imports: warm a party for the first one
        self.store.append(name, manifest, chunk_id, data)

    def change_table(self, document: SignedDocument) -> dict[str, Any]:
        """Remove or widen a table when a steward signed it (``tessera table rm/alter``)."""
        from tessera.workflows.table_admin import admit_table_change, apply_table_change

        table = str(document.body.get("table", ""))
        with self._lock:
            try:
                manifest = self.store.manifest(table)
            except NotFoundError:
                manifest = {"chunks": []}
            current = self.custodian.table_policy(table)
            body = admit_table_change(
                self.custodian.roster(),
                document,
                manifest,
                policy_steward=None if current is None else current.steward,
            )
            return apply_table_change(self.store, body)

    # ----- jobs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def job_slot(self) -> Iterator[None]:
        """One of the ``max_jobs`` slots for the job being posted, or NodeBusyError at
        once (before it is verified or charged): a crowd of jobs never makes this node
        start more parties than it can run, nor wait for peers that are as full."""
        with self._lock:
            if self._slots >= self.max_jobs:
                busy = True
            else:
                busy = False
                self._slots += 1
        if busy:
            _log.info("node %d: a job was refused, %d jobs running", self.node_id, self.max_jobs)
            raise NodeBusyError(
                f"this custodian is running its limit of {self.max_jobs} jobs: send it again "
                "shortly (or raise [node] max_jobs)"
            )
        try:
            yield
        finally:
            with self._lock:
                self._slots -= 1

    def verify(self, envelope: Any) -> tuple[dict[str, Any], str]:
        """The job inside a signed envelope and its requester; refused if forged or replayed."""
        job, requester = self.custodian.authenticate(envelope)
        validate_job(job, parties=len(self.env.nodes))
        now = time.time()
        age = now - float(job["issued_at"])
        if abs(age) > JOB_WINDOW_S:
            raise ReplayError(_stale(age))
        with self._lock:
            self._replay.execute("DELETE FROM seen WHERE issued_at < ?", (now - 2 * JOB_WINDOW_S,))
            try:
                self._replay.execute(
                    "INSERT INTO seen VALUES (?, ?)", (job["job_id"], float(job["issued_at"]))
                )
                self._replay.commit()
            except sqlite3.IntegrityError:
                raise ReplayError("job replayed") from None
        return job, requester

    def request_started(self) -> None:
        """A request arrived (the node is not idle while any is in flight)."""
        with self._lock:
            self._in_flight += 1
            self._last_request = time.monotonic()

    def request_ended(self) -> None:
        """A request was answered."""
        with self._lock:
            self._in_flight -= 1
            self._last_request = time.monotonic()

    def idle_s(self) -> float:
        """Seconds since the last request ended (0 while one is in flight)."""
        with self._lock:
            return 0.0 if self._in_flight else time.monotonic() - self._last_request

    def abort(self, job_id: str) -> bool:
        """Stop the party of a running job (another custodian refused it); True if one ran."""
        with self._lock:
            self._aborted.add(job_id)
            proc = self._running.get(job_id)
        if proc is None:
            return False
        proc.kill()
        return True

    def free_port(self, host: str) -> int:
        """A currently free TCP port on ``host`` for an MPyC party (a job is coming:
        a warm party is started now if none is ready)."""
        self.parties.refill()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])

    def _prepare(self, folder: Path, admission: Admission) -> None:
        job = admission.job
        noise = self._noise_spec(admission)
        cfg = folder / ".config"
        cfg.mkdir(parents=True)
        shutil.copyfile(self.pki / f"node-{self.node_id}.crt", cfg / f"party_{self.party}.crt")
        shutil.copyfile(self.pki / f"node-{self.node_id}.key", cfg / f"party_{self.party}.key")
        os.chmod(cfg / f"party_{self.party}.key", 0o600)
        shutil.copyfile(self.pki / "ca.crt", cfg / "mpyc_ca.crt")
        inputs: dict[str, Any] = {}
        for item in job["inputs"]:
            chunks = item.get("chunks")
            if chunks is not None and not (
                isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)
            ):
                raise InputError("input chunks must be a list of ids")
            located = self.store.chunk_dirs(item["table"], chunks)
            for part in item["parts"]:
                if located and not (Path(located[0]["dir"]) / f"{part}.npy").exists():
                    raise InputError(f"table {item['table']} has no part {part}")
            inputs[item["alias"]] = {"parts": item["parts"], "chunks": located}
        (folder / "inputs.json").write_text(json.dumps(inputs))
        if noise:
            if self.noise_source is None:
                raise PolicyError("this custodian has no DP noise source for noisy jobs")
            values = np.array(
                [int(v) for v in self.noise_source(noise, self.party, len(self.env.nodes))],
                dtype=np.int64,
            )
            if values.shape != (int(noise["cells"]),):
                raise BackendError("the noise source returned the wrong number of cells")
            np.save(folder / "noise.npy", values)
        if admission.checks is not None:
            self._prepare_checks(folder, admission)
        (folder / "job.json").write_text(json.dumps(job))

    def _prepare_checks(self, folder: Path, admission: Admission) -> None:
        """``checks.json`` from this custodian's policy, with its shares of the
        researcher's earlier cohorts on the table (single-table jobs)."""
        assert admission.checks is not None
        doc: dict[str, Any] = {"version": 1, **admission.checks.to_dict(), "history": []}
        inputs = admission.job["inputs"]
        if admission.checks.differencing and len(inputs) == 1:
            table = str(inputs[0]["table"])
            chunks = self.outputs.chunk_ids(table)
            past = self.outputs.airlock.history(admission.requester, table, chunks)
            for path in past:  # named by the job that released it (the parties agree on it)
                name = f"history-{path.stem}.npy"
                shutil.copyfile(path, folder / name)
                doc["history"].append(name)
        (folder / "checks.json").write_text(json.dumps(doc))

    def close(self) -> None:
        """Stop the warm party process and let go of the store."""
        self.parties.close()
        with self._lock:
            held, self._store_lock = self._store_lock, None
        if held is not None:
            os.close(held)

    def run_job(self, envelope: Any) -> dict[str, Any]:
        """Verify, admit and run a signed job; return this party's result shares (audited).

        The budget this custodian reserved is committed when the share is returned and
        refunded when the job fails before that.
        """
        job: dict[str, Any] | None = None
        try:
            job, requester = self.verify(envelope)
            self.witness_gateway()
            manifests = self._manifests(job)
            admission = self.custodian.admit(job, requester, manifests)
        except Exception as exc:
            self._record_job(job, exc)
            raise
        try:
            result = self._execute(admission)
            result = self.outputs.screen(admission, result)
        except BaseException as exc:
            self.custodian.settle(admission, released=False)
            self._record_job(job, exc)
            raise
        try:
            self.custodian.settle(admission, released=True)
        finally:
            # kept until the charge is committed: a restart after a kill here finds the
            # party's result.json and commits (see _settle_leftovers)
            shutil.rmtree(self.root / "jobs" / str(job["job_id"]), ignore_errors=True)
        if job["type"] == "validate":
            self._record_validation(job, manifests, result)
        self._record_job(job, None)
        return result

    def held(self, researcher: str | None = None) -> list[dict[str, Any]]:
        """The releases this custodian holds back (``GET /v1/held``)."""
        return self.outputs.airlock.listing(researcher)

    def _record_validation(
        self, job: Mapping[str, Any], manifests: Mapping[str, Any], result: Mapping[str, Any]
    ) -> None:
        """Keep what this custodian's own party found (never the requester's word)."""
        item = job["inputs"][0]
        table = str(item["table"])
        chunks = [str(c) for c in item["chunks"]]
        found = result.get("meta", {}).get("valid")
        if not isinstance(found, list) or len(found) != len(chunks):
            found = [False] * len(chunks)
        columns = manifests[table].get("columns", []) if table in manifests else []
        for chunk, ok in zip(chunks, found, strict=True):
            good = ok is True
            self.custodian.record_validation(table, [chunk], columns, ok=good)
            if not good:
                _log.warning(
                    "node %d: chunk %s of %s failed validation", self.node_id, chunk[:12], table
                )

    def _manifests(self, job: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The manifests of the tables ``job`` reads that this custodian holds."""
        out = {}
        for table in {str(item["table"]) for item in job["inputs"]}:
            with contextlib.suppress(NotFoundError, InputError):
                out[table] = self.store.manifest(table)
        return out

    def _noise_spec(self, admission: Admission) -> dict[str, Any] | None:
        """The noise this custodian adds: from its own release plan when it enforces."""
        noise = admission.job.get("noise")
        if admission.release is None or not isinstance(noise, dict):
            return noise if isinstance(noise, dict) else None
        return {**noise, "release_plan": admission.release.to_dict()}

    def _execute(self, admission: Admission) -> dict[str, Any]:
        job = admission.job
        job_id = str(job["job_id"])
        folder = self.root / "jobs" / job_id
        started = time.time()
        log_path: Path | None = None
        succeeded = False
        try:
            self._prepare(folder, admission)
            argv = ["-I", str(self.party)]
            for host, port in job["parties"]:
                argv += ["-P", f"{host}:{port}"]
            argv += ["--ssl", "--no-log"]
            proc, log_path = self.parties.take(folder, argv)
            with self._lock:
                self._running[job_id] = proc
                if job_id in self._aborted:
                    proc.kill()
            try:
                code = proc.wait(timeout=self.party_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise BackendError("the MPC party timed out") from None
            finally:
                with self._lock:
                    self._running.pop(job_id, None)
            if job_id in self._aborted:
                raise JobAbortedError("the job was aborted (another custodian refused it)")
            result_path = folder / "result.json"
            if code != 0 or not result_path.exists():
                tail = log_path.read_text(errors="replace").strip().splitlines()
                last = tail[-1][:200] if tail else f"exit status {code}"
                raise BackendError(f"the MPC party failed: {last}")
            result: dict[str, Any] = json.loads(result_path.read_text())
            succeeded = True
        finally:
            with self._lock:
                self._aborted.discard(job_id)
            if not succeeded:  # else run_job removes it once the charge is committed
                shutil.rmtree(folder, ignore_errors=True)
            if log_path is not None:
                log_path.unlink(missing_ok=True)
            # the next warm party starts after this job, not competing with it for CPU
            threading.Thread(target=self.parties.refill, daemon=True).start()
        result["node"] = self.node_id
        result["seconds"] = round(time.time() - started, 3)
        return result

    # ----- audit ---------------------------------------------------------------------
    def close_audit(self) -> None:
        """Sign what this node's audit log holds unsigned (at shutdown; never raises)."""
        close = getattr(self.audit, "close", None)
        if callable(close):
            try:
                close()
            except Exception as exc:  # a warning: the entries are on disk already
                name = type(exc).__name__
                _log.warning("node %d: audit head not signed (%s)", self.node_id, name)

    def witness_gateway(self) -> None:
        """Witness the gateway log's newest head before a job is admitted; the job is
        refused (ChainBrokenError) when that log is inconsistent with the held head."""
        from tessera.workflows.audit_witness import witness_gateway

        witness_gateway(self.env, self.node_id)

    def witnessed(self) -> dict[str, Any]:
        """The audit heads this custodian holds, co-signed (``GET /v1/audit/witness``)."""
        from tessera.workflows.audit_witness import witnessed

        return witnessed(self.env, self.node_id)

    def witness(self, doc: Any) -> dict[str, Any]:
        """Witness and co-sign another log's head (``POST /v1/audit/witness``)."""
        from tessera.workflows.audit_witness import observe_head

        return observe_head(self.env, self.node_id, doc)

    def _record_job(self, job: Mapping[str, Any] | None, error: BaseException | None) -> None:
        """One ``mpc.job`` event in this node's log: accepted and run, refused or failed.

        ``job`` is None when the envelope was refused before its signature verified: then
        nothing from it is recorded (it is unauthenticated input).  Never raises.
        """
        detail: dict[str, str | int | float | bool] = {}
        entity = ""
        if job is not None:
            tables = sorted({str(item["table"]) for item in job["inputs"]})
            entity = ",".join(tables)
            detail.update(job=str(job["job_id"]), type=str(job["type"]))
            detail["noise"] = bool(job.get("noise"))
        if isinstance(error, PolicyError | IntegrityError):
            outcome = "denied"
        elif isinstance(error, NotFoundError):
            outcome = "not_found"
        elif isinstance(error, TesseraError):
            outcome = "failure"
        else:
            outcome = "success" if error is None else "error"
        if error is not None:
            detail["error"] = error.code if isinstance(error, TesseraError) else "internal_error"
            if outcome == "denied":
                _log.warning("node %d refused a job: %s", self.node_id, error)
        event = AuditEvent(
            Action.MPC_JOB,
            outcome=outcome,
            user=str(job.get("requester", "")) if job is not None else "",
            role="researcher" if job is not None else "",
            source=f"node-{self.node_id}",
            entity=entity,
            entity_type="table" if entity else "",
            detail=detail,
        )
        try:
            self.audit.emit(event)
        except Exception as exc:  # auditing never breaks a job
            _log.warning("node %d: audit event not recorded (%s)", self.node_id, type(exc).__name__)


_log = logging.getLogger(__name__)


def _stale(age: float) -> str:
    """Why a job ``age`` seconds old (negative: from the future) is refused: one line
    that names the clocks, the likely cause when a fresh job is refused."""
    when = f"{round(abs(age))} s {'ago' if age > 0 else 'in the future'}"
    return (
        f"job signed {when} by this node's clock, outside the {JOB_WINDOW_S} s time window "
        "that keeps jobs fresh: check the clocks of the requester and of this custodian"
    )


def _lock_store(root: Path) -> int | None:
    """An exclusive lock on the node's store (a file descriptor), or None when another
    live process holds it.  The kernel drops it when the holder dies, even by SIGKILL."""
    fd = os.open(root / "node.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def check_party(manifest: Any, party: int) -> None:
    """InputError unless an uploaded chunk's manifest is an object naming ``party``."""
    if not isinstance(manifest, dict) or type(manifest.get("party")) is not int:
        raise InputError("the chunk manifest must be an object naming its party")
    if manifest["party"] != party:
        raise InputError("these shares are for another custodian")


def _node_audit(env: Environment, node_id: int) -> AuditSink:
    """This node's audit log (``HOME/nodes/<i>/audit``), or a null sink if it cannot open."""
    from tessera.core.audit_sink import NullAuditSink
    from tessera.workflows.audit import node_log

    try:
        return node_log(env.home, node_id)
    except (TesseraError, OSError) as exc:
        _log.warning("node %d: no audit log (%s)", node_id, type(exc).__name__)
        return NullAuditSink()
