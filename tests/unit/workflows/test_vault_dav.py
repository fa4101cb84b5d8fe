"""The vault as files and folders (tessera.workflows.vault_dav): which paths name vault
files, how names become a tree, and the operations the WebDAV mount runs, on a real vault
over local folders."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from tessera import keys
from tessera.errors import UsageError
from tessera.vault import Store, Vault, VaultLostError
from tessera.workflows.vault_dav import (
    NAME_MAX,
    FileNode,
    FolderNode,
    InvalidPathError,
    NameTooLongError,
    ReadOnlyError,
    Tree,
    VaultFiles,
    check_listen,
    etag_of,
    is_loopback,
    split_path,
)

OWNER = keys.generate()


def _vault(tmp_path: Path, *, signer: keys.SigningKey | None = OWNER) -> Vault:
    stores = [Store(i, (tmp_path / f"store-{i}").as_uri()) for i in (1, 2, 3)]
    return Vault(stores, k=2, verifier=OWNER.verify_key, signer=signer, state_dir=tmp_path / "s")


def _files(tmp_path: Path, **kw: object) -> VaultFiles:
    return VaultFiles(_vault(tmp_path, **kw), scheme="shamir", spool_dir=tmp_path / "spool")  # type: ignore[arg-type]


def _put(vault: Vault, name: str, data: bytes = b"x") -> None:
    vault.put(io.BytesIO(data), len(data), name)


@pytest.mark.parametrize(
    ("path", "segments"),
    [("/", ()), ("/a", ("a",)), ("/a/b/", ("a", "b")), ("/ä €/ø", ("ä €", "ø"))],
)
def test_paths_that_name_vault_files(path: str, segments: tuple[str, ...]) -> None:
    assert split_path(path) == segments


@pytest.mark.parametrize(
    "path",
    ["a", "/..", "/a/../b", "/./a", "/a//b", "//a", "/a\x00b", "/a\nb", "/a\x7fb", "/a\\b"],
)
def test_paths_that_traverse_or_smuggle_are_refused(path: str) -> None:
    with pytest.raises(InvalidPathError):
        split_path(path)


def test_overlong_names_are_refused_with_their_own_error() -> None:
    split_path("/" + "a" * 255)
    split_path("/" + "/".join(["b" * 100] * 10))  # 1,009 bytes: within the vault's limit
    with pytest.raises(NameTooLongError):
        split_path("/" + "a" * 256)
    with pytest.raises(NameTooLongError):
        split_path("/" + "é" * 128)  # 256 bytes of UTF-8
    deep = "/" + "/".join(["b" * 100] * 11)
    assert len(deep.encode()) > NAME_MAX
    with pytest.raises(NameTooLongError) as caught:
        split_path(deep)
    assert caught.value.http_status == 414 and isinstance(caught.value, UsageError)


def test_names_become_a_tree_of_files_and_folders() -> None:
    current = {name: _manifest(name, 10 + i) for i, name in enumerate(
        ["a.txt", "ct/0042.dcm", "ct/archive/", "x", "x/y", "../up", "odd//name", "end/"]
    )}  # fmt: skip
    tree = Tree.build(current, {"ct/lost.dcm": "catalogue entry gone"})
    assert sorted(tree.folders) == [(), ("ct",), ("ct", "archive"), ("end",), ("x",)]
    assert sorted(tree.files) == [("a.txt",), ("ct", "0042.dcm"), ("ct", "lost.dcm"), ("x", "y")]
    assert sorted(tree.hidden) == ["../up", "odd//name", "x"]  # x is a folder (x/y) too
    lost = tree.find(("ct", "lost.dcm"))
    assert isinstance(lost, FileNode) and lost.manifest is None and lost.lost
    ct = tree.find(("ct",))
    assert isinstance(ct, FolderNode) and ct.members == {
        "0042.dcm": "file",
        "archive": "folder",
        "lost.dcm": "file",
    }
    assert ct.marker is None and ct.modified_ns == current["ct/archive/"].created_ns
    assert tree.names_under(("ct",)) == ["ct/archive/", "ct/0042.dcm", "ct/lost.dcm"]


def _manifest(name: str, ns: int) -> object:
    from tessera.vault import Manifest

    return Manifest(
        name=name,
        size=1,
        created="2026-01-01T00:00:00+00:00",
        created_ns=ns,
        object_id="00" * 16,
        generation=0,
        scheme="shamir",
        k=2,
        n=3,
        entry_id=f"{ns:032x}",
        key_id="k",
        tags="",
    )


def test_etags_differ_per_version_and_hide_the_entry_id() -> None:
    one, two = _manifest("a", 1), _manifest("a", 2)
    assert etag_of(one) != etag_of(two)  # type: ignore[arg-type]
    assert one.entry_id not in etag_of(one)  # type: ignore[arg-type,attr-defined]


def test_listen_addresses() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.3.4.5"):
        assert is_loopback(host)
        check_listen(host, tls=False)
    for host in ("0.0.0.0", "10.1.2.3", "example.org", "::"):
        assert not is_loopback(host)
        with pytest.raises(UsageError, match="needs --tls-cert"):
            check_listen(host, tls=False)
        check_listen(host, tls=True)


def test_folders_copies_moves_and_removals_on_a_real_vault(tmp_path: Path) -> None:
    files = _files(tmp_path)
    vault = files.vault
    files.make_folder(("docs",), None)
    _put(vault, "docs/a.txt", b"alpha")
    files.invalidate()
    node = files.tree().find(("docs", "a.txt"))
    assert isinstance(node, FileNode)
    files.copy_file(node, ("docs", "b.txt"), None, move=False)
    with files.open(files.tree().find(("docs", "b.txt"))) as stream:  # type: ignore[arg-type]
        assert stream.read() == b"alpha"
    files.copy_file(node, ("elsewhere.txt",), None, move=True)  # a move out of docs/
    assert sorted(m.name for m in vault.ls()) == ["docs/", "docs/b.txt", "elsewhere.txt"]
    b = files.tree().find(("docs", "b.txt"))
    files.remove(("docs", "b.txt"), None, keep_parent=True)
    assert isinstance(b, FileNode)
    assert sorted(m.name for m in vault.ls()) == ["docs/", "elsewhere.txt"]  # docs/ stays
    _put(vault, "implicit/only.txt")
    files.invalidate()
    files.remove(("implicit", "only.txt"), None, keep_parent=True)  # gets a marker
    assert "implicit/" in [m.name for m in vault.ls()]
    assert files.remove(("docs",), None, keep_parent=True) == 1
    assert sorted(m.name for m in vault.ls()) == ["elsewhere.txt", "implicit/"]


def test_a_mount_without_the_key_refuses_writes(tmp_path: Path) -> None:
    files = _files(tmp_path, signer=None)
    with pytest.raises(ReadOnlyError):
        files.make_folder(("x",), None)
    other = keys.generate()  # someone else's key never signs the vault
    with pytest.raises(ReadOnlyError, match="owner"):
        files.put(("x.txt",), 1, other)
    writable = files.writer(OWNER)  # the owner's key (a gateway user's, unlocked per request)
    assert writable.signer is OWNER and files.vault.signer is None


def test_a_lost_file_is_an_error_to_open(tmp_path: Path) -> None:
    files = _files(tmp_path)
    with pytest.raises(VaultLostError, match="is lost"):
        files.open(FileNode(("gone.bin",), None, "catalogue entry gone"))


def test_two_uploads_of_one_name_take_turns(tmp_path: Path) -> None:
    files = _files(tmp_path)
    first = files.put(("same.txt",), 5, None)
    second: list[object] = []
    waiting = threading.Thread(target=lambda: second.append(files.put(("same.txt",), 6, None)))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive() and not second  # the second waits for the first
    other = files.put(("other.txt",), 1, None)  # another name does not wait
    other.write(b"o")
    other.close()
    first.write(b"first")
    first.close()
    waiting.join(30)
    [stream] = second
    stream.write(b"second")  # type: ignore[attr-defined]
    stream.close()  # type: ignore[attr-defined]
    with files.open(files.tree().find(("same.txt",))) as got:  # type: ignore[arg-type]
        assert got.read() == b"second"
