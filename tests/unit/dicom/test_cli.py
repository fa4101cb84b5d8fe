"""``tessera dicom``: the JSON report, exit codes, key files, the real entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from tessera.cli.main import main
from tessera.dicom import (
    BatchSettings,
    FolderIdentityStore,
    FolderSink,
    Profile,
    discover,
    run_batch,
)
from tessera.dicom import batch as batch_module
from tessera.errors import NotFoundError, UsageError

from .conftest import base_dataset, encode


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in" / "nested"
    folder.mkdir(parents=True)
    for i in range(3):
        ds = base_dataset(f"PID-{i % 2}", f"Doe^Pat{i % 2}")
        ds.SOPInstanceUID = f"1.2.826.0.1.3680043.8.498.{100 + i}"
        (folder / f"Doe_{i}.dcm").write_bytes(encode(ds))
    (folder / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM\x02\x00")
    (tmp_path / "in" / "notes.txt").write_text("not dicom")
    return tmp_path / "in"


def run_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["dicom", *args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_deidentify_folder_json_report(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "home"
    code, doc = run_json(
        capsys, "deidentify", str(inputs), str(tmp_path / "out"), "--home", str(home)
    )
    assert code == 1  # two inputs failed: the report lists them, the exit code says so
    by_name = {Path(f["input"]).name: f for f in doc["files"]}
    assert set(by_name) == {"Doe_0.dcm", "Doe_1.dcm", "Doe_2.dcm", "broken.dcm", "notes.txt"}
    assert by_name["broken.dcm"]["status"] == "failed" and by_name["broken.dcm"]["output"] is None
    assert by_name["notes.txt"]["reason"].startswith("not a readable DICOM file")
    assert doc["summary"] == {"deidentified": 3, "quarantined": 0, "failed": 2}
    first = by_name["Doe_0.dcm"]
    assert first["status"] == "deidentified" and first["reason"] is None
    assert any(a["keyword"] == "PatientName" and a["action"] == "Z" for a in first["actions"])
    out = dcmread(first["output"])
    assert out.PatientID == first["pseudonym"] and "Doe" not in first["output"]
    assert by_name["Doe_2.dcm"]["pseudonym"] == first["pseudonym"]  # same patient, same key
    key = home / "dicom" / "project.key"
    assert key.stat().st_mode & 0o077 == 0
    # identities recorded, and a second run with the same key agrees
    code, again = run_json(
        capsys, "deidentify", str(inputs), str(tmp_path / "o2"), "--home", str(home)
    )
    assert {f["pseudonym"] for f in again["files"]} == {f["pseudonym"] for f in doc["files"]}
    code, who = run_json(capsys, "reidentify", first["pseudonym"], "--home", str(home))
    assert code == 0 and who["identity"]["PatientID"] == "PID-0"


def test_options_and_key_file(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "site.key"
    key.write_text("ab" * 32)
    key.chmod(0o600)
    args = ["deidentify", str(inputs / "nested" / "Doe_0.dcm"), str(tmp_path / "o")]
    code, doc = run_json(capsys, *args, "--option", "113107", "--option", "clean-descriptors",
                         "--key-file", str(key), "--home", str(tmp_path / "h"))  # fmt: skip
    assert code == 0  # one good file
    assert doc["profile"]["options"] == ["113105", "113107"]
    assert doc["files"][0]["date_shift_days"] > 0
    assert main(["dicom", *args, "--option", "113999", "--home", str(tmp_path / "h")]) == 2
    assert "unknown profile option" in capsys.readouterr().err
    key.chmod(0o644)
    assert main(["dicom", *args, "--key-file", str(key), "--home", str(tmp_path / "h")]) == 1
    assert "readable by others" in capsys.readouterr().err


def test_failed_file_exit_code_and_missing_input(
    tmp_path: Path, inputs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(tmp_path / "h")]
    assert main(["dicom", "deidentify", str(inputs), str(tmp_path / "o"), *home]) == 1
    captured = capsys.readouterr()
    assert "file(s) failed" in captured.err and "de-identified" in captured.out
    # --json still reports every file, and the exit code still says one failed
    code = main(["dicom", "deidentify", str(inputs), str(tmp_path / "o2"), "--json", *home])
    doc = json.loads(capsys.readouterr().out)
    assert code == 1 and doc["summary"]["failed"] >= 1 and len(doc["files"]) == 5
    assert main(["dicom", "deidentify", str(inputs), str(tmp_path / "o"), "--strict", *home]) == 1
    assert main(["dicom", "deidentify", str(tmp_path / "nope"), str(tmp_path / "o"), *home]) == 1


def test_real_entry_point(tmp_path: Path, inputs: Path) -> None:
    exe = Path(sys.executable).parent / "tessera"
    run = subprocess.run(
        [str(exe), "dicom", "deidentify", str(inputs), str(tmp_path / "out"), "--json",
         "--workers", "2", "--home", str(tmp_path / "home")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "TESSERA_DEBUG": ""},
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert len(doc["files"]) == 5 and doc["summary"]["failed"] == 2
    assert "Traceback" not in run.stderr


def test_folder_stores(tmp_path: Path) -> None:
    sink = FolderSink(tmp_path / "o")
    where = sink.put("TSAAAA/1.2.dcm", b"x")
    assert Path(where).read_bytes() == b"x"
    with pytest.raises(UsageError):
        sink.put("../escape.dcm", b"x")
    store = FolderIdentityStore(tmp_path / "ids")
    pseudonym = "TS" + "A" * 20
    store.put(pseudonym, {"PatientID": "1"})
    store.put(pseudonym, {"PatientID": "2"})  # the first identity recorded stays
    assert store.get(pseudonym) == {"PatientID": "1"}
    with pytest.raises(NotFoundError):
        store.get("TS" + "B" * 20)
    with pytest.raises(UsageError):
        store.get("../../etc/passwd")


def _dying(path: Path) -> object:
    """A worker that dies on one file (as an out-of-memory kill would)."""
    if path.name == "Doe_1.dcm":
        os._exit(3)
    return batch_module._original_work(path)  # type: ignore[attr-defined]


def test_batch_survives_a_dying_worker(
    tmp_path: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = discover(inputs) * 4  # 20 files: enough for the pool
    monkeypatch.setattr(batch_module, "_original_work", batch_module._work, raising=False)
    monkeypatch.setattr(batch_module, "_work", _dying)
    entries = run_batch(
        paths, BatchSettings.of(Profile(), bytes(32)), FolderSink(tmp_path / "o"),
        FolderIdentityStore(tmp_path / "i"), workers=2,
    )  # fmt: skip
    assert len(entries) == len(paths)
    assert any(e["reason"] == "worker process died while handling this batch" for e in entries)
