from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from tessera import keys
from tessera.errors import ConfigError, InputError, IntegrityError, NotFoundError
from tessera.keys.protect import is_encrypted, protect, unprotect


def test_protect_roundtrip_and_wrong_passphrase() -> None:
    blob = protect(b"s" * 32, kind="ml-dsa-65", passphrase=b"correct horse")
    assert is_encrypted(blob)
    assert b"s" * 32 not in blob
    assert unprotect(blob, kind="ml-dsa-65", passphrase=b"correct horse") == b"s" * 32
    with pytest.raises(IntegrityError):
        unprotect(blob, kind="ml-dsa-65", passphrase=b"wrong")
    with pytest.raises(ConfigError, match="TESSERA_PASSPHRASE"):
        unprotect(blob, kind="ml-dsa-65", passphrase=None)
    with pytest.raises(InputError):
        unprotect(blob, kind="x25519", passphrase=b"correct horse")


def test_header_is_bound_to_ciphertext() -> None:
    doc = json.loads(protect(b"k" * 32, kind="ml-dsa-65", passphrase=b"pw"))
    doc["scrypt"]["r"] = 4
    with pytest.raises(IntegrityError):
        unprotect(json.dumps(doc).encode(), kind="ml-dsa-65", passphrase=b"pw")


def test_bare_key_needs_no_passphrase() -> None:
    blob = protect(b"k" * 32, kind="ml-dsa-65", passphrase=None)
    assert not is_encrypted(blob)
    assert unprotect(blob, kind="ml-dsa-65", passphrase=None) == b"k" * 32
    with pytest.raises(ValueError):
        protect(b"k", kind="ml-dsa-65", passphrase=b"")


@pytest.mark.parametrize("blob", [b"", b"not json", b"{}", b'{"format": "tessera-key"}'])
def test_garbage_is_input_error(blob: bytes) -> None:
    with pytest.raises(InputError):
        unprotect(blob, kind="ml-dsa-65", passphrase=b"pw")


def test_key_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sk = keys.generate()
    monkeypatch.setenv(keys.PASSPHRASE_ENV, "secret words")
    keys.write_signing_key(tmp_path / "k" / "owner.key", sk, passphrase=keys.passphrase_from_env())
    keys.write_verify_key(tmp_path / "k" / "owner.pub", sk.verify_key)
    mode = stat.S_IMODE((tmp_path / "k" / "owner.key").stat().st_mode)
    assert mode == 0o600
    loaded = keys.read_signing_key(tmp_path / "k" / "owner.key", passphrase=b"secret words")
    assert loaded.verify_key == sk.verify_key
    assert keys.read_verify_key(tmp_path / "k" / "owner.pub") == sk.verify_key
    assert list((tmp_path / "k").glob("*.tmp")) == []
    with pytest.raises(NotFoundError):
        keys.read_verify_key(tmp_path / "missing.pub")
    with pytest.raises(InputError):
        keys.read_verify_key(tmp_path / "k" / "owner.key")
    monkeypatch.delenv(keys.PASSPHRASE_ENV)
    assert keys.passphrase_from_env() is None
