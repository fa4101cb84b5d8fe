"""The ledger: refusal before running, restart, refund, and concurrent races."""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from tessera.dp import Ledger, Policy
from tessera.errors import BudgetExhaustedError, NotFoundError

RHO = 0.05


def fresh(tmp_path: Path, *, total: float = 10 * RHO, researcher: float | None = None) -> Ledger:
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    ledger.set_policy("cohort", Policy.dp(total_rho=total, researcher_rho=researcher))
    return ledger


def test_budget_is_refused_with_remaining_in_message(tmp_path: Path) -> None:
    ledger = fresh(tmp_path, total=0.12)
    ledger.commit(ledger.reserve("cohort", "alice", RHO))
    ledger.commit(ledger.reserve("cohort", "alice", RHO))
    with pytest.raises(BudgetExhaustedError, match=r"remaining rho=0\.02"):
        ledger.reserve("cohort", "alice", RHO)
    ledger.reserve("cohort", "alice", 0.02)  # exactly the rest is admitted
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve("cohort", "alice", 1e-9)


def test_researcher_budget(tmp_path: Path) -> None:
    ledger = fresh(tmp_path, total=1.0, researcher=0.1)
    ledger.commit(ledger.reserve("cohort", "alice", 0.1))
    with pytest.raises(BudgetExhaustedError, match="researcher 'alice'"):
        ledger.reserve("cohort", "alice", 0.01)
    ledger.reserve("cohort", "bob", 0.1)
    balance = ledger.balance("cohort", "alice")
    assert balance.researcher_spent_rho == pytest.approx(0.1)
    assert balance.remaining_rho == 0.0


def test_refund_returns_budget_and_commit_is_final(tmp_path: Path) -> None:
    ledger = fresh(tmp_path, total=RHO)
    held = ledger.reserve("cohort", "alice", RHO)
    assert ledger.balance("cohort").pending_rho == pytest.approx(RHO)
    with pytest.raises(BudgetExhaustedError):
        ledger.reserve("cohort", "alice", RHO)
    ledger.refund(held)
    done = ledger.reserve("cohort", "alice", RHO)
    ledger.commit(done)
    with pytest.raises(ValueError):
        ledger.refund(done)
    assert ledger.balance("cohort").spent_rho == pytest.approx(RHO)


def test_budget_survives_restart(tmp_path: Path) -> None:
    ledger = fresh(tmp_path)
    for _ in range(4):
        ledger.commit(ledger.reserve("cohort", "alice", RHO))
    ledger.reserve("cohort", "alice", RHO)  # a crash before commit keeps it charged
    reopened = Ledger(tmp_path / "ledger.sqlite3")
    balance = reopened.balance("cohort")
    assert balance.spent_rho == pytest.approx(4 * RHO)
    assert balance.pending_rho == pytest.approx(RHO)
    assert balance.remaining_rho == pytest.approx(5 * RHO)
    assert reopened.policy("cohort") == Policy.dp(total_rho=10 * RHO)


def test_tables_without_dp_are_not_charged(tmp_path: Path) -> None:
    ledger = fresh(tmp_path)
    ledger.set_policy("open", Policy.none())
    reservation = ledger.reserve(["open", "unknown", "cohort"], "alice", RHO)
    assert reservation.tables == ("cohort",)
    with pytest.raises(NotFoundError):
        ledger.balance("unknown")


def _attempt(path: str) -> bool:
    try:
        Ledger(Path(path)).reserve("cohort", "alice", RHO)
    except BudgetExhaustedError:
        return False
    return True


def test_100_threads_race_for_10_queries(tmp_path: Path) -> None:
    ledger = fresh(tmp_path)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(100)

    def run() -> None:
        start.wait()
        ok = _attempt(str(ledger.path))
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=run) for _ in range(100)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 10
    assert ledger.balance("cohort").remaining_rho == 0.0


def test_100_processes_race_for_10_queries(tmp_path: Path) -> None:
    ledger = fresh(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=8, mp_context=ctx) as pool:
        results = list(pool.map(_attempt, [str(ledger.path)] * 100))
    assert results.count(True) == 10
    balance = Ledger(ledger.path).balance("cohort")
    assert balance.spent_rho + balance.pending_rho == pytest.approx(10 * RHO)
