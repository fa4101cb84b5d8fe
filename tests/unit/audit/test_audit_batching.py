"""Head batching: one signed head per N entries (or per call of ``sign_pending``/``close``),
every entry durable and verified, the unsigned tail reported; the compact record format;
a flood of failed sign-ins costs its entries, not a head each."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx
import pytest
from audit_samples import make_clock, sample_events

from tessera.audit import AuditLog, MldsaSigner
from tessera.audit.record import decode, encode
from tessera.core.audit_sink import AuditEvent


def _log(folder: Path, signer: MldsaSigner, every: int) -> AuditLog:
    return AuditLog.create(
        folder, "gateway", signer.public_key, signer=signer, clock=make_clock(), head_every=every
    )


def test_one_head_per_batch_and_the_tail_reported(tmp_path: Path, signer: MldsaSigner) -> None:
    log = _log(tmp_path / "log", signer, 4)
    signed = [log.append([event]) for event in sample_events(10)]
    assert [h.size if h else None for h in signed] == [None, None, None, 4] + [None] * 3 + [
        8,
        None,
        None,
    ]
    assert log.unsigned == 2
    report = log.verify()
    assert report.ok and report.entries == 10 and report.signed_size == 8 and report.unsigned == 2
    assert report.to_json()["unsigned"] == 2
    head = log.close()
    assert head is not None and head.size == 10 and log.unsigned == 0
    assert log.close() is None  # nothing pending: no empty head
    assert [h.size for h in log.heads()] == [4, 8, 10]


def test_another_writer_signs_the_pending_tail(tmp_path: Path, signer: MldsaSigner) -> None:
    first = _log(tmp_path / "log", signer, 100)
    first.append(sample_events(3))
    second = AuditLog(tmp_path / "log", signer=signer, head_every=100)
    second.append(sample_events(2, 3))
    head = first.sign_pending()  # the first writer catches up with the second one's entries
    assert head is not None and head.size == 5
    assert second.sign_pending() is None
    assert first.verify().ok and [seq for seq, _ in first.events()] == list(range(5))


def test_the_timer_signs_what_is_pending(tmp_path: Path, signer: MldsaSigner) -> None:
    log = AuditLog.create(
        tmp_path / "log",
        "gateway",
        signer.public_key,
        signer=signer,
        head_every=1000,
        head_interval_s=3600.0,
    )
    log.append(sample_events(2))
    assert log._timer is not None and log._timer.is_alive()
    log._timer_fired()  # what the timer runs when it fires (no waiting in tests)
    assert log.unsigned == 0 and log.heads()[-1].size == 2
    log.close()
    assert log._timer is None


def test_frontier_resumes_over_an_unsigned_tail(tmp_path: Path, signer: MldsaSigner) -> None:
    log = _log(tmp_path / "log", signer, 5)
    for event in sample_events(12):
        log.append([event])
    again = AuditLog(tmp_path / "log", signer=signer)
    head = again.sign_pending()
    assert head is not None and head.root == again.root_at(12)
    (tmp_path / "log" / "frontier.bin").write_bytes(b"junk")  # damaged: rebuilt from leaves
    third = AuditLog(tmp_path / "log", signer=signer)
    third.append(sample_events(1, 12))
    assert third.verify().ok


def test_compact_records_round_trip_and_v1_logs_still_read(
    tmp_path: Path, signer: MldsaSigner
) -> None:
    event = replace(sample_events(1)[0], recorded=datetime(2026, 3, 1, 8, 0, 1, tzinfo=UTC))
    assert event.recorded is not None
    assert decode(encode(event, event.recorded)) == event
    log = _log(tmp_path / "v2", signer, 1)  # its clock stamps 08:00:01 first
    log.append([event])
    assert json.loads((tmp_path / "v2" / "log.json").read_text())["version"] == 2
    assert list(log.events()) == [(0, event)]
    assert next(log.records())[1]["id"] == "gateway.0"  # FHIR derived on reading
    # a version-1 log (FHIR lines) is still appended to and read as such
    old = tmp_path / "v1"
    _log(old, signer, 1)
    meta = json.loads((old / "log.json").read_text())
    (old / "log.json").write_text(json.dumps({**meta, "version": 1}))
    v1 = AuditLog(old, signer=signer)
    v1.append([event])
    assert b'"resourceType":"AuditEvent"' in (old / "records.jsonl").read_bytes()
    assert list(v1.events()) == [(0, replace(event, source="gateway"))] and v1.verify().ok


def test_a_flood_of_failed_sign_ins_costs_under_1_kb_each(tmp_path: Path) -> None:
    from tessera.server.app import create_app
    from tessera.workflows.audit import close_logs, log_folder
    from tessera.workflows.environment import init_environment

    home = tmp_path / "home"
    init_environment(home, nodes=3, passphrase=b"flood test passphrase")
    close_logs()
    app = create_app(home, max_failed_logins=1000)  # every failure is recorded
    folder = log_folder(home)

    def size() -> int:
        return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    async def flood(count: int) -> list[int]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return [
                (
                    await client.get(
                        "/api/v1/audit/events", headers={"Authorization": f"Bearer bad{i}"}
                    )
                ).status_code
                for i in range(count)
            ]

    assert anyio.run(flood, 1) == [401]  # the first one opens the log
    entries, before = AuditLog(folder).size, size()
    assert set(anyio.run(flood, 40)) == {401}
    grown = size() - before
    assert AuditLog(folder).size - entries == 40  # every failed sign-in is in the log
    assert grown / 40 <= 1024
    close_logs()
    assert AuditLog(folder).unsigned == 0 and AuditLog(folder).verify().ok


def test_detail_values_keep_their_types() -> None:
    when = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    event = AuditEvent("query", detail={"rows": 5, "epsilon": 1.0, "dp": True, "hash": "ab"})
    back = decode(encode(event, when))
    assert dict(back.detail) == {"rows": 5, "epsilon": 1.0, "dp": True, "hash": "ab"}
    assert isinstance(back.detail["epsilon"], float) and back.recorded == when


def test_an_instance_never_signs_a_log_that_replaced_its_own(
    tmp_path: Path, signer: MldsaSigner
) -> None:
    import shutil

    from tessera.errors import ConfigError

    stale = _log(tmp_path / "log", signer, 100)
    stale.append(sample_events(2))
    shutil.rmtree(tmp_path / "log")
    other = MldsaSigner.generate()
    fresh = AuditLog.create(tmp_path / "log", "gateway", other.public_key, signer=other)
    fresh.append(sample_events(1))
    with pytest.raises(ConfigError, match="replaced"):
        stale.append(sample_events(1))
    assert stale.close() is None
    stale._timer_fired()  # a timer left running signs nothing either
    assert fresh.verify().ok and [h.size for h in fresh.heads()] == [1]


def test_verify_reports_the_unsigned_tail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tessera.cli.main import main
    from tessera.workflows import audit as flow

    home = tmp_path / "env"
    flow.record(home, [AuditEvent("login", user="a")])  # one signed head
    flow.gateway_log(home).append([AuditEvent("login", user="b")])  # batched: not yet signed
    assert main(["audit", "verify", "--home", str(home)]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("ok: 2 entries, 1 signed tree heads, not yet signed: 1")
    assert "no custodians" in err
    flow.close_logs()  # what the end of the process does: the tail (and verify's event)
    assert flow.gateway_log(home).unsigned == 0
