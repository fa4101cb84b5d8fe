"""Real storage servers on loopback for the vault: moto's S3 server and OpenSSH's sshd.

Both listen on ephemeral ports; sshd gets a fresh host key and a fresh user key, and the
vault reaches it over SFTP through fsspec (``sftp://``, asyncssh via sshfs).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class S3Server:
    """A moto S3 server; ``url(name)`` gives a store URL and its fsspec options."""

    endpoint: str
    bucket: str

    def store(self, name: str) -> tuple[str, dict[str, Any]]:
        return f"s3://{self.bucket}/{name}", {
            "key": "testing",
            "secret": "testing",
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "eu-west-1"},
            "skip_instance_cache": True,
        }


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    pytest.importorskip("moto")
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    bucket = f"tessera-{uuid.uuid4().hex[:12]}"
    fs = s3fs.S3FileSystem(
        key="testing",
        secret="testing",
        client_kwargs={"endpoint_url": endpoint, "region_name": "eu-west-1"},
        skip_instance_cache=True,
    )
    fs.mkdir(bucket)
    try:
        yield S3Server(endpoint, bucket)
    finally:
        server.stop()


@dataclass
class SshServer:
    """An OpenSSH server for one user key; ``stop()`` kills it and all its sessions."""

    port: int
    root: Path
    key: Path
    proc: subprocess.Popen[bytes]
    stopped: bool = field(default=False)

    def store(self, name: str) -> tuple[str, dict[str, Any]]:
        folder = self.root / "sftp" / name
        folder.mkdir(parents=True, exist_ok=True)
        return f"sftp://127.0.0.1:{self.port}{folder}", {
            "username": getpass.getuser(),
            "client_keys": [str(self.key)],
            "known_hosts": str(self.root / "known_hosts"),
            "connect_timeout": 5,
        }

    def _tree(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue
                children.setdefault(ppid, []).append(int(entry.name))
        found, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def stop(self) -> None:
        """Kill sshd and every session it started (the store goes down hard)."""
        if self.stopped:
            return
        self.stopped = True
        for pid in self._tree():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _start_sshd(root: Path) -> SshServer:
    if not Path(SSHD).exists():
        pytest.skip("OpenSSH server (Debian openssh-server) is not installed")
    root.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "user_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True
        )
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory
    port = _free_port()
    (root / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {root / 'host_key'}",
                f"PidFile {root / 'sshd.pid'}",
                f"AuthorizedKeysFile {root / 'authorized_keys'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "MaxSessions 100",
                "MaxStartups 100",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_port(port, proc)
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    return SshServer(port, root, root / "user_key", proc)


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = _start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def doomed_ssh_server(tmp_path: Path) -> Iterator[SshServer]:
    """An sshd of its own, for tests that kill it."""
    server = _start_sshd(tmp_path / "sshd")
    try:
        yield server
    finally:
        server.stop()
