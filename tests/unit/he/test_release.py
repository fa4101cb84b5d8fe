"""Decrypted aggregates released under the table's policy through the DP layer: budget
charged in the ledger (what the custodians report spent counts against it), intervals
stated, what DP cannot release refused, exact releases suppress small groups."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tessera.dp import Ledger, Policy
from tessera.errors import BudgetExhaustedError, PolicyError, UsageError
from tessera.he.answers import Answer
from tessera.he.datafiles import SealedInfo
from tessera.he.jobs import Job
from tessera.he.packing import Stream
from tessera.he.session import answer_job, open_answer
from tessera.workflows.he import DecryptedResult
from tessera.workflows.he_release import release_with

from .conftest import Keys, encrypt_table

UNITS = [
    {"name": "age", "kind": "integer", "scale": 1, "lo_units": 18, "hi_units": 100},
    {"name": "bmi", "kind": "decimal", "scale": 10, "lo_units": 120, "hi_units": 600},
]
BOUNDS = (("age", 18, 100), ("bmi", 120, 600))


def _decrypted(keys: Keys, job: Job, rows: int = 3000, table: str | None = "cohort") -> Any:
    rng = np.random.default_rng(8)
    values = np.stack(
        [rng.integers(18, 101, rows).astype(float), rng.integers(120, 601, rows) / 10.0], 1
    )
    enc = encrypt_table(keys, values, (Stream("age", 18, 100), Stream("bmi", 12, 60)))
    answer = answer_job(keys.public, enc.data, job, None, engine_name="tenseal")
    info = SealedInfo(enc.info.layout, enc.info.sentinels, UNITS, table)
    opened = open_answer(
        keys.secret, Answer.from_bytes(answer.to_bytes()), job=job, model=None,
        data_digest=enc.data.digest, bundle_digest=keys.bundle.digest,
        public=enc.data.header, info=info,
    )  # fmt: skip
    return DecryptedResult(opened, SimpleNamespace(job=job), info, "k"), values  # type: ignore[arg-type]


def test_a_dp_release_charges_the_ledger_and_states_intervals(keys1: Keys, tmp_path: Path) -> None:
    decrypted, values = _decrypted(keys1, Job("variance"))
    policy = Policy.dp(total_epsilon=2.0, default_epsilon=1.0, bounds=BOUNDS)
    ledger = tmp_path / "budget.sqlite3"
    doc = release_with(ledger, policy, decrypted, "alice")
    assert doc["columns"] == ["count(*)", "avg(age)", "variance(age)", "avg(bmi)", "variance(bmi)"]
    privacy = doc["privacy"]
    assert privacy["epsilon"] <= 1.0 + 1e-9 and privacy["custodians"] == 1
    for value, (lo, hi) in zip(doc["values"], doc["intervals"], strict=True):
        assert lo <= value <= hi
    mean_age = doc["values"][1]
    lo, hi = doc["intervals"][1]
    assert lo - 1 <= values[:, 0].mean() <= hi + 1
    assert abs(mean_age - values[:, 0].mean()) < 5  # noise at epsilon 1, 3,000 rows
    spent = Ledger(ledger).balance("cohort", "alice").spent_rho
    assert spent == pytest.approx(policy.query_rho(1.0))
    release_with(ledger, policy, decrypted, "alice")  # epsilon 2 in all: rho for 2 at most
    with pytest.raises(BudgetExhaustedError):
        release_with(ledger, policy, decrypted, "alice", epsilon=1.5)


def test_what_the_custodians_spent_counts(keys1: Keys, tmp_path: Path) -> None:
    decrypted, _ = _decrypted(keys1, Job("mean"))
    policy = Policy.dp(total_epsilon=2.0, default_epsilon=1.0, bounds=BOUNDS)
    with pytest.raises(BudgetExhaustedError, match="custodians report it spent"):
        release_with(tmp_path / "b.sqlite3", policy, decrypted, "alice",
                     custodians_spent=(policy.total_rho or 0.0, 0.0))  # fmt: skip
    almost = (policy.total_rho or 0.0) - policy.query_rho(0.5)
    with pytest.raises(BudgetExhaustedError):
        release_with(tmp_path / "c.sqlite3", policy, decrypted, "alice",
                     custodians_spent=(almost, 0.0))  # fmt: skip


def test_what_dp_cannot_release_is_refused(keys1: Keys, tmp_path: Path) -> None:
    policy = Policy.dp(total_epsilon=2.0, bounds=BOUNDS)
    cov, _ = _decrypted(keys1, Job("covariance"), rows=500)
    with pytest.raises(PolicyError, match="covariance result cannot be released"):
        release_with(tmp_path / "b.sqlite3", policy, cov, "alice")
    mean, _ = _decrypted(keys1, Job("mean"), rows=500)
    narrow = Policy.dp(total_epsilon=2.0, bounds=(("age", 20, 90), ("bmi", 120, 600)))
    with pytest.raises(PolicyError, match="wider than the policy"):
        release_with(tmp_path / "b.sqlite3", narrow, mean, "alice")
    with pytest.raises(PolicyError, match="no confirmed bounds"):
        release_with(tmp_path / "b.sqlite3", Policy.dp(total_epsilon=2.0), mean, "alice")
    with pytest.raises(PolicyError, match="not granted"):
        granted = Policy.dp(total_epsilon=2.0, bounds=BOUNDS, grants=("bob",))
        release_with(tmp_path / "b.sqlite3", granted, mean, "alice")
    loose, _ = _decrypted(keys1, Job("mean"), rows=500, table=None)
    with pytest.raises(UsageError, match="without --table"):
        release_with(tmp_path / "b.sqlite3", policy, loose, "alice")


def test_an_exact_release_suppresses_small_groups(keys1: Keys, tmp_path: Path) -> None:
    few, values = _decrypted(keys1, Job("sum"), rows=4)
    doc = release_with(tmp_path / "b.sqlite3", Policy.none(min_group_size=5), few, "alice")
    assert doc["suppressed"] and doc["privacy"] is None
    many, values = _decrypted(keys1, Job("mean"), rows=50)
    doc = release_with(tmp_path / "b.sqlite3", Policy.none(), many, "alice")
    assert doc["values"][0] == 50
    assert doc["values"][1] == pytest.approx(values[:, 0].mean(), rel=1e-9)
    assert doc["values"][2] == pytest.approx(values[:, 1].mean(), rel=1e-9)
