"""A custodian's own authority: the roster it pinned, the policies it holds, its ledger.

Every custodian node decides on its own, from what it holds, whether a job may run
(:meth:`Custodian.admit`), so breaking a table's rules takes a majority of custodians,
the same bar as reading the data:

* the job must be signed by a researcher of the pinned roster who is granted every
  input table (:meth:`Custodian.authenticate`, :meth:`Custodian.admit`);
* the minimum group size, the DP noise and the charge come from the custodian's copy of
  each table's signed policy, never from the job: an exact job on a DP table, a job
  without noise, with less noise or with other bounds, or a lower minimum group is
  refused (:mod:`tessera.workflows.job_checks`);
* the budget is reserved in the custodian's own ledger before the MPC starts, committed
  when it released its share, refunded when the job failed before that (or, when the
  custodian was killed during the job, when it starts again: :meth:`Custodian.settle_leftovers`).

Policies are documents signed by the table's steward; one that weakens privacy needs a
second privileged signature (an officer or another steward).  A table without a policy
gets :data:`DEFAULT_POLICY` (exact answers, minimum group 5), which a job may raise but
never lower.  State lives in the node's folder: ``roster.json`` (the pinned roster
document), ``custodian.sqlite3`` (signed policies) and ``budget.sqlite3`` (the ledger).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from tessera.config import Environment
from tessera.dp import Ledger, Policy, ReleasePlan, Reservation
from tessera.dp.policy import OutputChecks, TablePolicy, strictest, weakenings
from tessera.errors import ConfigError, InputError, IntegrityError, PolicyError
from tessera.keys.documents import SignedDocument, verified_signers
from tessera.keys.people import PRIVILEGED, ROSTER_CONTEXT, Roster, admit_roster
from tessera.workflows.approvals import check_approval
from tessera.workflows.job_checks import (
    check_chunks,
    check_dp_job,
    check_exact_job,
    check_sql_job,
    check_validate_job,
    columns_digest,
)

__all__ = [
    "DEFAULT_POLICY",
    "JOB_CONTEXT",
    "POLICY_CONTEXT",
    "Admission",
    "Custodian",
    "admit_policy",
    "store_root",
]

JOB_CONTEXT = b"tessera-mpc-job-v2"
POLICY_CONTEXT = b"tessera-policy-v1"
DEFAULT_POLICY = Policy.none(min_group_size=5)
ROSTER_FILE = "roster.json"


def store_root(env: Environment, node_id: int) -> Path:
    """The local folder of node ``node_id``'s store (file:// URLs only)."""
    store = next((s for s in env.stores if s.id == node_id), None)
    if store is None:
        raise ConfigError(f"no store for node {node_id}")
    url = urlparse(store.url)
    if url.scheme not in ("", "file"):
        raise ConfigError(f"node {node_id}: table shares need a file:// store, not {url.scheme}")
    return Path(unquote(url.path))


@dataclass(frozen=True)
class Admission:
    """A job this custodian agreed to run, and what it reserved for it."""

    job: dict[str, Any]
    requester: str
    tables: tuple[str, ...]
    release: ReleasePlan | None = None
    reservation: Reservation | None = None
    approval: str | None = None
    checks: OutputChecks | None = None


def admit_policy(
    roster: Roster, current: TablePolicy | None, document: SignedDocument
) -> TablePolicy:
    """The policy in ``document`` if this custodian may install it; PolicyError if not."""
    new = TablePolicy.from_body(document.body)
    if current is not None and new.serial <= current.serial:
        raise PolicyError(
            f"{new.table}: policy serial {new.serial} is not newer than the installed "
            f"{current.serial}"
        )
    signers = verified_signers(document, roster.keys(), context=POLICY_CONTEXT)
    steward = roster.get(new.steward)
    if steward is None or "steward" not in steward.roles or new.steward not in signers:
        raise PolicyError(f"{new.table}: the policy is not signed by its steward {new.steward!r}")
    privileged = {n for n in signers if (p := roster.get(n)) and p.roles & PRIVILEGED}
    old_steward = current.steward if current is not None else new.steward
    if old_steward not in signers and len(privileged) < 2:
        raise PolicyError(
            f"{new.table}: a new steward needs {old_steward}'s signature or a second "
            "steward's or officer's"
        )
    weaker = weakenings(current.policy if current else DEFAULT_POLICY, new.policy)
    if weaker and len(privileged) < 2:
        raise PolicyError(
            f"{new.table}: the policy weakens privacy ({'; '.join(weaker)}); it needs a second "
            "signature from an officer or another steward"
        )
    return new


class Custodian:
    """One custodian's roster, policies and ledger under ``root`` (its node folder)."""

    def __init__(self, root: Path, *, parties: int, threshold: int, enforce: bool = True) -> None:
        self.root = Path(root)
        self.parties = parties
        self.threshold = threshold
        self.enforce = enforce
        self.root.mkdir(parents=True, exist_ok=True)
        self.ledger = Ledger(self.root / "budget.sqlite3")
        self._lock = threading.Lock()
        self._roster: tuple[Any, Roster] | None = None
        self._db = sqlite3.connect(self.root / "custodian.sqlite3", check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS policies (table_name TEXT PRIMARY KEY, "
            "serial INTEGER NOT NULL, document TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS validated (table_name TEXT NOT NULL, chunk TEXT NOT "
            "NULL, columns TEXT NOT NULL, ok INTEGER NOT NULL, checked REAL NOT NULL, "
            "PRIMARY KEY (table_name, chunk))"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS approvals (request_id TEXT PRIMARY KEY, job_id TEXT NOT "
            "NULL, state TEXT NOT NULL, at REAL NOT NULL)"
        )
        self._db.commit()

    # ----- roster --------------------------------------------------------------------
    def roster_document(self) -> dict[str, Any]:
        """The pinned roster document; ConfigError when none was installed."""
        try:
            doc: dict[str, Any] = json.loads((self.root / ROSTER_FILE).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{self.root}: no roster pinned (run tessera init)") from None
        except ValueError:
            raise ConfigError(f"{self.root}: the pinned roster is damaged") from None
        return doc

    def roster(self) -> Roster:
        """The people this custodian trusts (parsed again only when the file changed)."""
        try:
            stat = (self.root / ROSTER_FILE).stat()
            stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except FileNotFoundError:
            stamp = None
        cached = self._roster
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1]
        roster = Roster.from_body(SignedDocument.from_dict(self.roster_document()).body)
        self._roster = (stamp, roster) if stamp is not None else None
        return roster

    def pin_roster(self, document: SignedDocument) -> Roster:
        """Pin the first roster (signed by one of its own privileged people)."""
        roster = Roster.from_body(document.body)
        signers = verified_signers(document, roster.keys(), context=ROSTER_CONTEXT)
        if not any((p := roster.get(n)) and p.privileged for n in signers):
            raise PolicyError("the first roster must be signed by one of its stewards or officers")
        with self._lock:
            if (self.root / ROSTER_FILE).exists():
                raise PolicyError("a roster is already pinned; install a newer one instead")
            self._write_roster(document)
        return roster

    def install_roster(self, document: SignedDocument) -> Roster:
        """Replace the roster with a newer one its current people signed."""
        with self._lock:
            roster = admit_roster(self.roster(), document)
            self._write_roster(document)
        return roster

    def _write_roster(self, document: SignedDocument) -> None:
        path = self.root / ROSTER_FILE
        tmp = path.with_name(f".{ROSTER_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(document.to_dict(), indent=1))
        os.replace(tmp, path)

    # ----- policies ------------------------------------------------------------------
    def policy_document(self, table: str) -> dict[str, Any] | None:
        """The signed policy document of ``table`` as installed, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT document FROM policies WHERE table_name = ?", (table,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def table_policy(self, table: str) -> TablePolicy | None:
        """``table``'s installed policy, or None (then :data:`DEFAULT_POLICY` applies)."""
        doc = self.policy_document(table)
        return None if doc is None else TablePolicy.from_body(doc["body"])

    def effective(self, table: str) -> Policy:
        """The rules that apply to ``table`` now."""
        current = self.table_policy(table)
        return DEFAULT_POLICY if current is None else current.policy

    def install_policy(self, document: SignedDocument) -> TablePolicy:
        """Install a signed table policy if the roster's people allow it."""
        roster = self.roster()
        with self._lock:
            table = str(document.body.get("table", ""))
            row = self._db.execute(
                "SELECT document FROM policies WHERE table_name = ?", (table,)
            ).fetchone()
            current = None if row is None else TablePolicy.from_body(json.loads(row[0])["body"])
            new = admit_policy(roster, current, document)
            self.ledger.set_policy(new.table, new.policy)
            self._db.execute(
                "INSERT INTO policies VALUES (?, ?, ?) ON CONFLICT (table_name) DO UPDATE "
                "SET serial = excluded.serial, document = excluded.document",
                (new.table, new.serial, json.dumps(document.to_dict())),
            )
            self._db.commit()
        return new

    # ----- validation ----------------------------------------------------------------
    def record_validation(
        self, table: str, chunks: list[str], columns: list[Any], *, ok: bool
    ) -> None:
        """Record what this custodian's party found checking ``chunks`` of ``table``."""
        digest = columns_digest(columns)
        with self._lock:
            self._db.executemany(
                "INSERT INTO validated VALUES (?, ?, ?, ?, ?) ON CONFLICT (table_name, chunk) "
                "DO UPDATE SET columns = excluded.columns, ok = excluded.ok, "
                "checked = excluded.checked",
                [(table, c, digest, int(ok), time.time()) for c in chunks],
            )
            self._db.commit()

    def validation(self, table: str, manifest: Mapping[str, Any]) -> dict[str, bool | None]:
        """Per chunk of ``table``: True (valid), False (failed), None (not checked for the
        columns the manifest declares now)."""
        digest = columns_digest(manifest.get("columns", []))
        with self._lock:
            rows = self._db.execute(
                "SELECT chunk, columns, ok FROM validated WHERE table_name = ?", (table,)
            ).fetchall()
        known = {c: bool(ok) for c, cols, ok in rows if cols == digest}
        return {str(c["id"]): known.get(str(c["id"])) for c in manifest.get("chunks", [])}

    def _require_validated(
        self, job: Mapping[str, Any], private: list[str], manifests: Mapping[str, Any]
    ) -> None:
        for item in job["inputs"]:
            table = str(item["table"])
            if table not in private or table not in manifests:
                continue
            state = self.validation(table, manifests[table])
            used = item.get("chunks") or list(state)
            failed = [c for c in used if state.get(c) is False]
            if failed:
                raise PolicyError(
                    f"table {table}: chunk {failed[0][:12]} failed the custodians' validation "
                    "(its shares are not a valid encoding); it is excluded from DP releases"
                )
            if any(state.get(c) is None for c in used):
                raise PolicyError(
                    f"table {table} has chunks the custodians have not validated yet "
                    f"(tessera table validate {table})"
                )

    # ----- jobs ----------------------------------------------------------------------
    def authenticate(self, envelope: Any) -> tuple[dict[str, Any], str]:
        """The job and the roster name that signed it; IntegrityError if nobody did."""
        if not isinstance(envelope, dict) or "signatures" not in envelope:
            raise IntegrityError("unsigned job")
        document = SignedDocument.from_dict(
            {"body": envelope.get("job"), "signatures": envelope["signatures"]}
        )
        job = document.body
        requester = job.get("requester")
        if not isinstance(requester, str):
            raise InputError("a job names its requester")
        signers = verified_signers(document, self.roster().keys(), context=JOB_CONTEXT)
        if requester not in signers:
            raise IntegrityError("job signature does not verify for a person of the roster")
        return job, requester

    def admit(
        self, job: dict[str, Any], requester: str, manifests: Mapping[str, dict[str, Any]]
    ) -> Admission:
        """Check ``job`` against this custodian's policies and reserve its budget."""
        tables = tuple(sorted({str(item["table"]) for item in job["inputs"]}))
        if not self.enforce:
            return Admission(job, requester, tables)
        person = self.roster().get(requester)
        if job["type"] == "validate":
            if person is None:
                raise PolicyError(f"{requester} is not in this custodian's roster")
            check_validate_job(job, manifests)
            return Admission(job, requester, tables)
        if person is None or "researcher" not in person.roles:
            raise PolicyError(f"{requester} is not a researcher of this custodian's roster")
        installed = {t: self.table_policy(t) for t in tables}
        policies = {t: DEFAULT_POLICY if p is None else p.policy for t, p in installed.items()}
        for table, policy in policies.items():
            if policy.grants is not None and requester not in policy.grants:
                raise PolicyError(f"{requester} is not granted table {table}")
        combined = strictest(list(policies.values()))
        if job["type"] == "sql":
            check_sql_job(job, manifests)
        else:
            check_chunks(job, manifests)
        checks = combined.output_checks if not combined.is_private else None
        declared = job["params"].get("checks")
        if declared != (None if checks is None else checks.to_dict()):
            raise PolicyError(
                f"the job's output checks are not those of {', '.join(tables)}'s policy held "
                "by this custodian"
            )
        release = None
        if combined.is_private:
            private = [t for t, p in policies.items() if p.is_private]
            self._require_validated(job, private, manifests)
            release = check_dp_job(
                job, policies, combined, manifests, parties=self.parties, threshold=self.threshold
            )
        else:
            check_exact_job(job, combined, tables)
        approval = None
        if combined.approval_required:
            approval = check_approval(
                job,
                requester,
                self.roster(),
                installed,
                manifests,
                release,
                default_epsilon=combined.default_epsilon if release is not None else None,
            )
            self._reserve_approval(approval, str(job["job_id"]))
        if release is None:
            return Admission(job, requester, tables, approval=approval, checks=checks)
        try:
            reservation = self.ledger.reserve(
                [t for t, p in policies.items() if p.is_private],
                requester,
                release.charge_rho,
                note=str(job["job_id"]),
            )
        except BaseException:
            self._settle_approval(approval, used=False)
            raise
        return Admission(job, requester, tables, release, reservation, approval)

    def _reserve_approval(self, request_id: str, job_id: str) -> None:
        """Take the (single) run an approval allows; PolicyError if it was taken."""
        with self._lock:
            try:
                self._db.execute(
                    "INSERT INTO approvals VALUES (?, ?, 'reserved', ?)",
                    (request_id, job_id, time.time()),
                )
                self._db.commit()
            except sqlite3.IntegrityError:
                raise PolicyError(
                    f"the approval of request {request_id[:12]} was used already "
                    "(an approval runs once: file the request again)"
                ) from None

    def _settle_approval(self, request_id: str | None, *, used: bool) -> None:
        if request_id is None:
            return
        with self._lock:
            if used:
                self._db.execute(
                    "UPDATE approvals SET state = 'used' WHERE request_id = ?", (request_id,)
                )
            else:
                self._db.execute(
                    "DELETE FROM approvals WHERE request_id = ? AND state = 'reserved'",
                    (request_id,),
                )
            self._db.commit()

    def settle(self, admission: Admission, *, released: bool) -> None:
        """Commit the reservation (the share left this node) or refund it."""
        self._settle_approval(admission.approval, used=released)
        if admission.reservation is None:
            return
        if released:
            self.ledger.commit(admission.reservation)
        else:
            self.ledger.refund(admission.reservation)

    def settle_leftovers(self, finished: Collection[str] = ()) -> dict[str, str]:
        """Settle what a previous run of this custodian left reserved (it was killed
        during a job); ``{job id: "refunded" | "committed"}``.

        Call it only at start-up, while no job of this custodian can be in flight.  A
        reservation is committed (fsynced) before this custodian's share leaves it, so
        one still reserved belongs to a job it never answered: refunded.  Except the
        jobs in ``finished`` (its party had written its share when it was killed: the
        other custodians may have answered and the requester reconstructed from their
        shares), which are committed.
        """
        with self._lock:  # an approval reserved by a job cut short runs again (unless its
            # share may have left: then it was used, like the budget)
            done = list(finished)
            self._db.execute(
                "UPDATE approvals SET state = 'used' WHERE state = 'reserved' AND job_id IN "
                "(SELECT value FROM json_each(?))",
                (json.dumps(done),),
            )
            self._db.execute("DELETE FROM approvals WHERE state = 'reserved'")
            self._db.commit()
        path = self.ledger.path
        db = sqlite3.connect(path, timeout=60.0)
        try:
            rows = db.execute(
                "SELECT reservation, MIN(note) FROM charges WHERE state = 'reserved' "
                "GROUP BY reservation"
            ).fetchall()
        finally:
            db.close()
        settled: dict[str, str] = {}
        for token, note in rows:
            job_id = str(note)
            if job_id in finished:
                self.ledger.commit(str(token))
                settled[job_id] = "committed"
            else:
                self.ledger.refund(str(token))
                settled[job_id] = "refunded"
        return settled

    def close(self) -> None:
        """Close the policy database."""
        with self._lock:
            self._db.close()
