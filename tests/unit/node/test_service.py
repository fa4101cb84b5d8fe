from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tessera.errors import InputError, IntegrityError
from tessera.keys.signing import generate
from tessera.node.service import NodeService, ReplayError
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import sign_job
from tessera.workflows.people import Signer, unlock

PASS = b"unit test passphrase"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return init_environment(tmp_path_factory.mktemp("node") / "home", nodes=3, passphrase=PASS)


@pytest.fixture(scope="module")
def owner(env: Any) -> Signer:
    return unlock(env, "owner", PASS, record=False)


@pytest.fixture
def service(env: Any) -> Any:
    svc = NodeService(env, 2, warm=False)
    yield svc
    svc.close()


def job(**over: Any) -> dict[str, Any]:
    import secrets

    base: dict[str, Any] = {
        "version": 1,
        "type": "sql",
        "job_id": secrets.token_hex(16),
        "issued_at": int(time.time()),
        "parties": [["127.0.0.1", 1000], ["127.0.0.1", 1001], ["127.0.0.1", 1002]],
        "inputs": [],
        "noise": None,
        "params": {},
    }
    base.update(over)
    return base


def test_signed_job_accepted_once(owner: Signer, service: Any) -> None:
    envelope = sign_job(job(), owner)
    verified, requester = service.verify(envelope)
    assert verified["job_id"] == envelope["job"]["job_id"] and requester == "owner"
    with pytest.raises(ReplayError, match="replayed"):
        service.verify(envelope)


def test_unsigned_and_forged_jobs_refused(owner: Signer, service: Any) -> None:
    with pytest.raises(IntegrityError, match="unsigned"):
        service.verify({"job": job()})
    envelope = sign_job(job(), owner)
    envelope["job"]["params"] = {"plan": "changed"}
    with pytest.raises(IntegrityError, match="does not verify"):
        service.verify(envelope)
    # a stranger's key, even claiming to be the owner, is not in the custodian's roster
    stranger = Signer("owner", generate())
    with pytest.raises(IntegrityError, match="does not verify"):
        service.verify(sign_job(job(), stranger))
    # the old single-signature envelope (the environment's requester key) is refused
    with pytest.raises(IntegrityError, match="unsigned"):
        service.verify({"job": job(), "signature": "00" * 3309})


def test_stale_and_malformed_jobs_refused(owner: Signer, service: Any) -> None:
    with pytest.raises(ReplayError, match="time window"):
        service.verify(sign_job(job(issued_at=int(time.time()) - 3600), owner))
    with pytest.raises(InputError, match="parties"):
        service.verify(sign_job(job(parties=[["127.0.0.1", 1000]]), owner))
    with pytest.raises(InputError, match="unknown job type"):
        service.verify(sign_job(job(type="shell"), owner))


def test_replay_memory_survives_restart(env: Any, owner: Signer) -> None:
    envelope = sign_job(job(), owner)
    first = NodeService(env, 3, warm=False)
    first.verify(envelope)
    first.close()
    again = NodeService(env, 3, warm=False)
    try:
        with pytest.raises(ReplayError):
            again.verify(envelope)
    finally:
        again.close()


def test_shares_for_another_custodian_refused(service: Any) -> None:
    with pytest.raises(InputError, match="another custodian"):
        service.append_chunk("t", "ab" * 8, {"party": 0, "chunks": []}, b"")


def test_pki_made_at_init(env: Any) -> None:
    pki = Path(env.home) / "pki"
    for name in ("ca.crt", "node-1.crt", "node-3.key", "client.crt"):
        assert (pki / name).exists()
    assert (pki / "node-1.key").stat().st_mode & 0o077 == 0
    assert not (pki / "requester.seed").exists()  # no job-signing key without a person
    assert b"ENCRYPTED PRIVATE KEY" in (pki / "ca.key").read_bytes()


def test_a_full_node_refuses_at_once_and_frees_its_slots(env: Any, owner: Signer) -> None:
    import anyio
    import httpx

    from tessera.errors import NodeBusyError
    from tessera.node.app import create_app

    svc = NodeService(env, 3, warm=False, max_jobs=2)
    try:
        with svc.job_slot(), svc.job_slot():
            with pytest.raises(NodeBusyError, match="limit of 2 jobs"), svc.job_slot():
                pass
            envelope = sign_job(job(), owner)

            async def post() -> httpx.Response:
                transport = httpx.ASGITransport(app=create_app(svc))
                async with httpx.AsyncClient(transport=transport, base_url="http://n") as c:
                    return await c.post("/v1/jobs", json=envelope)

            answer = anyio.run(post)
            assert answer.status_code == 503 and answer.json()["error"] == "node_busy"
            # refused before it was verified: the same job is not a replay once a slot frees
        with svc.job_slot():  # both slots came back
            svc.verify(envelope)
        with pytest.raises(RuntimeError), svc.job_slot():
            raise RuntimeError("a job that fails gives its slot back too")
        assert svc._slots == 0
    finally:
        svc.close()


@pytest.mark.parametrize("raw", [0, -1, 2.5, "4", True, 10_000])
def test_max_jobs_must_be_a_sensible_count(env: Any, raw: Any) -> None:
    from dataclasses import replace

    from tessera.errors import ConfigError
    from tessera.node.service import max_jobs_of

    assert max_jobs_of(replace(env, extra={"node": {"max_jobs": 6}})) == 6
    assert max_jobs_of(replace(env, extra={})) >= 4
    with pytest.raises(ConfigError, match=r"\[node\] max_jobs must be a whole number"):
        max_jobs_of(replace(env, extra={"node": {"max_jobs": raw}}))
