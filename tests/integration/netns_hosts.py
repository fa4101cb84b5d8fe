"""Test hosts in network namespaces: veth pairs on a bridge, one address each.

The root namespace keeps the bridge's address (``SUBNET.254``) and plays the client's
machine; each namespace is one custodian's host.  Needs root and ``ip netns``; the
fixture skips with the reason when the kernel refuses.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class Hosts:
    """The namespaces, their addresses and the root namespace's address on the bridge."""

    names: list[str]
    addresses: list[str]
    gateway: str

    def run(self, i: int, *cmd: str) -> list[str]:
        """``cmd`` run inside host ``i``'s namespace (1-based)."""
        return ["ip", "netns", "exec", self.names[i - 1], *cmd]


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)


def _must(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


@contextmanager
def namespaces(count: int = 3) -> Iterator[Hosts]:
    """``count`` hosts on a fresh bridge; everything removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = secrets.token_hex(2)
    probe = f"tsp{tag}"
    added = _ip("netns", "add", probe)
    if added.returncode != 0:
        pytest.skip(f"ip netns add refused: {added.stderr.strip()[:120]}")
    _ip("netns", "del", probe)
    subnet = f"10.{200 + int(tag[:2], 16) % 50}.{int(tag[2:], 16)}"
    bridge = f"tsb{tag}"
    names = [f"tsn{tag}{i}" for i in range(1, count + 1)]
    addresses = [f"{subnet}.{i}" for i in range(1, count + 1)]
    try:
        if _ip("link", "add", bridge, "type", "bridge").returncode != 0:
            pytest.skip("cannot create a bridge for the veth pairs")
        _must(_ip("addr", "add", f"{subnet}.254/24", "dev", bridge))
        _must(_ip("link", "set", bridge, "up"))
        for i, (ns, addr) in enumerate(zip(names, addresses, strict=True), start=1):
            _must(_ip("netns", "add", ns))
            host_end, ns_end = f"tsh{tag}{i}", f"tsc{tag}{i}"
            _must(_ip("link", "add", host_end, "type", "veth", "peer", "name", ns_end))
            _must(_ip("link", "set", ns_end, "netns", ns))
            _must(_ip("link", "set", host_end, "master", bridge))
            _must(_ip("link", "set", host_end, "up"))
            _must(_ip("addr", "add", f"{addr}/24", "dev", ns_end, ns=ns))
            _must(_ip("link", "set", ns_end, "up", ns=ns))
            _must(_ip("link", "set", "lo", "up", ns=ns))
        yield Hosts(names, addresses, f"{subnet}.254")
    finally:
        for ns in names:
            _ip("netns", "del", ns)
        _ip("link", "del", bridge)
