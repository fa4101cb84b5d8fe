"""The vault over real servers: local folders, moto's S3 API, OpenSSH's SFTP, memory."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import s3fs
from fsspec.implementations.local import LocalFileSystem

from tessera import keys
from tessera.config import Environment, StoreConfig
from tessera.errors import ConfigError, StorageUnavailableError
from tessera.vault import Store, Vault, refresh, repair, verify
from tessera.workflows.vault import init_vault

from .conftest import S3Server, SshServer

pytestmark = pytest.mark.integration

OWNER = keys.generate()


class SlowFS(LocalFileSystem):
    """A local store that takes its time to open a file for reading."""

    cachable = False

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if "r" in mode:
            time.sleep(2.0)
        return super()._open(path, mode, **kwargs)


def _vault(stores: list[Store], k: int = 3, **kwargs: Any) -> Vault:
    return Vault(stores, k=k, verifier=OWNER.verify_key, signer=OWNER, **kwargs)


def _s3(server: S3Server) -> s3fs.S3FileSystem:
    _url, options = server.store("x")
    return s3fs.S3FileSystem(**options)


def test_one_vault_across_folders_s3_sftp_and_memory(
    tmp_path: Path, s3_server: S3Server, ssh_server: SshServer
) -> None:
    tag = uuid.uuid4().hex[:8]
    s3_url, s3_opts = s3_server.store(f"mixed-{tag}")
    sftp_url, sftp_opts = ssh_server.store(f"mixed-{tag}")
    stores = [
        Store(1, (tmp_path / "a").as_uri()),
        Store(2, (tmp_path / "b").as_uri()),
        Store(3, s3_url, s3_opts),
        Store(4, sftp_url, sftp_opts),
        Store(5, f"memory://mixed-{tag}"),
    ]
    vault = _vault(stores, state_dir=tmp_path / "state")
    files = {"scan.dcm": os.urandom(2_500_000), "notes.txt": b"patient 17: stable\n" * 50}
    vault.put(io.BytesIO(files["scan.dcm"]), 2_500_000, "scan.dcm", scheme="shamir")
    vault.put(io.BytesIO(files["notes.txt"]), len(files["notes.txt"]), "notes.txt", scheme="ssms")
    assert [m.name for m in vault.ls()] == ["notes.txt", "scan.dcm"]
    assert verify(vault).status == "healthy"
    for name, data in files.items():
        vault.get(name, tmp_path / name)
        assert (tmp_path / name).read_bytes() == data

    # Damage the S3 copy (deleted) and the SFTP copy (truncated) of the scan.
    scan = vault.lookup("scan.dcm")
    s3 = _s3(s3_server)
    s3.rm(f"{s3_url[5:]}/{scan.data_path()}")
    sftp_file = Path(sftp_url.split(str(s3_server.endpoint))[0].split(f":{ssh_server.port}")[1])
    target = sftp_file / scan.data_path()
    target.write_bytes(target.read_bytes()[:4096])
    health = verify(vault, "scan.dcm")
    assert health.status == "degraded"
    assert {p.store for p in health.objects[0].problems} == {3, 4}
    vault.get("scan.dcm", tmp_path / "again")
    assert (tmp_path / "again").read_bytes() == files["scan.dcm"]
    assert {p.store for p in repair(vault).repaired} == {3, 4}
    assert verify(vault).status == "healthy"
    refresh(vault)
    assert verify(vault).status == "healthy"
    vault.get("scan.dcm", tmp_path / "fresh")
    assert (tmp_path / "fresh").read_bytes() == files["scan.dcm"]
    for name in files:
        vault.rm(name)
    assert vault.ls() == []
    for store in stores:
        assert store.list("data") == [] and store.list("catalog") == []
        assert store.list("tmp") == []


def test_sftp_store_dying_mid_get(
    tmp_path: Path, s3_server: S3Server, doomed_ssh_server: SshServer
) -> None:
    sftp_url, sftp_opts = doomed_ssh_server.store("doomed")
    s3_url, s3_opts = s3_server.store(f"doomed-{uuid.uuid4().hex[:8]}")
    folders = [(tmp_path / f"f{i}") for i in range(1, 6)]
    stores = [
        Store(1, sftp_url, sftp_opts),
        Store(2, s3_url, s3_opts),
        Store(3, folders[2].as_uri()),
        Store(4, folders[3].as_uri()),
        Store(5, folders[4].as_uri()),
    ]
    data = os.urandom(6 * (1 << 20) + 123)
    _vault(stores, state_dir=tmp_path / "state").put(io.BytesIO(data), len(data), "big")
    manifest = _vault(stores).lookup("big")
    (folders[4] / manifest.data_path()).unlink()  # store 5 lost its fragment
    slow = Store(4, folders[3].as_uri(), fs=SlowFS(), root=str(folders[3]))
    reader = _vault([stores[0], stores[1], stores[2], slow, stores[4]])

    killed: list[int] = []

    def progress(_: int) -> None:
        if not killed:
            killed.append(1)
            doomed_ssh_server.stop()

    got = reader.get("big", tmp_path / "out", progress=progress, manifest=manifest)
    assert killed
    assert (tmp_path / "out").read_bytes() == data
    assert set(got.missing) >= {1, 5} and got.used == [2, 3, 4]
    # With the SFTP store gone for good, a put needing all five stores fails cleanly.
    with pytest.raises(StorageUnavailableError, match="store 1"):
        _vault(stores, state_dir=tmp_path / "state").put(io.BytesIO(b"new"), 3, "big", replace=True)
    reader.get("big", tmp_path / "old", manifest=None)
    assert (tmp_path / "old").read_bytes() == data
    for store in stores[1:]:
        assert store.list("tmp") == []


def test_sftp_store_dying_mid_put_keeps_old_version(
    tmp_path: Path, s3_server: S3Server, doomed_ssh_server: SshServer
) -> None:
    sftp_url, sftp_opts = doomed_ssh_server.store("put")
    s3_url, s3_opts = s3_server.store(f"put-{uuid.uuid4().hex[:8]}")
    stores = [
        Store(1, (tmp_path / "a").as_uri()),
        Store(2, s3_url, s3_opts),
        Store(3, sftp_url, sftp_opts),
        Store(4, (tmp_path / "d").as_uri()),
        Store(5, (tmp_path / "e").as_uri()),
    ]
    vault = _vault(stores, state_dir=tmp_path / "state")
    old = os.urandom(100_000)
    vault.put(io.BytesIO(old), len(old), "f")
    new = os.urandom(5 * (1 << 20))
    killed: list[int] = []

    def progress(_: int) -> None:
        if not killed:
            killed.append(1)
            doomed_ssh_server.stop()

    with pytest.raises(StorageUnavailableError, match="4 of 5 stores written"):
        vault.put(io.BytesIO(new), len(new), "f", replace=True, progress=progress)
    assert killed
    vault.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == old
    for store in (stores[0], stores[1], stores[3], stores[4]):
        assert store.list("tmp") == []
        assert len(store.list("data")) == 1


def test_killed_put_is_cleaned_up_by_next_command(
    tmp_path: Path, s3_server: S3Server, ssh_server: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    tag = uuid.uuid4().hex[:8]
    s3_url, s3_opts = s3_server.store(f"crash-{tag}")
    sftp_url, sftp_opts = ssh_server.store(f"crash-{tag}")
    home = tmp_path / "home"
    env = Environment(
        home=home,
        name="crash",
        threshold=3,
        stores=[
            StoreConfig(1, (tmp_path / "a").as_uri()),
            StoreConfig(2, (tmp_path / "b").as_uri()),
            StoreConfig(3, s3_url, s3_opts),
            StoreConfig(4, sftp_url, sftp_opts),
            StoreConfig(5, (tmp_path / "e").as_uri()),
        ],
        nodes=[],
        mpc_threshold=2,
    )
    env.save()
    with pytest.raises(ConfigError, match="passphrase"):  # never an unencrypted owner key
        init_vault(env)
    init_vault(env, passphrase=b"test passphrase")
    exe = Path(sys.executable).with_name("tessera")
    run_env = {**os.environ, "TESSERA_HOME": str(home), "TESSERA_PASSPHRASE": "test passphrase"}
    run_env.pop("TESSERA_PERSON", None)
    (tmp_path / "small").write_bytes(b"old version")
    subprocess.run(
        [exe, "vault", "put", str(tmp_path / "small"), "--name", "f"], check=True, env=run_env
    )
    with open(tmp_path / "big", "wb") as out:
        for _ in range(48):
            out.write(os.urandom(1 << 20))
    proc = subprocess.Popen(
        [exe, "vault", "put", str(tmp_path / "big"), "--name", "f", "--replace"], env=run_env
    )
    staging = tmp_path / "a" / "tmp"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if staging.is_dir() and any(p.stat().st_size > (1 << 20) for p in staging.iterdir()):
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the put finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(staging.iterdir())  # it did leave fragments behind
    assert list((home / "vault" / "journal").glob("*.json"))
    done = subprocess.run(
        [exe, "vault", "ls", "--json"], check=True, env=run_env, capture_output=True, text=True
    )
    assert [e["size"] for e in json.loads(done.stdout)] == [len(b"old version")]
    assert not list((home / "vault" / "journal").glob("*.json"))
    stores = [Store(s.id, s.url, s.options) for s in env.stores]
    for store in stores:
        assert store.list("tmp") == [], store.label
        assert len(store.list("data")) == 1, store.label
    subprocess.run(
        [exe, "vault", "get", "f", "--out", str(tmp_path / "o")], check=True, env=run_env
    )
    assert (tmp_path / "o").read_bytes() == b"old version"


def test_twenty_concurrent_puts_and_gets_over_real_servers(
    tmp_path: Path, s3_server: S3Server, ssh_server: SshServer
) -> None:
    tag = uuid.uuid4().hex[:8]
    s3_url, s3_opts = s3_server.store(f"busy-{tag}")
    sftp_url, sftp_opts = ssh_server.store(f"busy-{tag}")
    stores = [
        Store(1, (tmp_path / "a").as_uri()),
        Store(2, s3_url, s3_opts),
        Store(3, sftp_url, sftp_opts),
        Store(4, (tmp_path / "d").as_uri()),
        Store(5, f"memory://busy-{tag}"),
    ]
    vault = _vault(stores, state_dir=tmp_path / "state")
    payloads = {f"file-{i:02d}": os.urandom(30_000 + i) for i in range(20)}
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            vault.put(io.BytesIO(payloads[name]), len(payloads[name]), name)
            if name.endswith(("0", "5")):  # a few racing puts of one name
                vault.put(io.BytesIO(name.encode()), len(name), "shared", replace=True)
            vault.get(name, tmp_path / name)
            assert (tmp_path / name).read_bytes() == payloads[name]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(name,)) for name in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [m.name for m in vault.ls()] == sorted([*payloads, "shared"])
    vault.get("shared", tmp_path / "shared")
    assert (tmp_path / "shared").read_bytes().decode() in {
        "file-00",
        "file-05",
        "file-10",
        "file-15",
    }
    repair(vault)
    assert verify(vault).status == "healthy"
    for store in stores:
        assert store.list("tmp") == []
