"""Real clients against ``tessera vault mount``: Debian's litmus suite (basic, copymove,
props, locks) reports no failure, and a 500 MB file goes in and out through a WebDAV
client library (webdav4) with the server's peak memory under 300 MB: PUT and GET stream,
neither holds the file."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from webdav4.client import Client
from webdav_fixtures import Mount, World, make_env, mounted, peak_rss_mib

from tessera.workflows.vault import open_vault

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("webdav")]

LITMUS = shutil.which("litmus")
SUITES = ("basic", "copymove", "props", "locks")
BIG = 500 * 1000 * 1000
RSS_LIMIT_MIB = 300


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    env, tokens = make_env(tmp_path_factory.mktemp("webdav-clients") / "home")
    env.extra["vault"]["scheme"] = "ssms"  # n/k of the size on disk, not n times: less I/O
    env.save()
    return env, tokens


@pytest.fixture(scope="module")
def mount(world: World) -> Iterator[Mount]:
    with mounted(*world, "--no-access-log") as m:
        yield m


class Generated:
    """``size`` seeded pseudo-random bytes, made as they are read (never all in memory),
    and their SHA-256."""

    def __init__(self, size: int, seed: int = 20) -> None:
        self.left = size
        self.rng = np.random.default_rng(seed)
        self.digest = hashlib.sha256()
        self.pending = b""

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        while len(self.pending) < size:
            self.pending += self.rng.bytes(1 << 20)
        out, self.pending = self.pending[:size], self.pending[size:]
        self.left -= size
        self.digest.update(out)
        return out


def test_a_500_mb_file_streams_in_and_out_in_bounded_memory(world: World, mount: Mount) -> None:
    env, _ = world
    source = Generated(BIG)
    with httpx.Client(base_url=mount.url, auth=mount.auth(), timeout=600) as http:
        client = Client(mount.url, http_client=http, chunk_size=1 << 20)
        client.mkdir("scans")
        client.upload_fileobj(source, "scans/big.bin", size=BIG)  # type: ignore[arg-type]
        assert source.left == 0
        assert client.content_length("scans/big.bin") == BIG
        back = hashlib.sha256()
        count = 0
        with client.open("scans/big.bin", mode="rb", chunk_size=1 << 20) as remote:
            while chunk := remote.read(1 << 20):
                back.update(chunk)
                count += len(chunk)
    assert count == BIG and back.hexdigest() == source.digest.hexdigest()
    peak = peak_rss_mib(mount.proc.pid)  # the server process alone (not the CLI: it exec'd)
    assert peak < RSS_LIMIT_MIB, f"peak RSS {peak:.0f} MiB"
    print(f"\nmount's peak RSS after a {BIG / 1e6:.0f} MB round trip: {peak:.0f} MiB")
    files = {m.name: m.size for m in open_vault(env).ls()}
    assert files == {"scans/": 0, "scans/big.bin": BIG}
    with httpx.Client(base_url=mount.url, auth=mount.auth(), timeout=600) as http:
        http.delete("scans/big.bin").raise_for_status()  # frees the disk for what follows


def _can_install() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.mark.skipif(
    LITMUS is None and not _can_install(),
    reason="Debian's litmus is not installed (make install installs it when run as root)",
)
def test_litmus_reports_no_failures(mount: Mount, tmp_path: Path) -> None:
    assert LITMUS is not None, "litmus is missing: run make install (as root) to install it"
    user, token = mount.auth()
    done = subprocess.run(
        [LITMUS, mount.url, user, token],
        env={**os.environ, "TESTS": " ".join(SUITES)},
        cwd=tmp_path,  # litmus writes its debug.log into the working folder
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    report = re.findall(
        r"<- summary for `(\w+)': of (\d+) tests run: (\d+) passed, (\d+) failed", done.stdout
    )
    assert {name for name, *_ in report} == set(SUITES), done.stdout[-3000:]
    for name, run, passed, failed in report:
        assert int(failed) == 0 and run == passed, f"{name}: {done.stdout[-3000:]}"
    assert done.returncode == 0, done.stdout[-3000:]
