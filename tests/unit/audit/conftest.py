"""Fixtures for the audit tests: a signer (one per session: key generation is cheap but
not free) and a small log with a fixed clock."""

from __future__ import annotations

from pathlib import Path

import pytest
from audit_samples import make_clock, sample_events

from tessera.audit import AuditLog, MldsaSigner


@pytest.fixture(scope="session")
def signer() -> MldsaSigner:
    return MldsaSigner.generate()


@pytest.fixture
def small_log(tmp_path: Path, signer: MldsaSigner) -> AuditLog:
    log = AuditLog.create(
        tmp_path / "log", "gateway", signer.public_key, signer=signer, clock=make_clock()
    )
    for start in range(0, 40, 10):  # four batches -> four signed heads
        log.append(sample_events(10, start))
    return log
