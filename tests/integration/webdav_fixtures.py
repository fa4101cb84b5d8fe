"""``tessera vault mount`` on loopback, as its own process, over an environment with
gateway users: shared by the WebDAV tests (test_webdav*.py).

Users: ``sam`` and ``ann`` (stewards), ``rita`` (researcher), ``olga`` (officer), added
to ``gateway/users.json`` only (no custodian roster: the mount needs none).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tessera.config import Environment
from tessera.workflows.environment import init_environment
from tessera.workflows.users import add_user
from tessera.workflows.vault import init_vault

BIN = Path(sys.executable).with_name("tessera")
PASSPHRASE = "webdav test passphrase"
USERS = {"sam": "steward", "ann": "steward", "rita": "researcher", "olga": "officer"}


World = tuple[Environment, dict[str, str]]


def make_env(
    home: Path, *, nodes: int = 3, threshold: int = 2
) -> tuple[Environment, dict[str, str]]:
    """An environment (``nodes`` local stores, k = ``threshold``) with the vault and the
    users; their tokens by name."""
    env = init_environment(home, nodes=nodes, threshold=threshold, passphrase=PASSPHRASE.encode())
    init_vault(env)
    tokens = {name: add_user(env.home, name, role) for name, role in USERS.items()}
    return Environment.load(env.home), tokens


@dataclass
class Mount:
    """A running mount: its process, URL and the users' tokens."""

    proc: subprocess.Popen[str]
    url: str
    home: Path
    tokens: dict[str, str]
    log: Path

    @property
    def port(self) -> int:
        return int(urllib.parse.urlsplit(self.url).port or 0)

    def auth(self, user: str = "sam") -> tuple[str, str]:
        return (user, self.tokens[user])

    def client(self, user: str = "sam", **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=self.auth(user), timeout=120, **kw)  # type: ignore[arg-type]

    def raw(self, request: bytes, *, read: bool = True) -> bytes:
        """Send ``request`` as it is on a new connection; the answer (until close)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=60) as sock:
            sock.sendall(request)
            if not read:
                return b""
            sock.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := sock.recv(65536):
                out += chunk
            return out

    def basic(self, user: str = "sam") -> str:
        return base64.b64encode(f"{user}:{self.tokens[user]}".encode()).decode()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def start_mount(
    env: Environment, tokens: dict[str, str], *args: str, passphrase: bool = True
) -> Mount:
    """``tessera vault mount --port 0`` on ``env`` (the owner's passphrase given unless
    ``passphrase`` is False); returns once it announced its URL."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    if passphrase:
        environ["TESSERA_PASSPHRASE"] = PASSPHRASE
    log = env.home / f"mount-{len(list(env.home.glob('mount-*.err')))}.err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [str(BIN), "vault", "mount", "--port", "0", *args, "--home", str(env.home)],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            text=True,
            env=environ,
        )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("vault mounted at "):
        proc.kill()
        proc.wait(timeout=10)
        raise AssertionError(line + log.read_text())
    url = line.split(" at ", 1)[1].split(" ", 1)[0]
    for _ in range(5):  # the connection lines
        proc.stdout.readline()
    return Mount(proc, url, env.home, tokens, log)


@contextmanager
def mounted(
    env: Environment,
    tokens: dict[str, str],
    *args: str,
    passphrase: bool = True,
    stop: int = signal.SIGTERM,
) -> Iterator[Mount]:
    """:func:`start_mount`, stopped afterwards by ``stop`` (SIGINT: Ctrl-C), exit 0."""
    mount = start_mount(env, tokens, *args, passphrase=passphrase)
    try:
        yield mount
    finally:
        code = mount.stop(stop)
    assert code == 0, mount.log.read_text()[-2000:]


def peak_rss_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def store_files(env: Environment) -> list[Path]:
    """Every file on every store (local folders)."""
    out: list[Path] = []
    for store in env.stores:
        root = Path(urllib.parse.urlsplit(store.url).path)
        out += [p for p in root.rglob("*") if p.is_file()]
    return out


def store_root(env: Environment, store: int) -> Path:
    url = next(s.url for s in env.stores if s.id == store)
    return Path(urllib.parse.urlsplit(url).path)
