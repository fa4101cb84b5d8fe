from __future__ import annotations

import io
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from tessera import keys
from tessera.errors import (
    IntegrityError,
    NotFoundError,
    RecoveryError,
    StorageUnavailableError,
    TesseraError,
)
from tessera.vault import Store, Vault, refresh, repair, verify
from tessera.vault.catalogue import combine_manifest
from tessera.vault.journal import Journal, Record
from tessera.vault.record import NameTakenError

from .kit import OWNER, FlakyFS, data_file, folder_stores, put_bytes, random_bytes

MakeVault = Callable[..., Vault]


@pytest.mark.parametrize("scheme", ["shamir", "ssms"])
@pytest.mark.parametrize("size", [0, 1, 1000, (1 << 20) + 7])
def test_put_get_roundtrip(make_vault: MakeVault, tmp_path: Path, scheme: str, size: int) -> None:
    vault = make_vault()
    data = random_bytes(size)
    result = put_bytes(vault, "a/b c.dcm", data, scheme=scheme)
    assert result.stores_written == [1, 2, 3, 4, 5] and not result.degraded
    got = vault.get("a/b c.dcm", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert len(got.used) == 3 and got.missing == {} and got.corrected == {}
    (m,) = vault.ls()
    assert (m.name, m.size, m.scheme, m.k, m.n) == ("a/b c.dcm", size, scheme, 3, 5)


def test_stores_see_neither_names_nor_sizes(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    put_bytes(vault, "secret-patient-name.txt", b"x" * 1000)
    put_bytes(vault, "other.txt", b"y" * 1100)
    for i in range(1, 6):
        files = [p for p in (tmp_path / f"store-{i}").rglob("*") if p.is_file()]
        for f in files:
            assert b"secret-patient-name" not in f.read_bytes()
            assert "secret" not in str(f)
        sizes = {f.stat().st_size for f in files if f.parent.name == "data"}
        assert len(sizes) == 1  # both sizes land in one bucket
        assert not list((tmp_path / f"store-{i}" / "tmp").iterdir())


def test_new_version_replaces_old(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    put_bytes(vault, "f", b"old" * 100)
    with pytest.raises(NameTakenError, match="--replace"):
        put_bytes(vault, "f", b"new" * 100)
    result = put_bytes(vault, "f", b"new" * 100, replace=True)
    assert result.replaced == 1
    vault.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"new" * 100
    assert len(list((tmp_path / "store-1" / "data").iterdir())) == 1
    assert len(vault.ls()) == 1


def test_rm_is_idempotent_and_clears_every_store(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    put_bytes(vault, "f", b"z" * 5000)
    assert vault.rm("f").removed
    assert not vault.rm("f").removed
    assert vault.ls() == []
    for i in range(1, 6):
        assert not [p for p in (tmp_path / f"store-{i}").rglob("*") if p.is_file()]
    with pytest.raises(NotFoundError):
        vault.get("f", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_get_with_two_stores_down_names_them(make_vault: MakeVault, tmp_path: Path) -> None:
    data = random_bytes(300_000)
    put_bytes(make_vault(), "f", data)
    stores = folder_stores(tmp_path, 5)
    down = Store(2, "sftp://127.0.0.1:1/nowhere", {"username": "x", "connect_timeout": 2})
    gone = Store(5, "memory://nothing-here/at-all")
    vault = make_vault(stores=[stores[0], down, stores[2], stores[3], gone])
    got = vault.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert set(got.missing) == {2, 5} and got.used == [1, 3, 4]


def test_damaged_fragments_are_named_and_corrected(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    data = random_bytes(200_000)
    put_bytes(vault, "f", data)
    flipped = data_file(tmp_path, 1)
    raw = bytearray(flipped.read_bytes())
    raw[len(raw) // 2] ^= 0x40
    flipped.write_bytes(bytes(raw))
    truncated = data_file(tmp_path, 3)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    health = verify(vault)
    assert health.status == "degraded" and health.exit_code == 1
    assert {p.store for p in health.objects[0].problems} == {1, 3}
    got = vault.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert 1 in got.corrected or 1 in got.missing or 1 not in got.used
    fixed = repair(vault)
    assert {p.store for p in fixed.repaired} == {1, 3}
    assert verify(vault).status == "healthy"


def test_lost_object_exit_code_2_and_get_refuses(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    put_bytes(vault, "f", random_bytes(50_000))
    for i in (1, 2, 3):
        data_file(tmp_path, i).unlink()
    health = verify(vault)
    assert health.status == "lost" and health.exit_code == 2
    assert health.to_json()["objects"][0]["problems"][0] == {
        "store": "1",
        "problem": "data fragment missing",
    }
    with pytest.raises(TesseraError, match="cannot restore"):
        vault.get("f", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))
    assert repair(vault).failed


def test_fragments_swapped_between_objects(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    a, b = random_bytes(70_000), random_bytes(70_000)
    put_bytes(vault, "a", a)
    put_bytes(vault, "b", b)
    files = {m.name: m.data_path() for m in vault.ls()}
    for i in (2, 4):
        pa, pb = tmp_path / f"store-{i}" / files["a"], tmp_path / f"store-{i}" / files["b"]
        ra, rb = pa.read_bytes(), pb.read_bytes()
        pa.write_bytes(rb)
        pb.write_bytes(ra)
    health = verify(vault)
    assert health.status == "degraded"
    for obj in health.objects:
        assert {p.store for p in obj.problems} == {2, 4}
    vault.get("a", tmp_path / "a")
    vault.get("b", tmp_path / "b")
    assert (tmp_path / "a").read_bytes() == a and (tmp_path / "b").read_bytes() == b


def test_put_fails_cleanly_when_a_store_breaks(make_vault: MakeVault, tmp_path: Path) -> None:
    data_old, data_new = random_bytes(100_000), random_bytes(3_000_000)
    stores = folder_stores(tmp_path, 5)
    flaky_fs = FlakyFS()
    flaky = Store(3, stores[2].url, fs=flaky_fs, root=str(tmp_path / "store-3"))
    vault = make_vault(stores=[*stores[:2], flaky, *stores[3:]])
    put_bytes(vault, "f", data_old)
    flaky_fs.budget = 1_000_000
    with pytest.raises(StorageUnavailableError, match="4 of 5 stores written, need 5"):
        put_bytes(vault, "f", data_new, replace=True)
    flaky_fs.budget = None
    vault.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data_old
    for i in range(1, 6):
        assert not list((tmp_path / f"store-{i}" / "tmp").iterdir())
        assert len(list((tmp_path / f"store-{i}" / "data").iterdir())) == 1
    assert verify(vault).status == "healthy"


def test_write_quorum_k_plus_1_commits_degraded(make_vault: MakeVault, tmp_path: Path) -> None:
    stores = folder_stores(tmp_path, 5)
    flaky_fs = FlakyFS()
    flaky = Store(5, stores[4].url, fs=flaky_fs, root=str(tmp_path / "store-5"))
    vault = make_vault(stores=[*stores[:4], flaky], write_quorum=4)
    flaky_fs.budget = 10
    data = random_bytes(100_000)
    result = put_bytes(vault, "f", data)
    assert result.degraded and result.stores_failed.keys() == {5}
    flaky_fs.budget = None
    assert verify(vault).status == "degraded"
    repaired = repair(vault)
    assert {p.store for p in repaired.repaired} == {5}
    assert verify(vault).status == "healthy"
    with pytest.raises(ValueError):
        make_vault(write_quorum=3)


def _first_among_slow(root: Path, store_id: int, fs: FlakyFS) -> list[Store]:
    """Five stores where ``store_id`` (on ``fs``) opens at once and the others later,
    so a get always starts with it among the first k."""
    slow = FlakyFS()
    slow.open_delay = 0.3
    return [
        Store(i, s.url, fs=fs if i == store_id else slow, root=str(root / f"store-{i}"))
        for i, s in enumerate(folder_stores(root, 5), start=1)
    ]


def test_store_failing_mid_get_falls_back(make_vault: MakeVault, tmp_path: Path) -> None:
    data = random_bytes(3_000_000)
    put_bytes(make_vault(), "f", data)
    flaky_fs = FlakyFS()
    vault = make_vault(stores=_first_among_slow(tmp_path, 1, flaky_fs))
    manifest = vault.lookup("f")
    flaky_fs.budget = 1_500_000
    got = vault.get("f", tmp_path / "out", manifest=manifest)
    assert (tmp_path / "out").read_bytes() == data
    assert 1 in got.missing and "Connection reset" in got.missing[1]
    assert 1 not in got.used


def test_store_hanging_mid_get_times_out_and_falls_back(
    make_vault: MakeVault, tmp_path: Path
) -> None:
    data = random_bytes(3_000_000)
    put_bytes(make_vault(), "f", data)
    hanging_fs = FlakyFS()
    vault = make_vault(stores=_first_among_slow(tmp_path, 2, hanging_fs), read_stall_s=0.5)
    manifest = vault.lookup("f")
    hanging_fs.hang_after = 1_000_000
    try:
        got = vault.get("f", tmp_path / "out", manifest=manifest)
    finally:
        hanging_fs.released.set()
    assert (tmp_path / "out").read_bytes() == data
    assert 2 not in got.used
    assert "stalled" in got.missing[2]


def test_refresh_changes_every_fragment_and_old_ones_do_not_mix(
    make_vault: MakeVault, tmp_path: Path
) -> None:
    vault = make_vault()
    data = random_bytes(100_000)
    put_bytes(vault, "f", data)
    before = {i: data_file(tmp_path, i).read_bytes() for i in range(1, 6)}
    result = refresh(vault, "f")
    assert result.generations == {"f": 1}
    after = {i: data_file(tmp_path, i).read_bytes() for i in range(1, 6)}
    assert all(before[i] != after[i] for i in range(1, 6))
    vault.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    # An attacker with two old fragments and one new one learns nothing: they don't combine.
    path = data_file(tmp_path, 1)
    path.write_bytes(before[1])
    (tmp_path / "store-2" / path.name).write_bytes(before[2])
    assert verify(vault).status == "degraded"


def test_refresh_refuses_when_degraded(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    put_bytes(vault, "f", random_bytes(10_000))
    data_file(tmp_path, 2).unlink()
    with pytest.raises(RecoveryError, match="repair"):
        refresh(vault)


def test_manifests_from_another_key_are_rejected(make_vault: MakeVault, tmp_path: Path) -> None:
    put_bytes(make_vault(), "f", b"data" * 10)
    intruder = keys.generate()
    vault = Vault(
        folder_stores(tmp_path, 5), k=3, verifier=intruder.verify_key, state_dir=tmp_path / "s"
    )
    assert vault.ls() == []
    health = verify(vault)
    assert health.status == "lost"
    assert "signature" in health.objects[0].problems[0].problem
    with pytest.raises(NotFoundError):
        vault.get("f", tmp_path / "out")
    with pytest.raises(IntegrityError):
        entry = verify(vault).objects[0]
        assert entry.status == "lost"
        blobs = [
            (tmp_path / f"store-{i}" / "catalog").iterdir().__next__().read_bytes()
            for i in (1, 2, 3)
        ]
        combine_manifest(blobs, intruder.verify_key)


def test_crashed_put_is_rolled_back_by_next_command(make_vault: MakeVault, tmp_path: Path) -> None:
    vault = make_vault()
    put_bytes(vault, "keep", b"k" * 1000)
    # Leave what a put killed after staging its fragments leaves behind.
    token, entry = "ab" * 16, "cd" * 16
    for store in vault.stores:
        store.write_bytes(f"tmp/{token}.d{store.id}", b"partial")
        store.write_bytes(f"data/{'ef' * 16}.0", b"partial")
    record = Record(
        "put",
        token,
        entry,
        on_rollback=[*(f"tmp/{token}.d{i}" for i in range(1, 6)), f"data/{'ef' * 16}.*"],
        pid=2**22 + 12345,
    )
    Journal(tmp_path / "state" / "journal").write(record)
    assert make_vault().recover() == 1
    for i in range(1, 6):
        assert not list((tmp_path / f"store-{i}" / "tmp").iterdir())
        assert len(list((tmp_path / f"store-{i}" / "data").iterdir())) == 1
    assert not list((tmp_path / "state" / "journal").glob("*.json"))
    assert [m.name for m in vault.ls()] == ["keep"]


def test_twenty_concurrent_puts_and_gets(memory_url: str, tmp_path: Path) -> None:
    fs = MemoryFileSystem()
    stores = [
        Store(i, f"{memory_url}/s{i}", fs=fs, root=f"/{memory_url[9:]}/s{i}") for i in range(1, 6)
    ]
    vault = Vault(stores, k=3, verifier=OWNER.verify_key, signer=OWNER, state_dir=tmp_path)
    payloads = {f"file-{i}": random_bytes(20_000 + i) for i in range(20)}
    put_bytes(vault, "shared", b"first")
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            put_bytes(vault, name, payloads[name])
            put_bytes(vault, "shared", name.encode(), replace=True)
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
    names = [m.name for m in vault.ls()]
    assert names == sorted([*payloads, "shared"])
    vault.get("shared", tmp_path / "shared")
    assert (tmp_path / "shared").read_bytes().decode() in payloads
    repair(vault)  # removes any superseded version a race left behind
    assert verify(vault).status == "healthy"
    assert len(vault.manifests()["shared"]) == 1


def test_bad_arguments_are_value_errors(make_vault: MakeVault) -> None:
    vault = make_vault()
    with pytest.raises(ValueError):
        put_bytes(vault, "", b"x")
    with pytest.raises(ValueError):
        put_bytes(vault, "f", b"x", scheme="rot13")
    reader = Vault(vault.stores, k=3, verifier=vault.verifier)
    with pytest.raises(ValueError):
        reader.put(io.BytesIO(b"x"), 1, "f")


def test_repair_fills_a_replacement_store(
    make_vault: MakeVault, tmp_path: Path, memory_url: str
) -> None:
    data = random_bytes(150_000)
    put_bytes(make_vault(), "f", data)
    stores = folder_stores(tmp_path, 5)
    stores[1] = Store(2, memory_url)  # store 2 was lost; an empty one takes its place
    vault = make_vault(stores=stores)
    assert verify(vault).status == "degraded"
    fixed = repair(vault)
    assert {p.store for p in fixed.repaired} == {2}
    assert verify(vault).status == "healthy"
    for i in (1, 3):  # now the replacement's fragment is needed
        data_file(tmp_path, i).unlink()
    got = vault.get("f", tmp_path / "out")
    assert got.used == [2, 4, 5] and (tmp_path / "out").read_bytes() == data


def test_verify_names_a_store_that_breaks_while_read(make_vault: MakeVault, tmp_path: Path) -> None:
    put_bytes(make_vault(), "f", random_bytes(3_000_000))
    stores = folder_stores(tmp_path, 5)
    flaky_fs = FlakyFS()
    flaky = Store(4, stores[3].url, fs=flaky_fs, root=str(tmp_path / "store-4"))
    vault = make_vault(stores=[*stores[:3], flaky, stores[4]])
    vault.lookup("f")
    flaky_fs.budget = 1_000_000
    health = verify(vault)
    assert health.status == "degraded"
    problems = health.objects[0].problems
    assert {p.store for p in problems} == {4}  # the broken store stays broken for its catalogue
    assert problems[0].problem.startswith("data fragment unreadable: store 4")


def test_crashed_refresh_is_rolled_forward(
    make_vault: MakeVault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = make_vault()
    data = random_bytes(40_000)
    put_bytes(vault, "f", data)
    # The refresh "dies" right after its new catalogue entry committed.
    monkeypatch.setattr(Vault, "_finish", lambda self, record, committed, **kw: None)
    refresh(vault, "f")
    monkeypatch.undo()
    assert len(list((tmp_path / "store-1" / "data").iterdir())) == 2  # old + new generation
    (path,) = (tmp_path / "state" / "journal").glob("*.json")
    path.write_text(path.read_text().replace(f'"pid": {os.getpid()}', '"pid": 4206649'))
    fresh = make_vault()
    assert fresh.recover() == 1
    for i in range(1, 6):
        (only,) = (tmp_path / f"store-{i}" / "data").iterdir()
        assert only.name.endswith(".1")
        assert len(list((tmp_path / f"store-{i}" / "catalog").iterdir())) == 1
    fresh.get("f", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert verify(fresh).status == "healthy"
