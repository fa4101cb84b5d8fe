"""The identity table and received objects in the vault (escrowed); re-identification
needs two stewards or officers and is audited."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage, SecondaryCaptureImageStorage  # type: ignore[attr-defined]

from tessera.cli.main import main
from tessera.config import Environment
from tessera.errors import NotFoundError, TesseraError
from tessera.keys.documents import SignedDocument
from tessera.workflows.audit import gateway_log, verify_log
from tessera.workflows.dicom import deidentify_paths, start_node
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import add_person, unlock
from tessera.workflows.reidentify import (
    cosign,
    identity_ref,
    reidentify_body,
    run_reidentify,
    sign_reidentify,
)
from tessera.workflows.vault import open_vault

# dcmtk's storescu (pynetdicom installs a Python one of the same name in the venv)
STORESCU = "/usr/bin/storescu" if Path("/usr/bin/storescu").exists() else shutil.which("storescu")

pytestmark = pytest.mark.integration

PASSPHRASE = "test passphrase"


def ct_small() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Path(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _stop_custodians(tmp_path: Path) -> Iterator[None]:
    """Stop the custodian nodes a roster check (who may re-identify) started."""
    yield
    home = tmp_path / "env"
    if (home / "tessera.toml").exists():
        stop_nodes(Environment.load(home))


def _init(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tessera init``: the owner's key (the vault's signer) encrypted under a passphrase;
    a second privileged person (otto, an officer) to co-sign re-identification."""
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("TESSERA_PERSON", raising=False)
    args = ["init", str(home), "--nodes", "3", "--threshold", "2"]
    assert main([*args, "--unencrypted-key"]) == 1  # no longer offered
    assert main(args) == 0
    env = Environment.load(home)
    owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)
    add_person(env, "otto", ["officer"], PASSPHRASE.encode(), [owner])


def _approved(home: Path, refs: list[str]) -> SignedDocument:
    """A re-identification request by the owner, co-signed by otto (the quorum of 2)."""
    env = Environment.load(home)
    owner, otto = (unlock(env, n, PASSPHRASE.encode(), record=False) for n in ("owner", "otto"))
    return cosign(sign_reidentify(reidentify_body(refs, "test", "owner"), owner), otto)


def reidentify(home: Path, pseudonym: str) -> dict[str, str]:
    """The identity behind ``pseudonym``, through the custodians (two signers)."""
    owner = unlock(Environment.load(home), "owner", PASSPHRASE.encode(), record=False)
    found = run_reidentify(home, _approved(home, [identity_ref(pseudonym)]), owner)
    return found[pseudonym]


def _reidentify_outcomes(home: Path) -> list[str]:
    """Outcomes of the identity look-ups in the audit log (other commands log too)."""
    return [
        e.outcome
        for _, e in gateway_log(home).events()
        if e.action == "dicom.reidentify" and e.entity_type == "identity"
    ]


def test_identity_in_vault_and_reidentify_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "env"
    _init(home, monkeypatch)
    monkeypatch.delenv("TESSERA_PASSPHRASE")
    with pytest.raises(TesseraError, match="passphrase"):  # the vault owner's key is locked
        deidentify_paths(ct_small(), tmp_path / "locked", home=home)
    monkeypatch.setenv("TESSERA_PASSPHRASE", PASSPHRASE)
    doc = deidentify_paths(ct_small(), tmp_path / "out", home=home)
    pseudonym = doc["files"][0]["pseudonym"]
    assert not (home / "dicom" / "identities").exists()  # nothing in plaintext on disk
    assert reidentify(home, pseudonym) == {
        "PatientID": "1CT1",
        "PatientName": "CompressedSamples^CT1",
    }
    with pytest.raises(NotFoundError):
        reidentify(home, "TS" + "0" * 20)
    assert verify_log(home, note=False).ok
    assert _reidentify_outcomes(home) == ["success", "not_found"]
    # below the threshold (2 of 3 stores lost) the identity cannot be reconstructed
    for store in ("node-1", "node-2"):
        for path in sorted((home / "stores" / store).rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    with pytest.raises(TesseraError):
        reidentify(home, pseudonym)
    assert len(_reidentify_outcomes(home)) == 3  # the failed attempt is audited too


@pytest.mark.skipif(STORESCU is None, reason="dcmtk not installed")
def test_node_stores_received_objects_in_the_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "env"
    _init(home, monkeypatch)
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


def _dataset_bytes(path: Path) -> bytes:
    """The encoded data set of a DICOM file, after its preamble and file meta."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = dcmread(path, stop_before_pixels=False)
    raw = path.read_bytes()
    meta_end = 132 + 12 + int(ds.file_meta.FileMetaInformationGroupLength)
    return raw[meta_end:]


def test_node_keeps_originals_secret_shared_and_fetches_them_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "env"
    _init(home, monkeypatch)
    with open(home / "tessera.toml", "a", encoding="utf-8") as fh:
        fh.write("\n[dicom]\nkeep_original = true\n")
    with pytest.raises(TesseraError, match="only secret-shared in the vault"):
        start_node(home=home, out=tmp_path / "unused", port=0)  # never to a plain folder
    assert main(["dicom", "serve", "--port", "0", "--home", str(home)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        burned = Path(get_testdata_file("SC_rgb_small_odd.dcm"))  # type: ignore[arg-type]
    node = start_node(home=home, out=tmp_path / "unused", port=0, to_vault=True)
    # pynetdicom sends the files' encoded data sets as they are on disk (no re-encoding)
    monkeypatch.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
    try:
        sender = AE(ae_title="MODALITY")
        sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        sender.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        assoc = sender.associate(node.host, node.port, ae_title="TESSERA")
        assert assoc.is_established
        statuses = [assoc.send_c_store(path).Status for path in (ct_small(), burned)]
        assoc.release()
    finally:
        node.stop()
    assert statuses[0] == 0 and statuses[1] != 0  # the quarantined file is refused
    assert node.receiver.counts == {"deidentified": 1, "quarantined": 1}
    vault = open_vault(Environment.load(home))
    names = [m.name for m in vault.ls()]
    copies = [n for n in names if n.startswith("dicom/")]
    originals = [n for n in names if n.startswith("dicom-original/")]
    assert len(copies) == 1 and len(originals) == 1  # no original kept for the quarantined file
    assert originals[0] == "dicom-original/" + copies[0].removeprefix("dicom/")
    source = dcmread(ct_small())
    for identifier in (str(source.PatientName), source.PatientID, source.SOPInstanceUID):
        assert identifier not in " ".join(names)
    # the stores hold fragments of ciphertext only: no identifying bytes anywhere in them
    needles = [str(source.PatientName).encode(), source.SOPInstanceUID.encode()]
    for path in (home / "stores").rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            assert not any(n in body for n in needles), path
    # fetched by the de-identified copy's SOP Instance UID: the data set as sent, byte for byte
    new_uid = copies[0].rsplit("/", 1)[1].removesuffix(".dcm")
    out = tmp_path / "original.dcm"
    request = tmp_path / "request.json"
    request.write_text(json.dumps(_approved(home, originals).to_dict()))
    fetch = ["dicom", "original", new_uid, "--out", str(out), "--home", str(home)]
    assert main([*fetch, "--reason", "alone", "--as", "owner"]) == 1  # one signature
    assert not out.exists()
    assert main([*fetch, "--request", str(request)]) == 0
    assert _dataset_bytes(out) == _dataset_bytes(ct_small())
    back = dcmread(out)
    assert back.PatientName == source.PatientName and back.SOPInstanceUID == source.SOPInstanceUID
    # through the real entry point, by pseudonym, as JSON
    pseudonym = copies[0].split("/")[1]
    again = tmp_path / "again"
    request.write_text(json.dumps(_approved(home, originals).to_dict()))  # a new approval
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tessera"), "dicom", "original", pseudonym,
         "--out", str(again), "--json", "--request", str(request), "--home", str(home)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["originals"][0]["name"] == originals[0]
    assert Path(again).read_bytes() == out.read_bytes()
    missing = ["dicom", "original", "2.25.1", "--out", str(tmp_path / "x"), "--home", str(home)]
    assert main([*missing, "--reason", "test"]) == 1
    assert not (tmp_path / "x").exists()
    assert verify_log(home, note=False).ok
    events = [e for _, e in gateway_log(home).events() if e.entity_type == "dicom-original"]
    assert [(e.action, e.outcome, e.entity) for e in events] == [
        ("dicom.reidentify", "denied", originals[0]),
        ("dicom.reidentify", "success", originals[0]),
        ("dicom.reidentify", "success", originals[0]),
        ("dicom.reidentify", "not_found", "dicom-original/*/2.25.1.dcm"),
    ]  # one refusal, two retrievals and one miss, all audited
    assert all(e.patient in ("", pseudonym) for e in events)


@pytest.mark.skipif(STORESCU is None, reason="dcmtk not installed")
def test_node_records_one_receive_event_per_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "env"
    _init(home, monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        at_risk = str(get_testdata_file("SC_rgb_small_odd.dcm"))  # burned-in risk: quarantined
    node = start_node(home=home, out=tmp_path / "unused", port=0, to_vault=True)
    try:
        run = subprocess.run(
            [STORESCU, "-aec", "TESSERA", "-aet", "MODALITY7", node.host, str(node.port),
             str(ct_small()), at_risk],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        node.stop()
    assert node.receiver.counts == {"deidentified": 1, "quarantined": 1}, run.stdout + run.stderr
    events = [e for _, e in gateway_log(home).events() if e.action == "dicom.receive"]
    assert [(e.outcome, e.detail["status"]) for e in events] == [
        ("success", "stored"),
        ("failure", "quarantined"),
    ]
    stored = events[0]
    names = [m.name for m in open_vault(Environment.load(home)).ls() if m.name.startswith("dicom/")]
    assert stored.entity.startswith("TS") and stored.patient == stored.entity
    assert stored.entity_type == "patient"
    assert any(n.endswith(str(stored.detail["object"])) for n in names)
    assert stored.detail["sop_class"] == str(CTImageStorage)
    assert stored.user == "MODALITY7" and stored.address == "127.0.0.1"
    ct = dcmread(ct_small())
    raw = json.dumps([[str(v) for v in (e.entity, e.patient, e.user, *e.detail.values())]
                      for e in events])  # fmt: skip
    assert str(ct.PatientID) not in raw and str(ct.PatientName) not in raw
    assert verify_log(home, note=False).ok
