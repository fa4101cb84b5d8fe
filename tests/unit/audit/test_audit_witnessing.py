"""The sealed head-signing key, and custodians witnessing the gateway log (in process:
the node service's witnessing, its refusal of a job over an inconsistent log, and how
``audit verify`` names what a custodian holds)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.audit import AuditLog, MldsaSigner, TreeHead, Witness
from tessera.audit.keyfile import load_or_create_sealed_signer, open_signer, seal_signer
from tessera.config import Environment
from tessera.core.audit_sink import AuditEvent
from tessera.errors import ChainBrokenError, InputError, IntegrityError
from tessera.node.service import NodeService
from tessera.workflows import audit as flow
from tessera.workflows import audit_witness as witnessing
from tessera.workflows.environment import init_environment


def test_the_key_file_is_not_a_usable_key_without_the_unlock(tmp_path: Path) -> None:
    unlock, other = b"\x11" * 32, b"\x22" * 32
    path = tmp_path / "audit" / "signing.key"
    signer = load_or_create_sealed_signer(path, "gateway", unlock)
    blob = path.read_bytes()
    assert signer.seed() not in blob and json.loads(blob)["encryption"] == "aes256gcm"
    assert path.stat().st_mode & 0o777 == 0o600
    with pytest.raises(IntegrityError, match="another unlock key"):
        open_signer(blob, "gateway", other)
    with pytest.raises(IntegrityError, match="another log"):
        open_signer(blob, "node-1", unlock)
    doc = json.loads(blob)
    doc["unlock_id"] = json.loads(seal_signer(signer, "gateway", other))["unlock_id"]
    with pytest.raises(IntegrityError):  # relabelled for another unlock key: still sealed
        open_signer(json.dumps(doc).encode(), "gateway", other)
    with pytest.raises(InputError):
        open_signer(b"\x00" * 32, "gateway", unlock)
    again = load_or_create_sealed_signer(path, "gateway", unlock)
    assert again.public_key == signer.public_key


def test_a_bare_legacy_seed_is_sealed_in_place(tmp_path: Path) -> None:
    legacy = MldsaSigner.generate()
    path = tmp_path / "audit" / "signing.key"
    path.parent.mkdir()
    path.write_bytes(legacy.seed())
    signer = load_or_create_sealed_signer(path, "gateway", b"\x33" * 32)
    assert signer.public_key == legacy.public_key and legacy.seed() not in path.read_bytes()
    assert json.loads(path.read_bytes())["format"] == "tessera-audit-key"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    home = tmp_path_factory.mktemp("witness") / "env"
    init_environment(home, nodes=3, passphrase=b"witness unit passphrase")
    flow.close_logs()
    yield Environment.load(home)
    flow.close_logs()


def _grow(env: Environment, count: int) -> AuditLog:
    log = flow.gateway_log(env.home)
    log.append([AuditEvent("vault.get", user=f"u{i}") for i in range(count)])
    log.sign_pending()
    return log


def _service(env: Environment, node: int) -> NodeService:
    return NodeService(env, node, warm=False)


def test_a_custodian_witnesses_at_job_time_and_refuses_a_rolled_back_log(
    env: Environment, tmp_path: Path
) -> None:
    log = _grow(env, 3)
    service = _service(env, 1)
    try:
        service.witness_gateway()  # what run_job does once the envelope verified
        held = Witness(witnessing.witness_folder(env, 1)).latest("gateway")
        assert held is not None and held.size == log.size
        copy = tmp_path / "copy"
        shutil.copytree(log.folder, copy)
        _grow(env, 2)
        service.witness_gateway()
        flow.close_logs()
        shutil.rmtree(log.folder)
        shutil.copytree(copy, log.folder)
        with pytest.raises(ChainBrokenError, match="shrank"):
            service.witness_gateway()  # run_job refuses the job with this error
    finally:
        service.close()
    answer = witnessing.witnessed(env, 1)
    assert answer["witness"] == "node-1" and answer["heads"][0]["head"]["size"] == 5
    # what verify reports for that custodian
    rolled = AuditLog(flow.log_folder(env.home))
    item = answer["heads"][0]
    head = TreeHead.from_json(item["head"])
    problem = witnessing.compare(rolled, rolled.size, 1, head, bytes.fromhex(item["public_key"]))
    assert problem is not None and problem.startswith("rolled back: custodian 1 witnessed size 5")


def test_forked_heads_are_refused_and_named(env: Environment, tmp_path: Path) -> None:
    folder = flow.log_folder(env.home)
    if (folder / "log.json").exists():
        flow.close_logs()
        shutil.rmtree(folder)
        for i in (1, 2, 3):
            shutil.rmtree(witnessing.witness_folder(env, i), ignore_errors=True)
    log = _grow(env, 4)
    copy = tmp_path / "fork"
    shutil.copytree(folder, copy)
    _grow(env, 2)
    head = log.latest_head()
    assert head is not None
    accepted = witnessing.observe_head(
        env, 2, {"head": head.to_json(), "public_key": log.public_key.hex(), "proof": []}
    )
    assert accepted["witness"] == "node-2" and accepted["cosignature"]
    fork = AuditLog(copy, signer=flow.load_signer(copy, "gateway"))
    fork.append([AuditEvent("vault.get", user="mallory"), AuditEvent("vault.get", user="eve")])
    forked = fork.latest_head()
    assert forked is not None and forked.size == head.size and forked.root != head.root
    doc = {"head": forked.to_json(), "public_key": fork.public_key.hex(), "proof": []}
    with pytest.raises(ChainBrokenError, match="not consistent"):
        witnessing.observe_head(env, 2, doc)
    problem = witnessing.compare(fork, fork.size, 2, head, log.public_key)
    assert problem is not None and problem.startswith(
        f"forked: custodian 2 witnessed size {head.size}"
    )
    fresh = MldsaSigner.generate()
    problem = witnessing.compare(log, log.size, 3, head, fresh.public_key)
    assert problem is not None and problem.startswith("replaced by a fresh log: custodian 3")
    with pytest.raises(InputError):
        witnessing.observe_head(env, 2, {"head": forked.to_json(), "public_key": "zz"})
    with pytest.raises(InputError, match="own log"):
        own = {**doc, "head": {**forked.to_json(), "origin": "node-2"}}
        witnessing.observe_head(env, 2, own)


def test_verify_says_when_the_custodians_cannot_be_reached(tmp_path: Path) -> None:
    from dataclasses import replace

    home = tmp_path / "env"
    env = init_environment(home, nodes=3, passphrase=b"unreachable passphrase")
    # custodians on another host that is not answering (nothing listens on 127.0.0.2)
    env.nodes = [replace(n, host="127.0.0.2", port=9) for n in env.nodes]
    env.save()
    _grow(Environment.load(home), 2)
    result = witnessing.verify_witnessed(home)
    assert result.report.ok and not result.ok
    assert result.problem is not None and result.problem.startswith(
        "could not reach the custodians: node 1 at 127.0.0.2:9 is not running"
    )
    offline = witnessing.verify_witnessed(home, offline=True)
    assert offline.ok and offline.to_json()["offline"] is True


def test_co_signatures_are_checked_against_the_custodians_key(env: Environment) -> None:
    log = _grow(env, 1)
    head = log.latest_head()
    assert head is not None
    doc = {"head": head.to_json(), "public_key": log.public_key.hex(), "proof": []}
    held = Witness(witnessing.witness_folder(env, 3)).latest("gateway")
    if held is not None and held.size < head.size:
        doc["proof"] = [p.hex() for p in log.consistency_proof(held.size, head.size)]
    witnessing.observe_head(env, 3, doc)
    flow.node_log(env.home, 3)  # the custodian's own log (its key verifies co-signatures)
    answer = witnessing.witnessed(env, 3)
    cosigner = witnessing._cosigner(env.home, 3)
    assert cosigner is not None and cosigner[0] == "node-3"
    assert witnessing._held(answer, cosigner)["gateway"][0] == head
    forged = MldsaSigner.generate().sign(b"not a co-signature")
    answer["heads"][0]["cosignature"] = base64.b64encode(forged).decode()
    with pytest.raises(ChainBrokenError, match="co-signature of gateway does not verify"):
        witnessing._held(answer, cosigner)
    with pytest.raises(InputError, match="malformed"):
        witnessing._held({"heads": [{"head": head.to_json()}]})


def test_a_job_that_read_an_older_head_is_not_mistaken_for_a_rollback(
    tmp_path: Path,
) -> None:
    """Concurrent jobs: one stored head 6 while another still brings head 4 of the same
    log.  The older head is a prefix of the held one (a proof says so): accepted, and the
    custodian keeps 6.  An older head that is not a prefix (a fork) is still refused."""
    signer = MldsaSigner.generate()
    log = AuditLog.create(tmp_path / "log", "gateway", signer.public_key, signer=signer)
    log.append([AuditEvent("vault.get", user=f"u{i}") for i in range(4)])
    log.sign_pending()
    older = log.latest_head()
    log.append([AuditEvent("vault.get", user="v"), AuditEvent("vault.get", user="w")])
    log.sign_pending()
    newer = log.latest_head()
    assert older is not None and newer is not None and older.size < newer.size
    witness = Witness(tmp_path / "witness")
    prove = log.consistency_proof
    assert witness.observe_log(newer, log.public_key, log.size, prove) == newer
    assert witness.observe_log(older, log.public_key, log.size, prove) == newer
    assert witness.latest(newer.origin) == newer
    fork = AuditLog.create(tmp_path / "fork", "gateway", signer.public_key, signer=signer)
    fork.append([AuditEvent("vault.get", user="mallory")] * 4)
    fork.sign_pending()
    forked = fork.latest_head()
    assert forked is not None and forked.size == older.size and forked.root != older.root
    with pytest.raises(ChainBrokenError):
        witness.observe_log(forked, log.public_key, log.size, prove)
