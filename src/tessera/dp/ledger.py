"""The privacy ledger: table policies and budget charges in SQLite, safe under concurrency.

Every charge is *reserved* before the query runs, inside ``BEGIN IMMEDIATE`` (SQLite's
write lock, taken before the budget is read, so two reservations can never both see
the same remaining budget, across threads and processes alike), then *committed* when
the result is released or *refunded* when the secure computation failed before any
output.  Reservations left by a crash stay charged (conservative: the release may have
happened).  Amounts are stored as integers in units of 1e-12 rho, so sums are exact.
The database runs in WAL mode; a commit is fsynced (``synchronous=FULL``), so a
committed charge survives a crash of the machine, and the reservation before it, written
without its own fsync, survives a crash of the process.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.dp.accounting import epsilon_for_rho
from tessera.dp.policy import Policy
from tessera.errors import BudgetExhaustedError, NotFoundError, StorageUnavailableError

__all__ = ["MAX_RHO", "UNIT", "Balance", "Ledger", "Reservation"]

#: Budgets are counted in integer multiples of this much rho.
UNIT = 1e-12

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policies (
    table_name TEXT PRIMARY KEY,
    policy     TEXT NOT NULL,
    updated    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS charges (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    reservation TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    researcher  TEXT NOT NULL,
    units       INTEGER NOT NULL CHECK (units >= 0),
    state       TEXT NOT NULL CHECK (state IN ('reserved', 'committed', 'refunded')),
    created     REAL NOT NULL,
    settled     REAL,
    note        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS charges_by_table ON charges (table_name, researcher, state);
CREATE INDEX IF NOT EXISTS charges_by_reservation ON charges (reservation);
"""


#: The most rho one table or charge may hold (1e12 rho is epsilon ~1e12: no privacy).
MAX_RHO = 1e12


def _units(rho: float) -> int:
    """``rho`` in whole units; a positive charge is at least one unit (never free)."""
    if not (math.isfinite(rho) and 0 <= rho <= MAX_RHO):
        raise ValueError(f"rho must be between 0 and {MAX_RHO:g}")
    units = round(rho / UNIT)
    return max(units, 1) if rho > 0 else 0


def _rho(units: int) -> float:
    return units * UNIT


@dataclass(frozen=True)
class Reservation:
    """A pending charge of ``rho`` against each of ``tables`` for ``researcher``."""

    id: str
    tables: tuple[str, ...]
    researcher: str
    rho: float


@dataclass(frozen=True)
class Balance:
    """Where one table's budget (and optionally one researcher's) stands, in rho.

    ``remaining_rho`` is the table's remainder, or the researcher's when smaller.
    """

    table: str
    policy: Policy
    total_rho: float
    spent_rho: float
    pending_rho: float
    remaining_rho: float
    researcher: str | None = None
    researcher_total_rho: float | None = None
    researcher_spent_rho: float | None = None

    @property
    def remaining_epsilon(self) -> float:
        """The epsilon (at the policy's delta) of spending all that is left in one query."""
        return epsilon_for_rho(self.remaining_rho, self.policy.delta)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``tessera budget show --json``)."""
        return {
            "table": self.table,
            "policy": self.policy.to_dict(),
            "total_rho": self.total_rho,
            "spent_rho": self.spent_rho,
            "pending_rho": self.pending_rho,
            "remaining_rho": self.remaining_rho,
            "remaining_epsilon": self.remaining_epsilon,
            "delta": self.policy.delta,
            "researcher": self.researcher,
            "researcher_total_rho": self.researcher_total_rho,
            "researcher_spent_rho": self.researcher_spent_rho,
        }


class Ledger:
    """Policies and budget charges in one SQLite file.

    Each thread keeps its own connection (a process that forked makes new ones): with
    ``synchronous=FULL`` in WAL mode a transaction then costs one fsync, where opening
    and closing a connection per operation also checkpointed the log every time.
    """

    def __init__(
        self, path: Path, *, timeout: float = 60.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._clock = clock
        self._local = threading.local()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            self._begin(db)
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("COMMIT")

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a new one after a fork)."""
        held = getattr(self._local, "db", None)
        if held is not None and held[0] == os.getpid():
            return held[1]  # type: ignore[no-any-return]
        try:
            db = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        except sqlite3.Error as exc:
            raise StorageUnavailableError(f"cannot open the privacy ledger: {exc}") from exc
        self._local.db = (os.getpid(), db)
        return db

    @contextlib.contextmanager
    def _connect(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """This thread's connection; ``durable=False`` skips the fsync at COMMIT (the
        change survives a crash of the process, not of the machine)."""
        db = self._connection()
        try:
            db.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            yield db
        except sqlite3.Error as exc:
            self._rollback(db)
            raise StorageUnavailableError(f"privacy ledger failed: {exc}") from exc
        except BaseException:
            self._rollback(db)  # a refusal inside a transaction leaves nothing behind
            raise

    def _rollback(self, db: sqlite3.Connection) -> None:
        try:
            if db.in_transaction:
                db.execute("ROLLBACK")
        except sqlite3.Error:
            db.close()
            self._local.db = None

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        held = getattr(self._local, "db", None)
        if held is not None:
            held[1].close()
            self._local.db = None

    @staticmethod
    def _begin(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")

    # -- policies ---------------------------------------------------------------------

    def set_policy(self, table: str, policy: Policy) -> None:
        """Store (or replace) ``table``'s policy; spent budget is kept."""
        if not table:
            raise ValueError("table name must not be empty")
        doc = json.dumps(policy.to_dict(), sort_keys=True)
        with self._connect() as db:
            self._begin(db)
            db.execute(
                "INSERT INTO policies (table_name, policy, updated) VALUES (?, ?, ?) "
                "ON CONFLICT (table_name) DO UPDATE SET policy = excluded.policy, "
                "updated = excluded.updated",
                (table, doc, self._clock()),
            )
            db.execute("COMMIT")

    def policy(self, table: str) -> Policy | None:
        """``table``'s policy, or None when none was set."""
        with self._connect() as db:
            row = db.execute(
                "SELECT policy FROM policies WHERE table_name = ?", (table,)
            ).fetchone()
        return None if row is None else Policy.from_dict(json.loads(row[0]))

    def policies(self) -> dict[str, Policy]:
        """Every table that has a policy."""
        with self._connect() as db:
            rows = db.execute("SELECT table_name, policy FROM policies ORDER BY table_name")
            return {name: Policy.from_dict(json.loads(doc)) for name, doc in rows}

    # -- charges ----------------------------------------------------------------------

    @staticmethod
    def _spent(db: sqlite3.Connection, table: str, researcher: str | None = None) -> int:
        sql = "SELECT COALESCE(SUM(units), 0) FROM charges WHERE table_name = ? AND state != ?"
        args: tuple[Any, ...] = (table, "refunded")
        if researcher is not None:
            sql += " AND researcher = ?"
            args += (researcher,)
        return int(db.execute(sql, args).fetchone()[0])

    def reserve(
        self, tables: str | Sequence[str], researcher: str, rho: float, *, note: str = ""
    ) -> Reservation:
        """Reserve ``rho`` on every DP table in ``tables`` for ``researcher``, atomically.

        Raises BudgetExhaustedError (naming what remains) when any table's total or the
        researcher's budget would be exceeded; nothing is reserved then.  Tables whose
        policy is ``none`` (or unset) are not charged.
        """
        names = (tables,) if isinstance(tables, str) else tuple(dict.fromkeys(tables))
        if rho < 0:
            raise ValueError("rho must be >= 0")
        if not researcher:
            raise ValueError("researcher must not be empty")
        need = _units(rho)
        token = secrets.token_hex(16)
        # not fsynced: a release commits (fsync) first, which makes this durable too; a
        # machine that fails before that released nothing
        with self._connect(durable=False) as db:
            self._begin(db)
            charged: list[str] = []
            for table in names:
                row = db.execute(
                    "SELECT policy FROM policies WHERE table_name = ?", (table,)
                ).fetchone()
                policy = None if row is None else Policy.from_dict(json.loads(row[0]))
                if policy is None or not policy.is_private:
                    continue
                assert policy.total_rho is not None
                self._refuse_if_over(db, table, researcher, policy, need)
                charged.append(table)
            now = self._clock()
            db.executemany(
                "INSERT INTO charges (reservation, table_name, researcher, units, state, "
                "created, note) VALUES (?, ?, ?, ?, 'reserved', ?, ?)",
                [(token, t, researcher, need, now, note) for t in charged],
            )
            db.execute("COMMIT")
        return Reservation(token, tuple(charged), researcher, _rho(need))

    def _refuse_if_over(
        self, db: sqlite3.Connection, table: str, researcher: str, policy: Policy, need: int
    ) -> None:
        assert policy.total_rho is not None
        left = _units(policy.total_rho) - self._spent(db, table)
        who = f"table {table!r}"
        if policy.researcher_rho is not None:
            mine = _units(policy.researcher_rho) - self._spent(db, table, researcher)
            if mine < left:
                left, who = mine, f"researcher {researcher!r} on table {table!r}"
        if need > left:
            db.execute("ROLLBACK")
            left_rho = _rho(max(left, 0))
            left_eps = epsilon_for_rho(left_rho, policy.delta)
            raise BudgetExhaustedError(
                f"privacy budget exhausted for {who}: this query needs rho={_rho(need):.6g}, "
                f"remaining rho={left_rho:.6g} (epsilon={left_eps:.4g} at "
                f"delta={policy.delta:g}); nothing was run"
            )

    def _settle(self, reservation: Reservation | str, state: str) -> None:
        token = reservation if isinstance(reservation, str) else reservation.id
        # a commit is fsynced before the share leaves; a lost refund only over-charges
        with self._connect(durable=state == "committed") as db:
            self._begin(db)
            states = {
                s
                for (s,) in db.execute("SELECT state FROM charges WHERE reservation = ?", (token,))
            }
            if states and states != {"reserved"} and states != {state}:
                db.execute("ROLLBACK")
                raise ValueError(f"reservation already {', '.join(sorted(states))}")
            db.execute(
                "UPDATE charges SET state = ?, settled = ? WHERE reservation = ? "
                "AND state = 'reserved'",
                (state, self._clock(), token),
            )
            db.execute("COMMIT")

    def commit(self, reservation: Reservation | str) -> None:
        """Make a reservation final (the result was released)."""
        self._settle(reservation, "committed")

    def refund(self, reservation: Reservation | str) -> None:
        """Give a reservation back (the computation failed before revealing anything)."""
        self._settle(reservation, "refunded")

    def balance(self, table: str, researcher: str | None = None) -> Balance:
        """Where ``table``'s DP budget stands; NotFoundError without a DP policy."""
        with self._connect() as db:
            row = db.execute(
                "SELECT policy FROM policies WHERE table_name = ?", (table,)
            ).fetchone()
            if row is None:
                raise NotFoundError(f"table {table!r} has no privacy policy")
            policy = Policy.from_dict(json.loads(row[0]))
            committed = int(
                db.execute(
                    "SELECT COALESCE(SUM(units), 0) FROM charges WHERE table_name = ? "
                    "AND state = 'committed'",
                    (table,),
                ).fetchone()[0]
            )
            pending = self._spent(db, table) - committed
            mine = None if researcher is None else self._spent(db, table, researcher)
        total = policy.total_rho or 0.0
        left = _units(total) - committed - pending
        mine_total = None if researcher is None else (policy.researcher_rho or total)
        if mine is not None and mine_total is not None:
            left = min(left, _units(mine_total) - mine)
        return Balance(
            table=table,
            policy=policy,
            total_rho=total,
            spent_rho=_rho(committed),
            pending_rho=_rho(pending),
            remaining_rho=_rho(max(left, 0)),
            researcher=researcher,
            researcher_total_rho=mine_total,
            researcher_spent_rho=None if mine is None else _rho(mine),
        )
