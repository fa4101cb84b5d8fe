"""Streaming vault files out (ranges, seeks, fallbacks) and in (short, aborted, too long,
spooled encrypted) for the WebDAV mount: tessera.workflows.vault_dav_io on a real vault
over local folders."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tessera import keys
from tessera.errors import InsufficientSharesError, IntegrityError
from tessera.vault import Store, Vault
from tessera.workflows.vault_dav_io import RestoreStream
from tessera.workflows.vault_dav_put import (
    PutStream,
    Spool,
    UploadInterruptedError,
    UploadTooLargeError,
)

OWNER = keys.generate()
DATA = os.urandom(5 * 1024 * 1024 + 123)  # six blocks of 1 MiB


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    stores = [Store(i, (tmp_path / f"store-{i}").as_uri()) for i in (1, 2, 3)]
    return Vault(stores, k=2, verifier=OWNER.verify_key, signer=OWNER, state_dir=tmp_path / "s")


def _stored(vault: Vault, name: str = "f.bin", data: bytes = DATA) -> RestoreStream:
    vault.put(io.BytesIO(data), len(data), name)
    stream = RestoreStream(vault, vault.lookup(name))
    stream.start()
    return stream


def test_a_stream_reads_seeks_forward_and_back(vault: Vault) -> None:
    with _stored(vault) as stream:
        assert stream.read(10) == DATA[:10]
        stream.seek(3_000_000)  # forward: skipped while restoring
        assert stream.read(100) == DATA[3_000_000:3_000_100]
        stream.seek(500)  # back: restored again from the start
        assert stream.read(1000) == DATA[500:1500]
        stream.seek(-7, 2)
        assert stream.read() == DATA[-7:] and stream.read(5) == b""
        stream.seek(0)
        assert stream.read() == DATA


def test_an_empty_file_and_a_range_past_the_end(vault: Vault) -> None:
    with _stored(vault, "empty", b"") as stream:
        assert stream.read() == b""
    with _stored(vault, "f.bin") as stream:
        stream.seek(len(DATA) + 10)
        assert stream.tell() == len(DATA) and stream.read(10) == b""


def test_a_store_missing_its_fragment_is_replaced_by_another(vault: Vault, tmp_path: Path) -> None:
    vault.put(io.BytesIO(DATA), len(DATA), "f.bin")
    manifest = vault.lookup("f.bin")
    (tmp_path / "store-1" / manifest.data_path()).unlink()
    with RestoreStream(vault, manifest) as stream:
        stream.start()
        assert stream.read() == DATA


def test_fewer_than_k_fragments_fail_before_any_byte(vault: Vault, tmp_path: Path) -> None:
    vault.put(io.BytesIO(DATA), len(DATA), "f.bin")
    manifest = vault.lookup("f.bin")
    for store in (1, 2):
        (tmp_path / f"store-{store}" / manifest.data_path()).unlink()
    stream = RestoreStream(vault, manifest)
    with pytest.raises(InsufficientSharesError, match="1 readable fragments, need 2"):
        stream.start()
    stream.close()


def test_fragments_of_another_file_are_refused_before_any_byte(
    vault: Vault, tmp_path: Path
) -> None:
    vault.put(io.BytesIO(DATA), len(DATA), "f.bin")
    vault.put(io.BytesIO(DATA[::-1]), len(DATA), "g.bin")
    f, g = vault.lookup("f.bin"), vault.lookup("g.bin")
    for store in (1, 2, 3):  # g's fragments filed under f's object id
        root = tmp_path / f"store-{store}"
        (root / g.data_path()).replace(root / f.data_path())
    stream = RestoreStream(vault, f)
    with pytest.raises(InsufficientSharesError, match="do not match its signed manifest"):
        stream.start()
    stream.close()


def test_damage_past_repair_mid_file_is_an_error_after_the_good_blocks(
    vault: Vault, tmp_path: Path
) -> None:
    vault.put(io.BytesIO(DATA), len(DATA), "f.bin")
    manifest = vault.lookup("f.bin")
    for store in (1, 2, 3):
        path = tmp_path / f"store-{store}" / manifest.data_path()
        raw = bytearray(path.read_bytes())
        raw[len(raw) * 2 // 3] ^= 1
        path.write_bytes(bytes(raw))
    got = bytearray()
    with RestoreStream(vault, manifest) as stream, pytest.raises(InsufficientSharesError):
        stream.start()
        while chunk := stream.read(1 << 16):
            got += chunk
    assert 0 < len(got) < len(DATA) and bytes(got) == DATA[: len(got)]


def _done() -> None:
    return None


def test_a_put_stream_stores_only_a_complete_upload(vault: Vault, tmp_path: Path) -> None:
    calls: list[str] = []
    stream = PutStream(
        vault,
        "up.bin",
        len(DATA),
        scheme="shamir",
        spool_dir=tmp_path,
        on_done=lambda: calls.append("done"),
    )
    for i in range(0, len(DATA), 300_000):
        stream.write(DATA[i : i + 300_000])
    result = stream.close()
    assert result.size == len(DATA) and calls == ["done"]
    assert _read(vault, "up.bin") == DATA
    # ended short, aborted, too long: nothing stored, the old version intact
    short = PutStream(vault, "up.bin", 10, scheme="shamir", spool_dir=tmp_path, on_done=_done)
    short.write(b"12345")
    with pytest.raises(UploadInterruptedError, match="5 of 10 bytes"):
        short.close()
    aborted = PutStream(vault, "new.bin", 10, scheme="shamir", spool_dir=tmp_path, on_done=_done)
    aborted.write(b"12345")
    aborted.abort()
    long = PutStream(vault, "long.bin", 3, scheme="shamir", spool_dir=tmp_path, on_done=_done)
    with pytest.raises(UploadInterruptedError, match="longer"):
        long.write(b"1234")
    long.abort()
    assert sorted(m.name for m in vault.ls()) == ["up.bin"]
    assert _read(vault, "up.bin") == DATA
    for store in (1, 2, 3):
        assert list((tmp_path / f"store-{store}" / "tmp").iterdir()) == []


def test_an_upload_of_unknown_size_is_spooled(vault: Vault, tmp_path: Path) -> None:
    spool = tmp_path / "sp"
    stream = PutStream(vault, "chunked.bin", None, scheme="ssms", spool_dir=spool, on_done=_done)
    for i in range(0, len(DATA), 77_777):
        stream.write(DATA[i : i + 77_777])
    assert stream.close().size == len(DATA)
    assert _read(vault, "chunked.bin") == DATA
    capped = PutStream(vault, "huge.bin", None, scheme="ssms", spool_dir=spool, on_done=_done)
    capped.spool_max = 1000
    with pytest.raises(UploadTooLargeError):
        capped.write(b"x" * 1001)
    capped.abort()
    assert list(spool.iterdir()) == [] and "huge.bin" not in [m.name for m in vault.ls()]


def test_the_spool_holds_ciphertext_only_and_notices_tampering(tmp_path: Path) -> None:
    text = b"patient 0042, consent form, " * 100_000
    spool = Spool(tmp_path)
    spool.write(text)
    spool.rewind()
    raw = os.pread(spool._file.fileno(), 1 << 24, 0)
    assert b"patient 0042" not in raw and len(raw) > len(text)
    out = bytearray(len(text) + 10)
    got = 0
    while step := spool.readinto(memoryview(out)[got:]):
        got += step
    assert bytes(out[:got]) == text
    # a changed byte on disk is refused, not decrypted into something else
    os.pwrite(spool._file.fileno(), bytes([raw[100] ^ 1]), 100)
    spool.rewind()
    with pytest.raises(IntegrityError, match="changed on disk"):
        spool.readinto(bytearray(10))
    spool.close()
    assert list(tmp_path.iterdir()) == []  # the spool was an unnamed file: nothing left


def _read(vault: Vault, name: str) -> bytes:
    with RestoreStream(vault, vault.lookup(name)) as stream:
        stream.start()
        return stream.read()
