"""Re-identification under a quorum of people, enforced by real custodian nodes over TLS.

The attacker holds the environment folder and the owner's passphrase (every role, the
vault owner) but no second person's key: the identity records and the kept originals
are ciphertext in the vault, and every custodian refuses to release its key share
without the signatures of two stewards or officers, logging each refusal.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from tessera.cli.main import main
from tessera.config import Environment
from tessera.errors import IntegrityError, PolicyError, ReplayError, TesseraError
from tessera.keys import generate
from tessera.keys.documents import SignedDocument
from tessera.keys.ephemeral import Receiver, open_sealed
from tessera.workflows.audit import gateway_log, node_log
from tessera.workflows.custodian import store_root
from tessera.workflows.dicom import deidentify_paths, start_node
from tessera.workflows.escrow import ESCROW_MAGIC, REIDENTIFY_CONTEXT, Depositor
from tessera.workflows.escrow_run import RUN_CONTEXT, run_body, share_label
from tessera.workflows.nodes import ensure_nodes, stop_nodes
from tessera.workflows.people import Signer, add_person, unlock
from tessera.workflows.reidentify import (
    cosign,
    identity_ref,
    reidentify_body,
    run_fetch_originals,
    run_reidentify,
    sign_reidentify,
)
from tessera.workflows.vault import open_vault

# one worker runs the module: its tests share one environment and its node processes
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("reidentify-quorum")]

PASS = "quorum test passphrase"
TESSERA = Path(sys.executable).with_name("tessera")
NAME, PATIENT_ID, BIRTH = "Quorumtest^Jane", "QID-987654", "19610214"
SECRETS = (NAME, "Quorumtest", PATIENT_ID, "987654", BIRTH)


def _patient_file(folder: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ds = dcmread(get_testdata_file("CT_small.dcm"))  # type: ignore[arg-type]
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PATIENT_ID, BIRTH
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "patient.dcm"
    ds.save_as(path)
    return path


def _receive_original(home: Path, path: Path) -> None:
    """``dicom serve --vault --keep-original`` receives ``path`` once."""
    node = start_node(home=home, out=home / "unused", port=0, to_vault=True, keep_original=True)
    try:
        sender = AE(ae_title="MODALITY")
        sender.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = sender.associate(node.host, node.port, ae_title="TESSERA")
        assert assoc.is_established
        status = assoc.send_c_store(path).Status
        assoc.release()
    finally:
        node.stop()
    assert status == 0 and node.receiver.counts == {"deidentified": 1}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """3 custodians (t + 1 = 2); the owner (every role), otto (officer), rita
    (researcher); one patient de-identified, one original kept."""
    base = tmp_path_factory.mktemp("quorum")
    home = base / "env"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TESSERA_PASSPHRASE", PASS)
        mp.delenv("TESSERA_PERSON", raising=False)
        mp.setattr(pynetdicom_config, "STORE_SEND_CHUNKED_DATASET", True)
        assert main(["init", str(home), "--nodes", "3", "--threshold", "2"]) == 0
        env = Environment.load(home)
        try:
            owner = unlock(env, "owner", PASS.encode(), record=False)
            for name, roles in (("otto", ["officer"]), ("rita", ["researcher"])):
                add_person(env, name, roles, PASS.encode(), [owner])
            people = {n: unlock(env, n, PASS.encode(), record=False) for n in ("otto", "rita")}
            source = _patient_file(base / "in")
            doc = deidentify_paths(source, base / "out", home=home)
            pseudonym = doc["files"][0]["pseudonym"]
            _receive_original(home, source)
            yield {"env": env, "home": home, "owner": owner, "pseudonym": pseudonym, **people}
        finally:
            stop_nodes(env)


def _cli(world: dict[str, Any], *argv: str) -> subprocess.CompletedProcess[str]:
    environ = dict(os.environ, TESSERA_PASSPHRASE=PASS)
    environ.pop("TESSERA_PERSON", None)
    return subprocess.run(
        [str(TESSERA), "dicom", *argv, "--home", str(world["home"])],
        capture_output=True, text=True, timeout=120, env=environ,
    )  # fmt: skip


def _signed(
    world: dict[str, Any], refs: list[str], *signers: str, **changes: Any
) -> SignedDocument:
    body = reidentify_body(refs, "complaint 2024-17 (patient asked for a copy)", signers[0])
    body.update(changes)
    document = SignedDocument(body)
    for name in signers:
        document = world[name].sign(document, context=REIDENTIFY_CONTEXT)
    return document


def _node_events(world: dict[str, Any], ref: str) -> dict[int, list[str]]:
    """Per custodian: the outcomes of the releases it logged for ``ref``, in order."""
    out = {}
    for node in (1, 2, 3):
        log = node_log(world["home"], node, create=False)
        out[node] = [
            e.outcome
            for _, e in log.events()
            if e.action == "dicom.reidentify" and ref in str(e.detail.get("refs", "")).split(",")
        ]
    return out


def _no_secrets(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, secret


def _original_ref(world: dict[str, Any]) -> str:
    names = [m.name for m in open_vault(world["env"]).ls()]
    return next(n for n in names if n.startswith("dicom-original/"))


def test_owner_alone_is_refused_by_every_custodian(world: dict[str, Any]) -> None:
    ref = identity_ref(world["pseudonym"])
    before = _node_events(world, ref)
    done = _cli(world, "reidentify", world["pseudonym"], "--reason", "curious", "--as", "owner")
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert (
        "refused by every custodian: re-identification needs 2 signatures of stewards or "
        "officers; this request has 1 (file it for a second person: tessera request file "
        f"--reidentify {world['pseudonym']} --purpose ...)"
    ) in done.stderr
    _no_secrets(done.stdout + done.stderr)
    after = _node_events(world, ref)
    for node in (1, 2, 3):
        assert after[node] == [*before[node], "denied"], after
    events = [e for _, e in gateway_log(world["home"]).events() if e.entity == ref]
    assert events[-1].outcome == "denied" and events[-1].user == "owner"


def test_without_a_reason_nothing_is_signed(world: dict[str, Any]) -> None:
    done = _cli(world, "reidentify", world["pseudonym"], "--as", "owner")
    assert done.returncode == 2 and "--reason" in done.stderr, done.stderr


def test_two_privileged_signers_reidentify_once(world: dict[str, Any], tmp_path: Path) -> None:
    ref = identity_ref(world["pseudonym"])
    before = _node_events(world, ref)
    document = cosign(
        sign_reidentify(reidentify_body([ref], "court order 17", "owner"), world["owner"]),
        world["otto"],
    )
    request = tmp_path / "request.json"
    request.write_text(json.dumps(document.to_dict()))
    done = _cli(world, "reidentify", world["pseudonym"], "--request", str(request), "--json")
    assert done.returncode == 0, done.stderr
    identity = json.loads(done.stdout)["identity"]
    assert identity["PatientName"] == NAME and identity["PatientID"] == PATIENT_ID
    assert identity["PatientBirthDate"] == BIRTH
    after = _node_events(world, ref)
    for node in (1, 2, 3):
        assert after[node] == [*before[node], "success"], after
    log = node_log(world["home"], 1, create=False)
    last = [e for _, e in log.events() if e.action == "dicom.reidentify"][-1]
    assert last.detail["signers"] == "otto,owner" and last.detail["reason"] == "court order 17"
    _no_secrets(json.dumps([str(v) for v in last.detail.values()]))
    # the same approval again: every custodian has used its nonce
    again = _cli(world, "reidentify", world["pseudonym"], "--request", str(request))
    assert again.returncode == 1 and "used already" in again.stderr, again.stderr
    _no_secrets(again.stdout + again.stderr)
    assert _node_events(world, ref)[1][-1] == "denied"


def test_signatures_that_do_not_count(world: dict[str, Any]) -> None:
    home, ref = world["home"], identity_ref(world["pseudonym"])
    twice = _signed(world, [ref], "owner")
    twice = SignedDocument(twice.body, (*twice.signatures, twice.signatures[0]))
    with pytest.raises(PolicyError, match="this request has 1") as caught:
        run_reidentify(home, twice, world["owner"])
    _no_secrets(str(caught.value))
    with pytest.raises(PolicyError, match="this request has 1"):
        run_reidentify(home, _signed(world, [ref], "owner", "rita"), world["owner"])  # researcher
    alone = _signed(world, [ref], "owner")
    for impostor in (Signer("otto", generate()), Signer("zed", generate())):
        forged = impostor.sign(alone, context=REIDENTIFY_CONTEXT)
        with pytest.raises(PolicyError, match="this request has 1"):
            run_reidentify(home, forged, world["owner"])


def test_stale_and_reasonless_requests_refused(world: dict[str, Any]) -> None:
    home, ref = world["home"], identity_ref(world["pseudonym"])
    old = _signed(world, [ref], "owner", "otto", issued_at=int(time.time()) - 8 * 86400)
    with pytest.raises(ReplayError, match="days ago"):
        run_reidentify(home, old, world["owner"])
    with pytest.raises(TesseraError, match="reason"):
        run_reidentify(home, _signed(world, [ref], "owner", "otto", reason=""), world["owner"])
    with pytest.raises(TesseraError, match="reason"):
        run_reidentify(home, _signed(world, [ref], "owner", "otto", reason="   "), world["owner"])
    # a fresh approval with a reason still works
    found = run_reidentify(home, _signed(world, [ref], "owner", "otto"), world["owner"])
    assert found[world["pseudonym"]]["PatientID"] == PATIENT_ID


def test_the_vault_alone_yields_ciphertext(world: dict[str, Any], tmp_path: Path) -> None:
    env = world["env"]
    vault = open_vault(env)
    for name in (identity_ref(world["pseudonym"]), _original_ref(world)):
        out = tmp_path / "object"
        vault.get(name, out)
        data = out.read_bytes()
        assert data.startswith(ESCROW_MAGIC)
        for secret in SECRETS:
            assert secret.encode() not in data, (name, secret)
    for path in (world["home"] / "stores").rglob("*"):
        if path.is_file():
            body = path.read_bytes()
            assert not any(s.encode() in body for s in SECRETS), path


def test_originals_need_the_same_quorum(world: dict[str, Any], tmp_path: Path) -> None:
    original = _original_ref(world)
    uid = original.rsplit("/", 1)[1].removesuffix(".dcm")
    out = tmp_path / "original.dcm"
    done = _cli(world, "original", uid, "--out", str(out), "--reason", "audit", "--as", "owner")
    assert done.returncode == 1 and "this request has 1" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and not out.exists()
    _no_secrets(done.stdout + done.stderr)
    assert _node_events(world, original)[2][-1] == "denied"
    document = _signed(world, [original], "owner", "otto")
    request = tmp_path / "request.json"
    request.write_text(json.dumps(document.to_dict()))
    done = _cli(world, "original", uid, "--out", str(out), "--request", str(request))
    assert done.returncode == 0, done.stderr
    back = dcmread(out)
    assert str(back.PatientName) == NAME and back.PatientID == PATIENT_ID
    assert out.stat().st_mode & 0o077 == 0
    assert [_node_events(world, original)[i][-1] for i in (1, 2, 3)] == ["success"] * 3
    with pytest.raises(ReplayError, match="used already"):
        run_fetch_originals(world["home"], document, tmp_path / "again.dcm", world["owner"])
    other = _signed(world, [identity_ref(world["pseudonym"])], "owner", "otto")
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps(other.to_dict()))
    done = _cli(world, "original", uid, "--out", str(out), "--request", str(bad))
    assert done.returncode == 2 and "does not designate" in done.stderr, done.stderr


def test_legacy_plaintext_records_still_need_the_custodians(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An identity written before escrow (plaintext in the vault): the custodians hold
    no share for it, yet release nothing without the quorum."""
    from io import BytesIO

    monkeypatch.setenv("TESSERA_PASSPHRASE", PASS)
    legacy = "TS" + "0123456789ABCDEF0042"
    body = json.dumps({"PatientID": "LEGACY-1", "PatientName": "Old^Record"}).encode()
    open_vault(world["env"], write=True).put(BytesIO(body), len(body), identity_ref(legacy))
    owner = world["owner"]
    with pytest.raises(PolicyError, match="this request has 1"):
        run_reidentify(world["home"], _signed(world, [identity_ref(legacy)], "owner"), owner)
    approved = _signed(world, [identity_ref(legacy)], "owner", "otto")
    found = run_reidentify(world["home"], approved, owner)
    assert found == {legacy: {"PatientID": "LEGACY-1", "PatientName": "Old^Record"}}
    assert [_node_events(world, identity_ref(legacy))[i] for i in (1, 2, 3)] == [
        ["denied", "success"]
    ] * 3


def test_deposits_reach_nodes_that_went_away(world: dict[str, Any]) -> None:
    """A long-running ``serve`` outlives idle local nodes: the next deposit starts them."""
    depositor = Depositor(world["env"])
    try:
        depositor.seal(identity_ref("TS" + "0123456789ABCDEF0098"), b"{}")
        for run in (world["home"] / "run").glob("node-*.json"):
            os.kill(int(json.loads(run.read_text())["pid"]), signal.SIGKILL)
        stop_nodes(world["env"])  # reaps them
        envelope = depositor.seal(identity_ref("TS" + "0123456789ABCDEF0099"), b"{}")
        assert envelope.startswith(ESCROW_MAGIC)
    finally:
        depositor.close()


def test_through_tessera_request_file_approve_run(world: dict[str, Any]) -> None:
    """The two-person flow of ``tessera request``: the officer files, the owner co-signs,
    the officer runs it once; a refusal ends it; the filer cannot co-sign alone."""
    from tessera.workflows import requests as flow

    env, otto, owner = world["env"], world["otto"], world["owner"]
    filed = flow.file_request(
        env, otto, kind="reidentify", purpose="adverse event follow-up",
        refs=[world["pseudonym"]],
    )  # fmt: skip
    assert filed.kind == "reidentify" and filed.state == "pending"
    with pytest.raises(PolicyError, match="otto signed this request already"):
        flow.decide(env, filed.id, otto, approve=True, reason="me again")
    with pytest.raises(PolicyError, match="needs 2 signatures"):
        flow.run_request(env, filed.id, otto)  # one signature: every custodian refuses
    flow.decide(env, filed.id, owner, approve=True, reason="confirmed with the DPO")
    answer = flow.run_request(env, filed.id, otto)
    (identity,) = answer["identities"].values()
    assert identity.get("PatientName") == NAME or NAME in json.dumps(identity)
    with pytest.raises(PolicyError, match="ran already"):
        flow.run_request(env, filed.id, otto)
    refused = flow.file_request(
        env, otto, kind="reidentify", purpose="curiosity", refs=[world["pseudonym"]]
    )
    flow.decide(env, refused.id, owner, approve=False, reason="no clinical need")
    with pytest.raises(PolicyError, match="was refused"):
        flow.run_request(env, refused.id, otto)


# ----- one custodian replaying an approved request ---------------------------------------
def _run(
    world: dict[str, Any], request: SignedDocument, by: str, key: Receiver, **changes: Any
) -> Any:
    body = {**run_body(request.body["nonce"], key.public), **changes}
    return world[by].sign(SignedDocument(body), context=RUN_CONTEXT).to_dict()


def _post(world: dict[str, Any], payload: dict[str, Any]) -> dict[int, tuple[int, Any]]:
    """``payload`` posted straight to every custodian (no client checks): (status, JSON)."""
    clients = ensure_nodes(world["env"])
    try:
        return {
            i: (resp.status_code, resp.json())
            for i, c in clients.items()
            for resp in [
                c.http.post(
                    "/v1/escrow/release",
                    content=json.dumps(payload),  # NaN and 1e300 as they are
                    headers={"Content-Type": "application/json"},
                )
            ]
        }
    finally:
        for client in clients.values():
            client.close()


def _held_shares(world: dict[str, Any], ref: str) -> set[str]:
    """The key shares the custodians hold for ``ref`` (read from their folders)."""
    shares: set[str] = set()
    for node in (1, 2, 3):
        with sqlite3.connect(store_root(world["env"], node) / "escrow.sqlite3") as db:
            rows = db.execute("SELECT share FROM deposits WHERE name = ?", (ref,)).fetchall()
        shares |= {str(r[0]) for r in rows}
    assert shares
    return shares


def test_one_custodian_replaying_an_approved_request_gets_nothing(world: dict[str, Any]) -> None:
    """otto co-signed the owner's request and runs a custodian: he posts it to the
    custodians himself, with no run document, his own, or the owner's with his key."""
    ref = identity_ref(world["pseudonym"])
    shares = _held_shares(world, ref)
    approved = _signed(world, [ref], "owner", "otto")
    mine, hers = Receiver.new(), Receiver.new()
    attempts = {
        "no run document": {"request": approved.to_dict()},
        "the bare request": approved.to_dict(),
        "his own run document": {
            "request": approved.to_dict(), "run": _run(world, approved, "otto", mine)
        },
        "the owner's, his key swapped in": {
            "request": approved.to_dict(),
            "run": {**(r := _run(world, approved, "owner", hers)),
                    "body": {**r["body"], "receiver": mine.public}},
        },
    }  # fmt: skip
    for what, payload in attempts.items():
        answers = _post(world, payload)
        for node, (status, doc) in answers.items():
            assert status in (400, 403), (what, node, status, doc)
            assert "released" not in doc and "\n" not in doc["message"], (what, doc)
            assert not any(share in json.dumps(doc) for share in shares)
    assert [_node_events(world, ref)[i][-4:] for i in (1, 2, 3)] == [["denied"] * 4] * 3
    with pytest.raises(PolicyError, match="only owner, who filed"):
        run_reidentify(world["home"], approved, world["otto"])  # the client refuses too
    # refusals spend nothing: the owner runs it
    found = run_reidentify(world["home"], approved, world["owner"])
    assert found[world["pseudonym"]]["PatientID"] == PATIENT_ID


def test_a_replayed_run_document_yields_only_ciphertexts(world: dict[str, Any]) -> None:
    """otto saw the owner's request and run document too: the custodians seal every share
    to the owner's one-time key, which never left the owner's process."""
    ref = identity_ref(world["pseudonym"])
    shares = _held_shares(world, ref)
    approved = _signed(world, [ref], "owner", "otto")
    hers = Receiver.new()
    answers = _post(
        world, {"request": approved.to_dict(), "run": _run(world, approved, "owner", hers)}
    )
    nonce = approved.body["nonce"]
    for node, (status, doc) in answers.items():
        assert status == 200, (node, doc)
        text = json.dumps(doc)
        assert not any(share in text for share in shares)
        _no_secrets(text)
        (item,) = doc["released"][ref]
        label = share_label(nonce, ref, item["digest"])
        for other in (Receiver.new(), Receiver.new()):  # otto's keys
            with pytest.raises(IntegrityError):
                open_sealed(other, item["sealed"], label=label)
        assert open_sealed(hers, item["sealed"], label=label).decode() in shares


def test_run_documents_by_others_stale_or_malformed_are_refused(world: dict[str, Any]) -> None:
    ref = identity_ref(world["pseudonym"])
    approved = _signed(world, [ref], "owner", "otto")
    key = Receiver.new()
    now = int(time.time())
    cases: list[tuple[Any, int, str]] = [
        (_run(world, approved, "rita", key), 403, "not signed by the person who filed"),
        (_run(world, approved, "owner", key, issued_at=now - 600), 403, "s ago"),
        (_run(world, approved, "owner", key, issued_at=1e300), 400, "issued_at"),
        (_run(world, approved, "owner", key, issued_at=math.nan), 400, "issued_at"),
        (_run(world, approved, "owner", key, issued_at=math.inf), 400, "issued_at"),
        (_run(world, approved, "owner", key, issued_at=10**400), 400, "issued_at"),
        (_run(world, approved, "owner", key, receiver="A" * 43 + "="), 400, "receiver"),
        (_run(world, approved, "owner", key, nonce="0" * 32), 403, "another"),
        ({"body": {"format": "tessera-reidentify-run"}}, 403, "unsigned"),
        ("run", 400, "signed document"),
    ]
    for run, status, says in cases:
        answers = _post(world, {"request": approved.to_dict(), "run": run})
        for node, (got, doc) in answers.items():
            assert got == status and says in doc["message"], (node, run, got, doc)
            assert "\n" not in doc["message"]
    answers = _post(world, {"request": approved.to_dict(), "run": None})
    assert all(got == 400 and "run document" in doc["message"] for got, doc in answers.values())
    # nothing was spent: the owner still runs it
    found = run_reidentify(world["home"], approved, world["owner"])
    assert found[world["pseudonym"]]["PatientID"] == PATIENT_ID
