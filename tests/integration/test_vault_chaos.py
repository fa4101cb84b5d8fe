"""Chaos on real processes: ``tessera vault`` killed, stores returning garbage or hanging,
full disks.  Every command must finish or undo the work, answer with one clean line (never
a traceback, never a hang) and leave no partial file where it could be mistaken for data.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.config import Environment, StoreConfig

pytestmark = pytest.mark.integration

EXE = Path(sys.executable).with_name("tessera")
PASSPHRASE = "chaos test passphrase"


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TESSERA_HOME": str(home), "TESSERA_PASSPHRASE": PASSPHRASE}
    env.pop("TESSERA_PERSON", None)
    return env


def _run(home: Path, *args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [*prefix, str(EXE), *args],
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def _init(tmp_path: Path, n: int, k: int, **vault: object) -> Path:
    home = tmp_path / "env"
    done = _run(home, "init", str(home), "--nodes", str(n), "--threshold", str(k))
    assert done.returncode == 0, done.stderr
    _configure(home, **vault)
    return home


def _configure(home: Path, store: StoreConfig | None = None, **vault: object) -> None:
    env = Environment.load(home)
    env.extra["vault"] = {**env.extra["vault"], **vault}
    if store is not None:
        env.stores = [store if s.id == store.id else s for s in env.stores]
    env.save()


def _store(home: Path, i: int) -> Path:
    return home / "stores" / f"node-{i}"


def _no_leftovers(home: Path, n: int) -> None:
    for i in range(1, n + 1):
        tmp = _store(home, i) / "tmp"
        assert not tmp.exists() or not list(tmp.iterdir()), f"store {i}: {list(tmp.iterdir())}"
    assert not list((home / "vault" / "journal").glob("*.json"))


def _big(path: Path, mib: int) -> bytes:
    data = os.urandom(mib << 20)
    path.write_bytes(data)
    return data


def _staging_big(folder: Path) -> bool:
    try:
        return any(f.stat().st_size > (1 << 20) for f in folder.iterdir())
    except FileNotFoundError:  # not made yet, or a file renamed away meanwhile
        return False


def _kill_when_staging(proc: subprocess.Popen[bytes], staging: list[Path]) -> None:
    """SIGKILL ``proc`` once a fragment over 1 MiB is being staged (always reaped)."""
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            if any(_staging_big(folder) for folder in staging):
                break
            time.sleep(0.01)
        assert proc.poll() is None, "the command finished before it could be killed"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("operation", ["put", "refresh", "repair"])
def test_kill_9_mid_operation_is_finished_or_undone(tmp_path: Path, operation: str) -> None:
    home = _init(tmp_path, 3, 2)
    data = _big(tmp_path / "big", 32)
    if operation != "put":
        assert _run(home, "vault", "put", str(tmp_path / "big"), "--name", "f").returncode == 0
    if operation == "repair":
        for f in (_store(home, 3) / "data").iterdir():
            f.unlink()
    argv = {
        "put": ["vault", "put", str(tmp_path / "big"), "--name", "f"],
        "refresh": ["vault", "refresh"],
        "repair": ["vault", "repair"],
    }[operation]
    proc = subprocess.Popen([str(EXE), *argv], env=_env(home), stderr=subprocess.DEVNULL)
    _kill_when_staging(proc, [_store(home, i) / "tmp" for i in (1, 2, 3)])
    listed = _run(home, "vault", "ls", "--json")  # the next command recovers first
    assert listed.returncode == 0, listed.stderr
    names = [e["name"] for e in json.loads(listed.stdout)]
    assert names == ([] if operation == "put" else ["f"])
    _no_leftovers(home, 3)
    if operation != "put":
        got = _run(home, "vault", "get", "f", "--out", str(tmp_path / "out"))
        assert got.returncode == 0, got.stderr
        assert (tmp_path / "out").read_bytes() == data
        if operation == "repair":  # the killed repair is undone; a new one finishes
            assert _run(home, "vault", "repair").returncode == 0
        assert _run(home, "vault", "verify").returncode == 0


def test_a_store_returning_garbage(tmp_path: Path) -> None:
    home = _init(tmp_path, 3, 2)
    data = _big(tmp_path / "f", 3)
    assert _run(home, "vault", "put", str(tmp_path / "f")).returncode == 0
    for folder in ("data", "catalog"):
        for f in (_store(home, 2) / folder).iterdir():
            f.write_bytes(os.urandom(f.stat().st_size))
    got = _run(home, "vault", "get", "f", "--out", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out").read_bytes() == data
    checked = _run(home, "vault", "verify")
    assert checked.returncode == 1 and "degraded" in checked.stdout
    assert _run(home, "vault", "repair").returncode == 0
    assert _run(home, "vault", "verify").returncode == 0
    for f in (_store(home, 3) / "data").iterdir():  # now two stores of a 2-of-3 vault
        f.write_bytes(os.urandom(f.stat().st_size))
    for f in (_store(home, 1) / "data").iterdir():
        f.write_bytes(os.urandom(f.stat().st_size))
    got = _run(home, "vault", "get", "f", "--out", str(tmp_path / "bad"))
    assert got.returncode == 1 and got.stderr.count("\n") == 1
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bad")]
    assert _run(home, "vault", "verify").returncode == 2


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_hanging_store_is_set_aside(tmp_path: Path, silent_server: int) -> None:
    home = _init(tmp_path, 4, 2, write_quorum=3, open_timeout_s=0.5, read_stall_s=1.0)
    options = {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{silent_server}"},
    }
    _configure(home, StoreConfig(4, "s3://bucket/vault", options))
    data = _big(tmp_path / "f", 1)
    put = _run(home, "vault", "put", str(tmp_path / "f"))
    assert put.returncode == 0, put.stderr
    assert "degraded: store 4" in put.stdout
    got = _run(home, "vault", "get", "f", "--out", str(tmp_path / "out"))
    assert got.returncode == 0, got.stderr
    assert (tmp_path / "out").read_bytes() == data
    checked = _run(home, "vault", "verify")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "no answer" in checked.stdout


def _on_tmpfs(folder: Path, show: Path | None = None) -> tuple[str, ...]:
    """A command prefix running in a mount namespace where ``folder`` is a 256 KiB tmpfs;
    afterwards, still inside, what is left in ``show`` (default ``folder``) goes to stderr."""
    folder.mkdir(parents=True, exist_ok=True)
    listed = show or folder
    return (
        "unshare",
        "-m",
        "sh",
        "-c",
        f'mount -t tmpfs -o size=256k tmpfs "{folder}" && "$0" "$@"; rc=$?; '
        f'ls -A "{listed}" 2>/dev/null >&2; exit $rc',
    )


def _have_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
        capture_output=True,
    )
    return done.returncode == 0


needs_mounts = pytest.mark.skipif(not _have_unshare(), reason="needs unshare -m and tmpfs")


@needs_mounts
def test_get_onto_a_full_disk(tmp_path: Path) -> None:
    home = _init(tmp_path, 3, 2)
    _big(tmp_path / "f", 1)
    assert _run(home, "vault", "put", str(tmp_path / "f")).returncode == 0
    out = tmp_path / "small"
    got = _run(home, "vault", "get", "f", "--out", str(out / "restored"), prefix=_on_tmpfs(out))
    assert got.returncode == 1 and got.stderr.count("\n") == 1, got.stderr
    assert "space" in got.stderr
    assert not list(out.iterdir())


@needs_mounts
def test_put_with_one_store_on_a_full_disk(tmp_path: Path) -> None:
    home = _init(tmp_path, 4, 2, write_quorum=3)
    _big(tmp_path / "f", 1)
    full = _store(home, 4)
    put = _run(home, "vault", "put", str(tmp_path / "f"), prefix=_on_tmpfs(full))
    assert put.returncode == 0, put.stderr  # 3 of 4 stores are a write quorum
    assert "degraded: store 4" in put.stdout
    assert _run(home, "vault", "verify").returncode == 1
    assert _run(home, "vault", "repair").returncode == 0
    assert _run(home, "vault", "verify").returncode == 0
    # With a write quorum of all four, the same failure leaves nothing visible.
    _configure(home, write_quorum=4)
    prefix = _on_tmpfs(full, show=full / "tmp")
    put = _run(home, "vault", "put", str(tmp_path / "f"), "--name", "g", prefix=prefix)
    assert put.returncode == 1 and put.stderr.count("\n") == 1, put.stderr
    assert "nothing was changed" in put.stderr
    listed = _run(home, "vault", "ls", "--json")
    assert [e["name"] for e in json.loads(listed.stdout)] == ["f"]
    _no_leftovers(home, 4)
