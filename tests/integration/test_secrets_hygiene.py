"""Planted secrets never leak: not in output, error messages, logs, audit events or errors.

The test plants a passphrase, a person's key bytes and a PHI marker (in a CSV, good rows
and bad ones, and in DICOM files, readable and broken), then drives the real command
line through the work of a data steward and a researcher, wrong passphrases and bad
input included.  Afterwards every byte the commands printed and every file they wrote
(the environment folder, logs, audit log, node logs, outputs), except the planted
inputs and the outputs that are meant to carry the data, is searched for each secret in
the forms it could leak in (raw, hex, base64, UTF-16).
"""

from __future__ import annotations

import base64
import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tessera.config import Environment
from tessera.errors import TesseraError
from tessera.workflows.people import unlock

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "Planted-Passphrase-7Qx2Wm9"
WRONG = "Wrong-Planted-Guess-4Kd8Rz"
PHI = "PHIMARKER-Zebulon-Quarrington"
PHI_ID = "PHIMARKER-ID-0042"


def _forms(secret: bytes) -> list[bytes]:
    """The ways ``secret`` could show up in a file or a message."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    forms += [base64.b64encode(secret).rstrip(b"="), base64.urlsafe_b64encode(secret)[:-2]]
    if secret.isascii():
        forms.append(secret.decode().encode("utf-16-le"))
    return [f for f in forms if len(f) >= 10]


class Run:
    """Runs the CLI and keeps everything it printed."""

    def __init__(self, home: Path, work: Path) -> None:
        self.home, self.work = home, work
        self.printed: list[tuple[str, bytes]] = []

    def __call__(
        self, *args: str, ok: bool | None = True, passphrase: str | None = PASSPHRASE
    ) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
        env.update(TESSERA_HOME=str(self.home), TESSERA_PERSON="owner", COLUMNS="200")
        if passphrase is not None:
            env["TESSERA_PASSPHRASE"] = passphrase
        done = subprocess.run(
            [str(BIN), *args],
            capture_output=True,
            cwd=self.work,
            env=env,
            timeout=300,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        self.printed.append((" ".join(args), done.stdout + done.stderr))
        text = (done.stdout + done.stderr).decode(errors="replace")
        assert ok is None or (done.returncode == 0) == ok, (
            f"tessera {' '.join(args)}: {text[-1500:]}"
        )
        assert b"Traceback" not in done.stderr, text
        return text


def _csv(path: Path, source: Path) -> None:
    """The sample cohort with PHI in the id column, plus rows that fail validation."""
    with source.open(newline="") as f:
        rows = list(csv.reader(f))
    rows[1][0] = PHI_ID
    bad_age = [PHI, *rows[2][1:]]
    bad_age[1] = PHI  # not an integer
    bad_sex = [f"{PHI}-2", *rows[3][1:]]
    bad_sex[2] = PHI  # not a category
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([*rows, bad_age, bad_sex])


def _dicoms(folder: Path) -> None:
    folder.mkdir()
    source = get_testdata_file("CT_small.dcm")
    assert source is not None
    ds = dcmread(source)
    ds.PatientName = PHI
    ds.PatientID = PHI_ID
    ds.InstitutionName = PHI
    ds.save_as(folder / "ct.dcm")
    good = (folder / "ct.dcm").read_bytes()
    # broken: a file meta element claims 2 GiB, then the PHI
    broken = good[:132] + b"\x02\x00\x01\x00OB\x00\x00\xff\xff\xff\x7f" + PHI.encode() * 4
    (folder / "broken.dcm").write_bytes(broken)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[Run]:
    work = tmp_path / "work"
    work.mkdir()
    run = Run(tmp_path / "home", work)
    try:
        yield run
    finally:
        run("node", "stop", passphrase=None, ok=None)


def test_planted_secrets_appear_nowhere(world: Run, tmp_path: Path) -> None:
    run = world
    from tessera.samples.cohort import write_cohort

    paths = write_cohort(tmp_path / "cohort", 40, hospitals=1, seed=5)
    _csv(run.work / "ward.csv", paths[0])
    _dicoms(run.work / "dicom")
    run("init", str(run.home))
    run("person", "add", "rita", "--role", "researcher", "--as", "owner")
    # wrong passphrases: refused, and the guess is never echoed
    run("person", "add", "mal", "--role", "researcher", "--as", "owner", ok=False, passphrase=WRONG)
    schema = str(tmp_path / "cohort" / "patients.schema.yaml")
    run("table", "import", "ward.csv", "--name", "ward", "--schema", schema, ok=False)
    run("table", "import", "ward.csv", "--name", "ward", "--schema", schema, "--skip-invalid")
    run("query", "SELECT sex, COUNT(*) FROM ward GROUP BY sex")
    run("query", f"SELECT COUNT(*) FROM ward WHERE sex = '{PHI}'")  # no such category: 0 rows
    report = run("dicom", "deidentify", "dicom", "deid", ok=None)
    assert "1 de-identified, 0 quarantined, 1 failed" in report
    run("vault", "put", "ward.csv", "--name", "ward.csv")
    run("vault", "get", "ward.csv", "--out", "back.csv")
    run("vault", "put", "ward.csv", "--name", "never.csv", ok=False, passphrase=WRONG)
    run("share", "split", "ward.csv", "-k", "2", "-n", "3", "--out", "frags")
    run("share", "combine", "frags/ward.csv.1-of-3.tfrag", "--out", "lost.csv", ok=False)
    run("audit", "verify")
    # the person's key: the bytes a leak would show
    env = Environment.load(run.home)
    owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)
    key_bytes = owner.key.seed_bytes()
    with pytest.raises(TesseraError) as caught:
        unlock(env, "owner", WRONG.encode(), record=False)
    messages = [str(caught.value), repr(caught.value)]

    secrets_ = {
        "passphrase": PASSPHRASE.encode(),
        "wrong passphrase": WRONG.encode(),
        "key bytes": key_bytes,
        "PHI": PHI.encode(),
        "PHI id": PHI_ID.encode(),
    }
    meant = {run.work / "ward.csv", run.work / "back.csv"} | set((run.work / "dicom").iterdir())
    places = [(f"output of tessera {cmd}", out) for cmd, out in run.printed]
    places += [(f"exception text {i}", m.encode()) for i, m in enumerate(messages)]
    for folder in (run.home, run.work):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink() and path not in meant:
                places.append((str(path.relative_to(tmp_path)), path.read_bytes()))
    assert len(places) > 50
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets_.items()
        for where, data in places
        if any(form in data for form in _forms(secret))
    ]
    assert leaks == []
    # the search finds what it is there to find
    assert any(form in (run.work / "ward.csv").read_bytes() for form in _forms(PHI.encode()))
