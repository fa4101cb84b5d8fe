"""Each custodian in its own network namespace (veth pairs on a bridge, own address,
own data folder): nothing depends on a shared filesystem or a single loopback.

Needs root and ``ip netns``; skipped with the reason when the kernel refuses.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.config import Environment, NodeConfig, StoreConfig
from tessera.errors import IntegrityError, StorageUnavailableError
from tessera.workflows.environment import init_environment
from tessera.workflows.nodes import ensure_nodes
from tessera.workflows.nodes_pki import issue_node_certificates
from tessera.workflows.people import unlock
from tessera.workflows.query import run_query
from tessera.workflows.tables import import_csv

pytestmark = pytest.mark.integration

PASSPHRASE = b"test passphrase"


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *args] if ns is None else ["ip", "netns", "exec", ns, "ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)


def _must(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, result.stderr


@pytest.fixture
def netns() -> Iterator[tuple[list[str], list[str]]]:
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
    names = [f"tsn{tag}{i}" for i in (1, 2, 3)]
    addresses = [f"{subnet}.{i}" for i in (1, 2, 3)]
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
        yield names, addresses
    finally:
        for ns in names:
            _ip("netns", "del", ns)
        _ip("link", "del", bridge)


def _node_home(env: Environment, node_id: int, base: Path) -> Path:
    """A home holding only what node ``node_id`` needs: config, its key, the CA certificate
    and the roster it pinned at ``tessera init`` (no requester key: jobs are signed by
    people of that roster)."""
    home = base / f"custodian-{node_id}"
    (home / "pki").mkdir(parents=True)
    data = home / "data"
    data.mkdir()
    stores = [
        StoreConfig(s.id, data.as_uri() if s.id == node_id else "file:///nonexistent")
        for s in env.stores
    ]
    dataclasses.replace(env, home=home, stores=stores).save()
    for name in ("ca.crt", f"node-{node_id}.crt", f"node-{node_id}.key"):
        shutil.copy2(env.home / "pki" / name, home / "pki" / name)
    shutil.copy2(env.home / "stores" / f"node-{node_id}" / "roster.json", data / "roster.json")
    return home


def test_custodians_in_separate_namespaces(
    netns: tuple[list[str], list[str]], tmp_path: Path
) -> None:
    names, addresses = netns
    env = init_environment(tmp_path / "requester", nodes=3, passphrase=PASSPHRASE)
    env.nodes = [NodeConfig(i, addr, 8443) for i, addr in enumerate(addresses, start=1)]
    env.save()
    with pytest.raises(IntegrityError, match="CA key"):  # the CA key is encrypted
        issue_node_certificates(env, b"not the passphrase")
    issue_node_certificates(env, PASSPHRASE)
    procs = []
    try:
        for i, ns in enumerate(names, start=1):
            home = _node_home(env, i, tmp_path)
            log = open(tmp_path / f"node-{i}.log", "wb")  # noqa: SIM115
            procs.append(
                (
                    subprocess.Popen(
                        [
                            "ip",
                            "netns",
                            "exec",
                            ns,
                            sys.executable,
                            "-m",
                            "tessera.node",
                            "--home",
                            str(home),
                            "--id",
                            str(i),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=dict(os.environ),
                    ),
                    log,
                )
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                clients = ensure_nodes(env, start=False)
                break
            except StorageUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        for c in clients.values():
            c.close()
        csv = tmp_path / "ward.csv"
        ages = [25 + (7 * i) % 60 for i in range(40)]
        csv.write_text(
            "age,smoker\n" + "".join(f"{a},{'true' if a % 2 else 'false'}\n" for a in ages)
        )
        import_csv(env, csv, "ward")
        for i in (1, 2, 3):  # each custodian's shares are in its own data folder only
            assert (
                tmp_path / f"custodian-{i}" / "data" / "tables" / "ward" / "manifest.json"
            ).exists()
        assert not (env.home / "stores" / "node-1" / "tables").exists()
        sql = "SELECT COUNT(*), SUM(age) FROM ward WHERE age > 40 AND smoker"
        result = run_query(env, sql, signer=unlock(env, "owner", PASSPHRASE))
        want = [a for a in ages if a > 40 and a % 2]
        assert result["rows"] == [[len(want), sum(want)]]
    except BaseException:
        for i in (1, 2, 3):  # shown by pytest on failure
            log_path = tmp_path / f"node-{i}.log"
            if log_path.exists():
                print(f"--- node {i} log:\n{log_path.read_text(errors='replace')[-2000:]}")
        raise
    finally:
        for proc, log in procs:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
