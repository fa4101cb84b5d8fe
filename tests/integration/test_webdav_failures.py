"""The mount when stores fail: a degraded vault still serves every file; a file whose
fragments are lost is an error before any byte; a file the owner's record commits to and
the stores lost is listed and refused (audited as ``vault_lost``, what the monitor
alerts on); damage past repair in the middle of a file aborts the answer, so a client
never holds a short file that looks complete; writes refuse while a file is lost."""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from webdav_fixtures import PASSPHRASE, Mount, World, make_env, mounted, store_root

from tessera.config import Environment
from tessera.workflows.audit import gateway_log
from tessera.workflows.people import unlock
from tessera.workflows.vault import open_vault

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("webdav")]

FILES = {
    "healthy.bin": os.urandom(2 << 20),
    "fragments-lost.bin": os.urandom(2 << 20),
    "catalogue-lost.txt": b"the owner's record still names me",
    "damaged-mid.bin": os.urandom(8 << 20),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_env(tmp_path_factory.mktemp("webdav-failures") / "home")


@pytest.fixture(scope="module")
def mount(world: World) -> Iterator[Mount]:
    env = world[0]
    owner = unlock(env, "owner", PASSPHRASE.encode(), record=False)
    vault = open_vault(env, write=True, signer=owner.key)
    for name, data in FILES.items():
        vault.put(io.BytesIO(data), len(data), name)
    _break(env)
    with mounted(*world) as m:
        yield m


def _fragment(env: Environment, name: str, store: int) -> Path:
    manifest = open_vault(env).lookup(name)
    return store_root(env, store) / manifest.data_path()


def _break(env: Environment) -> None:
    """Store 3 is gone (degraded: k = 2 of 3 remain); one file's data fragment is gone
    from store 2 too (lost); another's catalogue entry from store 2 (lost to the record);
    a third is damaged in the middle on both remaining stores."""
    vault = open_vault(env)
    lost_entry = vault.lookup("catalogue-lost.txt").entry_id
    middle = {s: _fragment(env, "damaged-mid.bin", s) for s in (1, 2)}
    doomed = _fragment(env, "fragments-lost.bin", 2)
    shutil.rmtree(store_root(env, 3))
    doomed.unlink()
    (store_root(env, 2) / "catalog" / lost_entry).unlink()
    for path in middle.values():
        data = bytearray(path.read_bytes())
        data[len(data) * 3 // 5] ^= 0xFF  # block 4 of 8: after several blocks went out
        path.write_bytes(bytes(data))


def _events(env: Environment, entity: str) -> list[object]:
    return [e for _, e in gateway_log(env.home).events() if e.entity == entity]


def test_a_degraded_vault_still_serves(world: World, mount: Mount) -> None:
    with mount.client() as http:
        assert http.get("healthy.bin").content == FILES["healthy.bin"]
        listing = http.request("PROPFIND", "/", headers={"Depth": "1"})
        assert listing.status_code == 207
        for name in FILES:  # every name is listed, the lost ones included
            assert f"/{name}</" in listing.text
        ranged = http.get("healthy.bin", headers={"Range": "bytes=1000-1999"})
        assert ranged.status_code == 206 and ranged.content == FILES["healthy.bin"][1000:2000]


def test_lost_fragments_are_an_error_before_any_byte(world: World, mount: Mount) -> None:
    env, _ = world
    with mount.client() as http:
        for headers in ({}, {"Range": "bytes=100-199"}):
            answer = http.get("fragments-lost.bin", headers=headers)
            assert answer.status_code == 500, headers
            assert "content-range" not in answer.headers
        answer = http.get("fragments-lost.bin")
        assert answer.content.startswith(b"cannot restore 'fragments-lost.bin'")
        assert len(answer.content) < 1000  # the error line, no data
    get = [e for e in _events(env, "fragments-lost.bin") if e.action == "vault.get"]
    assert get[-1].outcome == "failure" and get[-1].detail["error"] == "insufficient_shares"


def test_a_file_lost_to_the_owners_record_is_listed_and_refused(world: World, mount: Mount) -> None:
    env, _ = world
    with mount.client() as http:
        listing = http.request("PROPFIND", "/", headers={"Depth": "1"}).text
        assert "/catalogue-lost.txt</" in listing
        answer = http.get("catalogue-lost.txt")
        assert answer.status_code == 500 and b"is lost" in answer.content
        assert http.head("catalogue-lost.txt").status_code == 500
        assert FILES["catalogue-lost.txt"] not in answer.content
        # the vault fails closed for writes while a file is lost (as vault put does)
        refused = http.put("new.txt", content=b"x")
        assert refused.status_code == 500 and "lost" in refused.text
        assert http.get("healthy.bin").status_code == 200  # the others are still served
    events = [e for e in _events(env, "catalogue-lost.txt") if e.action == "vault.get"]
    assert events[-1].detail["error"] == "vault_lost"
    assert events[-1].detail["reason"] == "vault-lost"  # the monitor's critical alert


def test_damage_mid_file_aborts_the_answer(world: World, mount: Mount) -> None:
    env, _ = world
    got = bytearray()
    with (
        pytest.raises(httpx.RemoteProtocolError),
        mount.client() as http,
        http.stream("GET", "damaged-mid.bin") as answer,
    ):
        assert answer.status_code == 200  # the first blocks verified and went out
        assert int(answer.headers["content-length"]) == len(FILES["damaged-mid.bin"])
        for chunk in answer.iter_bytes():
            got += chunk
    assert 0 < len(got) < len(FILES["damaged-mid.bin"])
    assert bytes(got) == FILES["damaged-mid.bin"][: len(got)]  # what came was right
    events = [e for e in _events(env, "damaged-mid.bin") if e.action == "vault.get"]
    assert events[-1].outcome == "failure" and events[-1].detail["error"] == "insufficient_shares"
