"""The vault fails closed: lost and rolled-back stores, silent replacement, content binding."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fsspec.implementations.local import LocalFileSystem

from tessera.cli.main import main
from tessera.errors import InsufficientSharesError, IntegrityError, InvalidShareError
from tessera.vault import Manifest, Store, Vault, verify
from tessera.vault.manifest import decode, encode
from tessera.vault.record import VaultLostError
from tessera.vault.store import FOLDERS

from .kit import OWNER, folder_stores, put_bytes, random_bytes

MakeVault = Callable[..., Vault]


@pytest.fixture
def env3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESSERA_PASSPHRASE", "unit test passphrase")
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    folder = tmp_path / "env"
    assert main(["init", str(folder), "--nodes", "3", "--threshold", "2"]) == 0
    return folder


@pytest.fixture
def env5(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TESSERA_PASSPHRASE", "unit test passphrase")
    monkeypatch.delenv("TESSERA_HOME", raising=False)
    folder = tmp_path / "env5"
    assert main(["init", str(folder), "--nodes", "5", "--threshold", "3"]) == 0
    return folder


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _put(home: Path, tmp_path: Path, name: str, data: bytes) -> None:
    (tmp_path / name).write_bytes(data)
    assert main(["vault", "put", str(tmp_path / name), "--home", str(home)]) == 0


def _assert_dead(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    h = ("--home", str(home))
    code, out, err = _cli(capsys, "vault", "verify", *h)
    assert code == 2 and "vault lost" in out and "lost      a.bin" in out
    assert err.count("\n") == 1 and "2 file(s) lost" in err
    code, out, _ = _cli(capsys, "monitor", "scan", "--no-anomaly", "--json", *h)
    alerts = json.loads(out)["alerts"]  # the verify alone is enough
    assert any(a["severity"] == "critical" and "vault" in a["explanation"] for a in alerts)
    code, out, _ = _cli(capsys, "vault", "verify", "--json", *h)
    doc = json.loads(out)
    assert code == 2 and doc["status"] == "lost"
    assert {o["name"] for o in doc["objects"]} == {"a.bin", "b.bin"}
    assert all(o["status"] == "lost" for o in doc["objects"])
    code, out, err = _cli(capsys, "vault", "ls", *h)
    assert code == 1 and out == "" and err.count("\n") == 1 and "lost or rolled back" in err
    code, _, err = _cli(capsys, "vault", "get", "a.bin", "--out", str(tmp_path / "o"), *h)
    assert code == 1 and err.count("\n") == 1 and "'a.bin'" in err
    assert not (tmp_path / "o").exists()
    code, out, _ = _cli(capsys, "vault", "repair", *h)
    assert code == 2 and "nothing to repair" not in out
    code, out, _ = _cli(capsys, "monitor", "scan", "--no-anomaly", "--json", *h)
    alerts = json.loads(out)["alerts"]
    assert any(a["severity"] == "critical" and "vault" in a["explanation"] for a in alerts)


def test_dead_2_of_3_with_two_stores_deleted(
    env3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _put(env3, tmp_path, "a.bin", random_bytes(5000))
    _put(env3, tmp_path, "b.bin", random_bytes(7000))
    gone = [env3 / "stores" / f"node-{i}" for i in (2, 3)]
    for folder in gone:
        shutil.rmtree(folder)
    _assert_dead(env3, tmp_path, capsys)
    assert not any(folder.exists() for folder in gone)  # nothing read re-created them


def test_dead_3_of_5_with_three_stores_deleted(
    env5: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _put(env5, tmp_path, "a.bin", random_bytes(5000))
    _put(env5, tmp_path, "b.bin", random_bytes(7000))
    for i in (1, 3, 5):
        for folder in FOLDERS:
            shutil.rmtree(env5 / "stores" / f"node-{i}" / folder)
    _assert_dead(env5, tmp_path, capsys)
    for i in (1, 3, 5):
        assert not any((env5 / "stores" / f"node-{i}" / f).exists() for f in FOLDERS)


def test_a_lost_file_is_acknowledged_by_rm(
    env3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = ("--home", str(env3))
    _put(env3, tmp_path, "a.bin", b"a" * 3000)
    for i in (1, 2):
        for f in (env3 / "stores" / f"node-{i}" / "catalog").iterdir():
            f.unlink()
    _put_refused = _cli(capsys, "vault", "put", str(tmp_path / "a.bin"), "--name", "c", *h)
    assert _put_refused[0] == 1 and "lost or rolled back" in _put_refused[2]
    assert _cli(capsys, "vault", "rm", "a.bin", *h)[0] == 0
    assert _cli(capsys, "vault", "verify", *h)[0] == 0
    assert _cli(capsys, "vault", "ls", *h)[:2] == (0, "")


def test_stores_restored_from_an_older_copy_are_detected(
    make_vault: MakeVault, tmp_path: Path
) -> None:
    vault = make_vault(n=3, k=2)
    put_bytes(vault, "kept", b"k" * 2000)
    put_bytes(vault, "gone", b"g" * 2000)
    backup = tmp_path / "backup"
    for i in (1, 2, 3):
        shutil.copytree(tmp_path / f"store-{i}", backup / f"store-{i}")
    put_bytes(vault, "kept", b"K" * 2000, replace=True)
    put_bytes(vault, "new", b"n" * 2000)
    vault.rm("gone")
    for i in (1, 2, 3):
        shutil.rmtree(tmp_path / f"store-{i}")
        shutil.copytree(backup / f"store-{i}", tmp_path / f"store-{i}")
    fresh = make_vault(n=3, k=2)
    result = verify(fresh)
    assert result.status == "lost" and result.exit_code == 2
    assert {o.name for o in result.objects if o.status == "lost"} == {"kept", "new"}
    assert "gone" not in {o.name for o in result.objects}  # removed files stay removed
    with pytest.raises(VaultLostError, match="rolled back"):
        fresh.ls()
    with pytest.raises(VaultLostError):
        fresh.get("kept", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_crash_before_the_record_update_is_adopted(
    make_vault: MakeVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = make_vault(n=3, k=2)
    put_bytes(vault, "a", b"a" * 100)
    real = type(vault).commit_record
    monkeypatch.setattr(type(vault), "commit_record", lambda self, **kw: None)
    put_bytes(vault, "b", b"b" * 100)  # committed on the stores, not in the record yet
    monkeypatch.setattr(type(vault), "commit_record", real)
    fresh = make_vault(n=3, k=2)
    assert [m.name for m in fresh.ls()] == ["a", "b"]
    put_bytes(fresh, "c", b"c" * 100)
    assert set(fresh.owner_record().entries.values()) >= {
        (m.name, d) for m, d in ((m, _digest(m)) for m in fresh.ls())
    }


def _digest(m: Manifest) -> str:
    from tessera.vault.manifest import digest

    return digest(m)


def test_a_tampered_record_refuses(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault(n=3, k=2)
    put_bytes(vault, "a", b"a" * 100)
    path = tmp_path / "state" / "catalogue.json"
    doc = json.loads(path.read_text())
    doc["record"]["generation"] += 5
    path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError, match="catalogue record"):
        vault.ls()


def test_put_over_an_existing_name_needs_replace(
    env3: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    h = ("--home", str(env3))
    _put(env3, tmp_path, "a.bin", b"first" * 100)
    (tmp_path / "a.bin").write_bytes(b"second" * 100)
    code, _, err = _cli(capsys, "vault", "put", str(tmp_path / "a.bin"), *h)
    assert code == 1 and err.count("\n") == 1 and "--replace" in err
    assert _cli(capsys, "vault", "get", "a.bin", "--out", str(tmp_path / "o"), *h)[0] == 0
    assert (tmp_path / "o").read_bytes() == b"first" * 100
    assert _cli(capsys, "vault", "put", str(tmp_path / "a.bin"), "--replace", *h)[0] == 0
    assert _cli(capsys, "vault", "get", "a.bin", "--out", str(tmp_path / "p"), *h)[0] == 0
    assert (tmp_path / "p").read_bytes() == b"second" * 100


def _resign_body(data: bytes, body: bytes) -> bytes:
    """``data`` (a signed manifest) with its body replaced, keeping the old signature."""
    (length,) = struct.unpack(">I", data[5:9])
    return data[:5] + struct.pack(">I", len(body)) + body + data[9 + length :]


def test_a_manifest_whose_data_tags_were_swapped_fails_its_signature(
    make_vault: MakeVault,
) -> None:
    vault = make_vault(n=3, k=2)
    put_bytes(vault, "a", random_bytes(3000))
    put_bytes(vault, "b", random_bytes(3000))
    a, b = vault.lookup("a"), vault.lookup("b")
    assert len(a.tags) == 64 and a.tags != b.tags
    signed = encode(a, OWNER)
    assert decode(signed, OWNER.verify_key) == a
    swapped = dataclasses.replace(a, tags=b.tags)
    body = json.dumps(dataclasses.asdict(swapped), sort_keys=True, separators=(",", ":"))
    with pytest.raises(IntegrityError, match="signature"):
        decode(_resign_body(signed, body.encode()), OWNER.verify_key)


def test_fragments_of_another_generation_do_not_match_the_manifest(
    make_vault: MakeVault, tmp_path: Path
) -> None:
    from tessera.vault import refresh

    vault = make_vault(n=3, k=2)
    data = random_bytes(20_000)
    put_bytes(vault, "f", data)
    old = vault.lookup("f")
    saved = {i: (tmp_path / f"store-{i}" / old.data_path()).read_bytes() for i in (1, 2, 3)}
    refresh(vault, "f")
    new = vault.lookup("f")
    for i in (1, 2, 3):  # self-consistent fragments, but not the signed ones
        (tmp_path / f"store-{i}" / new.data_path()).write_bytes(saved[i])
    with pytest.raises(InsufficientSharesError, match="do not match its signed manifest"):
        vault.get("f", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert verify(vault).status == "lost"


def test_version_1_manifests_are_still_read() -> None:
    m = Manifest("x", 1, "2026-01-01T00:00:00+00:00", 1, "0" * 32, 0, "shamir", 2, 3, "1" * 32, "k")
    fields = dataclasses.asdict(m)
    del fields["tags"]
    body = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
    head = b"TSMF" + bytes([1]) + struct.pack(">I", len(body))
    sig = OWNER.sign(head + body, context=b"tessera-vault-manifest-v1")
    blob = head + body + struct.pack(">H", len(sig)) + sig
    assert decode(blob, OWNER.verify_key) == m


def test_reading_creates_no_store_folders(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault(n=3, k=2)
    assert vault.ls() == []
    assert verify(vault).status == "healthy"
    assert not any((tmp_path / f"store-{i}").exists() for i in (1, 2, 3))


class _HangingListFS(LocalFileSystem):
    """A local folder whose listings never answer until ``release`` is set."""

    cachable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.release = threading.Event()

    def ls(self, path: str, detail: bool = False, **kwargs: Any) -> Any:
        self.release.wait()
        return super().ls(path, detail=detail, **kwargs)


def test_a_store_whose_listing_hangs_is_set_aside(make_vault: MakeVault, tmp_path: Path) -> None:
    stores = folder_stores(tmp_path, 4)
    hanging = _HangingListFS()
    stores[2] = Store(3, stores[2].url, fs=hanging, root=str(tmp_path / "store-3"))
    vault = make_vault(stores=stores, k=2, write_quorum=3, read_stall_s=0.3)
    try:
        put_bytes(vault, "f", b"data" * 100)
        assert [m.name for m in vault.ls()] == ["f"]
        result = verify(vault)
        assert "no answer" in result.unreachable[3]
        vault.get("f", tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == b"data" * 100
    finally:
        hanging.release.set()


@pytest.mark.parametrize(
    "change",
    [
        {"object_id": "../../../etc/passwd0000000000000"},  # becomes a store path
        {"size": "12"},
        {"k": 1},
        {"generation": -1},
        {"entry_id": "Z" * 32},
    ],
)
def test_a_signed_manifest_must_still_be_well_formed(change: dict[str, object]) -> None:
    m = Manifest("x", 1, "2026-01-01T00:00:00+00:00", 1, "0" * 32, 0, "shamir", 2, 3, "1" * 32, "k")
    assert decode(encode(m, OWNER), OWNER.verify_key) == m
    bad = dataclasses.replace(m, **change)  # type: ignore[arg-type]
    with pytest.raises(InvalidShareError, match="unexpected shape"):
        decode(encode(bad, OWNER), OWNER.verify_key)
