"""``tessera vault mount`` over real processes on loopback: files and folders through a
WebDAV client library, ranges, names hidden from the stores, and every refusal: sign-in
(no, wrong, swapped credentials; roles; lockout), paths that traverse or are too long,
unknown methods, a client cut off mid-PUT (nothing is stored), a read-only mount, the
vault's owner writing with her own token, TLS, and the process's lifetime."""

from __future__ import annotations

import datetime
import io
import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from webdav4.client import Client
from webdav_fixtures import (
    BIN,
    PASSPHRASE,
    Mount,
    make_env,
    mounted,
    start_mount,
    store_files,
    store_root,
)

from tessera.config import Environment
from tessera.workflows.audit import gateway_log
from tessera.workflows.people import create_key
from tessera.workflows.vault import open_vault

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("webdav")]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Environment, dict[str, str]]]:
    yield make_env(tmp_path_factory.mktemp("webdav") / "home")


@pytest.fixture(scope="module")
def mount(world: tuple[Environment, dict[str, str]]) -> Iterator[Mount]:
    with mounted(*world) as m:
        yield m


def _events(home: Path, since: int = 0) -> list[Any]:
    return [e for i, e in gateway_log(home).events() if i >= since]


def _log_size(home: Path) -> int:
    return gateway_log(home).size


def _names(env: Environment) -> list[str]:
    return [m.name for m in open_vault(env).ls()]


def test_files_and_folders_round_trip_through_a_webdav_client(
    world: tuple[Environment, dict[str, str]], mount: Mount, tmp_path: Path
) -> None:
    env, _ = world
    with httpx.Client(base_url=mount.url, auth=mount.auth(), timeout=120) as http:
        _round_trip(env, mount, Client(mount.url, http_client=http), tmp_path)


def _round_trip(env: Environment, mount: Mount, client: Client, tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "scan.dcm"
    source.write_bytes(data)
    client.mkdir("patient-0042")
    client.upload_file(source, "patient-0042/ct-chest.dcm")
    client.upload_fileobj(io.BytesIO(b"notes"), "patient-0042/notes.txt", size=5)
    client.mkdir("empty")
    # PROPFIND: sizes and dates, folders as folders
    listing = {Path(e["name"]).name: e for e in client.ls("patient-0042", detail=True)}
    assert listing["ct-chest.dcm"]["content_length"] == len(data)
    assert listing["notes.txt"]["content_length"] == 5
    modified = listing["ct-chest.dcm"]["modified"]
    assert abs(modified.timestamp() - time.time()) < 600
    assert {e["type"] for e in client.ls("/", detail=True)} == {"directory"}
    # the vault holds the same files under path names, a marker for the empty folder
    assert _names(env) == ["empty/", "patient-0042/", "patient-0042/ct-chest.dcm",
                           "patient-0042/notes.txt"]  # fmt: skip
    # GET streams the whole file; Range serves a slice (206)
    out = tmp_path / "back.dcm"
    client.download_file("patient-0042/ct-chest.dcm", out)
    assert out.read_bytes() == data
    with mount.client() as http:
        part = http.get("patient-0042/ct-chest.dcm", headers={"Range": "bytes=2000000-2000099"})
        assert part.status_code == 206 and part.content == data[2000000:2000100]
        tail = http.get("patient-0042/ct-chest.dcm", headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        etag = http.head("patient-0042/ct-chest.dcm").headers["etag"]
    with client.open("patient-0042/ct-chest.dcm", mode="rb") as remote:  # seeks: ranges
        remote.seek(1_000_000)
        assert remote.read(64) == data[1_000_000:1_000_064]
    # COPY, MOVE (a rename), a MOVE onto an existing file replaces it, DELETE
    client.copy("patient-0042/ct-chest.dcm", "empty/copy.dcm")
    client.move("patient-0042/notes.txt", "patient-0042/notes-v1.txt")
    client.upload_fileobj(io.BytesIO(b"new notes"), "draft.txt", size=9)
    client.move("draft.txt", "patient-0042/notes-v1.txt", overwrite=True)
    client.move("empty", "archive")
    assert sorted(e["name"] for e in client.ls("archive", detail=True)) == ["archive/copy.dcm"]
    with mount.client() as http:
        assert http.get("patient-0042/notes-v1.txt").content == b"new notes"
        assert http.get("archive/copy.dcm").content == data
        assert http.head("patient-0042/ct-chest.dcm").headers["etag"] == etag
        assert http.get("patient-0042/notes.txt").status_code == 404
    client.remove("archive/copy.dcm")  # the folder stays, empty: it gets a marker
    assert client.ls("archive", detail=False) == []
    client.remove("archive")
    assert _names(env) == ["patient-0042/", "patient-0042/ct-chest.dcm",
                           "patient-0042/notes-v1.txt"]  # fmt: skip
    # what the stores hold: no name, no folder name
    blobs = b"".join(p.read_bytes() for p in store_files(env) if p.suffix != ".sqlite3")
    for name in (b"patient-0042", b"ct-chest", b"notes-v1", b"archive"):
        assert name not in blobs
    # every access is an audit event naming the user and the vault name
    events = _events(env.home)
    gets = [e for e in events if e.action == "vault.get" and e.user == "sam"]
    assert any(e.entity == "patient-0042/ct-chest.dcm" and e.detail["bytes"] == len(data)
               for e in gets)  # fmt: skip
    puts = [e for e in events if e.action == "vault.put" and e.outcome == "success"]
    assert {e.entity for e in puts} >= {"patient-0042/ct-chest.dcm", "draft.txt"}
    assert all(e.role == "steward" and e.client == "tessera-webdav" for e in gets + puts)
    # a name beyond ASCII: the same name in the vault and in the audit log
    with mount.client() as http:
        assert http.put("Befund über 5 €.txt", content=b"utf-8").status_code == 201
        assert http.get("Befund über 5 €.txt").content == b"utf-8"
        assert http.delete("Befund über 5 €.txt").status_code == 204
    named = [e for e in _events(env.home) if e.entity == "Befund über 5 €.txt"]
    assert [e.action for e in named] == ["vault.put", "vault.get", "vault.rm"]
    assert {e.action for e in events} >= {"vault.ls", "vault.move", "vault.copy", "vault.rm",
                                          "vault.mkdir", "vault.mount"}  # fmt: skip


def test_sign_in_and_roles_are_checked(
    world: tuple[Environment, dict[str, str]], mount: Mount
) -> None:
    env, tokens = world
    before = _log_size(env.home)
    bare = httpx.request("PROPFIND", mount.url, headers={"Depth": "0"})
    assert bare.status_code == 401 and bare.headers["www-authenticate"].startswith("Basic")
    refused = [
        ("sam", "not-the-token"),  # a wrong password
        ("ann", tokens["sam"]),  # someone else's token under one's own name
        ("nobody", tokens["sam"]),
        ("sam", ""),
    ]
    for auth in refused:
        answer = httpx.request("PROPFIND", mount.url, auth=auth, headers={"Depth": "0"})
        assert answer.status_code == 401, auth
    junk = httpx.get(mount.url, headers={"Authorization": "Basic !!not base64!!"})
    assert junk.status_code == 401
    for user in ("rita", "olga"):  # a researcher, an officer: no vault access
        answer = httpx.request("PROPFIND", mount.url, auth=mount.auth(user), headers={"Depth": "0"})
        assert answer.status_code == 403 and "steward" in answer.text
    assert httpx.request("PROPFIND", mount.url, auth=mount.auth("ann")).status_code == 207
    events = _events(env.home, before)
    failures = [e for e in events if e.action == "login" and e.outcome == "failure"]
    assert len(failures) == 5 and all(e.client == "tessera-webdav" for e in failures)
    assert {e.user for e in failures} == {"sam", "ann", ""}  # never an unknown name (a token?)
    denied = [e for e in events if e.outcome == "denied"]
    assert {e.user for e in denied} == {"rita", "olga"}
    assert all(tokens["sam"] not in str(e) for e in events)
    # no token in the access log; no passphrase left in the server's environment
    basic = mount.basic()
    log = mount.log.read_text()
    assert tokens["sam"] not in log and basic not in log
    environ = Path(f"/proc/{mount.proc.pid}/environ").read_bytes()
    assert b"TESSERA_PASSPHRASE" not in environ and PASSPHRASE.encode() not in environ


def _answer(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


def test_traversal_long_names_and_unknown_methods_are_refused(
    world: tuple[Environment, dict[str, str]], mount: Mount
) -> None:
    env, _ = world
    before = _names(env)
    auth = f"Authorization: Basic {mount.basic()}\r\n"

    def request(
        method: str, path: str, extra: str = "", body: bytes = b"", declared: int | None = None
    ) -> int:
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}"
        length = len(body) if declared is None else declared
        head += f"Content-Length: {length}\r\nConnection: close\r\n\r\n"
        return _answer(mount.raw(head.encode() + body))

    for path in ("/../etc/passwd", "/a/../../x", "/a/%2e%2e/x", "/a//b", "/a%00b", "/a\\..\\b",
                 "/%ff%fe"):  # fmt: skip
        assert request("GET", path) == 400, path
        assert request("PUT", path, body=b"x") == 400, path
    long_segment = "/" + "a" * 256
    long_name = "/" + "/".join(["b" * 200] * 6)
    assert request("PUT", long_segment, body=b"x") == 414
    assert request("PUT", long_name, body=b"x") == 414
    assert request("MKCOL", long_segment) == 414
    dest = f"Destination: {mount.url}../../escaped\r\n"
    with mount.client() as http:
        http.put("inside.txt", content=b"in").raise_for_status()
    assert request("COPY", "/inside.txt", dest) == 400
    assert request("MOVE", "/inside.txt", f"Destination: {mount.url}a/%2e%2e/x\r\n") == 400
    assert request("FROBNICATE", "/") == 501
    assert request("TRACE", "/") == 405
    assert request("POST", "/inside.txt", body=b"x") == 405
    assert request("PROPFIND", "/", "Depth: 0\r\n", declared=2 << 20) == 413  # never read
    with mount.client() as http:
        http.delete("inside.txt").raise_for_status()
    assert _names(env) == before  # nothing was created, under any name
    assert not any("escaped" in n or ".." in n for n in _names(env))


def test_a_client_cut_off_mid_put_leaves_nothing(
    world: tuple[Environment, dict[str, str]], mount: Mount
) -> None:
    env, _ = world
    with mount.client() as http:
        http.put("kept.bin", content=b"the first version").raise_for_status()
    data_before = sorted(p.name for p in (store_root(env, 1) / "data").iterdir())
    size = 16 << 20
    for name in ("cut.bin", "kept.bin"):  # a new file, and a replacement of an existing one
        head = (
            f"PUT /{name} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {mount.basic()}\r\n"
            f"Content-Length: {size}\r\n\r\n"
        )
        mount.raw(head.encode() + os.urandom(5 << 20), read=False)  # then the client is gone
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the server notices and rolls back
        events = [e for e in _events(env.home) if e.action == "vault.put" and e.entity in
                  ("cut.bin", "kept.bin") and e.outcome != "success"]  # fmt: skip
        if len(events) == 2:
            break
        time.sleep(0.2)
    assert len(events) == 2 and {e.detail["error"] for e in events} == {"upload_interrupted"}
    with mount.client() as http:
        assert http.get("cut.bin").status_code == 404
        assert http.get("kept.bin").content == b"the first version"
    for store in (1, 2, 3):
        assert list((store_root(env, store) / "tmp").iterdir()) == []
    assert sorted(p.name for p in (store_root(env, 1) / "data").iterdir()) == data_before
    assert not list((env.home / "vault" / "journal").glob("*.json"))


def test_an_upload_of_unknown_size_is_spooled_encrypted_then_stored(
    world: tuple[Environment, dict[str, str]], mount: Mount
) -> None:
    env, _ = world
    data = os.urandom(3 << 20)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    spool = env.home / "vault" / "spool"
    with mount.client() as http:
        # chunked with the size announced (what Finder sends): streamed, never spooled
        finder = {"X-Expected-Entity-Length": str(len(data))}
        assert http.put("finder.bin", content=chunks(), headers=finder).status_code == 201
        assert http.get("finder.bin").content == data and not spool.exists()
        short = {"X-Expected-Entity-Length": str(len(data) + 1)}  # one byte fewer came
        answer = http.put("short.bin", content=chunks(), headers=short)
        assert answer.status_code == 400 and http.get("short.bin").status_code == 404
        # a generator: Transfer-Encoding: chunked, no length at all: spooled encrypted
        answer = http.put("chunked.bin", content=chunks())
        assert answer.status_code == 201, answer.text
        assert http.get("chunked.bin").content == data
    assert spool.is_dir() and list(spool.iterdir()) == []  # unnamed, and gone


def _certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "dav.crt", folder / "dav.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_read_only_mount_over_tls_refuses_writes_and_locks_out_guessers(
    world: tuple[Environment, dict[str, str]], mount: Mount, tmp_path: Path
) -> None:
    env, tokens = world
    with mount.client() as http:
        http.put("ro.txt", content=b"readable").raise_for_status()
    before = _names(env)
    cert, key = _certificate(tmp_path)
    args = ("--read-only", "--tls-cert", str(cert), "--tls-key", str(key))
    limit = ("--max-failed-logins", "3")
    with mounted(env, tokens, *args, *limit, passphrase=False, stop=signal.SIGINT) as ro:
        assert ro.url.startswith("https://127.0.0.1:")
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(ro.url.replace("https", "http"), auth=ro.auth(), timeout=10)
        with ro.client(verify=str(cert)) as http:
            assert http.get("ro.txt").content == b"readable"
            assert http.request("PROPFIND", "/", headers={"Depth": "1"}).status_code == 207
            attempts = _writes(http, ro.url)
            for answer in attempts:
                assert answer.status_code == 403 and "read-only" in answer.text, answer.request
            assert http.get("ro.txt").content == b"readable"
        # three failed sign-ins lock the address out, the right token included
        with httpx.Client(base_url=ro.url, verify=str(cert), auth=("sam", "guess")) as wrong:
            codes = [wrong.request("PROPFIND", "/").status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]
        with ro.client(verify=str(cert)) as http:
            locked = http.request("PROPFIND", "/", headers={"Depth": "0"})
            assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    assert _names(env) == before
    assert not (env.home / "run" / "mount.json").exists()  # Ctrl-C: exit 0, cleaned up
    events = _events(env.home)
    denied = [e for e in events if e.outcome == "denied" and e.detail.get("error") == "read_only"]
    assert len(denied) == len(attempts)
    assert [e for e in events if e.detail.get("reason") == "throttled"]


def _writes(http: httpx.Client, url: str) -> list[httpx.Response]:
    """One of each kind of write."""
    dest = {"Destination": url + "elsewhere.txt"}
    lock = (
        b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
        b"</D:lockscope><D:locktype><D:write/></D:locktype></D:lockinfo>"
    )
    return [
        http.put("ro.txt", content=b"changed"),
        http.put("new.txt", content=b"new"),
        http.delete("ro.txt"),
        http.request("MKCOL", "folder/"),
        http.request("MOVE", "ro.txt", headers=dest),
        http.request("COPY", "ro.txt", headers=dest),
        http.request("PROPPATCH", "ro.txt", content=b"<x/>"),
        http.request("LOCK", "ro.txt", content=lock),
    ]


def test_serving_beyond_loopback_needs_tls(world: tuple[Environment, dict[str, str]]) -> None:
    env, _ = world
    done = subprocess.run(
        [str(BIN), "vault", "mount", "--host", "0.0.0.0", "--home", str(env.home)],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")},
    )
    assert done.returncode == 2 and "needs --tls-cert" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr


def test_the_owner_writes_with_her_own_token_and_a_mount_ends_with_its_environment(
    tmp_path: Path,
) -> None:
    env, tokens = make_env(tmp_path / "home")
    # the vault's manifests are signed by sam's own key, which only his token unlocks
    create_key(env, "sam", tokens["sam"].encode(), gateway=True)
    env.extra["vault"]["signing_key"] = "gateway/keys/sam.key"
    env.extra["vault"]["verify_key"] = "gateway/keys/sam.pub"
    env.save()
    mount = start_mount(env, tokens, passphrase=False)  # no passphrase: the mount holds no key
    moved = env.home.with_name("moved-away")
    try:
        with mount.client("sam") as sam, mount.client("ann") as ann:
            assert sam.put("signed-by-sam.txt", content=b"sam's").status_code == 201
            assert ann.get("signed-by-sam.txt").content == b"sam's"  # stewards read
            refused = ann.put("by-ann.txt", content=b"ann's")
            assert refused.status_code == 403 and "owner (sam)" in refused.text
            assert ann.delete("signed-by-sam.txt").status_code == 403
        assert [m.name for m in open_vault(env).ls()] == ["signed-by-sam.txt"]
        env.home.rename(moved)  # the environment disappears: the mount stops by itself
        assert mount.proc.wait(timeout=30) == 0
    finally:
        if moved.exists():
            moved.rename(env.home)
        mount.stop()
    assert "stopping, its environment folder is gone" in mount.log.read_text()
