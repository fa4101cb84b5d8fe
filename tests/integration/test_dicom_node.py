"""dcmtk's storescu sends pydicom's test files to our C-STORE SCP on a free port."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tessera.core.audit_sink import AuditEvent, MemoryAuditSink
from tessera.errors import StorageUnavailableError
from tessera.workflows.dicom import reidentify, start_node

# dcmtk's storescu (pynetdicom installs a Python one of the same name in the venv)
STORESCU = "/usr/bin/storescu" if Path("/usr/bin/storescu").exists() else shutil.which("storescu")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(STORESCU is None, reason="dcmtk not installed"),
]

SENT = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtdose.dcm", "rtstruct.dcm",
        "test-SR.dcm", "waveform_ecg.dcm", "reportsi.dcm"]  # fmt: skip
AT_RISK = ["SC_rgb_small_odd.dcm", "examples_palette.dcm"]  # secondary capture, ultrasound


def sample_path(name: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        path = get_testdata_file(name)
    assert path is not None
    return str(path)


def test_storescu_to_our_node(tmp_path: Path) -> None:
    home, out = tmp_path / "home", tmp_path / "received"
    node = start_node(home=home, out=out, port=0, ae_title="TESSERA_TEST")
    try:
        run = subprocess.run(
            [STORESCU, "-nh", "-aec", "TESSERA_TEST", "-aet", "PACS", node.host, str(node.port),
             *(sample_path(n) for n in SENT + AT_RISK)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    finally:
        node.stop()
    stored = sorted(out.rglob("*.dcm"))
    assert len(stored) == len(SENT), run.stdout + run.stderr
    assert node.receiver.counts == {"deidentified": len(SENT), "quarantined": len(AT_RISK)}, (
        run.stdout + run.stderr
    )
    originals = {str(dcmread(sample_path(n), force=True).SOPInstanceUID) for n in SENT}
    for path in stored:
        ds = dcmread(path)
        assert ds.PatientIdentityRemoved == "YES"
        assert str(ds.SOPInstanceUID).startswith("2.25.")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert str(ds.SOPInstanceUID) not in originals
        assert path.parent.name == ds.PatientID
    ct = dcmread(sample_path("CT_small.dcm"))
    pseudonyms = {p.parent.name for p in stored}
    identities = [reidentify(home, p) for p in pseudonyms]
    assert {"PatientID": str(ct.PatientID), "PatientName": str(ct.PatientName)}.items() <= next(
        i for i in identities if i.get("PatientID") == ct.PatientID
    ).items()


class _BrokenSink:
    def emit(self, event: AuditEvent) -> None:
        raise StorageUnavailableError("audit log unavailable")


def _send(node_port: int, host: str, *names: str) -> str:
    run = subprocess.run(
        [STORESCU, "-aec", "TESSERA_TEST", host, str(node_port), *(sample_path(n) for n in names)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return run.stdout + run.stderr


def test_injected_sink_gets_one_event_per_instance_and_a_broken_one_refuses(
    tmp_path: Path,
) -> None:
    sink = MemoryAuditSink()
    home = tmp_path / "home"
    node = start_node(
        home=home, out=tmp_path / "a", port=0, ae_title="TESSERA_TEST", audit_sink=sink
    )
    try:
        log = _send(node.port, node.host, "CT_small.dcm", "MR_small.dcm", AT_RISK[0])
    finally:
        node.stop()
    assert [(e.action, e.outcome, e.detail["status"]) for e in sink.events] == [
        ("dicom.receive", "success", "stored"),
        ("dicom.receive", "success", "stored"),
        ("dicom.receive", "failure", "quarantined"),
    ], log
    assert all(e.patient.startswith("TS") and e.entity == e.patient for e in sink.events)
    assert {
        str(dcmread(sample_path(n)).PatientID) for n in ("CT_small.dcm", "MR_small.dcm")
    }.isdisjoint(e.entity for e in sink.events)
    node = start_node(
        home=home, out=tmp_path / "b", port=0, ae_title="TESSERA_TEST", audit_sink=_BrokenSink()
    )
    try:
        log = _send(node.port, node.host, "CT_small.dcm")
    finally:
        node.stop()
    assert node.receiver.counts == {"failed": 1}, log  # not acknowledged without its event
