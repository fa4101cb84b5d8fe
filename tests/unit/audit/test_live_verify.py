"""Verifying a log while another writer appends to it: never a torn read."""

from __future__ import annotations

import threading
from pathlib import Path

from audit_samples import make_clock, sample_events

from tessera.audit import AuditLog, MldsaSigner


def test_verify_during_appends_sees_whole_entries(tmp_path: Path, signer: MldsaSigner) -> None:
    folder = tmp_path / "log"
    writer = AuditLog.create(
        folder, "gateway", signer.public_key, signer=signer, clock=make_clock(), head_every=7
    )
    events = sample_events(200)
    done = threading.Event()

    def write() -> None:
        for event in events:
            writer.append([event])
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    reader = AuditLog(folder)  # another instance: what a verifying process opens
    reports = []
    while not done.is_set():
        reports.append(reader.verify())
    thread.join()
    reports.append(reader.verify())
    assert len(reports) > 1
    bad = [r.to_json() for r in reports if not r.ok]
    assert bad == []
    assert reports[-1].entries == 200
