"""The signed Merkle log: appending, proofs, and tampering that verify must name."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from audit_samples import make_clock, sample_events
from hypothesis import given, settings
from hypothesis import strategies as st

from tessera.audit import AuditLog, MldsaSigner, Witness
from tessera.audit.log import VerifyReport
from tessera.core import merkle
from tessera.core.audit_sink import AuditEvent, AuditSink
from tessera.errors import ChainBrokenError, ConfigError, NotFoundError, UsageError

_SIGNER = MldsaSigner.generate()


def _lines(log: AuditLog) -> list[bytes]:
    return (log.folder / "records.jsonl").read_bytes().splitlines(keepends=True)


def _write_lines(log: AuditLog, lines: list[bytes]) -> None:
    (log.folder / "records.jsonl").write_bytes(b"".join(lines))


def test_fresh_log_verifies_and_round_trips(small_log: AuditLog) -> None:
    report = small_log.verify()
    assert report == VerifyReport(True, 40, None, None, 4, 40)
    assert report.to_json()["first_bad"] is None
    events = list(small_log.events())
    assert [seq for seq, _ in events] == list(range(40))
    assert events[5][1].user == "user5" and events[5][1].detail == {"rows": 5}
    assert events[5][1].recorded is not None
    assert isinstance(small_log, AuditSink)


def test_heads_are_signed_and_match_the_tree(small_log: AuditLog, signer: MldsaSigner) -> None:
    heads = small_log.heads()
    assert [h.size for h in heads] == [10, 20, 30, 40]
    leaves = [merkle.leaf_hash(line.rstrip(b"\n")) for line in _lines(small_log)]
    assert heads[-1].root == merkle.root(leaves)
    proof = small_log.inclusion_proof(17, 40)
    assert merkle.verify_inclusion(leaves[17], 17, 40, proof, heads[-1].root)
    cproof = small_log.consistency_proof(20, 40)
    assert merkle.verify_consistency(20, 40, heads[1].root, heads[3].root, cproof)


def test_edit_one_event_is_named(small_log: AuditLog) -> None:
    lines = _lines(small_log)
    lines[13] = lines[13].replace(b'"user6"', b'"user0"')
    _write_lines(small_log, lines)
    report = small_log.verify()
    assert not report.ok and report.first_bad == 13
    assert "modified" in (report.problem or "")


def test_delete_one_event_is_named(small_log: AuditLog) -> None:
    lines = _lines(small_log)
    del lines[21]
    _write_lines(small_log, lines)
    report = small_log.verify()
    assert not report.ok and report.first_bad == 21 and report.entries == 39


def test_reorder_two_events_is_named(small_log: AuditLog) -> None:
    lines = _lines(small_log)
    lines[7], lines[8] = lines[8], lines[7]
    _write_lines(small_log, lines)
    assert small_log.verify().first_bad == 7


def test_reorder_with_renumbering_and_rewritten_leaves_is_caught(small_log: AuditLog) -> None:
    lines = _lines(small_log)
    a, b = lines[25].split(b" ", 1), lines[26].split(b" ", 1)
    lines[25], lines[26] = a[0] + b" " + b[1], b[0] + b" " + a[1]
    _write_lines(small_log, lines)
    leaves = b"".join(merkle.leaf_hash(x.rstrip(b"\n")) for x in lines)
    (small_log.folder / "leaves.bin").write_bytes(leaves)
    report = small_log.verify()
    # the records agree with the rewritten leaf hashes; the signed head at 30 does not
    assert not report.ok and report.first_bad == 20
    assert "signed head" in (report.problem or "")


def test_truncation_is_named(small_log: AuditLog) -> None:
    lines = _lines(small_log)
    _write_lines(small_log, lines[:33])
    leaves = (small_log.folder / "leaves.bin").read_bytes()
    (small_log.folder / "leaves.bin").write_bytes(leaves[: 33 * 32])
    report = small_log.verify()
    assert not report.ok and report.first_bad == 33 and "truncated" in (report.problem or "")


def test_truncation_with_heads_removed_is_caught_by_a_witness(
    small_log: AuditLog, tmp_path: Path
) -> None:
    witness = Witness(tmp_path / "witness")
    witness.observe(small_log.heads()[-1], small_log.public_key, [])
    _write_lines(small_log, _lines(small_log)[:20])
    leaves = (small_log.folder / "leaves.bin").read_bytes()
    (small_log.folder / "leaves.bin").write_bytes(leaves[: 20 * 32])
    heads = (small_log.folder / "heads.jsonl").read_text().splitlines(keepends=True)
    (small_log.folder / "heads.jsonl").write_text("".join(heads[:2]))
    assert small_log.verify().ok  # locally consistent ...
    report = small_log.verify(witnessed=witness.heads("gateway"))
    assert not report.ok and report.first_bad == 20  # ... but not with what others saw


def test_forged_tail_and_forged_signature_are_caught(small_log: AuditLog) -> None:
    forged = AuditLog(small_log.folder, signer=MldsaSigner.generate())
    forged.append(sample_events(2))
    report = small_log.verify()
    assert not report.ok and report.first_bad == 40 and "bad signature" in (report.problem or "")
    other = MldsaSigner.generate().public_key
    assert small_log.verify(trusted_key=other).first_bad == 0


def test_unsigned_appended_entry_is_named(small_log: AuditLog) -> None:
    lines = _lines(small_log)
    _write_lines(small_log, [*lines, lines[-1].replace(b"000000000039", b"000000000040")])
    report = small_log.verify()
    assert report.first_bad == 40


def test_batch_signs_once_and_emit_without_key_is_refused(
    tmp_path: Path, signer: MldsaSigner
) -> None:
    log = AuditLog.create(tmp_path / "b", "node-1", signer.public_key, signer=signer)
    with log.batch():
        for e in sample_events(25):
            log.emit(e)
    assert [h.size for h in log.heads()] == [25]
    log.emit(AuditEvent("login", user="x"))
    assert log.size == 26 and log.verify().ok
    reader = AuditLog(tmp_path / "b")
    with pytest.raises(UsageError):
        reader.emit(AuditEvent("login"))
    with pytest.raises(ConfigError):
        AuditLog.create(tmp_path / "b", "node-1", signer.public_key)
    with pytest.raises(NotFoundError):
        AuditLog(tmp_path / "missing")


def test_two_writers_interleave_safely(tmp_path: Path, signer: MldsaSigner) -> None:
    a = AuditLog.create(tmp_path / "c", "gw", signer.public_key, signer=signer)
    b = AuditLog(tmp_path / "c", signer=signer)
    a.append(sample_events(3))
    b.append(sample_events(4))
    a.append(sample_events(2))
    assert a.verify() == VerifyReport(True, 9, None, None, 3, 9)


def test_witness_rejects_forks_and_shrinking(small_log: AuditLog, tmp_path: Path) -> None:
    witness = Witness(tmp_path / "w")
    heads = small_log.heads()
    witness.observe(heads[1], small_log.public_key, [])
    witness.observe(heads[3], small_log.public_key, small_log.consistency_proof(20, 40))
    assert [h.size for h in witness.heads("gateway")] == [40]  # only the largest is kept
    with pytest.raises(ChainBrokenError, match="shrank"):
        witness.observe(heads[2], small_log.public_key, [])
    with pytest.raises(ChainBrokenError, match="signing key"):
        witness.observe(heads[3], MldsaSigner.generate().public_key, [])


def test_witness_detects_fork(tmp_path: Path, signer: MldsaSigner) -> None:
    a = AuditLog.create(tmp_path / "a", "gw", signer.public_key, signer=signer, clock=make_clock())
    b = AuditLog.create(tmp_path / "b", "gw", signer.public_key, signer=signer, clock=make_clock())
    a.append(sample_events(5))
    b.append(sample_events(5, 100))
    witness = Witness(tmp_path / "w")
    witness.observe(a.heads()[-1], signer.public_key, [])
    a.append(sample_events(3))
    b.append(sample_events(3))
    witness.observe(a.heads()[-1], signer.public_key, a.consistency_proof(5, 8))
    with pytest.raises(ChainBrokenError, match="not consistent"):
        witness.observe(b.heads()[-1], signer.public_key, b.consistency_proof(5, 8))


@settings(max_examples=15, deadline=None)
@given(st.data())
def test_any_single_byte_change_is_named(data: st.DataObject) -> None:
    signer = _SIGNER
    with tempfile.TemporaryDirectory() as tmp:
        log = AuditLog.create(Path(tmp) / "l", "gw", signer.public_key, signer=signer)
        log.append(sample_events(6))
        log.append(sample_events(6, 6))
        raw = bytearray((log.folder / "records.jsonl").read_bytes())
        lines = bytes(raw).splitlines(keepends=True)
        entry = data.draw(st.integers(0, 11))
        start = sum(len(x) for x in lines[:entry])
        pos = data.draw(st.integers(start, start + len(lines[entry]) - 2))
        raw[pos] = (raw[pos] + data.draw(st.integers(1, 255))) % 256
        if raw[pos] == ord("\n"):
            raw[pos] = ord("x")
        (log.folder / "records.jsonl").write_bytes(bytes(raw))
        report = log.verify()
        assert not report.ok and report.first_bad == entry


def test_heads_file_is_json_lines(small_log: AuditLog) -> None:
    rows = [json.loads(x) for x in (small_log.folder / "heads.jsonl").read_text().splitlines()]
    assert rows[0]["origin"] == "gateway" and rows[0]["size"] == 10


@pytest.mark.parametrize("workers", [1, 3])
@pytest.mark.parametrize("damage", ["edit", "delete", "swap", "cut"])
def test_parallel_and_serial_checks_agree(small_log: AuditLog, workers: int, damage: str) -> None:
    lines = _lines(small_log)
    if damage == "edit":
        lines[31] = lines[31].replace(b"obj-31", b"obj-99")
    elif damage == "delete":
        del lines[17]
    elif damage == "swap":
        lines[35], lines[36] = lines[36], lines[35]
    else:
        lines[-1] = lines[-1][:-20]
    _write_lines(small_log, lines)
    expected = {"edit": 31, "delete": 17, "swap": 35, "cut": 39}[damage]
    report = small_log.verify(workers=workers)
    assert not report.ok and report.first_bad == expected


def _reopen(log: AuditLog, signer: MldsaSigner) -> AuditLog:
    return AuditLog(log.folder, signer=signer, clock=make_clock())


def test_reopening_resumes_from_the_saved_frontier(
    small_log: AuditLog, signer: MldsaSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new process appends without rebuilding the tree from every leaf."""
    rebuilt: list[int] = []
    original = merkle.TreeBuilder.append

    def counting(self: merkle.TreeBuilder, leaf: bytes) -> None:
        rebuilt.append(1)
        original(self, leaf)

    monkeypatch.setattr(merkle.TreeBuilder, "append", counting)
    log = _reopen(small_log, signer)
    log.append(sample_events(3, 40))
    assert len(rebuilt) == 3  # only the new leaves
    assert log.verify().ok and log.size == 43


@pytest.mark.parametrize("damage", ["missing", "garbage", "stale", "forged"])
def test_a_bad_frontier_is_ignored_and_the_log_stays_valid(
    small_log: AuditLog, signer: MldsaSigner, damage: str
) -> None:
    path = small_log.folder / "frontier.bin"
    good = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 7)
    elif damage == "stale":
        path.write_bytes((39).to_bytes(8, "big") + good[8:])
    else:  # right size, wrong hashes: must not be signed over
        path.write_bytes(good[:8] + bytes(len(good) - 8))
    log = _reopen(small_log, signer)
    log.append(sample_events(5, 40))
    report = log.verify()
    assert report.ok, report
    assert report.entries == 45


def test_latest_head_reads_the_last_line(small_log: AuditLog) -> None:
    assert small_log.latest_head() == small_log.heads()[-1]
    empty = AuditLog.create(small_log.folder.parent / "empty", "x", b"k" * 32)
    assert empty.latest_head() is None


def test_tail_reads_the_newest_entries_from_the_end(small_log: AuditLog) -> None:
    everything = list(small_log.events())
    assert small_log.tail(3) == everything[::-1][:3]
    assert small_log.tail(1000) == everything[::-1]
    assert small_log.tail(0) == []
    from tessera.audit import log as log_module

    # chunks smaller than a line still give whole lines
    lines = log_module._last_lines(small_log.folder / "records.jsonl", 5, chunk=7)
    assert [int(x.split(b" ", 1)[0]) for x in lines] == [39, 38, 37, 36, 35]
