"""A custodian's airlock: exact releases held back for the steward, and cohort history.

On a table whose policy asks for output checks (:class:`tessera.dp.policy.OutputChecks`),
every custodian gives its MPC party the checks (``checks.json``) and its shares of the
researcher's earlier cohorts on the table; the party computes, inside the MPC, how many
cells break each rule, and only those counts are opened (:mod:`tessera.mpc.disclosure`).
When any count is not zero, the custodian keeps its result share here instead of
answering: the release is **held**.  Nobody reconstructs a held result without ``t + 1``
custodians handing out their shares, and each hands it out only:

* to the table's steward, for review, on a collect document the steward signed;
* to the researcher who asked, once the steward signed a decision releasing it.

A steward's refusal deletes the shares.  Every hold, decision and collection is an
event in the custodian's own audit log (the node records them).  A released exact
result's cohort (this custodian's share of the row selection) is kept for the
differencing check of the researcher's next releases on that table.

State in the node folder: ``airlock.sqlite3`` and ``cohorts/``.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tessera.dp.policy import OutputChecks, TablePolicy
from tessera.errors import InputError, NotFoundError, PolicyError
from tessera.keys.documents import SignedDocument, verified_signers
from tessera.keys.people import Roster
from tessera.workflows.approvals import COLLECT_CONTEXT, is_time, verified_decision

__all__ = ["HISTORY", "Airlock", "collect_body", "reasons_of"]

#: Earlier cohorts of one researcher on one table compared with a new release.
HISTORY = 16
_COLLECT_WINDOW_S = 300


def reasons_of(found: Any, checks: OutputChecks) -> list[str]:
    """What the party's opened counts mean, one line per broken rule (empty: none).

    A party that did not report its counts (``found`` not an object) is held too.
    """
    if not isinstance(found, dict):
        return ["the disclosure checks did not run"]
    out = []

    def count(key: str) -> int:
        value = found.get(key)
        return value if type(value) is int and value > 0 else 0

    if n := count("threshold"):
        out.append(f"{n} cell(s) count fewer than {checks.threshold} rows (threshold rule)")
    if n := count("dominance"):
        out.append(
            f"{n} sum(s) dominated by their largest contributors (p% rule at "
            f"{checks.p_percent:g}%, n,k rule at {checks.nk_n},{checks.nk_k:g}%)"
        )
    if n := count("zeros"):
        out.append(f"{n} empty cell(s) in a grouped release (zeros rule)")
    if n := count("differencing"):
        out.append(
            f"the cohort differs from {n} earlier release(s) of this researcher by fewer "
            f"than {checks.threshold} rows (differencing rule)"
        )
    return out


def collect_body(job_id: str, by: str, receiver: str) -> dict[str, Any]:
    """What a steward (review) or researcher (released) signs to collect a held result;
    ``receiver``: the public half of their one-time key (the shares are sealed to it)."""
    return {"format": "tessera-collect", "version": 1, "job": job_id, "by": by,
            "receiver": receiver, "issued_at": round(time.time(), 3)}  # fmt: skip


def _checked(tables: Sequence[str], policies: Mapping[str, TablePolicy | None]) -> list[str]:
    """The tables among ``tables`` whose policy asks for output checks (all of them when
    none does any more: then any of their stewards decides)."""
    checked = [t for t in tables if (p := policies.get(t)) is not None and p.policy.output_checks]
    return checked or list(tables)


class Airlock:
    """One custodian's held releases and cohort history under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.cohorts = self.root / "cohorts"
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.root / "airlock.sqlite3", check_same_thread=False)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS held (job_id TEXT PRIMARY KEY, requester TEXT NOT NULL, "
            "tables TEXT NOT NULL, reasons TEXT NOT NULL, params TEXT NOT NULL, result TEXT, "
            "state TEXT NOT NULL, held_at REAL NOT NULL, decided_by TEXT, reason TEXT, "
            "cohort TEXT, approved TEXT NOT NULL DEFAULT '[]')"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS cohorts (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "researcher TEXT NOT NULL, table_name TEXT NOT NULL, chunks TEXT NOT NULL, "
            "file TEXT NOT NULL, at REAL NOT NULL)"
        )
        self._db.commit()

    # ----- cohort history ------------------------------------------------------------
    def history(self, researcher: str, table: str, chunks: Sequence[str]) -> list[Path]:
        """The researcher's latest cohorts on ``table`` that still line up with its rows
        (their chunks are a prefix of ``chunks``: rows were only appended since)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT chunks, file FROM cohorts WHERE researcher = ? AND table_name = ? "
                "ORDER BY id DESC",
                (researcher, table),
            ).fetchall()
        out = []
        for raw, file in rows:  # those that line up first, then the newest of them
            old = json.loads(raw)
            path = self.cohorts / file
            if list(chunks[: len(old)]) == old and path.exists():
                out.append(path)
                if len(out) == HISTORY:
                    break
        return out

    def remember(
        self, researcher: str, table: str, chunks: Sequence[str], cohort: Path, job_id: str
    ) -> None:
        """Keep ``cohort`` (this custodian's share of the selection job ``job_id`` released);
        it is named by the job, so that the parties agree on which cohorts they compare."""
        self.cohorts.mkdir(parents=True, exist_ok=True)
        name = f"{job_id}.npy"
        shutil.move(str(cohort), self.cohorts / name)
        with self._lock:
            self._db.execute(
                "INSERT INTO cohorts (researcher, table_name, chunks, file, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (researcher, table, json.dumps(list(chunks)), name, time.time()),
            )
            stale = self._db.execute(
                "SELECT id, file FROM cohorts WHERE researcher = ? AND table_name = ? "
                "ORDER BY id DESC LIMIT -1 OFFSET ?",
                (researcher, table, 4 * HISTORY),
            ).fetchall()
            for row_id, file in stale:
                (self.cohorts / file).unlink(missing_ok=True)
                self._db.execute("DELETE FROM cohorts WHERE id = ?", (row_id,))
            self._db.commit()

    # ----- held releases -------------------------------------------------------------
    def hold(
        self,
        job: Mapping[str, Any],
        requester: str,
        result: Mapping[str, Any],
        reasons: Sequence[str],
        cohort: Path | None,
        chunks: Sequence[Sequence[str]],
    ) -> None:
        """Keep this custodian's share of a release that failed a check (``chunks``: the
        chunk ids each input read, in order)."""
        job_id = str(job["job_id"])
        kept = None
        if cohort is not None and cohort.exists():
            self.cohorts.mkdir(parents=True, exist_ok=True)
            kept = f"held-{job_id}.npy"
            shutil.move(str(cohort), self.cohorts / kept)
        tables = sorted({str(item["table"]) for item in job["inputs"]})
        read = [list(c) for c in chunks]
        with self._lock:
            self._db.execute(
                "INSERT INTO held (job_id, requester, tables, reasons, params, result, state, "
                "held_at, cohort) VALUES (?, ?, ?, ?, ?, ?, 'held', ?, ?)",
                (
                    job_id,
                    requester,
                    json.dumps(tables),
                    json.dumps(list(reasons)),
                    json.dumps({"params": job["params"], "chunks": read}),
                    json.dumps(dict(result)),
                    time.time(),
                    kept,
                ),
            )
            self._db.commit()

    def listing(self, researcher: str | None = None) -> list[dict[str, Any]]:
        """The held releases (never their shares), newest first."""
        query = "SELECT job_id, requester, tables, reasons, state, held_at, decided_by, reason "
        query += "FROM held"
        args: tuple[Any, ...] = ()
        if researcher is not None:
            query += " WHERE requester = ?"
            args = (researcher,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY held_at DESC", args).fetchall()
        return [
            {
                "job_id": r[0],
                "requester": r[1],
                "tables": json.loads(r[2]),
                "reasons": json.loads(r[3]),
                "state": r[4],
                "held_at": r[5],
                "decided_by": r[6],
                "reason": r[7],
            }
            for r in rows
        ]

    def tables_of(self, job_id: str) -> list[str]:
        """The tables of held release ``job_id`` (empty when there is none)."""
        with self._lock:
            row = self._db.execute("SELECT tables FROM held WHERE job_id = ?", (job_id,)).fetchone()
        return [] if row is None else list(json.loads(row[0]))

    def _row(self, job_id: str) -> tuple[Any, ...]:
        with self._lock:
            row = self._db.execute(
                "SELECT requester, tables, params, result, state, cohort FROM held "
                "WHERE job_id = ?",
                (job_id,),
            ).fetchone()
        if row is None:
            raise NotFoundError(f"this custodian holds no release {job_id[:12]}")
        return tuple(row)

    def decide(
        self,
        job_id: str,
        document: SignedDocument,
        roster: Roster,
        policies: Mapping[str, TablePolicy | None],
    ) -> dict[str, Any]:
        """A steward's signed decision on a held result (``policies``: this custodian's
        policy of each of its tables).  A refusal withholds it (its share is deleted); it
        is released once the steward of every table whose checks held it approved."""
        requester, raw_tables, _, _, _, cohort = self._row(job_id)
        tables = json.loads(raw_tables)
        table = str(document.body.get("table", ""))
        if table not in tables:
            raise PolicyError("the decision is about another table than the held release")
        body = verified_decision(
            document, roster, policies.get(table), subject="output", target=job_id
        )
        checked = _checked(tables, policies)
        if table not in checked:
            raise PolicyError(f"the steward of {', '.join(checked)} decides this release")
        with self._lock:
            state, raw = self._db.execute(
                "SELECT state, approved FROM held WHERE job_id = ?", (job_id,)
            ).fetchone()
            if state != "held":
                raise PolicyError(f"the release was {state} already")
            approved = set(json.loads(raw)) | {table}
            if body["decision"] != "approve":
                state = "withheld"
            elif set(checked) <= approved:
                state = "released"
            done = self._db.execute(
                "UPDATE held SET state = ?, approved = ?, decided_by = ?, reason = ?, "
                "result = CASE WHEN ? = 'withheld' THEN NULL ELSE result END "
                "WHERE job_id = ? AND state = 'held'",
                (state, json.dumps(sorted(approved)), body["steward"], body["reason"], state,
                 job_id),
            )  # fmt: skip
            if done.rowcount != 1:
                raise PolicyError("the release was decided meanwhile")
            self._db.commit()
        if cohort and state == "withheld":
            (self.cohorts / cohort).unlink(missing_ok=True)
        return {
            "job_id": job_id,
            "state": state,
            "requester": requester,
            "tables": tables,
            "steward": body["steward"],
            "waiting_for": [t for t in checked if t not in approved] if state == "held" else [],
        }

    def collect(
        self,
        job_id: str,
        document: SignedDocument,
        roster: Roster,
        policies: Mapping[str, TablePolicy | None],
    ) -> tuple[dict[str, Any], str, str]:
        """This custodian's share of a held result, its plan, who collected it and why.

        The researcher collects once the steward released it; the steward of one of its
        tables collects while it is held (to review it).
        """
        body = document.body
        if body.get("format") != "tessera-collect" or body.get("job") != job_id:
            raise InputError("not a collect document for this release")
        by = body.get("by")
        issued: Any = body.get("issued_at")
        if not isinstance(by, str) or not is_time(issued):
            raise InputError("a collect document names who collects and when (unix seconds)")
        if not isinstance(body.get("receiver"), str):
            raise InputError("a collect document names the key its shares are sealed to")
        if abs(time.time() - float(issued)) > _COLLECT_WINDOW_S:
            raise PolicyError("the collect document is not fresh (check the clocks)")
        if by not in verified_signers(document, roster.keys(), context=COLLECT_CONTEXT):
            raise PolicyError(f"the collect document is not signed by {by}")
        requester, raw_tables, params, result, state, _ = self._row(job_id)
        tables = json.loads(raw_tables)
        stewards = {p.steward for t in _checked(tables, policies) if (p := policies.get(t))}
        if state == "released" and by == requester:
            why = "released"
        elif state == "held" and by in stewards:
            why = "review"
        elif state == "withheld":
            raise PolicyError("the steward withheld this release")
        elif state == "held":
            raise PolicyError("the release is held for its steward's review")
        else:
            raise PolicyError(f"{by} may not collect this release")
        return {**json.loads(result), **json.loads(params)}, by, why

    def release_cohort(self, job_id: str) -> tuple[str, str, list[str], Path, str] | None:
        """(requester, table, chunks, cohort file, job id) of a released single-table
        result."""
        requester, raw_tables, params, _, state, cohort = self._row(job_id)
        tables = json.loads(raw_tables)
        if state != "released" or not cohort or len(tables) != 1:
            return None
        path = self.cohorts / cohort
        if not path.exists():
            return None
        chunks = json.loads(params)["chunks"]
        with self._lock:
            self._db.execute("UPDATE held SET cohort = NULL WHERE job_id = ?", (job_id,))
            self._db.commit()
        return requester, tables[0], list(chunks[0]) if chunks else [], path, job_id

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
