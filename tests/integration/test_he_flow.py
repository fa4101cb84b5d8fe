"""The HE flow end to end through the command line, with the untrusted server as its own
process on loopback: keygen, encrypt (a table, a CT series and its mask), run, decrypt;
results within the stated bounds of numpy; tampering, a wrong key, damaged files and
oversized or malformed uploads refused with one line; the key set backed up in the vault
and restored."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest

from tessera.config import Environment
from tessera.errors import BudgetExhaustedError, IntegrityError
from tessera.he.container import digest, pack, unpack
from tessera.he.jobs import Job
from tessera.samples.cohort import write_cohort
from tessera.samples.ct_phantom import write_phantom
from tessera.workflows import he
from tessera.workflows.environment import init_environment
from tessera.workflows.he_imaging import encrypt_image
from tessera.workflows.he_release import release
from tessera.workflows.he_run import read_job, run_job
from tessera.workflows.nodes import stop_nodes
from tessera.workflows.people import Signer, unlock
from tessera.workflows.vault import init_vault

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("he_flow")]  # in order, one worker

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "he integration passphrase"
FEATURES = ["age", "bmi", "cd4", "smoker"]
WEIGHTS = [0.04, 0.05, -0.002, 0.7]
INTERCEPT = -3.5


@dataclass(frozen=True)
class Site:
    root: Path
    home: Path
    url: str
    env: dict[str, str]
    environment: Environment
    owner: Signer

    def tessera(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN), *args], capture_output=True, text=True, env=self.env, cwd=self.root,
            timeout=300, check=False,
        )  # fmt: skip
        if ok:
            assert done.returncode == 0, done.stderr
        return done

    def json(self, *args: str) -> dict:
        return json.loads(self.tessera(*args, "--json").stdout)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("he")
    home = root / "env"
    env = init_environment(home, nodes=3, threshold=2, passphrase=PASSPHRASE.encode())
    init_vault(env)
    models = root / "models"
    models.mkdir()
    (models / "risk.json").write_text(json.dumps({
        "format": "tessera-he-model", "version": 1, "name": "risk", "kind": "logistic",
        "features": FEATURES, "weights": WEIGHTS, "intercept": INTERCEPT,
    }))  # fmt: skip
    server = subprocess.Popen(
        [sys.executable, "-m", "tessera.server.he_main", "--port", "0", "--models", str(models),
         "--max-upload-mb", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("he server listening on "), (
            server.stderr.read() if server.stderr else line
        )
        url = line.split(" on ", 1)[1].strip()
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")},
            "TESSERA_HOME": str(home),
            "TESSERA_PASSPHRASE": PASSPHRASE,
        }
        owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)
        yield Site(root, home, url, environ, env, owner)
    finally:
        stop_nodes(env)  # started by the release test's policy
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for pipe in (server.stdout, server.stderr):
            if pipe is not None:
                pipe.close()


def _rows(path: Path) -> tuple[np.ndarray, list[str]]:
    values, ids = [], []
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            cells = [row[c] for c in FEATURES]
            if any(c == "" for c in cells):
                continue
            values.append(
                [1.0 if c == "true" else 0.0 if c == "false" else float(c) for c in cells]
            )
            ids.append(row["patient_id"])
    return np.array(values), ids


@pytest.fixture(scope="module")
def encrypted(site: Site) -> tuple[Path, np.ndarray, list[str]]:
    made = site.json("he", "keygen", "--as", "owner")
    assert made["params"]["security_bits"] == 128 and made["params"]["poly_modulus_degree"] == 8192
    cohort = site.root / "cohort"
    write_cohort(cohort, 2500, hospitals=1, seed=5)
    data = site.root / "cohort.hedata"
    done = site.json(
        "he", "encrypt", str(cohort / "hospital-1.csv"), "--key", "owner", "--out", str(data),
        "--schema", str(cohort / "patients.schema.yaml"), "--columns", ",".join(FEATURES),
        "--id-column", "patient_id", "--skip-incomplete",
    )  # fmt: skip
    values, ids = _rows(cohort / "hospital-1.csv")
    assert done["rows"] == len(values) and done["sentinel_positions"] >= 64
    return data, values, ids


def _job(site: Site, name: str, text: str) -> Path:
    path = site.root / f"{name}.yaml"
    path.write_text(text)
    return path


def test_statistics_and_scores_through_the_server(site: Site, encrypted: tuple) -> None:
    data, values, ids = encrypted
    job = _job(site, "variance", "kind: variance\n")
    result = site.root / "variance.heresult"
    ran = site.json("he", "run", "--server", site.url, "--job", str(job), "--data", str(data),
                    "--out", str(result))  # fmt: skip
    assert ran["uploaded"] == ["bundle", "data"]
    doc = site.json("he", "decrypt", str(result))
    assert doc["verification"]["ok"] and doc["verification"]["failed"] == 0
    means = np.array([c["mean"] for c in doc["columns"]])
    assert np.max(np.abs(means - values.mean(0)) / np.abs(values.mean(0))) <= 1e-4
    var = np.array([c["variance"] for c in doc["columns"]])
    assert np.max(np.abs(var - values.var(0, ddof=1)) / values.var(0, ddof=1)) <= 1e-4

    # the same from Python
    scores = site.root / "scores.heresult"
    job = read_job(_job(site, "scores", "kind: scores\nmodel: risk\n"))
    ran = run_job(site.url, job, data, scores)
    assert ran.uploaded == []  # the server kept both
    doc = he.decrypt_result(site.environment, site.owner, scores).document
    z = values @ np.array(WEIGHTS) + INTERCEPT
    got = np.array([s["score"] for s in doc["scores"]])
    assert np.max(np.abs(got - z)) <= 1e-3
    assert [s["id"] for s in doc["scores"]] == ids
    assert doc["link"] == "sigmoid" and doc["model_digest"] == ran.model.digest  # type: ignore[union-attr]


def test_a_ct_series_and_mask(site: Site, encrypted: tuple) -> None:  # keygen first
    truth = write_phantom(site.root / "phantom", size=40, slices=12)
    data = site.root / "ct.hedata"
    bundle = he.find_bundle(site.environment, "owner")
    encrypt_image(site.root / "phantom" / "ct", site.root / "phantom" / "mask", bundle, data)
    result = site.root / "ct.heresult"
    run_job(site.url, read_job(_job(site, "img", "kind: imaging\n")), data, result)
    doc = he.decrypt_result(site.environment, site.owner, result).document
    assert doc["voxels"] == truth["voxels"]
    assert abs(doc["volume_mm3"] - truth["volume_mm3"]) <= 1e-6 * truth["volume_mm3"]
    assert abs(doc["mean_intensity"] - truth["mean_intensity"]) <= 1e-4 * abs(
        truth["mean_intensity"]
    )
    said = site.tessera("he", "decrypt", str(result)).stdout
    assert f"{truth['voxels']} voxels" in said and "mean intensity" in said


def _one_line_error(done: subprocess.CompletedProcess[str], text: str) -> None:
    assert done.returncode == 1, done.stdout
    assert done.stderr.count("\n") == 1 and text in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_tampering_wrong_keys_and_damaged_files_are_refused(site: Site, encrypted: tuple) -> None:
    data = encrypted[0]
    result = site.root / "sum.heresult"
    sum_job = _job(site, "sum", "kind: sum\n")
    run_job(site.url, read_job(sum_job), data, result)
    box = unpack(result.read_bytes(), expect="tessera-he-result")
    answer = unpack(box.blobs[0], expect="tessera-he-answer")
    # the server swapped two outputs' ciphertexts (valid ciphertexts, wrong content)
    swapped = pack(answer.header, [answer.blobs[1], answer.blobs[0], *answer.blobs[2:]])
    bad = site.root / "swapped.heresult"
    bad.write_bytes(pack(box.header, [swapped, box.blobs[1]]))
    _one_line_error(site.tessera("he", "decrypt", str(bad), ok=False), "sentinel checks failed")
    # bytes flipped inside a ciphertext
    flipped = bytearray(box.blobs[0])
    flipped[len(flipped) // 2] ^= 0x55
    bad.write_bytes(pack(box.header, [bytes(flipped), box.blobs[1]]))
    with pytest.raises(IntegrityError, match="refused"):
        he.decrypt_result(site.environment, site.owner, bad)
    # a second key set: not the key the data was encrypted under
    he.keygen(site.environment, site.owner, name="other")
    with pytest.raises(IntegrityError, match="is not the key this was encrypted under"):
        he.decrypt_result(site.environment, site.owner, result, key="other")
    # the wrong passphrase
    wrong = {**site.env, "TESSERA_PASSPHRASE": "not the passphrase"}
    done = subprocess.run([str(BIN), "he", "decrypt", str(result)], capture_output=True, text=True,
                          env=wrong, check=False)  # fmt: skip
    _one_line_error(done, "wrong passphrase")
    # a data file whose ciphertexts were altered after encryption
    dbox = unpack(data.read_bytes(), expect="tessera-he-data")
    public = bytearray(dbox.blobs[0])
    public[-20] ^= 1
    altered = site.root / "altered.hedata"
    altered.write_bytes(pack(dbox.header, [bytes(public), *dbox.blobs[1:]]))
    with pytest.raises(IntegrityError, match="damaged or was altered"):
        run_job(site.url, read_job(sum_job), altered, bad)
    # a malformed job file
    broken = _job(site, "bad", "kind: [x\n")
    done = site.tessera(
        "he", "run", "--server", site.url, "--job", str(broken), "--data", str(data),
        "--out", str(bad), ok=False,
    )  # fmt: skip
    _one_line_error(done, "not valid YAML")


def test_the_server_refuses_oversized_and_malformed_uploads(site: Site) -> None:
    big = b"\0" * (9 << 20)
    reply = httpx.put(f"{site.url}v1/data/{digest(big)[7:]}", content=big, timeout=60)
    assert reply.status_code == 413 and reply.json()["error"] == "request_too_large"
    junk = b"TSRHE\x01" + b"\xff" * 100
    reply = httpx.put(f"{site.url}v1/bundles/{digest(junk)[7:]}", content=junk, timeout=60)
    assert reply.status_code == 400 and "\n" not in reply.json()["message"]
    reply = httpx.post(f"{site.url}v1/jobs", content=b"[1, 2", timeout=60)
    assert reply.status_code == 400
    assert httpx.get(f"{site.url}v1/health", timeout=60).json()["service"] == "tessera-he"


def test_the_key_set_is_kept_in_the_vault_and_restored(site: Site, encrypted: tuple) -> None:
    result = site.root / "variance.heresult"
    if not result.exists():  # the statistics test has not run first: make the result here
        job = _job(site, "variance", "kind: variance\n")
        site.json("he", "run", "--server", site.url, "--job", str(job),
                  "--data", str(encrypted[0]), "--out", str(result))  # fmt: skip
    backup = site.json("he", "key", "backup", "owner")
    assert backup["vault_name"] == "he-keys/owner.hekey" and backup["k"] == 2 and backup["n"] == 3
    keyset = site.home / "he" / "owner.hekey"
    original = keyset.read_bytes()
    keyset.unlink()
    with pytest.raises(Exception, match="no key set"):
        he.decrypt_result(site.environment, site.owner, result)
    site.tessera("he", "key", "restore", "owner", "--as", "owner")
    assert keyset.read_bytes() == original and oct(keyset.stat().st_mode & 0o777) == "0o600"
    assert he.decrypt_result(site.environment, site.owner, result).document["verification"]["ok"]


def test_a_release_under_the_tables_dp_policy(site: Site, encrypted: tuple) -> None:
    """The policy comes from the custodians (real node processes); the budget is charged
    in the releasing client's ledger, net of what the custodians report spent."""
    from tessera.dp import Policy
    from tessera.tables.schema import Schema
    from tessera.tables.store import Catalog
    from tessera.workflows.policies import set_policy
    from tessera.workflows.tables import new_manifest

    cohort = site.root / "cohort"
    if not (cohort / "hospital-1.csv").exists():
        write_cohort(cohort, 2500, hospitals=1, seed=5)
    schema = Schema.from_yaml((cohort / "patients.schema.yaml").read_bytes())
    Catalog(site.home).put(
        "cohort", new_manifest("cohort", site.environment, schema, declared=True)
    )
    bounds = (("age", 18, 100), ("bmi", 120, 600))
    policy = Policy.dp(total_epsilon=1.0, default_epsilon=0.6, bounds=bounds)  # two releases
    set_policy(site.environment, "cohort", policy, steward=site.owner)
    data = site.root / "table.hedata"
    bundle = he.find_bundle(site.environment, "owner")
    he.encrypt_csv(
        cohort / "hospital-1.csv", bundle, data, schema=schema, table="cohort",
        columns=["age", "bmi"], skip_incomplete=True,
    )  # fmt: skip
    result = site.root / "table.heresult"
    run_job(site.url, Job("mean"), data, result)
    opened = he.decrypt_result(site.environment, site.owner, result)
    doc = release(site.environment, "owner", opened)
    assert doc["privacy"]["epsilon"] <= 0.6 + 1e-9 and doc["table"] == "cohort"
    assert all(lo <= v <= hi for v, (lo, hi) in zip(doc["values"], doc["intervals"], strict=True))
    release(site.environment, "owner", opened)
    with pytest.raises(BudgetExhaustedError):
        release(site.environment, "owner", opened)
    done = site.tessera("he", "decrypt", str(result), "--release", "--epsilon", "0.5", ok=False)
    _one_line_error(done, "privacy budget exhausted")
