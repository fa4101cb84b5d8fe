"""The identity table and received objects in the vault; re-identification is audited."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tessera.cli.main import main
from tessera.config import Environment
from tessera.errors import NotFoundError, TesseraError
from tessera.workflows.audit import verify_log
from tessera.workflows.dicom import deidentify_paths, reidentify, start_node
from tessera.workflows.vault import open_vault

# dcmtk's storescu (pynetdicom installs a Python one of the same name in the venv)
STORESCU = "/usr/bin/storescu" if Path("/usr/bin/storescu").exists() else shutil.which("storescu")

pytestmark = pytest.mark.integration


def ct_small() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]


def test_identity_in_vault_and_reidentify_audited(tmp_path: Path) -> None:
    home = tmp_path / "env"
    assert main(["init", str(home), "--nodes", "3", "--threshold", "2", "--unencrypted-key"]) == 0
    doc = deidentify_paths(ct_small(), tmp_path / "out", home=home)
    pseudonym = doc["files"][0]["pseudonym"]
    assert not (home / "dicom" / "identities").exists()  # nothing in plaintext on disk
    assert reidentify(home, pseudonym) == {
        "PatientID": "1CT1",
        "PatientName": "CompressedSamples^CT1",
    }
    with pytest.raises(NotFoundError):
        reidentify(home, "TS" + "0" * 20)
    report = verify_log(home, note=False)
    assert report.ok and report.entries == 2
    # below the threshold (2 of 3 stores lost) the identity cannot be reconstructed
    for store in ("node-1", "node-2"):
        for path in sorted((home / "stores" / store).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(TesseraError):
        reidentify(home, pseudonym)
    assert verify_log(home, note=False).entries == 3


@pytest.mark.skipif(STORESCU is None, reason="dcmtk not installed")
def test_node_stores_received_objects_in_the_vault(tmp_path: Path) -> None:
    home = tmp_path / "env"
    assert main(["init", str(home), "--nodes", "3", "--threshold", "2", "--unencrypted-key"]) == 0
    node = start_node(home=home, out=tmp_path / "unused", port=0, to_vault=True)
    try:
        run = subprocess.run(
            [STORESCU, "-aec", "TESSERA", node.host, str(node.port), str(ct_small())],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        node.stop()
    assert node.receiver.counts == {"deidentified": 1}, run.stdout + run.stderr
    assert not (tmp_path / "unused").exists()
    names = [m.name for m in open_vault(Environment.load(home)).ls()]
    stored = [n for n in names if n.startswith("dicom/")]
    assert len(stored) == 1 and stored[0].endswith(".dcm")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "x.dcm"
        open_vault(Environment.load(home)).get(stored[0], out)
        assert dcmread(out).PatientIdentityRemoved == "YES"
