from __future__ import annotations

import pytest

from tessera.errors import StorageUnavailableError
from tessera.vault.store import FragmentMissingError, Store, display_url


def test_display_url_drops_credentials() -> None:
    assert display_url("sftp://alice:s3cret@host:2222/srv/v?x=1") == "sftp://host:2222/srv/v"
    assert display_url("s3://bucket/prefix") == "s3://bucket/prefix"


def test_memory_store_operations(memory_url: str) -> None:
    store = Store(1, memory_url)
    assert store.list("data") == []
    store.write_bytes("tmp/a", b"hello")
    store.rename("tmp/a", "data/b")
    assert store.list("data") == ["b"] and store.list("tmp") == []
    assert store.read_bytes("data/b") == b"hello"
    assert store.exists("data/b")
    assert store.delete("data/b") and not store.delete("data/b")
    with pytest.raises(FragmentMissingError):
        store.read_bytes("data/b")
    assert "1 (memory://" in store.label


def test_unreachable_store_is_a_storage_error() -> None:
    store = Store(2, "sftp://user:pw@127.0.0.1:1/x", {"connect_timeout": 2})
    with pytest.raises(StorageUnavailableError) as caught:
        store.list("data")
    assert "pw" not in str(caught.value) and "store 2" in str(caught.value)
    with pytest.raises(StorageUnavailableError):
        Store(3, "nosuchprotocol://x").list("data")
